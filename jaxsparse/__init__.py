"""jaxsparse: neural-network sparsity in JAX, with masks as optax state."""

from jaxsparse import nn

from jaxsparse._src.allocation import Allocation
from jaxsparse._src.allocation import count_for
from jaxsparse._src.allocation import custom
from jaxsparse._src.allocation import er
from jaxsparse._src.allocation import erk
from jaxsparse._src.allocation import erk_densities
from jaxsparse._src.allocation import global_
from jaxsparse._src.allocation import uniform
from jaxsparse._src.masks import apply_masks
from jaxsparse._src.masks import check_masks
from jaxsparse._src.masks import get_masks
from jaxsparse._src.masks import is_kernel
from jaxsparse._src.masks import ones_masks
from jaxsparse._src.masks import sparsity
from jaxsparse._src.masks import unwrap
from jaxsparse._src.pai import masks_from_scores
from jaxsparse._src.pai import snip_scores
from jaxsparse._src.pai import grasp_scores
from jaxsparse._src.pai import synflow_scores
from jaxsparse._src.pai import synflow_masks
from jaxsparse._src.pai import synflow_pruner
from jaxsparse._src.pai import synflow_density
from jaxsparse._src.pai import synaptic_flow
from jaxsparse._src.pai import nnx_apply_fn
from jaxsparse._src.pai import class_balanced_batch
from jaxsparse._src.pqi import pq_index
from jaxsparse._src.pqi import pq_index_neurons
from jaxsparse._src.pqi import pq_index_tree
from jaxsparse._src.pqi import sap_counts
from jaxsparse._src.pqi import sap_stats
from jaxsparse._src.pqi import sap_prune
from jaxsparse._src.pqi import run_sap
from jaxsparse._src.lottery import rewind
from jaxsparse._src.lottery import imp_prune
from jaxsparse._src.lottery import imp_prune_count
from jaxsparse._src.lottery import imp_remaining
from jaxsparse._src.lottery import imp_num_rounds
from jaxsparse._src.lottery import run_imp
from jaxsparse._src.rps import rps_init
from jaxsparse._src.rps import rps_gradient_scaling
from jaxsparse._src.rps import memory_budget
from jaxsparse._src.rps import RPSMemory
from jaxsparse._src.rps import RPSSpec
from jaxsparse._src.rps import RPSLeaf
from jaxsparse._src.rps import RPSGradientScalingState
from jaxsparse._src.rps import MemoryBudget
from jaxsparse._src.ste import ste_mask
from jaxsparse._src.ste import ste_masks
from jaxsparse._src.ste import straight_through
from jaxsparse._src.ste import SRSTE_LAMBDA
from jaxsparse._src.dst import dst
from jaxsparse._src.dst import DSTState
from jaxsparse._src.dst import cosine_drop_fraction
from jaxsparse._src.dst import constant_drop_fraction
from jaxsparse._src.dst import mask_hamming
from jaxsparse._src.prune import PruneState
from jaxsparse._src.prune import compute_masks
from jaxsparse._src.prune import prune
from jaxsparse._src.schedules import PruningSchedule
from jaxsparse._src.schedules import constant
from jaxsparse._src.schedules import iterative
from jaxsparse._src.schedules import one_shot
from jaxsparse._src.schedules import polynomial
from jaxsparse._src.scores import ScoreFn
from jaxsparse._src.scores import magnitude
from jaxsparse._src.scores import random
from jaxsparse._src.scores import saliency
from jaxsparse._src.structures import Structure
from jaxsparse._src.structures import block
from jaxsparse._src.structures import channel
from jaxsparse._src.structures import n_m
from jaxsparse._src.structures import unstructured
from jaxsparse._src.summary import Summary
from jaxsparse._src.summary import summary
from jaxsparse._src.threshold import global_smallest_k
from jaxsparse._src.threshold import smallest_k_per_leaf
from jaxsparse._src.threshold import sortable_key

__version__ = "0.1.0"

__all__ = (
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
    "is_kernel", "iterative", "nn", "magnitude", "n_m", "one_shot", "ones_masks",
    "polynomial", "prune", "random", "saliency", "smallest_k_per_leaf",
    "sortable_key", "sparsity", "summary", "uniform", "unstructured", "unwrap",
)
