"""2:4 SR-STE (Zhou et al., 2021): N:M masks along the input dimension
recomputed every step, sparse-refined gradient with lambda_W = 2e-4."""

import os
import runpy

# Loaded by path, so configs work from any working directory.
_default = runpy.run_path(
    os.path.join(os.path.dirname(os.path.abspath(__file__)), "default.py"))


def get_config():
  c = _default["get_config"]()
  c.pruning.method = "ste"
  c.pruning.structure = "n_m"
  c.pruning.n = 2
  c.pruning.m = 4
  c.pruning.srste_lambda = 2e-4
  return c
