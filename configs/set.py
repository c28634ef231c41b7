"""SET (Mocanu et al., 2018) at 90 % sparsity with ERK allocation: random
growth, cosine-decayed drop fraction 0.3, mask update every 100 steps."""

import os
import runpy

# Loaded by path, so configs work from any working directory.
_default = runpy.run_path(
    os.path.join(os.path.dirname(os.path.abspath(__file__)), "default.py"))


def get_config():
  c = _default["get_config"]()
  c.pruning.method = "set"
  c.pruning.allocation = "erk"
  c.pruning.frequency = 100
  c.pruning.end_fraction = 0.75
  return c
