"""MNIST-1D at 95 %: random uniform vs ERK, SynFlow vs magnitude at 10^2.

The harder embedded benchmark's headline comparison, 3 seeds each, on the
MNIST-1D MLP (40-100-100-10): dense; random pruning at init with uniform
and ERK layer densities (95 %); gradual magnitude pruning (Zhu & Gupta,
95 %); SynFlow, magnitude at init (per layer and global) and random at
compression 10^2 (99 %), static sparse training after. Mean ± std over
seeds in results_seeds.txt.
"""

from jaxsparse.experiments.config import mnist1d_base


def get_config():
  c = mnist1d_base()
  static = "pruning.schedule='constant'"
  at_init = "pruning.schedule='one_shot'; pruning.begin_step=0"
  c.sweep_variants = (
      f"random_uniform: pruning.method='random'; {static}; "
      "pruning.allocation='uniform'; pruning.sparsity=0.95",
      f"random_erk: pruning.method='random'; {static}; "
      "pruning.allocation='erk'; pruning.sparsity=0.95",
      "gradual_magnitude: pruning.method='magnitude'; "
      "pruning.schedule='polynomial'; pruning.sparsity=0.95",
      "synflow_c100: pruning.method='synflow'; pruning.sparsity=0.99",
      f"magnitude_init_c100: pruning.method='magnitude'; {at_init}; "
      "pruning.sparsity=0.99",
      f"magnitude_global_init_c100: pruning.method='magnitude'; {at_init}; "
      "pruning.allocation='global'; pruning.sparsity=0.99",
      f"random_uniform_c100: pruning.method='random'; {static}; "
      "pruning.sparsity=0.99",
  )
  return c
