"""Equal memory: pruning, SynFlow and STABLE-RPS at 10 / 1 / 0.1 %.

Equal memory: magnitude pruning, SynFlow and STABLE-RPS at 10 %, 1 % and
0.1 % of the weights' floats (counting non-zeros only, as pruning papers do).
"""

from jaxsparse.experiments.config import base


def get_config():
  c = base()
  c.sweep_methods = ("magnitude", "synflow", "rps")
  c.sweep_memory = (0.1, 0.01, 0.001)
  c.pruning.mapper = "stable_rps"
  c.pruning.mask_cost = "none"  # non-zeros only (favours pruning)
  c.model_kwargs.hidden = (1024, 1024)
  return c
