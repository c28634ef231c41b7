"""RigL (Evci et al., 2020) at 90 % sparsity with ERK allocation: growth by
dense-gradient magnitude, cosine-decayed drop fraction 0.3, Delta T = 100."""

import os
import runpy

# Loaded by path, so configs work from any working directory.
_default = runpy.run_path(
    os.path.join(os.path.dirname(os.path.abspath(__file__)), "default.py"))


def get_config():
  c = _default["get_config"]()
  c.pruning.method = "rigl"
  c.pruning.allocation = "erk"
  c.pruning.frequency = 100
  c.pruning.end_fraction = 0.75
  return c
