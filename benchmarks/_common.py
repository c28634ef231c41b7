"""Shared model and data helpers for the benchmarks.

A plain-dict MLP (layers `dense_<i>`, kernels (in, out), zero biases), its
softmax cross-entropy, and scikit-learn's 1,797 8x8 digits.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

KernelInit = Callable[[jax.Array, int, int], jax.Array]


def he_normal(key: jax.Array, n_in: int, n_out: int) -> jax.Array:
  """An (n_in, n_out) kernel with entries N(0, 2 / n_in) (ReLU gain)."""
  return jax.random.normal(key, (n_in, n_out)) * math.sqrt(2.0 / n_in)


def lecun_normal(key: jax.Array, n_in: int, n_out: int) -> jax.Array:
  """An (n_in, n_out) kernel with entries N(0, 1 / n_in)."""
  return jax.random.normal(key, (n_in, n_out)) / math.sqrt(n_in)


def init_mlp(
    key: jax.Array,
    sizes: Sequence[int],
    kernel_init: KernelInit = he_normal,
    *,
    split_all: bool = False,
) -> dict:
  """Layers `dense_<i>` of an MLP with widths `sizes`, zero biases.

  Layer i's kernel key is the i-th of chained splits (`key, k =
  split(key)`), or with `split_all` the i-th of `split(key, layers)`.
  """
  pairs = list(zip(sizes[:-1], sizes[1:], strict=True))
  keys = jax.random.split(key, len(pairs)) if split_all else None
  params = {}
  for i, (n_in, n_out) in enumerate(pairs):
    if split_all:
      k = keys[i]
    else:
      key, k = jax.random.split(key)
    params[f"dense_{i}"] = {"kernel": kernel_init(k, n_in, n_out),
                            "bias": jnp.zeros((n_out,))}
  return params


def mlp(params: dict, x: jax.Array) -> jax.Array:
  """Logits of an `init_mlp` network (ReLU between layers), `x` flattened."""
  x = x.reshape(x.shape[0], -1)
  n = len(params)
  for i in range(n):
    layer = params[f"dense_{i}"]
    x = x @ layer["kernel"] + layer["bias"]
    if i < n - 1:
      x = jax.nn.relu(x)
  return x


def xent(params: dict, x: jax.Array, y: jax.Array) -> jax.Array:
  """Mean softmax cross-entropy of `mlp(params, x)` for integer labels."""
  return optax.softmax_cross_entropy_with_integer_labels(
      mlp(params, x), y).mean()


def kernel_floats(sizes: Sequence[int]) -> int:
  """Number of kernel weights of an MLP with widths `sizes`."""
  return sum(a * b for a, b in zip(sizes[:-1], sizes[1:], strict=True))


def digits() -> tuple[np.ndarray, np.ndarray]:
  """scikit-learn's digits: pixels / 16 (float32) and labels (int32)."""
  from sklearn.datasets import load_digits
  d = load_digits()
  return (d.data / 16.0).astype(np.float32), d.target.astype(np.int32)


def digits_split(seed: int = 0) -> tuple[np.ndarray, ...]:
  """Stratified 80/20 split of `digits()`: (xtr, ytr, xte, yte)."""
  from sklearn.model_selection import train_test_split
  x, y = digits()
  xtr, xte, ytr, yte = train_test_split(
      x, y, test_size=0.2, random_state=seed, stratify=y)
  return xtr, ytr, xte, yte
