"""Language model: post-training pruning (magnitude, Wanda, SparseGPT, OWL).

Every method at 50 %, 70 % and 2:4 in one table against the dense model.
"""

from jaxsparse.experiments.config import lm_base


def get_config():
  c = lm_base()
  c.posttrain.methods = ("magnitude", "wanda", "sparsegpt", "owl_wanda",
                         "owl_sparsegpt")
  c.posttrain.targets = ("0.5", "0.7", "2:4")
  return c
