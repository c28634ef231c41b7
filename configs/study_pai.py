"""Pruning at init on MNIST-1D: SynFlow, SNIP, GraSP, magnitude, random.

Pruning at initialization across compression 10^1, 10^2, 10^3 (sparsity
90 / 99 / 99.9 %), 3 seeds, static sparse training after, on the MNIST-1D
MLP: SynFlow (100 data-free rounds, Tanaka et al., 2020), SNIP (Lee et al.,
2019), GraSP (Wang et al., 2020) and magnitude, all ranked globally, and
random (uniform per layer). results_seeds.txt and layer_density_seeds.png
show the per-layer densities, where layer collapse appears.
"""

from jaxsparse.experiments.config import mnist1d_base


def get_config():
  c = mnist1d_base()
  c.num_epochs = 20
  c.sweep_sparsities = (0.9, 0.99, 0.999)
  c.sweep_variants = (
      "synflow: pruning.method='synflow'",
      "snip: pruning.method='snip'",
      "grasp: pruning.method='grasp'",
      "magnitude: pruning.method='magnitude'; pruning.schedule='one_shot'; "
      "pruning.begin_step=0; pruning.allocation='global'",
      "random: pruning.method='random'; pruning.schedule='constant'",
  )
  return c
