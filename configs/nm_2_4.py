"""2:4 structured sparsity along the input dimension, one-shot at step 300."""

from jaxsparse.experiments.config import base


def get_config():
  c = base()
  c.pruning.structure = "n_m"
  c.pruning.n = 2
  c.pruning.m = 4
  c.pruning.sparsity = 0.5  # what 2:4 prunes
  c.pruning.schedule = "one_shot"
  c.pruning.begin_step = 300
  return c
