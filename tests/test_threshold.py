"""Exact k-smallest selection, checked against NumPy stable sorts."""

import contextlib

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import jaxsparse as js
from jaxsparse._src.core import threshold
from jaxsparse._src.core.prune import compute_masks
from jaxsparse._src.core.threshold import sortable_key

_SETTINGS = settings(max_examples=15, deadline=None)


def ref_keep(scores, k):
  """Keep-mask pruning the k smallest; ties pruned lowest index first."""
  flat = np.asarray(scores, np.float32).reshape(-1)
  keep = np.ones(flat.size, bool)
  keep[np.argsort(flat, kind="stable")[:k]] = False
  return keep.reshape(np.shape(scores))


def ref_global_keep(leaves, k, caps=None):
  """Greedy global ranking (leaf order, then row-major) with per-leaf caps."""
  flat = np.concatenate([np.asarray(x, np.float32).reshape(-1)
                         for x in leaves])
  owner = np.concatenate([np.full(np.size(x), i)
                          for i, x in enumerate(leaves)])
  caps = [np.size(x) for x in leaves] if caps is None else list(caps)
  pruned = np.zeros(flat.size, bool)
  used = [0] * len(leaves)
  total = 0
  for j in np.argsort(flat, kind="stable"):
    if total == k:
      break
    if used[owner[j]] < caps[owner[j]]:
      pruned[j] = True
      used[owner[j]] += 1
      total += 1
  out, start = [], 0
  for x in leaves:
    out.append(~pruned[start:start + np.size(x)].reshape(np.shape(x)))
    start += np.size(x)
  return out


def keys_of(leaves):
  return [sortable_key(jnp.asarray(x, jnp.float32)) for x in leaves]


# --- sortable_key -----------------------------------------------------------

SPECIAL = np.array(
    [-np.inf, -3.0e38, -1.0, -1e-45, -0.0, 0.0, 1e-45, 1e-38, 0.5, 1.0,
     2.0, 3.4e38, np.inf], np.float32)


@pytest.mark.parametrize("jit", [False, True])
def test_sortable_key_order_on_special_values(jit):
  fn = jax.jit(sortable_key) if jit else sortable_key
  k = np.asarray(fn(jnp.asarray(SPECIAL)))
  assert k.dtype == np.int32
  for i in range(len(SPECIAL)):
    for j in range(len(SPECIAL)):
      a, b = SPECIAL[i], SPECIAL[j]
      assert (k[i] < k[j]) == (a < b), (a, b)
      assert (k[i] == k[j]) == (a == b), (a, b)  # -0.0 == +0.0


def test_sortable_key_nan_sorts_as_largest():
  x = jnp.asarray([np.nan, np.inf, 1.0, -np.inf])
  k = np.asarray(jax.jit(sortable_key)(x))
  assert k[0] >= k[1] > k[2] > k[3]


@_SETTINGS
@given(st.lists(st.floats(width=32, allow_nan=False), min_size=1,
                max_size=40))
def test_sortable_key_preserves_order(values):
  x = np.asarray(values, np.float32)
  k = np.asarray(sortable_key(jnp.asarray(x)))
  np.testing.assert_array_equal(np.less.outer(k, k), np.less.outer(x, x))
  np.testing.assert_array_equal(np.equal.outer(k, k), np.equal.outer(x, x))


def test_sortable_key_casts_other_dtypes():
  x = jnp.asarray([3.0, -1.0, 2.0], jnp.bfloat16)
  k = np.asarray(sortable_key(x))
  assert list(np.argsort(k)) == [1, 2, 0]


# --- smallest_k_per_leaf ----------------------------------------------------

CASES = {
    "random": [np.random.RandomState(0).randn(6, 7),
               np.random.RandomState(1).randn(11)],
    "all_equal": [np.ones((4, 5)), np.full(7, 0.25)],
    "integers": [np.random.RandomState(2).randint(-3, 4, (5, 6)),
                 np.random.RandomState(3).randint(0, 2, (3, 3, 2))],
    "tiny": [np.array([2.0]), np.array([1.0, 1.0]), np.array([3.0, -1.0, 3.0])],
    "signed_zero_inf": [np.array([0.0, -0.0, np.inf, -np.inf, 0.0, -0.0])],
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_smallest_k_per_leaf_matches_numpy_for_all_k(name):
  leaves = [np.asarray(x, np.float32) for x in CASES[name]]
  fn = jax.jit(threshold.smallest_k_per_leaf)
  keys = keys_of(leaves)
  sizes = [x.size for x in leaves]
  # Every k in [0, n] for every leaf (leaves use different k at once).
  for k0 in range(max(sizes) + 1):
    ks = np.array([(k0 + 2 * i) % (n + 1) for i, n in enumerate(sizes)])
    got = fn(keys, jnp.asarray(ks, jnp.int32))
    for x, k, m in zip(leaves, ks, got, strict=True):
      assert m.dtype == jnp.bool_ and m.shape == x.shape
      assert int(np.sum(~np.asarray(m))) == k
      np.testing.assert_array_equal(np.asarray(m), ref_keep(x, k))


def test_smallest_k_ties_prune_lowest_index_first():
  keys = keys_of([np.array([5.0, 1.0, 5.0, 5.0, 1.0, 5.0])])
  (m,) = threshold.smallest_k_per_leaf(keys, jnp.array([4]))
  np.testing.assert_array_equal(m, [False, False, False, True, False, True])


_HYP_SHAPES = [(3, 4), (7,), (1,)]
_HYP_FN = jax.jit(threshold.smallest_k_per_leaf)


@_SETTINGS
@given(st.data())
def test_smallest_k_per_leaf_hypothesis(data):
  # Fixed shapes (one compilation); values drawn from a small pool: ties.
  leaves, ks = [], []
  for shape in _HYP_SHAPES:
    n = int(np.prod(shape))
    vals = data.draw(st.lists(
        st.sampled_from([-2.0, -0.5, 0.0, 0.5, 1.0, 3.0, 1e30]),
        min_size=n, max_size=n))
    leaves.append(np.asarray(vals, np.float32).reshape(shape))
    ks.append(data.draw(st.integers(0, n)))
  got = _HYP_FN(keys_of(leaves), jnp.asarray(ks, jnp.int32))
  for x, k, m in zip(leaves, ks, got, strict=True):
    np.testing.assert_array_equal(np.asarray(m), ref_keep(x, k))


def test_smallest_k_per_leaf_empty_list():
  assert threshold.smallest_k_per_leaf([], jnp.zeros((0,), jnp.int32)) == []


# --- global_smallest_k and global_counts ------------------------------------


@pytest.mark.parametrize("name", sorted(CASES))
def test_global_smallest_k_matches_numpy(name):
  leaves = [np.asarray(x, np.float32) for x in CASES[name]]
  fn = jax.jit(threshold.global_smallest_k)
  keys = keys_of(leaves)
  total = sum(x.size for x in leaves)
  for k in sorted({0, 1, total // 3, total // 2, total - 1, total}):
    got = fn(keys, k)
    assert sum(int(np.sum(~np.asarray(m))) for m in got) == k
    for m, r in zip(got, ref_global_keep(leaves, k), strict=True):
      np.testing.assert_array_equal(np.asarray(m), r)


def test_global_ties_go_to_earlier_leaves_first():
  leaves = [np.ones((2, 2), np.float32), np.ones(3, np.float32)]
  got = threshold.global_smallest_k(keys_of(leaves), 5)
  np.testing.assert_array_equal(got[0], np.zeros((2, 2), bool))
  np.testing.assert_array_equal(got[1], [False, True, True])


@pytest.mark.parametrize("name", ["random", "all_equal", "integers", "tiny"])
def test_global_counts_with_caps_matches_greedy_reference(name):
  leaves = [np.asarray(x, np.float32) for x in CASES[name]]
  sizes = [x.size for x in leaves]
  fn = jax.jit(threshold.global_counts)
  keys = keys_of(leaves)
  total = sum(sizes)
  for caps in ([n // 2 for n in sizes], [n for n in sizes],
               [0] + [n - 1 for n in sizes[1:]]):
    for k in sorted({0, 1, total // 2, total}):
      counts = np.asarray(fn(keys, k, jnp.asarray(caps, jnp.int32)))
      ref = ref_global_keep(leaves, k, caps)
      np.testing.assert_array_equal(
          counts, [int(np.sum(~r)) for r in ref])
      assert counts.sum() == min(k, sum(caps))
      assert np.all(counts <= np.asarray(caps))


def test_global_counts_without_caps_sums_to_k():
  leaves = [np.random.RandomState(5).randn(30).astype(np.float32),
            np.random.RandomState(6).randn(4, 4).astype(np.float32)]
  counts = threshold.global_counts(keys_of(leaves), 17)
  ref = ref_global_keep(leaves, 17)
  np.testing.assert_array_equal(counts, [int(np.sum(~r)) for r in ref])


@pytest.mark.parametrize("shape", [(1024, 160), (131, 1009), (300000,)])
def test_large_leaves_match_numpy(shape):
  # Leaves of 10^5+ keys: 16-bit digits, full-size histogram passes.
  x = np.random.RandomState(7).randint(-300, 300, shape).astype(np.float32)
  n = x.size
  for k in (0, n // 3, n - 1):
    (m,) = threshold.smallest_k_per_leaf(keys_of([x]), jnp.asarray([k]))
    np.testing.assert_array_equal(np.asarray(m), ref_keep(x, k))
  got = threshold.global_smallest_k(keys_of([x, x[:7]]), n // 2)
  for m, r in zip(got, ref_global_keep([x, x[:7]], n // 2), strict=True):
    np.testing.assert_array_equal(np.asarray(m), r)


def test_selection_works_with_x64_enabled():
  # Under jax_enable_x64 integer sums default to int64; the selection must
  # keep its int32 bookkeeping and give the same masks.
  leaves = [np.asarray(x, np.float32) for x in CASES["integers"]]
  with jax.enable_x64(True):
    keys = keys_of(leaves)
    per_leaf = threshold.smallest_k_per_leaf(keys, jnp.asarray([7, 5]))
    glob = threshold.global_smallest_k(keys, 13)
    counts = threshold.global_counts(keys, 13, jnp.asarray([10, 2]))
  for x, k, m in zip(leaves, (7, 5), per_leaf, strict=True):
    np.testing.assert_array_equal(np.asarray(m), ref_keep(x, k))
  for m, r in zip(glob, ref_global_keep(leaves, 13), strict=True):
    np.testing.assert_array_equal(np.asarray(m), r)
  ref = ref_global_keep(leaves, 13, [10, 2])
  np.testing.assert_array_equal(counts, [int(np.sum(~r)) for r in ref])


@pytest.mark.parametrize("scope", ["global", "layer"])
def test_masks_of_sharded_params_stay_sharded_without_gathers(scope):
  # 8 host devices (conftest): rows of every kernel spread over the mesh.
  from jax.sharding import Mesh, NamedSharding
  from jax.sharding import PartitionSpec as P
  assert jax.device_count() == 8
  mesh = Mesh(np.array(jax.devices()), ("d",))
  rng = np.random.RandomState(0)
  params = {  # integer-valued: many ties at the threshold
      "a": {"kernel": rng.randint(-4, 5, (256, 128)).astype(np.float32),
            "bias": np.zeros(128, np.float32)},
      "b": {"kernel": rng.randn(512, 64).astype(np.float32)},
      # A larger leaf: 16-bit digits.
      "c": {"kernel": rng.randint(-50, 50, (1024, 160)).astype(np.float32)},
  }
  masks = js.ones_masks(params)
  allocation = (js.allocation.global_() if scope == "global"
                else js.allocation.uniform())
  fn = jax.jit(lambda p, m: compute_masks(
      p, None, m, jnp.float32(0.7), jax.random.PRNGKey(0),
      allocation=allocation))
  shard = lambda x: jax.device_put(x, NamedSharding(mesh, P("d")))
  sharded_p = jax.tree.map(shard, params)
  sharded_m = jax.tree.map(shard, masks)
  got = fn(sharded_p, sharded_m)
  want = fn(params, masks)
  for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
    np.testing.assert_array_equal(np.asarray(g), np.asarray(w))
    assert g.sharding.spec == P("d")
  hlo = fn.lower(sharded_p, sharded_m).compile().as_text()
  assert " all-gather(" not in hlo and "all-gather-start" not in hlo


@pytest.mark.parametrize(
    "method,name,unrolled",
    [(m, n, False) for m in ("radix", "pivots")
     for n in ("random", "integers", "tiny")]
    + [("radix", "integers", True), ("pivots", "random", True)])
def test_both_search_methods_match_numpy(monkeypatch, method, name,
                                         unrolled):
  # Radix histograms (CPU/GPU) and the pivot counting search (TPU) give the
  # same masks: per-leaf counts, a global ranking and capped counts; so do
  # the passes unrolled (as in a device-decided mask update's branch).
  monkeypatch.setattr(threshold, "_FORCE_METHOD", method)
  with threshold.unrolled() if unrolled else contextlib.nullcontext():
    _check_all_selections(name)


def _check_all_selections(name):
  leaves = [np.asarray(x, np.float32) for x in CASES[name]]
  keys = keys_of(leaves)
  sizes = [x.size for x in leaves]
  ks = [n // 2 + i % 2 for i, n in enumerate(sizes)]
  got = jax.jit(threshold.smallest_k_per_leaf)(keys, jnp.asarray(ks))
  for x, k, m in zip(leaves, ks, got, strict=True):
    np.testing.assert_array_equal(np.asarray(m), ref_keep(x, k))
  total = sum(sizes)
  for m, r in zip(threshold.global_smallest_k(keys, total // 2),
                  ref_global_keep(leaves, total // 2), strict=True):
    np.testing.assert_array_equal(np.asarray(m), r)
  caps = [n - 1 for n in sizes]
  counts = threshold.global_counts(keys, total // 2, jnp.asarray(caps))
  ref = ref_global_keep(leaves, total // 2, caps)
  np.testing.assert_array_equal(counts, [int(np.sum(~r)) for r in ref])


def _op_counts(num_leaves, same_shape):
  keys = [jnp.zeros((64, 64 + (0 if same_shape else i)), jnp.int32)
          for i in range(num_leaves)]
  ks = jnp.zeros((num_leaves,), jnp.int32)
  text = jax.jit(threshold.smallest_k_per_leaf).lower(keys, ks).as_text()
  return text.count("stablehlo.reduce"), text.count("stablehlo.scatter")


def test_program_size_does_not_multiply_with_leaves_or_passes():
  # One search serves every leaf, in one loop whose body is traced once for
  # all passes (tie passes included): reductions are shared, leaves of one
  # shape share one histogram scatter, and only the scatters of leaves of
  # different shapes grow with the leaf count. The mask update is an
  # untaken `lax.cond` branch at most steps, and on CPU each step pays for
  # that branch's buffers when it starts; compile time grows with it too.
  reduce2, scatter2 = _op_counts(2, same_shape=False)
  reduce8, scatter8 = _op_counts(8, same_shape=False)
  assert reduce8 == reduce2
  assert scatter8 == 4 * scatter2 > 0
  assert _op_counts(8, same_shape=True) == _op_counts(1, same_shape=True)
  assert "stablehlo.while" in jax.jit(threshold.smallest_k_per_leaf).lower(
      [jnp.zeros((64, 64), jnp.int32)], jnp.zeros((1,), jnp.int32)).as_text()


def test_device_decided_mask_update_has_no_loop():
  # On CPU a `while` loop in the untaken mask-update branch slowed every
  # step by ~30 %: under a traced flag the search is unrolled.
  params = {"w": jnp.linspace(-1.0, 1.0, 64 * 32).reshape(64, 32)}
  tx = js.prune(js.polynomial(0.9, begin_step=0, end_step=10, frequency=2),
                optimizer=optax.sgd(0.1))
  state = tx.init(params)
  text = lambda **kw: jax.jit(lambda s: tx.update(params, s, params, **kw)
                              ).lower(state).as_text()
  loops = lambda **kw: text(**kw).count("stablehlo.while")
  # (The PRNG key split may be a loop of its own.)
  key_loops = jax.jit(jax.random.split).lower(
      jax.random.PRNGKey(0)).as_text().count("stablehlo.while")
  assert "stablehlo.case" in text()
  assert loops() == loops(mask_update=True) == key_loops
  # Outside a mask-update branch the search keeps its one loop.
  search = jax.jit(threshold.smallest_k_per_leaf).lower(
      [jnp.zeros((64, 32), jnp.int32)], jnp.zeros((1,), jnp.int32)).as_text()
  assert search.count("stablehlo.while") == 1
