"""PQ Index and SAP against NumPy and the properties of Diao et al. (2023)."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import jaxsparse
from jaxsparse._src.pai import pqi


def _pqi_np(w, p, q):
  w = np.abs(np.asarray(w, np.float64)).ravel()
  d = w.size
  if d == 0 or not w.any():
    return 0.0
  lp = np.sum(w ** p) ** (1 / p)
  lq = np.sum(w ** q) ** (1 / q)
  return 1 - d ** (1 / q - 1 / p) * lp / lq


_vectors = st.lists(st.floats(0.01, 100.0), min_size=2, max_size=30)


def test_reference_values():
  w = jnp.array([1.0, 2.0, 3.0, 4.0])
  np.testing.assert_allclose(pqi.pq_index(w, 0.5, 1.0), 0.0555859, atol=2e-7)
  e1 = jnp.zeros(100).at[0].set(3.0)
  np.testing.assert_allclose(pqi.pq_index(e1, 0.5, 1.0), 0.99, rtol=1e-6)
  np.testing.assert_allclose(pqi.pq_index(e1, 1.0, 2.0), 0.9, rtol=1e-6)
  # The one-hot value is the bound 1 - d^(1/q - 1/p).
  for p, q in ((0.5, 1.0), (1.0, 2.0), (0.3, 1.7)):
    np.testing.assert_allclose(
        pqi.pq_index(e1, p, q), 1 - 100.0 ** (1 / q - 1 / p), rtol=1e-5)
  assert float(pqi.pq_index(jnp.full(7, -2.5))) == pytest.approx(0, abs=1e-6)
  assert float(pqi.pq_index(jnp.zeros(5))) == 0.0
  assert float(pqi.pq_index(jnp.ones(3), mask=jnp.zeros(3, bool))) == 0.0
  with pytest.raises(ValueError):
    pqi.pq_index(w, 1.0, 1.0)


@settings(max_examples=30, deadline=None)
@given(_vectors, st.sampled_from([(0.5, 1.0), (1.0, 2.0), (0.2, 1.4)]))
def test_matches_numpy_and_axioms(values, pq):
  p, q = pq
  w = np.asarray(values, np.float32)
  i_w = float(pqi.pq_index(w, p, q))
  np.testing.assert_allclose(i_w, _pqi_np(w, p, q), atol=2e-6)
  assert 0.0 <= i_w <= 1 - w.size ** (1 / q - 1 / p) + 1e-6
  # D2 scaling: I(a w) = I(w).
  np.testing.assert_allclose(pqi.pq_index(7.5 * w, p, q), i_w, atol=2e-6)
  # D4 cloning: I([w, w]) = I(w).
  np.testing.assert_allclose(pqi.pq_index(np.concatenate([w, w]), p, q),
                             i_w, atol=2e-6)
  # P2 babies: appending zeros makes it sparser.
  assert float(pqi.pq_index(np.concatenate([w, [0.0]]), p, q)) > i_w
  # D3 rising tide: adding a constant makes it less sparse (w not constant).
  if np.ptp(w) > 1e-2 * w.max():
    assert float(pqi.pq_index(w + 10.0, p, q)) < i_w
    # D1 Robin Hood: moving mass from the largest to the smallest entry.
    i, j = np.argmax(w), np.argmin(w)
    a = (w[i] - w[j]) / 4
    v = w.copy()
    v[i] -= a
    v[j] += a
    assert float(pqi.pq_index(v, p, q)) < i_w
  # P1 Bill Gates: one entry growing without bound -> the bound.
  big = w.copy()
  big[0] = 1e12
  bound = 1 - w.size ** (1 / q - 1 / p)
  if i_w < bound - 1e-4:
    assert float(pqi.pq_index(big, p, q)) > i_w


def test_mask_scopes_and_tree():
  rng = np.random.default_rng(0)
  w = rng.normal(size=(6, 5)).astype(np.float32)
  m = rng.random((6, 5)) > 0.4
  np.testing.assert_allclose(pqi.pq_index(w, 0.5, 1.0, m),
                             _pqi_np(w[m], 0.5, 1.0), atol=2e-6)
  per_unit = pqi.pq_index_neurons(w, 0.5, 1.0, m)
  assert per_unit.shape == (5,)
  for j in range(5):
    np.testing.assert_allclose(per_unit[j], _pqi_np(w[m[:, j], j], 0.5, 1.0),
                               atol=2e-6)
  conv = rng.normal(size=(3, 3, 2, 4)).astype(np.float32)
  per_filter = pqi.pq_index_neurons(conv, 1.0, 2.0)
  for j in range(4):
    np.testing.assert_allclose(per_filter[j], _pqi_np(conv[..., j], 1, 2),
                               atol=2e-6)
  params = {"a": {"kernel": w, "bias": np.ones(5, np.float32)},
            "b": {"kernel": conv}}
  masks = {"a": {"kernel": m, "bias": None},
           "b": {"kernel": np.ones(conv.shape, bool)}}
  layer = pqi.pq_index_tree(params, masks, scope="layer")
  assert layer["a"]["bias"] is None
  np.testing.assert_allclose(layer["b"]["kernel"], _pqi_np(conv, .5, 1),
                             atol=2e-6)
  glob = pqi.pq_index_tree(params, masks, scope="global")
  np.testing.assert_allclose(
      glob, _pqi_np(np.concatenate([w[m], conv.ravel()]), .5, 1), atol=2e-6)
  neuron = pqi.pq_index_tree(params, None, scope="neuron")
  assert neuron["a"]["kernel"].shape == (5,)
  assert neuron["b"]["kernel"].shape == (4,)
  # Usable as a jitted training metric.
  jitted = jax.jit(lambda p: pqi.pq_index_tree(p, None, scope="global"))
  np.testing.assert_allclose(jitted(params), pqi.pq_index_tree(
      params, None, scope="global"), rtol=1e-6)


def test_sap_counts_reference_and_formula():
  i = float(pqi.pq_index(jnp.array([1.0, 2.0, 3.0, 4.0])))
  r, c = pqi.sap_counts(4, i, 0.5, 1.0, 0.0, 1.0, 0.9)
  np.testing.assert_allclose(r, 3.7777, atol=1e-4)
  assert c == 0
  rng = np.random.default_rng(1)
  for _ in range(20):
    d = int(rng.integers(1, 10_000))
    i = float(rng.uniform(0, 0.9))
    p, q = sorted(rng.uniform(0.1, 3.0, 2))
    eta, gamma, beta = rng.uniform(0, 1), rng.uniform(0.5, 9), 0.9
    r, c = pqi.sap_counts(d, i, p, q, eta, gamma, beta)
    want_r = d * (1 + eta) ** (-q / (q - p)) * (1 - i) ** (q * p / (q - p))
    np.testing.assert_allclose(r, want_r, rtol=1e-12)
    assert c == int(np.floor(d * min(gamma * (1 - want_r / d), beta)))
    r_up, _ = pqi.sap_counts(d, i, p, q, eta, gamma, beta, round_up_r=True)
    assert r_up == np.ceil(want_r)
  # beta caps the removed fraction.
  _, c = pqi.sap_counts(1000, 0.99, 0.5, 1.0, 0.0, 9.0, 0.9)
  assert c == 900
  assert pqi.sap_counts(0, 0.0)[1] == 0


@settings(max_examples=25, deadline=None)
@given(st.lists(st.floats(0.0, 10.0), min_size=3, max_size=25),
       st.sampled_from([(0.5, 1.0), (1.0, 2.0)]))
def test_sap_bound_theorem(values, pq):
  # Theorem 2: with M_r the r largest entries and eta_r minimal such that
  # sum_{not M_r} |w|^p <= eta_r sum_{M_r} |w|^p, the bound is <= r.
  p, q = pq
  w = np.sort(np.abs(np.asarray(values, np.float64)))[::-1]
  if not w.any():
    return
  d = w.size
  i = _pqi_np(w, p, q)
  wp = w ** p
  for r in range(1, d + 1):
    inside, outside = wp[:r].sum(), wp[r:].sum()
    if inside == 0:
      continue
    bound, _ = pqi.sap_counts(d, i, p, q, outside / inside)
    assert bound <= r * (1 + 1e-9)


def _params(seed=0):
  rng = np.random.default_rng(seed)
  return {
      "l0": {"kernel": rng.normal(size=(8, 6)).astype(np.float32) ** 3,
             "bias": np.zeros(6, np.float32)},
      "l1": {"kernel": rng.normal(size=(6, 4)).astype(np.float32)},
  }


def _removed_smallest(w, old, new):
  """New removals are the smallest |w| among the previously kept ones."""
  w = np.abs(np.asarray(w))
  gone = old & ~new
  if gone.any() and new.any():
    assert w[gone].max() <= w[new].min()


@pytest.mark.parametrize("scope", ["global", "layer", "neuron"])
def test_sap_prune_removes_exactly_c_smallest(scope):
  params = _params()
  masks = jaxsparse.ones_masks(params)
  masks["l0"]["kernel"] = masks["l0"]["kernel"].at[0].set(False)
  args = (0.5, 1.0, 0.0, 3.0, 0.9)
  stats = pqi.sap_stats(params, masks, *args, scope=scope)
  new = pqi.sap_prune(params, masks, *args, scope=scope)
  assert new["l0"]["bias"] is None
  old_k = [np.asarray(masks[n]["kernel"]) for n in ("l0", "l1")]
  new_k = [np.asarray(new[n]["kernel"]) for n in ("l0", "l1")]
  ws = [np.asarray(params[n]["kernel"]) for n in ("l0", "l1")]
  removed = [int((o & ~n).sum()) for o, n in zip(old_k, new_k, strict=True)]
  assert all(not (n & ~o).any() for o, n in zip(old_k, new_k, strict=True))
  if scope == "global":
    kept = np.concatenate([w[o] for w, o in zip(ws, old_k, strict=True)])
    i = _pqi_np(kept, 0.5, 1.0)
    _, c = pqi.sap_counts(kept.size, i, *args)
    assert sum(removed) == c == stats["removed"] > 0
    flat_w = np.concatenate([np.abs(w).ravel() for w in ws])
    _removed_smallest(flat_w, np.concatenate([o.ravel() for o in old_k]),
                      np.concatenate([n.ravel() for n in new_k]))
  elif scope == "layer":
    for w, o, n, got in zip(ws, old_k, new_k, removed, strict=True):
      _, c = pqi.sap_counts(o.sum(), _pqi_np(w[o], 0.5, 1.0), *args)
      assert got == c
      _removed_smallest(w, o, n)
  else:
    for w, o, n in zip(ws, old_k, new_k, strict=True):
      for j in range(w.shape[1]):
        col = o[:, j]
        _, c = pqi.sap_counts(col.sum(), _pqi_np(w[col, j], 0.5, 1.0), *args)
        assert int((col & ~n[:, j]).sum()) == c
        _removed_smallest(w[:, j], col, n[:, j])


def test_run_sap_rewinds_and_prunes():
  init = _params(1)
  seen = []

  def train_fn(params, masks):
    seen.append((params, masks))
    # "Training" makes magnitudes spikier (PQI rises) and keeps zeros.
    trained = jax.tree.map(lambda x: x * (1.0 + jnp.abs(x)), params)
    return jaxsparse.apply_masks(trained, masks), {"loss": 0.0}

  params, masks, history = pqi.run_sap(train_fn, init, 4)
  assert len(history) == len(seen) == 4
  densities = [h["density"] for h in history]
  assert densities[0] == 1.0
  assert all(a > b for a, b in itertools.pairwise(densities))
  for (p, m), h in zip(seen, history, strict=True):
    for name in ("l0", "l1"):
      want = np.where(m[name]["kernel"], init[name]["kernel"], 0.0)
      np.testing.assert_array_equal(p[name]["kernel"], want)
    assert 0.0 < h["pqi"] < 1.0
  assert history[-1]["removed"] == 0
  np.testing.assert_array_equal(masks["l1"]["kernel"],
                                seen[-1][1]["l1"]["kernel"])
