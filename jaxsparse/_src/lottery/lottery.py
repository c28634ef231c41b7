"""Lottery-ticket iterative magnitude pruning (IMP) with rewinding.

Level 0 trains the dense network; every later level prunes
ceil(fraction * remaining) weights of smallest |w| (globally by default),
rewinds the survivors to their values at step 0 or at a rewinding step k,
and retrains. After j levels the density is 0.8^j for fraction 0.2 (up to
the ceil rounding).

References:
  Frankle & Carbin, "The Lottery Ticket Hypothesis: Finding Sparse,
  Trainable Neural Networks", ICLR 2019.
  Frankle et al., "Linear Mode Connectivity and the Lottery Ticket
  Hypothesis", ICML 2020 (rewinding to step k; open_lth).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from fractions import Fraction
from typing import Any

import jax
import jax.numpy as jnp

from jaxsparse._src.core import masks as masks_lib
from jaxsparse._src.core import threshold

_is_none = masks_lib._is_none  # pylint: disable=protected-access


def rewind(saved_params: Any, masks: Any) -> Any:
  """The saved weights (step 0 or step k) with pruned entries set to 0."""
  return masks_lib.apply_masks(saved_params, masks)


def _fraction(fraction: float) -> Fraction:
  f = float(fraction)
  if not 0.0 <= f <= 1.0:
    raise ValueError(f"`fraction` must be in [0, 1], got {fraction!r}.")
  # The shortest decimal of the float: 0.2 -> exactly 1/5.
  return Fraction(repr(f))


def prune_count(remaining: int, fraction: float = 0.2) -> int:
  """ceil(fraction * remaining), in exact rational arithmetic."""
  return math.ceil(_fraction(fraction) * int(remaining))


def remaining(n: int, levels: int, fraction: float = 0.2) -> list[int]:
  """Weights left after each of `levels` IMP levels, starting from n."""
  out = [int(n)]
  for _ in range(int(levels)):
    out.append(out[-1] - prune_count(out[-1], fraction))
  return out


def num_rounds(target_density: float, fraction: float = 0.2) -> int:
  """Levels j needed for (1 - fraction)^j <= target_density."""
  if not 0.0 < target_density <= 1.0:
    raise ValueError(
        f"`target_density` must be in (0, 1], got {target_density!r}.")
  f = float(_fraction(fraction))
  if target_density >= 1.0:
    return 0
  if f <= 0.0:
    raise ValueError("`fraction` must be positive to reach a density < 1.")
  if f >= 1.0:
    return 1
  j = math.ceil(math.log(target_density) / math.log(1.0 - f) - 1e-12)
  return max(j, 0)


@jax.jit
def _global_select(keys, k):
  return threshold.global_smallest_k(keys, k)


@jax.jit
def _per_leaf_select(keys, ks):
  return threshold.smallest_k_per_leaf(keys, ks)


def prune(
    params: Any,
    masks: Any = None,
    fraction: float = 0.2,
    *,
    scope: str = "global",
    filter_fn: masks_lib.FilterFn = masks_lib.is_kernel,
) -> Any:
  """One IMP level: prunes ceil(fraction * remaining) smallest |w|.

  Args:
    params: trained parameters.
    masks: current masks (default: all leaves chosen by `filter_fn`).
      Leaves with a None mask are never pruned: give the output layer a
      None mask to reproduce open_lth, which leaves `fc.weight` of
      LeNet-300-100 and VGG dense.
    fraction: fraction of the remaining weights pruned per level (0.2).
    scope: "global" (one ranking over all masked weights, open_lth's
      `sparse_global`) or "layer" (each leaf loses ceil(fraction *
      its remaining), the original paper's layer-wise rule).
    filter_fn: chooses prunable leaves when `masks` is None.

  Returns:
    New masks. Exactly the count is removed (ties broken by position);
    open_lth keeps |w| above the k-th value and so removes ties too. Counts
    are computed on the host in exact integer arithmetic, so call this
    between training rounds, outside `jax.jit`.
  """
  if scope not in ("global", "layer"):
    raise ValueError(f"`scope` must be 'global' or 'layer', got {scope!r}.")
  if masks is None:
    masks = masks_lib.ones_masks(params, filter_fn)
  masks = masks_lib.as_bool_masks(masks)
  flat_m, treedef = jax.tree.flatten(masks, is_leaf=_is_none)
  flat_p = treedef.flatten_up_to(params)
  idx = [i for i, m in enumerate(flat_m) if m is not None]
  if not idx:
    return masks
  keys = [threshold.sortable_key(
      jnp.where(flat_m[i], jnp.abs(flat_p[i]), -jnp.inf)) for i in idx]
  kept = [int(jnp.sum(flat_m[i])) for i in idx]
  pruned = [flat_m[i].size - k for i, k in zip(idx, kept, strict=True)]
  if scope == "global":
    k = sum(pruned) + prune_count(sum(kept), fraction)
    keep = _global_select(keys, jnp.int32(k))
  else:
    ks = [p + prune_count(k, fraction)
          for p, k in zip(pruned, kept, strict=True)]
    keep = _per_leaf_select(keys, jnp.asarray(ks, jnp.int32))
  out = list(flat_m)
  for i, k in zip(idx, keep, strict=True):
    out[i] = k & flat_m[i]
  return jax.tree.unflatten(treedef, out)


def run(
    train_fn: Callable[..., tuple],
    init_params: Any,
    rounds: int,
    rewind_step: int = 0,
    *,
    fraction: float = 0.2,
    scope: str = "global",
    masks: Any = None,
    filter_fn: masks_lib.FilterFn = masks_lib.is_kernel,
    rewind_params: Any = None,
    callback: Callable[[dict[str, Any]], None] | None = None,
) -> tuple[Any, Any, list[dict[str, Any]]]:
  """IMP driver: train dense, then `rounds` levels of prune -> rewind -> train.

  With `rewind_step == 0`, every call is `train_fn(params, masks) ->
  (params, metrics)` and weights rewind to `init_params`. With
  `rewind_step = k > 0` (late rewinding) the level-0 call is
  `train_fn(params, masks, save_step=k) -> (params, metrics, params_at_k)`
  and later calls are `train_fn(params, masks, start_step=k) -> (params,
  metrics)` (resume the schedule at step k); pass `rewind_params` to
  supply the step-k weights yourself and skip `save_step`.

  `train_fn` must keep pruned weights at zero, e.g. with
  `jaxsparse.prune(0.0, initial_masks=masks, optimizer=...)`.

  Returns:
    (trained params of the last level, its masks, history), the history a
    list of {"level", "density", "metrics"} records, level 0 dense.
  """
  if int(rounds) != rounds or rounds < 0:
    raise ValueError(f"`rounds` must be a non-negative integer, got {rounds}.")
  if int(rewind_step) != rewind_step or rewind_step < 0:
    raise ValueError(
        f"`rewind_step` must be a non-negative integer, got {rewind_step}.")
  if masks is None:
    masks = masks_lib.ones_masks(init_params, filter_fn)
  masks = masks_lib.as_bool_masks(masks)
  history: list[dict[str, Any]] = []

  def record(level, metrics):
    rec = {"level": level,
           "density": float(1.0 - masks_lib.sparsity(masks)),
           "metrics": metrics}
    history.append(rec)
    if callback is not None:
      callback(rec)

  if rewind_step == 0:
    saved = init_params
    params, metrics = train_fn(rewind(init_params, masks), masks)
  elif rewind_params is not None:
    saved = rewind_params
    params, metrics = train_fn(rewind(init_params, masks), masks)
  else:
    params, metrics, saved = train_fn(
        rewind(init_params, masks), masks, save_step=rewind_step)
  record(0, metrics)
  for level in range(1, int(rounds) + 1):
    masks = prune(params, masks, fraction, scope=scope)
    start = rewind(saved, masks)
    if rewind_step == 0:
      params, metrics = train_fn(start, masks)
    else:
      params, metrics = train_fn(start, masks, start_step=rewind_step)
    record(level, metrics)
  return params, masks, history
