"""Sweep of gradual magnitude pruning over sparsities, one table and one accuracy-vs-sparsity plot."""

import importlib.util
import os

_spec = importlib.util.spec_from_file_location(
    "_jaxsparse_cfg_base",
    os.path.join(os.path.dirname(os.path.abspath(__file__)), "_base.py"))
_base = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_base)


def get_config():
  c = _base.default_config()
  c.sweep_sparsities = (0.5, 0.8, 0.9, 0.95, 0.98, 0.99)
  return c
