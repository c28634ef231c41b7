"""Per-step cost of `jaxsparse.prune(..., optimizer=adam)` vs plain adam.

MLP 784-1024-1024-10 (plain params dict, kernels (in, out)), batch 128,
random data, `optax.adam(1e-3)`; each variant is one jitted step
(value_and_grad + tx.update + apply_updates) with donated params and state.
The sparse step is one `jax.jit` function with `mask_update` (the keyword
argument of `prune`'s update) as a static argument:

  dense             plain optax adam step.
  nonupdate         jaxsparse.prune(polynomial(...), optimizer=adam) at a
                    step where the schedule does not update the masks,
                    decided on the host: `mask_update=False` (masks only
                    applied; no mask-update code in the compiled step).
  update            the same jitted function at a mask-update step,
                    `mask_update=True` (masks recomputed).
  nonupdate_traced  `mask_update=None`: the device decides; one compiled
  update_traced     step serves both, the mask update sits in `lax.cond`.

The variants are timed in a fresh random order every round, over many
rounds (`_timing.interleaved`); medians of wall time
are compared, and of process CPU time (all threads), which other processes
on a shared host disturb far less. Each variant runs as `--replicas`
replicas with their own buffers, called in turn (`_timing.Cycle`), and a
second set of dense replicas gives `dense_aa_ratio`: the same compiled dense
step against itself, the run's noise floor. `*_paired_ratio` is the median,
over rounds, of a variant's time over the dense time of the same round
(steadier on a shared host). `compile_s_*` are XLA compile seconds of
the update, non-update and dense programs. The last stdout line is one JSON
object.

Run: .venv/bin/python benchmarks/step_overhead.py [--quick] [--rounds N]
     [--replicas K]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))

import jax  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from _common import init_mlp, lecun_normal, xent  # noqa: E402
from _timing import (  # noqa: E402
    Cycle,
    interleaved,
    log,
    median_ms,
    paired_ratio,
    replicas,
    spread_ms,
)

import jaxsparse  # noqa: E402

SIZES = (784, 1024, 1024, 10)
BATCH = 128
NONUPDATE_COUNT = 150  # polynomial(begin 0, frequency 100): not an update
UPDATE_COUNT = 200  # an update step (target sparsity 0.9 * (1 - 0.8^3))


def problem():
  """The benchmark's MLP params and one batch (x, y), from seed 0."""
  kp, kx, ky = jax.random.split(jax.random.PRNGKey(0), 3)
  params = init_mlp(kp, SIZES, lecun_normal)
  x = jax.random.normal(kx, (BATCH, SIZES[0]))
  y = jax.random.randint(ky, (BATCH,), 0, SIZES[-1])
  return params, x, y


def make_step(tx):
  """One jitted training step; params and state buffers are donated.

  `mask_update` (static) is passed to `tx.update` unless it is None.
  """
  def step(params, state, x, y, mask_update=None):
    extra = {} if mask_update is None else {"mask_update": mask_update}
    loss, grads = jax.value_and_grad(xent)(params, x, y)
    updates, state = tx.update(grads, state, params, **extra)
    params = optax.apply_updates(params, updates)
    return params, state, loss
  return jax.jit(step, donate_argnums=(0, 1), static_argnames="mask_update")


class Runner:
  """Calls a donated step repeatedly, feeding its outputs back.

  With `count`, the state's step count is reset to it before every call, so
  one compiled step is timed at a fixed (update or non-update) step. The
  count is set outside the jitted step, so the compiled step is exactly the
  user's; the donated count scalars are made ahead of time, in a pool, so
  no host-to-device transfer runs beside a timed step. With `is_update`
  (`step -> bool`), `mask_update=is_update(count)` is decided on the host.
  """

  def __init__(self, step, params, state, x, y, count: int | None = None,
               is_update=None):
    self.step, self.params, self.state = step, params, state
    self.x, self.y, self.is_update = x, y, is_update
    self.set_count(count)

  def set_count(self, count: int | None, pool: int = 2048):
    self.count = count
    self._pool = [] if count is None else [
        jax.device_put(np.int32(count)) for _ in range(pool)]
    self.extra = {} if self.is_update is None or count is None else {
        "mask_update": bool(self.is_update(count))}

  def __call__(self):
    state = self.state
    if self.count is not None:
      if not self._pool:  # refilled once every `pool` calls.
        self.set_count(self.count)
      state = state._replace(count=self._pool.pop())
    self.params, self.state, loss = self.step(self.params, state, self.x,
                                              self.y, **self.extra)
    return self.params, self.state, loss


def compile_seconds(step, *args, **kwargs):
  """Wall seconds of XLA's compilation of `step` for these arguments (the
  first compilation of that program in this process)."""
  lowered = step.lower(*args, **kwargs)
  start = time.perf_counter()
  lowered.compile()
  return time.perf_counter() - start


def copy_tree(tree):
  return jax.tree.map(lambda a: a.copy() if hasattr(a, "copy") else a, tree)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--quick", action="store_true",
                      help="smoke run: few rounds")
  parser.add_argument("--rounds", type=int, default=None)
  parser.add_argument("--replicas", type=int, default=3,
                      help="replicas (own buffers) per variant")
  args = parser.parse_args()
  rounds = args.rounds or (8 if args.quick else 300)
  k = max(1, args.replicas)

  params, x, y = problem()
  n_params = sum(p.size for p in jax.tree.leaves(params))
  log(f"MLP {SIZES}: {n_params:,} params, batch {BATCH}, "
      f"{jax.device_count()} {jax.default_backend()} device(s)")

  dense_tx = optax.adam(1e-3)
  schedule = jaxsparse.polynomial(0.9, begin_step=0, end_step=1000,
                                  frequency=100)
  sparse_tx = jaxsparse.prune(schedule, optimizer=optax.adam(1e-3))
  assert not bool(schedule.is_update_step(NONUPDATE_COUNT))
  assert bool(schedule.is_update_step(UPDATE_COUNT))

  dense_step = make_step(dense_tx)
  sparse_step = make_step(sparse_tx)

  def dense_runner():
    return Runner(dense_step, copy_tree(params), dense_tx.init(params), x, y)

  def sparse_runner(count, host):
    r = Runner(sparse_step, copy_tree(params), sparse_tx.init(params), x, y,
               UPDATE_COUNT, schedule.is_update_step if host else None)
    # One update step first so a non-update variant runs on real masks.
    jax.block_until_ready(r())
    r.set_count(count)
    return r

  log("compiling ...")
  # Compile times first, before any of these programs is compiled.
  state0 = sparse_tx.init(params)
  compile_s = {
      "dense": compile_seconds(dense_step, params, dense_tx.init(params),
                               x, y),
      "update": compile_seconds(sparse_step, params, state0, x, y,
                                mask_update=True),
      "nonupdate": compile_seconds(sparse_step, params, state0, x, y,
                                   mask_update=False)}
  log("compile seconds: " + ", ".join(
      f"{k} {v:.2f}" for k, v in compile_s.items()))
  reps = replicas({
      "dense": dense_runner, "dense_b": dense_runner,
      "nonupdate": lambda: sparse_runner(NONUPDATE_COUNT, True),
      "update": lambda: sparse_runner(UPDATE_COUNT, True),
      "nonupdate_traced": lambda: sparse_runner(NONUPDATE_COUNT, False),
      "update_traced": lambda: sparse_runner(UPDATE_COUNT, False)}, k)
  for rs in reps.values():
    for r in rs:
      jax.block_until_ready(r())
  # mask_update=False, True and None: one jitted function, three programs;
  # with None, update and non-update steps share one.
  assert sparse_step._cache_size() == 3, sparse_step._cache_size()
  sp = float(jaxsparse.sparsity(reps["nonupdate"][0].state.masks))
  log(f"mask sparsity in the non-update variant: {sp:.3f}")

  log(f"timing {rounds} interleaved rounds, {k} replicas per variant ...")
  cpu: dict[str, list[float]] = {}
  times = interleaved({name: Cycle(rs) for name, rs in reps.items()},
                      rounds=rounds, cpu=cpu)
  med = {k: median_ms(v) for k, v in times.items()}
  med_cpu = {k: median_ms(v) for k, v in cpu.items()}

  print(f"{'variant':<16} {'median ms':>10} {'p25 ms':>8} {'p75 ms':>8} "
        f"{'ratio':>6} {'cpu ms':>8} {'cpu ratio':>9}")
  for name, samples in times.items():
    lo, hi = spread_ms(samples)
    print(f"{name:<16} {med[name]:>10.3f} {lo:>8.3f} {hi:>8.3f} "
          f"{med[name] / med['dense']:>6.3f} {med_cpu[name]:>8.3f} "
          f"{med_cpu[name] / med_cpu['dense']:>9.3f}")
  result = {
      "nonupdate_ratio": round(med["nonupdate"] / med["dense"], 4),
      "update_ratio": round(med["update"] / med["dense"], 4),
      "dense_ms": round(med["dense"], 4),
      "nonupdate_ms": round(med["nonupdate"], 4),
      "update_ms": round(med["update"], 4),
      "nonupdate_cpu_ratio": round(
          med_cpu["nonupdate"] / med_cpu["dense"], 4),
      "update_cpu_ratio": round(med_cpu["update"] / med_cpu["dense"], 4),
      # The same dense step, other replicas: the noise floor of the ratios.
      "dense_aa_ratio": round(med["dense_b"] / med["dense"], 4),
      # Median of the within-round ratios (`_timing.paired_ratio`).
      "nonupdate_paired_ratio": round(
          paired_ratio(times, "nonupdate", "dense"), 4),
      "update_paired_ratio": round(paired_ratio(times, "update", "dense"), 4),
      "dense_aa_paired_ratio": round(
          paired_ratio(times, "dense_b", "dense"), 4),
      # `mask_update=None`: the device decides, inside one compiled step.
      "nonupdate_traced_ratio": round(
          med["nonupdate_traced"] / med["dense"], 4),
      "update_traced_ratio": round(med["update_traced"] / med["dense"], 4),
      "nonupdate_traced_paired_ratio": round(
          paired_ratio(times, "nonupdate_traced", "dense"), 4),
      # XLA compile seconds (wall, one each): the mask-update and non-update
      # programs of the sparse step, and the dense step.
      "compile_s_update": round(compile_s["update"], 3),
      "compile_s_nonupdate": round(compile_s["nonupdate"], 3),
      "compile_s_dense": round(compile_s["dense"], 3),
      "rounds": rounds,
      "replicas": k,
      "n_params": int(n_params),
      "backend": jax.default_backend(),
  }
  print(json.dumps(result))


if __name__ == "__main__":
  main()
