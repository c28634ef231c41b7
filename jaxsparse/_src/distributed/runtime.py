"""Many processes: `jax.distributed` start-up and host <-> global arrays.

On Cloud TPU, `jax.distributed.initialize()` finds the coordinator, the
process count and this process's id itself; elsewhere (GPU clusters, CPU
processes on one machine) they come from arguments or the environment:
`JAXSPARSE_COORDINATOR_ADDRESS` (``host:port``), `JAXSPARSE_NUM_PROCESSES`,
`JAXSPARSE_PROCESS_ID`.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import numpy as np
from jax.sharding import NamedSharding

ENV_ADDRESS = "JAXSPARSE_COORDINATOR_ADDRESS"
ENV_NUM = "JAXSPARSE_NUM_PROCESSES"
ENV_ID = "JAXSPARSE_PROCESS_ID"


def initialize(coordinator_address: str | None = None,
               num_processes: int | None = None,
               process_id: int | None = None, *, auto: bool = False,
               timeout_s: int = 300) -> bool:
  """Starts `jax.distributed` if this is a multi-process run.

  Arguments left None are read from the environment (see module doc). With
  `auto=True` and nothing given, calls `jax.distributed.initialize()` with
  no arguments (Cloud TPU, SLURM, ... detect themselves). Returns True if
  `jax.distributed` was started. Must run before any other JAX call.
  """
  env = os.environ
  address = coordinator_address or env.get(ENV_ADDRESS) or None
  if num_processes is None and env.get(ENV_NUM):
    num_processes = int(env[ENV_NUM])
  if process_id is None and env.get(ENV_ID):
    process_id = int(env[ENV_ID])
  if address is None and num_processes is None and process_id is None:
    if auto:
      jax.distributed.initialize()
      return True
    return False
  if address is None or num_processes is None or process_id is None:
    raise ValueError(
        "a multi-process run needs all of coordinator_address, "
        f"num_processes and process_id (got {address!r}, {num_processes!r}, "
        f"{process_id!r}; flags or ${ENV_ADDRESS}, ${ENV_NUM}, ${ENV_ID}).")
  if num_processes < 1 or not 0 <= process_id < num_processes:
    raise ValueError(f"process_id={process_id} must be in "
                     f"[0, num_processes={num_processes}).")
  if num_processes == 1:
    return False
  jax.distributed.initialize(
      address, num_processes=num_processes, process_id=process_id,
      initialization_timeout=timeout_s)
  return True


def is_main_process() -> bool:
  """True on process 0, the one that writes tables, plots and logs."""
  return jax.process_index() == 0


def global_array(x: Any, sharding: NamedSharding) -> jax.Array:
  """A global array from a host value that every process holds in full
  (initial params, the evaluation set): each device takes its slice."""
  x = np.asarray(x)
  return jax.make_array_from_callback(x.shape, sharding, lambda idx: x[idx])


def global_tree(tree: Any, shardings: Any) -> Any:
  """`global_array` over a tree (None leaves of `shardings` are skipped)."""
  return jax.tree.map(
      lambda s, x: global_array(x, s), shardings, tree,
      is_leaf=lambda s: isinstance(s, NamedSharding))


def process_rows(batch_size: int) -> slice:
  """The rows of a global batch that this process feeds (contiguous, in
  process order, as `jax.make_array_from_process_local_data` expects)."""
  n = jax.process_count()
  if batch_size % n:
    raise ValueError(f"batch_size={batch_size} is not divisible by the "
                     f"{n} processes.")
  per = batch_size // n
  i = jax.process_index()
  return slice(i * per, (i + 1) * per)


def from_process_local(local: Any, sharding: NamedSharding,
                       global_batch: int) -> Any:
  """A global batch (leading axis split by `sharding`, e.g. `P("data")`)
  from the rows this process holds (`process_rows`)."""
  return jax.tree.map(
      lambda x: jax.make_array_from_process_local_data(
          sharding, np.asarray(x), (global_batch,) + np.shape(x)[1:]),
      local)


def to_host(tree: Any) -> Any:
  """Numpy copies of (possibly sharded, multi-process) arrays: fully
  replicated arrays are read locally, others gathered to every process."""
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top

  def one(x):
    if x is None:
      return None
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
      if x.is_fully_replicated:
        return np.asarray(x.addressable_data(0))
      return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return np.asarray(x)
  return jax.tree.map(one, tree, is_leaf=lambda x: x is None)
