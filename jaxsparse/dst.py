"""Dynamic sparse training: SET, RigL, and straight-through masks (STE, SR-STE).

`rigl(...)` / `set(...)` wrap an optax optimizer (`sparse_training(method,
...)` takes the method by name); `ste_mask` is called inside a loss function
for STE and SR-STE (Zhou et al., 2021), N:M included.
"""

from jaxsparse._src.dst.dst import (
    State,
    constant_drop_fraction,
    cosine_drop_fraction,
    mask_hamming,
    rigl,
    set,
    sparse_training,
)
from jaxsparse._src.dst.ste import (
    SRSTE_LAMBDA,
    ste_mask,
    ste_masks,
    straight_through,
)

__all__ = (
    "State", "constant_drop_fraction", "cosine_drop_fraction", "mask_hamming",
    "rigl", "set", "sparse_training", "SRSTE_LAMBDA", "ste_mask", "ste_masks",
    "straight_through",
)
