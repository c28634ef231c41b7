"""Exact k-smallest selection without sorting.

Scores are mapped to order-preserving int32 keys and a threshold is found by
bisection on counts (at most 32 reductions over the scores). Ties at the
threshold are broken by position: the first tied entries (flattened, leaf
order then row-major index) are pruned first. No sort and no gather of the
whole model is needed, so the same code runs on sharded scores, where each
count is a sum reduction.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from jax import lax

_INT32_MIN = -(2**31)


def sortable_key(x: jax.Array) -> jax.Array:
  """Maps floats to int32 keys with the same order (NaN sorts as largest)."""
  x = jnp.asarray(x)
  if x.dtype != jnp.float32:
    x = x.astype(jnp.float32)
  x = jnp.where(jnp.isnan(x), jnp.inf, x)
  x = x + jnp.zeros((), x.dtype)  # -0.0 -> +0.0 so that both compare equal.
  bits = lax.bitcast_convert_type(x, jnp.int32)
  return jnp.where(bits < 0, bits ^ jnp.int32(0x7FFFFFFF), bits)


def _mid(lo: jax.Array, hi: jax.Array) -> jax.Array:
  # floor((lo + hi) / 2) without int32 overflow.
  return (lo >> 1) + (hi >> 1) + (lo & hi & 1)


def _count_le(keys: Sequence[jax.Array], t: jax.Array) -> jax.Array:
  """Per-leaf counts of keys <= t[i]; returns int32[len(keys)]."""
  return jnp.stack([jnp.sum(k <= t[i], dtype=jnp.int32)
                    for i, k in enumerate(keys)])


def _bisect(keys, lo, hi, target_fn):
  """Smallest t in [lo, hi] (vector) with target_fn(t) true (monotone)."""
  def cond(c):
    lo, hi = c
    return jnp.any(lo < hi)

  def body(c):
    lo, hi = c
    mid = _mid(lo, hi)
    ok = target_fn(mid)
    active = lo < hi
    return (jnp.where(active & ~ok, mid + 1, lo),
            jnp.where(active & ok, mid, hi))

  lo, _ = lax.while_loop(cond, body, (lo, hi))
  return lo


def _tie_masks(keys, t, take):
  """Keep-masks: prune keys < t and the first `take` keys == t per leaf."""
  out = []
  for i, k in enumerate(keys):
    eq = (k == t[i])
    rank = jnp.cumsum(eq.reshape(-1), dtype=jnp.int32).reshape(k.shape)
    prune = (k < t[i]) | (eq & (rank <= take[i]))
    out.append(~prune)
  return out


def _bounds(keys):
  lo = jnp.stack([jnp.min(k) if k.size else jnp.int32(0) for k in keys])
  hi = jnp.stack([jnp.max(k) if k.size else jnp.int32(0) for k in keys])
  return lo, hi


def smallest_k_per_leaf(
    keys: Sequence[jax.Array], ks: jax.Array) -> list[jax.Array]:
  """Keep-masks pruning exactly `ks[i]` smallest keys of each leaf."""
  keys = list(keys)
  if not keys:
    return []
  ks = jnp.asarray(ks, jnp.int32)
  lo, hi = _bounds(keys)
  t = _bisect(keys, lo, hi, lambda m: _count_le(keys, m) >= ks)
  below = _count_le(keys, t - 1)
  # ks == 0: t is the min key; below = 0 and take = 0 prunes nothing.
  return _tie_masks(keys, t, ks - below)


def global_counts(
    keys: Sequence[jax.Array],
    k: jax.Array,
    caps: jax.Array | None = None,
) -> jax.Array:
  """Per-leaf prune counts for one global ranking of all keys.

  Args:
    keys: per-leaf int32 keys (see `sortable_key`).
    k: total number of entries to prune.
    caps: optional per-leaf maximum prune counts (e.g. `n_l - min_keep_l`).

  Returns:
    int32 per-leaf counts summing to `min(k, sum(caps))`; leaf `i` prunes
    its `counts[i]` smallest keys. Ties at the global threshold go to the
    earlier leaves first, matching the positional tie rule within a leaf.
  """
  keys = list(keys)
  sizes = jnp.asarray([x.size for x in keys], jnp.int32)
  caps = sizes if caps is None else jnp.minimum(caps, sizes)
  k = jnp.minimum(jnp.asarray(k, jnp.int32), jnp.sum(caps))
  lo, hi = _bounds(keys)
  lo, hi = jnp.min(lo)[None], jnp.max(hi)[None]
  n = len(keys)

  def total_le(t):
    return jnp.sum(jnp.minimum(_count_le(keys, jnp.repeat(t, n)), caps))

  t = _bisect(keys, lo, hi, lambda m: (total_le(m[0]) >= k)[None])[0]
  below = jnp.minimum(_count_le(keys, jnp.repeat(t - 1, n)), caps)
  le = jnp.minimum(_count_le(keys, jnp.repeat(t, n)), caps)
  room = le - below
  before = jnp.cumsum(room) - room
  take = jnp.clip(k - jnp.sum(below) - before, 0, room)
  return below + take


def global_smallest_k(
    keys: Sequence[jax.Array], k: jax.Array) -> list[jax.Array]:
  """Keep-masks pruning exactly the `k` globally smallest keys."""
  keys = list(keys)
  if not keys:
    return []
  n = len(keys)
  k = jnp.asarray(k, jnp.int32)
  lo, hi = _bounds(keys)
  lo, hi = jnp.min(lo)[None], jnp.max(hi)[None]
  t = _bisect(
      keys, lo, hi,
      lambda m: (jnp.sum(_count_le(keys, jnp.repeat(m[0], n))) >= k)[None])[0]
  ts = jnp.repeat(t, n)
  below = _count_le(keys, ts - 1)
  room = _count_le(keys, ts) - below
  before = jnp.cumsum(room) - room
  take = jnp.clip(k - jnp.sum(below) - before, 0, room)
  return _tie_masks(keys, ts, take)
