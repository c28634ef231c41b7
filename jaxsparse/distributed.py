"""Meshes and many processes: masks sharded like their weights.

`param_shardings` shards params by logical axis rules; `like_params` gives
every param-shaped leaf of any other tree (masks, packed masks, optimizer
slots, scores) its parameter's sharding. Under `jax.jit` with these in/out
shardings a mask update reads only local shards: the threshold searches
all-reduce small histograms, never gather a kernel (`collective_bytes`
reads that off the compiled HLO). `initialize` starts `jax.distributed`
from flags or the environment; `launch` starts several local processes
as one run (tests, CPU studies).
"""

from jaxsparse._src.distributed.local import launch, start, wait_all
from jaxsparse._src.distributed.runtime import (
    from_process_local,
    global_array,
    global_tree,
    initialize,
    is_main_process,
    process_rows,
    to_host,
)
from jaxsparse._src.distributed.sharding import (
    DATA,
    DEFAULT_PARAM_AXES,
    DEFAULT_RULES,
    MODEL,
    batch_sharding,
    collective_bytes,
    like_params,
    logical_axes,
    make_mesh,
    packed_spec,
    param_shardings,
    param_spec,
    replicated,
)

__all__ = (
    "DATA", "DEFAULT_PARAM_AXES", "DEFAULT_RULES", "MODEL", "batch_sharding",
    "collective_bytes", "from_process_local", "global_array", "global_tree",
    "initialize", "is_main_process", "launch", "like_params",
    "logical_axes", "make_mesh", "packed_spec", "param_shardings",
    "param_spec", "process_rows", "replicated", "start", "to_host",
    "wait_all",
)
