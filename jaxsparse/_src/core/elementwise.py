"""Is an optimizer's update elementwise in the gradients of pruned leaves?

`prune(..., optimizer=opt)` projects `opt`'s update so that pruned weights
land on exactly 0.0. When each entry of `opt`'s update and new slots depends
only on the same entry of the gradient and of the slots (SGD, momentum, Adam,
AdamW, Lion, RMSProp, `inject_hyperparams` of these, ...), the gradient of a
pruned weight can then reach nothing but that weight's own (projected) update
and slots, so masking the gradient is redundant. When `opt` mixes entries
(global-norm clipping, trust ratios, factored moments, ...), the gradients of
pruned weights must be masked before it runs.

`elementwise_in` decides this on the jaxpr of `opt.update`, conservatively: a
value derived from a pruned leaf's gradient or slots may only flow through
elementwise primitives, between arrays of its own shape, without meeting a
value derived from another leaf, into that leaf's update and slots. Anything
else (a reduction, a reshape, a dot, a control-flow primitive, an unknown
primitive) gives False.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import optax
from jax.extend import core as jex_core

_ELEMENTWISE = frozenset({
    "abs", "acos", "acosh", "add", "and", "asin", "asinh", "atan", "atan2",
    "atanh", "cbrt", "ceil", "clamp", "convert_element_type", "copy",
    "copy_p", "cos", "cosh", "div", "eq", "erf", "erf_inv", "erfc", "exp",
    "exp2", "expm1", "floor", "ge", "gt", "integer_pow", "is_finite", "le",
    "log", "log1p", "logistic", "lt", "max", "min", "mul", "ne", "neg",
    "nextafter", "not", "or", "pow", "reduce_precision", "rem", "round",
    "rsqrt", "select_n", "sign", "sin", "sinh", "sqrt", "square",
    "stop_gradient", "sub", "tan", "tanh", "xor",
})
# Shape-preserving structural primitives (identity when shapes are equal).
_SAME_SHAPE = frozenset({"broadcast_in_dim", "reshape", "squeeze",
                         "optimization_barrier"})
# Call-like primitives and the parameter holding their body.
_CALLS = {"pjit": "jaxpr", "jit": "jaxpr", "closed_call": "call_jaxpr",
          "core_call": "call_jaxpr", "custom_jvp_call": "call_jaxpr",
          "custom_vjp_call": "call_jaxpr",
          "custom_vjp_call_jaxpr": "fun_jaxpr", "remat": "jaxpr",
          "checkpoint": "jaxpr"}


def _body(jaxpr: Any) -> Any:
  return jaxpr.jaxpr if hasattr(jaxpr, "consts") else jaxpr


def _propagate(jaxpr: Any, taints: Sequence[int | None]) -> list | None:
  """Leaf ids carried by `jaxpr`'s outputs, or None if some id is mixed."""
  env: dict[Any, int] = {
      v: t for v, t in zip(jaxpr.invars, taints, strict=True)
      if t is not None}
  read = lambda a: env.get(a) if isinstance(a, jex_core.Var) else None
  for eqn in jaxpr.eqns:
    ts = [read(a) for a in eqn.invars]
    ids = {t for t in ts if t is not None}
    if not ids:
      continue
    if len(ids) > 1:
      return None  # Two leaves' gradients meet.
    (tid,) = ids
    name = eqn.primitive.name
    if name in _CALLS and _CALLS[name] in eqn.params:
      out = _propagate(_body(eqn.params[_CALLS[name]]), ts)
      if out is None:
        return None
      env.update({v: t for v, t in zip(eqn.outvars, out, strict=False)
                  if t is not None})
      continue
    if name not in _ELEMENTWISE and name not in _SAME_SHAPE:
      return None  # A reduction, gather, dot, loop, ...: entries may mix.
    shapes = [v.aval.shape for v in eqn.outvars]
    for a, t in zip(eqn.invars, ts, strict=True):
      if t is not None and any(a.aval.shape != s for s in shapes):
        return None  # A broadcast or reshape of a tainted value.
    env.update({v: tid for v in eqn.outvars})
  return [read(v) for v in jaxpr.outvars]


def elementwise_in(
    optimizer: optax.GradientTransformation,
    grads: Any,
    state: Any,
    params: Any,
    masks: Any,
    **extra_args: Any,
) -> bool:
  """True if `optimizer.update` is elementwise in the pruned leaves' entries.

  Args:
    optimizer: the optimizer (`update` takes extra keyword arguments).
    grads: gradients, shaped like `params`.
    state: `optimizer`'s state.
    params: the parameters.
    masks: pytree like `params`; None for leaves that are not pruned.
    **extra_args: passed on to `update`.

  Returns:
    Whether, for every pruned leaf, the gradient and param-shaped slots of
    each entry reach only that entry of the leaf's update and slots.
  """
  try:
    return _elementwise_in(optimizer, grads, state, params, masks,
                           **extra_args)
  except Exception:  # An optimizer this cannot analyse: mask.
    return False


def _elementwise_in(optimizer, grads, state, params, masks, **extra_args):
  leaves, treedef = jax.tree.flatten(params)
  flags = [m is not None for m in treedef.flatten_up_to(masks)]
  ids = jax.tree.unflatten(treedef, list(range(len(leaves))))
  # The slot of each state leaf (-1: not a param-shaped slot).
  slot_of = optax.tree_utils.tree_map_params(
      optimizer, lambda _, i: i, state, ids,
      transform_non_params=lambda _: -1)
  slot_ids = jax.tree.leaves(slot_of)
  state_leaves = jax.tree.leaves(state)
  if len(slot_ids) != len(state_leaves):
    return False
  grad_taint = [i if f else None for i, f in enumerate(flags)]
  state_taint = [i if i >= 0 and flags[i] else None for i in slot_ids]

  def update(g, s):
    return optimizer.update(g, s, params, **extra_args)

  closed = jax.make_jaxpr(update)(grads, state)
  n_g = len(jax.tree.leaves(grads))
  if n_g != len(grad_taint):
    return False
  out = _propagate(closed.jaxpr, grad_taint + state_taint)
  if out is None:
    return False
  out_updates, out_state = out[:n_g], out[n_g:]
  if len(out_state) != len(slot_ids):
    return False
  # Each update leaf carries at most its own id; each slot its param's.
  return (all(t is None or t == i for i, t in enumerate(out_updates)) and
          all(t is None or t == i for i, t in zip(slot_ids, out_state,
                                                  strict=True)))
