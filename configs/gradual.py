"""Zhu & Gupta gradual magnitude pruning (the default)."""

from jaxsparse.experiments.config import base


def get_config():
  c = base()

  return c
