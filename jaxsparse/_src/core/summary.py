"""`summary`: per-layer sparsity table of params or masks."""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import numpy as np

from jaxsparse._src.core import masks as masks_lib


@dataclasses.dataclass(frozen=True)
class LayerRow:
  name: str
  shape: tuple[int, ...]
  params: int
  zeros: int
  pruned: bool  # has a mask (or, for plain params, is prunable by default)

  @property
  def sparsity(self) -> float:
    return self.zeros / self.params if self.params else 0.0


@dataclasses.dataclass(frozen=True)
class Summary:
  """Rows per leaf and totals; `str()` renders a table."""

  rows: tuple[LayerRow, ...]

  @property
  def total_params(self) -> int:
    return sum(r.params for r in self.rows)

  @property
  def total_zeros(self) -> int:
    return sum(r.zeros for r in self.rows)

  @property
  def sparsity(self) -> float:
    """Zeros over all leaves."""
    return self.total_zeros / max(self.total_params, 1)

  @property
  def pruned_sparsity(self) -> float:
    """Zeros over the masked (prunable) leaves only."""
    n = sum(r.params for r in self.rows if r.pruned)
    return sum(r.zeros for r in self.rows if r.pruned) / max(n, 1)

  def to_dict(self) -> dict[str, Any]:
    return {
        "layers": [dict(dataclasses.asdict(r), sparsity=r.sparsity)
                   for r in self.rows],
        "total_params": self.total_params, "total_zeros": self.total_zeros,
        "sparsity": self.sparsity, "pruned_sparsity": self.pruned_sparsity,
    }

  def __str__(self) -> str:
    head = ("layer", "shape", "params", "zeros", "sparsity")
    body = [(r.name + ("" if r.pruned else " (dense)"), str(r.shape),
             str(r.params), str(r.zeros), f"{r.sparsity:.4f}")
            for r in self.rows]
    body.append(("total", "", str(self.total_params), str(self.total_zeros),
                 f"{self.sparsity:.4f}"))
    body.append(("total (pruned leaves)", "", "", "",
                 f"{self.pruned_sparsity:.4f}"))
    widths = [max(len(x[i]) for x in [head, *body]) for i in range(5)]
    fmt = lambda row: "  ".join(
        c.ljust(w) if i < 2 else c.rjust(w)
        for i, (c, w) in enumerate(zip(row, widths, strict=False)))
    sep = "-" * len(fmt(head))
    return "\n".join([fmt(head), sep, *map(fmt, body[:-2]), sep,
                      *map(fmt, body[-2:])])


def summary(params: Any, masks: Any = None) -> Summary:
  """Per-layer table of shapes, sizes, zeros and sparsity.

  Args:
    params: parameters (zeros counted as `== 0`), or masks when `masks` is
      None and the leaves are bool.
    masks: optional masks; when given, zeros are counted from the masks and
      dense (`None`) leaves count their exact zeros in `params`.
  """
  rows = []
  params = masks_lib.unwrap(params)
  masks = None if masks is None else masks_lib.unwrap(masks)
  flat = jax.tree.flatten_with_path(params)[0]
  if masks is not None:
    masks_lib.check_masks(params, masks)
    mflat = jax.tree.leaves(masks, is_leaf=masks_lib._is_none)  # pylint: disable=protected-access
  else:
    mflat = [None] * len(flat)
  for (path, leaf), m in zip(flat, mflat, strict=False):
    x = np.asarray(masks_lib._leaf_value(leaf))  # pylint: disable=protected-access
    if m is not None:
      zeros, pruned = int(np.sum(~np.asarray(m, bool))), True
    elif x.dtype == np.bool_:
      zeros, pruned = int(np.sum(~x)), True
    else:
      zeros = int(np.sum(x == 0))
      pruned = masks is None and bool(masks_lib.is_kernel(path, x))
    rows.append(LayerRow(masks_lib.path_str(path) or "<root>",
                         tuple(x.shape), int(x.size), zeros, pruned))
  return Summary(tuple(rows))
