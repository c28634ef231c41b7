"""2x2 block pruning to 90 %, gradual."""

import os
import runpy

# Loaded by path, so configs work from any working directory.
_default = runpy.run_path(
    os.path.join(os.path.dirname(os.path.abspath(__file__)), "default.py"))


def get_config():
  c = _default["get_config"]()
  c.pruning.structure = "block"
  c.pruning.block_shape = (2, 2)  # divides every MLP kernel (out: 100x10)
  return c
