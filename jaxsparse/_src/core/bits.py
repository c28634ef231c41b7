"""Bit-packed masks: the copy of the masks that a training step reads.

A bool mask costs one byte per weight each time a fused loop reads it; an
optimizer step reads it three times (gradient and slot masking, projection),
which is a few percent of an Adam step's memory traffic. Packed, the same
reads cost an eighth of that.

Layout: a mask of shape `(..., c)` is viewed as `(r, c)` with `r` the product
of the leading dimensions (`r = 1` for 1-D masks); rows are padded to a
multiple of 8 and row `8 * i + b` is bit `b` of row `i` of a `uint8` array
of shape `(ceil(r / 8), c)`. Unpacking then tests one constant bit in each
contiguous row of bytes, which vectorizes along the last axis.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import optax
from jax import lax

from jaxsparse._src.core import masks as masks_lib

_is_none = masks_lib._is_none  # pylint: disable=protected-access


def _rows_cols(shape: tuple[int, ...]) -> tuple[int, int]:
  if not shape:
    return 1, 1
  return math.prod(shape[:-1]), shape[-1]


def _bit_weights() -> jax.Array:
  """1, 2, 4, ..., 128 as `uint8`, shaped to broadcast over `(r/8, 8, c)`."""
  return (jnp.uint8(1) << jnp.arange(8, dtype=jnp.uint8))[None, :, None]


def packed_shape(shape: tuple[int, ...]) -> tuple[int, int]:
  """Shape of `pack(m)` for a mask of shape `shape`."""
  r, c = _rows_cols(tuple(shape))
  return -(-r // 8), c


def pack(mask: jax.Array) -> jax.Array:
  """Packs a bool mask into `uint8` bits, 8 rows per byte (see module doc)."""
  shape = tuple(mask.shape)
  r, c = _rows_cols(shape)
  rp = 8 * packed_shape(shape)[0]
  m = jnp.asarray(mask, bool).reshape(r, c)
  m = jnp.pad(m, ((0, rp - r), (0, 0))).reshape(rp // 8, 8, c)
  # One OR-reduction over the bit axis. Eight shifted ORs of strided slices
  # (elementwise only) compile pathologically slowly on CPU for narrow
  # masks: 0.7 s for a (1024, 10) kernel, against 0.04 s for this.
  weighted = jnp.where(m, _bit_weights(), jnp.uint8(0))
  return lax.reduce(weighted, jnp.uint8(0), lax.bitwise_or, (1,))


def unpack(bits: jax.Array, shape: tuple[int, ...]) -> jax.Array:
  """The bool mask of shape `shape` that `pack` turned into `bits`."""
  shape = tuple(shape)
  r, c = _rows_cols(shape)
  if tuple(bits.shape) != packed_shape(shape):
    raise ValueError(
        f"`bits` of shape {tuple(bits.shape)} cannot hold a mask of shape "
        f"{shape} (expected {packed_shape(shape)}).")
  m = (bits[:, None, :] & _bit_weights()) != 0
  return m.reshape(-1, c)[:r].reshape(shape)


def pack_masks(masks: Any) -> Any:
  """`pack` applied to every mask of a tree (None leaves stay None)."""
  return jax.tree.map(lambda m: None if m is None else pack(m), masks,
                      is_leaf=_is_none)


def unpack_masks(bits: Any, masks: Any) -> Any:
  """Unpacks `bits` into bool masks shaped like `masks` (None stays None)."""
  return jax.tree.map(
      lambda b, m: None if m is None else unpack(b, tuple(jnp.shape(m))),
      bits, masks, is_leaf=_is_none)


def replace_masks(opt_state: Any, masks: Any) -> Any:
  """`opt_state` with its masks (and their packed copy) set to `masks`.

  The way to change the masks of a `prune` or `dst` state by hand: writing
  only `state.masks` would leave the packed copy that the steps read stale.
  """
  masks = masks_lib.as_bool_masks(masks)
  return optax.tree_utils.tree_set(
      opt_state, masks=masks, mask_bits=pack_masks(masks))
