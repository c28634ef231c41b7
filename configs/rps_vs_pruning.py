"""Equal memory: magnitude pruning, SynFlow and STABLE-RPS at 10 %, 1 % and
0.1 % of the weights' floats (counting non-zeros only, as pruning papers do)."""

import os
import runpy

# Loaded by path, so configs work from any working directory.
_default = runpy.run_path(
    os.path.join(os.path.dirname(os.path.abspath(__file__)), "default.py"))


def get_config():
  c = _default["get_config"]()
  c.sweep_methods = ("magnitude", "synflow", "rps")
  c.sweep_memory = (0.1, 0.01, 0.001)
  c.pruning.mapper = "stable_rps"
  c.pruning.mask_cost = "none"  # non-zeros only (favours pruning)
  c.model_kwargs.hidden = (1024, 1024)
  return c
