"""Iterative pruning: 20 % of the remaining weights every 200 steps, 10
rounds (density 0.8^10 = 0.107)."""

import os
import runpy

# Loaded by path, so configs work from any working directory.
_default = runpy.run_path(
    os.path.join(os.path.dirname(os.path.abspath(__file__)), "default.py"))


def get_config():
  c = _default["get_config"]()
  c.pruning.schedule = "iterative"
  c.pruning.fraction = 0.2
  c.pruning.every = 200
  c.pruning.num_rounds = 10
  c.num_steps = 2400
  return c
