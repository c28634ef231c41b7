"""jaxsparse: neural-network sparsity in JAX, with masks as optax state."""

from jaxsparse import nn
from jaxsparse._src.allocation import (
    Allocation,
    count_for,
    custom,
    er,
    erk,
    erk_densities,
    global_,
    uniform,
)
from jaxsparse._src.bits import pack_masks, replace_masks, unpack_masks
from jaxsparse._src.dst import (
    DSTState,
    constant_drop_fraction,
    cosine_drop_fraction,
    dst,
    mask_hamming,
)
from jaxsparse._src.lottery import (
    imp_num_rounds,
    imp_prune,
    imp_prune_count,
    imp_remaining,
    rewind,
    run_imp,
)
from jaxsparse._src.masks import (
    apply_masks,
    check_masks,
    get_masks,
    is_kernel,
    ones_masks,
    sparsity,
    unwrap,
)
from jaxsparse._src.pai import (
    class_balanced_batch,
    grasp_scores,
    masks_from_scores,
    nnx_apply_fn,
    snip_scores,
    synaptic_flow,
    synflow_density,
    synflow_masks,
    synflow_pruner,
    synflow_scores,
)
from jaxsparse._src.pqi import (
    pq_index,
    pq_index_neurons,
    pq_index_tree,
    run_sap,
    sap_counts,
    sap_prune,
    sap_stats,
)
from jaxsparse._src.prune import PruneState, compute_masks, prune
from jaxsparse._src.rps import (
    MemoryBudget,
    RPSGradientScalingState,
    RPSLeaf,
    RPSMemory,
    RPSSpec,
    memory_budget,
    rps_gradient_scaling,
    rps_init,
)
from jaxsparse._src.schedules import (
    PruningSchedule,
    constant,
    iterative,
    one_shot,
    periodic_updates,
    polynomial,
)
from jaxsparse._src.scores import ScoreFn, magnitude, random, saliency
from jaxsparse._src.ste import (
    SRSTE_LAMBDA,
    ste_mask,
    ste_masks,
    straight_through,
)
from jaxsparse._src.structures import (
    Structure,
    block,
    channel,
    n_m,
    unstructured,
)
from jaxsparse._src.summary import Summary, summary
from jaxsparse._src.threshold import (
    global_smallest_k,
    smallest_k_per_leaf,
    sortable_key,
)

__version__ = "0.1.0"

__all__ = (
    "pack_masks",
    "unpack_masks",
    "replace_masks",
    "ste_mask",
    "ste_masks",
    "straight_through",
    "SRSTE_LAMBDA",
    "dst",
    "DSTState",
    "cosine_drop_fraction",
    "constant_drop_fraction",
    "mask_hamming",
    "rps_init",
    "rps_gradient_scaling",
    "memory_budget",
    "RPSMemory",
    "RPSSpec",
    "RPSLeaf",
    "RPSGradientScalingState",
    "MemoryBudget",
    "masks_from_scores",
    "snip_scores",
    "grasp_scores",
    "synflow_scores",
    "synflow_masks",
    "synflow_pruner",
    "synflow_density",
    "synaptic_flow",
    "nnx_apply_fn",
    "class_balanced_batch",
    "pq_index",
    "pq_index_neurons",
    "pq_index_tree",
    "sap_counts",
    "sap_stats",
    "sap_prune",
    "run_sap",
    "rewind",
    "imp_prune",
    "imp_prune_count",
    "imp_remaining",
    "imp_num_rounds",
    "run_imp",
    "Allocation", "PruneState", "PruningSchedule", "ScoreFn", "Structure",
    "Summary", "apply_masks", "block", "channel", "check_masks",
    "compute_masks", "constant", "count_for", "custom", "er", "erk",
    "erk_densities", "get_masks", "global_", "global_smallest_k",
    "is_kernel", "iterative", "nn", "magnitude", "n_m", "one_shot",
    "ones_masks", "periodic_updates",
    "polynomial", "prune", "random", "saliency", "smallest_k_per_leaf",
    "sortable_key", "sparsity", "summary", "uniform", "unstructured", "unwrap",
)
