"""Language model: sparse training (gradual magnitude, RigL, SR-STE 2:4)."""

from jaxsparse.experiments.config import lm_base


def get_config():
  c = lm_base()
  c.pruning.method = "magnitude"
  c.pruning.sparsity = 0.5
  c.pruning.schedule = "polynomial"
  c.pruning.frequency = 50
  c.pruning.end_fraction = 0.6
  c.sweep_methods = ("magnitude", "rigl")
  return c
