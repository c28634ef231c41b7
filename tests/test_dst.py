"""SET and RigL (`jaxsparse.dst`), checked against NumPy and paper properties.

Compiled functions are shared between tests (module-level cache): the
update of each configuration is compiled once.
"""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxsparse._src.core import allocation as alloc_lib
from jaxsparse._src.core import masks as masks_lib
from jaxsparse._src.dst import dst as dst_lib
from jaxsparse._src.dst import ste as ste_lib

ALPHA, EVERY, BEGIN, END = 0.3, 3, 1, 10  # updates at steps 1, 4, 7, 10.
UPDATE_STEPS = (1, 4, 7, 10)
KERNELS = ("Dense_0", "Dense_1")


def make_params(key=0):
  k = jax.random.split(jax.random.PRNGKey(key), 4)
  return {
      "Dense_0": {"kernel": jax.random.normal(k[0], (12, 16)) / 3.0,
                  "bias": 0.1 * jax.random.normal(k[1], (16,))},
      "Dense_1": {"kernel": jax.random.normal(k[2], (16, 8)) / 4.0,
                  "bias": 0.1 * jax.random.normal(k[3], (8,))},
  }


def loss_fn(params, x, y):
  h = jax.nn.relu(x @ params["Dense_0"]["kernel"] + params["Dense_0"]["bias"])
  out = h @ params["Dense_1"]["kernel"] + params["Dense_1"]["bias"]
  return optax.softmax_cross_entropy_with_integer_labels(out, y).mean()


X = jax.random.normal(jax.random.PRNGKey(10), (32, 12))
Y = jax.random.randint(jax.random.PRNGKey(11), (32,), 0, 8)
grad_fn = jax.jit(jax.grad(loss_fn))


def combo(lr=1e-3):
  """One optimizer holding a momentum trace, Adam mu/nu and Lion mu."""
  return optax.chain(optax.trace(decay=0.9), optax.scale_by_adam(),
                     optax.scale_by_lion(), optax.scale(-lr))


def slots(inner_state):
  """The param-shaped slots of `combo()`, by name."""
  tr, adam, lion, _ = inner_state
  return {"trace": tr.trace, "adam_mu": adam.mu, "adam_nu": adam.nu,
          "lion_mu": lion.mu}


@functools.cache
def config(method, freeze=False):
  tx = dst_lib.sparse_training(
      method, 0.75, optimizer=combo(), drop_fraction=ALPHA,
      update_every=EVERY, begin_step=BEGIN, end_step=END,
      freeze_optimizer_on_update=freeze, seed=3)
  return tx, jax.jit(tx.update)


def kernel_masks(state):
  m = masks_lib.get_masks(state)
  return {k: np.asarray(m[k]["kernel"]) for k in KERNELS}


def np_frac(t):
  t = min(t, END)
  return ALPHA / 2 * (1 + math.cos(math.pi * t / END))


def np_top(score, candidates, k):
  """Bool mask of the k largest `score` among `candidates` (NumPy)."""
  s = np.where(candidates, score, -np.inf).ravel()
  out = np.zeros(s.size, bool)
  out[np.argsort(-s, kind="stable")[:k]] = True
  assert candidates.ravel()[out].all()
  return out.reshape(score.shape)


# --------------------------------------------------------------------------


# Frozen RigL (freeze_optimizer_on_update=True) is checked step by step in
# test_rigl_update_matches_numpy_drop_and_grow.
@pytest.mark.parametrize("method,freeze", [("rigl", False), ("set", False)])
def test_training_conserves_counts_zeros_and_resets_slots(method, freeze):
  tx, update = config(method, freeze)
  params = make_params()
  state = tx.init(params)
  m0 = kernel_masks(state)
  # Initial masks: exact count per layer (uniform allocation, 75%).
  for k in KERNELS:
    assert m0[k].sum() == m0[k].size - math.floor(0.75 * m0[k].size + 0.5)
  assert masks_lib.get_masks(state)["Dense_0"]["bias"] is None
  params = masks_lib.apply_masks(params, masks_lib.get_masks(state))
  bias0 = np.asarray(params["Dense_1"]["bias"])
  moved_at = []
  for step in range(14):
    old_m = kernel_masks(state)
    old_p = jax.tree.map(np.asarray, params)
    old_slots = jax.tree.map(np.asarray, slots(state.inner_state))
    g = grad_fn(params, X, Y)
    u, state = update(g, state, params)
    params = optax.apply_updates(params, u)
    new_m = kernel_masks(state)
    new_slots = slots(state.inner_state)
    changed = sum(int((old_m[k] != new_m[k]).sum()) for k in KERNELS)
    if changed:
      moved_at.append(step)
    for k in KERNELS:
      w = np.asarray(params[k]["kernel"])
      # Per-layer non-zero count conserved; pruned weights exactly 0.0.
      assert new_m[k].sum() == m0[k].sum()
      assert (w[~new_m[k]] == 0.0).all()
      grown = new_m[k] & ~old_m[k]
      dropped = old_m[k] & ~new_m[k]
      assert grown.sum() == dropped.sum()
      assert (w[grown] == 0.0).all()
      for name, s in new_slots.items():
        s = np.asarray(s[k]["kernel"])
        # Slots of grown and dropped entries are zero right after the update.
        assert (s[grown] == 0).all(), (step, name)
        assert (s[dropped] == 0).all(), (step, name)
        if method == "set":
          assert (s[~new_m[k]] == 0).all(), (step, name)
        # RigL with an elementwise optimizer (this one) does not mask the
        # gradients of inactive entries: their slots follow them (they
        # reach no weight) and are zeroed when the entry grows, above.
      kept = old_m[k] & new_m[k]
      if method == "rigl" and step in UPDATE_STEPS:
        # The mask update replaces the optimizer step: kept weights stay as
        # they were; so does the optimizer state if frozen, else it took
        # the step's gradient.
        np.testing.assert_array_equal(w[kept], old_p[k]["kernel"][kept])
        for name, s in new_slots.items():
          same = (np.asarray(s[k]["kernel"])[kept]
                  == old_slots[name][k]["kernel"][kept])
          assert same.all() if freeze else not same.all(), (step, name)
      else:
        # An optimizer step moved the kept weights (Lion: |update| <= lr).
        d = np.abs(w[kept] - old_p[k]["kernel"][kept])
        assert (d <= 1e-3 * (1 + 1e-3)).all() and (d > 0).mean() > 0.5
  # Updates at begin + k * every while f(t) > 0; f(T_end) = 0 moves nothing.
  assert moved_at == [1, 4, 7]
  # Unpruned leaves (biases) are trained.
  assert np.abs(np.asarray(params["Dense_1"]["bias"]) - bias0).max() > 1e-4


def make_update_inputs(state, seed=0):
  """Params with distinct magnitudes on the active entries and gradients
  whose largest values sit on half of the weights RigL will drop."""
  rng = np.random.default_rng(seed)
  masks = kernel_masks(state)
  params = make_params()
  grads = jax.tree.map(lambda p: np.zeros(p.shape, np.float32), params)
  frac = np_frac(BEGIN)
  info = {}
  for k in KERNELS:
    m = masks[k]
    n = m.size
    mags = rng.permutation(np.linspace(0.05, 1.0, n))
    signed = (mags * rng.choice([-1.0, 1.0], n)).reshape(m.shape)
    w = np.where(m, signed, 0.0).astype(np.float32)
    n_active = int(m.sum())
    n_prune = math.floor(n_active * frac)
    kept = np_top(np.abs(w), m, n_active - n_prune)
    g = rng.standard_normal(m.shape).astype(np.float32)
    dropped = np.flatnonzero((m & ~kept).ravel())
    big = dropped[: len(dropped) // 2]
    g.ravel()[big] = 50.0 + np.arange(len(big))  # these are regrown.
    params[k]["kernel"] = jnp.asarray(w)
    grads[k]["kernel"] = g
    info[k] = dict(kept=kept, n_prune=n_prune, regrown=big)
  grads = jax.tree.map(jnp.asarray, grads)
  return params, grads, info


def test_rigl_update_matches_numpy_drop_and_grow():
  tx, update = config("rigl", freeze=True)
  state = tx.init(make_params())
  # Two plain steps (steps 2 and 3) give the optimizer non-zero slots; then
  # step 1 is replayed as the update step.
  params, grads, info = make_update_inputs(state)
  for t in (2, 3):
    state = state._replace(count=jnp.asarray(t, jnp.int32))
    _, state = update(grads, state, params)
  state = state._replace(count=jnp.asarray(BEGIN, jnp.int32))
  old_m = kernel_masks(state)
  old_slots = jax.tree.map(np.asarray, slots(state.inner_state))
  u, new_state = update(grads, state, params)
  new_params = optax.apply_updates(params, u)
  new_m = kernel_masks(new_state)
  for k in KERNELS:
    kept, n_prune = info[k]["kept"], info[k]["n_prune"]
    assert n_prune > 0
    g = np.abs(np.asarray(grads[k]["kernel"]))
    grow = np_top(g, ~kept, n_prune)  # largest |dense grad| among non-kept
    assert not (grow & kept).any()
    np.testing.assert_array_equal(new_m[k], kept | grow)
    w_old = np.asarray(params[k]["kernel"])
    w_new = np.asarray(new_params[k]["kernel"])
    # Kept and dropped-then-regrown weights keep their values.
    regrown = np.zeros(kept.size, bool)
    regrown[info[k]["regrown"]] = True
    regrown = regrown.reshape(kept.shape)
    assert (regrown & grow & old_m[k]).sum() == len(info[k]["regrown"])
    np.testing.assert_array_equal(w_new[kept | regrown], w_old[kept | regrown])
    assert (w_old[regrown] != 0).all()
    # Newly grown weights start at exactly 0; dropped ones are 0.
    assert (w_new[grow & ~old_m[k]] == 0).all()
    assert (w_new[~new_m[k]] == 0).all()
    # Optimizer slots: unchanged where kept, zero at grown/dropped entries.
    for name, s in slots(new_state.inner_state).items():
      s = np.asarray(s[k]["kernel"])
      both = old_m[k] & new_m[k]
      assert np.abs(old_slots[name][k]["kernel"][both]).max() > 0, name
      np.testing.assert_array_equal(s[both], old_slots[name][k]["kernel"][both])
      assert (s[~both] == 0).all(), name
  # The inner optimizer did not step (Adam's count unchanged).
  assert int(state.inner_state[1].count) == 2
  assert int(new_state.inner_state[1].count) == 2


def test_rigl_unfrozen_optimizer_steps_but_params_do_not():
  tx, update = config("rigl", freeze=True)
  tx2, update2 = config("rigl")  # the default: not frozen
  state = tx.init(make_params())
  state2 = tx2.init(make_params())
  np.testing.assert_array_equal(kernel_masks(state)["Dense_0"],
                                kernel_masks(state2)["Dense_0"])
  state = state._replace(count=jnp.asarray(BEGIN, jnp.int32))
  state2 = state2._replace(count=jnp.asarray(BEGIN, jnp.int32))
  params, grads, _ = make_update_inputs(state)
  u, new = update(grads, state, params)
  u2, new2 = update2(grads, state2, params)
  for k in KERNELS:
    # Same masks and the same params: only drop/grow changed them.
    np.testing.assert_array_equal(kernel_masks(new)[k], kernel_masks(new2)[k])
    np.testing.assert_array_equal(u[k]["kernel"], u2[k]["kernel"])
    kept = kernel_masks(state)[k] & kernel_masks(new2)[k]
    mu = np.asarray(slots(new2.inner_state)["adam_mu"][k]["kernel"])
    assert (mu[kept] != 0).all()  # the moments took this step's gradient
    assert (mu[~kept] == 0).all()
  assert int(new.inner_state[1].count) == 0
  assert int(new2.inner_state[1].count) == 1


def test_set_optimizer_step_then_random_growth():
  tx, update = config("set")
  state = tx.init(make_params())
  state = state._replace(count=jnp.asarray(BEGIN, jnp.int32))
  params, grads, _ = make_update_inputs(state)
  old_m = kernel_masks(state)
  # Independent reference for the optimizer step: optax on masked grads.
  masks = masks_lib.get_masks(state)
  ref_u, _ = combo().update(
      masks_lib.apply_masks(grads, masks), combo().init(params), params)
  stepped = optax.apply_updates(params, ref_u)
  u, new_state = update(grads, state, params)
  new_params = optax.apply_updates(params, u)
  new_m = kernel_masks(new_state)
  for k in KERNELS:
    m = old_m[k]
    n_active = int(m.sum())
    n_prune = math.floor(n_active * np_frac(BEGIN))
    w_step = np.asarray(stepped[k]["kernel"])
    kept = np_top(np.abs(w_step), m, n_active - n_prune)  # after the step
    assert (new_m[k] & kept).sum() == kept.sum()
    grown = new_m[k] & ~kept
    assert grown.sum() == n_prune and not (grown & kept).any()
    w_new = np.asarray(new_params[k]["kernel"])
    np.testing.assert_allclose(w_new[kept], w_step[kept], rtol=1e-6)
    assert (w_new[grown & ~m] == 0).all()
    assert (w_new[~new_m[k]] == 0).all()
    # Growth is random, not by gradient: the regrown set differs from the
    # top-|g| choice RigL would make.
    g = np.abs(np.asarray(grads[k]["kernel"]))
    assert (grown != np_top(g, ~kept, n_prune)).any()
  assert int(new_state.inner_state[1].count) == 1  # the optimizer stepped.


def test_cosine_drop_fraction_schedule():
  f = jax.jit(dst_lib.cosine_drop_fraction(0.3, 1000))
  for t in (0, 1, 250, 500, 777, 999, 1000, 1500):
    want = 0.15 * (1 + math.cos(math.pi * min(t, 1000) / 1000))
    np.testing.assert_allclose(float(f(t)), want, atol=1e-6)
  assert float(f(1000)) == pytest.approx(0.0, abs=1e-7)
  assert float(f(0)) == pytest.approx(0.3)
  assert float(dst_lib.constant_drop_fraction(0.2)(12345)) == pytest.approx(
      0.2)


def test_inject_hyperparams_adam_erk_and_unpruned_leaves():
  opt = optax.inject_hyperparams(optax.adam)(learning_rate=1e-2)
  tx = dst_lib.sparse_training("rigl", 0.8, optimizer=opt,
                   allocation=alloc_lib.erk(), update_every=2, end_step=6)
  params = make_params(1)
  state = tx.init(params)
  masks = kernel_masks(state)
  # ERK (NumPy): d_l = eps * sum(shape) / prod(shape), sum d_l n_l = 0.2 N.
  shapes = [(12, 16), (16, 8)]
  n = np.array([a * b for a, b in shapes], float)
  p = np.array([(a + b) / (a * b) for a, b in shapes])
  eps = 0.2 * n.sum() / (p * n).sum()
  assert (eps * p <= 1).all()
  for k, d, nl in zip(KERNELS, eps * p, n, strict=True):
    assert masks[k].sum() == nl - math.floor((1 - d) * nl + 0.5)
  params = masks_lib.apply_masks(params, masks_lib.get_masks(state))

  @jax.jit
  def step(params, state):
    g = jax.grad(loss_fn)(params, X, Y)
    u, state = tx.update(g, state, params)
    return optax.apply_updates(params, u), state

  start = jax.tree.map(np.asarray, params)
  for _ in range(8):
    params, state = step(params, state)
    now = kernel_masks(state)
    for k in KERNELS:
      assert now[k].sum() == masks[k].sum()
      assert (np.asarray(params[k]["kernel"])[~now[k]] == 0).all()
  assert np.abs(np.asarray(params["Dense_0"]["bias"])
                - start["Dense_0"]["bias"]).max() > 1e-3
  # The injected learning rate is live: at 0 a non-update step is a no-op.
  state.inner_state.hyperparams["learning_rate"] = jnp.zeros(())
  state = state._replace(count=jnp.asarray(9, jnp.int32))
  frozen, _ = step(params, state)
  for a, b in zip(jax.tree.leaves(frozen), jax.tree.leaves(params),
                  strict=True):
    np.testing.assert_array_equal(a, b)


def test_dense_gradient_for_rigl_is_the_plain_gradient():
  params = make_params(2)
  masks = kernel_masks(config("rigl")[0].init(params))
  tree_masks = {k: {"kernel": jnp.asarray(masks[k]), "bias": None}
                for k in KERNELS}
  sparse = masks_lib.apply_masks(params, tree_masks)
  g_plain = grad_fn(sparse, X, Y)
  g_ste = jax.jit(jax.grad(lambda p: loss_fn(
      ste_lib.straight_through(p, tree_masks), X, Y)))(params)
  g_masked = jax.jit(jax.grad(lambda p: loss_fn(
      masks_lib.apply_masks(p, tree_masks), X, Y)))(params)
  for k in KERNELS:
    gp = np.asarray(g_plain[k]["kernel"])
    np.testing.assert_allclose(gp, np.asarray(g_ste[k]["kernel"]), rtol=1e-5,
                               atol=1e-7)
    # Non-zero at pruned entries (RigL grows there) ...
    assert np.abs(gp[~masks[k]]).max() > 0
    # ... which apply_masks inside the loss would hide.
    assert (np.asarray(g_masked[k]["kernel"])[~masks[k]] == 0).all()


def test_mask_hamming_matches_numpy():
  rng = np.random.default_rng(5)
  a = {"x": rng.random((6, 7)) > 0.5, "b": None}
  b = {"x": rng.random((6, 7)) > 0.5, "b": None}
  h = dst_lib.mask_hamming(a, b)
  assert h["b"] is None
  assert int(h["x"]) == int((a["x"] != b["x"]).sum())


def test_initial_masks_get_masks_and_chain():
  params = make_params()
  init = {k: {"kernel": jnp.arange(params[k]["kernel"].size).reshape(
      params[k]["kernel"].shape) % 3 == 0, "bias": None} for k in KERNELS}
  tx = optax.chain(optax.clip(1.0), dst_lib.sparse_training(
      "set", None, optimizer=optax.sgd(0.1), end_step=10,
      initial_masks=init))
  state = tx.init(params)
  got = masks_lib.get_masks(state)
  for k in KERNELS:
    np.testing.assert_array_equal(got[k]["kernel"], init[k]["kernel"])
    assert got[k]["bias"] is None


def test_argument_errors():
  with pytest.raises(ValueError, match="rigl"):
    dst_lib.sparse_training("magic", 0.5, optimizer=optax.sgd(0.1), end_step=10)
  with pytest.raises(ValueError, match="end_step"):
    dst_lib.sparse_training("rigl", 0.5, optimizer=optax.sgd(0.1), end_step=5,
                begin_step=10)
  with pytest.raises(ValueError, match="sparsity"):
    dst_lib.sparse_training("rigl", None, optimizer=optax.sgd(0.1), end_step=5)
  with pytest.raises(ValueError, match="update_every"):
    dst_lib.sparse_training("rigl", 0.5, optimizer=optax.sgd(0.1), end_step=5,
                update_every=0)
  tx = dst_lib.sparse_training(
      "rigl", 0.5, optimizer=optax.sgd(0.1), end_step=5,
      initial_masks={"w": jnp.ones((4, 4), bool)})
  state = tx.init({"w": jnp.ones((4, 4))})
  with pytest.raises(ValueError, match="params"):
    tx.update({"w": jnp.ones((4, 4))}, state)


def test_flax_nnx_state_params():
  from flax import nnx

  class MLP(nnx.Module):

    def __init__(self, rngs):
      self.l1 = nnx.Linear(12, 16, rngs=rngs)
      self.l2 = nnx.Linear(16, 8, rngs=rngs)

    def __call__(self, x):
      return self.l2(jax.nn.relu(self.l1(x)))

  graphdef, params, rest = nnx.split(MLP(nnx.Rngs(0)), nnx.Param, ...)

  def loss(p):
    logits = nnx.merge(graphdef, p, rest)(X)
    return optax.softmax_cross_entropy_with_integer_labels(logits, Y).mean()

  tx = dst_lib.sparse_training(
      "rigl", 0.5, optimizer=optax.adam(1e-2), end_step=4, update_every=2)
  state = tx.init(params)
  params = masks_lib.apply_masks(params, masks_lib.get_masks(state))

  @jax.jit
  def step(p, s):
    u, s = tx.update(jax.grad(loss)(p), s, p)
    return optax.apply_updates(p, u), s

  moved = 0
  for _ in range(5):
    old = masks_lib.get_masks(state)
    params, state = step(params, state)
    new = masks_lib.get_masks(state)
    for name, size in (("l1", 192), ("l2", 128)):
      m = np.asarray(new[name]["kernel"])
      assert m.sum() == size // 2
      w = np.asarray(masks_lib.unwrap(params)[name]["kernel"])
      assert (w[~m] == 0).all()
      moved += int((m != np.asarray(old[name]["kernel"])).sum())
      assert new[name]["bias"] is None
  assert moved > 0
