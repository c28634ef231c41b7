"""2:4 structured sparsity along the input dimension, one-shot at step 300."""

import importlib.util
import os

_spec = importlib.util.spec_from_file_location(
    "_jaxsparse_cfg_base",
    os.path.join(os.path.dirname(os.path.abspath(__file__)), "_base.py"))
_base = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_base)


def get_config():
  c = _base.default_config()
  c.pruning.structure = "n_m"
  c.pruning.n = 2
  c.pruning.m = 4
  c.pruning.schedule = "one_shot"
  c.pruning.begin_step = 300
  return c
