"""Sharing vs pruning on MNIST-1D: HashedNet, ROAST, STABLE-RPS at 10 / 1 %.

Randomized parameter sharing (HashedNet, Chen et al., 2015; ROAST, Desai
et al., 2022; STABLE-RPS, Desai & Shrivastava, 2023) against gradual
magnitude pruning at matched memory, 10 % and 1 % of the weights' floats
(pruning counts non-zeros only), 3 seeds, on a 40-512-512-10 MNIST-1D MLP.
"""

from jaxsparse.experiments.config import mnist1d_base


def get_config():
  c = mnist1d_base()
  c.model_kwargs.hidden = (512, 512)  # 1 %: 2,877 floats, ROAST tiles 1,024
  c.sweep_memory = (0.1, 0.01)
  c.pruning.mask_cost = "none"  # non-zeros only (favours pruning)
  c.sweep_variants = (
      "hashednet: pruning.method='rps'; pruning.mapper='hashednet'",
      "roast: pruning.method='rps'; pruning.mapper='roast'",
      "stable_rps: pruning.method='rps'; pruning.mapper='stable_rps'",
      "magnitude: pruning.method='magnitude'",
  )
  return c
