"""Iterative pruning: 20 % of the rest every 200 steps, 10 rounds (0.893).

Iterative pruning: 20 % of the remaining weights every 200 steps, 10
rounds (density 0.8^10 = 0.107).
"""

from jaxsparse.experiments.config import base


def get_config():
  c = base()
  c.pruning.schedule = "iterative"
  c.pruning.fraction = 0.2
  c.pruning.every = 200
  c.pruning.num_rounds = 10
  c.num_steps = 2400
  c.num_epochs = -1
  return c
