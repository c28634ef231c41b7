"""What the MNIST-1D notebooks share: data, a plain-JAX MLP, a trainer.

`colabs/` notebooks import this (jaxsparse is installed by their first
cell), so each notebook keeps only the idea it teaches.
"""

from __future__ import annotations

import os
import tempfile
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxsparse.experiments import data as data_lib


class Task(NamedTuple):
  """MNIST-1D as device arrays: train and test inputs and labels."""

  x: jax.Array
  y: jax.Array
  x_test: jax.Array
  y_test: jax.Array


def load_mnist1d(seed: int = 0) -> tuple[np.ndarray, ...]:
  """(x_train, y_train, x_test, y_test) of MNIST-1D (Greydanus, 2020),
  standardised with the training set's mean and std."""
  cache = os.path.join(tempfile.gettempdir(), "jaxsparse_data")
  x, y, xt, yt = data_lib.mnist1d_arrays(seed=seed, cache_dir=cache)
  x, xt = np.asarray(x, np.float32), np.asarray(xt, np.float32)
  mu, sd = x.mean(), x.std()
  return ((x - mu) / sd, np.asarray(y, np.int32), (xt - mu) / sd,
          np.asarray(yt, np.int32))


def task(arrays: tuple[np.ndarray, ...]) -> Task:
  return Task(*(jnp.asarray(a) for a in arrays))


def init_mlp(key: jax.Array, sizes) -> dict:
  """Layers `dense_<i>` (He-normal kernels, zero biases) of an MLP."""
  params = {}
  for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
    key, k = jax.random.split(key)
    params[f"dense_{i}"] = {
        "kernel": jax.random.normal(k, (n_in, n_out)) * np.sqrt(2.0 / n_in),
        "bias": jnp.zeros((n_out,))}
  return params


def mlp(params: dict, x: jax.Array) -> jax.Array:
  n = len(params)
  for i in range(n):
    x = x @ params[f"dense_{i}"]["kernel"] + params[f"dense_{i}"]["bias"]
    if i < n - 1:
      x = jax.nn.relu(x)
  return x


def loss(t: Task, params: dict, ix: jax.Array) -> jax.Array:
  """Mean cross-entropy of the training examples at indices `ix`."""
  logits = mlp(params, t.x[ix])
  return optax.softmax_cross_entropy_with_integer_labels(logits, t.y[ix]).mean()


def make_trainer(t: Task, tx: optax.GradientTransformation,
                 fixed_masks: bool = False):
  """A jitted `(params, opt_state, batch_indices) -> (params, opt_state)`:
  one `lax.scan` over the steps (rows of `batch_indices`).

  `fixed_masks=True` (for `jaxsparse.prune` with masks that never change)
  passes `mask_update=False`: no mask-update code is compiled.
  """
  extra = {"mask_update": False} if fixed_masks else {}

  @jax.jit
  def run(params, state, idx):
    def step(carry, ix):
      params, state = carry
      grads = jax.grad(lambda p: loss(t, p, ix))(params)
      updates, state = tx.update(grads, state, params, **extra)
      return (optax.apply_updates(params, updates), state), None
    (params, state), _ = jax.lax.scan(step, (params, state), idx)
    return params, state
  return run


@jax.jit
def accuracy(t: Task, params: Any) -> jax.Array:
  return jnp.mean(jnp.argmax(mlp(params, t.x_test), -1) == t.y_test)


def batches(n: int, seed: int, steps: int, batch: int) -> np.ndarray:
  """(steps, batch) example indices, drawn by `default_rng(seed)`."""
  return np.random.default_rng(seed).integers(0, n, (steps, batch))


def bind(t: Task, steps: int, batch: int):
  """`(loss_fn, make_trainer, accuracy, batches)` closed over `t`, the
  notebooks' everyday names: `loss_fn(params, ix)`, `make_trainer(tx,
  fixed_masks=False)`, `accuracy(params)`, `batches(seed)`."""
  return (lambda params, ix: loss(t, params, ix),
          lambda tx, fixed_masks=False: make_trainer(t, tx, fixed_masks),
          lambda params: accuracy(t, params),
          lambda seed: batches(len(t.y), seed, steps, batch))
