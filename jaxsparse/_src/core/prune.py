"""`prune`: a gradient transformation whose state holds the masks."""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxsparse._src.core import allocation as alloc_lib
from jaxsparse._src.core import bits as bits_lib
from jaxsparse._src.core import elementwise as elementwise_lib
from jaxsparse._src.core import masks as masks_lib
from jaxsparse._src.core import schedules as sched_lib
from jaxsparse._src.core import scores as scores_lib
from jaxsparse._src.core import structures as struct_lib
from jaxsparse._src.core import threshold

_is_none = masks_lib._is_none  # pylint: disable=protected-access


class PruneState(NamedTuple):
  """State of `jaxsparse.prune`."""

  count: jax.Array  # shape=(), int32: steps taken.
  masks: Any  # like params: bool arrays, None for dense leaves.
  key: jax.Array  # shape=(2,), uint32: PRNG key for random scores.
  inner_state: Any  # state of the wrapped optimizer (EmptyState if none).
  # `masks` bit-packed (`jaxsparse.pack_masks`): what each step reads. Kept
  # equal to `masks`; replace both with `jaxsparse.replace_masks`.
  mask_bits: Any


def compute_masks(
    params: Any,
    grads: Any,
    masks: Any,
    sparsity: jax.Array,
    key: jax.Array,
    *,
    score: scores_lib.ScoreFn = scores_lib.magnitude,
    allocation: alloc_lib.Allocation | None = None,
    structure: struct_lib.Structure | None = None,
) -> Any:
  """New masks at `sparsity` for the leaves where `masks` is not None.

  Entries already pruned score -inf, so they are pruned first; masks only
  shrink (a target below the current sparsity prunes nothing more).
  """
  allocation = alloc_lib.uniform() if allocation is None else allocation
  structure = struct_lib.unstructured() if structure is None else structure
  scores = score(params, grads, key)
  flat_m, treedef = jax.tree.flatten(masks, is_leaf=_is_none)
  flat_s = treedef.flatten_up_to(scores)
  flat_p = [x for x in jax.tree.flatten_with_path(params)[0]]
  idx = [i for i, m in enumerate(flat_m) if m is not None]
  paths = [masks_lib.path_str(flat_p[i][0]) for i in idx]
  shapes = [tuple(flat_m[i].shape) for i in idx]
  new = list(flat_m)
  free_keys, free_idx = [], []
  for i in idx:
    s = jnp.where(flat_m[i], jnp.asarray(flat_s[i], jnp.float32), -jnp.inf)
    if structure.select is not None:
      new[i] = structure.select(s) & flat_m[i]
      continue
    free_keys.append(threshold.sortable_key(structure.pool(s)))
    free_idx.append(i)
  if free_idx:
    pos = {i: j for j, i in enumerate(idx)}
    keep = allocation(free_keys, [paths[pos[i]] for i in free_idx],
                      [shapes[pos[i]] for i in free_idx], sparsity)
    for i, k in zip(free_idx, keep, strict=False):
      new[i] = structure.expand(k, shapes[pos[i]]) & flat_m[i]
  return jax.tree.unflatten(treedef, new)


def prune(
    sparsity: float | sched_lib.PruningSchedule,
    *,
    score: scores_lib.ScoreFn = scores_lib.magnitude,
    allocation: alloc_lib.Allocation | None = None,
    structure: struct_lib.Structure | None = None,
    filter_fn: masks_lib.FilterFn = masks_lib.is_kernel,
    optimizer: optax.GradientTransformation | None = None,
    initial_masks: Any = None,
    seed: int = 0,
) -> optax.GradientTransformationExtraArgs:
  """Prunes parameters to a target sparsity; masks live in the state.

  Two spellings:

  * `prune(..., optimizer=opt)` wraps `opt`: `opt` runs and its update is
    projected so that every pruned weight lands on exactly 0.0 after
    `optax.apply_updates`; at each mask update, `opt`'s param-shaped slots
    (momentum, Adam moments, ...) are zeroed at pruned entries
    (`optax.tree_utils.tree_map_params`, any optax optimizer). Every kept
    weight follows the masked-gradient trajectory: if `opt` mixes entries
    (global-norm clipping, trust ratios, factored moments), the gradients of
    pruned weights are zeroed before it runs, and its slots stay 0 at pruned
    entries. If `opt` is elementwise in them (SGD, momentum, Adam, AdamW,
    Lion, RMSProp, ..., decided on its jaxpr: `elementwise.elementwise_in`),
    a pruned weight's gradient can reach only its own projected update and
    slots, so it is not masked: the projection is then the only masking in
    a step, one select fused into `opt`'s last loop, and the slots of pruned
    entries follow their gradients until the next mask update.
  * `optax.chain(prune(...), opt)` masks gradients before `opt`. A later
    stateful `opt` can still move a just-pruned weight, so follow each
    `apply_updates` with `params = apply_masks(params, get_masks(state))`.

  Args:
    sparsity: a float (pruned once, at step 0) or a `PruningSchedule`.
    score: `(params, grads, key) -> scores`; lowest scores are pruned.
    allocation: how the target is spread over layers (default `uniform()`).
    structure: grouping of weights (default `unstructured()`).
    filter_fn: `(path, leaf) -> bool` choosing prunable leaves; default
      floating leaves with ndim >= 2 (Dense/Conv kernels).
    optimizer: optional inner optimizer to wrap (exact spelling).
    initial_masks: optional masks (pytree like params, None for dense
      leaves) to start from; with `sparsity=0.0` they stay fixed.
    seed: seed for random scores.

  Returns:
    An `optax.GradientTransformationExtraArgs`. Its `update` takes
    `mask_update=None` (the device decides from the schedule) or a Python
    bool, `schedule.is_update_step(step)` computed on the host, so that a
    non-update step compiles no mask-update code (`mask_update_flag`). Other
    extra keyword arguments of `update` are passed to the wrapped optimizer.
  """
  schedule = sched_lib.as_schedule(sparsity)
  allocation = alloc_lib.uniform() if allocation is None else allocation
  structure = struct_lib.unstructured() if structure is None else structure
  inner = None if optimizer is None else optax.with_extra_args_support(
      optimizer)

  def init_fn(params):
    params = masks_lib.unwrap(params)  # flax.nnx Variables -> arrays.
    if initial_masks is not None:
      masks_lib.check_masks(params, initial_masks, "initial_masks")
      masks = masks_lib.as_bool_masks(initial_masks)
    else:
      masks = masks_lib.ones_masks(params, filter_fn)
    for (path, _), m in zip(
        jax.tree.flatten_with_path(masks_lib.unwrap(params))[0],
        jax.tree.leaves(masks, is_leaf=_is_none), strict=False):
      if m is not None:
        structure.validate(masks_lib.path_str(path), tuple(m.shape))
    inner_state = optax.EmptyState() if inner is None else inner.init(params)
    return PruneState(
        count=jnp.zeros((), jnp.int32), masks=masks,
        key=jax.random.PRNGKey(seed), inner_state=inner_state,
        mask_bits=bits_lib.pack_masks(masks))

  def update_fn(updates, state, params=None, *, mask_update=None,
                **extra_args):
    if params is None:
      raise ValueError("jaxsparse.prune needs `params` in update().")
    wrapped = updates
    updates, params = masks_lib.unwrap(updates), masks_lib.unwrap(params)
    masks_lib.check_masks(params, state.masks, "masks (in the prune state)")

    def on_update():
      # The key is split only here: non-update steps run no PRNG code.
      key, sub = jax.random.split(state.key)
      masks = compute_masks(
          params, updates, state.masks, schedule.sparsity(state.count), sub,
          score=score, allocation=allocation, structure=structure)
      # Slots are zeroed at pruned entries here, on mask updates only.
      slots = state.inner_state if inner is None else masks_lib.zero_slots(
          inner, state.inner_state, masks)
      return key, masks, bits_lib.pack_masks(masks), slots

    flag = sched_lib.mask_update_flag(
        schedule.is_update_step(state.count), mask_update)
    key, new_masks, new_bits, inner_state = sched_lib.branch(
        flag, on_update,
        lambda: (state.key, state.masks, state.mask_bits, state.inner_state),
        mask_update)
    # The step reads the packed masks: an eighth of the memory traffic of
    # the bool ones in each fused loop below.
    step_masks = bits_lib.unpack_masks(new_bits, new_masks)
    zero = lambda x: jnp.zeros((), x.dtype)
    if inner is None:
      out = masks_lib.where_masked(step_masks, updates, zero)
    else:
      grads = updates
      if not elementwise_lib.elementwise_in(
          inner, updates, inner_state, params, state.masks, **extra_args):
        # `inner` mixes entries (e.g. global-norm clipping): the gradients
        # of pruned weights must not reach it. With masked gradients the
        # slots zeroed above stay 0 (SGD momentum, Adam, RMSProp, ...).
        grads = masks_lib.where_masked(step_masks, updates, zero)
      # Otherwise a pruned weight's gradient only reaches its own update
      # (projected below) and slots: masking it would change no kept weight
      # and cost a mask read in each of `inner`'s loops.
      out, inner_state = inner.update(
          grads, inner_state, params, **extra_args)
      # Land pruned weights on exactly 0.0.
      out = masks_lib.project_updates(step_masks, out, params)
    return masks_lib.rewrap_like(wrapped, out), PruneState(
        count=optax.safe_increment(state.count), masks=new_masks, key=key,
        inner_state=inner_state, mask_bits=new_bits)

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def masks(
    params: Any,
    sparsity: float | jax.Array,
    *,
    score: scores_lib.ScoreFn = scores_lib.magnitude,
    allocation: alloc_lib.Allocation | None = None,
    structure: struct_lib.Structure | None = None,
    grads: Any = None,
    key: jax.Array | None = None,
    filter_fn: masks_lib.FilterFn = masks_lib.is_kernel,
    current: Any = None,
) -> Any:
  """One-shot masks of `params` at `sparsity` (bool arrays; None = dense).

  The `round(sparsity * n)` lowest `score`s of each selected leaf (or of all
  of them, for `allocation.global_()`) are pruned, ties broken by position.
  `current` masks, if given, are only shrunk. Example::

    m = jaxsparse.masks(params, 0.9, allocation=jaxsparse.allocation.erk())
    params = jaxsparse.apply_masks(params, m)
  """
  if not isinstance(sparsity, jax.Array):
    sparsity = sched_lib.check_sparsity(sparsity)
  if current is None:
    current = masks_lib.ones_masks(params, filter_fn)
  else:
    masks_lib.check_masks(params, current, "current")
  key = jax.random.PRNGKey(0) if key is None else key
  allocation = alloc_lib.uniform() if allocation is None else allocation
  structure = struct_lib.unstructured() if structure is None else structure
  return _masks_jit(params, grads, current, jnp.float32(sparsity), key,
                    score=score, allocation=allocation, structure=structure)


# One compilation per shapes and hyper-parameters (the allocation and
# structure factories return the same object for the same arguments).
@functools.partial(
    jax.jit, static_argnames=("score", "allocation", "structure"))
def _masks_jit(params, grads, current, sparsity, key, *, score, allocation,
               structure):
  return compute_masks(params, grads, current, sparsity, key, score=score,
                       allocation=allocation, structure=structure)
