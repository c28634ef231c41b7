"""`block_sparse_matmul`: y = x @ W for a `BlockSparse` W, differentiable.

Dispatches on `jax.default_backend()` (or `backend=`): Pallas Mosaic
kernels on TPU, Pallas Triton kernels on GPU, the plain-XLA scan elsewhere.
The backward pass is a `jax.custom_vjp` (a raw `pallas_call` has no
transpose rule): dx = dy Wᵀ through the transposed metadata, dW only on the
stored blocks (an SDD product); the integer metadata gets no cotangent.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from pallas_kernels import cpu, gpu, tpu
from pallas_kernels.format import BlockSparse

Array = jax.Array

_IMPLS = {"xla": cpu, "tpu": tpu, "gpu": gpu}


def resolve_backend(backend: str | None = None) -> str:
  """Kernel family for a backend name: "tpu", "gpu" or "xla"."""
  name = (jax.default_backend() if backend is None else backend).lower()
  if name == "tpu":
    return "tpu"
  if name in ("gpu", "cuda", "rocm", "triton"):
    return "gpu"
  if name in ("cpu", "xla"):
    return "xla"
  raise ValueError(
      f"unknown backend {backend!r}; use 'tpu', 'gpu' ('cuda'), 'cpu' "
      "('xla') or None for jax.default_backend().")


class _Config(NamedTuple):
  kind: str
  shape: tuple[int, int]
  block: tuple[int, int]
  block_m: int | None
  interpret: Any  # bool, or e.g. pltpu.InterpretParams() (hashable)


def _kw(cfg: _Config) -> dict:
  if cfg.kind == "xla":
    return {}
  return dict(block_m=cfg.block_m, interpret=cfg.interpret)


def _rebuild(cfg: _Config, values: Array, meta: tuple) -> BlockSparse:
  return BlockSparse(values, *meta, shape=cfg.shape, block=cfg.block)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _bsmm(cfg: _Config, x: Array, values: Array, meta: tuple) -> Array:
  w = _rebuild(cfg, values, meta)
  return _IMPLS[cfg.kind].matmul(x, w, **_kw(cfg))


def _bsmm_fwd(cfg, x, values, meta):
  return _bsmm(cfg, x, values, meta), (x, values, meta)


def _bsmm_bwd(cfg, res, dy):
  x, values, meta = res
  w = _rebuild(cfg, values, meta)
  impl = _IMPLS[cfg.kind]
  dx = impl.matmul_t(dy, w, **_kw(cfg)).astype(x.dtype)
  dv = impl.sdd(x, dy, w, **_kw(cfg)).astype(values.dtype)
  return dx, dv, jax.tree.map(lambda _: None, meta)


_bsmm.defvjp(_bsmm_fwd, _bsmm_bwd)
# One compiled program per configuration when called eagerly.
_bsmm_jit = jax.jit(_bsmm, static_argnums=(0,))


def block_sparse_matmul(
    x: Array,
    w: BlockSparse,
    *,
    backend: str | None = None,
    block_m: int | None = None,
    interpret: Any = False,
) -> Array:
  """y = x @ W, skipping W's empty blocks, forward and backward.

  Args:
    x: (..., K) floating input.
    w: a `BlockSparse` K x N weight.
    backend: "tpu", "gpu" (Triton), "cpu"/"xla", or None for
      `jax.default_backend()`. A Pallas backend can run on CPU with
      `interpret=True` (tests) or be lowered for its platform.
    block_m: row tile of the Pallas kernels (default 512 TPU, 64 GPU).
    interpret: run the Pallas kernels in interpret mode (`True`, or
      `pltpu.InterpretParams()` for the TPU simulator).

  Returns:
    (..., N), dtype `result_type(x, w.values)`. Differentiable in `x` and
    `w.values`.
  """
  if not isinstance(w, BlockSparse):
    raise TypeError(f"w must be a BlockSparse, got {type(w).__name__}.")
  x = jnp.asarray(x)
  k, n = w.shape
  if x.ndim < 1 or x.shape[-1] != k:
    raise ValueError(
        f"x has shape {x.shape}; its last dimension must be K={k} for a "
        f"{k}x{n} weight.")
  if not jnp.issubdtype(x.dtype, jnp.floating):
    raise TypeError(f"x must be floating point, got dtype {x.dtype}.")
  dt = jnp.result_type(x.dtype, w.values.dtype)
  cfg = _Config(resolve_backend(backend), tuple(w.shape), tuple(w.block),
                block_m, interpret)
  lead = x.shape[:-1]
  x2 = x.reshape(-1, k).astype(dt)
  meta = (w.rows, w.counts, w.t_cols, w.t_slots, w.t_counts)
  y = _bsmm_jit(cfg, x2, w.values.astype(dt), meta)
  return y.reshape(*lead, n)
