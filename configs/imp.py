"""Lottery-ticket IMP (Frankle & Carbin, 2019): train, prune 20 % of the
remaining weights globally, rewind to initialization; five levels
(density 0.8^j)."""

import os
import runpy

# Loaded by path, so configs work from any working directory.
_default = runpy.run_path(
    os.path.join(os.path.dirname(os.path.abspath(__file__)), "default.py"))


def get_config():
  c = _default["get_config"]()
  c.driver = "imp"
  c.driver_rounds = 5
  c.num_epochs = 20
  c.compare_dense = False
  return c
