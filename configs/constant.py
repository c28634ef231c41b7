"""Magnitude pruning to 90 % at step 0 (prune at init), then training."""

from jaxsparse.experiments.config import base


def get_config():
  c = base()
  c.pruning.schedule = "constant"
  return c
