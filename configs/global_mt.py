"""Global magnitude pruning with a per-layer minimum keep (MT = 0.05 %).

Global magnitude pruning with a per-layer minimum (Gupta et al.,
MT = 0.05 %).
"""

from jaxsparse.experiments.config import base


def get_config():
  c = base()
  c.pruning.allocation = "global"
  c.pruning.min_keep_fraction = 5e-4
  c.pruning.sparsity = 0.98
  return c
