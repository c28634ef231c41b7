"""Magnitude STE at 90 %: masks from the dense weights every step.

Magnitude STE at 90 % sparsity: masks recomputed from the dense weights every
step, gradients reach all weights (gradual target, Zhu & Gupta).
"""

from jaxsparse.experiments.config import base


def get_config():
  c = base()
  c.pruning.method = "ste"
  c.pruning.score = "magnitude"
  return c
