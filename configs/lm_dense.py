"""Language model: a byte-level LLaMA (2 x 128) on Python's docs, dense only."""

from jaxsparse.experiments.config import lm_base


def get_config():
  c = lm_base()
  c.compare_dense = False
  return c
