"""Shared timing helpers for the benchmarks (wall clock, after compile)."""

from __future__ import annotations

import random
import statistics
import sys
import time
from collections.abc import Callable, Mapping

import jax


def log(*args) -> None:
  """Progress messages go to stderr; results go to stdout."""
  print(*args, file=sys.stderr, flush=True)


def time_once(fn: Callable[[], object]) -> tuple[float, float]:
  """Wall and process-CPU seconds of one call of `fn`, results waited for.

  On a shared host the CPU time (all threads of this process) is far less
  sensitive to other processes than the wall time.
  """
  c0, t0 = time.process_time(), time.perf_counter()
  jax.block_until_ready(fn())
  return time.perf_counter() - t0, time.process_time() - c0


def interleaved(
    fns: Mapping[str, Callable[[], object]],
    rounds: int,
    warmup: int = 2,
    cpu: dict[str, list[float]] | None = None,
) -> dict[str, list[float]]:
  """Wall times of several variants timed alternately, `rounds` times each.

  Alternating the variants within each round spreads slow drifts of the
  machine (other processes, frequency scaling) over all of them, so their
  medians stay comparable on a shared host. CPU times go to `cpu` if given.
  """
  for _ in range(warmup):
    for fn in fns.values():
      time_once(fn)
  times: dict[str, list[float]] = {name: [] for name in fns}
  if cpu is not None:
    cpu.update({name: [] for name in fns})
  names = list(fns)
  rng = random.Random(0)
  for _ in range(rounds):
    # A fresh random order every round: each variant runs first, last, and
    # after each other variant equally often on average. (A rotation would
    # put one variant after the slowest one most of the time, and a step
    # that follows a cache-flushing step runs slower.)
    order = rng.sample(names, len(names))
    for name in order:
      wall, cpu_s = time_once(fns[name])
      times[name].append(wall)
      if cpu is not None:
        cpu[name].append(cpu_s)
  return times


class Cycle:
  """Calls equivalent replicas in turn: one callable to `interleaved`.

  A replica of a training step owns its buffers (params and optimizer state
  are donated, so they stay at the same addresses call after call). Step
  times depend a little on where those buffers sit in memory (cache sets,
  4 KiB aliasing between streams): two replicas of one compiled dense step
  differ by up to ~1 % here. Pooling the samples of a few replicas per
  variant averages that placement effect out of the comparison.
  """

  def __init__(self, replicas: list[Callable[[], object]]):
    self.replicas = list(replicas)
    self.i = 0

  def __call__(self):
    replica = self.replicas[self.i]
    self.i = (self.i + 1) % len(self.replicas)
    return replica()


def replicas(
    makers: Mapping[str, Callable[[], Callable[[], object]]], k: int,
) -> dict[str, list[Callable[[], object]]]:
  """`k` replicas of each variant, made in turn across the variants, so
  that no variant gets all of the first (or last) allocated buffers."""
  out: dict[str, list[Callable[[], object]]] = {name: [] for name in makers}
  for _ in range(max(1, k)):
    for name, make in makers.items():
      out[name].append(make())
  return out


def median_ms(samples: list[float]) -> float:
  return 1e3 * statistics.median(samples)


def paired_ratio(times: Mapping[str, list[float]], name: str,
                 ref: str) -> float:
  """Median over rounds of `name`'s time / `ref`'s time in the same round.

  The two steps of a round run within milliseconds of each other, so a
  slow drift of a shared host (other processes) cancels in each quotient:
  a steadier estimate of the same ratio than a quotient of medians.
  """
  return statistics.median(
      a / b for a, b in zip(times[name], times[ref], strict=True))


def spread_ms(samples: list[float]) -> tuple[float, float]:
  """25th and 75th percentiles in ms."""
  q = statistics.quantiles(samples, n=4)
  return 1e3 * q[0], 1e3 * q[2]
