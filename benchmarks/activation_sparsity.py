"""Activation sparsity: natural density, TEAL perplexity, sparse decoding.

    python benchmarks/activation_sparsity.py            # full (minutes)
    python benchmarks/activation_sparsity.py --quick    # fast, rougher

1. `natural_density_relu_mlp`: the runner trains the digits MLP
   (LeNet-300-100, ReLU, dense) with `activations.record_every`; the
   figure is the fraction of non-zero post-ReLU activations (the inputs of
   `hidden/1` and `out`, element-weighted) on test images at the end
   (the lazy-neuron measurement, Li et al. 2023).
2. `teal_{40,50}_ppl_increase`: the tiny byte-level LLaMA of
   `configs/lm_posttrain.py` (`config.lm_base`), trained and cached by the
   LM runner (`jaxsparse.experiments.lm`, `--workdir/dense`, the same
   cache as `llm_pruning.py` for the same steps); TEAL thresholds on the
   inputs of all 7 linear layers of each block, calibrated on 64 training
   windows of 128 bytes (`teal_thresholds`, 2 passes) at 40 % and 50 %;
   relative increase of validation perplexity (last 10 % of the bytes).
   `achieved_activation_sparsity_50`: the fraction of those inputs zeroed
   on the validation windows (element-weighted over layers).
3. `decode_mlp_speedup_50`: one SwiGLU MLP block (dim 2048, hidden 5632,
   LLaMA's ratio, random float32 weights) at batch 1: dense
   `dense_mlp_decode` against `mlp_decode` with 50 % thresholds on both
   inputs (the row-gather loop, XLA on CPU), both jitted, timed
   interleaved in the same run by `_timing`; the figure is the median of
   per-round paired ratios.

Last line: one JSON object with those keys and the raw figures behind them.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile

import jax
import jax.numpy as jnp

from jaxsparse import activations as act
from jaxsparse import lm
from jaxsparse.experiments import config as config_lib
from jaxsparse.experiments import data as data_lib
from jaxsparse.experiments import lm as lm_runner
from jaxsparse.experiments import train as train_lib

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _timing  # noqa: E402


def natural_density(steps: int) -> dict:
  with tempfile.TemporaryDirectory() as d:
    data_lib.prepare_digits(os.path.join(d, "tfds"))
    c = config_lib.base()
    c.data_dir = os.path.join(d, "tfds")
    c.pruning.method = "none"
    c.num_steps, c.num_epochs = steps, -1
    c.eval_every = max(1, steps // 4)
    c.tensorboard = False
    c.activations.record_every = c.eval_every
    res = train_lib.train_and_evaluate(c, os.path.join(d, "run"),
                                       progress=False)
  last = res["activation_density"][-1]["density"]
  hidden = {"hidden/1": 300, "out": 100}  # post-ReLU widths
  dens = sum(last[k] * w for k, w in hidden.items()) / sum(hidden.values())
  _timing.log(f"digits MLP: accuracy {res['test_accuracy']:.3f}, "
              f"densities {last}")
  return {"natural_density_relu_mlp": dens,
          "relu_mlp_layer_density": last,
          "relu_mlp_test_accuracy": res["test_accuracy"]}


def teal(workdir: str, steps: int, calib_windows: int) -> dict:
  c = config_lib.lm_base()
  c.num_steps = steps
  train_tokens, valid = lm_runner.corpus(c)
  dense, _ = lm_runner._dense_model(c, workdir, train_tokens)  # pylint: disable=protected-access
  seq = c.lm.seq_len
  calib = [x for x, _ in lm.lm_batches(train_tokens, 16, seq,
                                       seed=c.seed + 1,
                                       num_batches=calib_windows // 16)]
  held, _ = lm.eval_windows(valid, seq)
  held = [held[i:i + 16] for i in range(0, len(held), 16)]
  base = lm_runner._evaluate(dense, valid, c)  # pylint: disable=protected-access
  out = {"dense_ppl": base["perplexity"]}
  for target in (0.4, 0.5):
    th = act.teal_thresholds(dense, calib, target)
    hook = act.threshold_hook(th)
    ev = lm_runner._evaluate(act.sparsify(dense, hook), valid, c)  # pylint: disable=protected-access
    d = act.measure_density(dense, held, hook=hook,
                            include=lambda n, th=th: n in th)
    zeros = sum((1 - v.nonzero) * v.size for v in d.values())
    achieved = zeros / sum(v.size for v in d.values())
    key = int(round(target * 100))
    out[f"teal_{key}_ppl"] = ev["perplexity"]
    out[f"teal_{key}_ppl_increase"] = ev["perplexity"] / base[
        "perplexity"] - 1
    out[f"achieved_activation_sparsity_{key}"] = achieved
    _timing.log(f"TEAL {target}: ppl {ev['perplexity']:.4f} (dense "
                f"{base['perplexity']:.4f}), achieved {achieved:.4f}")
  return out


def decode_speed(rounds: int, dim: int = 2048, hidden: int = 5632) -> dict:
  k1, k2, k3 = jax.random.split(jax.random.PRNGKey(0), 3)
  w = act.MLPWeights(
      jax.random.normal(k1, (dim, 2 * hidden), jnp.float32) / dim ** 0.5,
      jax.random.normal(k2, (hidden, dim), jnp.float32) / hidden ** 0.5)
  # thresholds at 50 % from 64 calibration tokens; timed on another token
  calib = jax.random.normal(k3, (65, dim), jnp.float32)
  gu = calib[:64] @ w.gate_up
  h = jax.nn.silu(gu[:, :hidden]) * gu[:, hidden:]
  t_in = float(jnp.quantile(jnp.abs(calib[:64]), 0.5))
  t_h = float(jnp.quantile(jnp.abs(h), 0.5))
  x = calib[64]
  dense = jax.jit(act.dense_mlp_decode)
  sparse = jax.jit(act.mlp_decode)
  y_s = sparse(w, x, t_in, t_h)
  xs = act.threshold(x, t_in)
  g, u = jnp.split(xs @ w.gate_up, 2)
  hh = jax.nn.silu(g) * u
  y_ref = act.threshold(hh, t_h) @ w.down
  err = float(jnp.max(jnp.abs(y_s - y_ref)))
  fns = {"dense": lambda: dense(w, x), "sparse": lambda: sparse(w, x, t_in,
                                                                t_h)}
  times = _timing.interleaved(fns, rounds)
  ratio = _timing.paired_ratio(times, "dense", "sparse")
  s_in = float(jnp.mean(xs == 0))
  s_h = float(jnp.mean(act.threshold(hh, t_h) == 0))
  _timing.log(f"decode MLP {dim}x{hidden}: dense "
              f"{_timing.median_ms(times['dense']):.2f} ms, sparse "
              f"{_timing.median_ms(times['sparse']):.2f} ms, paired ratio "
              f"{ratio:.2f}, input sparsity {s_in:.3f} / {s_h:.3f}")
  return {"decode_mlp_speedup_50": ratio,
          "decode_dense_ms": _timing.median_ms(times["dense"]),
          "decode_sparse_ms": _timing.median_ms(times["sparse"]),
          "decode_input_sparsity": [s_in, s_h],
          "decode_max_abs_err": err, "decode_dim": dim,
          "decode_hidden": hidden}


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--workdir", default="runs/activation_sparsity")
  ap.add_argument("--steps", type=int, default=1500)
  ap.add_argument("--quick", action="store_true",
                  help="300 LM steps, 120 MLP steps, 10 timing rounds")
  args = ap.parse_args()
  steps = 300 if args.quick else args.steps
  out = {}
  out.update(natural_density(120 if args.quick else 600))
  out.update(teal(args.workdir, steps, 32 if args.quick else 64))
  out.update(decode_speed(10 if args.quick else 30))
  out["lm_steps"] = steps
  out["backend"] = jax.default_backend()
  keys = ("natural_density_relu_mlp", "teal_40_ppl_increase",
          "teal_50_ppl_increase", "decode_mlp_speedup_50",
          "achieved_activation_sparsity_50")
  out = {**{k: out[k] for k in keys}, **{k: v for k, v in out.items()
                                         if k not in keys}}
  print(json.dumps(out))


if __name__ == "__main__":
  main()
