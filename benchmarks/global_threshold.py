"""Global-magnitude masks: `jaxsparse.allocation.global_()` vs a full argsort.

Models are 4 square kernels of width w (w = 256, 1024, 2048: 0.26M, 4.2M
and 16.8M weights), pruned to sparsity 0.9 with one global ranking of |w|.

  jaxsparse  `compute_masks(..., allocation=jaxsparse.allocation.global_())`:
             exact counts by threshold search (reductions only, no sort).
  argsort    a stable `jnp.argsort` of the concatenated scores; the k first
             indices are pruned (the same positional tie rule), the mask is
             scattered back and split into the layers.

Both are jitted and timed after compilation, alternately; medians of wall
time are reported (and of process CPU time, less disturbed by other
processes on a shared host), and the masks are checked to be identical.
The last stdout line is one JSON object.

Run: .venv/bin/python benchmarks/global_threshold.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from _timing import interleaved, log, median_ms  # noqa: E402

import jaxsparse  # noqa: E402
from jaxsparse._src.core.prune import compute_masks

SPARSITY = 0.9
NUM_LAYERS = 4


def make_params(width: int, key: jax.Array) -> dict:
  keys = jax.random.split(key, NUM_LAYERS)
  return {f"dense_{i}": {"kernel": jax.random.normal(k, (width, width))}
          for i, k in enumerate(keys)}


@jax.jit
def jaxsparse_masks(params):
  masks = jaxsparse.ones_masks(params)
  return compute_masks(
      params, None, masks, jnp.float32(SPARSITY), jax.random.PRNGKey(0),
      allocation=jaxsparse.allocation.global_())


@jax.jit
def argsort_masks(params):
  leaves, treedef = jax.tree.flatten(params)
  scores = jnp.concatenate([jnp.abs(p).reshape(-1) for p in leaves])
  n = scores.size
  k = math.floor(SPARSITY * n + 0.5)
  order = jnp.argsort(scores, stable=True)
  pruned = jnp.zeros((n,), bool).at[order[:k]].set(True)
  keep, start = [], 0
  for p in leaves:
    keep.append(~pruned[start:start + p.size].reshape(p.shape))
    start += p.size
  return jax.tree.unflatten(treedef, keep)


@jax.jit
def argsort_only(params):
  scores = jnp.concatenate(
      [jnp.abs(p).reshape(-1) for p in jax.tree.leaves(params)])
  return jnp.argsort(scores, stable=True)


def same_masks(a, b) -> bool:
  pairs = zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
  return all(bool(jnp.array_equal(x, y)) for x, y in pairs)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--quick", action="store_true",
                      help="smoke run: widths 64 and 256, few repeats")
  parser.add_argument("--repeats", type=int, default=None)
  args = parser.parse_args()
  widths = (64, 256) if args.quick else (256, 1024, 2048)
  repeats = args.repeats or (3 if args.quick else 7)

  rows, identical = [], True
  for width in widths:
    params = make_params(width, jax.random.PRNGKey(width))
    n = NUM_LAYERS * width * width
    log(f"{NUM_LAYERS} x ({width}, {width}) = {n:,} weights: compiling ...")
    ours = jaxsparse_masks(params)
    ref = argsort_masks(params)
    jax.block_until_ready((ours, ref, argsort_only(params)))
    same = same_masks(ours, ref)
    pruned = sum(int((~m).sum()) for m in jax.tree.leaves(ours))
    same = same and pruned == math.floor(SPARSITY * n + 0.5)
    identical = identical and same
    log(f"  timing {repeats} rounds ...")
    cpu: dict[str, list[float]] = {}
    times = interleaved({
        "jaxsparse": lambda p=params: jaxsparse_masks(p),
        "argsort": lambda p=params: argsort_masks(p),
        "argsort_only": lambda p=params: argsort_only(p),
    }, rounds=repeats, warmup=1, cpu=cpu)
    med = {k: median_ms(v) for k, v in times.items()}
    med_cpu = {k: median_ms(v) for k, v in cpu.items()}
    rows.append((width, n, med, med_cpu, same))

  print(f"{'layers':<16} {'weights':>11} {'jaxsparse ms':>13} "
        f"{'argsort ms':>11} {'speedup':>8} {'vs sort only':>13} "
        f"{'identical':>9}")
  result = {}
  for width, n, med, med_cpu, same in rows:
    speedup = med["argsort"] / med["jaxsparse"]
    print(f"{f'{NUM_LAYERS} x {width}x{width}':<16} {n:>11,} "
          f"{med['jaxsparse']:>13.2f} {med['argsort']:>11.2f} "
          f"{speedup:>8.1f} {med['argsort_only'] / med['jaxsparse']:>13.1f} "
          f"{str(same):>9}")
    tag = {256: "0.26m", 1024: "4.2m", 2048: "16m"}.get(width, f"w{width}")
    result[f"speedup_vs_argsort_{tag}"] = round(speedup, 2)
    result[f"speedup_vs_argsort_only_{tag}"] = round(
        med["argsort_only"] / med["jaxsparse"], 2)
    result[f"cpu_time_speedup_vs_argsort_{tag}"] = round(
        med_cpu["argsort"] / med_cpu["jaxsparse"], 2)
    result[f"jaxsparse_ms_{tag}"] = round(med["jaxsparse"], 3)
    result[f"argsort_ms_{tag}"] = round(med["argsort"], 3)
  result["masks_identical"] = identical
  result["layers"] = f"{NUM_LAYERS} square kernels of widths {list(widths)}"
  result["sparsity"] = SPARSITY
  result["repeats"] = repeats
  print(json.dumps(result))


if __name__ == "__main__":
  main()
