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
  c.sweep_sparsities = ()  # one run per pruning.sparsity
  c.sweep_memory = ()  # one run per pruning.memory_fraction
  c.sweep_methods = ()  # one run per pruning.method (x the sweeps above)
  # Multi-round drivers: none | imp (lottery tickets) | sap (PQ-index SAP).
  c.driver = "none"
  c.driver_rounds = 5  # IMP: pruning levels after the dense run; SAP: rounds
  c.tensorboard = True  # workdir/tensorboard, if tensorboardX is installed
  c.stop_after = -1  # stop early (simulates an interruption); -1: never

  p = c.pruning = ml_collections.ConfigDict()
  # none | magnitude | random | saliency (jaxsparse.prune with a schedule)
  # | snip | grasp | synflow (masks at init) | ste (straight-through; SR-STE
  # with srste_lambda > 0) | set | rigl (dynamic sparse training) | rps.
  p.method = "magnitude"
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
  p.score = "magnitude"  # ste: magnitude | random
  p.srste_lambda = 0.0  # ste: SR-STE's lambda_W (2e-4 in the paper)
  p.drop_fraction = 0.3  # set/rigl: alpha (cosine decay to end_step)
  # rigl: True = the optimizer state skips mask-update steps (as in the
  # reference code), at a per-step cost; see `jaxsparse.dst`.
  p.freeze_optimizer_on_update = False
  p.pai_rounds = 100  # synflow rounds
  p.pai_samples_per_class = 10  # snip/grasp batch
  p.mapper = "stable_rps"  # rps: hashednet | roast | stable_rps
  p.compression = 0.1  # rps: stored floats / compressed weights
  p.memory_fraction = -1.0  # > 0: budget in stored floats per weight
  p.mask_cost = "bitmap"  # none | bitmap | index: what a mask costs
  # Drivers (config.driver).
  p.rewind_step = 0  # imp: rewind to the weights after this step
  p.imp_fraction = 0.2  # imp: fraction of the remaining weights per level
  p.scope = "global"  # imp/sap: global | layer
  p.sap_p = 0.5
  p.sap_q = 1.0
  p.sap_eta_r = 0.0
  p.sap_gamma = 1.0
  p.sap_beta = 0.9
  return c
