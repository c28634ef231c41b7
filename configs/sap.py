"""SAP (Diao et al., 2023): rounds of rewind -> train -> prune, the amount
pruned set by the PQ index of the trained weights (p = 0.5, q = 1)."""

import os
import runpy

# Loaded by path, so configs work from any working directory.
_default = runpy.run_path(
    os.path.join(os.path.dirname(os.path.abspath(__file__)), "default.py"))


def get_config():
  c = _default["get_config"]()
  c.driver = "sap"
  c.driver_rounds = 6
  c.num_epochs = 20
  c.compare_dense = False
  c.pruning.sap_gamma = 1.0
  c.pruning.sap_beta = 0.9
  return c
