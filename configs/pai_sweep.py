"""Pruning at initialization: SNIP, GraSP and SynFlow (100 rounds) against
magnitude at init, at 90 / 98 / 99.5 % sparsity, static sparse training."""

import os
import runpy

# Loaded by path, so configs work from any working directory.
_default = runpy.run_path(
    os.path.join(os.path.dirname(os.path.abspath(__file__)), "default.py"))


def get_config():
  c = _default["get_config"]()
  c.sweep_methods = ("snip", "grasp", "synflow", "magnitude")
  c.sweep_sparsities = (0.9, 0.98, 0.995)
  c.pruning.schedule = "one_shot"  # magnitude: pruned once at step 0
  c.pruning.begin_step = 0
  return c
