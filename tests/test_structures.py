"""Structures: N:M, blocks and channels against NumPy references."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxsparse as js
from jaxsparse._src.core.prune import compute_masks


def np_count(s, n):
  return int(np.floor(np.float32(s) * np.float32(n) + np.float32(0.5)))


def ref_keep(scores, k):
  flat = np.asarray(scores, np.float32).reshape(-1)
  keep = np.ones(flat.size, bool)
  keep[np.argsort(flat, kind="stable")[:k]] = False
  return keep.reshape(np.shape(scores))


def ref_nm(w, n, m, axis):
  """Keeps the n largest |w| of every m consecutive entries along `axis`."""
  s = np.moveaxis(np.abs(np.asarray(w, np.float32)), axis, -1)
  g = s.reshape(s.shape[:-1] + (s.shape[-1] // m, m))
  order = np.argsort(-g, axis=-1, kind="stable")  # lower index wins ties
  keep = np.zeros(g.shape, bool)
  np.put_along_axis(keep, order[..., :n], True, axis=-1)
  return np.moveaxis(keep.reshape(s.shape), -1, axis)


@functools.cache
def masks_fn(structure, allocation):
  """jit(compute_masks) for fixed structure/allocation (cached)."""
  def fn(params, masks, s):
    return compute_masks(params, None, masks, s, jax.random.PRNGKey(0),
                            structure=structure, allocation=allocation)
  return jax.jit(fn)


UNIFORM = js.allocation.uniform()


def masks_for(params, s, structure, allocation=None, masks=None):
  allocation = UNIFORM if allocation is None else allocation
  masks = js.ones_masks(params) if masks is None else masks
  return masks_fn(structure, allocation)(params, masks, jnp.float32(s))


RNG = np.random.RandomState(0)
DENSE = RNG.randn(16, 6).astype(np.float32)  # (in, out)
CONV = RNG.randn(3, 3, 8, 4).astype(np.float32)  # HWIO
INTS = RNG.randint(-2, 3, (8, 4)).astype(np.float32)  # many ties
PARAMS = {"Dense_0": {"kernel": jnp.asarray(DENSE), "bias": jnp.zeros(6)},
          "Conv_0": {"kernel": jnp.asarray(CONV), "bias": jnp.zeros(4)},
          "Dense_1": {"kernel": jnp.asarray(INTS)}}

# --- N:M ---------------------------------------------------------------------

NM_24 = js.structures.n_m(2, 4)
NM_CASES = [(2, 4), (1, 4), (0, 4), (4, 4), (1, 2), (3, 8)]


@pytest.mark.parametrize("n,m", NM_CASES)
def test_n_m_keeps_exactly_n_per_group_along_input_axis(n, m):
  struct = NM_24 if (n, m) == (2, 4) else js.structures.n_m(n, m)
  masks = masks_for(PARAMS, 0.5, struct)
  for name, w, axis in [("Dense_0", DENSE, 0), ("Conv_0", CONV, 2),
                        ("Dense_1", INTS, 0)]:
    mk = np.asarray(masks[name]["kernel"])
    g = np.moveaxis(mk, axis, -1)
    per_group = g.reshape(g.shape[:-1] + (-1, m)).sum(-1)
    assert np.all(per_group == n), name
    np.testing.assert_array_equal(mk, ref_nm(w, n, m, axis))
  assert masks["Dense_0"]["bias"] is None


@pytest.mark.parametrize("n,m", [(3, 32), (5, 64)])
def test_n_m_large_groups_match_numpy(n, m):
  # m <= 32 ranks by pairwise comparison, larger m by sorting.
  w = RNG.randn(2 * m, 3).astype(np.float32)
  w[:m // 2] = 1.0  # ties: the lower index is kept
  struct = js.structures.n_m(n, m)
  masks = masks_for({"k": jnp.asarray(w)}, 0.5, struct)
  np.testing.assert_array_equal(masks["k"], ref_nm(w, n, m, 0))


def test_n_m_ignores_the_target_sparsity():
  a = masks_for(PARAMS, 0.1, NM_24)
  b = masks_for(PARAMS, 0.9, NM_24)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
    np.testing.assert_array_equal(x, y)


def test_n_m_explicit_axis():
  struct = js.structures.n_m(1, 3, axis=-1)
  w = RNG.randn(4, 6).astype(np.float32)
  masks = masks_for({"k": jnp.asarray(w)}, 0.5, struct)
  np.testing.assert_array_equal(masks["k"], ref_nm(w, 1, 3, 1))
  assert np.all(np.asarray(masks["k"]).reshape(4, 2, 3).sum(-1) == 1)


def test_n_m_ties_keep_lower_index():
  w = jnp.ones((8, 2))
  masks = masks_for({"k": w}, 0.5, NM_24)
  want = np.tile(np.array([1, 1, 0, 0], bool), 2)[:, None].repeat(2, 1)
  np.testing.assert_array_equal(masks["k"], want)


def test_n_m_mask_unchanged_when_signs_flip():
  a = masks_for(PARAMS, 0.5, NM_24)
  b = masks_for(jax.tree.map(jnp.negative, PARAMS), 0.5, NM_24)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
    np.testing.assert_array_equal(x, y)


def test_n_m_validation_errors():
  with pytest.raises(ValueError, match="n <= m|n=3"):
    js.structures.n_m(3, 2)
  with pytest.raises(ValueError):
    js.structures.n_m(-1, 4)
  bad = {"Dense_0": {"kernel": jnp.ones((6, 8))}}
  with pytest.raises(ValueError, match=r"Dense_0/kernel.*M=4|M=4.*Dense_0"):
    js.prune(0.5, structure=NM_24).init(bad)
  conv = {"Conv_0": {"kernel": jnp.ones((3, 3, 6, 8))}}
  with pytest.raises(ValueError, match="Conv_0/kernel"):
    js.prune(0.5, structure=NM_24).init(conv)
  with pytest.raises(ValueError, match="M=4"):
    js.prune(0.5, structure=js.structures.n_m(2, 4, axis=-1)).init(
        {"w": jnp.ones((8, 6))})


def test_n_m_with_optimizer_stays_exact_during_training():
  tx = js.prune(js.polynomial(0.5, 0, 4, frequency=2), structure=NM_24,
                optimizer=optax.adam(0.05))
  params = {"w": jnp.asarray(DENSE)}
  state = tx.init(params)

  @jax.jit
  def step(params, state):
    g = jax.grad(lambda p: jnp.sum(jnp.sin(p["w"] * 3.0)))(params)
    u, state = tx.update(g, state, params)
    return optax.apply_updates(params, u), state

  for _ in range(6):
    params, state = step(params, state)
    mk = np.asarray(js.get_masks(state)["w"])
    assert np.all(mk.reshape(4, 4, 6).sum(1) == 2)
    w = np.asarray(params["w"])
    assert np.all(w[~mk] == 0.0)


# --- block -------------------------------------------------------------------


def ref_block_keep(w, bh, bw, s):
  w2 = np.abs(np.asarray(w, np.float32)).reshape(-1, w.shape[-1])
  r, c = w2.shape
  means = w2.reshape(r // bh, bh, c // bw, bw).mean(axis=(1, 3))
  keep = ref_keep(means, np_count(s, means.size))
  return np.repeat(np.repeat(keep, bh, 0), bw, 1).reshape(w.shape)


BLOCK = js.structures.block(2, 2)


@pytest.mark.parametrize("s", [0.0, 0.25, 0.5, 0.8, 1.0])
def test_block_exact_counts_and_matches_numpy(s):
  masks = masks_for(PARAMS, s, BLOCK)
  for name, w in [("Dense_0", DENSE), ("Conv_0", CONV), ("Dense_1", INTS)]:
    mk = np.asarray(masks[name]["kernel"])
    np.testing.assert_array_equal(mk, ref_block_keep(w, 2, 2, s))
    r = mk.reshape(-1, w.shape[-1])
    blocks = r.reshape(r.shape[0] // 2, 2, r.shape[1] // 2, 2)
    uniform_blocks = blocks.all(axis=(1, 3)) | ~blocks.any(axis=(1, 3))
    assert uniform_blocks.all()
    n_blocks = blocks.shape[0] * blocks.shape[2]
    assert int((~blocks.any(axis=(1, 3))).sum()) == np_count(s, n_blocks)


def test_block_ties_prune_first_blocks():
  masks = masks_for({"k": jnp.ones((4, 4))}, 0.5, BLOCK)
  want = np.array([[0, 0, 0, 0], [0, 0, 0, 0], [1, 1, 1, 1], [1, 1, 1, 1]],
                  bool)
  np.testing.assert_array_equal(masks["k"], want)


def test_block_with_global_allocation_counts_blocks():
  masks = masks_for(PARAMS, 0.6, BLOCK, js.allocation.global_())
  total = 0
  for _name, w in [("Dense_0", DENSE), ("Conv_0", CONV), ("Dense_1", INTS)]:
    total += w.size // 4
  zeros = sum(int((~np.asarray(masks[k]["kernel"])).sum())
              for k in ("Dense_0", "Conv_0", "Dense_1"))
  assert zeros == 4 * np_count(0.6, total)


def test_block_not_dividing_names_leaf():
  with pytest.raises(ValueError, match="Dense_0/kernel"):
    js.prune(0.5, structure=js.structures.block(4, 4)).init(
        {"Dense_0": {"kernel": jnp.ones((6, 8))}})
  with pytest.raises(ValueError, match=r"3x3"):
    js.prune(0.5, structure=js.structures.block(3, 3)).init(
        {"w": jnp.ones((9, 8))})
  with pytest.raises(ValueError):
    js.structures.block(0, 2)


# --- channel -----------------------------------------------------------------

CHANNEL = js.structures.channel()


@pytest.mark.parametrize("s", [0.0, 0.3, 0.5, 1.0])
def test_channel_prunes_whole_output_channels(s):
  masks = masks_for(PARAMS, s, CHANNEL)
  for name, w in [("Dense_0", DENSE), ("Conv_0", CONV), ("Dense_1", INTS)]:
    mk = np.asarray(masks[name]["kernel"]).reshape(-1, w.shape[-1])
    cols_kept = mk.all(axis=0)
    assert np.all(cols_kept | ~mk.any(axis=0))  # whole channels
    c = w.shape[-1]
    means = np.abs(w).reshape(-1, c).mean(0)
    np.testing.assert_array_equal(cols_kept, ref_keep(means, np_count(s, c)))


def test_channel_axis_zero_prunes_rows():
  w = RNG.randn(10, 3).astype(np.float32)
  masks = masks_for({"k": jnp.asarray(w)}, 0.4, js.structures.channel(axis=0))
  mk = np.asarray(masks["k"])
  rows = mk.all(axis=1)
  assert np.all(rows | ~mk.any(axis=1))
  np.testing.assert_array_equal(rows, ref_keep(np.abs(w).mean(1), 4))


# --- unstructured / monotone masks --------------------------------------------


def test_unstructured_is_per_weight_and_respects_old_masks():
  w = RNG.randn(5, 5).astype(np.float32)
  old = np.ones((5, 5), bool)
  old[0, :] = False  # five already pruned, whatever their magnitude
  masks = masks_for({"k": jnp.asarray(w)}, 0.4, js.structures.unstructured(),
                    masks={"k": jnp.asarray(old)})
  mk = np.asarray(masks["k"])
  assert int((~mk).sum()) == 10
  assert not mk[0].any()
  rest = np.where(old, np.abs(w), -np.inf)
  np.testing.assert_array_equal(mk, ref_keep(rest, 10))
