"""Global magnitude pruning (one ranking over all layers)."""

from jaxsparse.experiments.config import base


def get_config():
  c = base()
  c.pruning.allocation = "global"
  return c
