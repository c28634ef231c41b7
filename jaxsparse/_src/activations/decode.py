"""Batch-1 decoding with sparse activations: read only the active rows.

At batch 1 a linear layer `y = x @ W` (W stored (in, out), as `nnx.Linear`)
is a matrix-vector product bound by reading W. If only some entries of x
are non-zero (after `induce.threshold`), only their rows of W matter:
`y = sum_i x[i] W[i, :]` over the active i. `sparse_matvec` does exactly
that and reads nothing else:

* on CPU (`backend="xla"`): the active indices in ascending order
  (`jnp.nonzero`), then a loop over them that adds `x[i] * W[i]` (a
  gathered row, contiguous in memory) to the output, 8 rows per iteration
  and as many iterations as there are active entries (a `while` loop, so
  the work follows the data at a fixed compiled shape);
* on TPU (`backend="pallas"`): a Pallas kernel whose BlockSpec index maps
  read the active row ids from scalar prefetch (SMEM), so each grid step
  DMAs only active rows of W into VMEM; steps past the active count skip
  their work, and their (repeated) row index skips the copy. Tested with
  `interpret=True` and lowered for TPU on CPU; not timed on hardware.

`mlp_decode` runs a SwiGLU MLP block (`jaxsparse.lm`'s, via `pack_mlp`) at
batch 1 with TEAL thresholds on its two inputs.

References:
  Liu et al., 2024, Training-free activation sparsity in large language
  models (TEAL), Sec. 4 (a sparse GEMV that loads only the weight rows of
  active inputs, W stored with inputs as the major axis).
  Lee et al., 2024, CATS (the same idea for the down projection).
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl
from jax.experimental.pallas import tpu as pltpu

from jaxsparse._src.activations import induce

Array = jax.Array

_UNROLL = 8


class ActiveEntries(NamedTuple):
  """The active (non-zero) entries of a vector, padded to a fixed size."""

  index: Array  # (capacity,) int32, ascending; padding repeats the last.
  value: Array  # (capacity,) x's dtype; padding is 0.
  count: Array  # shape=(), int32: number of active entries (<= capacity).


def _check_vector(x: Array, w: Array) -> None:
  if x.ndim != 1:
    raise ValueError(f"x must be one vector (K,) (batch-1 decoding), got "
                     f"shape {x.shape}.")
  if w.ndim != 2 or w.shape[0] != x.shape[0]:
    raise ValueError(f"w must be (K, N) with K = x.shape[0] = {x.shape[0]}, "
                     f"got shape {w.shape}.")


def active_entries(x: Array, capacity: int | None = None) -> ActiveEntries:
  """Indices and values of the non-zero entries of `x` (K,), in order.

  `capacity` (default K, exact) fixes the output size; with fewer slots
  than active entries the excess (highest indices) is dropped.
  """
  k = x.shape[0]
  cap = k if capacity is None else int(capacity)
  if not 1 <= cap <= k:
    raise ValueError(f"capacity must be in [1, {k}] (the length of x), got "
                     f"{capacity!r}.")
  nz = x != 0
  count = jnp.minimum(jnp.sum(nz, dtype=jnp.int32), cap)
  idx = jnp.nonzero(nz, size=cap, fill_value=0)[0].astype(jnp.int32)
  slot = jnp.arange(cap)
  last = idx[jnp.maximum(count - 1, 0)]
  idx = jnp.where(slot < count, idx, last)
  val = jnp.where(slot < count, x[idx], jnp.zeros((), x.dtype))
  return ActiveEntries(idx, val, count)


def _rows_matvec(act: ActiveEntries, w: Array) -> Array:
  """sum_i act.value[i] * w[act.index[i]] over the active slots (XLA)."""
  cap = act.index.shape[0]
  pad = -cap % _UNROLL
  idx = jnp.pad(act.index, (0, pad), mode="edge")
  val = jnp.pad(act.value, (0, pad))
  acc_t = jnp.promote_types(w.dtype, jnp.float32)

  def body(i, acc):
    for j in range(_UNROLL):
      s = i * _UNROLL + j
      row = jax.lax.dynamic_index_in_dim(w, idx[s], 0, keepdims=False)
      acc = acc + val[s].astype(acc_t) * row.astype(acc_t)
    return acc

  steps = (act.count + _UNROLL - 1) // _UNROLL
  out = jax.lax.fori_loop(0, steps, body, jnp.zeros((w.shape[1],), acc_t))
  return out.astype(jnp.result_type(act.value.dtype, w.dtype))


def sparse_matvec(x: Array, w: Array, t: float | Array | None = None, *,
                  backend: str = "xla", capacity: int | None = None,
                  block_n: int = 512, interpret: Any = False) -> Array:
  """`threshold(x, t) @ w`, reading only the rows of w of active entries.

  Args:
    x: (K,) input of one token.
    w: (K, N) kernel, stored (in, out) as in `nnx.Linear`.
    t: magnitude threshold (`induce.threshold`); None: x as it is, its
      zeros being the inactive entries.
    backend: "xla" (the gather loop; CPU, any platform) or "pallas" (the
      TPU kernel; `interpret=True` runs it on CPU).
    capacity: slots for active entries (default K: exact). Fewer slots
      bound the work; entries past them are dropped.
    block_n: output columns per Pallas block (a multiple of 128, or N).
    interpret: passed to `pl.pallas_call` (pallas backend).

  Returns:
    (N,) in the result dtype of x and w.
  """
  _check_vector(x, w)
  if t is not None:
    x = induce.threshold(x, t)
  act = active_entries(x, capacity)
  if backend == "xla":
    return _rows_matvec(act, w)
  if backend == "pallas":
    return pallas_rows_matvec(act, w, block_n=block_n, interpret=interpret)
  raise ValueError(f"backend must be 'xla' or 'pallas', got {backend!r}.")


# ------------------------------------------------------------- Pallas TPU
def _rows_kernel(idx_ref, cnt_ref, *refs, g: int):
  del idx_ref
  val_refs, w_refs = refs[:g], refs[g:2 * g]
  o_ref, acc_ref = refs[2 * g], refs[2 * g + 1]
  t = pl.program_id(1)

  @pl.when(t == 0)
  def _init():
    acc_ref[...] = jnp.zeros_like(acc_ref)

  @pl.when(t * g < cnt_ref[0])
  def _add():
    acc = acc_ref[...]
    for v_ref, r_ref in zip(val_refs, w_refs, strict=True):
      acc += v_ref[...].astype(jnp.float32) * r_ref[...].astype(jnp.float32)
    acc_ref[...] = acc

  @pl.when(t == pl.num_programs(1) - 1)
  def _store():
    o_ref[...] = acc_ref[...].astype(o_ref.dtype)


def pallas_rows_matvec(act: ActiveEntries, w: Array, *, block_n: int = 512,
                       rows_per_step: int = 8, interpret: Any = False
                       ) -> Array:
  """The Pallas TPU kernel of `sparse_matvec` on `ActiveEntries`.

  Grid (N / block_n, capacity / rows_per_step); step (j, t) DMAs the rows
  `act.index[t*g : (t+1)*g]` of column block j (W viewed as (K, 1, N), so
  each row block (1, block_n) meets the TPU (8, 128) rule) and adds
  `value * row` to an f32 VMEM accumulator.
  """
  k, n = w.shape
  bn = min(int(block_n), n)
  if n % bn or (bn % 128 and bn != n):
    raise ValueError(f"block_n={block_n} must divide N={n} and be a multiple "
                     "of 128 (TPU lane rule), or equal N.")
  g = int(rows_per_step)
  if g < 1:
    raise ValueError(f"rows_per_step must be >= 1, got {rows_per_step}.")
  cap = act.index.shape[0]
  pad = -cap % g
  idx = jnp.pad(act.index, (0, pad), mode="edge")
  val = jnp.pad(act.value, (0, pad)).reshape(-1, 1, 1)
  steps = idx.shape[0] // g
  w3 = w.reshape(k, 1, n)
  out_dtype = jnp.result_type(act.value.dtype, w.dtype)

  def val_map(r):
    return lambda j, t, idx_ref, cnt_ref: (t * g + r, 0, 0)

  def w_map(r):
    return lambda j, t, idx_ref, cnt_ref: (idx_ref[t * g + r], 0, j)

  grid_spec = pltpu.PrefetchScalarGridSpec(
      num_scalar_prefetch=2,
      grid=(n // bn, steps),
      in_specs=([pl.BlockSpec((None, 1, 1), val_map(r)) for r in range(g)]
                + [pl.BlockSpec((None, 1, bn), w_map(r)) for r in range(g)]),
      out_specs=pl.BlockSpec((1, bn), lambda j, t, idx_ref, cnt_ref: (0, j)),
      scratch_shapes=[pltpu.VMEM((1, bn), jnp.float32)],
  )
  out = pl.pallas_call(
      functools.partial(_rows_kernel, g=g),
      grid_spec=grid_spec,
      out_shape=jax.ShapeDtypeStruct((1, n), out_dtype),
      compiler_params=pltpu.CompilerParams(
          dimension_semantics=("parallel", "arbitrary")),
      interpret=interpret,
  )(idx, act.count.reshape(1), *([val] * g), *([w3] * g))
  return out.reshape(n)


# ------------------------------------------------------------ MLP block
class MLPWeights(NamedTuple):
  """A SwiGLU MLP's kernels laid out for batch-1 sparse decoding."""

  gate_up: Array  # (dim, 2 * hidden): [gate_proj | up_proj] kernels.
  down: Array  # (hidden, dim): down_proj kernel.


def pack_mlp(mlp: Any) -> MLPWeights:
  """`MLPWeights` of a `jaxsparse.lm` MLP (gate_proj, up_proj, down_proj)."""
  get = lambda lin: lin.kernel.get_value()
  return MLPWeights(jnp.concatenate([get(mlp.gate_proj), get(mlp.up_proj)],
                                    axis=1), get(mlp.down_proj))


def dense_mlp_decode(weights: MLPWeights, x: Array) -> Array:
  """`down(silu(gate x) * up x)` for one token x (dim,), dense."""
  gu = x @ weights.gate_up
  g, u = jnp.split(gu, 2)
  return (jax.nn.silu(g) * u) @ weights.down


def mlp_decode(weights: MLPWeights, x: Array, t_in: float | Array,
               t_hidden: float | Array, *, backend: str = "xla",
               interpret: Any = False) -> Array:
  """A SwiGLU MLP at batch 1 with TEAL thresholds on both its inputs.

  `t_in` thresholds the block's input (the input of gate_proj and
  up_proj), `t_hidden` the input of down_proj; each product reads only
  the rows of its kernel that the active entries select. Equals
  `dense_mlp_decode` on the thresholded inputs.
  """
  gu = sparse_matvec(x, weights.gate_up, t_in, backend=backend,
                     interpret=interpret)
  g, u = jnp.split(gu, 2)
  h = jax.nn.silu(g) * u
  return sparse_matvec(h, weights.down, t_hidden, backend=backend,
                       interpret=interpret)
