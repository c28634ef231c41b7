"""Language model: SR-STE 2:4 sparse training of the block linear layers."""

from jaxsparse.experiments.config import lm_base


def get_config():
  c = lm_base()
  c.pruning.method = "ste"
  c.pruning.structure = "n_m"
  c.pruning.n = 2
  c.pruning.m = 4
  c.pruning.sparsity = 0.5  # what 2:4 prunes
  c.pruning.schedule = "constant"
  c.pruning.srste_lambda = 2e-4
  return c
