"""`jaxsparse.prune`: exact sparsity inside optax, for every optimizer."""

from typing import NamedTuple

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import linen as nn
from flax import nnx

import jaxsparse as js


def np_count(s, n):
  return int(np.floor(np.float32(s) * np.float32(n) + np.float32(0.5)))


def ref_keep(scores, k):
  flat = np.asarray(scores, np.float32).reshape(-1)
  keep = np.ones(flat.size, bool)
  keep[np.argsort(flat, kind="stable")[:k]] = False
  return keep.reshape(np.shape(scores))


def mlp_params(seed=0):
  rng = np.random.RandomState(seed)
  f = lambda *s: jnp.asarray(rng.randn(*s) * 0.5, jnp.float32)
  return {"Dense_0": {"kernel": f(8, 16), "bias": f(16)},
          "Dense_1": {"kernel": f(16, 4), "bias": f(4)}}


def mlp_loss(params, x, y):
  h = jnp.tanh(x @ params["Dense_0"]["kernel"] + params["Dense_0"]["bias"])
  out = h @ params["Dense_1"]["kernel"] + params["Dense_1"]["bias"]
  return jnp.mean((out - y) ** 2)


def data(seed=1, n=32):
  rng = np.random.RandomState(seed)
  x = jnp.asarray(rng.randn(n, 8), jnp.float32)
  y = jnp.asarray(rng.randn(n, 4), jnp.float32)
  return x, y


KERNELS = [("Dense_0", "kernel"), ("Dense_1", "kernel")]


def _rand(*shape, seed=0):
  return jnp.asarray(np.random.RandomState(seed).randn(*shape), jnp.float32)


def leaf(tree, path):
  for k in path:
    tree = tree[k]
  return np.asarray(tree)


def make_step(tx, chain_line=False):
  """One jitted train step; `chain_line` re-applies the masks afterwards."""
  @jax.jit
  def step(params, state, x, y):
    grads = jax.grad(mlp_loss)(params, x, y)
    updates, state = tx.update(grads, state, params)
    params = optax.apply_updates(params, updates)
    if chain_line:
      params = js.apply_masks(params, js.get_masks(state))
    return params, state
  return step


SLOT_NAMES = ("trace", "mu", "nu")


def inner_slots(state):
  """Param-shaped slot trees (momentum trace, Adam/Lion moments)."""
  out = []
  for name in SLOT_NAMES:
    for path, value in optax.tree_utils.tree_get_all_with_path(state, name):
      if isinstance(value, dict):
        out.append((name, path, value))
  return out


OPTIMIZERS = {
    "sgd": lambda: optax.sgd(0.05),
    "momentum": lambda: optax.sgd(0.05, momentum=0.9),
    "adam": lambda: optax.adam(0.01),
    "adamw": lambda: optax.adamw(0.01, weight_decay=0.5),
    "lion": lambda: optax.lion(0.003),
    "inject_adam": lambda: optax.inject_hyperparams(optax.adam)(
        learning_rate=0.01),
    # Mixes entries: the norm must not see the pruned weights' gradients.
    "clip_adam": lambda: optax.chain(optax.clip_by_global_norm(0.05),
                                     optax.adam(0.01)),
}
# Slots each optimizer must have (so that the slot check cannot pass vacuously).
EXPECTED_SLOTS = {"sgd": set(), "momentum": {"trace"}, "adam": {"mu", "nu"},
                  "adamw": {"mu", "nu"}, "lion": {"mu"},
                  "inject_adam": {"mu", "nu"}, "clip_adam": {"mu", "nu"}}
# Not elementwise in the gradients: they are masked before the optimizer.
MIXING = {"clip_adam"}


def reference_step(opt, params, state, masks, x, y):
  """The masked-gradient semantics, independently: gradients of pruned
  weights zeroed, slots zeroed at pruned entries, weights re-masked."""
  keep = lambda m, v: v if m is None else jnp.where(m, v, 0.0)
  grads = jax.tree.map(keep, masks, jax.grad(mlp_loss)(params, x, y),
                       is_leaf=lambda v: v is None)
  state = optax.tree_utils.tree_map_params(
      opt, lambda v, m: keep(m, v), state, masks,
      is_leaf=lambda v: v is None)
  updates, state = opt.update(grads, state, params)
  params = optax.apply_updates(params, updates)
  return jax.tree.map(keep, masks, params,
                      is_leaf=lambda v: v is None), state
SCHED = js.polynomial(0.8, begin_step=2, end_step=14, frequency=4)
UPDATE_STEPS = (2, 6, 10, 14)


# --- the wrapper spelling -----------------------------------------------------


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_wrapper_is_exact_for_every_optimizer(name):
  tx = js.prune(SCHED, optimizer=OPTIMIZERS[name]())
  params = mlp_params()
  state = tx.init(params)
  step = make_step(tx)
  x, y = data()
  loss0 = float(mlp_loss(params, x, y))
  prev = {p: np.ones(leaf(params, p).shape, bool) for p in KERNELS}
  ref_opt = OPTIMIZERS[name]()
  ref_params, ref_state = params, ref_opt.init(params)
  # The reference compiled once (the same operations, not op by op).
  ref_step = jax.jit(lambda *a: reference_step(ref_opt, *a))
  for t in range(20):
    params, state = step(params, state, x, y)
    masks = js.get_masks(state)
    # Every weight follows the masked-gradient trajectory, whether or not
    # the gradients were masked inside the step.
    ref_params, ref_state = ref_step(ref_params, ref_state, masks, x, y)
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(ref_params),
                    strict=True):
      np.testing.assert_allclose(a, b, rtol=2e-5, atol=1e-6, err_msg=str(t))
    assert masks["Dense_0"]["bias"] is None
    assert masks["Dense_1"]["bias"] is None
    for p in KERNELS:
      m, w = leaf(masks, p), leaf(params, p)
      assert m.dtype == np.bool_ and m.shape == w.shape
      assert not np.any(m & ~prev[p]), (t, p)  # monotone: no regrowth
      assert np.all(w[~m] == 0.0), (t, p)  # exactly zero, never revived
      if t in UPDATE_STEPS:
        want = np_count(float(SCHED.sparsity(t)), m.size)
        assert int((~m).sum()) == want, (t, p)
      prev[p] = m
    if t < 2:
      assert all(prev[p].all() for p in KERNELS)
    # Inner optimizer slots vanish at pruned entries on mask updates, and
    # stay 0 where the gradients are masked.
    slots = inner_slots(state.inner_state)
    assert {s[0] for s in slots} == EXPECTED_SLOTS[name]
    if name in MIXING:
      for slot_name, _, tree in slots:
        for p in KERNELS:
          assert np.all(leaf(tree, p)[~prev[p]] == 0.0), (t, slot_name, p)
  for p in KERNELS:
    assert int((~prev[p]).sum()) == np_count(0.8, prev[p].size)
    # Surviving weights still train (they are not all frozen at zero).
    assert np.count_nonzero(leaf(params, p)) == prev[p].sum()
  assert float(mlp_loss(params, x, y)) < loss0


def test_wrapper_update_lands_on_exact_zero_for_huge_weights():
  # p + (-p) == 0 exactly, even where p is large and the step is tiny.
  params = {"w": jnp.asarray([[1e30, -3e-30], [7.0, 1e-3]], jnp.float32)}
  tx = js.prune(js.one_shot(0.5), optimizer=optax.adam(1e-6))
  state = tx.init(params)
  upd, state = tx.update({"w": jnp.ones((2, 2))}, state, params)
  new = np.asarray(optax.apply_updates(params, upd)["w"])
  np.testing.assert_array_equal(js.get_masks(state)["w"],
                                [[True, False], [True, False]])
  assert new[0, 1] == 0.0 and new[1, 1] == 0.0


# --- the chain spelling -------------------------------------------------------


@pytest.mark.parametrize("name", ["momentum", "adam"])
def test_chain_with_documented_line_is_exact(name):
  tx = optax.chain(js.prune(SCHED), OPTIMIZERS[name]())
  params = mlp_params()
  state = tx.init(params)
  step = make_step(tx, chain_line=True)
  x, y = data()
  prev = {p: np.ones(leaf(params, p).shape, bool) for p in KERNELS}
  for t in range(20):
    params, state = step(params, state, x, y)
    masks = js.get_masks(state)
    for p in KERNELS:
      m, w = leaf(masks, p), leaf(params, p)
      assert not np.any(m & ~prev[p])
      assert np.all(w[~m] == 0.0)
      if t in UPDATE_STEPS:
        assert int((~m).sum()) == np_count(float(SCHED.sparsity(t)), m.size)
      prev[p] = m


@pytest.mark.parametrize("name,drifts", [
    ("sgd", False), ("momentum", True), ("adam", True)])
def test_chain_without_the_line_stateful_optimizers_move_pruned_weights(
    name, drifts):
  """Why the line is needed: zeroing once is not enough with momentum."""
  sched = js.one_shot(0.5, at_step=3)
  tx = optax.chain(js.prune(sched), OPTIMIZERS[name]())
  params = mlp_params()
  state = tx.init(params)
  step = make_step(tx)
  x, y = data()
  for t in range(8):
    params, state = step(params, state, x, y)
    masks = js.get_masks(state)
    if t == 3:
      # The chain never touches params: pruned weights are not zero yet.
      for p in KERNELS:
        assert np.any(leaf(params, p)[~leaf(masks, p)] != 0.0)
      params = js.apply_masks(params, masks)  # zero them once
  moved = any(np.any(leaf(params, p)[~leaf(masks, p)] != 0.0)
              for p in KERNELS)
  assert moved == drifts


def test_get_masks_finds_state_nested_in_chains():
  params = mlp_params()
  tx = optax.chain(optax.clip_by_global_norm(1.0),
                   js.prune(0.5, optimizer=optax.adam(0.01)))
  masks = js.get_masks(tx.init(params))
  assert masks["Dense_0"]["bias"] is None
  for p in KERNELS:
    assert leaf(masks, p).dtype == np.bool_ and leaf(masks, p).all()
  with pytest.raises(ValueError, match="masks"):
    js.get_masks(optax.adam(0.1).init(params))


# --- jit, extra arguments, pytrees --------------------------------------------


def test_jit_and_eager_agree():
  tx = js.prune(js.polynomial(0.7, 0, 1, frequency=1),
                optimizer=optax.adam(0.01))
  start = {"w": _rand(8, 16), "b": _rand(16, seed=1)}
  loss = lambda p: jnp.sum(jnp.tanh(p["w"] * 2.0 + p["b"]) ** 2)

  def run(jit):
    params = start
    state = tx.init(params)
    update = jax.jit(tx.update) if jit else tx.update
    for _ in range(2):
      u, state = update(jax.grad(loss)(params), state, params)
      params = optax.apply_updates(params, u)
    return params, js.get_masks(state)

  (p1, m1), (p2, m2) = run(False), run(True)
  np.testing.assert_array_equal(m1["w"], m2["w"])
  assert m1["b"] is None and m2["b"] is None
  for k in ("w", "b"):
    np.testing.assert_allclose(p1[k], p2[k], rtol=1e-5, atol=1e-6)
  assert int((~np.asarray(m1["w"])).sum()) == np_count(0.7, 128)
  assert np.all(np.asarray(p1["w"])[~np.asarray(m1["w"])] == 0.0)


def scale_by_foo():
  """A transform that needs the keyword argument `foo`."""
  def update(updates, state, params=None, *, foo):
    del params
    return jax.tree.map(lambda u: u * foo, updates), state
  return optax.GradientTransformationExtraArgs(
      lambda params: optax.EmptyState(), update)


def test_extra_kwargs_reach_the_wrapped_optimizer():
  params = {"w": jnp.asarray([[1.0, 2.0], [3.0, 4.0]])}
  grads = {"w": jnp.ones((2, 2))}
  tx = js.prune(0.5, optimizer=optax.chain(scale_by_foo(), optax.sgd(1.0)))
  state = tx.init(params)
  u, state = jax.jit(tx.update)(grads, state, params, foo=3.0)
  # Kept entries move by -lr * foo * g; pruned ones land on zero.
  np.testing.assert_allclose(u["w"], [[-1.0, -2.0], [-3.0, -3.0]])


def test_extra_kwargs_in_chain_spelling():
  params = {"w": jnp.asarray([[1.0, 2.0], [3.0, 4.0]])}
  tx = optax.chain(js.prune(0.5), scale_by_foo(), optax.sgd(1.0))
  u, _ = tx.update({"w": jnp.ones((2, 2))}, tx.init(params), params, foo=2.0)
  np.testing.assert_allclose(u["w"], [[0.0, 0.0], [-2.0, -2.0]])


def test_update_without_params_raises():
  params = mlp_params()
  tx = js.prune(0.5)
  with pytest.raises(ValueError, match="params"):
    tx.update(params, tx.init(params))


class Layer(NamedTuple):
  w: jax.Array
  b: jax.Array


@flax.struct.dataclass
class Net:
  hidden: Layer
  out: jax.Array
  scale: jax.Array


PYTREES = {
    "list_tuple": lambda: [(_rand(6, 5), _rand(5)), [_rand(5, 3, seed=1)]],
    "struct_dataclass_namedtuple": lambda: Net(
        hidden=Layer(w=_rand(6, 5), b=_rand(5)), out=_rand(5, 3, seed=1),
        scale=jnp.ones(())),
}


@pytest.mark.parametrize("kind", sorted(PYTREES))
def test_params_as_other_pytrees(kind):
  params = PYTREES[kind]()
  tx = js.prune(js.polynomial(0.6, 0, 2, frequency=1),
                optimizer=optax.sgd(0.1, momentum=0.9))
  state = tx.init(params)

  @jax.jit
  def step(params, state):
    grads = jax.tree.map(lambda p: jnp.cos(p) + 0.5, params)
    u, state = tx.update(grads, state, params)
    return optax.apply_updates(params, u), state

  for _ in range(4):
    params, state = step(params, state)
  masks = js.get_masks(state)
  assert (jax.tree.structure(masks, is_leaf=lambda m: m is None)
          == jax.tree.structure(params))
  flat_p = jax.tree.leaves(params)
  flat_m = jax.tree.leaves(masks, is_leaf=lambda m: m is None)
  n_masked = 0
  for p, m in zip(flat_p, flat_m, strict=True):
    if np.ndim(p) < 2:
      assert m is None
      continue
    n_masked += 1
    m = np.asarray(m)
    assert int((~m).sum()) == np_count(0.6, m.size)
    assert np.all(np.asarray(p)[~m] == 0.0)
  assert n_masked >= 1


# --- masks: initial, random, saliency -----------------------------------------


def test_initial_masks_fixed_with_zero_sparsity():
  params = mlp_params()
  rng = np.random.RandomState(3)
  init = {"Dense_0": {"kernel": jnp.asarray(rng.rand(8, 16) > 0.3),
                      "bias": None},
          "Dense_1": {"kernel": jnp.asarray(
              (rng.rand(16, 4) > 0.5).astype(np.float32)), "bias": None}}
  tx = js.prune(0.0, optimizer=optax.adam(0.05), initial_masks=init)
  state = tx.init(params)
  step = make_step(tx)
  x, y = data()
  for _ in range(5):
    params, state = step(params, state, x, y)
    masks = js.get_masks(state)
    for p in KERNELS:
      want = leaf(init, p) != 0
      np.testing.assert_array_equal(leaf(masks, p), want)
      assert np.all(leaf(params, p)[~want] == 0.0)
      assert np.all(leaf(params, p)[want] != 0.0)


def test_initial_masks_errors_name_the_problem():
  params = mlp_params()
  missing = {"Dense_0": {"kernel": jnp.ones((8, 16), bool), "bias": None}}
  with pytest.raises(ValueError, match="initial_masks"):
    js.prune(0.5, initial_masks=missing).init(params)
  wrong = {"Dense_0": {"kernel": jnp.ones((8, 15), bool), "bias": None},
           "Dense_1": {"kernel": jnp.ones((16, 4), bool), "bias": None}}
  with pytest.raises(ValueError, match=r"initial_masks.*Dense_0/kernel"):
    js.prune(0.5, initial_masks=wrong).init(params)


@pytest.mark.parametrize("bad", [1.5, -0.1, float("nan")])
def test_sparsity_out_of_range_raises(bad):
  with pytest.raises(ValueError, match="sparsity"):
    js.prune(bad)


def test_filter_selecting_int_leaf_names_it():
  params = {"w": jnp.ones((4, 4)), "step_table": jnp.zeros((2, 2), jnp.int32)}
  # The default filter skips it...
  masks = js.get_masks(js.prune(0.5).init(params))
  assert masks["step_table"] is None
  # ...a filter that selects it is refused, naming the leaf.
  with pytest.raises(TypeError, match="step_table"):
    js.prune(0.5, filter_fn=lambda path, x: True).init(params)


def test_filter_fn_selects_leaves_by_path():
  params = mlp_params()
  path_str = js._src.core.masks.path_str
  only_first = lambda path, x: "Dense_0" in path_str(path) and x.ndim == 2
  tx = js.prune(0.5, filter_fn=only_first)
  _, state = tx.update(params, tx.init(params), params)
  masks = js.get_masks(state)
  assert masks["Dense_1"]["kernel"] is None
  assert int((~masks["Dense_0"]["kernel"]).sum()) == 64


def test_random_scores_reproducible_from_seed():
  params = mlp_params()

  # The seed lives in the state: one compiled update serves every seed.
  update = jax.jit(js.prune(0.5, score=js.scores.random).update)

  def mask(seed):
    state = js.prune(0.5, score=js.scores.random, seed=seed).init(params)
    _, state = update(params, state, params)
    return js.get_masks(state)

  a, b, c = mask(0), mask(0), mask(1)
  for p in KERNELS:
    np.testing.assert_array_equal(leaf(a, p), leaf(b, p))
    assert np.any(leaf(a, p) != leaf(c, p))
    assert int((~leaf(a, p)).sum()) == leaf(a, p).size // 2
    assert int((~leaf(c, p)).sum()) == leaf(c, p).size // 2
  # Not the magnitude mask.
  mag = ref_keep(np.abs(leaf(params, KERNELS[0])), 64)
  assert np.any(leaf(a, KERNELS[0]) != mag)


def test_saliency_score_uses_the_gradients():
  params = mlp_params()
  x, y = data()
  grads = jax.grad(mlp_loss)(params, x, y)
  tx = js.prune(0.75, score=js.scores.saliency)
  _, state = tx.update(grads, tx.init(params), params)
  masks = js.get_masks(state)
  for p in KERNELS:
    sal = np.abs(leaf(params, p) * leaf(grads, p))
    np.testing.assert_array_equal(
        leaf(masks, p), ref_keep(sal, np_count(0.75, sal.size)))


def test_magnitude_masks_match_numpy():
  params = mlp_params()
  tx = js.prune(0.35)
  _, state = tx.update(params, tx.init(params), params)
  masks = js.get_masks(state)
  for p in KERNELS:
    w = leaf(params, p)
    np.testing.assert_array_equal(
        leaf(masks, p), ref_keep(np.abs(w), np_count(0.35, w.size)))
  assert float(js.sparsity(masks)) == pytest.approx(
      (np_count(0.35, 128) + np_count(0.35, 64)) / 192)


def test_sparsity_one_prunes_all_kernels_but_trains_biases():
  params = mlp_params()
  tx = js.prune(1.0, optimizer=optax.sgd(0.1))
  state = tx.init(params)
  step = make_step(tx)
  x, y = data()
  new, state = step(params, state, x, y)
  for p in KERNELS:
    assert np.all(leaf(new, p) == 0.0)
  assert np.any(leaf(new, ("Dense_1", "bias"))
                != leaf(params, ("Dense_1", "bias")))


# --- flax ---------------------------------------------------------------------


class LinenMLP(nn.Module):
  @nn.compact
  def __call__(self, x):
    x = nn.relu(nn.Dense(32)(x))
    return nn.Dense(4)(x)


def test_flax_linen_training_loop():
  model = LinenMLP()
  x, y = data(n=64)
  params = model.init(jax.random.PRNGKey(0), x)["params"]
  sched = js.polynomial(0.7, begin_step=0, end_step=30, frequency=10)
  tx = js.prune(sched, optimizer=optax.adam(1e-2))
  state = tx.init(params)

  def loss_fn(params):
    return jnp.mean((model.apply({"params": params}, x) - y) ** 2)

  @jax.jit
  def step(params, state):
    loss, grads = jax.value_and_grad(loss_fn)(params)
    u, state = tx.update(grads, state, params)
    return optax.apply_updates(params, u), state, loss

  losses = []
  for _ in range(60):
    params, state, loss = step(params, state)
    losses.append(float(loss))
  assert losses[-1] < 0.7 * losses[0]
  masks = js.get_masks(state)
  for layer in ("Dense_0", "Dense_1"):
    assert masks[layer]["bias"] is None
    m = np.asarray(masks[layer]["kernel"])
    w = np.asarray(params[layer]["kernel"])
    assert int((~m).sum()) == np_count(0.7, m.size)
    assert np.all(w[~m] == 0.0)
    assert int((w == 0).sum()) == int((~m).sum())


class NnxMLP(nnx.Module):
  def __init__(self, rngs):
    self.l1 = nnx.Linear(8, 16, rngs=rngs)
    self.l2 = nnx.Linear(16, 4, rngs=rngs)

  def __call__(self, x):
    return self.l2(nnx.relu(self.l1(x)))


def test_flax_nnx_optimizer():
  model = NnxMLP(nnx.Rngs(0))
  sched = js.polynomial(0.6, begin_step=0, end_step=4, frequency=2)
  optimizer = nnx.Optimizer(
      model, js.prune(sched, optimizer=optax.adam(1e-2)), wrt=nnx.Param)
  x, y = data()

  def loss_fn(model):
    return jnp.mean((model(x) - y) ** 2)

  @nnx.jit
  def train_step(model, optimizer):
    loss, grads = nnx.value_and_grad(loss_fn)(model)
    optimizer.update(model, grads)
    return loss

  losses = [float(train_step(model, optimizer)) for _ in range(8)]
  assert losses[-1] < losses[0]
  masks = js.get_masks(optimizer.opt_state)
  for name in ("l1", "l2"):
    layer = getattr(model, name)
    m = np.asarray(masks[name]["kernel"])
    w = np.asarray(layer.kernel[...])
    assert masks[name]["bias"] is None
    assert m.shape == w.shape and m.dtype == np.bool_
    assert int((~m).sum()) == np_count(0.6, m.size)
    assert np.all(w[~m] == 0.0)
    assert np.count_nonzero(w) == int(m.sum())
