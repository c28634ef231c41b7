"""jaxsparse: neural-network sparsity in JAX, with masks as optax state.

The everyday API lives here; each method family is a submodule:
`schedules`, `scores`, `allocation`, `structures`, `pai`, `lottery`, `dst`,
`sharing`, `nn`, `lm`, `posttrain`, `activations`, `distributed`,
`scaling`. See ARCHITECTURE.md.
"""

from jaxsparse import (
    activations,
    allocation,
    distributed,
    dst,
    lm,
    lottery,
    nn,
    pai,
    posttrain,
    scaling,
    schedules,
    scores,
    sharing,
    structures,
)
from jaxsparse._src.core.bits import pack_masks, replace_masks, unpack_masks
from jaxsparse._src.core.masks import (
    apply_masks,
    check_masks,
    get_masks,
    is_kernel,
    ones_masks,
    sparsity,
)
from jaxsparse._src.core.prune import PruneState, masks, prune
from jaxsparse._src.core.schedules import (
    PruningSchedule,
    constant,
    iterative,
    one_shot,
    periodic_updates,
    polynomial,
)
from jaxsparse._src.core.summary import Summary, summary

__version__ = "0.1.0"

__all__ = (
    "PruneState", "PruningSchedule", "Summary", "activations", "allocation",
    "apply_masks", "check_masks", "constant", "distributed", "dst",
    "get_masks", "is_kernel", "iterative", "lm", "lottery", "masks", "nn",
    "one_shot", "ones_masks", "pack_masks", "pai", "periodic_updates",
    "polynomial", "posttrain", "prune", "replace_masks", "scaling",
    "schedules", "scores", "sharing", "sparsity", "structures", "summary",
    "unpack_masks",
)
