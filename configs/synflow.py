"""Iterative SynFlow (Tanaka et al., 2020): 100 data-free rounds at
initialization (global ranking), then static sparse training."""

import os
import runpy

# Loaded by path, so configs work from any working directory.
_default = runpy.run_path(
    os.path.join(os.path.dirname(os.path.abspath(__file__)), "default.py"))


def get_config():
  c = _default["get_config"]()
  c.pruning.method = "synflow"
  c.pruning.sparsity = 0.98
  return c
