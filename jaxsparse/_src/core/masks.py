"""Masks: binary pytrees shaped like the params, `None` where not pruned."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

Params = Any
Masks = Any  # pytree like params; bool arrays, or None for dense leaves.
FilterFn = Callable[[tuple, jax.Array], bool]


def _is_none(x: Any) -> bool:
  return x is None


def path_str(path: tuple) -> str:
  """Renders a key path as `a/b/0/kernel`."""
  parts = []
  for k in path:
    if isinstance(k, jax.tree_util.DictKey):
      parts.append(str(k.key))
    elif isinstance(k, jax.tree_util.GetAttrKey):
      parts.append(str(k.name))
    elif isinstance(k, jax.tree_util.SequenceKey):
      parts.append(str(k.idx))
    elif isinstance(k, jax.tree_util.FlattenedIndexKey):
      parts.append(str(k.key))
    else:
      parts.append(str(k))
  return "/".join(parts)


def is_variable(x: Any) -> bool:
  """True for flax.nnx Variables (Param, OptVariable, ...)."""
  try:
    from flax import nnx  # pylint: disable=g-import-not-at-top
  except ImportError:  # pragma: no cover
    return False
  return isinstance(x, nnx.Variable)


def _leaf_value(x: Any) -> Any:
  """The array inside a leaf (unwraps flax.nnx variables)."""
  return x.get_value() if is_variable(x) else x


def unwrap(tree: Any) -> Any:
  """Replaces flax.nnx Variables by their values (None stays None)."""
  return jax.tree.map(_leaf_value, tree,
                      is_leaf=lambda x: x is None or is_variable(x))


def rewrap_like(wrapped: Any, tree: Any) -> Any:
  """`tree`'s arrays put back into the flax.nnx Variables of `wrapped`."""
  return jax.tree.map(
      lambda w, x: w.replace(x) if is_variable(w) else x,
      wrapped, tree, is_leaf=is_variable)


def is_kernel(path: tuple, leaf: Any) -> bool:
  """Default filter: floating leaves with ndim >= 2 (Dense/Conv kernels).

  Biases, norm scales and scalars (ndim < 2) stay dense.
  """
  del path
  leaf = _leaf_value(leaf)
  return (
      hasattr(leaf, "ndim")
      and leaf.ndim >= 2
      and jnp.issubdtype(leaf.dtype, jnp.floating)
  )


def leaves_with_path(tree: Any) -> list[tuple[tuple, Any]]:
  return jax.tree.flatten_with_path(tree)[0]


def select(params: Params, filter_fn: FilterFn = is_kernel) -> Masks:
  """A tree of `True` (prunable) / `None` (dense) shaped like `params`."""
  params = unwrap(params)
  def pick(path, leaf):
    if not filter_fn(path, leaf):
      return None
    value = _leaf_value(leaf)
    if not jnp.issubdtype(value.dtype, jnp.floating):
      raise TypeError(
          f"filter_fn selected leaf '{path_str(path)}' for pruning but its "
          f"dtype is {value.dtype}; only floating leaves can be pruned."
      )
    return True
  return jax.tree.map_with_path(pick, params)


def ones_masks(params: Params, filter_fn: FilterFn = is_kernel) -> Masks:
  """Dense (all-True) masks for the leaves chosen by `filter_fn`."""
  params = unwrap(params)
  sel = select(params, filter_fn)
  return jax.tree.map(
      lambda s, p: None if s is None else jnp.ones(
          jnp.shape(_leaf_value(p)), jnp.bool_),
      sel, params, is_leaf=_is_none)


def check_masks(params: Params, masks: Masks, name: str = "masks") -> None:
  """Raises a ValueError if `masks` does not match `params`."""
  params, masks = unwrap(params), unwrap(masks)
  p_def = jax.tree.structure(params)
  m_def = jax.tree.structure(masks, is_leaf=_is_none)
  if p_def != m_def:
    raise ValueError(
        f"`{name}` tree does not match params: params have structure "
        f"{p_def}, {name} have {m_def}."
    )
  for (path, p), m in zip(
      leaves_with_path(params),
      jax.tree.leaves(masks, is_leaf=_is_none), strict=True):
    if m is None:
      continue
    m = _leaf_value(m)
    if jnp.shape(m) != jnp.shape(_leaf_value(p)):
      raise ValueError(
          f"`{name}`: mask shape {tuple(jnp.shape(m))} vs param shape "
          f"{tuple(jnp.shape(_leaf_value(p)))} at '{path_str(path)}'."
      )
    if not (m.dtype == jnp.bool_ or jnp.issubdtype(m.dtype, jnp.number)):
      raise TypeError(f"`{name}` leaf '{path_str(path)}' has dtype {m.dtype}.")


def as_bool_masks(masks: Masks) -> Masks:
  """Casts numeric 0/1 masks to bool, leaving `None` leaves."""
  masks = unwrap(masks)
  return jax.tree.map(
      lambda m: None if m is None else jnp.asarray(_leaf_value(m)) != 0,
      masks, is_leaf=_is_none)


def apply_masks(params: Params, masks: Masks) -> Params:
  """Returns params with pruned entries set to exactly zero.

  Leaves whose mask is `None` are returned unchanged. Works on plain pytrees
  and on flax.nnx `State`s (variables are rebuilt around the new values).
  Raises a ValueError naming the leaf when a mask's tree or shape does not
  match (checked at trace time).
  """
  check_masks(params, masks)
  masks = unwrap(masks)
  flat_m, treedef = jax.tree.flatten(masks, is_leaf=_is_none)
  flat_p = treedef.flatten_up_to(
      jax.tree.map(lambda x: x, params, is_leaf=is_variable))

  def one(m, p):
    if m is None:
      return p
    v = _leaf_value(p)
    out = jnp.where(m, v, jnp.zeros((), v.dtype))
    return p.replace(out) if is_variable(p) else out

  return jax.tree.unflatten(
      treedef, [one(m, p) for m, p in zip(flat_m, flat_p, strict=True)])


def get_masks(opt_state: Any) -> Masks:
  """Reads the masks out of any optimizer state holding a `PruneState`.

  Works for states nested in `optax.chain`, wrappers and `nnx.Optimizer`
  (pass `optimizer.opt_state`).
  """
  missing = object()
  try:
    masks = optax.tree_utils.tree_get(opt_state, "masks", default=missing)
  except KeyError as e:
    raise ValueError(
        "more than one `masks` field found in the optimizer state.") from e
  if masks is missing:
    raise ValueError(
        "no `masks` field found in the optimizer state; was it built with "
        "jaxsparse.prune?")
  return unwrap(masks)


def sparsity(masks: Masks) -> jax.Array:
  """Fraction of zeros over all masked leaves."""
  leaves = [m for m in jax.tree.leaves(masks) if m is not None]
  if not leaves:
    return jnp.zeros((), jnp.float32)
  zeros = sum(jnp.sum(~m) for m in leaves)
  total = sum(m.size for m in leaves)
  return zeros / total


# --- Helpers of the optimizer wrappers (`prune`, `dst`). ---------------------


def where_masked(masks: Masks, tree: Any, off: Callable[[Any], Any]) -> Any:
  """Where the mask is False, `off(leaf)`; dense leaves pass through."""
  return jax.tree.map(
      lambda m, x: x if m is None else jnp.where(m, x, off(x)),
      masks, tree, is_leaf=_is_none)


def project_updates(masks: Masks, updates: Any, params: Params) -> Any:
  """Updates that land every entry outside `masks` on exactly 0.0.

  p + (-p) == 0 exactly in IEEE floats.
  """
  return jax.tree.map(
      lambda m, u, p: u if m is None else jnp.where(m, u, -p),
      masks, updates, params, is_leaf=_is_none)


def zero_slots(optimizer: optax.GradientTransformation, opt_state: Any,
               masks: Masks) -> Any:
  """Zeroes `optimizer`'s param-shaped slots outside `masks`.

  Uses `optax.tree_utils.tree_map_params`, so any optax optimizer works.
  """
  def fn(s, m):
    if m is None or not hasattr(s, "shape") or jnp.shape(s) != m.shape:
      return s
    return jnp.where(m, s, jnp.zeros((), s.dtype))
  return optax.tree_utils.tree_map_params(optimizer, fn, opt_state, masks)
