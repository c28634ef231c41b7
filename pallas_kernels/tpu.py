"""Pallas TPU (Mosaic) block-sparse kernels.

The block ids go to SMEM as scalar prefetch (`pltpu.PrefetchScalarGridSpec`)
and drive the BlockSpec index maps, so each grid step DMAs exactly the
blocks it multiplies. The slot axis T is the innermost ("arbitrary") grid
axis; an f32 VMEM accumulator stays resident over it and `pl.when` skips the
MXU work on padding slots. Padding slots repeat the last valid block index,
so the pipeline sees an unchanged index and skips their copies.

* `matmul`:   y = x W,   grid (M/bm, Nb, T).
* `matmul_t`: dx = dy Wᵀ, grid (M/bm, Kb, Tt), transposed metadata.
* `sdd`:      dW on stored blocks, grid (Nb, T, M/bm), reduction over M.

Blocks must satisfy the TPU rule (last two block dims divisible by 8 and
128, or equal to the array dims); `check_blocks` raises a clear error
before Mosaic does.

References:
  The Pallas TPU block-sparse matmul example (JAX docs, "Scalar Prefetch and
  Block-Sparse Computation"); Gale et al., "MegaBlocks", MLSys 2023.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl
from jax.experimental.pallas import tpu as pltpu

from pallas_kernels.format import BlockSparse

Array = jax.Array

DEFAULT_BLOCK_M = 512


def _round_up(x: int, m: int) -> int:
  return -(-x // m) * m


def _sublane(dtype) -> int:
  return 8 * max(1, 4 // jnp.dtype(dtype).itemsize)


def choose_block_m(m: int, dtype, block_m: int | None = None) -> int:
  """Row tile: `block_m` (default 512) or M rounded up to the sublane tile."""
  bm = DEFAULT_BLOCK_M if block_m is None else int(block_m)
  return min(bm, _round_up(m, _sublane(dtype)))


def check_blocks(shape: tuple[int, int], block: tuple[int, int],
                 bm: int) -> None:
  """Raises ValueError unless all TPU blocks satisfy the (8, 128) rule.

  The kernels use blocks x (bm, bk), W (bk, bn), y (bm, bn), dx (bm, bk):
  bk and bn sit in the lane (last) dimension, so they must be multiples of
  128 (or the whole K / N); bm must be a multiple of 8.
  """
  k, n = shape
  bk, bn = block
  bad = []
  if bk % 128 and bk != k:
    bad.append(f"bk={bk} (K={k})")
  if bn % 128 and bn != n:
    bad.append(f"bn={bn} (N={n})")
  if bm % 8:
    bad.append(f"bm={bm}")
  if bad:
    raise ValueError(
        f"block ({bk}, {bn}) with row tile {bm} breaks the TPU block rule: "
        "bk and bn must be multiples of 128 (or equal K / N) and the row "
        f"tile a multiple of 8; offending: {', '.join(bad)}. Use e.g. "
        "jaxsparse.structures.block(128, 128) or larger.")


def _pad_rows(x: Array, bm: int) -> Array:
  m = x.shape[0]
  mp = _round_up(m, bm)
  return x if mp == m else jnp.pad(x, ((0, mp - m), (0, 0)))


def _params(semantics):
  return pltpu.CompilerParams(dimension_semantics=semantics)


def _prologue(x: Array, w: BlockSparse,
              block_m: int | None) -> tuple[int, Array, int, Any]:
  """Row tile, checked blocks: (bm, x padded to bm rows, M/bm, dtype)."""
  bm = choose_block_m(x.shape[0], x.dtype, block_m)
  check_blocks(w.shape, w.block, bm)
  xp = _pad_rows(x, bm)
  return bm, xp, xp.shape[0] // bm, jnp.result_type(x.dtype, w.dtype)


def _accumulate(step, active: Callable[[], Array], acc_ref, o_ref,
                add: Callable[[], None]) -> None:
  """Reduction over grid axis 2 (`step`) in the f32 scratch `acc_ref`.

  Zeroes it at step 0, runs `add()` (acc_ref += this step's product) where
  `active()` holds, so padding slots skip the MXU, and stores it to `o_ref`
  at the last step.
  """

  @pl.when(step == 0)
  def _init():
    acc_ref[...] = jnp.zeros_like(acc_ref)

  pl.when(active())(add)

  @pl.when(step == pl.num_programs(2) - 1)
  def _store():
    o_ref[...] = acc_ref[...].astype(o_ref.dtype)


# -- y = x @ W -----------------------------------------------------------------
def _mm_kernel(rows_ref, counts_ref, x_ref, v_ref, o_ref, acc_ref, *, dt):
  del rows_ref
  j, t = pl.program_id(1), pl.program_id(2)

  def add():
    acc_ref[...] += jnp.dot(x_ref[...].astype(dt), v_ref[...].astype(dt),
                            preferred_element_type=jnp.float32)

  _accumulate(t, lambda: t < counts_ref[j], acc_ref, o_ref, add)


def matmul(x: Array, w: BlockSparse, *, block_m: int | None = None,
           interpret: Any = False) -> Array:
  """y = x @ W on TPU; x (M, K) -> (M, N) in x's dtype."""
  m = x.shape[0]
  nb = w.grid[1]
  bk, bn = w.block
  t = w.slots
  bm, xp, mb, dt = _prologue(x, w, block_m)
  rows = w.rows.astype(jnp.int32).reshape(-1)
  counts = w.counts.astype(jnp.int32)

  def x_map(i, j, s, rows, counts):
    del counts
    return i, rows[j * t + s]

  def v_map(i, j, s, rows, counts):
    del i, rows
    return j, jnp.minimum(s, jnp.maximum(counts[j] - 1, 0)), 0, 0

  grid_spec = pltpu.PrefetchScalarGridSpec(
      num_scalar_prefetch=2,
      grid=(mb, nb, t),
      in_specs=[pl.BlockSpec((bm, bk), x_map),
                pl.BlockSpec((None, None, bk, bn), v_map)],
      out_specs=pl.BlockSpec((bm, bn), lambda i, j, s, rows, counts: (i, j)),
      scratch_shapes=[pltpu.VMEM((bm, bn), jnp.float32)],
  )
  out = pl.pallas_call(
      functools.partial(_mm_kernel, dt=dt),
      grid_spec=grid_spec,
      out_shape=jax.ShapeDtypeStruct((xp.shape[0], nb * bn), x.dtype),
      compiler_params=_params(("parallel", "parallel", "arbitrary")),
      interpret=interpret,
      name="block_sparse_matmul",
  )(rows, counts, xp, w.values)
  return out[:m]


# -- dx = dy @ Wᵀ --------------------------------------------------------------
def _mmt_kernel(cols_ref, slots_ref, counts_ref, dy_ref, v_ref, o_ref,
                acc_ref, *, dt):
  del cols_ref, slots_ref
  i, s = pl.program_id(1), pl.program_id(2)

  def add():
    acc_ref[...] += lax.dot_general(
        dy_ref[...].astype(dt), v_ref[...].astype(dt),
        (((1,), (1,)), ((), ())), preferred_element_type=jnp.float32)

  _accumulate(s, lambda: s < counts_ref[i], acc_ref, o_ref, add)


def matmul_t(dy: Array, w: BlockSparse, *, block_m: int | None = None,
             interpret: Any = False) -> Array:
  """dx = dy @ Wᵀ on TPU via the transposed metadata; (M, N) -> (M, K)."""
  m = dy.shape[0]
  kb = w.grid[0]
  bk, bn = w.block
  tt = w.slots_t
  bm, dyp, mb, dt = _prologue(dy, w, block_m)
  cols = w.t_cols.astype(jnp.int32).reshape(-1)
  slots = w.t_slots.astype(jnp.int32).reshape(-1)
  counts = w.t_counts.astype(jnp.int32)

  def dy_map(p, i, s, cols, slots, counts):
    del slots, counts
    return p, cols[i * tt + s]

  def v_map(p, i, s, cols, slots, counts):
    del p, counts
    return cols[i * tt + s], slots[i * tt + s], 0, 0

  grid_spec = pltpu.PrefetchScalarGridSpec(
      num_scalar_prefetch=3,
      grid=(mb, kb, tt),
      in_specs=[pl.BlockSpec((bm, bn), dy_map),
                pl.BlockSpec((None, None, bk, bn), v_map)],
      out_specs=pl.BlockSpec((bm, bk), lambda p, i, s, *_: (p, i)),
      scratch_shapes=[pltpu.VMEM((bm, bk), jnp.float32)],
  )
  out = pl.pallas_call(
      functools.partial(_mmt_kernel, dt=dt),
      grid_spec=grid_spec,
      out_shape=jax.ShapeDtypeStruct((dyp.shape[0], kb * bk), dy.dtype),
      compiler_params=_params(("parallel", "parallel", "arbitrary")),
      interpret=interpret,
      name="block_sparse_matmul_t",
  )(cols, slots, counts, dyp, w.values)
  return out[:m]


# -- dW = (xᵀ dy) on stored blocks ---------------------------------------------
def _sdd_kernel(rows_ref, counts_ref, x_ref, dy_ref, o_ref, acc_ref, *, dt):
  del rows_ref
  j, t, p = pl.program_id(0), pl.program_id(1), pl.program_id(2)

  def add():
    # (bm, bk)ᵀ (bm, bn): transpose in f32 (as the Pallas TPU grouped
    # matmul does), then an ordinary MXU matmul.
    xt = x_ref[...].astype(jnp.float32).swapaxes(0, 1).astype(dt)
    acc_ref[...] += jnp.dot(xt, dy_ref[...].astype(dt),
                            preferred_element_type=jnp.float32)

  _accumulate(p, lambda: t < counts_ref[j], acc_ref, o_ref, add)


def sdd(x: Array, dy: Array, w: BlockSparse, *, block_m: int | None = None,
        interpret: Any = False) -> Array:
  """dW on W's stored blocks, (Nb, T, bk, bn); padding slots get 0."""
  m = x.shape[0]
  nb = w.grid[1]
  bk, bn = w.block
  t = w.slots
  dt = jnp.result_type(x.dtype, dy.dtype)
  if block_m is None:
    # The x tile is transposed in the kernel: keep M tiles lane-aligned.
    bm = min(DEFAULT_BLOCK_M, _round_up(m, 128))
  else:
    bm = choose_block_m(m, dt, block_m)
  check_blocks(w.shape, w.block, bm)
  xp, dyp = _pad_rows(x, bm), _pad_rows(dy, bm)
  mb = xp.shape[0] // bm
  rows = w.rows.astype(jnp.int32).reshape(-1)
  counts = w.counts.astype(jnp.int32)

  def m_of(j, s, p, counts):
    # Padding slots keep the previous step's block indices: no DMA.
    return jnp.where(s < counts[j], p, mb - 1)

  def x_map(j, s, p, rows, counts):
    return m_of(j, s, p, counts), rows[j * t + s]

  def dy_map(j, s, p, rows, counts):
    del rows
    return m_of(j, s, p, counts), j

  grid_spec = pltpu.PrefetchScalarGridSpec(
      num_scalar_prefetch=2,
      grid=(nb, t, mb),
      in_specs=[pl.BlockSpec((bm, bk), x_map),
                pl.BlockSpec((bm, bn), dy_map)],
      out_specs=pl.BlockSpec((None, None, bk, bn),
                             lambda j, s, p, *_: (j, s, 0, 0)),
      scratch_shapes=[pltpu.VMEM((bk, bn), jnp.float32)],
  )
  return pl.pallas_call(
      functools.partial(_sdd_kernel, dt=dt),
      grid_spec=grid_spec,
      out_shape=jax.ShapeDtypeStruct(w.values.shape, w.dtype),
      compiler_params=_params(("parallel", "parallel", "arbitrary")),
      interpret=interpret,
      name="block_sparse_sdd",
  )(rows, counts, xp, dyp)
