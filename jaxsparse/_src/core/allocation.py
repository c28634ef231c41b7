"""Allocation: how a target sparsity is spread across layers.

An allocation is a plain function

    allocation(keys, paths, shapes, sparsity) -> list of keep masks

where `keys[i]` are the order-preserving int32 keys of leaf i's group scores
(see `threshold.sortable_key`), `shapes[i]` the leaf's parameter shape and
`sparsity` the current global target. Each layer's count of pruned groups is
exact: round(s_l * n_l), rounding halves up.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
from jax import lax

from jaxsparse._src.core import threshold

Allocation = Callable[
    [Sequence[jax.Array], Sequence[str], Sequence[tuple[int, ...]], jax.Array],
    list[jax.Array]]


def count_for(sparsity: jax.Array, n: int) -> jax.Array:
  """round(s * n) with halves rounded up, as int32, clipped to [0, n]."""
  k = jnp.floor(jnp.asarray(sparsity, jnp.float32) * n + 0.5)
  return jnp.clip(k, 0, n).astype(jnp.int32)


def _per_layer(keys, sparsities):
  ks = jnp.stack([count_for(s, k.size)
                  for s, k in zip(sparsities, keys, strict=True)])
  return threshold.smallest_k_per_leaf(keys, ks)


# Cached: equal hyper-parameters give the same object, so that jitted
# functions taking it as a static argument compile once.
@functools.cache
def uniform() -> Allocation:
  """Every layer at the global target sparsity (layer-wise pruning)."""
  def alloc(keys, paths, shapes, sparsity):
    del paths, shapes
    return _per_layer(keys, [sparsity] * len(keys))
  return alloc


def _raw_density(shape: tuple[int, ...], kind: str) -> float:
  if kind == "er":
    if len(shape) < 2:
      return 1.0
    n_in, n_out = shape[-2], shape[-1]
    return (n_in + n_out) / (n_in * n_out)
  return sum(shape) / math.prod(shape)


def erk_densities(
    shapes: Sequence[tuple[int, ...]], density: jax.Array, kind: str = "erk",
    power_scale: float = 1.0,
) -> jax.Array:
  """Per-layer densities of Erdos-Renyi(-Kernel) allocation.

  d_l = eps * p_l with p_l = sum(shape)/prod(shape) (ERK; ER uses the last
  two dims), eps solving sum_l d_l n_l = density * N; while some
  eps * p_l > 1 the layer(s) with the largest p_l are made dense and eps is
  re-solved. Traceable in `density`.

  References:
    Evci et al., "Rigging the Lottery", ICML 2020 (rigl/sparse_utils.py).
  """
  p = jnp.asarray([_raw_density(s, kind) ** power_scale for s in shapes],
                  jnp.float32)
  n = jnp.asarray([math.prod(s) for s in shapes], jnp.float32)
  budget = jnp.asarray(density, jnp.float32) * jnp.sum(n)

  def solve(dense):
    num = budget - jnp.sum(jnp.where(dense, n, 0.0))
    den = jnp.sum(jnp.where(dense, 0.0, p * n))
    return jnp.where(den > 0, num / jnp.where(den > 0, den, 1.0), 0.0)

  def step(_, dense):
    eps = solve(dense)
    prob = jnp.where(dense, 0.0, eps * p)
    invalid = jnp.max(prob) > 1.0
    pmax = jnp.max(jnp.where(dense, -jnp.inf, p))
    return dense | (invalid & ~dense & (p == pmax))

  dense = lax.fori_loop(0, len(shapes), step, jnp.zeros(len(shapes), bool))
  eps = solve(dense)
  return jnp.clip(jnp.where(dense, 1.0, eps * p), 0.0, 1.0)


@functools.cache
def erk(power_scale: float = 1.0) -> Allocation:
  """Erdos-Renyi-Kernel: sparser layers where fan-in x fan-out is large."""
  def alloc(keys, paths, shapes, sparsity):
    del paths
    d = erk_densities(shapes, 1.0 - jnp.asarray(sparsity), "erk", power_scale)
    return _per_layer(keys, [1.0 - d[i] for i in range(len(keys))])
  return alloc


@functools.cache
def er() -> Allocation:
  """Erdos-Renyi: density proportional to (n_in + n_out) / (n_in n_out)."""
  def alloc(keys, paths, shapes, sparsity):
    del paths
    d = erk_densities(shapes, 1.0 - jnp.asarray(sparsity), "er")
    return _per_layer(keys, [1.0 - d[i] for i in range(len(keys))])
  return alloc


@functools.cache
def global_(min_keep_fraction: float = 0.0) -> Allocation:
  """One ranking over all layers (Global MP).

  Args:
    min_keep_fraction: each layer keeps at least
      T = floor(min_keep_fraction * N) groups (N = all prunable groups) or all
      of its groups if it has fewer; 0.0 gives plain global ranking. The
      reference default MT = 0.05 % is `min_keep_fraction=5e-4`. The floor
      is enforced on one global threshold (layers below the floor keep
      their T best) rather than by rescaling per-layer sparsities.

  References:
    Gupta et al., "Is Complexity Required for Neural Network Pruning? A
    Case Study on Global Magnitude Pruning", 2022. arXiv:2209.14624.
  """
  if not 0.0 <= min_keep_fraction <= 1.0:
    raise ValueError(
        f"`min_keep_fraction` must be in [0, 1], got {min_keep_fraction}.")

  def alloc(keys, paths, shapes, sparsity):
    del paths, shapes
    total = sum(k.size for k in keys)
    k = count_for(sparsity, total)
    if min_keep_fraction == 0.0:
      return threshold.global_smallest_k(keys, k)
    t = int(math.floor(min_keep_fraction * total))
    caps = jnp.asarray([x.size - min(x.size, t) for x in keys], jnp.int32)
    counts = threshold.global_counts(keys, k, caps)
    return threshold.smallest_k_per_leaf(keys, counts)
  return alloc


def custom(
    rules: Mapping[str, float | Callable[[jax.Array], jax.Array]],
    default: Allocation | None = None,
) -> Allocation:
  """Per-layer sparsity by path pattern; other layers use `default`.

  Args:
    rules: regex (matched with `re.search` against paths like
      `Dense_0/kernel`) -> a fixed sparsity, or a function of the global
      target (e.g. `lambda s: 0.5 * s`). The first matching rule wins.
    default: allocation for the unmatched layers (`uniform()` if None).
  """
  from jaxsparse._src.core.schedules import check_sparsity
  compiled = []
  for pattern, rule in rules.items():
    if not callable(rule):
      rule = check_sparsity(rule, f"rules[{pattern!r}]")
    compiled.append((re.compile(pattern), rule))
  default = uniform() if default is None else default

  def alloc(keys, paths, shapes, sparsity):
    out: list = [None] * len(keys)
    rest = []
    for i, path in enumerate(paths):
      for pat, rule in compiled:
        if pat.search(path):
          s = rule(sparsity) if callable(rule) else rule
          out[i] = _per_layer([keys[i]], [s])[0]
          break
      else:
        rest.append(i)
    if rest:
      masks = default([keys[i] for i in rest], [paths[i] for i in rest],
                      [shapes[i] for i in rest], sparsity)
      for i, m in zip(rest, masks, strict=False):
        out[i] = m
    return out
  return alloc
