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

import contextlib
import contextvars
import math
from collections.abc import Iterator, Sequence

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
# order). Each search runs for all leaves at once: `ok(c)` is a monotone
# predicate on per-leaf counts c[i] = #{u_i <= t_i}, vectorised over a
# trailing axis: c has shape [num_leaves, m] and ok returns bool of shape
# [num_leaves, m] (one threshold per leaf) or [m] (one threshold shared by
# all leaves, e.g. a global ranking). `_search` returns per leaf the
# smallest t with ok, the counts of entries < t and == t and, given how
# many tied entries each leaf prunes, the position of the last one.
#
# The passes run in one `lax.while_loop`: a pass is traced and compiled
# once, whatever the number of passes, and the positional tie-break is more
# passes of the same loop (digits of the tied entries' positions), run only
# when some cut falls inside a run of ties. Leaves of equal shape are
# stacked, so one scatter (or one reduction) per pass serves them all.
# Every histogram pass and every reduction serves all leaves, so the
# program size grows neither with the number of passes nor with the number
# of leaves of one shape: that keeps compile time low, and on CPU it keeps
# an untaken mask-update `lax.cond` branch cheap too (a branch slows every
# step, the more so the more code it holds: `benchmarks/untaken_branch.py`).

_SIGN = 0x80000000
_MAX_DIGIT_BITS = 16
_SHARDED_DIGIT_BITS = 8
_PIVOT_BITS = 4
# Set to "radix" or "pivots" to force one method on every platform (tests).
_FORCE_METHOD: str | None = None
# Set while tracing a branch of a device-decided `lax.cond` (`unrolled`).
_UNROLLED = contextvars.ContextVar("jaxsparse_unrolled_search", default=False)


@contextlib.contextmanager
def unrolled() -> Iterator[None]:
  """Searches traced in this context unroll their passes in Python.

  For code traced into a `lax.cond` branch that most steps do not take (a
  mask update decided on the device): on CPU a `while` loop in an untaken
  branch slowed every step of `benchmarks/step_overhead.py` by ~30 %
  (`nonupdate_traced_ratio` 1.32, against 1.02 unrolled), while unrolled
  passes cost nothing untaken. The price is compile time (each pass is
  traced and compiled on its own).
  """
  token = _UNROLLED.set(True)
  try:
    yield
  finally:
    _UNROLLED.reset(token)


def _unsigned(key: jax.Array) -> jax.Array:
  return lax.bitcast_convert_type(key, jnp.uint32) ^ jnp.uint32(_SIGN)


def _signed(u: jax.Array) -> jax.Array:
  return lax.bitcast_convert_type(u ^ jnp.uint32(_SIGN), jnp.int32)


def _digit_bits(n: int, num_hists: int) -> int:
  """Digit width of the radix passes, 4 to 16 bits.

  Wider digits mean fewer passes over the keys but bigger histograms; about
  n / (8 * num_hists) bins keeps the histograms small next to the keys.
  """
  per_bin = max(1, n // (8 * max(1, num_hists)))
  w = max(4, min(_MAX_DIGIT_BITS, per_bin.bit_length() - 1))
  if mesh_devices() > 1:
    # Sharded keys: every pass all-reduces its histograms; 8-bit digits
    # keep what a mask update moves near 0.1 % of the keys' bytes.
    w = min(w, _SHARDED_DIGIT_BITS)
  return w


def mesh_devices() -> int:
  """Devices of the mesh being traced under (`jax.set_mesh`), else 1."""
  mesh = jax.sharding.get_abstract_mesh()
  return 1 if mesh.empty else int(mesh.size)


def _shr(x: jax.Array, s: jax.Array) -> jax.Array:
  """x >> s for uint32 x and a traced shift 0 <= s <= 32 (0 for s = 32)."""
  s = jnp.asarray(s, jnp.uint32)
  return jnp.where(s >= 32, jnp.uint32(0), x >> jnp.minimum(s, 31))


def _batched_ok(ok, c):
  """ok(c) as bool[num_leaves, m] (a shared predicate is broadcast)."""
  return jnp.broadcast_to(ok(c), c.shape)


def _pick(x: jax.Array, i: jax.Array) -> jax.Array:
  """x[l, i[l]] for each row l (a small gather)."""
  return jnp.take_along_axis(x, i[:, None], axis=1)[:, 0]


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
  start = jnp.where(r > 0, _pick(row_ends, jnp.maximum(r - 1, 0)), below)
  row = jnp.take_along_axis(grid, r[:, None, None], axis=1)[:, 0]
  counts = start[:, None] + jnp.cumsum(row, axis=1, dtype=jnp.int32)
  c = jnp.minimum(
      jnp.sum(~_batched_ok(ok, counts), axis=1, dtype=jnp.int32), cols - 1)
  # Read off, not summed again: the count at the top of the bin and the bin.
  top = _pick(counts, c)
  room = _pick(row, c)
  return r * cols + c, top - room, room


def _first_ok_top(tops, below, room, ok):
  """`_first_ok_bin` from the counts at the tops of all bins but the last
  (`tops`, [num_leaves, 2**w - 1]); the last bin ends at below + room."""
  tops = jnp.concatenate([tops, (below + room)[:, None]], axis=1)
  d = jnp.minimum(jnp.sum(~_batched_ok(ok, tops), axis=1, dtype=jnp.int32),
                  tops.shape[1] - 1)
  lo = jnp.where(d > 0, _pick(tops, jnp.maximum(d - 1, 0)), below)
  return d, lo, _pick(tops, d) - lo


def _count_many(u, ts):
  """#{u <= t} for each t in `ts` (arrays broadcasting against u, reduced
  over all but the leading axis): one pass, a variadic sum reduction."""
  ops = tuple((u <= t).astype(jnp.int32) for t in ts)
  zeros = tuple(jnp.int32(0) for _ in ts)
  add = lambda a, b: tuple(x + y for x, y in zip(a, b, strict=True))
  out = lax.reduce(ops, zeros, add, tuple(range(1, u.ndim)))
  return jnp.stack(out, axis=1)


def _flat_index(shape):
  """Row-major flat position of every entry, int32 (an iota, no gather)."""
  idx = jnp.zeros(shape, jnp.int32)
  stride = 1
  for d in reversed(range(len(shape))):
    idx = idx + lax.broadcasted_iota(jnp.int32, shape, d) * stride
    stride *= shape[d]
  return idx


def _groups(us):
  """Leaves of equal shape stacked: [(leaf indices, stacked keys)]."""
  by_shape: dict[tuple[int, ...], list[int]] = {}
  for i, u in enumerate(us):
    by_shape.setdefault(tuple(u.shape), []).append(i)
  return [(idx, us[idx[0]][None] if len(idx) == 1
           else jnp.stack([us[i] for i in idx]))
          for idx in by_shape.values()]


def _search(us, ok, take_fn=None, method="radix"):
  """Per leaf, the smallest t with ok(counts(t)); counts of u < t, u == t.

  With `take_fn`, `(below, room) -> take` (how many keys == t each leaf
  prunes, 0 <= take <= room), also the flat position of the last tied key
  pruned (-1 for none), found by more passes over the tied keys' positions
  when some leaf cuts inside its run of ties.

  Each pass narrows the bucket holding the answer by one digit: `radix`
  counts the keys of the bucket per digit value with one scatter-add
  histogram (2 passes for 32-bit keys on large leaves); `pivots` counts the
  keys below 15 pivots with one sum reduction (8 passes, no scatter).
  """
  num = len(us)
  sizes = [int(u.size) for u in us]
  groups = _groups(us)
  if method == "radix":
    w = _digit_bits(sum(sizes), num)
  else:
    w = _PIVOT_BITS
  nb = 1 << w
  key_passes = -(-32 // w)
  pos_passes = 0 if take_fn is None else -(-max(1, max(sizes).bit_length())
                                            // w)
  order = [i for idx, _ in groups for i in idx]
  inverse = [order.index(i) for i in range(num)]
  size_arr = jnp.asarray(sizes, jnp.int32)

  def regroup(rows):
    """Per-group rows, concatenated, back in leaf order."""
    rows = jnp.concatenate(rows) if len(rows) > 1 else rows[0]
    return rows if order == list(range(num)) else rows[jnp.asarray(inverse)]

  def per_group(x, idx, ndim):
    """Leaf values x[num] for the leaves `idx`, shaped to broadcast."""
    return x[jnp.asarray(idx)].reshape((len(idx),) + (1,) * ndim)

  def sources(in_pos, kpre):
    """Per group, the keys, or in the tie passes the tied keys' positions
    (other entries get their leaf size, above every position)."""
    out = []
    for idx, u in groups:
      shape = u.shape[1:]
      t = per_group(kpre, idx, len(shape))
      pos = jnp.where(u == t, _flat_index(u.shape[1:]).astype(jnp.uint32),
                      jnp.uint32(math.prod(shape)))
      out.append(jnp.where(in_pos, pos, u))
    return out

  def counts_pass(srcs, pre, shift, below, room, okp):
    shift = shift.astype(jnp.uint32)
    high = shift + jnp.uint32(w)
    if method == "radix":
      hists = []
      for (idx, _), src in zip(groups, srcs, strict=True):
        p = per_group(pre, idx, src.ndim - 1)
        digit = (_shr(src, shift) & jnp.uint32(nb - 1)).astype(jnp.int32)
        digit = jnp.where(_shr(src, high) == _shr(p, high), digit, nb)
        # One histogram per leaf, side by side (nb + 1 bins: the last one
        # collects the keys outside the bucket).
        offset = lax.broadcasted_iota(jnp.int32, src.shape, 0) * (nb + 1)
        hist = jnp.zeros((len(idx) * (nb + 1),), jnp.int32).at[
            digit + offset].add(1, mode="drop")
        hists.append(hist.reshape(len(idx), nb + 1)[:, :nb])
      hists = regroup(hists)
      return _first_ok_bin(hists, below, okp)
    low = _shr(jnp.uint32(0xFFFFFFFF), jnp.uint32(32) - shift)
    tops = []
    for (idx, _), src in zip(groups, srcs, strict=True):
      p = per_group(pre, idx, src.ndim - 1)
      tops.append(_count_many(
          src, [p | (jnp.uint32(j) << shift) | low for j in range(nb - 1)]))
    tops = regroup(tops)
    return _first_ok_top(tops, below, room, okp)

  def take_of(kbelow, kroom):
    if take_fn is None:
      return jnp.zeros((num,), jnp.int32)
    return jnp.clip(take_fn(kbelow, kroom), 0, kroom)

  def needs_cut(kbelow, kroom):
    take = take_of(kbelow, kroom)
    return (take > 0) & (take < kroom)

  def cond(carry):
    p, _, kbelow, kroom, _, _, _ = carry
    more = p < key_passes
    if pos_passes:
      more |= (p < key_passes + pos_passes) & jnp.any(needs_cut(kbelow, kroom))
    return more

  def body(carry):
    p, kpre, kbelow, kroom, ppre, pbelow, proom = carry
    in_pos = p >= key_passes
    shift = jnp.where(in_pos, key_passes + pos_passes - 1 - p,
                      key_passes - 1 - p) * w
    take = take_of(kbelow, kroom)

    def okp(c):
      by_pos = c >= take[:, None]
      return jnp.where(in_pos, by_pos, _batched_ok(ok, c))

    pick = lambda a, b: jnp.where(in_pos, a, b)
    pre = pick(ppre, kpre)
    below, room = pick(pbelow, kbelow), pick(proom, kroom)
    d, below, room = counts_pass(
        sources(in_pos, kpre), pre, shift, below, room, okp)
    pre = pre | (d.astype(jnp.uint32) << shift.astype(jnp.uint32))
    kpre, kbelow, kroom = (pick(kpre, pre), pick(kbelow, below),
                           pick(kroom, room))
    # The tie passes start from the tied keys: none below, kroom inside.
    ppre, pbelow, proom = (pick(pre, ppre), pick(below, pbelow),
                           pick(room, kroom))
    return p + 1, kpre, kbelow, kroom, ppre, pbelow, proom

  zu = jnp.zeros((num,), jnp.uint32)
  zi = jnp.zeros((num,), jnp.int32)
  init = (jnp.int32(0), zu, zi, size_arr, zu, zi, zi)
  if _UNROLLED.get():
    # Key passes unrolled; the tie passes only when some cut needs them.
    carry = (0,) + init[1:]
    for _ in range(key_passes):
      carry = body(carry)

    def tie_passes(rest):
      c = (key_passes,) + rest
      for _ in range(pos_passes):
        c = body(c)
      return c[1:]

    rest = carry[1:]
    if pos_passes:
      rest = lax.cond(jnp.any(needs_cut(rest[1], rest[2])), tie_passes,
                      lambda r: r, rest)
    t, below, room, last, _, _ = rest
  else:
    _, t, below, room, last, _, _ = lax.while_loop(cond, body, init)
  if take_fn is None:
    return t, below, room, None
  take = take_of(below, room)
  # Position of the last tied key to prune: none, all, or the cut.
  default = jnp.where(take > 0, size_arr, -1)
  last = jnp.where(needs_cut(below, room), last.astype(jnp.int32), default)
  return t, below, room, last


def _kth(us, ok, take_fn=None):
  """`_search` with radix histograms (2 passes for 32-bit keys on large
  leaves); on TPU, where big scatters are slow, with the counting search
  (15 pivots per pass, 8 passes for 32-bit keys, reductions only)."""
  us = [u.reshape(-1) if u.ndim == 0 else u for u in us]
  radix = lambda: _search(us, ok, take_fn, "radix")
  pivots = lambda: _search(us, ok, take_fn, "pivots")
  if _FORCE_METHOD == "radix":
    return radix()
  if _FORCE_METHOD == "pivots":
    return pivots()
  return lax.platform_dependent(tpu=pivots, default=radix)


def _keep_masks(keys, t, last):
  """Keep-masks pruning keys < t[i] and the keys == t[i] at flat positions
  <= last[i]."""
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
  u, _, _, last = _kth([_unsigned(k) for k in keys],
                       lambda c: c >= ks[:, None],
                       lambda below, room: ks - below)
  # ks == 0: t is the smallest possible key, below = 0 and take = 0.
  return _keep_masks(keys, _signed(u), last)


def _global_threshold(keys, k, caps, take_fn=None):
  """Global threshold t, per-leaf counts of keys < t and == t, and (with
  `take_fn`, see `_search`) the last tied position pruned per leaf."""
  us = [_unsigned(x) for x in keys]
  if caps is None:
    ok = lambda c: jnp.sum(c, axis=0) >= k
  else:
    ok = lambda c: jnp.sum(jnp.minimum(c, caps[:, None]), axis=0) >= k
  u, below, room, last = _kth(us, ok, take_fn)
  return _signed(u[0]), below, room, last


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
  _, below, room, _ = _global_threshold(keys, k, caps)
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

  def take_fn(below, room):
    # Ties at the threshold go to the earlier leaves first.
    before = jnp.cumsum(room, dtype=jnp.int32) - room
    return k - jnp.sum(below, dtype=jnp.int32) - before

  t, _, _, last = _global_threshold(keys, k, None, take_fn)
  return _keep_masks(keys, jnp.repeat(t, len(keys)), last)
