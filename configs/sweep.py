"""Gradual magnitude pruning swept over sparsities: one table and one plot.

Sweep of gradual magnitude pruning over sparsities: one table and one
accuracy-vs-sparsity plot.
"""

from jaxsparse.experiments.config import base


def get_config():
  c = base()
  c.sweep_sparsities = (0.5, 0.8, 0.9, 0.95, 0.98, 0.99)
  return c
