"""`summary` and `sparsity`: per-layer counts against NumPy."""

import jax.numpy as jnp
import numpy as np
import pytest

import jaxsparse as js

RNG = np.random.RandomState(0)


def sparse(shape, frac):
  w = RNG.randn(*shape).astype(np.float32)
  w[RNG.rand(*shape) < frac] = 0.0
  return w


PARAMS = {
    "Conv_0": {"kernel": sparse((3, 3, 2, 4), 0.5), "bias": sparse((4,), 0.5)},
    "Dense_0": {"kernel": sparse((10, 6), 0.8), "bias": np.zeros(6,
                                                                 np.float32)},
    "scale": np.float32(0.0),
}
NAMES = ["Conv_0/bias", "Conv_0/kernel", "Dense_0/bias", "Dense_0/kernel",
         "scale"]


def leaves():
  p = PARAMS
  return [p["Conv_0"]["bias"], p["Conv_0"]["kernel"], p["Dense_0"]["bias"],
          p["Dense_0"]["kernel"], np.asarray(p["scale"])]


def test_summary_of_params_counts_zeros():
  s = js.summary(jax_tree(PARAMS))
  assert [r.name for r in s.rows] == NAMES
  for r, x in zip(s.rows, leaves(), strict=True):
    assert r.shape == x.shape
    assert r.params == x.size
    assert r.zeros == int(np.sum(x == 0))
    assert r.sparsity == pytest.approx(np.mean(x == 0) if x.size else 0.0)
  assert [r.pruned for r in s.rows] == [False, True, False, True, False]
  total = sum(x.size for x in leaves())
  zeros = sum(int(np.sum(x == 0)) for x in leaves())
  assert s.total_params == total and s.total_zeros == zeros
  assert s.sparsity == pytest.approx(zeros / total)
  k = [leaves()[1], leaves()[3]]
  assert s.pruned_sparsity == pytest.approx(
      sum(int(np.sum(x == 0)) for x in k) / sum(x.size for x in k))


def jax_tree(tree):
  if isinstance(tree, dict):
    return {k: jax_tree(v) for k, v in tree.items()}
  return jnp.asarray(tree)


def test_summary_with_masks_counts_mask_zeros():
  params = jax_tree(PARAMS)
  masks = {"Conv_0": {"kernel": jnp.asarray(RNG.rand(3, 3, 2, 4) > 0.3),
                      "bias": None},
           "Dense_0": {"kernel": jnp.asarray(RNG.rand(10, 6) > 0.6),
                       "bias": None},
           "scale": None}
  s = js.summary(params, masks)
  conv_k = np.asarray(masks["Conv_0"]["kernel"])
  dense_k = np.asarray(masks["Dense_0"]["kernel"])
  by_name = {r.name: r for r in s.rows}
  assert by_name["Conv_0/kernel"].zeros == int((~conv_k).sum())
  assert by_name["Dense_0/kernel"].zeros == int((~dense_k).sum())
  # Dense leaves count their exact zeros in the params.
  assert by_name["Conv_0/bias"].zeros == int(
      np.sum(PARAMS["Conv_0"]["bias"] == 0))
  assert by_name["Dense_0/bias"].zeros == 6
  assert not by_name["Dense_0/bias"].pruned and by_name["Dense_0/kernel"].pruned
  want = (int((~conv_k).sum()) + int((~dense_k).sum())) / (72 + 60)
  assert s.pruned_sparsity == pytest.approx(want)
  assert float(js.sparsity(masks)) == pytest.approx(want)


def test_summary_of_bool_masks_alone():
  masks = {"a": jnp.asarray(RNG.rand(5, 4) > 0.25), "b": None}
  s = js.summary({"a": masks["a"]})
  assert s.rows[0].zeros == int((~np.asarray(masks["a"])).sum())
  assert s.rows[0].pruned


def test_summary_to_dict_and_table():
  s = js.summary(jax_tree(PARAMS))
  d = s.to_dict()
  assert [row["name"] for row in d["layers"]] == NAMES
  assert d["total_params"] == s.total_params
  assert d["total_zeros"] == s.total_zeros
  for row, x in zip(d["layers"], leaves(), strict=True):
    assert row["zeros"] == int(np.sum(x == 0))
  table = str(s)
  for name in NAMES:
    assert name in table
  assert "Dense_0/bias (dense)" in table
  assert f"{s.sparsity:.4f}" in table


def test_summary_rejects_mismatched_masks():
  params = jax_tree(PARAMS)
  with pytest.raises(ValueError):
    js.summary(params, {"Conv_0": None})


def test_sparsity_of_masks():
  masks = {"a": jnp.asarray(RNG.rand(7, 3) > 0.5), "b": None,
           "c": jnp.zeros((2, 2), bool)}
  a = np.asarray(masks["a"])
  want = (int((~a).sum()) + 4) / (a.size + 4)
  assert float(js.sparsity(masks)) == pytest.approx(want)
  assert float(js.sparsity({"b": None})) == 0.0
