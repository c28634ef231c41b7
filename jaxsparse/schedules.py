"""Pruning schedules: `sparsity(step)` and `is_update_step(step)`.

Zhu & Gupta's polynomial (gradual) schedule, one-shot, constant and
iterative pruning, and `periodic_updates` (the update predicate that
iterative pruning and dynamic sparse training share).
"""

from jaxsparse._src.core.schedules import (
    PruningSchedule,
    constant,
    iterative,
    one_shot,
    periodic_updates,
    polynomial,
)

__all__ = ("PruningSchedule", "constant", "iterative", "one_shot",
           "periodic_updates", "polynomial")
