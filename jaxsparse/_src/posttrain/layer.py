"""Per-layer post-training pruning: magnitude, Wanda and SparseGPT.

Kernels are in Flax layout (in, out): PyTorch's W (out, in) is `kernel.T`,
so a "row" of the papers (one output neuron) is a kernel column.
Calibration inputs X are (tokens, in). Every method returns
`(new_kernel, mask)`: `mask` is bool of the kernel's shape (True = kept)
and the pruned entries of `new_kernel` are exactly 0.

Targets are exact. `sparsity=s` prunes round(s * n) = floor(s * n + 0.5)
of the n weights of each comparison group: the whole layer (magnitude,
SparseGPT) or one output (Wanda). `nm=(n, m)` follows
`jaxsparse.structures.n_m`: in every group of m consecutive inputs of one
output the n best-scoring weights are kept and m - n pruned (2:4 and 4:8
prune half). Ties: unstructured selections prune the earlier position
first (row-major in the kernel, as `jaxsparse.masks`); N:M groups keep the
lower index (as `jaxsparse.structures.n_m`).

References:
  Sun et al., "A Simple and Effective Pruning Approach for Large Language
  Models" (Wanda), arXiv 2306.11695, 2023.
  Frantar & Alistarh, "SparseGPT: Massive Language Models Can Be
  Accurately Pruned in One-Shot", ICML 2023.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxsparse._src.core import structures, threshold
from jaxsparse._src.core.schedules import check_sparsity

_HIGHEST = lax.Precision.HIGHEST
NM = tuple[int, int]


# --- Arguments. --------------------------------------------------------------


def prune_count(n: int, sparsity: float) -> int:
  """round(sparsity * n) with halves up, floor(s * n + 0.5), in [0, n]."""
  return min(int(n), max(0, math.floor(float(sparsity) * int(n) + 0.5)))


def check_kernel(kernel: jax.Array, name: str = "kernel") -> None:
  """Raises unless `kernel` is a floating 2-D (in, out) array."""
  shape = tuple(jnp.shape(kernel))
  if len(shape) != 2:
    raise ValueError(
        f"`{name}` must be a 2-D (in, out) kernel, got shape {shape}.")
  if not jnp.issubdtype(jnp.result_type(kernel), jnp.floating):
    raise TypeError(
        f"`{name}` must be floating, got dtype {jnp.result_type(kernel)}.")


def check_target(sparsity: float | None, nm: NM | None,
                 in_dim: int) -> tuple[float | None, NM | None]:
  """Validates `sparsity` xor `nm=(n, m)` for a kernel with `in_dim` inputs.

  `n` is the number of weights kept per group of `m` (as
  `jaxsparse.structures.n_m`).
  """
  if (sparsity is None) == (nm is None):
    raise ValueError("give exactly one of `sparsity` and `nm`, got "
                     f"sparsity={sparsity!r}, nm={nm!r}.")
  if sparsity is not None:
    return check_sparsity(sparsity), None
  try:
    n, m = nm
    ok = int(n) == n and int(m) == m
  except (TypeError, ValueError):
    ok = False
  if not ok:
    raise ValueError(f"`nm` must be a pair of integers (n, m), got {nm!r}.")
  n, m = int(n), int(m)
  if m < 1 or n < 0:
    raise ValueError(f"`nm`=({n}, {m}) needs m >= 1 and n >= 0.")
  if n > m:
    raise ValueError(
        f"`nm`=({n}, {m}): n (weights kept per group) must be <= m.")
  if in_dim % m:
    raise ValueError(
        f"`nm`=({n}, {m}): the kernel's input dimension {in_dim} is not "
        f"divisible by m={m}.")
  return None, (n, m)


def check_sparsegpt_args(blocksize: int, percdamp: float,
                         nm: NM | None) -> None:
  """Validates SparseGPT's `blocksize` and `percdamp`."""
  if isinstance(blocksize, bool) or int(blocksize) != blocksize \
      or blocksize < 1:
    raise ValueError(
        f"`blocksize` must be a positive integer, got {blocksize!r}.")
  if nm is not None and blocksize % nm[1]:
    raise ValueError(
        f"`blocksize`={blocksize} must be a multiple of m={nm[1]} for N:M "
        "(groups must not straddle blocks).")
  p = float(percdamp)
  if not (math.isfinite(p) and p >= 0.0):
    raise ValueError(f"`percdamp` must be finite and >= 0, got {percdamp!r}.")


# --- Selection (exact counts, no sort). -------------------------------------


def _keep_lowest_k_bisect(score: jax.Array, k: jax.Array,
                          per_column: bool) -> jax.Array:
  """Keep-mask pruning the k lowest of `score`, or of each of its columns.

  The k-th smallest order-preserving key (per column) is found bit by bit:
  32 counting passes, no sort, and a small program (it runs inside
  SparseGPT's loops). Ties at it are pruned in row-major (per column: row)
  order, as `jaxsparse.masks` does.
  """
  u = lax.bitcast_convert_type(threshold.sortable_key(score), jnp.uint32)
  u = u ^ jnp.uint32(0x80000000)  # int32 order -> uint32 order.
  k = jnp.asarray(k, jnp.int32)
  axis = 0 if per_column else None
  tshape = (u.shape[1],) if per_column else ()
  expand = (lambda t: t[None, :]) if per_column else (lambda t: t)

  def step(i, t):  # smallest t with #{u <= t} >= k.
    one = jnp.left_shift(jnp.uint32(1), (31 - i).astype(jnp.uint32))
    le = jnp.sum(u <= expand(t | (one - 1)), axis=axis, dtype=jnp.int32)
    return jnp.where(le >= k, t, t | one)

  t = expand(lax.fori_loop(0, 32, step, jnp.zeros(tshape, jnp.uint32)))
  below, tie = u < t, u == t
  take = k - jnp.sum(below, axis=axis, dtype=jnp.int32)
  if per_column:
    rank = jnp.cumsum(tie, axis=0, dtype=jnp.int32)
    take = take[None, :]
  else:
    rank = jnp.cumsum(tie.reshape(-1), dtype=jnp.int32).reshape(u.shape)
  return ~(below | (tie & (rank <= take)))


@functools.partial(jax.jit, static_argnames=("nm", "per_column"))
def _prune_by_score(kernel, x_norm, k, *, nm, per_column):
  """Magnitude (x_norm None) or Wanda scores, then the exact selection."""
  if x_norm is None:
    score = jnp.abs(kernel.astype(jnp.float32))
  else:
    score = wanda_score(kernel, x_norm)
  if nm is not None:
    keep = structures.n_m(*nm).select(score)
  elif per_column:
    keep = _keep_lowest_k_bisect(score, k, per_column=True)
  else:
    keep = _keep_lowest_k_bisect(score, k, per_column=False)
  return jnp.where(keep, kernel, jnp.zeros((), kernel.dtype)), keep


# --- Magnitude and Wanda. ----------------------------------------------------


def magnitude(kernel: jax.Array, *, sparsity: float | None = None,
              nm: NM | None = None) -> tuple[jax.Array, jax.Array]:
  """Prunes the lowest |W| of the layer (exactly round(s * n)) or per N:M.

  Returns:
    `(new_kernel, mask)`; kept weights are unchanged.
  """
  kernel = jnp.asarray(kernel)
  check_kernel(kernel)
  s, nm = check_target(sparsity, nm, kernel.shape[0])
  k = 0 if nm is not None else prune_count(kernel.size, s)
  return _prune_by_score(kernel, None, k, nm=nm, per_column=False)


def wanda_score(kernel: jax.Array, x_norm: jax.Array) -> jax.Array:
  """Wanda's score |W_ij| * ||X_j||_2 (Sun et al., 2023), float32."""
  return (jnp.abs(jnp.asarray(kernel, jnp.float32))
          * jnp.asarray(x_norm, jnp.float32)[:, None])


def _check_x_norm(x_norm: jax.Array, in_dim: int) -> None:
  if tuple(jnp.shape(x_norm)) != (in_dim,):
    raise ValueError(
        f"`x_norm` has shape {tuple(jnp.shape(x_norm))}; a kernel with "
        f"{in_dim} inputs needs ({in_dim},), one L2 norm per input feature.")


def wanda(kernel: jax.Array, x_norm: jax.Array, *,
          sparsity: float | None = None,
          nm: NM | None = None) -> tuple[jax.Array, jax.Array]:
  """Wanda (Sun et al., 2023): prunes by |W_ij| * ||X_j|| within outputs.

  Args:
    kernel: (in, out) kernel.
    x_norm: (in,) L2 norm of each input feature over the calibration
      tokens, `jnp.linalg.norm(x, axis=0)` for x (tokens, in).
    sparsity: exactly round(s * in) pruned in every output (kernel column).
    nm: `(n, m)`, n kept of every m consecutive inputs of each output.

  Returns:
    `(new_kernel, mask)`; kept weights are unchanged.
  """
  kernel = jnp.asarray(kernel)
  check_kernel(kernel)
  s, nm = check_target(sparsity, nm, kernel.shape[0])
  _check_x_norm(x_norm, kernel.shape[0])
  k = 0 if nm is not None else prune_count(kernel.shape[0], s)
  return _prune_by_score(kernel, jnp.asarray(x_norm), k, nm=nm,
                         per_column=True)


# --- SparseGPT. --------------------------------------------------------------


_GRAM_TILE = 512


def gram(x: jax.Array) -> jax.Array:
  """XᵀX (float32) of x (tokens, in), from the upper-triangle tiles.

  Tiles of about 512 inputs: about half the flops of one product, and on
  CPU over twice as fast (measured on 8192 x 4096).
  """
  x = x.astype(jnp.float32)
  d = x.shape[1]
  t = min(16, -(-d // _GRAM_TILE))
  prod = lambda a, b: lax.dot_general(a, b, (((0,), (0,)), ((), ())),
                                      precision=_HIGHEST)
  if t < 2:
    return prod(x, x)
  edges = [d * i // t for i in range(t + 1)]
  xs = [x[:, edges[i]:edges[i + 1]] for i in range(t)]
  tiles = {(i, j): prod(xs[i], xs[j]) for i in range(t) for j in range(i, t)}
  return jnp.concatenate([
      jnp.concatenate([tiles[i, j] if i <= j else tiles[j, i].T
                       for j in range(t)], axis=1)
      for i in range(t)], axis=0)


@jax.jit
def _accumulate_hessian(h, x):
  return h.astype(jnp.float32) + gram(x)


def accumulate_hessian(h: jax.Array, x: jax.Array) -> jax.Array:
  """h + XᵀX for one chunk x (..., in) of calibration inputs, in float32."""
  h, x = jnp.asarray(h), jnp.asarray(x)
  d = x.shape[-1] if x.ndim else 0
  if h.shape != (d, d):
    raise ValueError(
        f"`h` has shape {h.shape} but `x` has {d} input features: expected "
        f"({d}, {d}).")
  return _accumulate_hessian(h, x.reshape(-1, d))


def hessian(x_chunks: jax.Array | np.ndarray | Iterable[jax.Array],
            chunk_size: int = 8192) -> jax.Array:
  """H = XᵀX in float32 over calibration inputs X (tokens, in).

  Args:
    x_chunks: one array (..., in), summed `chunk_size` tokens at a time, or
      an iterable of such arrays (chunks of X).
    chunk_size: tokens per chunk for a single array.
  """
  if isinstance(x_chunks, (jax.Array, np.ndarray)):
    flat = x_chunks.reshape(-1, x_chunks.shape[-1])
    x_chunks = (flat[i:i + chunk_size]
                for i in range(0, flat.shape[0], chunk_size))
  h = None
  for x in x_chunks:
    if h is None:
      d = jnp.shape(x)[-1]
      h = jnp.zeros((d, d), jnp.float32)
    h = accumulate_hessian(h, x)
  if h is None:
    raise ValueError("`x_chunks` is empty.")
  return h


def _inverse_cholesky_upper(h: jax.Array) -> jax.Array:
  """Upper U with UᵀU = H⁻¹ (SparseGPT's Hinv) from one Cholesky.

  With J the reversal, J H J = L Lᵀ gives H⁻¹ = Uᵀ U for the upper
  triangular U = J L⁻¹ J: the factor `cholesky(inv(H), upper=True)`.
  """
  eye = jnp.eye(h.shape[0], dtype=h.dtype)
  low = jnp.linalg.cholesky(h[::-1, ::-1])
  inv = jax.scipy.linalg.solve_triangular(low, eye, lower=True)
  return inv[::-1, ::-1]


def block_counts(n_in: int, n_out: int, blocksize: int,
                 sparsity: float) -> list[int]:
  """Prune counts of SparseGPT's column blocks: cumulative rounding.

  Block b (inputs [i1, i2)) prunes round(s * i2 * out) - round(s * i1 * out)
  weights, so every block gets its share and the layer exactly
  round(s * in * out).
  """
  ends = list(range(blocksize, n_in, blocksize)) + [n_in]
  cum = [0] + [prune_count(e * n_out, sparsity) for e in ends]
  return [b - a for a, b in zip(cum[:-1], cum[1:], strict=True)]


@functools.partial(jax.jit, static_argnames=("nm", "blocksize"))
def _sparsegpt(kernel, h, ks, percdamp, *, nm, blocksize):
  n_in, n_out = kernel.shape
  w = kernel.astype(jnp.float32)
  h = h.astype(jnp.float32)
  idx = jnp.arange(n_in)
  diag = jnp.diagonal(h)
  dead = diag == 0  # inputs never active: H_ii = 1 and their weights 0.
  diag = jnp.where(dead, 1.0, diag)
  diag = diag + percdamp * jnp.mean(diag)
  h = h.at[idx, idx].set(diag)
  w = jnp.where(dead[:, None], 0.0, w)
  u = _inverse_cholesky_upper(h)

  def column(u1, i, carry):
    """Prunes input i of the block, spreads its error on the later ones."""
    w1, q1, e1, keep1 = carry
    wi = lax.dynamic_index_in_dim(w1, i, keepdims=False)
    ki = lax.dynamic_index_in_dim(keep1, i, keepdims=False)
    ui = lax.dynamic_index_in_dim(u1, i, keepdims=False)  # 0 left of i.
    qi = jnp.where(ki, wi, 0.0)
    ei = (wi - qi) / ui[i]
    w1 = w1 - ui[:, None] * ei[None, :]
    q1 = lax.dynamic_update_index_in_dim(q1, qi, i, 0)
    e1 = lax.dynamic_update_index_in_dim(e1, ei, i, 0)
    return w1, q1, e1, keep1

  def block(i1, width, w, keep, k):
    w1 = lax.dynamic_slice(w, (i1, 0), (width, n_out))
    u1 = lax.dynamic_slice(u, (i1, i1), (width, width))
    d1 = jnp.diagonal(u1)
    zero = jnp.zeros_like(w1)
    col = functools.partial(column, u1)
    if nm is None:  # the block's k lowest w² / [H⁻¹]_jj², chosen up front.
      keep1 = _keep_lowest_k_bisect(w1 ** 2 / d1[:, None] ** 2, k, False)
      _, q1, e1, keep1 = lax.fori_loop(0, width, col, (w1, zero, zero, keep1))
    else:  # each N:M group chosen on the weights updated so far.
      n, m = nm
      select = structures.n_m(n, m).select

      def group(g, carry):
        w1, q1, e1, keep1 = carry
        i = g * m
        wg = lax.dynamic_slice_in_dim(w1, i, m, 0)
        dg = lax.dynamic_slice_in_dim(d1, i, m, 0)
        keep1 = lax.dynamic_update_slice_in_dim(
            keep1, select(wg ** 2 / dg[:, None] ** 2), i, 0)
        return lax.fori_loop(i, i + m, col, (w1, q1, e1, keep1))

      keep1 = jnp.ones((width, n_out), jnp.bool_)
      _, q1, e1, keep1 = lax.fori_loop(0, width // m, group,
                                       (w1, zero, zero, keep1))
    w = lax.dynamic_update_slice(w, q1, (i1, 0))
    keep = lax.dynamic_update_slice(keep, keep1, (i1, 0))
    return w, keep, e1

  ut = u.T  # lower: ut[r, i] = Hinv[i, r], so updates are plain matmuls.

  def dot(a, b):
    return jnp.matmul(a, b, precision=_HIGHEST)

  def full_block(r0, r1, b, carry):
    w, keep, es = carry
    i1 = b * blocksize
    w, keep, e1 = block(i1, blocksize, w, keep, ks[b])
    # Lazy batch update, W[i2:] -= Hinv[i1:i2, i2:]ᵀ E, within the static
    # segment rows [r0, r1) (those < i2 masked out); the segment's errors
    # update the later rows at its end.
    ub = lax.dynamic_slice(ut, (r0, i1), (r1 - r0, blocksize))
    ub = jnp.where(idx[r0:r1, None] >= i1 + blocksize, ub, 0.0)
    w = w.at[r0:r1].add(-dot(ub, e1))
    es = lax.dynamic_update_slice(es, e1, (i1 - r0, 0))
    return w, keep, es

  num, tail = divmod(n_in, blocksize)
  keep = jnp.ones((n_in, n_out), jnp.bool_)
  # Two levels of lazy updates: blocks update their segment (about 8
  # blocks), segments update the rest with one larger matmul. Only the
  # upper triangle of Hinv is multiplied, up to the segments' diagonals.
  segments = max(1, num // 8)
  for j in range(segments):
    b0, b1 = num * j // segments, num * (j + 1) // segments
    r0, r1 = b0 * blocksize, b1 * blocksize
    es = jnp.zeros((r1 - r0, n_out), jnp.float32)
    w, keep, es = lax.fori_loop(
        b0, b1, functools.partial(full_block, r0, r1), (w, keep, es))
    if r1 < n_in:
      w = w.at[r1:].add(-dot(ut[r1:, r0:r1], es))
  if tail:
    w, keep, _ = block(num * blocksize, tail, w, keep, ks[num])
  w = jnp.where(keep, w, 0.0)
  return w.astype(kernel.dtype), keep


def sparsegpt(kernel: jax.Array, hessian: jax.Array, *,
              sparsity: float | None = None, nm: NM | None = None,
              blocksize: int = 128,
              percdamp: float = 0.01) -> tuple[jax.Array, jax.Array]:
  """SparseGPT (Frantar & Alistarh, 2023): OBS pruning with weight updates.

  Follows the authors' `fasterprune`: dead inputs (H_jj = 0) get H_jj = 1
  and zero weights; λ = percdamp · mean(diag H) is added to the diagonal;
  U = Cholesky(H⁻¹) (upper); inputs are processed in blocks of `blocksize`
  with lazy batch updates; each pruned weight's error is spread on the
  later inputs, so kept weights change. Selection is by w² / [H⁻¹]_jj².

  Exact counts (the reference takes a sort quantile per block, which is
  only about the target): unstructured, block b prunes exactly
  `block_counts(...)[b]`, its lowest-scoring entries over all outputs and
  the block's inputs, so every block holds its share and the layer exactly
  round(s · in · out) zeros; per-output counts vary, as in the reference.
  N:M: each group of m inputs of an output keeps exactly n, chosen when the
  group is reached (on the weights updated so far, as the reference).

  Args:
    kernel: (in, out) kernel.
    hessian: (in, in) H = XᵀX of the calibration inputs (any positive
      scale: the result does not depend on it), e.g. `hessian(x)`.
    sparsity: fraction pruned of the layer.
    nm: `(n, m)`: n kept of every m consecutive inputs of each output.
    blocksize: inputs per lazy-update block (a multiple of m for N:M).
    percdamp: dampening as a fraction of the mean diagonal.

  Returns:
    `(new_kernel, mask)`.
  """
  kernel = jnp.asarray(kernel)
  check_kernel(kernel)
  n_in, n_out = kernel.shape
  s, nm = check_target(sparsity, nm, n_in)
  h = jnp.asarray(hessian)
  if h.shape != (n_in, n_in):
    raise ValueError(
        f"`hessian` has shape {h.shape}; a kernel with {n_in} inputs needs "
        f"({n_in}, {n_in}).")
  check_sparsegpt_args(blocksize, percdamp, nm)
  blocksize = min(int(blocksize), n_in)
  ks = (block_counts(n_in, n_out, blocksize, s) if nm is None
        else [0] * -(-n_in // blocksize))
  return _sparsegpt(kernel, h, jnp.asarray(ks, jnp.int32),
                    jnp.float32(percdamp), nm=nm, blocksize=blocksize)


# --- Checks. -----------------------------------------------------------------


def counts_exact(mask: jax.Array | np.ndarray, *,
                 sparsity: float | None = None, nm: NM | None = None,
                 per_column: bool = False) -> bool:
  """Whether a kernel mask has exactly its target's zeros.

  round(s · n) for the layer, or round(s · in) in every column with
  `per_column`, or m - n in every N:M group along the inputs (axis 0).
  """
  mask = np.asarray(mask, bool)
  pruned = ~mask
  if nm is not None:
    n, m = nm
    groups = pruned.reshape(mask.shape[0] // m, m, -1).sum(axis=1)
    return bool(np.all(groups == m - n))
  if per_column:
    want = prune_count(mask.shape[0], sparsity)
    return bool(np.all(pruned.sum(axis=0) == want))
  return int(pruned.sum()) == prune_count(mask.size, sparsity)
