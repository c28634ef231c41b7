"""Allocations: how a target sparsity is spread across layers.

`uniform` (layer-wise), `er` / `erk` (Mocanu et al. 2018; Evci et al. 2020),
`global_` (one ranking over all layers) and `custom` (per-path sparsities).
"""

from jaxsparse._src.core.allocation import (
    Allocation,
    count_for,
    custom,
    er,
    erk,
    erk_densities,
    global_,
    uniform,
)

__all__ = ("Allocation", "count_for", "custom", "er", "erk", "erk_densities",
           "global_", "uniform")
