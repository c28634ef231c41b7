"""RigL at 90 % with ERK: grow by |gradient|, cosine drop 0.3, every 100.

RigL (Evci et al., 2020) at 90 % sparsity with ERK allocation: growth by
dense-gradient magnitude, cosine-decayed drop fraction 0.3, Delta T = 100.
"""

from jaxsparse.experiments.config import base


def get_config():
  c = base()
  c.pruning.method = "rigl"
  c.pruning.allocation = "erk"
  c.pruning.frequency = 100
  c.pruning.end_fraction = 0.75
  return c
