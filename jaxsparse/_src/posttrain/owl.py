"""OWL: outlier-weighed layerwise sparsity (Yin et al., 2024).

A decoder block's outlier ratio D_l is the fraction of its Wanda scores
|W_ij| · ||X_j|| above m times their mean (m = 5), over all the linear
layers of the block. Blocks with more outliers are pruned less: the ratios
are scaled to a spread of 2λ and centred so that the mean sparsity is the
target.

The reference code (`lib/prune.py`, `prune_wanda_outlier`) computes
density_l = 2λ (D_l - min D) / (max D - min D) - mean(...) + (1 - S), so
max - min of the sparsities is exactly 2λ and their mean exactly S; the
paper states S_l ∈ [S - λ, S + λ], which holds when the scaled ratios
average λ (e.g. symmetric ones); in general the sparsities lie in
[S - 2λ, S + 2λ]. This module follows the code.

References:
  Yin et al., "Outlier Weighed Layerwise Sparsity (OWL): A Missing Secret
  Sauce for Pruning LLMs to High Sparsity", ICML 2024.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxsparse._src.core.schedules import check_sparsity


def outlier_ratio(scores: Any, m: float = 5.0) -> jax.Array:
  """Fraction of the entries of `scores` above `m` times their mean.

  Args:
    scores: an array or a pytree of arrays (e.g. the Wanda scores of all
      linear layers of one block), pooled into one mean.
    m: the outlier multiple (OWL's M, 5 in the paper).
  """
  if not math.isfinite(float(m)):
    raise ValueError(f"`m` must be a finite number, got {m!r}.")
  m = float(m)
  leaves = [jnp.asarray(x) for x in jax.tree.leaves(scores)]
  if not sum(x.size for x in leaves):
    raise ValueError("`scores` holds no entries.")
  return _outlier_ratio(leaves, jnp.float32(m))


@jax.jit
def _outlier_ratio(leaves, m):
  leaves = [x.astype(jnp.float32).reshape(-1) for x in leaves]
  total = sum(x.size for x in leaves)
  mean = sum(jnp.sum(x) for x in leaves) / total
  count = sum(jnp.sum(x > m * mean, dtype=jnp.int32) for x in leaves)
  return count / total


def owl_sparsities(outlier_ratios: Any, target: float,
                   lam: float = 0.08) -> list[float]:
  """OWL's per-block sparsities: mean exactly `target`, spread 2·`lam`.

  S_l = target - (x_l - mean(x)) with x = 2λ (D - min D) / (max D - min D):
  the block with the most outliers gets the lowest sparsity. Equal ratios
  give every block the target.

  Raises:
    ValueError: if a sparsity would leave [0, 1] (lower `lam`).
  """
  target = check_sparsity(target, "target")
  lam = float(lam)
  if not (math.isfinite(lam) and lam >= 0.0):
    raise ValueError(f"`lam` must be finite and >= 0, got {lam!r}.")
  d = np.asarray(jax.device_get(outlier_ratios), np.float64).reshape(-1)
  if d.size == 0 or not np.all(np.isfinite(d)):
    raise ValueError(
        f"`outlier_ratios` must be finite and non-empty, got {d.tolist()}.")
  spread = d.max() - d.min()
  if spread == 0.0:
    return [target] * d.size
  x = (d - d.min()) * (2.0 * lam / spread)
  s = target - (x - x.mean())
  if s.min() < 0.0 or s.max() > 1.0:
    raise ValueError(
        f"OWL sparsities {s.round(4).tolist()} leave [0, 1] for target "
        f"{target} and `lam`={lam}; lower `lam`.")
  return [float(v) for v in s]
