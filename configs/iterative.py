"""Iterative pruning: 20 % of the remaining weights every 200 steps, 10 rounds (density 0.8^10 = 0.107)."""

import importlib.util
import os

_spec = importlib.util.spec_from_file_location(
    "_jaxsparse_cfg_base",
    os.path.join(os.path.dirname(os.path.abspath(__file__)), "_base.py"))
_base = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_base)


def get_config():
  c = _base.default_config()
  c.pruning.schedule = "iterative"
  c.pruning.fraction = 0.2
  c.pruning.every = 200
  c.pruning.num_rounds = 10
  c.num_steps = 2400
  return c
