"""Default experiment: LeNet-300-100 on digits, gradual magnitude pruning to
90 % sparsity (Zhu & Gupta schedule), next to the dense baseline."""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.name = ""
  c.dataset = "digits"
  c.data_dir = ""
  c.model = "mlp"
  c.model_kwargs = ml_collections.ConfigDict()
  c.seed = 0
  c.batch_size = 64
  c.num_epochs = 60
  c.num_steps = -1  # > 0 overrides num_epochs
  c.optimizer = "adam"
  c.learning_rate = 3e-3
  c.lr_schedule = "cosine"  # constant | cosine
  c.momentum = 0.9
  c.nesterov = False
  c.weight_decay = 1e-4
  c.eval_every = 100
  c.checkpoint_every = 500
  c.compare_dense = True
  c.sweep_sparsities = ()
  c.stop_after = -1  # stop early (simulates an interruption); -1: never

  p = c.pruning = ml_collections.ConfigDict()
  p.method = "magnitude"  # none | magnitude | random | saliency
  p.schedule = "polynomial"  # constant | one_shot | polynomial | iterative
  p.sparsity = 0.9
  p.initial_sparsity = 0.0
  p.begin_step = 0
  p.end_step = -1  # -1: end_fraction of training
  p.end_fraction = 0.6
  p.frequency = 50
  p.fraction = 0.2  # iterative: pruned fraction of the rest per round
  p.every = 200
  p.num_rounds = 5
  p.allocation = "uniform"  # uniform | er | erk | global
  p.min_keep_fraction = 0.0
  p.structure = "unstructured"  # unstructured | n_m | block | channel
  p.n = 2
  p.m = 4
  p.block_shape = (4, 4)
  return c
