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
    "Allocation", "PruneState", "PruningSchedule", "ScoreFn", "Structure",
    "Summary", "apply_masks", "block", "channel", "check_masks",
    "compute_masks", "constant", "count_for", "custom", "er", "erk",
    "erk_densities", "get_masks", "global_", "global_smallest_k",
    "is_kernel", "iterative", "nn", "magnitude", "n_m", "one_shot", "ones_masks",
    "polynomial", "prune", "random", "saliency", "smallest_k_per_leaf",
    "sortable_key", "sparsity", "summary", "uniform", "unstructured", "unwrap",
)
