"""Global magnitude pruning with a per-layer minimum (Gupta et al.,
MT = 0.05 %)."""

import os
import runpy

# Loaded by path, so configs work from any working directory.
_default = runpy.run_path(
    os.path.join(os.path.dirname(os.path.abspath(__file__)), "default.py"))


def get_config():
  c = _default["get_config"]()
  c.pruning.allocation = "global"
  c.pruning.min_keep_fraction = 5e-4
  c.pruning.sparsity = 0.98
  return c
