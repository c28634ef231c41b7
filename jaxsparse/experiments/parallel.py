"""The runner on a device mesh: sharded state, batches and evaluation.

One code path for one device and for many: the training state is placed
with `jaxsparse.distributed.like_params` shardings (masks and optimizer
slots follow their params), each batch is split over the mesh's `data`
axis, and in a multi-process run each process feeds only its own rows of
every batch. Evaluation pads the last batch to a multiple of `data` and
weights the padding out.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.sharding import Mesh, NamedSharding

from jaxsparse import distributed as dist
from jaxsparse.experiments import config as config_lib


@dataclasses.dataclass(frozen=True)
class Parallel:
  """A run's mesh and the shardings of its state and batches."""

  mesh: Mesh
  state: Any  # shardings like the training state
  batch: NamedSharding  # leading axis over `data`
  replicated: NamedSharding

  @property
  def data(self) -> int:
    return self.mesh.shape[dist.DATA]

  def put_state(self, state: Any) -> Any:
    """Places a host (or single-device) state on the mesh."""
    return jax.tree.map(
        lambda s, x: dist.global_array(np.asarray(x), s), self.state,
        state, is_leaf=lambda s: isinstance(s, NamedSharding))

  def put_batch(self, local: Any, global_batch: int) -> Any:
    """A training batch from this process's rows of it."""
    return dist.from_process_local(local, self.batch, global_batch)

  def put_global(self, batch: Any) -> Any:
    """A batch that every process holds in full (evaluation)."""
    return jax.tree.map(lambda x: dist.global_array(x, self.batch), batch)


def mesh_of(config: ml_collections.ConfigDict) -> Mesh:
  data, model = config_lib.mesh_shape(config)
  return dist.make_mesh(data, model, jax.devices()[:data * model])


def setup(config: ml_collections.ConfigDict, state: Any,
          params: Any) -> Parallel:
  """Shardings for `state` (a pytree holding `params`-shaped leaves)."""
  mesh = mesh_of(config)
  psh = dist.param_shardings(params, mesh)
  shapes = jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(np.shape(x), jnp.result_type(x)), state)
  return Parallel(mesh=mesh, state=dist.like_params(shapes, params, psh,
                                                    mesh),
                  batch=dist.batch_sharding(mesh),
                  replicated=dist.replicated(mesh))


def eval_batches(images: np.ndarray, labels: np.ndarray, batch_size: int,
                 multiple: int):
  """Evaluation batches padded to a multiple of `multiple` rows, with a
  0/1 `weight` that leaves the padding out of every sum."""
  n = len(labels)
  for i in range(0, n, batch_size):
    x, y = images[i:i + batch_size], labels[i:i + batch_size]
    pad = -len(y) % multiple
    w = np.ones(len(y), np.float32)
    if pad:
      x = np.concatenate([x, np.zeros((pad,) + x.shape[1:], x.dtype)])
      y = np.concatenate([y, np.zeros((pad,), y.dtype)])
      w = np.concatenate([w, np.zeros((pad,), np.float32)])
    yield {"image": x, "label": y, "weight": w}
