"""What an untaken mask-update branch costs each training step.

A `prune` step runs its mask update inside `lax.cond`; at most steps the
branch is not taken, yet on CPU each call still pays for the branch's
code (`overhead_parts.py` measures it inside the training step). This
times a jitted `lax.cond` whose branch computes `jaxsparse.compute_masks`
(uniform magnitude pruning) and is never taken, against the same cond with a
trivial branch, interleaved, for the step_overhead MLP (3 pruned layers)
and for 32 layers of 256x256. The difference is the per-step cost of the
mask update's code when it does not run. The last stdout line is JSON.

Run: .venv/bin/python benchmarks/untaken_branch.py [--rounds N]
"""

from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from _common import init_mlp, lecun_normal  # noqa: E402
from _timing import interleaved, log, median_ms  # noqa: E402
from jax import lax  # noqa: E402

import jaxsparse  # noqa: E402


def _is_none(x):
  return x is None


def branch_cost(params, rounds: int) -> tuple[float, float]:
  """(untaken compute_masks branch, trivial branch) per-call medians, µs."""
  schedule = jaxsparse.polynomial(0.9, begin_step=0, end_step=1000,
                                  frequency=100)
  masks = jaxsparse.ones_masks(params)
  bits = jaxsparse.pack_masks(masks)

  def make(heavy):
    def f(p, ms, b, count):
      def update():
        new = jaxsparse.compute_masks(p, p, ms, schedule.sparsity(count),
                                      jax.random.PRNGKey(0))
        return new, jaxsparse.pack_masks(new)

      def trivial():
        flip = jax.tree.map(lambda m: None if m is None else ~m, ms,
                            is_leaf=_is_none)
        return flip, b

      return lax.cond(schedule.is_update_step(count),
                      update if heavy else trivial, lambda: (ms, b))
    return jax.jit(f)

  count = jnp.asarray(150, jnp.int32)  # not an update step.
  jitted = {"heavy": make(True), "trivial": make(False)}
  fns = {name: (lambda f=f: f(params, masks, bits, count))
         for name, f in jitted.items()}
  for fn in fns.values():
    jax.block_until_ready(fn())
  times = interleaved(fns, rounds=rounds, warmup=20)
  return 1e3 * median_ms(times["heavy"]), 1e3 * median_ms(times["trivial"])


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--rounds", type=int, default=1500)
  args = parser.parse_args()
  mlp = init_mlp(jax.random.PRNGKey(0), (784, 1024, 1024, 10), lecun_normal)
  keys = jax.random.split(jax.random.PRNGKey(1), 32)
  deep = {f"layer_{i}": {"kernel": jax.random.normal(keys[i], (256, 256)),
                         "bias": jnp.zeros(256)} for i in range(32)}
  result = {}
  for name, params in (("mlp3", mlp), ("deep32", deep)):
    log(f"timing {name} ...")
    heavy, trivial = branch_cost(params, args.rounds)
    print(f"{name:<8} untaken branch {heavy:8.1f} us, trivial {trivial:8.1f}"
          f" us, cost {heavy - trivial:7.1f} us per step")
    result[f"untaken_branch_us_{name}"] = round(heavy - trivial, 1)
  result["rounds"] = args.rounds
  print(json.dumps(result))


if __name__ == "__main__":
  main()
