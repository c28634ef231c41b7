"""2:4 structured sparsity along the input dimension, one-shot at step 300."""

import os
import runpy

# Loaded by path, so configs work from any working directory.
_default = runpy.run_path(
    os.path.join(os.path.dirname(os.path.abspath(__file__)), "default.py"))


def get_config():
  c = _default["get_config"]()
  c.pruning.structure = "n_m"
  c.pruning.n = 2
  c.pruning.m = 4
  c.pruning.schedule = "one_shot"
  c.pruning.begin_step = 300
  return c
