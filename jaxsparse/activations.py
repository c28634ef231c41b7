"""Activation sparsity: measure it, induce it, turn it into speed.

Measure (`measure_density`: per-layer fraction of non-zero inputs and of
inputs above a threshold, over batches, for any Flax NNX model), induce at
inference with no retraining (`topk_hook`, `teal_thresholds`,
`cats_thresholds`, `relufied`, applied by `sparsify`; `straight_through`
to train with them), and decode faster at batch 1 (`sparse_matvec`,
`mlp_decode`: only the weight rows of active entries are read; a Pallas
TPU kernel beside the CPU path).

Example::

  from jaxsparse import activations as act, lm
  th = act.teal_thresholds(model, calib_batches, 0.5)
  sparse = act.sparsify(model, act.threshold_hook(th))
  lm.evaluate(sparse, valid_tokens, 128, 16)
  act.measure_density(model, valid_batches, hook=act.threshold_hook(th))

References:
  Li et al., 2023, The lazy neuron phenomenon. Liu et al., 2024, TEAL:
  training-free activation sparsity in large language models. Lee et al.,
  2024, CATS. Mirzadeh et al., 2023, ReLU strikes back.
"""

from jaxsparse._src.activations.decode import (
    ActiveEntries,
    MLPWeights,
    active_entries,
    dense_mlp_decode,
    mlp_decode,
    pack_mlp,
    pallas_rows_matvec,
    sparse_matvec,
)
from jaxsparse._src.activations.induce import (
    LLAMA_INPUT_TYPES,
    Sparsified,
    calibrate,
    cats_thresholds,
    chain,
    default_include,
    is_gate_activation,
    relufied,
    shifted_relu,
    sparsify,
    straight_through,
    teal_thresholds,
    threshold,
    threshold_hook,
    topk,
    topk_hook,
    topk_mask,
)
from jaxsparse._src.activations.measure import (
    LINEAR_TYPES,
    LayerDensity,
    collect,
    intercept,
    measure_density,
    path_name,
)

__all__ = (
    "ActiveEntries", "LINEAR_TYPES", "LLAMA_INPUT_TYPES", "LayerDensity",
    "MLPWeights", "Sparsified", "active_entries", "calibrate",
    "cats_thresholds", "chain", "collect", "default_include",
    "dense_mlp_decode", "intercept", "is_gate_activation", "measure_density",
    "mlp_decode", "pack_mlp", "pallas_rows_matvec", "path_name", "relufied",
    "shifted_relu", "sparse_matvec", "sparsify", "straight_through",
    "teal_thresholds", "threshold", "threshold_hook", "topk", "topk_hook",
    "topk_mask",
)
