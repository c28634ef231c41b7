"""Pruning schedules: the target sparsity at a step and when masks update.

A `PruningSchedule` is two plain callables of the step count; the sparsity
curve reuses `optax` schedules where one exists. `is_update_step` takes a
traced step count or a Python int; given a Python int it returns a Python
bool, so a training loop can decide on the host whether a step updates the
masks (`mask_update=`, see `mask_update_flag`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax

from jaxsparse._src.core import threshold as threshold_lib


class PruningSchedule(NamedTuple):
  """Target sparsity at `step`, and whether masks are recomputed at `step`."""

  sparsity: Callable[[jax.Array], jax.Array]  # step -> float32 in [0, 1]
  is_update_step: Callable[[jax.Array], jax.Array]  # step -> bool (host too)
  final_sparsity: float  # the sparsity reached at the end (for allocations)


def check_sparsity(value: float, name: str = "sparsity") -> float:
  """Validates a sparsity given as a Python number."""
  try:
    v = float(value)
  except (TypeError, ValueError) as e:
    raise TypeError(f"`{name}` must be a number, got {value!r}.") from e
  if not 0.0 <= v <= 1.0 or v != v:
    raise ValueError(f"`{name}` must be in [0, 1], got {value!r}.")
  return v


def _check_step(value: int, name: str) -> int:
  if int(value) != value or value < 0:
    raise ValueError(f"`{name}` must be a non-negative integer, got {value!r}.")
  return int(value)


def one_shot(sparsity: float, at_step: int = 0) -> PruningSchedule:
  """Prunes once, at `at_step`, to `sparsity`; masks are fixed afterwards."""
  s = check_sparsity(sparsity)
  t = _check_step(at_step, "at_step")
  return PruningSchedule(
      sparsity=lambda step: jnp.where(
          jnp.asarray(step) >= t, s, 0.0).astype(jnp.float32),
      is_update_step=lambda step: step == t,
      final_sparsity=s,
  )


def constant(sparsity: float) -> PruningSchedule:
  """A constant target, applied at the first step (one-shot at step 0)."""
  return one_shot(sparsity, 0)


def polynomial(
    final_sparsity: float,
    begin_step: int,
    end_step: int,
    frequency: int = 100,
    initial_sparsity: float = 0.0,
    power: float = 3.0,
) -> PruningSchedule:
  """Gradual pruning (Zhu & Gupta, 2017).

  s_t = s_f + (s_i - s_f) (1 - (t - t0) / (end - t0))^power, clipped to
  [t0, end]; masks update at t0, t0 + frequency, ... and at `end_step`.
  The curve is `optax.polynomial_schedule`, which evaluates the paper's
  formula at the step itself (no off-by-one).

  References:
    Zhu & Gupta, "To prune, or not to prune", 2017. arXiv:1710.01878.
  """
  s_f = check_sparsity(final_sparsity, "final_sparsity")
  s_i = check_sparsity(initial_sparsity, "initial_sparsity")
  t0 = _check_step(begin_step, "begin_step")
  t1 = _check_step(end_step, "end_step")
  if t1 <= t0:
    raise ValueError(
        f"`end_step` ({end_step}) must be after `begin_step` ({begin_step}).")
  if int(frequency) != frequency or frequency < 1:
    raise ValueError(
        f"`frequency` must be a positive integer, got {frequency}.")
  curve = optax.polynomial_schedule(
      init_value=s_i, end_value=s_f, power=power,
      transition_steps=t1 - t0, transition_begin=t0)

  def is_update_step(step):
    in_range = (step >= t0) & (step <= t1)
    return in_range & (((step - t0) % frequency == 0) | (step == t1))

  return PruningSchedule(
      sparsity=lambda step: jnp.asarray(curve(step), jnp.float32),
      is_update_step=is_update_step,
      final_sparsity=s_f,
  )


def periodic_updates(
    every: int, begin_step: int, end_step: int) -> Callable[[Any], Any]:
  """`step -> bool`: True at begin_step, begin_step + every, ... <= end_step.

  Not a schedule (it has no sparsity): the update predicate of `iterative`
  and of `jaxsparse.dst` (SET/RigL), for `mask_update=`. A Python int gives
  a Python bool.
  """
  every = _check_step(every, "every")
  t0 = _check_step(begin_step, "begin_step")
  t1 = _check_step(end_step, "end_step")
  if every < 1:
    raise ValueError(f"`every` must be at least 1, got {every}.")
  return lambda step: (step >= t0) & (step <= t1) & ((step - t0) % every == 0)


def iterative(
    fraction: float,
    every: int,
    num_rounds: int,
    begin_step: int = 0,
) -> PruningSchedule:
  """Prunes `fraction` of the remaining weights every `every` steps.

  After round j (j = 1..num_rounds, the first at `begin_step`) the density
  is (1 - fraction)^j, as in lottery-ticket iterative magnitude pruning.

  References:
    Frankle & Carbin, "The Lottery Ticket Hypothesis", ICLR 2019.
  """
  f = check_sparsity(fraction, "fraction")
  k = _check_step(every, "every")
  n = _check_step(num_rounds, "num_rounds")
  t0 = _check_step(begin_step, "begin_step")
  if k < 1 or n < 1:
    raise ValueError("`every` and `num_rounds` must be at least 1.")
  last = t0 + (n - 1) * k

  def rounds(step):
    step = jnp.asarray(step)
    done = jnp.where(step >= t0, (step - t0) // k + 1, 0)
    return jnp.minimum(done, n)

  return PruningSchedule(
      sparsity=lambda step: (
          1.0 - (1.0 - f) ** rounds(step).astype(jnp.float32)),
      is_update_step=periodic_updates(k, t0, last),
      final_sparsity=1.0 - (1.0 - f) ** n,
  )


def as_schedule(sparsity: float | PruningSchedule) -> PruningSchedule:
  """A float becomes `constant(sparsity)`; schedules pass through."""
  if isinstance(sparsity, PruningSchedule):
    return sparsity
  return constant(sparsity)


def mask_update_flag(
    is_update: jax.Array, mask_update: bool | None) -> jax.Array | bool:
  """Whether masks update at this step: traced, or ruled out on the host.

  `mask_update` is the `update` keyword argument of the transforms that
  hold masks (`prune`, `dst`):

  * None: `is_update` itself (the schedule at the state's step count); the
    device decides with `lax.cond`, and one compiled step serves both kinds.
  * False: the host's decision (`schedule.is_update_step(step)` on a Python
    int, e.g. a static argument of the jitted training step) that this step
    does not update the masks. It is returned as a Python bool, so the step
    carries no mask-update code at all (on CPU even an untaken branch costs
    1-3 % of an MLP step, through the scratch memory it shares with the
    main path).
  * True: the host's decision that it does. The device still checks it
    against the schedule with a `lax.cond` (see `branch`): a step counter
    on the host that drifted from the state's count then cannot update the
    masks at a step the schedule does not. The program holds no host
    callback, so JAX's persistent compilation cache keeps it (a callback
    makes a program uncacheable: every run of a sweep would compile its
    update step again).
  """
  if mask_update is None:
    return is_update
  if not isinstance(mask_update, (bool, np.bool_)):
    raise TypeError(
        "`mask_update` must be a Python bool (decided on the host) or None "
        f"(decided on the device), got {type(mask_update).__name__}: make it "
        "a static argument of the jitted step, or pass None.")
  return is_update if mask_update else False


def branch(
    flag: jax.Array | bool,
    on_update: Callable[[], Any],
    unchanged: Callable[[], Any],
    mask_update: bool | None = None,
) -> Any:
  """`lax.cond` on a traced `flag`; only the chosen branch on a Python bool.

  `mask_update` is the step's keyword argument (see `mask_update_flag`).
  The branches' threshold searches are unrolled (`threshold.unrolled`): on
  CPU a loop in an untaken branch costs every step, and a taken branch runs
  faster unrolled too (`benchmarks/step_overhead.py`: an update step 1.6x
  dense unrolled, 2.6x with the loop). Only a host-decided update under a
  mesh keeps the loops: sharded programs then hold one histogram
  all-reduce per loop body rather than one per pass.
  """
  if isinstance(flag, bool):
    return on_update() if flag else unchanged()
  if mask_update and threshold_lib.mesh_devices() > 1:
    return lax.cond(flag, on_update, unchanged)
  with threshold_lib.unrolled():
    return lax.cond(flag, on_update, unchanged)
