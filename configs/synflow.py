"""Iterative SynFlow (100 data-free rounds), then static sparse training.

Iterative SynFlow (Tanaka et al., 2020): 100 data-free rounds at
initialization (global ranking), then static sparse training.
"""

from jaxsparse.experiments.config import base


def get_config():
  c = base()
  c.pruning.method = "synflow"
  c.pruning.sparsity = 0.98
  return c
