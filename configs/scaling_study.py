"""Sparse scaling law (Frantar et al., 2023) on the LM: sparsity x width x D."""

import ml_collections

from jaxsparse.experiments.config import lm_base


def get_config(mode: str = ""):
  """`configs/scaling_study.py:small`: the 8-run smoke version (tests)."""
  small = mode == "small"
  c = lm_base()
  c.study = "scaling"  # experiments/study.py: cells, then the fit
  # One block: compiling each sparse run's mask update dominates the cost
  # on CPU, and it grows with the number of pruned kernels.
  c.lm.n_layers = 1
  c.lm.n_heads, c.lm.n_kv_heads = 2, 1
  c.lm.seq_len = 32 if small else 64
  c.lm.eval_batch_size = 64
  c.batch_size = 8
  c.eval_every = 10_000
  # Gradual magnitude pruning (Zhu & Gupta) of the block linear kernels to
  # each sparsity, plus the dense run of every cell (S = 0).
  c.pruning.method = "magnitude"
  c.pruning.schedule = "polynomial"
  c.pruning.end_fraction = 0.6
  c.pruning.frequency = 5 if small else 10
  c.sweep_sparsities = (0.5,) if small else (0.5, 0.75, 0.875)
  s = c.scaling = ml_collections.ConfigDict()
  s.widths = (16, 32) if small else (32, 48, 64)  # lm.dim
  s.hidden_ratio = 3.0  # lm.hidden_dim = hidden_ratio x width
  # Run lengths: D = steps x batch_size x seq_len tokens. The D term has
  # two coefficients (a_D, b_D) besides c, so it is identifiable only from
  # three or more token counts; with two, a family of (a_D, b_D, c) fits
  # equally well and the fit extrapolates in D arbitrarily.
  # The small version (a smoke test of the pipeline) has only two.
  s.steps = (15, 30) if small else (60, 120, 240)
  c.num_steps = max(s.steps)  # what --dry_run shows; each cell sets its own
  s.holdout = 0.25  # random fraction of runs left out of a second fit
  return c
