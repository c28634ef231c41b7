"""SAP: rewind, train, prune by the PQ index of the weights, in rounds.

SAP (Diao et al., 2023): rounds of rewind -> train -> prune, the amount
pruned set by the PQ index of the trained weights (p = 0.5, q = 1).
"""

from jaxsparse.experiments.config import base


def get_config():
  c = base()
  c.driver = "sap"
  c.driver_rounds = 6
  c.num_epochs = 20
  c.compare_dense = False
  c.pruning.sap_gamma = 1.0
  c.pruning.sap_beta = 0.9
  return c
