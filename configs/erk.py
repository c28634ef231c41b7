"""Magnitude pruning with ERK layer densities."""

from jaxsparse.experiments.config import base


def get_config():
  c = base()
  c.pruning.allocation = "erk"
  return c
