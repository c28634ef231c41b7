"""N:M on MNIST-1D: 2:4 STE vs SR-STE vs one-shot magnitude 2:4.

2:4 sparsity along the input dimension, 3 seeds, on the MNIST-1D MLP: STE
(masks recomputed from the dense weights every step), SR-STE (Zhou et al.,
2021, lambda_W = 2e-4) and one-shot 2:4 magnitude pruning at step 300 with
fine-tuning after, against dense.
"""

from jaxsparse.experiments.config import mnist1d_base


def get_config():
  c = mnist1d_base()
  c.pruning.structure = "n_m"
  c.pruning.n = 2
  c.pruning.m = 4
  c.pruning.sparsity = 0.5  # what 2:4 prunes
  c.sweep_variants = (
      "ste: pruning.method='ste'; pruning.srste_lambda=0.0",
      "srste: pruning.method='ste'; pruning.srste_lambda=2e-4",
      "magnitude: pruning.method='magnitude'; pruning.schedule='one_shot'; "
      "pruning.begin_step=300",
  )
  return c
