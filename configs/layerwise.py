"""Layer-wise (uniform) magnitude pruning."""

from jaxsparse.experiments.config import base


def get_config():
  c = base()
  c.pruning.allocation = "uniform"
  return c
