"""Sweep of gradual magnitude pruning over sparsities: one table and one
accuracy-vs-sparsity plot."""

import os
import runpy

# Loaded by path, so configs work from any working directory.
_default = runpy.run_path(
    os.path.join(os.path.dirname(os.path.abspath(__file__)), "default.py"))


def get_config():
  c = _default["get_config"]()
  c.sweep_sparsities = (0.5, 0.8, 0.9, 0.95, 0.98, 0.99)
  return c
