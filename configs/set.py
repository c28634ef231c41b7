"""SET at 90 % with ERK: random growth, cosine drop 0.3, every 100 steps.

SET (Mocanu et al., 2018) at 90 % sparsity with ERK allocation: random
growth, cosine-decayed drop fraction 0.3, mask update every 100 steps.
"""

from jaxsparse.experiments.config import base


def get_config():
  c = base()
  c.pruning.method = "set"
  c.pruning.allocation = "erk"
  c.pruning.frequency = 100
  c.pruning.end_fraction = 0.75
  return c
