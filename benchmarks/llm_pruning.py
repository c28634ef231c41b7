"""Post-training pruning of a language model: perplexity and speed.

    python benchmarks/llm_pruning.py                     # full (minutes)
    python benchmarks/llm_pruning.py --steps 300 --skip-4096   # quick

1. Trains the tiny byte-level LLaMA of `configs/lm_posttrain.py` (2 blocks,
   width 128) on Python's documentation (`pydoc_data.topics`, first 90 % of
   bytes) for `--steps` steps, cached under `--workdir/dense`, then prunes
   it with magnitude, Wanda, SparseGPT and OWL+Wanda at 50 %, 70 % and 2:4
   (calibration: 32 windows of 128 training bytes) and reports validation
   perplexity (last 10 % of bytes) through the runner (`jaxsparse.
   experiments.lm.run`).
2. Times one 4096x4096 layer with the paper's 128 x 2048 calibration tokens
   (random inputs): the Hessian accumulated in chunks of 8,192 tokens
   (`hessian_s_4096`), SparseGPT's solve at 50 % (`sparsegpt_s_4096`, the
   Hessian excluded; `sparsegpt_total_s_4096` with it), and Wanda with its
   input norms (`wanda_s_4096`).

Last line: one JSON object with `dense_ppl`, `{method}_{50,70,2_4}_ppl`,
`owl_wanda_70_ppl`, `sparsity_exact`, the timings and `peak_rss_mb`.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time

import jax
import jax.numpy as jnp

from jaxsparse import posttrain
from jaxsparse.experiments import config as config_lib
from jaxsparse.experiments import lm as lm_runner

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _timing  # noqa: E402


def quality(workdir: str, steps: int) -> dict:
  c = config_lib.lm_base()
  c.num_steps = steps
  c.posttrain.methods = ("magnitude", "wanda", "sparsegpt", "owl_wanda")
  c.posttrain.targets = ("0.5", "0.7", "2:4")
  rows = lm_runner.run(c, workdir)
  out = {"dense_ppl": rows[0]["perplexity"]}
  for r in rows[1:]:
    method, target = r["name"].split("@")
    key = {"0.5": "50", "0.7": "70", "2:4": "2_4"}[target]
    out[f"{method}_{key}_ppl"] = r["perplexity"]
  out["sparsity_exact"] = all(r["exact"] for r in rows)
  return out


def speed(d: int = 4096, tokens: int = 128 * 2048, chunk: int = 8192
          ) -> dict:
  key = jax.random.PRNGKey(0)
  kernel = jax.random.normal(key, (d, d), jnp.float32) / d ** 0.5
  scale = jnp.exp(jax.random.normal(jax.random.PRNGKey(1), (d,)))

  @jax.jit
  def chunk_x(i):  # correlated inputs with a few large-norm features
    return jax.random.normal(jax.random.fold_in(key, i), (chunk, d)) * scale

  @jax.jit
  def norms_sq(acc, x):
    return acc + jnp.sum(x * x, axis=0)

  jax.block_until_ready(chunk_x(0))
  h = jnp.zeros((d, d), jnp.float32)
  t0 = time.perf_counter()
  for i in range(tokens // chunk):
    h = posttrain.accumulate_hessian(h, chunk_x(i))
  jax.block_until_ready(h)
  t_h = time.perf_counter() - t0
  _timing.log(f"hessian {t_h:.1f}s")
  t0 = time.perf_counter()
  w, m = posttrain.sparsegpt(kernel, h, sparsity=0.5)
  jax.block_until_ready((w, m))
  t_s = time.perf_counter() - t0
  _timing.log(f"sparsegpt {t_s:.1f}s (first call, compilation included)")
  t0 = time.perf_counter()
  w, m = posttrain.sparsegpt(kernel, h, sparsity=0.5)
  jax.block_until_ready((w, m))
  t_s2 = time.perf_counter() - t0
  exact = int(jnp.sum(~m)) == d * d // 2
  del h
  t0 = time.perf_counter()
  acc = jnp.zeros((d,), jnp.float32)
  for i in range(tokens // chunk):
    acc = norms_sq(acc, chunk_x(i))
  w2, m2 = posttrain.wanda(kernel, jnp.sqrt(acc), sparsity=0.5)
  jax.block_until_ready((w2, m2))
  t_w = time.perf_counter() - t0
  # The input generation is part of both passes; time it alone to subtract.
  t0 = time.perf_counter()
  for i in range(tokens // chunk):
    jax.block_until_ready(chunk_x(i))
  t_gen = time.perf_counter() - t0
  exact = exact and int(jnp.sum(~m2)) == d * d // 2
  return {"hessian_s_4096": t_h - t_gen, "sparsegpt_s_4096": t_s2,
          "sparsegpt_first_call_s_4096": t_s,
          "sparsegpt_total_s_4096": t_h - t_gen + t_s2,
          "wanda_s_4096": t_w - t_gen, "input_generation_s": t_gen,
          "exact_4096": exact}


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--workdir", default="runs/llm_pruning")
  ap.add_argument("--steps", type=int, default=1500)
  ap.add_argument("--skip-4096", action="store_true")
  args = ap.parse_args()
  out = quality(args.workdir, args.steps)
  if not args.skip_4096:
    out.update(speed())
  out["peak_rss_mb"] = resource.getrusage(
      resource.RUSAGE_SELF).ru_maxrss / 1024
  out["backend"] = jax.default_backend()
  print(json.dumps(out))


if __name__ == "__main__":
  main()
