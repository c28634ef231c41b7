"""Pruning at initialization: SNIP, GraSP, SynFlow, and the PQ index with SAP.

Scores (`snip`, `grasp`, `synflow`) are `(params, ...) -> scores`; masks come
from `masks_from_scores` (one global ranking by default) or, for iterative
SynFlow, `synflow_masks`. `pq_index*` measure sparsity (Diao et al., 2023),
and `sap_*` / `run_sap` prune by it.
"""

from jaxsparse._src.pai.pai import (
    class_balanced_batch,
    grasp,
    iterative_synflow,
    masks_from_scores,
    nnx_apply_fn,
    snip,
    synaptic_flow,
    synflow,
    synflow_density,
    synflow_masks,
)
from jaxsparse._src.pai.pqi import (
    pq_index,
    pq_index_neurons,
    pq_index_tree,
    run_sap,
    sap_counts,
    sap_prune,
    sap_stats,
)

__all__ = (
    "class_balanced_batch", "grasp", "iterative_synflow", "masks_from_scores",
    "nnx_apply_fn", "snip", "synaptic_flow", "synflow", "synflow_density",
    "synflow_masks", "pq_index", "pq_index_neurons", "pq_index_tree",
    "run_sap", "sap_counts", "sap_prune", "sap_stats",
)
