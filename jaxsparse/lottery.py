"""Lottery tickets: iterative magnitude pruning with rewinding.

Frankle & Carbin, 2019; Frankle et al., 2020 (rewinding to step k).
"""

from jaxsparse._src.lottery.lottery import (
    num_rounds,
    prune,
    prune_count,
    remaining,
    rewind,
    run,
)

__all__ = ("num_rounds", "prune", "prune_count", "remaining", "rewind", "run")
