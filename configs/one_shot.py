"""One-shot magnitude pruning to 90 % at step 300, then fine-tuning."""

from jaxsparse.experiments.config import base


def get_config():
  c = base()
  c.pruning.schedule = "one_shot"
  c.pruning.begin_step = 300
  return c
