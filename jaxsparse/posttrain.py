"""Post-training pruning: magnitude, Wanda, SparseGPT and OWL sparsities.

Per layer, `magnitude`, `wanda` and `sparsegpt` return `(kernel, mask)` for
Flax (in, out) kernels at an exact unstructured `sparsity` or N:M `nm`;
`prune` runs them block by block over a decoder with calibration tokens.

Sun et al., 2023 (Wanda); Frantar & Alistarh, 2023 (SparseGPT); Yin et
al., 2024 (OWL).
"""

from jaxsparse._src.posttrain.layer import (
    accumulate_hessian,
    counts_exact,
    hessian,
    magnitude,
    sparsegpt,
    wanda,
    wanda_score,
)
from jaxsparse._src.posttrain.owl import outlier_ratio, owl_sparsities
from jaxsparse._src.posttrain.sequential import (
    LayerReport,
    PruneReport,
    prune,
)

__all__ = (
    "LayerReport", "PruneReport", "accumulate_hessian", "counts_exact",
    "hessian", "magnitude", "outlier_ratio", "owl_sparsities", "prune",
    "sparsegpt", "wanda", "wanda_score",
)
