"""Structures: how weights are grouped before scores are ranked.

A `Structure` pools a leaf's scores into group scores, and expands a keep
mask over groups back to the leaf's shape. Sparsity then counts groups:
a layer of n groups at sparsity s loses exactly round(s * n) groups. A
structure with `select` (N:M) fixes the mask itself and ignores the target.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxsparse._src.core import threshold

# Groups up to this size are ranked by pairwise comparison, larger by sort.
_PAIRWISE_MAX_M = 32


class Structure(NamedTuple):
  """Pooling of scores into groups and expansion of group masks."""

  name: str
  validate: Callable[[str, tuple[int, ...]], None]  # (path, shape) -> None
  pool: Callable[[jax.Array], jax.Array]  # leaf score -> group scores
  expand: Callable[[jax.Array, tuple[int, ...]], jax.Array]  # -> leaf mask
  select: Callable[[jax.Array], jax.Array] | None = None  # score -> mask


def _need_ndim(name: str, path: str, shape: tuple[int, ...], k: int) -> None:
  if len(shape) < k:
    raise ValueError(
        f"structure {name} needs leaves with ndim >= {k}; leaf '{path}' has "
        f"shape {shape}.")


# Cached: equal hyper-parameters give the same object, so that jitted
# functions taking it as a static argument compile once.
@functools.cache
def unstructured() -> Structure:
  """Each weight is its own group."""
  return Structure(
      name="unstructured",
      validate=lambda path, shape: None,
      pool=lambda s: s,
      expand=lambda keep, shape: keep.reshape(shape),
  )


@functools.cache
def n_m(n: int, m: int, axis: int | None = None) -> Structure:
  """N:M sparsity: keep the N largest of every M consecutive weights.

  Groups run along the input dimension: Dense kernels (in, out) axis 0,
  Conv HWIO kernels axis 2, i.e. `axis = ndim - 2` unless given. Ties keep
  the lower index.

  References:
    Zhou et al., "Learning N:M Fine-grained Structured Sparse Neural
    Networks From Scratch", ICLR 2021.
  """
  if int(n) != n or int(m) != m or m < 1 or n < 0:
    raise ValueError(f"N:M needs integers 0 <= n <= m, m >= 1; got {n}:{m}.")
  if n > m:
    raise ValueError(f"N:M needs n <= m; got n={n} > m={m}.")
  name = f"{n}:{m}"

  def ax(shape):
    return (len(shape) - 2) if axis is None else axis % len(shape)

  def validate(path, shape):
    _need_ndim(name, path, shape, 2 if axis is None else 1)
    a = ax(shape)
    if shape[a] % m:
      raise ValueError(
          f"N:M structure {name}: leaf '{path}' has size {shape[a]} along its "
          f"input axis {a}, which is not divisible by M={m}.")

  def select(score):
    a = ax(score.shape)
    s = jnp.moveaxis(score, a, -1)
    g = s.reshape(s.shape[:-1] + (s.shape[-1] // m, m))
    if m <= _PAIRWISE_MAX_M:
      # rank = #{j: g_j > g_i} + #{j < i: g_j == g_i}, from an m x m
      # comparison per group (no sort); int keys give a total order.
      k = threshold.sortable_key(g)
      ki, kj = k[..., :, None], k[..., None, :]
      i = jnp.arange(m)
      earlier = i[None, :] < i[:, None]  # [i, j]: j comes before i
      rank = jnp.sum((kj > ki) | ((kj == ki) & earlier), axis=-1)
    else:
      order = jnp.argsort(-g, axis=-1, stable=True)
      rank = jnp.argsort(order, axis=-1, stable=True)
    keep = (rank < n).reshape(s.shape)
    return jnp.moveaxis(keep, -1, a)

  return Structure(name=name, validate=validate, pool=lambda s: s,
                   expand=lambda keep, shape: keep.reshape(shape),
                   select=select)


@functools.cache
def block(bh: int, bw: int) -> Structure:
  """bh x bw blocks of the kernel seen as 2-D (prod(shape[:-1]), shape[-1]).

  The block score is the mean score of its entries.
  """
  if int(bh) != bh or int(bw) != bw or bh < 1 or bw < 1:
    raise ValueError(f"block shape must be positive integers, got {bh}x{bw}.")
  name = f"block({bh}x{bw})"

  def rows_cols(shape):
    return math.prod(shape[:-1]), shape[-1]

  def validate(path, shape):
    _need_ndim(name, path, shape, 2)
    r, c = rows_cols(shape)
    if r % bh or c % bw:
      raise ValueError(
          f"block shape {bh}x{bw} does not divide leaf '{path}' seen as a "
          f"{r}x{c} matrix (shape {shape}).")

  def pool(score):
    r, c = rows_cols(score.shape)
    return score.reshape(r // bh, bh, c // bw, bw).mean(axis=(1, 3))

  def expand(keep, shape):
    full = jnp.repeat(jnp.repeat(keep, bh, axis=0), bw, axis=1)
    return full.reshape(shape)

  return Structure(name=name, validate=validate, pool=pool, expand=expand)


@functools.cache
def channel(axis: int = -1) -> Structure:
  """Whole output channels / filters (Dense and HWIO Conv: axis -1).

  The channel score is the mean score over all other axes.
  """
  name = f"channel(axis={axis})"

  def validate(path, shape):
    _need_ndim(name, path, shape, 1)

  def pool(score):
    a = axis % score.ndim
    other = tuple(i for i in range(score.ndim) if i != a)
    return score.mean(axis=other)

  def expand(keep, shape):
    a = axis % len(shape)
    bshape = [1] * len(shape)
    bshape[a] = shape[a]
    return jnp.broadcast_to(keep.reshape(bshape), shape)

  return Structure(name=name, validate=validate, pool=pool, expand=expand)
