"""Block-sparse vs dense matmul: forward and training step, one run.

y = x @ W with x (M, 4096), W (4096, 4096) at block densities 50/25/10 %,
for two kinds of block masks:

  balanced  every row block and column block keeps the same number of
            blocks (a randomly permuted band), so no slot is padding.
  random    each block kept independently with probability = density.

Forward: `pallas_kernels.block_sparse_matmul(x, W)` vs `jnp.dot(x, W)`.
Training step: `jax.value_and_grad` of `sum(y * r)` with respect to x and W
(W's stored blocks for the sparse version), i.e. forward, dx = dy Wᵀ and dW.
Each ratio is dense_time / sparse_time from the same interleaved timing
rounds, printed next to the ideal 1 / density (of the mask actually used).

Backend auto-detected: on CPU, float32, M = 1024, block 128 (the plain-XLA
path); on GPU/TPU, bfloat16, blocks 128 and 512, M = 1024, 4096, 16384 (the
Pallas kernels). The last stdout line is one JSON object with
fwd_speedup_50, fwd_speedup_25, fwd_speedup_10 and train_speedup_10
(balanced masks, block 128, the largest M).

Run: .venv/bin/python benchmarks/block_sparse_matmul.py [--quick]
     [--rounds N] [--m M ...] [--blocks B ...]
"""

from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from _timing import interleaved, log, median_ms, spread_ms  # noqa: E402

from pallas_kernels import (  # noqa: E402
    BlockSparse,
    block_sparse_matmul,
    resolve_backend,
)

K = N = 4096
DENSITIES = (0.5, 0.25, 0.1)


def balanced_mask(rng, kb: int, nb: int, density: float) -> np.ndarray:
  """Each row and column block keeps round(density * kb) blocks."""
  c = max(1, int(density * kb + 0.5))
  i, j = np.meshgrid(np.arange(kb), np.arange(nb), indexing="ij")
  band = ((i - j * kb // nb) % kb) < c
  return band[rng.permutation(kb)][:, rng.permutation(nb)]


def random_mask(rng, kb: int, nb: int, density: float) -> np.ndarray:
  m = rng.random((kb, nb)) < density
  if not m.any():
    m[0, 0] = True
  return m


def make_fns(x, w_dense, w_bs, r):
  dense_fwd = jax.jit(jnp.dot)
  sparse_fwd = jax.jit(block_sparse_matmul)

  def dense_loss(x, w):
    return jnp.vdot(jnp.dot(x, w), r).astype(jnp.float32)

  def sparse_loss(x, values, w):
    return jnp.vdot(block_sparse_matmul(x, w.replace(values=values)),
                    r).astype(jnp.float32)

  dense_train = jax.jit(jax.value_and_grad(dense_loss, argnums=(0, 1)))
  sparse_train = jax.jit(jax.value_and_grad(sparse_loss, argnums=(0, 1)))
  return {
      "dense_fwd": lambda: dense_fwd(x, w_dense),
      "sparse_fwd": lambda: sparse_fwd(x, w_bs),
      "dense_train": lambda: dense_train(x, w_dense),
      "sparse_train": lambda: sparse_train(x, w_bs.values, w_bs),
  }


def check(x, w_bs, dtype) -> float:
  """Max relative error of the sparse forward against dense."""
  y = jax.jit(block_sparse_matmul)(x, w_bs).astype(jnp.float32)
  ref = jnp.dot(x, w_bs.to_dense(), preferred_element_type=jnp.float32)
  return float(jnp.max(jnp.abs(y - ref)) / jnp.max(jnp.abs(ref)))


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--quick", action="store_true",
                  help="balanced masks only, fewer rounds")
  ap.add_argument("--rounds", type=int, default=None)
  ap.add_argument("--m", type=int, nargs="*", default=None)
  ap.add_argument("--blocks", type=int, nargs="*", default=None)
  args = ap.parse_args()

  kind = resolve_backend()
  accel = kind != "xla"
  dtype = jnp.bfloat16 if accel else jnp.float32
  ms = args.m or ([1024, 4096, 16384] if accel else [1024])
  blocks = args.blocks or ([128, 512] if accel else [128])
  rounds = args.rounds or (3 if args.quick else (10 if accel else 5))
  mask_kinds = ("balanced",) if args.quick else ("balanced", "random")
  device = jax.devices()[0].device_kind
  log(f"backend {jax.default_backend()} ({device}), kernels '{kind}', "
      f"dtype {jnp.dtype(dtype).name}, {rounds} rounds")

  rng = np.random.default_rng(0)
  key = jax.random.key(0)
  w_dense = jax.random.normal(key, (K, N), dtype) / np.sqrt(K)
  rows = []
  summary = {}
  print(f"{'M':>6} {'block':>5} {'mask':>8} {'density':>7} {'ideal':>6} "
        f"{'fwd dense':>10} {'fwd sparse':>10} {'fwd x':>6} "
        f"{'train dense':>11} {'train sparse':>12} {'train x':>7}")
  for m in ms:
    x = jax.random.normal(jax.random.key(1), (m, K), dtype)
    r = jax.random.normal(jax.random.key(2), (m, N), dtype)
    for b in blocks:
      kb, nb = K // b, N // b
      for mk in mask_kinds:
        for d in DENSITIES:
          bmask = (balanced_mask if mk == "balanced" else random_mask)(
              rng, kb, nb, d)
          w_bs = BlockSparse.from_dense(w_dense, bmask, (b, b))
          actual = float(bmask.mean())
          err = check(x, w_bs, dtype)
          fns = make_fns(x, w_dense, w_bs, r)
          t = interleaved(fns, rounds=rounds)
          med = {k: median_ms(v) for k, v in t.items()}
          fwd_x = med["dense_fwd"] / med["sparse_fwd"]
          train_x = med["dense_train"] / med["sparse_train"]
          row = dict(m=m, block=b, mask=mk, density=actual,
                     slots=w_bs.slots, slots_t=w_bs.slots_t,
                     ideal=1.0 / actual, fwd_speedup=fwd_x,
                     train_speedup=train_x, rel_err=err,
                     **{f"{k}_ms": v for k, v in med.items()},
                     **{f"{k}_iqr_ms": spread_ms(v) for k, v in t.items()
                        if len(v) >= 2})
          rows.append(row)
          print(f"{m:>6} {b:>5} {mk:>8} {actual:>7.3f} {1 / actual:>6.2f} "
                f"{med['dense_fwd']:>8.1f}ms {med['sparse_fwd']:>8.1f}ms "
                f"{fwd_x:>6.2f} {med['dense_train']:>9.1f}ms "
                f"{med['sparse_train']:>10.1f}ms {train_x:>7.2f}",
                flush=True)
          if mk == "balanced" and b == 128 and m == max(ms):
            tag = int(round(d * 100))
            summary[f"fwd_speedup_{tag}"] = round(fwd_x, 3)
            if tag == 10:
              summary["train_speedup_10"] = round(train_x, 3)
              summary["ideal_10"] = round(1.0 / actual, 3)
            log(f"  rel err vs dense {err:.2e}")
  summary.update(backend=jax.default_backend(), device=device,
                 kernels=kind, dtype=jnp.dtype(dtype).name, m=max(ms),
                 rounds=rounds)
  if os.environ.get("BLOCK_SPARSE_BENCH_ROWS"):
    with open(os.environ["BLOCK_SPARSE_BENCH_ROWS"], "w") as f:
      json.dump(rows, f, indent=1)
  print(json.dumps(summary))


if __name__ == "__main__":
  main()
