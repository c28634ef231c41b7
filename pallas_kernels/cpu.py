"""Plain-XLA block-sparse products (any backend; the default on CPU).

Each product is a `lax.fori_loop` over the stored blocks only (a dynamic
trip count, so padding slots of unbalanced masks cost nothing): for stored
block (i, j), slice the (M, bk) or (M, bn) panel it touches with
`dynamic_slice`, run one small dense matmul, and accumulate in place with
`dynamic_update_slice` into an f32 buffer. dx walks the blocks row-major
through the transposed metadata; dW writes each stored block once. Every
operand stays in its natural layout (no transposes of activations, no
gathers), and each (M x 128) @ (128 x 128) matmul is cache-friendly, so the
work per flop is at least that of one dense GEMM. (A `lax.scan` over column
blocks with a gather of their T row blocks was measured slower here, and
pays for padding slots.)
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from pallas_kernels.format import BlockSparse

Array = jax.Array


def _valid_first(counts: Array, slots: int) -> tuple[Array, Array, Array]:
  """(group, slot) of the valid entries of a (G, slots) table, first; nnz."""
  counts = counts.astype(jnp.int32)
  valid = (jnp.arange(slots)[None, :] < counts[:, None]).reshape(-1)
  order = jnp.argsort(~valid, stable=True).astype(jnp.int32)
  return order // slots, order % slots, jnp.sum(counts)


def stored_blocks(w: BlockSparse) -> tuple[Array, Array, Array, Array]:
  """(row, col, slot) of every stored block, column-major, and nnz.

  Arrays have the static length Nb * T; only the first `nnz` entries are
  stored blocks.
  """
  cols, slots, nnz = _valid_first(w.counts, w.slots)
  rows = w.rows.astype(jnp.int32)[cols, slots]
  return rows, cols, slots, nnz


def stored_blocks_t(w: BlockSparse) -> tuple[Array, Array, Array, Array]:
  """The same blocks in row-major order, from the transposed metadata."""
  rows, s, nnz = _valid_first(w.t_counts, w.slots_t)
  cols = w.t_cols.astype(jnp.int32)[rows, s]
  slots = w.t_slots.astype(jnp.int32)[rows, s]
  return rows, cols, slots, nnz


def _panel_matmul(a: Array, w: BlockSparse, transpose: bool) -> Array:
  """a @ W, or a @ Wᵀ walking the blocks row-major if `transpose`.

  Each stored block (i, j) multiplies one (M, bk) or (M, bn) panel of `a`
  and adds into the matching panel of an f32 (M, N) or (M, K) buffer.
  """
  a = jnp.asarray(a)
  m = a.shape[0]
  bk, bn = w.block
  dt = jnp.result_type(a.dtype, w.dtype)
  rows, cols, slots, nnz = (stored_blocks_t if transpose else stored_blocks)(w)
  (bi, bo), contract = ((bn, bk), 1) if transpose else ((bk, bn), 0)

  def body(b, acc):
    i, j, t = rows[b], cols[b], slots[b]
    pi, po = (j, i) if transpose else (i, j)
    src = lax.dynamic_slice_in_dim(a, pi * bi, bi, axis=1).astype(dt)
    blk = lax.dot_general(src, w.values[j, t].astype(dt),
                          (((1,), (contract,)), ((), ())),
                          preferred_element_type=jnp.float32)
    cur = lax.dynamic_slice_in_dim(acc, po * bo, bo, axis=1)
    return lax.dynamic_update_slice_in_dim(acc, cur + blk, po * bo, axis=1)

  n_out = w.shape[0] if transpose else w.shape[1]
  acc = lax.fori_loop(0, nnz, body, jnp.zeros((m, n_out), jnp.float32))
  return acc.astype(dt)


def matmul(x: Array, w: BlockSparse) -> Array:
  """y = x @ W for x (M, K); returns (M, N) in result_type(x, W)."""
  return _panel_matmul(x, w, transpose=False)


def matmul_t(dy: Array, w: BlockSparse) -> Array:
  """dx = dy @ Wᵀ for dy (M, N); returns (M, K).

  Walks the blocks row-major (transposed metadata), so consecutive updates
  hit the same (M, bk) panel of dx.
  """
  return _panel_matmul(dy, w, transpose=True)


def sdd(x: Array, dy: Array, w: BlockSparse) -> Array:
  """dW on the stored blocks: (xᵀ dy) sampled at W's slots, (Nb, T, bk, bn).

  Padding slots get 0.
  """
  x, dy = jnp.asarray(x), jnp.asarray(dy)
  bk, bn = w.block
  dt = jnp.result_type(x.dtype, dy.dtype)
  rows, cols, slots, nnz = stored_blocks(w)
  xt = x.T  # (K, M): row panels of xᵀ are contiguous

  def body(b, out):
    i, j, t = rows[b], cols[b], slots[b]
    xs = lax.dynamic_slice_in_dim(xt, i * bk, bk, axis=0).astype(dt)
    ds = lax.dynamic_slice_in_dim(dy, j * bn, bn, axis=1).astype(dt)
    blk = jnp.dot(xs, ds, preferred_element_type=jnp.float32)
    return out.at[j, t].set(blk.astype(out.dtype))

  return lax.fori_loop(0, nnz, body, jnp.zeros(w.values.shape, w.dtype))
