"""Meshes, logical axis rules, and shardings that follow the params.

Every array that is shaped like a parameter (its mask, its packed mask,
its Adam moments, its score) gets the parameter's `NamedSharding`, so a
mask lives on the devices that hold its weights, and a mask update reads
and writes only local data: the threshold search reduces histograms
(`jaxsparse._src.core.threshold`), which the SPMD partitioner turns into
local counts and one small all-reduce.

Params are sharded by rules on their paths (Megatron-style tensor
parallelism for the language model's projections, output features for
other kernels), written as logical axis names mapped to mesh axes like
flax's `logical_axis_rules`, so the same rules read `("embed", "mlp")`
whether `mlp` goes to the `model` axis, to `data` (FSDP-style), or nowhere.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
from flax.linen import spmd
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from jaxsparse._src.core import bits as bits_lib
from jaxsparse._src.core import masks as masks_lib

DATA, MODEL = "data", "model"

# Logical names of parameter axes -> mesh axes (None: replicated).
DEFAULT_RULES: tuple[tuple[str, str | None], ...] = (
    ("batch", DATA),
    ("vocab", MODEL),
    ("heads", MODEL),
    ("mlp", MODEL),
    ("out", MODEL),
    ("embed", None),
    ("in", None),
)

# (path regex, logical axes of the leaf); the first match wins. Paths are
# `masks.path_str` paths ("blocks/0/attn/q/kernel"). Column-parallel
# projections shard their output features, row-parallel ones their input
# features (Shoeybi et al. 2019, Megatron-LM), so that an MLP or attention
# block needs one all-reduce of activations.
DEFAULT_PARAM_AXES: tuple[tuple[str, tuple[str | None, ...]], ...] = (
    (r"(^|/)(q_proj|k_proj|v_proj|query|key|value)/kernel$",
     ("embed", "heads")),
    (r"(^|/)(o_proj|out_proj)/kernel$", ("heads", "embed")),
    (r"(^|/)(gate_proj|up_proj|fc1)/kernel$", ("embed", "mlp")),
    (r"(^|/)(down_proj|fc2)/kernel$", ("mlp", "embed")),
    (r"(^|/)(embed_tokens|wte)/embedding$", ("vocab", "embed")),
    (r"(^|/)lm_head/kernel$", ("embed", "vocab")),
)


def make_mesh(data: int = -1, model: int = 1,
              devices: Sequence[jax.Device] | None = None) -> Mesh:
  """A `(data, model)` mesh over `devices` (default: all of them).

  `-1` takes the devices the other axis leaves. Axis types are `Auto`, so
  ordinary jitted code is partitioned by the compiler (jax >= 0.7 defaults
  `jax.make_mesh` to explicit axes).
  """
  devices = list(jax.devices() if devices is None else devices)
  n = len(devices)
  for name, v in (("data", data), ("model", model)):
    if v == 0 or v < -1:
      raise ValueError(f"mesh.{name}={v}: must be a positive device count "
                       "or -1 (the devices the other axis leaves).")
  if data == -1 and model == -1:
    raise ValueError("mesh.data and mesh.model cannot both be -1.")
  if data == -1:
    if n % model:
      raise ValueError(f"mesh.model={model} does not divide the {n} "
                       "devices.")
    data = n // model
  if model == -1:
    if n % data:
      raise ValueError(f"mesh.data={data} does not divide the {n} devices.")
    model = n // data
  if data * model != n:
    raise ValueError(f"mesh.data * mesh.model = {data} * {model} = "
                     f"{data * model}, but there are {n} devices.")
  grid = np.asarray(devices, dtype=object).reshape(data, model)
  return Mesh(grid, (DATA, MODEL), axis_types=(AxisType.Auto,) * 2)


def logical_axes(path: str, shape: tuple[int, ...],
                 param_axes=DEFAULT_PARAM_AXES) -> tuple[str | None, ...]:
  """Logical axes of a leaf: the first matching rule, else output features
  ("out") for kernels (ndim >= 2) and nothing for other leaves."""
  path = re.sub(r"/value$", "", path)  # flax.nnx Variable leaves
  for pattern, axes in param_axes:
    if re.search(pattern, path) and len(axes) == len(shape):
      return tuple(axes)
  if len(shape) >= 2:
    return (None,) * (len(shape) - 1) + ("out",)
  return (None,) * len(shape)


def param_spec(path: str, shape: tuple[int, ...], mesh: Mesh,
               rules=DEFAULT_RULES, param_axes=DEFAULT_PARAM_AXES) -> P:
  """The `PartitionSpec` of one parameter; an axis that its mesh axis does
  not divide stays replicated (e.g. a 10-class head on 4 devices)."""
  names = logical_axes(path, tuple(shape), param_axes)
  spec = spmd.logical_to_mesh_axes(names, rules)
  out = []
  for dim, axis in zip(shape, spec, strict=True):
    size = 1 if axis is None else int(np.prod(
        [mesh.shape[a] for a in ((axis,) if isinstance(axis, str) else axis)]))
    out.append(axis if size > 1 and dim % size == 0 else None)
  while out and out[-1] is None:
    out.pop()
  return P(*out)


def param_shardings(params: Any, mesh: Mesh, rules=DEFAULT_RULES,
                    param_axes=DEFAULT_PARAM_AXES) -> Any:
  """`NamedSharding`s for a params tree (arrays or shape structs)."""
  def one(path, x):
    return NamedSharding(mesh, param_spec(masks_lib.path_str(path),
                                          tuple(x.shape), mesh, rules,
                                          param_axes))
  return jax.tree.map_with_path(one, params)


def packed_spec(spec: P, shape: tuple[int, ...]) -> P:
  """Spec of `pack(mask)` (shape `(ceil(rows / 8), cols)`) for a mask with
  spec `spec`: the columns keep their axis; the packed rows keep the first
  axis's only for 2-D masks (other leading axes are flattened)."""
  spec = tuple(spec) + (None,) * (len(shape) - len(spec))
  if not shape:
    return P()
  cols = spec[-1]
  rows = spec[0] if len(shape) == 2 else None
  return P(rows, cols) if rows is not None else P(None, cols)


def like_params(tree: Any, params: Any, shardings: Any,
                mesh: Mesh | None = None) -> Any:
  """Shardings for any tree that holds param-shaped leaves (an optimizer
  state, masks, packed masks, scores, a whole training state).

  A leaf whose path ends with a parameter's path gets that parameter's
  sharding when it has its shape, and the packed-mask spec when it has the
  packed shape; every other leaf (counts, keys, scalars) is replicated.
  """
  flat_p = jax.tree.flatten_with_path(params)[0]
  flat_s = jax.tree.leaves(shardings)
  if mesh is None:
    mesh = flat_s[0].mesh if flat_s else None
  by_path = {}
  for (path, x), s in zip(flat_p, flat_s, strict=True):
    by_path[masks_lib.path_str(path)] = (tuple(x.shape), s)
  # Longest paths first: "blocks/0/mlp/up/kernel" before "up/kernel".
  keys = sorted(by_path, key=len, reverse=True)
  replicated = NamedSharding(mesh, P())

  def one(path, x):
    if x is None:
      return None
    name = masks_lib.path_str(path)
    shape = tuple(np.shape(x))
    for k in keys:
      if name == k or name.endswith("/" + k):
        pshape, s = by_path[k]
        if shape == pshape:
          return s
        if pshape and shape == bits_lib.packed_shape(pshape):
          return NamedSharding(mesh, packed_spec(s.spec, pshape))
        break
    return replicated
  return jax.tree.map_with_path(one, tree)


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Leading (batch) axis along `data`, the other axes replicated."""
  return NamedSharding(mesh, P(DATA))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())



_COLLECTIVE = re.compile(
    r"=\s*(?P<shape>\(.*?\)|\S+)\s+(?P<op>all-gather|all-reduce|all-to-all|"
    r"collective-permute|reduce-scatter|collective-broadcast)(-start)?\(")
_ARRAY = re.compile(
    r"\b(?P<dtype>pred|[suf]\d+|bf16|c64|c128)\[(?P<dims>[\d,]*)\]")
_BYTES = {"pred": 1, "bf16": 2, "c64": 8, "c128": 16}


def _array_bytes(dtype: str, dims: str) -> int:
  n = int(np.prod([int(d) for d in dims.split(",") if d])) if dims else 1
  size = _BYTES.get(dtype) or max(1, int(dtype[1:]) // 8)
  return n * size


def collective_bytes(hlo_text: str) -> dict[str, int]:
  """Bytes of the results of each kind of collective in compiled HLO text
  (`jax.jit(f).lower(...).compile().as_text()`), per device and call.

  Counts what a device receives from an all-gather, all-to-all or
  permute, and the size of what an all-reduce or reduce-scatter reduces
  (its result), summed over the program's collectives (``-done`` halves of
  async pairs are not counted twice). Collectives inside loops count once.
  """
  out: dict[str, int] = {}
  for line in hlo_text.splitlines():
    m = _COLLECTIVE.search(line)
    if m is None or "-done" in line.split("=")[0]:
      continue
    shape = m.group("shape")
    b = sum(_array_bytes(a.group("dtype"), a.group("dims"))
            for a in _ARRAY.finditer(shape))
    out[m.group("op")] = out.get(m.group("op"), 0) + b
  return out
