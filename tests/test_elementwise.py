"""Which optimizers `prune` may feed unmasked gradients (jaxpr analysis)."""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxsparse as js
from jaxsparse._src.core.elementwise import elementwise_in

PARAMS = {"w": jnp.ones((4, 3)), "b": jnp.ones(3), "v": jnp.ones((4, 3))}
# Masks (None: a dense leaf); only their presence matters here.
PRUNED = {"w": True, "b": None, "v": True}


def _mixing_leaves():
  """Adds one leaf's gradient to another's: elementwise ops, wrong leaf."""
  def update(u, s, p=None):
    del p
    return {"w": u["w"] + u["v"], "b": u["b"], "v": u["v"]}, s
  return optax.GradientTransformation(lambda p: optax.EmptyState(), update)


def _transposed():
  def update(u, s, p=None):
    del p
    return {"w": u["w"][::-1], "b": u["b"], "v": u["v"]}, s
  return optax.GradientTransformation(lambda p: optax.EmptyState(), update)


ELEMENTWISE = {
    "sgd": optax.sgd(0.1),
    "momentum": optax.sgd(0.1, momentum=0.9, nesterov=True),
    "adam": optax.adam(1e-3),
    "adamw": optax.adamw(1e-3, weight_decay=0.1),
    "lion": optax.lion(1e-3),
    "rmsprop": optax.rmsprop(1e-3),
    "adabelief": optax.adabelief(1e-3),
    "inject_adam": optax.inject_hyperparams(optax.adam)(learning_rate=1e-3),
    "scheduled_adam": optax.adam(optax.cosine_decay_schedule(1e-3, 100)),
    "clip_by_value": optax.chain(optax.clip(1.0), optax.adam(1e-3)),
}
MIXING = {
    "clip_by_global_norm": optax.chain(optax.clip_by_global_norm(1.0),
                                       optax.adam(1e-3)),
    "adafactor": optax.adafactor(1e-3),  # factored (row/column) moments
    "lamb": optax.lamb(1e-3),  # per-layer trust ratio
    "lars": optax.lars(1e-3),
    "mixing_leaves": _mixing_leaves(),
    "reversed_rows": _transposed(),
}


@pytest.mark.parametrize("name", sorted(ELEMENTWISE))
def test_elementwise_optimizers(name):
  tx = ELEMENTWISE[name]
  assert elementwise_in(tx, PARAMS, tx.init(PARAMS), PARAMS, PRUNED)


@pytest.mark.parametrize("name", sorted(MIXING))
def test_mixing_optimizers(name):
  tx = MIXING[name]
  assert not elementwise_in(tx, PARAMS, tx.init(PARAMS), PARAMS, PRUNED)


def test_only_pruned_leaves_matter():
  # A norm over the unpruned bias alone mixes no pruned entry.
  def update(u, s, p=None):
    del p
    scale = 1.0 / (1.0 + jnp.sum(u["b"] ** 2))
    return {"w": u["w"] * scale, "b": u["b"], "v": u["v"]}, s
  tx = optax.GradientTransformation(lambda p: optax.EmptyState(), update)
  assert elementwise_in(tx, PARAMS, tx.init(PARAMS), PARAMS, PRUNED)
  everything = {"w": True, "b": True, "v": True}  # the bias pruned too
  assert not elementwise_in(tx, PARAMS, tx.init(PARAMS), PARAMS, everything)


def test_slots_of_pruned_leaves_are_tracked():
  # A step scaled by the norm of the previous momentum: the gradients flow
  # elementwise, but the old slots of pruned entries (which follow their
  # unmasked gradients) would reach every kept weight.
  def init(p):
    return {"m": {k: jnp.zeros_like(v) for k, v in p.items()}}

  def update(u, s, p=None):
    del p
    norm = jnp.sqrt(jnp.sum(s["m"]["w"] ** 2))
    m = {k: 0.9 * s["m"][k] + u[k] for k in u}
    return {k: u[k] / (1.0 + norm) for k in u}, {"m": m}
  tx = optax.GradientTransformation(init, update)
  assert not elementwise_in(tx, PARAMS, tx.init(PARAMS), PARAMS, PRUNED)


class _Seen(NamedTuple):
  grads: dict  # param-shaped: the gradients the optimizer last received


def _recorder(mixing):
  """SGD that keeps the gradients it receives; `mixing` scales them by a
  function of their global norm (entries mix)."""
  def update(u, s, p=None):
    del s, p
    scale = 1.0 / (1.0 + optax.tree_utils.tree_norm(u)) if mixing else 1.0
    return jax.tree.map(lambda g: -0.1 * scale * g, u), _Seen(u)
  return optax.GradientTransformation(
      lambda p: _Seen(jax.tree.map(jnp.zeros_like, p)), update)


def _grads():
  return {"w": jnp.arange(1.0, 13.0).reshape(4, 3),
          "b": jnp.ones(3), "v": -jnp.arange(1.0, 13.0).reshape(4, 3)}


@pytest.mark.parametrize("method", ["prune", "rigl"])
@pytest.mark.parametrize("mixing", [False, True])
def test_gradients_reach_a_mixing_optimizer_masked(method, mixing):
  if method == "prune":
    tx = js.prune(0.5, optimizer=_recorder(mixing))
  else:
    tx = js.dst.rigl(0.5, optimizer=_recorder(mixing), end_step=100,
                update_every=50)
  params = {k: v + 0.5 for k, v in _grads().items()}
  state = tx.init(params)
  step = jax.jit(tx.update)
  for _ in range(3):  # prune: an update step, then non-update steps
    updates, state = step(_grads(), state, params)
    params = optax.apply_updates(params, updates)
  masks = js.get_masks(state)
  seen = optax.tree_utils.tree_get(state, "grads")
  for k in ("w", "v"):
    m = np.asarray(masks[k])
    assert 0 < m.sum() < m.size
    # Pruned weights stay exactly 0 either way.
    assert np.all(np.asarray(params[k])[~m] == 0.0)
    got = np.asarray(seen[k])[~m]
    want = np.asarray(_grads()[k])[~m]
    # Masked only where the optimizer mixes entries.
    np.testing.assert_array_equal(got, 0.0 * want if mixing else want)
