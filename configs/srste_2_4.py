"""2:4 SR-STE: N:M masks recomputed every step, lambda_W = 2e-4.

2:4 SR-STE (Zhou et al., 2021): N:M masks along the input dimension
recomputed every step, sparse-refined gradient with lambda_W = 2e-4.
"""

from jaxsparse.experiments.config import base


def get_config():
  c = base()
  c.pruning.method = "ste"
  c.pruning.structure = "n_m"
  c.pruning.n = 2
  c.pruning.m = 4
  c.pruning.sparsity = 0.5  # what 2:4 prunes
  c.pruning.srste_lambda = 2e-4
  return c
