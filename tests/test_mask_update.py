"""Mask updates decided on the host (`mask_update=True/False`) or device.

A training loop that knows its step on the host can pass
`mask_update=schedule.is_update_step(step)` as a static argument of the
jitted step; it must train exactly as the device-decided default does, and
its non-update steps must hold no mask-update code.
"""

import functools

import jax
import jax.extend
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxsparse as js

SCHEDULES = {
    "polynomial": js.polynomial(0.8, begin_step=2, end_step=13, frequency=4),
    "iterative": js.iterative(0.5, every=5, num_rounds=3, begin_step=1),
    "one_shot": js.one_shot(0.6, at_step=3),
}


def make_params(seed=0):
  k = jax.random.split(jax.random.PRNGKey(seed), 3)
  return {"a": {"kernel": jax.random.normal(k[0], (12, 16)),
                "bias": 0.1 * jax.random.normal(k[1], (16,))},
          "b": {"kernel": jax.random.normal(k[2], (16, 8)) / 4.0}}


def loss_fn(params, x, y):
  h = jnp.tanh(x @ params["a"]["kernel"] + params["a"]["bias"])
  out = h @ params["b"]["kernel"]
  return optax.softmax_cross_entropy_with_integer_labels(out, y).mean()


X = jax.random.normal(jax.random.PRNGKey(10), (32, 12))
Y = jax.random.randint(jax.random.PRNGKey(11), (32,), 0, 8)


def make_step(tx, chain_projection=False):
  @functools.partial(jax.jit, static_argnames="mask_update")
  def step(params, state, mask_update=None):
    grads = jax.grad(loss_fn)(params, X, Y)
    updates, state = tx.update(grads, state, params, mask_update=mask_update)
    params = optax.apply_updates(params, updates)
    if chain_projection:  # the documented line of the chain spelling
      params = js.apply_masks(params, js.get_masks(state))
    return params, state
  return step


def train(step, state, params, steps, is_update=None):
  for t in range(steps):
    host = None if is_update is None else is_update(t)
    params, state = step(params, state, mask_update=host)
  return params, state


def assert_trees_equal(a, b):
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def primitives(jaxpr) -> set[str]:
  """Names of all primitives in a jaxpr, sub-jaxprs included."""
  out = set()
  for eqn in jaxpr.eqns:
    out.add(eqn.primitive.name)
    for sub in jax.extend.core.jaxprs_in_params(eqn.params):
      out |= primitives(sub)
  return out


# --------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(SCHEDULES))
def test_is_update_step_on_python_ints_is_a_python_bool(name):
  sched = SCHEDULES[name]
  for t in range(20):
    host = sched.is_update_step(t)
    assert type(host) is bool, (t, type(host))
    assert host == bool(jax.jit(sched.is_update_step)(jnp.int32(t))), t


def test_periodic_updates():
  every = js.periodic_updates(3, 2, 11)
  assert [t for t in range(20) if every(t)] == [2, 5, 8, 11]
  got = jax.vmap(every)(jnp.arange(20))
  np.testing.assert_array_equal(np.flatnonzero(got), [2, 5, 8, 11])


@pytest.mark.parametrize("spelling,name", [
    ("wrapper", "polynomial"), ("wrapper", "iterative"),
    ("wrapper", "one_shot"), ("chain", "polynomial")])
def test_prune_host_decided_trains_exactly_as_device_decided(spelling, name):
  sched = SCHEDULES[name]
  if spelling == "wrapper":
    tx = js.prune(sched, optimizer=optax.adam(1e-2))
  else:
    tx = optax.chain(js.prune(sched), optax.sgd(0.05, momentum=0.9))
  step = make_step(tx, chain_projection=spelling == "chain")
  params = make_params()
  p_dev, s_dev = train(step, tx.init(params), params, 16)
  p_host, s_host = train(step, tx.init(params), params, 16,
                         sched.is_update_step)
  assert_trees_equal(p_host, p_dev)
  assert_trees_equal(s_host, s_dev)
  masks = js.get_masks(s_host)
  # The schedule's final sparsity was delivered, exactly round(s * n).
  for k in ("a", "b"):
    m = np.asarray(masks[k]["kernel"])
    assert (~m).sum() == int(np.floor(sched.final_sparsity * m.size + 0.5))
    assert (np.asarray(p_host[k]["kernel"])[~m] == 0.0).all()


@pytest.mark.parametrize("method,freeze", [
    ("rigl", False), ("rigl", True), ("set", False)])
def test_dst_host_decided_trains_exactly_as_device_decided(method, freeze):
  every, begin, end = 3, 1, 10
  tx = getattr(js.dst, method)(
      0.75, optimizer=optax.adam(1e-2), update_every=every,
      begin_step=begin, end_step=end, freeze_optimizer_on_update=freeze, seed=1)
  step = make_step(tx)
  state = tx.init(make_params())
  params = js.apply_masks(make_params(), js.get_masks(state))
  p_dev, s_dev = train(step, state, params, 13)
  p_host, s_host = train(step, state, params, 13,
                         js.periodic_updates(every, begin, end))
  assert_trees_equal(p_host, p_dev)
  assert_trees_equal(s_host, s_dev)
  # Updates are shaped like params at update steps too (biases included).
  at_update = state._replace(count=jnp.int32(begin))
  grads = jax.grad(loss_fn)(params, X, Y)
  for flag in (None, True):
    u, _ = jax.eval_shape(
        functools.partial(tx.update, mask_update=flag),
        grads, at_update, params)
    assert jax.tree.map(jnp.shape, u) == jax.tree.map(jnp.shape, params)
  # The masks moved (the comparison is not between two idle runs).
  moved = js.dst.mask_hamming(js.get_masks(state), js.get_masks(s_host))
  assert sum(int(v) for v in jax.tree.leaves(moved)) > 0


@pytest.mark.parametrize("kind", ["prune", "rigl", "set"])
def test_non_update_step_holds_no_mask_update_code(kind):
  if kind == "prune":
    tx = js.prune(SCHEDULES["polynomial"], optimizer=optax.adam(1e-2))
  else:
    tx = getattr(js.dst, kind)(0.75, optimizer=optax.adam(1e-2), end_step=10)
  params = make_params()
  state = tx.init(params)
  grads = jax.grad(loss_fn)(params, X, Y)

  def prims(flag):
    fn = functools.partial(tx.update, mask_update=flag)
    return primitives(jax.make_jaxpr(fn)(grads, state, params).jaxpr)

  device, host_no, host_yes = prims(None), prims(False), prims(True)
  assert "cond" in device
  # No branch, no PRNG, no selection: the update code is not there at all.
  assert not host_no & {"cond", "while", "sort", "top_k", "random_bits",
                        "threefry2x32", "debug_callback"}
  # Update steps hold the schedule's branch, checking the host's decision,
  # and no host callback (which would keep the persistent compilation
  # cache from storing them).
  assert "cond" in host_yes
  assert not (device | host_yes) & {"debug_callback", "pure_callback",
                                    "io_callback"}
  assert len(host_yes) > len(host_no)


@pytest.mark.parametrize("kind", ["prune", "set"])
def test_host_true_off_schedule_leaves_the_masks_unchanged(kind):
  # A host counter that drifted cannot update the masks where the schedule
  # does not: mask_update=True is the device-decided step, exactly.
  if kind == "prune":
    sched = SCHEDULES["polynomial"]
    tx = js.prune(sched, optimizer=optax.sgd(0.1))
    off, on = 0, 6
  else:
    tx = js.dst.set(0.5, optimizer=optax.sgd(0.1), update_every=3,
                    end_step=9)
    off, on = 1, 3
  step = make_step(tx)
  params = make_params()
  state = tx.init(params)
  state = optax.tree_utils.tree_set(state, count=jnp.int32(off))
  for flag in (True, None):
    p, s = step(params, state, mask_update=flag)
    for a, b in zip(jax.tree.leaves(js.get_masks(s)),
                    jax.tree.leaves(js.get_masks(state)), strict=True):
      np.testing.assert_array_equal(a, b)
  state = optax.tree_utils.tree_set(state, count=jnp.int32(on))
  (p1, s1), (p2, s2) = (step(params, state, mask_update=f)
                        for f in (True, None))
  for a, b in zip(jax.tree.leaves((p1, s1)), jax.tree.leaves((p2, s2)),
                  strict=True):
    np.testing.assert_array_equal(a, b)
  moved = sum(int(np.sum(np.asarray(a) != np.asarray(b))) for a, b in zip(
      jax.tree.leaves(js.get_masks(s1)), jax.tree.leaves(
          js.get_masks(state)), strict=True))
  assert moved > 0


@pytest.mark.parametrize("make", [
    lambda: js.prune(0.5, optimizer=optax.sgd(0.1)),
    lambda: js.dst.set(0.5, optimizer=optax.sgd(0.1), end_step=4)])
def test_traced_mask_update_is_a_trace_time_error(make):
  tx = make()
  params = make_params()
  state = tx.init(params)

  @jax.jit
  def step(flag):
    return tx.update(params, state, params, mask_update=flag)

  with pytest.raises(TypeError, match="`mask_update` must be a Python bool"):
    step(jnp.bool_(True))
