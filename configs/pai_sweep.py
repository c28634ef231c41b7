"""Pruning at init (SNIP, GraSP, SynFlow, magnitude) at 90/98/99.5 %.

Pruning at initialization: SNIP, GraSP and SynFlow (100 rounds) against
magnitude at init, at 90 / 98 / 99.5 % sparsity, static sparse training.
"""

from jaxsparse.experiments.config import base


def get_config():
  c = base()
  c.sweep_methods = ("snip", "grasp", "synflow", "magnitude")
  c.sweep_sparsities = (0.9, 0.98, 0.995)
  c.pruning.schedule = "one_shot"  # magnitude: pruned once at step 0
  c.pruning.begin_step = 0
  return c
