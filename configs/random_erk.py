"""Random pruning at init with ERK layer densities (static sparse training)."""

from jaxsparse.experiments.config import base


def get_config():
  c = base()
  c.pruning.method = "random"
  c.pruning.schedule = "constant"
  c.pruning.allocation = "erk"
  return c
