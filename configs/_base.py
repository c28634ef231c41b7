"""Loads configs/default.py by path, so configs work from any directory."""

import importlib.util
import os


def default_config():
  path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "default.py")
  spec = importlib.util.spec_from_file_location("jaxsparse_default_cfg", path)
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod.get_config()
