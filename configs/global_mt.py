"""Global magnitude pruning with a per-layer minimum (Gupta et al. MT = 0.05 %)."""

import importlib.util
import os

_spec = importlib.util.spec_from_file_location(
    "_jaxsparse_cfg_base",
    os.path.join(os.path.dirname(os.path.abspath(__file__)), "_base.py"))
_base = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_base)


def get_config():
  c = _base.default_config()
  c.pruning.allocation = "global"
  c.pruning.min_keep_fraction = 5e-4
  c.pruning.sparsity = 0.98
  return c
