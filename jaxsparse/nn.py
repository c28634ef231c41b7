"""Flax NNX layers backed by block-sparse kernels.

`BlockSparseDense` is a drop-in for `nnx.Linear` whose kernel is stored as a
`pallas_kernels.BlockSparse`: only the kept (bk, bn) blocks are parameters,
and `y = x @ W` runs `pallas_kernels.block_sparse_matmul` (Pallas on TPU/GPU,
an XLA scan on CPU), so compute and memory scale with the density, forward
and backward. `to_block_sparse` converts a model pruned with
`jaxsparse.prune(..., structure=jaxsparse.structures.block(bk, bn))`.

Example::

  tx = jaxsparse.prune(0.9, structure=jaxsparse.structures.block(32, 32),
                       optimizer=optax.adam(1e-3))
  optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
  ...  # train
  masks = jaxsparse.get_masks(optimizer.opt_state)
  model = jaxsparse.nn.to_block_sparse(model, masks, block=(32, 32))
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from jaxsparse._src.core import masks as masks_lib
from pallas_kernels import BlockSparse, block_sparse_matmul

Array = jax.Array

default_kernel_init = nnx.initializers.lecun_normal()
default_bias_init = nnx.initializers.zeros_init()


class BlockSparseIndex(nnx.Variable):
  """Integer indices of a block-sparse kernel (not a trained parameter)."""


def random_block_mask(key: Array, grid: tuple[int, int],
                      density: float) -> Array:
  """(Kb, Nb) bool mask keeping round(density * Kb) random blocks per column.

  Every column block gets the same count, so no slot is wasted.
  """
  kb, nb = grid
  if not 0.0 <= density <= 1.0:
    raise ValueError(f"density must be in [0, 1], got {density}.")
  keep = int(density * kb + 0.5)
  scores = jax.random.uniform(key, (kb, nb))
  rank = jnp.argsort(jnp.argsort(-scores, axis=0), axis=0)
  return rank < keep


class BlockSparseDense(nnx.Module):
  """A linear layer `y = x W + b` with a block-sparse W (in x out).

  Holds the kept blocks as `blocks` (an `nnx.Param`, shape (Nb, T, bk, bn))
  and the block indices as `BlockSparseIndex` variables, so a mask change
  with the same slot count T is a state update, not a recompilation.

  Args:
    in_features: K.
    out_features: N.
    block: (bk, bn); must divide (K, N).
    mask: bool block mask (K // bk, N // bn) or entry mask (K, N) with
      constant blocks. Default: `density` of the blocks per column, at
      random.
    density: fraction of blocks kept per column block when `mask` is None.
    slots: T (default: the largest count of the mask).
    kernel: optional dense (K, N) initial kernel (else `kernel_init`).
    bias: optional initial bias (else `bias_init`).
    use_bias, dtype, param_dtype, kernel_init, bias_init: as `nnx.Linear`.
    backend, block_m, interpret: passed to `block_sparse_matmul`.
    rngs: needed unless both `kernel` and `mask` (and `bias`) are given.
  """

  def __init__(
      self,
      in_features: int,
      out_features: int,
      *,
      block: tuple[int, int],
      mask: Array | None = None,
      density: float = 1.0,
      slots: int | None = None,
      kernel: Array | None = None,
      bias: Array | None = None,
      use_bias: bool = True,
      dtype: Any = None,
      param_dtype: Any = jnp.float32,
      kernel_init: Callable = default_kernel_init,
      bias_init: Callable = default_bias_init,
      backend: str | None = None,
      block_m: int | None = None,
      interpret: bool = False,
      rngs: nnx.Rngs | None = None,
  ):
    self.in_features = int(in_features)
    self.out_features = int(out_features)
    self.block = (int(block[0]), int(block[1]))
    self.use_bias = use_bias
    self.dtype = dtype
    self.backend = backend
    self.block_m = block_m
    self.interpret = interpret
    shape = (self.in_features, self.out_features)
    bk, bn = self.block
    if shape[0] % bk or shape[1] % bn:
      raise ValueError(
          f"block {bk}x{bn} does not divide the kernel shape {shape}.")

    def need_rngs(what):
      if rngs is None:
        raise ValueError(f"rngs are needed to initialise {what}.")
      return rngs

    if kernel is None:
      kernel = kernel_init(need_rngs("the kernel").params(), shape,
                           param_dtype)
    elif tuple(jnp.shape(kernel)) != shape:
      raise ValueError(f"kernel has shape {jnp.shape(kernel)}, expected "
                       f"{shape}.")
    if mask is None:
      grid = (shape[0] // bk, shape[1] // bn)
      if density >= 1.0:
        mask = jnp.ones(grid, bool)
      else:
        mask = random_block_mask(need_rngs("the mask").params(), grid,
                                 density)
    w = BlockSparse.from_dense(jnp.asarray(kernel, param_dtype), mask,
                               self.block, slots=slots)
    self.blocks = nnx.Param(w.values)
    self._set_index(w)
    if use_bias:
      if bias is None:
        bias = bias_init(need_rngs("the bias").params(), (shape[1],),
                         param_dtype)
      self.bias = nnx.Param(jnp.asarray(bias, param_dtype))
    else:
      self.bias = None

  def _set_index(self, w: BlockSparse) -> None:
    for name in ("rows", "counts", "t_cols", "t_slots", "t_counts"):
      value = getattr(w, name)
      if hasattr(self, name):
        getattr(self, name).set_value(value)
      else:
        setattr(self, name, BlockSparseIndex(value))

  @classmethod
  def from_dense(cls, kernel: Array, mask: Array, block: tuple[int, int],
                 *, bias: Array | None = None, **kwargs) -> BlockSparseDense:
    """From a dense (in, out) kernel and a block-constant mask."""
    kernel = jnp.asarray(kernel)
    if kernel.ndim != 2:
      raise ValueError(f"kernel must be (in, out), got shape {kernel.shape}.")
    kwargs.setdefault("param_dtype", kernel.dtype)
    return cls(kernel.shape[0], kernel.shape[1], block=block, mask=mask,
               kernel=kernel, bias=bias, use_bias=bias is not None, **kwargs)

  @classmethod
  def from_linear(cls, linear: nnx.Linear, mask: Array,
                  block: tuple[int, int], **kwargs) -> BlockSparseDense:
    """Converts an `nnx.Linear` whose kernel `mask` keeps whole blocks."""
    bias = None if linear.bias is None else linear.bias.get_value()
    kwargs.setdefault("dtype", linear.dtype)
    return cls.from_dense(linear.kernel.get_value(), mask, block, bias=bias,
                          **kwargs)

  def weight(self) -> BlockSparse:
    """The kernel as a `BlockSparse` pytree (in x out)."""
    return BlockSparse(
        values=self.blocks.get_value(), rows=self.rows.get_value(),
        counts=self.counts.get_value(), t_cols=self.t_cols.get_value(),
        t_slots=self.t_slots.get_value(),
        t_counts=self.t_counts.get_value(),
        shape=(self.in_features, self.out_features), block=self.block)

  def to_dense(self) -> Array:
    """The dense (in, out) kernel, zeros outside the kept blocks."""
    return self.weight().to_dense()

  def block_mask(self) -> Array:
    return self.weight().block_mask()

  def set_mask(self, mask: Array) -> None:
    """Keeps the current kernel under a new block mask (same slot count).

    Blocks that become kept start from their previous dense value (zero if
    they were not stored). Works inside `nnx.jit` with a traced mask.
    """
    w = self.weight().with_mask(mask)
    self.blocks.set_value(w.values)
    self._set_index(w)

  def __call__(self, x: Array) -> Array:
    w = self.weight()
    bias = None if self.bias is None else self.bias.get_value()
    if self.dtype is not None:
      x = jnp.asarray(x, self.dtype)
      w = w.astype(self.dtype)
      bias = None if bias is None else bias.astype(self.dtype)
    y = block_sparse_matmul(x, w, backend=self.backend, block_m=self.block_m,
                            interpret=self.interpret)
    if bias is not None:
      y = y + bias
    return y


def _mask_table(masks: Any) -> dict[tuple[str, ...], Array]:
  flat = jax.tree.flatten_with_path(
      masks_lib.unwrap(masks), is_leaf=lambda m: m is None)[0]
  table = {}
  for path, m in flat:
    if m is not None:
      table[tuple(masks_lib.path_str(path).split("/"))] = m
  return table


def to_block_sparse(model: nnx.Module, masks: Any, block: tuple[int, int],
                    **kwargs) -> nnx.Module:
  """Replaces each masked `nnx.Linear` of `model` by a `BlockSparseDense`.

  Args:
    model: an NNX module (changed in place and returned).
    masks: masks like `jaxsparse.get_masks(optimizer.opt_state)`: an entry
      mask for each pruned `kernel`, constant on (bk, bn) blocks (from
      `structure=jaxsparse.structures.block(bk, bn)`), `None` for dense leaves.
    block: (bk, bn), the block of the structure.
    **kwargs: passed to `BlockSparseDense` (backend, slots, ...).

  Returns:
    `model`. Linear layers without a mask stay dense.
  """
  table = _mask_table(masks)
  todo = []
  for path, node in nnx.iter_graph(model):
    if isinstance(node, nnx.Linear):
      key = tuple(str(p) for p in path) + ("kernel",)
      if key in table:
        todo.append((path, node, table[key]))
  for path, node, mask in todo:
    new = BlockSparseDense.from_linear(node, mask, block, **kwargs)
    parent = model
    for p in path[:-1]:
      parent = parent[p] if isinstance(p, int) else getattr(parent, p)
    if isinstance(path[-1], int):
      parent[path[-1]] = new
    else:
      setattr(parent, path[-1], new)
  return model


def block_sparse_params(params: Any, masks: Any,
                        block: tuple[int, int]) -> Any:
  """Replaces each masked 2-D kernel of a params pytree by a `BlockSparse`.

  For plain (e.g. linen) params: apply the result's kernels with
  `pallas_kernels.block_sparse_matmul(x, params[...]["kernel"])`.
  """
  params = masks_lib.unwrap(params)
  masks_lib.check_masks(params, masks)
  masks = masks_lib.unwrap(masks)

  def one(p, m):
    if m is None:
      return p
    if jnp.ndim(p) != 2:
      raise ValueError(f"only 2-D kernels can be made block sparse, got "
                       f"shape {jnp.shape(p)}.")
    return BlockSparse.from_dense(p, jnp.asarray(m) != 0, block)

  return jax.tree.map(one, params, masks, is_leaf=lambda x: x is None)
