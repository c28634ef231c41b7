"""Bit-packed masks: layout against NumPy, and the copy kept in the states."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxsparse
from jaxsparse._src.core import bits as bits_lib

SHAPES = [(1,), (5,), (7, 3), (16, 4), (9, 1), (3, 3, 5, 7), (2, 9, 6)]


def np_pack(m):
  """Reference layout: rows = leading dims, bit b of byte i = row 8 i + b."""
  m = np.asarray(m, bool)
  c = m.shape[-1]
  rows = m.reshape(-1, c)
  r = rows.shape[0]
  out = np.zeros((-(-r // 8), c), np.uint8)
  for row in range(r):
    out[row // 8] |= (rows[row].astype(np.uint8) << np.uint8(row % 8))
  return out


@pytest.mark.parametrize("shape", SHAPES)
def test_pack_matches_numpy_and_round_trips(shape):
  rng = np.random.default_rng(sum(shape))
  m = rng.random(shape) < 0.4
  packed = jax.jit(bits_lib.pack)(jnp.asarray(m))
  assert packed.dtype == jnp.uint8
  assert packed.shape == bits_lib.packed_shape(shape)
  np.testing.assert_array_equal(np.asarray(packed), np_pack(m))
  back = jax.jit(bits_lib.unpack, static_argnums=1)(packed, shape)
  assert back.dtype == jnp.bool_
  np.testing.assert_array_equal(np.asarray(back), m)


def test_all_ones_and_all_zeros():
  for value in (True, False):
    m = np.full((13, 5), value)
    np.testing.assert_array_equal(
        np.asarray(bits_lib.unpack(bits_lib.pack(jnp.asarray(m)), m.shape)), m)


def test_unpack_wrong_shape_is_an_error():
  packed = bits_lib.pack(jnp.ones((16, 4), bool))
  with pytest.raises(ValueError, match="bits"):
    bits_lib.unpack(packed, (24, 4))


def test_tree_helpers_keep_none_leaves():
  masks = {"a": jnp.asarray(np.eye(9, dtype=bool)), "b": None}
  packed = jaxsparse.pack_masks(masks)
  assert packed["b"] is None
  back = jaxsparse.unpack_masks(packed, masks)
  assert back["b"] is None
  np.testing.assert_array_equal(np.asarray(back["a"]), np.eye(9, dtype=bool))


def _params():
  k = jax.random.split(jax.random.PRNGKey(0), 3)
  return {"w1": jax.random.normal(k[0], (20, 12)),
          "b1": jnp.zeros((12,)),
          "w2": jax.random.normal(k[1], (12, 6))}


def _loss(p, x):
  return jnp.sum(jnp.tanh(x @ p["w1"] + p["b1"]) @ p["w2"]) ** 2


def _check_bits(state):
  masks = jaxsparse.get_masks(state)
  for name in ("w1", "w2"):
    np.testing.assert_array_equal(
        np.asarray(state.mask_bits[name]),
        np_pack(np.asarray(masks[name])))
  assert state.mask_bits["b1"] is None


@pytest.mark.parametrize("kind", ["prune", "rigl"])
def test_states_keep_the_packed_copy_equal_to_the_masks(kind):
  if kind == "prune":
    tx = jaxsparse.prune(
        jaxsparse.polynomial(0.8, begin_step=0, end_step=6, frequency=2),
        optimizer=optax.adam(1e-2))
  else:
    tx = getattr(jaxsparse.dst, kind)(
        0.7, optimizer=optax.adam(1e-2), end_step=8, update_every=2,
        drop_fraction=0.5)
  params = _params()
  state = tx.init(params)
  params = jaxsparse.apply_masks(params, jaxsparse.get_masks(state))
  update = jax.jit(tx.update)
  x = jax.random.normal(jax.random.PRNGKey(1), (4, 20))
  changes = 0
  for _ in range(9):
    before = jax.tree.map(np.asarray, jaxsparse.get_masks(state))
    u, state = update(jax.grad(_loss)(params, x), state, params)
    params = optax.apply_updates(params, u)
    _check_bits(state)
    after = jaxsparse.get_masks(state)
    changes += int(sum(np.sum(before[k] != np.asarray(after[k]))
                       for k in ("w1", "w2")))
    for k in ("w1", "w2"):
      assert (np.asarray(params[k])[~np.asarray(after[k])] == 0.0).all()
  assert changes > 0  # the masks did move, and the copy followed them


def test_replace_masks_sets_both_and_the_next_step_obeys():
  tx = jaxsparse.prune(0.0, optimizer=optax.sgd(0.1))
  params = _params()
  state = tx.init(params)
  rng = np.random.default_rng(0)
  new = {"w1": rng.random((20, 12)) < 0.5, "b1": None,
         "w2": (rng.random((12, 6)) < 0.5).astype(np.float32)}
  state = jaxsparse.replace_masks(state, new)
  _check_bits(state)
  x = jax.random.normal(jax.random.PRNGKey(1), (4, 20))
  u, state = jax.jit(tx.update)(jax.grad(_loss)(params, x), state, params)
  params = optax.apply_updates(params, u)
  for k in ("w1", "w2"):
    keep = np.asarray(new[k], bool)
    assert (np.asarray(params[k])[~keep] == 0.0).all()
    assert (np.asarray(params[k])[keep] != 0.0).all()


def test_sharded_prune_update_matches_unsharded_without_gathers():
  # 8 host devices (conftest): rows of every kernel and of every optimizer
  # slot spread over the mesh; one jitted update holds the mask update (a
  # `lax.cond`) and the packed-mask reads of the non-update path.
  from jax.sharding import Mesh, NamedSharding
  from jax.sharding import PartitionSpec as P
  assert jax.device_count() == 8
  mesh = Mesh(np.array(jax.devices()), ("d",))
  rng = np.random.default_rng(0)
  params = {"w1": rng.standard_normal((128, 32)).astype(np.float32),
            "b1": np.zeros(32, np.float32),
            "w2": rng.standard_normal((64, 16)).astype(np.float32)}
  grads = jax.tree.map(
      lambda p: rng.standard_normal(p.shape).astype(np.float32), params)
  tx = jaxsparse.prune(
      jaxsparse.polynomial(0.8, begin_step=0, end_step=4, frequency=2),
      optimizer=optax.adam(1e-2))
  update = jax.jit(tx.update)

  def run(params, grads, shard):
    state = tx.init(params)
    if shard is not None:
      state = jax.tree.map(
          lambda x: shard(x) if getattr(x, "ndim", 0) >= 1
          and x.shape[0] % 8 == 0 and x.shape != (2,) else x, state)
    outs = []
    for _ in range(3):  # steps 0 (update), 1 (not), 2 (update)
      u, state = update(grads, state, params)
      params = optax.apply_updates(params, u)
      outs.append(params)
    return outs, state

  shard = lambda x: jax.device_put(x, NamedSharding(mesh, P("d")))
  sp, sg = jax.tree.map(shard, params), jax.tree.map(shard, grads)
  got, got_state = run(sp, sg, shard)
  want, want_state = run(params, grads, None)
  for g, w in zip(got, want, strict=True):
    for a, b in zip(jax.tree.leaves(g), jax.tree.leaves(w), strict=True):
      np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  for k in ("w1", "w2"):
    np.testing.assert_array_equal(np.asarray(got_state.masks[k]),
                                  np.asarray(want_state.masks[k]))
    assert got[-1][k].sharding.spec == P("d")
    assert got_state.mask_bits[k].sharding.spec == P("d")
  hlo = update.lower(sg, got_state, sp).compile().as_text()
  assert " all-gather(" not in hlo and "all-gather-start" not in hlo
