"""Allocations on MNIST-1D at 95 %: random uniform/ER/ERK, global vs layer.

Layer allocations at 95 % sparsity, 3 seeds, on the MNIST-1D MLP
(40-100-100-10): random pruning at init (static sparse training) with
uniform, ER and ERK layer densities (Evci et al., 2020), and Zhu & Gupta
(2017) gradual magnitude pruning ranked per layer vs globally. The plan
(--dry_run) and results_seeds.txt list each allocation's layer densities.
"""

from jaxsparse.experiments.config import mnist1d_base


def get_config():
  c = mnist1d_base()
  c.sweep_sparsities = (0.95,)
  random = "pruning.method='random'; pruning.schedule='constant'"
  gradual = "pruning.method='magnitude'; pruning.schedule='polynomial'"
  c.sweep_variants = (
      f"random_uniform: {random}; pruning.allocation='uniform'",
      f"random_er: {random}; pruning.allocation='er'",
      f"random_erk: {random}; pruning.allocation='erk'",
      f"zhu_gupta_layer: {gradual}; pruning.allocation='uniform'",
      f"zhu_gupta_global: {gradual}; pruning.allocation='global'",
  )
  return c
