"""Structures: what one pruning decision removes.

An entry, an N:M group (Zhou et al., 2021), a block or a channel.
"""

from jaxsparse._src.core.structures import (
    Structure,
    block,
    channel,
    n_m,
    unstructured,
)

__all__ = ("Structure", "block", "channel", "n_m", "unstructured")
