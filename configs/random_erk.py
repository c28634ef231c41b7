"""Random pruning at init with ERK layer densities (static sparse training)."""

import os
import runpy

# Loaded by path, so configs work from any working directory.
_default = runpy.run_path(
    os.path.join(os.path.dirname(os.path.abspath(__file__)), "default.py"))


def get_config():
  c = _default["get_config"]()
  c.pruning.method = "random"
  c.pruning.schedule = "constant"
  c.pruning.allocation = "erk"
  return c
