"""Parameter sharing: HashedNet, ROAST and STABLE-RPS on a shared memory.

`init(params, compression, mapper=...)` gives `(memory, spec)`;
`spec.expand(memory)` rebuilds the full weights, `gradient_scaling(spec)`
rescales the memory's gradients, and `memory_budget` puts pruning and
sharing on one axis of stored floats per weight.
"""

from jaxsparse._src.sharing.rps import (
    MAPPERS,
    GradientScalingState,
    Leaf,
    Memory,
    MemoryBudget,
    Spec,
    gradient_scaling,
    init,
    memory_budget,
)

__all__ = ("MAPPERS", "GradientScalingState", "Leaf", "Memory",
           "MemoryBudget", "Spec", "gradient_scaling", "init",
           "memory_budget")
