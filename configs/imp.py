"""Lottery-ticket IMP: prune 20 % globally per level, rewind to init, 5 levels.

Lottery-ticket IMP (Frankle & Carbin, 2019): train, prune 20 % of the
remaining weights globally, rewind to initialization; five levels
(density 0.8^j).
"""

from jaxsparse.experiments.config import base


def get_config():
  c = base()
  c.driver = "imp"
  c.driver_rounds = 5
  c.num_epochs = 20
  c.compare_dense = False
  return c
