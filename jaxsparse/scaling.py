"""Sparse scaling laws: fit L(S, N, D) to runs, predict, optimal sparsity.

`fit(sparsity, n, d, loss)` returns a `SparseScalingLaw` (a pytree of the 7
coefficients of Frantar et al., 2023, plus the fit's RMSE and hold-out
error) with `predict(sparsity, n, d)`; `optimal_sparsity(law, n, compute)`
is the loss-minimising sparsity at fixed non-zero parameters and compute.

Frantar et al., "Scaling Laws for Sparsely-Connected Foundation Models",
ICLR 2024 (arXiv:2309.08520).
"""

from jaxsparse._src.scaling.law import (
    COEFFICIENTS,
    SparseScalingLaw,
    fit,
    optimal_sparsity,
)

__all__ = ("COEFFICIENTS", "SparseScalingLaw", "fit", "optimal_sparsity")
