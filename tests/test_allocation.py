"""Allocations: exact per-layer counts and masks against NumPy references."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import jaxsparse as js
from jaxsparse._src.core.threshold import sortable_key

LENET = [(784, 300), (300, 100), (100, 10)]


def np_count(s, n):
  """floor(s * n + 0.5) in float32, the documented rounding rule."""
  return int(np.floor(np.float32(s) * np.float32(n) + np.float32(0.5)))


def ref_keep(scores, k):
  """Keep-mask pruning the k smallest; ties pruned lowest index first."""
  flat = np.asarray(scores, np.float32).reshape(-1)
  keep = np.ones(flat.size, bool)
  keep[np.argsort(flat, kind="stable")[:k]] = False
  return keep.reshape(np.shape(scores))


def ref_global(leaves, k, caps=None):
  """Greedy global ranking with per-leaf caps on the prune count."""
  flat = np.concatenate([np.reshape(x, -1) for x in leaves]).astype(np.float32)
  owner = np.concatenate([np.full(np.size(x), i)
                          for i, x in enumerate(leaves)])
  caps = [np.size(x) for x in leaves] if caps is None else caps
  counts = [0] * len(leaves)
  for j in np.argsort(flat, kind="stable"):
    if sum(counts) == k:
      break
    if counts[owner[j]] < caps[owner[j]]:
      counts[owner[j]] += 1
  return [ref_keep(x, c) for x, c in zip(leaves, counts, strict=True)]


def ref_erk(shapes, density, kind="erk", power_scale=1.0):
  """rigl/sparse_utils.py::get_sparsities_erdos_renyi, in float64."""
  n = np.array([np.prod(s) for s in shapes], np.float64)
  if kind == "erk":
    raw = np.array([np.sum(s) / np.prod(s) for s in shapes]) ** power_scale
  else:
    raw = np.array([(s[-2] + s[-1]) / (s[-2] * s[-1]) for s in shapes])
  dense = np.zeros(len(shapes), bool)
  while True:
    rhs = np.sum(np.where(dense, -(1 - density) * n, density * n))
    divisor = np.sum(np.where(dense, 0.0, raw * n))
    eps = rhs / divisor
    max_prob = np.max(raw[~dense])
    if max_prob * eps > 1:
      dense |= (raw == max_prob) & ~dense
    else:
      break
  return np.where(dense, 1.0, eps * raw), eps


_JITTED = {}


def run_alloc(alloc, leaves, sparsity, paths=None):
  """Runs `alloc` on scores `leaves` (jitted once per allocation and shapes)."""
  paths = tuple(paths or [f"layer{i}/kernel" for i in range(len(leaves))])
  shapes = tuple(tuple(np.shape(x)) for x in leaves)
  cache_key = (id(alloc), paths, shapes)
  if cache_key not in _JITTED:
    _JITTED[cache_key] = (alloc, jax.jit(lambda scores, s: alloc(
        [sortable_key(x) for x in scores], list(paths), list(shapes), s)))
  fn = _JITTED[cache_key][1]
  out = fn([jnp.asarray(x, jnp.float32) for x in leaves], jnp.float32(sparsity))
  assert len(out) == len(leaves)
  for m, x in zip(out, leaves, strict=True):
    assert m.dtype == jnp.bool_ and m.shape == np.shape(x)
  return [np.asarray(m) for m in out]


def _leaves():
  rng = np.random.RandomState(0)
  return [
      np.abs(rng.randn(12, 10)),
      np.abs(rng.randn(3, 3, 2, 4)),  # Conv HWIO
      np.ones((5, 4)),  # ties within the leaf and with the next one
      rng.randint(0, 3, (6, 5)),  # integer-valued: many ties
      np.array([[1.0]]),  # tiny layers
      np.array([[2.0, 2.0]]),
      np.array([[3.0], [1.0], [3.0]]),
  ]


# One mixed set of leaves keeps the number of compilations small.
LEAVES = [np.asarray(x, np.float32) for x in _leaves()]
SIZES = [x.size for x in LEAVES]
SPARSITIES = [0.0, 0.1, 0.33, 0.5, 0.77, 0.9, 0.99, 1.0]
GLOBAL = js.allocation.global_()
ERK = js.allocation.erk()
ER = js.allocation.er()


# --- count_for ---------------------------------------------------------------


@pytest.mark.parametrize("s,n,want", [
    (0.0, 7, 0), (1.0, 7, 7), (0.5, 3, 2), (0.5, 1, 1), (0.5, 5, 3),
    (0.25, 2, 1), (0.25, 6, 2), (0.125, 4, 1), (0.75, 2, 2), (0.1, 4, 0),
    (0.9, 1, 1), (0.4, 1, 0), (0.3, 10, 3), (0.5, 0, 0),
])
def test_count_for_rounds_halves_up(s, n, want):
  assert int(js.allocation.count_for(s, n)) == want


@settings(max_examples=40, deadline=None)
@given(st.floats(0.0, 1.0, width=32), st.integers(0, 10_000))
def test_count_for_matches_formula(s, n):
  k = int(js.allocation.count_for(jnp.float32(s), n))
  assert k == np_count(s, n)
  assert 0 <= k <= n


def test_count_for_is_jittable():
  f = jax.jit(lambda s: js.allocation.count_for(s, 9))
  assert [int(f(s)) for s in (0.0, 0.5, 1.0)] == [0, 5, 9]


# --- uniform -----------------------------------------------------------------


def test_uniform_exact_counts_and_mask():
  alloc = js.allocation.uniform()
  for s in SPARSITIES:
    masks = run_alloc(alloc, LEAVES, s)
    for x, m in zip(LEAVES, masks, strict=True):
      k = np_count(s, x.size)
      assert int(np.sum(~m)) == k, (s, x.shape)
      np.testing.assert_array_equal(m, ref_keep(x, k))


# --- ERK / ER ----------------------------------------------------------------


def test_erk_lenet_density_0_1():
  d = np.asarray(js.allocation.erk_densities(LENET, 0.1))
  np.testing.assert_allclose(d, [0.079568, 0.230189, 1.0], atol=2e-6)
  eps = d[0] / (sum(LENET[0]) / math.prod(LENET[0]))
  assert eps == pytest.approx(17.2642, abs=1e-4)
  n = np.array([math.prod(s) for s in LENET])
  assert np.sum(d * n) == pytest.approx(0.1 * n.sum(), rel=1e-5)


def test_erk_lenet_density_0_02():
  d = np.asarray(js.allocation.erk_densities(LENET, 0.02))
  np.testing.assert_allclose(d, [0.015394, 0.044534, 0.367403], atol=2e-6)


SHAPE_SETS = [
    LENET,
    [(3, 3, 3, 16), (3, 3, 16, 32), (3, 3, 32, 64), (64, 10)],
    [(1, 1), (1, 3), (3, 1), (50, 40), (20, 20), (20, 20)],
]
DENSITIES = np.array([0.01, 0.05, 0.1, 0.3, 0.6, 0.95], np.float32)


def density_sweep(shapes, kind, power_scale=1.0):
  """erk_densities for all DENSITIES with a single compilation."""
  fn = jax.jit(jax.vmap(
      lambda d: js.allocation.erk_densities(shapes, d, kind, power_scale)))
  return np.asarray(fn(jnp.asarray(DENSITIES)), np.float64)


@pytest.mark.parametrize("kind", ["erk", "er"])
@pytest.mark.parametrize("shapes", SHAPE_SETS, ids=range(len(SHAPE_SETS)))
def test_erk_densities_match_numpy_and_invariants(shapes, kind):
  n = np.array([math.prod(s) for s in shapes], np.float64)
  for density, d in zip(DENSITIES, density_sweep(shapes, kind), strict=True):
    want, _ = ref_erk(shapes, float(density), kind)
    np.testing.assert_allclose(d, want, rtol=2e-5, atol=1e-6)
    assert np.all(d <= 1.0) and np.all(d >= 0.0)
    assert np.sum(d * n) == pytest.approx(density * n.sum(), rel=2e-5)


def test_erk_power_scale_matches_numpy():
  shapes = SHAPE_SETS[1]
  sweep = density_sweep(shapes, "erk", 0.5)
  for density, d in zip(DENSITIES, sweep, strict=True):
    want, _ = ref_erk(shapes, float(density), "erk", 0.5)
    np.testing.assert_allclose(d, want, rtol=2e-5, atol=1e-6)


def test_erk_densities_edge_densities():
  np.testing.assert_allclose(js.allocation.erk_densities(LENET, 1.0), [1, 1, 1])
  np.testing.assert_allclose(js.allocation.erk_densities(LENET, 0.0), [0, 0, 0])


@pytest.mark.parametrize("kind", ["erk", "er"])
def test_erk_and_er_allocation_masks(kind):
  alloc = ERK if kind == "erk" else ER
  shapes = [x.shape for x in LEAVES]
  n = np.array(SIZES)
  dens = jax.jit(lambda d: js.allocation.erk_densities(shapes, d, kind))
  for s in SPARSITIES:
    masks = run_alloc(alloc, LEAVES, s)
    d_impl = np.asarray(dens(jnp.float32(1.0 - s)))
    if s < 1:
      np.testing.assert_allclose(d_impl, ref_erk(shapes, 1.0 - s, kind)[0],
                                 rtol=2e-5, atol=1e-6)
    zeros = np.array([int(np.sum(~m)) for m in masks])
    for x, m, z, d in zip(LEAVES, masks, zeros, d_impl, strict=True):
      assert z == np_count(1.0 - d, x.size)
      np.testing.assert_array_equal(m, ref_keep(x, z))
    # Per-layer rounding keeps the total within half a weight per layer.
    assert abs(zeros.sum() - s * n.sum()) <= len(LEAVES) / 2 + 1e-3
    if s == 0.0:
      assert zeros.sum() == 0
    if s == 1.0:
      assert zeros.sum() == n.sum()


def test_erk_makes_the_smallest_layers_dense_first():
  # At density 0.5 the (1, 1) layer (p = 2) must be dense under ERK.
  masks = run_alloc(ERK, LEAVES, 0.5)
  assert masks[4].all()


# --- global_ -----------------------------------------------------------------


def test_global_matches_numpy():
  total = sum(SIZES)
  for s in SPARSITIES:
    masks = run_alloc(GLOBAL, LEAVES, s)
    k = np_count(s, total)
    assert sum(int(np.sum(~m)) for m in masks) == k
    for m, r in zip(masks, ref_global(LEAVES, k), strict=True):
      np.testing.assert_array_equal(m, r)


def test_global_ties_across_layers_prune_earlier_layers_first():
  # Leaf 2 is all ones and leaf 3 holds ones too: with k covering every value
  # below 1 and five of the ones, the tied ones go from leaf 2 first.
  flat = np.concatenate([x.reshape(-1) for x in LEAVES])
  below = int(np.sum(flat < 1.0))
  assert not any(np.any(x == 1.0) for x in LEAVES[:2])
  k = below + 5
  masks = run_alloc(GLOBAL, LEAVES, k / flat.size)
  assert np_count(k / flat.size, flat.size) == k
  assert int(np.sum(~masks[2])) == 5
  np.testing.assert_array_equal(masks[3], LEAVES[3] != 0)
  assert masks[4].all() and masks[6].all()


@pytest.mark.parametrize("mkf", [0.1])
def test_global_min_keep_fraction(mkf):
  total = sum(SIZES)
  t = math.floor(mkf * total)
  alloc = js.allocation.global_(min_keep_fraction=mkf)
  for s in SPARSITIES:
    masks = run_alloc(alloc, LEAVES, s)
    kept = [int(m.sum()) for m in masks]
    for n_l, kp in zip(SIZES, kept, strict=True):
      assert kp >= min(n_l, t), (s, n_l, kp, t)
    caps = [n - min(n, t) for n in SIZES]
    k = np_count(s, total)
    assert total - sum(kept) == min(k, sum(caps))
    for m, r in zip(masks, ref_global(LEAVES, k, caps), strict=True):
      np.testing.assert_array_equal(m, r)


def test_global_min_keep_protects_the_small_layer():
  # The small layer has the smallest weights but must keep T of them.
  leaves = [np.arange(1, 101, dtype=np.float32).reshape(10, 10),
            np.full((2, 5), 0.01, np.float32)]
  t = math.floor(0.04 * 110)  # 4
  masks = run_alloc(js.allocation.global_(min_keep_fraction=0.04), leaves, 0.5)
  assert int(masks[1].sum()) == t
  assert int((~masks[0]).sum()) == np_count(0.5, 110) - (10 - t)


def test_global_min_keep_zero_equals_plain_global():
  # 1e-4 * N < 1, so T = 0: no layer is protected.
  assert math.floor(1e-4 * sum(SIZES)) == 0
  alloc = js.allocation.global_(1e-4)
  for s in (0.3, 0.8, 1.0):
    a = run_alloc(alloc, LEAVES, s)
    b = run_alloc(GLOBAL, LEAVES, s)
    for x, y in zip(a, b, strict=True):
      np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize("bad", [-0.1, 1.5])
def test_global_min_keep_fraction_validated(bad):
  with pytest.raises(ValueError, match="min_keep_fraction"):
    js.allocation.global_(min_keep_fraction=bad)


# --- custom ------------------------------------------------------------------

PATHS = ["Dense_0/kernel", "Conv_0/kernel", "head/kernel"] + [
    f"Tail_{i}/kernel" for i in range(len(LEAVES) - 3)]


def test_custom_rules_first_match_and_global_default():
  alloc = js.allocation.custom(
      {"Dense_0": 0.25, r"^head": lambda s: 0.5 * s, "Dense|head": 1.0},
      default=js.allocation.global_())
  rest = [1] + list(range(3, len(LEAVES)))  # unmatched: ranked globally
  for s in SPARSITIES:
    masks = run_alloc(alloc, LEAVES, s, PATHS)
    k0 = np_count(0.25, SIZES[0])  # first rule wins over "Dense|head"
    k2 = np_count(np.float32(0.5) * np.float32(s), SIZES[2])
    for i, k in ((0, k0), (2, k2)):
      assert int(np.sum(~masks[i])) == k
      np.testing.assert_array_equal(masks[i], ref_keep(LEAVES[i], k))
    k = np_count(s, sum(SIZES[i] for i in rest))
    want = ref_global([LEAVES[i] for i in rest], k)
    for i, w in zip(rest, want, strict=True):
      np.testing.assert_array_equal(masks[i], w)


def test_custom_rule_out_of_range_names_rule():
  with pytest.raises(ValueError, match="Dense_0"):
    js.allocation.custom({"Dense_0": 1.5})


# --- through prune on a real tree --------------------------------------------


def test_allocation_through_prune_uses_magnitude_and_paths():
  alloc = js.allocation.custom({"Dense_0": 0.3},
                               default=js.allocation.global_())
  rng = np.random.RandomState(7)
  w0 = rng.randn(12, 10).astype(np.float32)
  w1 = rng.randn(10, 6).astype(np.float32)
  params = {
      "Dense_0": {"kernel": jnp.asarray(w0), "bias": jnp.ones(10)},
      "Dense_1": {"kernel": jnp.asarray(w1), "bias": jnp.ones(6)},
  }
  sched = js.one_shot(0.7, at_step=0)
  tx = js.prune(sched, allocation=alloc)
  _, state = jax.jit(tx.update)(params, tx.init(params), params)
  masks = js.get_masks(state)
  assert masks["Dense_0"]["bias"] is None
  assert masks["Dense_1"]["bias"] is None
  # The rule matches the path "Dense_0/kernel"; Dense_1 is ranked alone.
  np.testing.assert_array_equal(masks["Dense_0"]["kernel"],
                                ref_keep(np.abs(w0), np_count(0.3, 120)))
  np.testing.assert_array_equal(masks["Dense_1"]["kernel"],
                                ref_keep(np.abs(w1), np_count(0.7, 60)))
