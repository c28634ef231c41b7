"""Exact k-smallest selection without sorting.

Scores are mapped to order-preserving int32 keys and the k-th smallest key
is found digit by digit, most significant first (radix select): each pass
counts the keys of the current bucket per digit value with one histogram, so
32-bit keys take 2 passes over large leaves (16-bit digits) and a few more
over small ones. On TPU, where large scatters are slow, each pass instead
counts the keys below 15 pivots with one sum reduction (8 passes). Ties at
the threshold are broken by position: the first tied entries (flattened,
leaf order then row-major index) are pruned first; only when a cut falls
inside a run of ties is the cut-off position searched, the same way, among
the tied entries. Histograms and counts are sum reductions, and no sort and
no gather of the whole model is needed, so the same code runs on sharded
scores.
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
  bits = lax.bitcast_convert_type(x, jnp.int32)
  # -0.0 -> +0.0 so that both compare equal (in integers: XLA folds x + 0.0).
  bits = jnp.where(bits == jnp.int32(_INT32_MIN), jnp.int32(0), bits)
  return jnp.where(bits < 0, bits ^ jnp.int32(0x7FFFFFFF), bits)


# --- Selection of the k-th smallest key. ------------------------------------
#
# Keys are handled as uint32 `u` (int32 key with the sign bit flipped, same
# order) below 2**nbits. Each search runs for all leaves at once: `ok(c)` is
# a monotone predicate on per-leaf counts c[i] = #{u_i <= t_i}, vectorised
# over a trailing axis: c has shape [num_leaves, m] and ok returns bool of
# shape [num_leaves, m] (one threshold per leaf) or [m] (one threshold
# shared by all leaves, e.g. a global ranking). `_kth` returns per leaf the
# smallest t with ok, and the counts of entries < t and == t.
#
# Every histogram pass and every reduction below serves all leaves, so the
# program size does not grow with the number of leaves times the number of
# passes. This matters beyond compile time: a mask update sits in a
# `lax.cond` of the training step, and on CPU even an untaken branch slows
# every step, the more so the more code it holds
# (`benchmarks/untaken_branch.py`, `benchmarks/overhead_parts.py`).

_SIGN = 0x80000000
_MAX_DIGIT_BITS = 16
_PIVOT_BITS = 4
# Set to "radix" or "pivots" to force one method on every platform (tests).
_FORCE_METHOD: str | None = None


def _unsigned(key: jax.Array) -> jax.Array:
  return lax.bitcast_convert_type(key, jnp.uint32) ^ jnp.uint32(_SIGN)


def _signed(u: jax.Array) -> jax.Array:
  return lax.bitcast_convert_type(u ^ jnp.uint32(_SIGN), jnp.int32)


def _digit_widths(nbits: int, n: int, num_hists: int) -> list[int]:
  """Splits `nbits` into digits of at most 16 bits, most significant first.

  Wider digits mean fewer passes over the keys but bigger histograms; about
  n / (8 * num_hists) bins keeps the histograms small next to the keys.
  """
  per_bin = max(1, n // (8 * max(1, num_hists)))
  w = max(4, min(_MAX_DIGIT_BITS, per_bin.bit_length() - 1))
  w = max(1, min(w, nbits))
  levels = -(-nbits // w)
  base, extra = divmod(nbits, levels)
  return [base + (1 if i < extra else 0) for i in range(levels)]


def _batched_ok(ok, c):
  """ok(c) as bool[num_leaves, m] (a shared predicate is broadcast)."""
  return jnp.broadcast_to(ok(c), c.shape)


def _histogram(u, prefix, shift, width, nbits):
  """Counts of each digit (u >> shift) % 2**width, among the entries whose
  bits above the digit equal those of `prefix` (a scatter-add, i.e. a sum
  reduction: sharded keys give local histograms and one all-reduce)."""
  size = 1 << width
  digit = ((u >> shift) & jnp.uint32(size - 1)).astype(jnp.int32)
  high = shift + width
  if high < nbits:
    digit = jnp.where((u >> high) == (prefix >> high), digit, size)
  return jnp.zeros((size,), jnp.int32).at[digit].add(1, mode="drop")


def _first_ok_bin(hists, below, ok):
  """Per leaf, the first bin b with ok(counts at the top of b), or the last.

  `hists` is [num_leaves, 2**w]; counts at the top of bin b are `below` plus
  the histogram summed up to b. ok is monotone, so the bin is found in two
  levels: first the row of sqrt(2**w) bins whose end is ok, then the bin in
  that row; two short cumulative sums instead of one over every bin.
  Returns the bin, and per leaf the counts below it and in it.
  """
  nbins = hists.shape[1]
  width = nbins.bit_length() - 1
  cols = 1 << (width // 2)
  rows = nbins // cols
  grid = hists.reshape(hists.shape[0], rows, cols)
  row_ends = below[:, None] + jnp.cumsum(
      jnp.sum(grid, axis=2, dtype=jnp.int32), axis=1, dtype=jnp.int32)
  r = jnp.minimum(
      jnp.sum(~_batched_ok(ok, row_ends), axis=1, dtype=jnp.int32), rows - 1)
  prev = jnp.take_along_axis(row_ends, jnp.maximum(r - 1, 0)[:, None], 1)
  start = jnp.where(r > 0, prev[:, 0], below)
  row = jnp.take_along_axis(grid, r[:, None, None], axis=1)[:, 0]
  counts = start[:, None] + jnp.cumsum(row, axis=1, dtype=jnp.int32)
  c = jnp.minimum(
      jnp.sum(~_batched_ok(ok, counts), axis=1, dtype=jnp.int32), cols - 1)
  # Read off, not summed again: the count at the top of the bin and the bin.
  top = jnp.take_along_axis(counts, c[:, None], axis=1)[:, 0]
  room = jnp.take_along_axis(row, c[:, None], axis=1)[:, 0]
  return r * cols + c, top - room, room


def _kth_radix(us, nbits, ok):
  """Radix select: one histogram pass per digit, most significant first."""
  n = sum(u.size for u in us)
  prefix = jnp.zeros((len(us),), jnp.uint32)
  below = jnp.zeros((len(us),), jnp.int32)
  room = below
  shift = nbits
  for width in _digit_widths(nbits, n, len(us)):
    shift -= width
    hists = jnp.stack([_histogram(u, prefix[i], shift, width, nbits)
                       for i, u in enumerate(us)])
    d, below, room = _first_ok_bin(hists, below, ok)
    prefix = prefix | (d.astype(jnp.uint32) << shift)
  return prefix, below, room


def _count_many(u, ts):
  """#{u <= t} for each t in `ts`: one pass (a variadic sum reduction)."""
  ops = tuple((u <= t).astype(jnp.int32) for t in ts)
  zeros = tuple(jnp.int32(0) for _ in ts)
  add = lambda a, b: tuple(x + y for x, y in zip(a, b, strict=True))
  out = lax.reduce(ops, zeros, add, tuple(range(u.ndim)))
  return jnp.stack(out)


def _kth_pivots(us, nbits, ok, width=_PIVOT_BITS):
  """Counting search: each pass counts the keys below 2**width - 1 pivots
  (bin tops of the current bucket) with one variadic sum, no scatter."""
  prefix = jnp.zeros((len(us),), jnp.uint32)
  shift = nbits
  while shift > 0:
    w = min(width, shift)
    shift -= w
    low = jnp.uint32((1 << shift) - 1)
    counts = jnp.stack([
        _count_many(u, [prefix[i] | (jnp.uint32(j) << shift) | low
                        for j in range((1 << w) - 1)])
        for i, u in enumerate(us)])
    d = jnp.sum(~_batched_ok(ok, counts), axis=1, dtype=jnp.int32)
    prefix = prefix | (d.astype(jnp.uint32) << shift)
  lt_eq = jnp.stack([_count_many(u, [prefix[i] - 1, prefix[i]])
                     for i, u in enumerate(us)])
  below = jnp.where(prefix > 0, lt_eq[:, 0], 0)
  room = lt_eq[:, 1] - below
  return prefix, below, room


def _kth(us, nbits, ok):
  """Per leaf, the smallest t with ok(counts(t)); counts of u < t, u == t.

  Radix select with scatter-add histograms (2 passes for 32-bit keys on
  large leaves); on TPU, where big scatters are slow, a counting search
  with 15 pivots per pass (8 passes for 32-bit keys, reductions only).
  """
  us = [u.reshape(-1) if u.ndim == 0 else u for u in us]
  radix = lambda: _kth_radix(us, nbits, ok)
  pivots = lambda: _kth_pivots(us, nbits, ok)
  if _FORCE_METHOD == "radix":
    return radix()
  if _FORCE_METHOD == "pivots":
    return pivots()
  return lax.platform_dependent(tpu=pivots, default=radix)


def _flat_index(shape):
  """Row-major flat position of every entry, int32 (an iota, no gather)."""
  idx = jnp.zeros(shape, jnp.int32)
  stride = 1
  for d in reversed(range(len(shape))):
    idx = idx + lax.broadcasted_iota(jnp.int32, shape, d) * stride
    stride *= shape[d]
  return idx


def _keep_masks(keys, t, room, take):
  """Keep-masks pruning keys < t[i] and the first take[i] keys == t[i].

  `room[i]` is the count of keys == t[i]. Only where a cut falls inside a
  run of ties (0 < take < room) is the position of the take-th tied key
  searched, the same way as the threshold, among the tied keys' positions
  (one search for all leaves, skipped when no leaf needs it).
  """
  sizes = [k.size for k in keys]
  need = (take > 0) & (take < room)
  # Position of the last tied key to prune: none, all, or the cut.
  default = jnp.where(take > 0, jnp.asarray(sizes, jnp.int32), -1)

  def cut():
    # Positions are recomputed here so that no key-sized array becomes a
    # cond operand.
    pos = [jnp.where(k == t[i], _flat_index(k.shape), k.size)
           .astype(jnp.uint32) for i, k in enumerate(keys)]
    p, _, _ = _kth(pos, max(1, max(sizes).bit_length()),
                   lambda c: c >= take[:, None])
    return jnp.where(need, p.astype(jnp.int32), default)

  last = lax.cond(jnp.any(need), cut, lambda: default)
  return [~((k < t[i]) | ((k == t[i]) & (_flat_index(k.shape) <= last[i])))
          for i, k in enumerate(keys)]


def smallest_k_per_leaf(
    keys: Sequence[jax.Array], ks: jax.Array) -> list[jax.Array]:
  """Keep-masks pruning exactly `ks[i]` smallest keys of each leaf."""
  keys = list(keys)
  if not keys:
    return []
  sizes = jnp.asarray([k.size for k in keys], jnp.int32)
  ks = jnp.clip(jnp.asarray(ks, jnp.int32), 0, sizes)
  u, below, room = _kth([_unsigned(k) for k in keys], 32,
                        lambda c: c >= ks[:, None])
  # ks == 0: t is the smallest possible key, below = 0 and take = 0.
  return _keep_masks(keys, _signed(u), room, ks - below)


def _global_threshold(keys, k, caps):
  """Global threshold t and per-leaf counts of keys < t and == t."""
  us = [_unsigned(x) for x in keys]
  if caps is None:
    ok = lambda c: jnp.sum(c, axis=0) >= k
  else:
    ok = lambda c: jnp.sum(jnp.minimum(c, caps[:, None]), axis=0) >= k
  u, below, room = _kth(us, 32, ok)
  return _signed(u[0]), below, room


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
  if not keys:
    return jnp.zeros((0,), jnp.int32)
  sizes = jnp.asarray([x.size for x in keys], jnp.int32)
  caps = sizes if caps is None else jnp.minimum(
      jnp.asarray(caps, jnp.int32), sizes)
  k = jnp.clip(jnp.asarray(k, jnp.int32), 0, jnp.sum(caps))
  _, below, room = _global_threshold(keys, k, caps)
  le = jnp.minimum(below + room, caps)
  below = jnp.minimum(below, caps)
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
  total = sum(x.size for x in keys)
  k = jnp.clip(jnp.asarray(k, jnp.int32), 0, total)
  t, below, room = _global_threshold(keys, k, None)
  before = jnp.cumsum(room) - room
  take = jnp.clip(k - jnp.sum(below) - before, 0, room)
  ts = jnp.repeat(t, len(keys))
  return _keep_masks(keys, ts, room, take)
