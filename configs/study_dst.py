"""Dynamic sparse training on MNIST-1D: SET vs RigL vs static at 95 %.

SET (Mocanu et al., 2018) and RigL (Evci et al., 2020) against static
random sparsity at 95 %, same uniform layer densities (equal FLOPs of the
sparse forward pass), 3 seeds, on the MNIST-1D MLP; drop fraction 0.3
cosine-decayed, Delta T = 100. The normalized mask Hamming distance between
evaluations (every 100 steps) goes to mask_change_seeds.png.
"""

from jaxsparse.experiments.config import mnist1d_base


def get_config():
  c = mnist1d_base()
  c.eval_every = 100
  c.pruning.sparsity = 0.95
  c.pruning.allocation = "uniform"
  c.pruning.frequency = 100
  c.pruning.end_fraction = 0.75
  c.sweep_variants = (
      "static: pruning.method='random'; pruning.schedule='constant'",
      "set: pruning.method='set'",
      "rigl: pruning.method='rigl'",
  )
  return c
