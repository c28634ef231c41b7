"""Lottery-ticket IMP with rewinding (Frankle & Carbin; open_lth)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxsparse
from jaxsparse._src.lottery import lottery


def _params(seed=0):
  rng = np.random.default_rng(seed)
  return {
      "l0": {"kernel": rng.normal(size=(30, 20)).astype(np.float32),
             "bias": rng.normal(size=20).astype(np.float32)},
      "l1": {"kernel": 3 * rng.normal(size=(20, 7)).astype(np.float32)},
      "out": {"kernel": rng.normal(size=(7, 3)).astype(np.float32)},
  }


def _flat(tree, names):
  return np.concatenate([np.asarray(tree[n]["kernel"]).ravel()
                         for n in names])


def test_global_imp_density_is_0_8_power_j():
  params = _params()
  names = ["l0", "l1", "out"]
  n = 30 * 20 + 20 * 7 + 7 * 3
  w = np.abs(_flat(params, names))
  masks = None
  remaining = n
  for j in range(1, 9):
    old = (np.ones(n, bool) if masks is None else _flat(masks, names))
    masks = lottery.prune(params, masks, 0.2)
    new = _flat(masks, names)
    # ceil(0.2 * remaining) pruned, computed independently.
    remaining -= math.ceil(0.2 * remaining)
    assert new.sum() == remaining == lottery.remaining(n, j)[-1]
    assert abs(new.sum() / n - 0.8 ** j) <= j / n
    # Only previously kept weights go, and they are the smallest |w|.
    assert not (new & ~old).any()
    assert w[old & ~new].max() <= w[new].min()
    assert masks["l0"]["bias"] is None


def test_layerwise_imp_and_dense_output_layer():
  params = _params(1)
  masks = jaxsparse.ones_masks(params)
  masks["out"]["kernel"] = None  # open_lth leaves the output layer dense.
  sizes = {"l0": 600, "l1": 140}
  for _ in range(3):
    masks = lottery.prune(params, masks, 0.2, scope="layer")
    for name in sizes:
      sizes[name] -= math.ceil(0.2 * sizes[name])
      assert int(masks[name]["kernel"].sum()) == sizes[name]
  assert masks["out"]["kernel"] is None


def test_prune_count_is_exact_rational():
  # 0.2 * 5 must be 1 (float32 arithmetic can give 1.0000001 -> 2).
  assert lottery.prune_count(5, 0.2) == 1
  assert lottery.prune_count(10**7 + 5, 0.2) == 2 * 10**6 + 1
  assert lottery.num_rounds(0.8 ** 10 + 1e-9) == 10
  assert lottery.num_rounds(0.036) == 15
  assert 0.8 ** lottery.num_rounds(0.05) <= 0.05
  assert lottery.num_rounds(1.0) == 0
  with pytest.raises(ValueError):
    lottery.prune(_params(), None, 0.2, scope="neuron")


def test_rewind_restores_survivors_and_zeroes_pruned():
  saved = _params(2)
  trained = jax.tree.map(lambda x: x * 5.0 + 1.0, saved)
  masks = lottery.prune(trained, None, 0.5)
  rewound = lottery.rewind(saved, masks)
  for name in ("l0", "l1", "out"):
    m = np.asarray(masks[name]["kernel"])
    np.testing.assert_array_equal(
        rewound[name]["kernel"], np.where(m, saved[name]["kernel"], 0.0))
  np.testing.assert_array_equal(rewound["l0"]["bias"], saved["l0"]["bias"])


def test_run_imp_rewind_to_init():
  init = _params(3)
  calls = []

  def train_fn(params, masks):
    calls.append((params, masks))
    out = jax.tree.map(lambda x: x + 0.01 * jnp.sign(x), params)
    return jaxsparse.apply_masks(out, masks), {"acc": len(calls)}

  params, masks, history = lottery.run(train_fn, init, 4)
  assert len(calls) == 5 and [h["level"] for h in history] == list(range(5))
  n = 600 + 140 + 21
  for j, h in enumerate(history):
    assert abs(h["density"] - 0.8 ** j) <= j / n
  for p, m in calls:
    for name in ("l0", "l1", "out"):
      np.testing.assert_array_equal(
          p[name]["kernel"],
          np.where(m[name]["kernel"], init[name]["kernel"], 0.0))
  assert history[-1]["metrics"] == {"acc": 5}
  np.testing.assert_array_equal(masks["l1"]["kernel"],
                                calls[-1][1]["l1"]["kernel"])


def test_run_imp_late_rewinding():
  init = _params(4)
  at_k = jax.tree.map(lambda x: x + 0.5, init)
  log = []

  def train_fn(params, masks, save_step=None, start_step=None):
    log.append((save_step, start_step, params))
    out = jaxsparse.apply_masks(jax.tree.map(lambda x: 2 * x, params), masks)
    if save_step is not None:
      return out, {}, at_k
    return out, {}

  _, masks, history = lottery.run(train_fn, init, 2, rewind_step=7)
  assert [(a, b) for a, b, _ in log] == [(7, None), (None, 7), (None, 7)]
  np.testing.assert_array_equal(log[0][2]["l1"]["kernel"],
                                init["l1"]["kernel"])
  # Later levels start from the step-k weights, masked.
  m = np.asarray(masks["l1"]["kernel"])
  np.testing.assert_array_equal(
      log[-1][2]["l1"]["kernel"], np.where(m, at_k["l1"]["kernel"], 0.0))
  assert len(history) == 3
