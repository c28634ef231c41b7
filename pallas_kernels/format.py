"""`BlockSparse`: a block-sparse weight W (K x N) stored by column block.

Layout, for blocks of shape (bk, bn), `Kb = K // bk` row blocks and
`Nb = N // bn` column blocks:

* `values`  (Nb, T, bk, bn): the stored blocks of column block j, in
  increasing row-block order, in slots 0..count[j]-1; the remaining
  (padding) slots hold zeros. T, the slot count, is fixed when the format
  is built, so a new mask with at most T blocks per column block keeps every
  shape (and every compiled kernel) unchanged.
* `rows`    (Nb, T): row-block id of each slot. Padding slots repeat the
  last valid id (0 for an empty column block), so a TPU pipeline sees the
  same block index twice and skips the copy.
* `counts`  (Nb,): number of stored blocks per column block.
* Transposed metadata for Wᵀ, pointing into the same `values` (no copy):
  `t_cols` (Kb, Tt) sorted column-block ids per row block, `t_slots`
  (Kb, Tt) the slot of block (i, t_cols[i, s]) inside its column block,
  `t_counts` (Kb,). Padding repeats the last valid entry.

Index arrays use the smallest of int8 / int16 / int32 that holds
`max(Kb, Nb, T, Tt)`; kernels widen them to int32 when they run.

The layout follows the block-sparse formats of Gray et al. ("GPU Kernels
for Block-Sparse Weights", 2017) and Gale et al. ("MegaBlocks", 2023):
sorted per-column indices for the forward product, transposed indices into
the same values for the backward product.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array


def index_dtype(max_value: int) -> np.dtype:
  """Smallest signed integer dtype holding 0..max_value."""
  for dt in (np.int8, np.int16, np.int32):
    if max_value <= np.iinfo(dt).max:
      return np.dtype(dt)
  raise ValueError(f"index value {max_value} does not fit in int32.")


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class BlockSparse:
  """Block-sparse K x N matrix; a pytree (arrays are leaves, shapes static).

  Build it with `BlockSparse.from_dense`; differentiate with respect to
  `values` (the integer metadata is not differentiable).
  """

  values: Array  # (Nb, T, bk, bn), float
  rows: Array  # (Nb, T), int8/16/32
  counts: Array  # (Nb,)
  t_cols: Array  # (Kb, Tt)
  t_slots: Array  # (Kb, Tt)
  t_counts: Array  # (Kb,)
  shape: tuple[int, int] = dataclasses.field(metadata=dict(static=True))
  block: tuple[int, int] = dataclasses.field(metadata=dict(static=True))

  # -- derived sizes ---------------------------------------------------------
  @property
  def dtype(self) -> Any:
    return self.values.dtype

  @property
  def grid(self) -> tuple[int, int]:
    """(Kb, Nb): number of row and column blocks."""
    return self.shape[0] // self.block[0], self.shape[1] // self.block[1]

  @property
  def slots(self) -> int:
    """T: stored-block slots per column block."""
    return self.values.shape[1]

  @property
  def slots_t(self) -> int:
    """Tt: slots per row block in the transposed metadata."""
    return self.t_cols.shape[1]

  def nnz_blocks(self) -> Array:
    return jnp.sum(self.counts.astype(jnp.int32))

  def density(self) -> Array:
    kb, nb = self.grid
    return self.nnz_blocks() / (kb * nb)

  def replace(self, **kw) -> BlockSparse:
    return dataclasses.replace(self, **kw)

  def astype(self, dtype) -> BlockSparse:
    return self.replace(values=self.values.astype(dtype))

  # -- conversions -----------------------------------------------------------
  @classmethod
  def from_dense(
      cls,
      w: Array,
      mask: Array,
      block: tuple[int, int],
      *,
      slots: int | None = None,
      slots_t: int | None = None,
  ) -> BlockSparse:
    """Packs the blocks of `w` that `mask` keeps.

    Args:
      w: (K, N) floating weight.
      mask: bool, either per block (K // bk, N // bn) or per entry (K, N)
        with every (bk, bn) block constant (what
        `jaxsparse.structures.block(bk, bn)` produces). Entries of `w`
        outside the mask are dropped.
      block: (bk, bn).
      slots: T, slots per column block; default the largest count in
        `mask` (needs a concrete mask). Fix it to reuse compiled kernels
        across masks.
      slots_t: Tt, slots per row block of the transposed metadata; default
        the largest count per row block.

    Returns:
      A `BlockSparse` with `to_dense() == w * mask`.
    """
    w = jnp.asarray(w)
    bk, bn = _check_block(block)
    if w.ndim != 2:
      raise ValueError(f"w must be a 2-D (K, N) matrix, got shape {w.shape}.")
    if not jnp.issubdtype(w.dtype, jnp.floating):
      raise TypeError(f"w must be floating point, got dtype {w.dtype}.")
    k, n = w.shape
    if k % bk or n % bn:
      raise ValueError(
          f"block {bk}x{bn} does not divide the weight shape {k}x{n}.")
    bmask = block_mask(mask, (k, n), (bk, bn))
    slots, slots_t = _slot_counts(bmask, slots, slots_t)
    entry_mask = None
    if tuple(jnp.shape(mask)) == (k, n):
      entry_mask = mask
    return _from_dense(w, bmask, entry_mask, (bk, bn), slots, slots_t)

  @classmethod
  def from_block_values(
      cls,
      blocks: Array,
      mask: Array,
      *,
      slots: int | None = None,
      slots_t: int | None = None,
  ) -> BlockSparse:
    """From all blocks as (Kb, Nb, bk, bn) and a (Kb, Nb) block mask."""
    blocks = jnp.asarray(blocks)
    if blocks.ndim != 4:
      raise ValueError(f"blocks must be (Kb, Nb, bk, bn), got {blocks.shape}.")
    kb, nb, bk, bn = blocks.shape
    bmask = block_mask(mask, (kb * bk, nb * bn), (bk, bn))
    slots, slots_t = _slot_counts(bmask, slots, slots_t)
    return _pack(blocks.transpose(1, 0, 2, 3), bmask, (kb * bk, nb * bn),
                 (bk, bn), slots, slots_t)

  def block_mask(self) -> Array:
    """(Kb, Nb) bool: which blocks are stored."""
    return _block_mask_of(self)

  def to_dense(self) -> Array:
    """The dense (K, N) matrix (zeros outside the stored blocks)."""
    return _to_dense(self)

  def with_mask(self, mask: Array) -> BlockSparse:
    """Same dense values re-packed under a new block mask, same T and Tt.

    Jit-friendly: shapes are unchanged, so compiled kernels are reused. A
    mask with more than T blocks in a column (or Tt in a row) is an error
    when the mask is concrete.
    """
    return BlockSparse.from_dense(self.to_dense(), mask, self.block,
                                  slots=self.slots, slots_t=self.slots_t)

  def __repr__(self) -> str:
    return (f"BlockSparse(shape={self.shape}, block={self.block}, "
            f"slots={self.slots}, slots_t={self.slots_t}, "
            f"dtype={self.values.dtype})")


def _check_block(block) -> tuple[int, int]:
  try:
    bk, bn = block
  except (TypeError, ValueError):
    raise ValueError(f"block must be a pair (bk, bn), got {block!r}.") from None
  if int(bk) != bk or int(bn) != bn or bk < 1 or bn < 1:
    raise ValueError(f"block sizes must be positive integers, got {block!r}.")
  return int(bk), int(bn)


def _is_concrete(x) -> bool:
  return not isinstance(x, jax.core.Tracer)


def block_mask(mask: Array, shape: tuple[int, int],
               block: tuple[int, int]) -> Array:
  """(Kb, Nb) bool block mask from a block-level or entry-level mask.

  A concrete mask is checked (entry masks must be constant on blocks) and
  returned as a NumPy array; a traced one is reduced with `any`.
  """
  k, n = shape
  bk, bn = block
  kb, nb = k // bk, n // bn
  mshape = tuple(jnp.shape(mask))
  mdtype = getattr(mask, "dtype", None) or np.asarray(mask).dtype
  if mdtype != np.bool_:
    raise TypeError(f"mask must be bool, got dtype {mdtype}.")
  concrete = _is_concrete(mask)
  xp = np if concrete else jnp
  if mshape == (kb, nb):
    return xp.asarray(mask)
  if mshape == (k, n):
    m = xp.asarray(mask).reshape(kb, bk, nb, bn)
    anyb = m.any(axis=(1, 3))
    if concrete:
      partly = anyb != m.all(axis=(1, 3))
      if partly.any():
        i, j = np.argwhere(partly)[0]
        raise ValueError(
            f"mask is not constant on {bk}x{bn} blocks (block ({i}, {j}) is "
            "partly kept); use a mask from "
            "jaxsparse.structures.block(bk, bn) or a "
            f"block-level mask of shape {(kb, nb)}.")
    return anyb
  raise ValueError(
      f"mask shape {mshape} matches neither the weight {(k, n)} nor its "
      f"block grid {(kb, nb)} for block {bk}x{bn}.")


def _slot_counts(bmask, slots, slots_t) -> tuple[int, int]:
  """Static (T, Tt): given, or the largest counts of a concrete mask."""
  if _is_concrete(bmask):
    bm = np.asarray(bmask)
    max_c = int(bm.sum(axis=0).max(initial=0))
    max_r = int(bm.sum(axis=1).max(initial=0))
    slots = max(max_c, 1) if slots is None else int(slots)
    slots_t = max(max_r, 1) if slots_t is None else int(slots_t)
    if max_c > slots or max_r > slots_t:
      raise ValueError(
          f"mask has up to {max_c} blocks per column block and {max_r} per "
          f"row block; more than slots={slots} / slots_t={slots_t}. Rebuild "
          "with larger slots (this changes shapes and recompiles).")
  elif slots is None or slots_t is None:
    raise ValueError(
        "slots and slots_t must be given when the mask is traced (under "
        "jit); they fix the shapes of the format.")
  slots, slots_t = int(slots), int(slots_t)
  if slots < 1 or slots_t < 1:
    raise ValueError(f"slots must be >= 1, got {slots}, {slots_t}.")
  return slots, slots_t


def _sorted_ids(m: Array, slots: int) -> tuple[Array, Array]:
  """Per row of bool `m` (R, C): first `slots` True column ids, padded.

  Returns (ids (R, slots) int32 padded with the last valid id, or 0 when a
  row is empty; counts (R,) int32).
  """
  c = m.shape[1]
  cols = jnp.arange(c, dtype=jnp.int32)
  # True entries first, in increasing column order (stable on the key).
  key = jnp.where(m, cols, c + cols)
  order = jnp.argsort(key, axis=1)[:, :slots].astype(jnp.int32)
  if order.shape[1] < slots:  # slots > C: pad with repeats below.
    order = jnp.pad(order, ((0, 0), (0, slots - order.shape[1])))
  counts = m.sum(axis=1).astype(jnp.int32)
  last = jnp.maximum(jnp.minimum(counts, slots) - 1, 0)
  t = jnp.arange(slots, dtype=jnp.int32)
  pos = jnp.minimum(t[None, :], last[:, None])
  ids = jnp.take_along_axis(order, pos, axis=1)
  ids = jnp.where(counts[:, None] > 0, ids, 0)
  return ids, counts


@functools.partial(jax.jit, static_argnums=(3, 4, 5))
def _from_dense(w, bmask, entry_mask, block, slots, slots_t) -> BlockSparse:
  k, n = w.shape
  bk, bn = block
  if entry_mask is not None:
    w = jnp.where(entry_mask, w, jnp.zeros((), w.dtype))
  wb = w.reshape(k // bk, bk, n // bn, bn).transpose(2, 0, 1, 3)
  return _pack(wb, bmask, (k, n), block, slots, slots_t)


def _pack(wb: Array, bmask: Array, shape, block, slots: int,
          slots_t: int) -> BlockSparse:
  """wb: (Nb, Kb, bk, bn) all blocks, column-block major; bmask (Kb, Nb)."""
  nb, kb = wb.shape[:2]
  bmask = jnp.asarray(bmask)
  rows, counts = _sorted_ids(bmask.T, slots)
  valid = jnp.arange(slots)[None, :] < counts[:, None]
  vals = wb[jnp.arange(nb)[:, None], rows]  # (Nb, T, bk, bn)
  vals = jnp.where(valid[:, :, None, None], vals, jnp.zeros((), wb.dtype))
  t_cols, t_counts = _sorted_ids(bmask, slots_t)
  # Slot of block (i, j) in column j = number of kept blocks above row i.
  above = jnp.cumsum(bmask.astype(jnp.int32), axis=0) - 1  # (Kb, Nb)
  t_slots = jnp.take_along_axis(above, t_cols, axis=1)
  t_slots = jnp.clip(t_slots, 0, slots - 1)
  idt = index_dtype(max(kb, nb, slots, slots_t))
  return BlockSparse(
      values=vals, rows=rows.astype(idt), counts=counts.astype(idt),
      t_cols=t_cols.astype(idt), t_slots=t_slots.astype(idt),
      t_counts=t_counts.astype(idt), shape=tuple(shape), block=tuple(block))


@jax.jit
def _block_mask_of(w: BlockSparse) -> Array:
  kb, nb = w.grid
  valid = jnp.arange(w.slots)[None, :] < w.counts.astype(jnp.int32)[:, None]
  rows = w.rows.astype(jnp.int32)
  m = jnp.zeros((nb, kb), bool).at[jnp.arange(nb)[:, None], rows].max(valid)
  return m.T


@jax.jit
def _to_dense(w: BlockSparse) -> Array:
  kb, nb = w.grid
  bk, bn = w.block
  valid = jnp.arange(w.slots)[None, :] < w.counts.astype(jnp.int32)[:, None]
  vals = jnp.where(valid[:, :, None, None], w.values,
                   jnp.zeros((), w.values.dtype))
  dense = jnp.zeros((nb, kb, bk, bn), w.values.dtype)
  dense = dense.at[jnp.arange(nb)[:, None], w.rows.astype(jnp.int32)].add(
      vals)
  return dense.transpose(1, 2, 0, 3).reshape(w.shape)
