"""SNIP at init (|theta * grad|, global ranking), then static sparse training.

SNIP (Lee et al., 2019): masks from |theta * grad| on a class-balanced
batch at initialization (global ranking), then static sparse training.
"""

from jaxsparse.experiments.config import base


def get_config():
  c = base()
  c.pruning.method = "snip"
  return c
