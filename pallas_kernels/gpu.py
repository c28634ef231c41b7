"""Pallas GPU block-sparse kernels, lowered with Triton.

Scalar prefetch is TPU-only, so the block ids are ordinary (int32) kernel
inputs, read as scalars; each program runs a `fori_loop` over its column
block's count and loads the blocks it needs with `pl.ds`. The lowering is
chosen explicitly with `pltriton.CompilerParams` (a plain `pallas_call`
targets Mosaic GPU in recent JAX). Triton wants power-of-two tiles, so
bk and bn must be powers of two >= 16; large blocks are tiled inside the
kernel (tiles of at most `TILE_K` x `TILE_N`).

* `matmul`:   y = x W,   grid (M/bm, N/tn).
* `matmul_t`: dx = dy Wᵀ, grid (M/bm, K/tk), transposed metadata.
* `sdd`:      dW on stored blocks, grid (Nb * T, bk/tk * bn/tn).

References:
  Gray et al., "GPU Kernels for Block-Sparse Weights", OpenAI 2017;
  Gale et al., "MegaBlocks", MLSys 2023.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as pltriton

from pallas_kernels.format import BlockSparse

Array = jax.Array

DEFAULT_BLOCK_M = 64
TILE_K = 64
TILE_N = 128
NUM_WARPS = 4
NUM_STAGES = 2


def _is_pow2(x: int) -> bool:
  return x > 0 and (x & (x - 1)) == 0


def _round_up(x: int, m: int) -> int:
  return -(-x // m) * m


def _next_pow2(x: int) -> int:
  return 1 << max(0, (x - 1).bit_length())


def choose_block_m(m: int, block_m: int | None = None) -> int:
  bm = DEFAULT_BLOCK_M if block_m is None else int(block_m)
  return max(16, min(bm, _next_pow2(m)))


def check_blocks(block: tuple[int, int], bm: int) -> None:
  """Raises ValueError unless the tiles suit the Triton lowering."""
  bk, bn = block
  bad = [f"{name}={v}" for name, v in (("bk", bk), ("bn", bn), ("bm", bm))
         if not (_is_pow2(v) and v >= 16)]
  if bad:
    raise ValueError(
        f"block ({bk}, {bn}) with row tile {bm} is not supported by the "
        "Pallas Triton (GPU) kernels: bk, bn and the row tile must be powers "
        f"of two >= 16; offending: {', '.join(bad)}.")


def _pad_rows(x: Array, bm: int) -> Array:
  m = x.shape[0]
  mp = _round_up(m, bm)
  return x if mp == m else jnp.pad(x, ((0, mp - m), (0, 0)))


def _params():
  return pltriton.CompilerParams(num_warps=NUM_WARPS, num_stages=NUM_STAGES)


def _prologue(x: Array, w: BlockSparse,
              block_m: int | None) -> tuple[int, Array, int, Any]:
  """Row tile, checked blocks: (bm, x padded to bm rows, M/bm, dtype)."""
  bm = choose_block_m(x.shape[0], block_m)
  check_blocks(w.block, bm)
  xp = _pad_rows(x, bm)
  return bm, xp, xp.shape[0] // bm, jnp.result_type(x.dtype, w.dtype)


def _mac(acc: Array, a: Array, b: Array, contract: tuple, dt) -> Array:
  """acc + a·b over the `contract` dims of (a, b), in dtype dt, f32 out."""
  return acc + lax.dot_general(
      a.astype(dt), b.astype(dt), (contract, ((), ())),
      preferred_element_type=jnp.float32)


def _reduce(o_ref, trips, body: Callable[[Array, Array], Array]) -> None:
  """o = `trips` steps of `body(step, acc)` from a zero f32 accumulator."""
  acc = jnp.zeros(o_ref.shape, jnp.float32)
  acc = lax.fori_loop(0, trips, body, acc)
  o_ref[...] = acc.astype(o_ref.dtype)


def _slot_loop(o_ref, count, num_tiles: int,
               tiles: Callable[[Array], Callable[[Array], tuple]],
               contract: tuple, dt) -> None:
  """o = Σ over `count` slots and `num_tiles` tiles of the block products.

  `tiles(s)` reads slot s's block ids and returns `load(t) -> (a, b)`, the
  operand tiles of tile t.
  """

  def slot(s, acc):
    load = tiles(s)
    return lax.fori_loop(
        0, num_tiles, lambda t, acc: _mac(acc, *load(t), contract, dt), acc)

  _reduce(o_ref, count, slot)


# -- y = x @ W -----------------------------------------------------------------
def _mm_kernel(rows_ref, counts_ref, x_ref, v_ref, o_ref, *, bk, tk, sub,
               slots, dt):
  j = pl.program_id(1) // sub
  count = counts_ref[j]

  def tiles(s):
    r = rows_ref[j * slots + s]
    return lambda kk: (
        x_ref[:, pl.ds(pl.multiple_of(r * bk + kk * tk, tk), tk)],
        v_ref[s, pl.ds(pl.multiple_of(kk * tk, tk), tk), :])

  _slot_loop(o_ref, count, bk // tk, tiles, ((1,), (0,)), dt)


def matmul(x: Array, w: BlockSparse, *, block_m: int | None = None,
           interpret: Any = False) -> Array:
  """y = x @ W on GPU (Triton); x (M, K) -> (M, N) in x's dtype."""
  m, k = x.shape
  nb = w.grid[1]
  bk, bn = w.block
  t = w.slots
  bm, xp, mb, dt = _prologue(x, w, block_m)
  tk, tn = min(bk, TILE_K), min(bn, TILE_N)
  sub = bn // tn
  out = pl.pallas_call(
      functools.partial(_mm_kernel, bk=bk, tk=tk, sub=sub, slots=t, dt=dt),
      grid=(mb, nb * sub),
      in_specs=[
          pl.BlockSpec((nb * t,), lambda i, q: (0,)),
          pl.BlockSpec((nb,), lambda i, q: (0,)),
          pl.BlockSpec((bm, k), lambda i, q: (i, 0)),
          pl.BlockSpec((None, t, bk, tn),
                       lambda i, q: (q // sub, 0, 0, q % sub)),
      ],
      out_specs=pl.BlockSpec((bm, tn), lambda i, q: (i, q)),
      out_shape=jax.ShapeDtypeStruct((xp.shape[0], nb * bn), x.dtype),
      compiler_params=_params(),
      interpret=interpret,
      name="block_sparse_matmul",
  )(w.rows.astype(jnp.int32).reshape(-1), w.counts.astype(jnp.int32), xp,
    w.values)
  return out[:m]


# -- dx = dy @ Wᵀ --------------------------------------------------------------
def _mmt_kernel(cols_ref, slots_ref, counts_ref, dy_ref, v_ref, o_ref, *,
                bk, bn, tk, tn, slots_t, dt):
  q = pl.program_id(1)
  sub = bk // tk
  i, kk = q // sub, q % sub
  count = counts_ref[i]

  def tiles(s):
    c = cols_ref[i * slots_t + s]
    sl = slots_ref[i * slots_t + s]
    return lambda nn: (
        dy_ref[:, pl.ds(pl.multiple_of(c * bn + nn * tn, tn), tn)],
        v_ref[c, sl, pl.ds(pl.multiple_of(kk * tk, tk), tk),
              pl.ds(pl.multiple_of(nn * tn, tn), tn)])

  _slot_loop(o_ref, count, bn // tn, tiles, ((1,), (1,)), dt)


def matmul_t(dy: Array, w: BlockSparse, *, block_m: int | None = None,
             interpret: Any = False) -> Array:
  """dx = dy @ Wᵀ on GPU via the transposed metadata; (M, N) -> (M, K)."""
  m, n = dy.shape
  kb = w.grid[0]
  bk, bn = w.block
  tt = w.slots_t
  bm, dyp, mb, dt = _prologue(dy, w, block_m)
  tk, tn = min(bk, TILE_N), min(bn, TILE_K)
  out = pl.pallas_call(
      functools.partial(_mmt_kernel, bk=bk, bn=bn, tk=tk, tn=tn, slots_t=tt,
                        dt=dt),
      grid=(mb, kb * (bk // tk)),
      in_specs=[
          pl.BlockSpec((kb * tt,), lambda p, q: (0,)),
          pl.BlockSpec((kb * tt,), lambda p, q: (0,)),
          pl.BlockSpec((kb,), lambda p, q: (0,)),
          pl.BlockSpec((bm, n), lambda p, q: (p, 0)),
          pl.BlockSpec(w.values.shape, lambda p, q: (0, 0, 0, 0)),
      ],
      out_specs=pl.BlockSpec((bm, tk), lambda p, q: (p, q)),
      out_shape=jax.ShapeDtypeStruct((dyp.shape[0], kb * bk), dy.dtype),
      compiler_params=_params(),
      interpret=interpret,
      name="block_sparse_matmul_t",
  )(w.t_cols.astype(jnp.int32).reshape(-1),
    w.t_slots.astype(jnp.int32).reshape(-1),
    w.t_counts.astype(jnp.int32), dyp, w.values)
  return out[:m]


# -- dW = (xᵀ dy) on stored blocks ---------------------------------------------
def _sdd_kernel(rows_ref, counts_ref, x_ref, dy_ref, o_ref, *, bk, bn, bm,
                tk, tn, slots, num_m, dt):
  jt, q = pl.program_id(0), pl.program_id(1)
  j, t = jt // slots, jt % slots
  kk, nn = q // (bn // tn), q % (bn // tn)
  r = rows_ref[jt]
  trips = jnp.where(t < counts_ref[j], num_m, 0)

  def mtile(p, acc):
    rs = pl.ds(pl.multiple_of(p * bm, bm), bm)
    xb = x_ref[rs, pl.ds(pl.multiple_of(r * bk + kk * tk, tk), tk)]
    dyb = dy_ref[rs, pl.ds(pl.multiple_of(j * bn + nn * tn, tn), tn)]
    return _mac(acc, xb, dyb, ((0,), (0,)), dt)

  _reduce(o_ref, trips, mtile)


def sdd(x: Array, dy: Array, w: BlockSparse, *, block_m: int | None = None,
        interpret: Any = False) -> Array:
  """dW on W's stored blocks, (Nb, T, bk, bn); padding slots get 0."""
  k, n = x.shape[1], dy.shape[1]
  nb = w.grid[1]
  bk, bn = w.block
  t = w.slots
  bm, xp, _, _ = _prologue(x, w, block_m)
  tk, tn = min(bk, TILE_K), min(bn, TILE_K)
  dyp = _pad_rows(dy, bm)
  mp = xp.shape[0]
  dt = jnp.result_type(x.dtype, dy.dtype)
  subn = bn // tn
  out = pl.pallas_call(
      functools.partial(_sdd_kernel, bk=bk, bn=bn, bm=bm, tk=tk, tn=tn,
                        slots=t, num_m=mp // bm, dt=dt),
      grid=(nb * t, (bk // tk) * subn),
      in_specs=[
          pl.BlockSpec((nb * t,), lambda jt, q: (0,)),
          pl.BlockSpec((nb,), lambda jt, q: (0,)),
          pl.BlockSpec((mp, k), lambda jt, q: (0, 0)),
          pl.BlockSpec((mp, n), lambda jt, q: (0, 0)),
      ],
      out_specs=pl.BlockSpec(
          (None, None, tk, tn),
          lambda jt, q: (jt // t, jt % t, q // subn, q % subn)),
      out_shape=jax.ShapeDtypeStruct(w.values.shape, w.dtype),
      compiler_params=_params(),
      interpret=interpret,
      name="block_sparse_sdd",
  )(w.rows.astype(jnp.int32).reshape(-1), w.counts.astype(jnp.int32), xp,
    dyp)
  return out
