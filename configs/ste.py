"""Magnitude STE at 90 % sparsity: masks recomputed from the dense weights every
step, gradients reach all weights (gradual target, Zhu & Gupta)."""

import os
import runpy

# Loaded by path, so configs work from any working directory.
_default = runpy.run_path(
    os.path.join(os.path.dirname(os.path.abspath(__file__)), "default.py"))


def get_config():
  c = _default["get_config"]()
  c.pruning.method = "ste"
  c.pruning.score = "magnitude"
  return c
