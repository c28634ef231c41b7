"""Dynamic sparse training: SET and RigL as an optax wrapper.

`sparse_training(method, sparsity, optimizer=opt, end_step=...)` wraps an optax
optimizer. It starts from random masks (exact per-layer counts from the
allocation, e.g. `erk()`), keeps the pruned weights at exactly 0.0 after
every `optax.apply_updates`, and every `update_every` steps moves a
cosine-decaying fraction of each layer's connections: it drops the smallest
|w| and grows as many new ones, at random (SET) or where the dense gradient
is largest (RigL). Per-layer non-zero counts are conserved.

Dense gradients for RigL. Pruned weights are exactly 0, so the ordinary
forward pass on `params` *is* the masked forward, and `jax.grad` of the
loss w.r.t. `params` is the dense gradient dL/d(m * theta), non-zero at
pruned entries too: pass it to `update` unchanged. (Do not wrap params in
`apply_masks` inside the loss: `where(m, p, 0)` has zero gradient at pruned
entries. If the params may not be exactly sparse, e.g. right after
`init`, use `jaxsparse.dst.straight_through(params, masks)`, whose gradient is
the dense one.) Right after `tx.init(params)`, set
`params = jaxsparse.apply_masks(params, jaxsparse.get_masks(state))`.

References:
  Evci et al., "Rigging the Lottery: Making All Tickets Winners", ICML 2020
  (google-research/rigl, `sparse_optimizers.py`).
  Mocanu et al., "Scalable training of artificial neural networks with
  adaptive sparse connectivity inspired by network science", Nature
  Communications 2018 (SET).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax import lax

from jaxsparse._src.core import allocation as alloc_lib
from jaxsparse._src.core import bits as bits_lib
from jaxsparse._src.core import elementwise as elementwise_lib
from jaxsparse._src.core import masks as masks_lib
from jaxsparse._src.core import prune as prune_lib
from jaxsparse._src.core import schedules as sched_lib
from jaxsparse._src.core import scores as scores_lib
from jaxsparse._src.core import structures as struct_lib
from jaxsparse._src.core import threshold

_is_none = masks_lib._is_none  # pylint: disable=protected-access

DropFractionFn = Callable[[jax.Array], jax.Array]  # step -> float32


class State(NamedTuple):
  """State of `jaxsparse.dst` (SET / RigL)."""

  count: jax.Array  # shape=(), int32: steps taken.
  masks: Any  # like params: bool arrays, None for dense leaves.
  key: jax.Array  # shape=(2,), uint32: PRNG key (drop noise, SET growth).
  inner_state: Any  # state of the wrapped optimizer.
  # `masks` bit-packed (`jaxsparse.pack_masks`): what each step reads. Kept
  # equal to `masks`; replace both with `jaxsparse.replace_masks`.
  mask_bits: Any


def cosine_drop_fraction(alpha: float, end_step: int) -> DropFractionFn:
  """f(t) = alpha / 2 * (1 + cos(pi * min(t, T_end) / T_end)).

  f(0) = alpha and f(T_end) = 0 (RigL's `cosine_decay` of the drop
  fraction, on the global step).
  """
  if end_step <= 0:
    raise ValueError(f"`end_step` must be positive, got {end_step}.")

  def fn(step):
    t = jnp.minimum(jnp.asarray(step, jnp.float32), float(end_step))
    return (0.5 * alpha * (1.0 + jnp.cos(math.pi * t / end_step))).astype(
        jnp.float32)
  return fn


def constant_drop_fraction(alpha: float) -> DropFractionFn:
  """f(t) = alpha."""
  return lambda step: jnp.full((), alpha, jnp.float32)


def mask_hamming(old: Any, new: Any) -> Any:
  """Per-layer number of mask entries that differ (int32; None if dense).

  Between the initial and the current masks this is the Sparse
  Architecture Divergence of Zhou et al. (2021); between two consecutive
  updates it is twice the number of connections that moved.
  """
  return jax.tree.map(
      lambda a, b: None if a is None else jnp.sum(
          jnp.asarray(a, bool) != jnp.asarray(b, bool), dtype=jnp.int32),
      old, new, is_leaf=_is_none)


def _hash_uniform(seed: jax.Array, shape: tuple[int, ...]) -> jax.Array:
  """Uniform [0, 1) floats from a counter hash of (seed, position).

  A murmur3-style finalizer of `index * golden + seed`: one fused
  elementwise pass, far cheaper on CPU than threefry for a tie-breaker.
  """
  n = math.prod(shape)
  h = lax.iota(jnp.uint32, n) * jnp.uint32(0x9E3779B1) + seed
  h = h ^ (h >> 16)
  h = h * jnp.uint32(0x85EBCA6B)
  h = h ^ (h >> 13)
  h = h * jnp.uint32(0xC2B2AE35)
  h = h ^ (h >> 16)
  return ((h >> 8).astype(jnp.float32) * (2.0**-24)).reshape(shape)


def _drop_grow(params, grads, masks, bits, frac, key, *, method, noise_std):
  """New masks: per layer, drop n_prune active entries, grow n_prune.

  Both selections are exact per-layer counts (`threshold`'s k-smallest).
  """
  flat_m, treedef = jax.tree.flatten(masks, is_leaf=_is_none)
  flat_p = treedef.flatten_up_to(params)
  flat_g = None if grads is None else treedef.flatten_up_to(grads)
  flat_b = treedef.flatten_up_to(bits)
  idx = [i for i, m in enumerate(flat_m) if m is not None]
  if not idx:
    return masks
  seeds = jax.random.bits(key, (2, len(idx)), jnp.uint32)
  frac = jnp.asarray(frac, jnp.float32)
  ms = [flat_m[i] for i in idx]
  sizes = jnp.asarray([m.size for m in ms], jnp.int32)
  # Counted on the packed copies: an eighth of the reads, no int32 copy.
  n_active = jnp.stack([
      jnp.sum(lax.population_count(flat_b[i]), dtype=jnp.int32) for i in idx])
  n_prune = jnp.floor(n_active.astype(jnp.float32) * frac).astype(jnp.int32)
  n_prune = jnp.clip(n_prune, 0, n_active)

  def drop():
    # Prune all inactive entries and n_prune active ones, i.e. keep the
    # top n_active - n_prune active entries of each layer.
    keys = []
    for j, i in enumerate(idx):
      score = jnp.abs(flat_p[i]).astype(jnp.float32)
      if noise_std:
        # Uniform noise with standard deviation noise_std (tie-breaking).
        u = _hash_uniform(seeds[0, j], flat_m[i].shape)
        score = score + (noise_std * math.sqrt(12.0)) * (u - 0.5)
      keys.append(threshold.sortable_key(jnp.where(flat_m[i], score, -jnp.inf)))
    return threshold.smallest_k_per_leaf(keys, sizes - n_active + n_prune)

  def grow(kept):
    # The top n_prune of each layer's entries not kept.
    keys = []
    for j, i in enumerate(idx):
      if method == "rigl":
        score = jnp.abs(flat_g[i]).astype(jnp.float32)
      else:
        score = _hash_uniform(seeds[1, j], flat_m[i].shape)
      keys.append(threshold.sortable_key(jnp.where(kept[j], -jnp.inf, score)))
    grown = threshold.smallest_k_per_leaf(keys, sizes - n_prune)
    return [k | g for k, g in zip(kept, grown, strict=True)]

  # One selection serves all layers (see `threshold`), so the update's
  # program does not grow with the layer count; drop and grow each run in
  # their own `lax.cond` (skipped when no layer moves anything), so XLA runs
  # them one after the other and their key-sized scratch is reused, which
  # keeps a training step's scratch small (on CPU, scratch above 32 MiB is
  # mapped afresh by glibc at every step, non-update steps included).
  moves = jnp.any(n_prune > 0)
  kept = lax.cond(moves, drop, lambda: ms)
  moved = lax.cond(moves, lambda: grow(kept), lambda: kept)
  new = list(flat_m)
  for i, m in zip(idx, moved, strict=True):
    new[i] = m
  return jax.tree.unflatten(treedef, new)


def sparse_training(
    method: str,
    sparsity: float | None,
    *,
    optimizer: optax.GradientTransformation,
    end_step: int,
    allocation: alloc_lib.Allocation | None = None,
    drop_fraction: float = 0.3,
    drop_fraction_fn: str | DropFractionFn = "cosine",
    update_every: int = 100,
    begin_step: int = 0,
    filter_fn: masks_lib.FilterFn = masks_lib.is_kernel,
    initial_masks: Any = None,
    noise_std: float = 1e-5,
    freeze_optimizer_on_update: bool = False,
    seed: int = 0,
) -> optax.GradientTransformationExtraArgs:
  """Dynamic sparse training (SET or RigL) wrapping an optax optimizer.

  Masks update at steps t with `begin_step <= t <= end_step` and
  `(t - begin_step) % update_every == 0`. At an update, each layer with
  n_active connections:

  1. drops n_prune = floor(n_active * f(t)) of them, those with the
     smallest |w| + noise (inactive entries are never kept); the
     tie-breaking noise is uniform with standard deviation `noise_std`;
  2. grows n_prune among the entries not kept (just-dropped ones included),
     with the largest |dense gradient| of the current batch (RigL) or at
     random (SET);
  3. sets grown weights to exactly 0 (a weight dropped and regrown keeps its
     value) and zeroes the wrapped optimizer's param-shaped slots (moments,
     traces, ...) at grown and dropped entries, via
     `optax.tree_utils.tree_map_params`: any optax optimizer works.

  RigL: on an update step the mask update replaces the optimizer step: the
  gradients are used to grow, and params change only by drop/grow. The
  wrapped optimizer's state still takes that step's gradients at the
  entries active before and after the update (and its count advances)
  unless `freeze_optimizer_on_update=True`, which leaves it as it was, as
  the reference code does (it skips the optimizer on those steps).
  SET: the optimizer step is applied first, then the mask is updated from
  the new weights. On other steps the output is projected so that pruned
  weights stay exactly 0; gradients of pruned entries are zeroed before the
  optimizer (SET always; RigL only if the optimizer mixes entries, as in
  `prune`: for an elementwise one they reach only their own projected
  update and slots, which are zeroed when the entry grows).

  Args:
    method: `"rigl"` or `"set"`.
    sparsity: target sparsity of the random initial masks (exact counts per
      layer from `allocation`); may be None when `initial_masks` is given.
    optimizer: the optax optimizer to wrap.
    end_step: T_end: last step with a mask update; the cosine drop fraction
      reaches 0 there (RigL uses about 75% of training).
    allocation: per-layer spread of `sparsity` (default `uniform()`; RigL
      uses `erk()`).
    drop_fraction: alpha, the initial drop fraction.
    drop_fraction_fn: `"cosine"` (default), `"constant"`, or a callable
      `step -> fraction`.
    update_every: Delta T, steps between mask updates.
    begin_step: first step with a mask update.
    filter_fn: `(path, leaf) -> bool` choosing sparse leaves (kernels).
    initial_masks: optional masks (pytree like params, None for dense
      leaves) to start from instead of random ones.
    noise_std: standard deviation of the tie-breaking noise added to drop
      scores (uniform, from a counter hash: one fused pass).
    freeze_optimizer_on_update: RigL only. False (default): on mask-update
      steps the optimizer's update is discarded, but its state takes the
      step's gradients at the entries active before and after (one
      gradient in `update_every`). True: the state is not advanced (the
      reference code's behaviour); this costs a select over the whole
      optimizer state at every step, which XLA cannot fuse with the update
      that also reads the new state (about 15% of a non-update step on CPU
      for an MLP with adam, against about 2% for False).
    seed: seed of the initial masks, drop noise and SET growth.

  Returns:
    An `optax.GradientTransformationExtraArgs` with a `State`. Its
    `update` takes `mask_update=None` (the device decides) or a Python bool
    decided on the host with `periodic_updates(update_every, begin_step,
    end_step)(step)`, so that a non-update step compiles no mask-update code
    (`mask_update_flag`). Other extra keyword arguments of `update` go to
    the wrapped optimizer.

  References:
    Evci et al., "Rigging the Lottery: Making All Tickets Winners",
    ICML 2020.
    Mocanu et al., "Scalable training of artificial neural networks with
    adaptive sparse connectivity inspired by network science", 2018.
  """
  method = str(method).lower()
  if method not in ("rigl", "set"):
    raise ValueError(f"`method` must be 'rigl' or 'set', got {method!r}.")
  if optimizer is None:
    raise ValueError("jaxsparse.dst needs an `optimizer` to wrap.")
  if sparsity is None and initial_masks is None:
    raise ValueError("give `sparsity` or `initial_masks`.")
  if sparsity is not None:
    sparsity = sched_lib.check_sparsity(sparsity)
  for name, v, lo in (("update_every", update_every, 1),
                      ("begin_step", begin_step, 0), ("end_step", end_step, 0)):
    if int(v) != v or v < lo:
      raise ValueError(f"`{name}` must be an integer >= {lo}, got {v!r}.")
  if end_step < begin_step:
    raise ValueError(
        f"`end_step` ({end_step}) must be >= `begin_step` ({begin_step}).")
  if not 0.0 <= drop_fraction <= 1.0:
    raise ValueError(f"`drop_fraction` must be in [0, 1], got {drop_fraction}.")
  if callable(drop_fraction_fn):
    frac_fn = drop_fraction_fn
  elif drop_fraction_fn == "cosine":
    frac_fn = cosine_drop_fraction(drop_fraction, max(int(end_step), 1))
  elif drop_fraction_fn == "constant":
    frac_fn = constant_drop_fraction(drop_fraction)
  else:
    raise ValueError(
        "`drop_fraction_fn` must be 'cosine', 'constant' or a callable, got "
        f"{drop_fraction_fn!r}.")
  allocation = alloc_lib.uniform() if allocation is None else allocation
  inner = optax.with_extra_args_support(optimizer)
  begin, end, every = int(begin_step), int(end_step), int(update_every)

  @jax.jit
  def random_masks(params, key):
    return prune_lib.compute_masks(
        params, None, masks_lib.ones_masks(params, filter_fn), sparsity, key,
        score=scores_lib.random, allocation=allocation,
        structure=struct_lib.unstructured())

  def init_fn(params):
    params = masks_lib.unwrap(params)  # flax.nnx Variables -> arrays.
    key, sub = jax.random.split(jax.random.PRNGKey(seed))
    if initial_masks is not None:
      masks_lib.check_masks(params, initial_masks, "initial_masks")
      masks = masks_lib.as_bool_masks(initial_masks)
    else:
      masks = random_masks(params, sub)
    return State(
        count=jnp.zeros((), jnp.int32), masks=masks, key=key,
        inner_state=inner.init(params), mask_bits=bits_lib.pack_masks(masks))

  is_update_step = sched_lib.periodic_updates(every, begin, end)

  def update_fn(updates, state, params=None, *, mask_update=None,
                **extra_args):
    if params is None:
      raise ValueError("jaxsparse.dst needs `params` in update().")
    wrapped = updates
    updates, params = masks_lib.unwrap(updates), masks_lib.unwrap(params)
    masks_lib.check_masks(params, state.masks, "masks (in the DST state)")
    masks = state.masks
    # Traced, or a Python bool decided on the host: then a non-update step
    # compiles none of the update-step code below.
    upd = sched_lib.mask_update_flag(is_update_step(state.count), mask_update)

    def pick(on, off):
      if isinstance(upd, bool):
        return jnp.broadcast_to(on if upd else off, jnp.shape(off))
      return jnp.where(upd, on, off)
    zero = lambda x: jnp.zeros((), x.dtype)

    def moved(stepped, grads, method):
      # Only here: the PRNG split and the drop/grow selections.
      def fn():
        key, sub = jax.random.split(state.key)
        new = _drop_grow(stepped, grads, masks, state.mask_bits,
                         frac_fn(state.count), sub,
                         method=method, noise_std=noise_std)
        return key, new, bits_lib.pack_masks(new)
      return fn

    unchanged = lambda: (state.key, masks, state.mask_bits)

    def and_bits(new_bits):
      # Entries active before and after the step (packed): the masks
      # themselves except on update steps.
      return jax.tree.map(lambda a, b: None if a is None else a & b,
                          state.mask_bits, new_bits, is_leaf=_is_none)

    def active_masks(new_bits):
      # ANDed on the packed copies, so that each fused loop below reads two
      # eighths of a byte per weight.
      return bits_lib.unpack_masks(and_bits(new_bits), masks)

    if method == "rigl":
      # The mask update, and the slot and gradient masking it needs, are
      # the only work inside `lax.cond`; the optimizer step always runs
      # (and is discarded on update steps), so that the projection fuses
      # into its last elementwise loop. `active`: the entries active before
      # and after the step (the masks themselves except on update steps).
      def rigl_update():
        key, new, new_bits = moved(params, updates, "rigl")()
        act = active_masks(new_bits)
        # Dropped and grown entries (all but `act`) restart from zero
        # slots, and no gradient reaches a grown entry's slots this step.
        return (key, new, new_bits,
                masks_lib.zero_slots(inner, state.inner_state, act),
                masks_lib.where_masked(act, updates, zero))

      key, new_masks, new_bits, inner_in, grads = sched_lib.branch(
          upd, rigl_update,
          lambda: (state.key, masks, state.mask_bits, state.inner_state,
                   updates), mask_update)
      active = active_masks(new_bits)
      if not elementwise_lib.elementwise_in(
          inner, updates, inner_in, params, masks, **extra_args):
        # `inner` mixes entries: inactive gradients must never reach it
        # (its slots of inactive entries then stay 0).
        grads = masks_lib.where_masked(active, grads, zero)
      # Otherwise an inactive entry's gradient reaches only its own update
      # (projected below) and slots (zeroed before the entry is grown), as
      # in `prune`.
      out, inner_state = inner.update(grads, inner_in, params, **extra_args)
      if freeze_optimizer_on_update and upd is not False:
        inner_state = jax.tree.map(
            lambda old, new: pick(old, new).astype(new.dtype),
            inner_in, inner_state)
      # Update steps: no optimizer step; weights active before and after
      # keep their values, all others (dropped, grown, inactive) land on
      # exactly 0. Other steps: the projection of `prune`.
      out = jax.tree.map(
          lambda m, u, p: pick(zero(u), u) if m is None
          else jnp.where(m, pick(zero(u), u), -p),
          active, out, params, is_leaf=_is_none)
    else:
      step_masks = bits_lib.unpack_masks(state.mask_bits, masks)
      inner_in = masks_lib.zero_slots(inner, state.inner_state, step_masks)
      grads = masks_lib.where_masked(step_masks, updates, zero)
      out, inner_state = inner.update(grads, inner_in, params, **extra_args)
      # SET: the optimizer step first, then the masks move on the new weights.
      stepped = optax.apply_updates(
          params, masks_lib.project_updates(step_masks, out, params))
      key, new_masks, new_bits = sched_lib.branch(
          upd, moved(stepped, None, "set"), unchanged, mask_update)
      keep = active_masks(new_bits)
      inner_state = masks_lib.zero_slots(inner, inner_state, keep)
      # Inactive entries land on exactly 0; a weight dropped and regrown
      # keeps its value.
      out = masks_lib.project_updates(keep, out, params)
    return masks_lib.rewrap_like(wrapped, out), State(
        count=optax.safe_increment(state.count), masks=new_masks, key=key,
        inner_state=inner_state, mask_bits=new_bits)

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def rigl(sparsity: float | None, *, optimizer: optax.GradientTransformation,
         end_step: int, **kwargs: Any) -> optax.GradientTransformationExtraArgs:
  """RigL (Evci et al., 2020, "Rigging the Lottery"): drop by |w|, grow by |g|.

  Keyword arguments as `sparse_training`.
  """
  return sparse_training("rigl", sparsity, optimizer=optimizer,
                         end_step=end_step, **kwargs)


def set(sparsity: float | None, *, optimizer: optax.GradientTransformation,
        end_step: int, **kwargs: Any) -> optax.GradientTransformationExtraArgs:
  """SET (Mocanu et al., 2018, "Scalable training ... sparse evolutionary").

  Drops by |w| and grows at random. Keyword arguments as `sparse_training`.
  """
  return sparse_training("set", sparsity, optimizer=optimizer,
                         end_step=end_step, **kwargs)
