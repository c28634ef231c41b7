"""2x2 block pruning to 90 %, gradual."""

from jaxsparse.experiments.config import base


def get_config():
  c = base()
  c.pruning.structure = "block"
  c.pruning.block_shape = (2, 2)  # divides every MLP kernel (out: 100x10)
  return c
