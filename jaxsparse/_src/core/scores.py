"""Scores: plain functions `(params, grads, key) -> score tree`.

A higher score means more important: the lowest scores are pruned. Scores
only matter on the leaves selected for pruning.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

ScoreFn = Callable[[Any, Any, jax.Array], Any]


def magnitude(params: Any, grads: Any, key: jax.Array) -> Any:
  """|w| (Han et al., 2015; Zhu & Gupta, 2017)."""
  del grads, key
  return jax.tree.map(jnp.abs, params)


def random(params: Any, grads: Any, key: jax.Array) -> Any:
  """I.i.d. uniform scores: with any allocation, an exact-count random mask.

  References:
    Liu et al., "The Unreasonable Effectiveness of Random Pruning", ICLR 2022.
  """
  del grads
  leaves, treedef = jax.tree.flatten(params)
  keys = jax.random.split(key, max(len(leaves), 1))
  return jax.tree.unflatten(treedef, [
      jax.random.uniform(k, jnp.shape(p), jnp.float32)
      for k, p in zip(keys, leaves, strict=False)])


def saliency(params: Any, grads: Any, key: jax.Array) -> Any:
  """|w * g| with g the gradient of the current batch.

  References:
    Lee et al., "SNIP: Single-shot Network Pruning based on Connection
    Sensitivity", ICLR 2019 (the same first-order saliency, per batch).
  """
  del key
  if grads is None:
    raise ValueError("`saliency` needs the gradients passed as `updates`.")
  return jax.tree.map(lambda p, g: jnp.abs(p * g), params, grads)
