"""SNIP (Lee et al., 2019): masks from |theta * grad| on a class-balanced
batch at initialization (global ranking), then static sparse training."""

import os
import runpy

# Loaded by path, so configs work from any working directory.
_default = runpy.run_path(
    os.path.join(os.path.dirname(os.path.abspath(__file__)), "default.py"))


def get_config():
  c = _default["get_config"]()
  c.pruning.method = "snip"
  return c
