"""Where a non-update `prune` step's overhead goes, part by part.

Same model, data, step and harness as `step_overhead.py`. Each variant adds
one part of a `jaxsparse.prune(..., optimizer=adam)` non-update step to the
dense adam step:

  dense          plain optax adam.
  project        adam, then the projection `where(mask, u, -p)` reading the
                 bit-packed masks (state: adam's and the packed masks).
  project_state  as `project`, with the rest of prune's state carried
                 through the step (count, key, bool masks).
  trivial_cond   as `project_state`, with a `lax.cond` that is never taken
                 and whose branch is elementwise (new masks from the old
                 ones and the params, repacked, adam's slots zeroed).
  prune_host     `jaxsparse.prune` at a non-update step decided on the host
                 (`mask_update=False`): `project_state`, as the library
                 writes it.
  prune          `jaxsparse.prune` at a non-update step decided on the
                 device (`mask_update=None`): the same, with the real mask
                 update (radix selection) in the untaken branch.
  prune_pivots   `prune` with the selection forced to the counting search
                 that TPUs use (reductions only, no scatter).

Printed per variant: the median over rounds of its time over the dense
time of the same round (`_timing.paired_ratio`), and the ratio of medians.
The last stdout line is one JSON object of the paired ratios.

Run: .venv/bin/python benchmarks/overhead_parts.py [--rounds N]
     [--replicas K]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any, NamedTuple

sys.path.insert(0, os.path.dirname(__file__))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from _timing import (  # noqa: E402
    Cycle,
    interleaved,
    log,
    median_ms,
    paired_ratio,
    replicas,
)
from jax import lax  # noqa: E402
from step_overhead import (  # noqa: E402
    NONUPDATE_COUNT,
    UPDATE_COUNT,
    Runner,
    copy_tree,
    make_step,
    problem,
)

import jaxsparse  # noqa: E402
from jaxsparse._src import bits as bits_lib  # noqa: E402
from jaxsparse._src import masks as masks_lib  # noqa: E402
from jaxsparse._src import threshold  # noqa: E402


class PartsState(NamedTuple):
  count: jax.Array
  masks: Any
  key: Any
  inner: Any
  bits: Any


def parts_tx(masks, *, state: bool, cond: bool):
  """Adam + projection, optionally with prune's state and a trivial cond."""
  inner = optax.adam(1e-3)
  is_none = lambda z: z is None  # noqa: E731

  def init(params):
    return PartsState(
        count=jnp.zeros((), jnp.int32),
        masks=copy_tree(masks) if state else None,
        key=jax.random.PRNGKey(0) if state else None,
        inner=inner.init(params), bits=bits_lib.pack_masks(masks))

  def update(grads, s, params):
    masks_, bits, slots = s.masks, s.bits, s.inner
    if cond:
      def on_update():
        new = jax.tree.map(lambda m, p: None if m is None else m & (p != 0),
                           s.masks, params, is_leaf=is_none)
        return (new, bits_lib.pack_masks(new),
                masks_lib.zero_slots(inner, s.inner, new))
      masks_, bits, slots = lax.cond(
          s.count % 100 == 0, on_update, lambda: (s.masks, s.bits, s.inner))
    step_masks = bits_lib.unpack_masks(bits, masks)
    out, slots = inner.update(grads, slots, params)
    out = masks_lib.project_updates(step_masks, out, params)
    count = s.count + 1 if state else s.count
    return out, PartsState(count, masks_, s.key, slots, bits)

  return optax.GradientTransformation(init, update)


def forced(tx, method: str):
  """`tx` traced with the threshold search forced to `method`."""
  def update(*args, **kwargs):
    threshold._FORCE_METHOD = method  # pylint: disable=protected-access
    try:
      return tx.update(*args, **kwargs)
    finally:
      threshold._FORCE_METHOD = None  # pylint: disable=protected-access
  return optax.GradientTransformationExtraArgs(tx.init, update)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--rounds", type=int, default=300)
  parser.add_argument("--replicas", type=int, default=3)
  args = parser.parse_args()

  params, x, y = problem()
  schedule = jaxsparse.polynomial(0.9, begin_step=0, end_step=1000,
                                  frequency=100)
  sparse = jaxsparse.prune(schedule, optimizer=optax.adam(1e-3))
  # Real masks (from one update step) for every variant.
  r = Runner(make_step(sparse), copy_tree(params), sparse.init(params), x, y,
             UPDATE_COUNT)
  jax.block_until_ready(r())
  masks = jax.tree.map(np.asarray, r.state.masks)

  txs = {
      "dense": (optax.adam(1e-3), None),
      "project": (parts_tx(masks, state=False, cond=False), None),
      "project_state": (parts_tx(masks, state=True, cond=False), None),
      "trivial_cond": (parts_tx(masks, state=True, cond=True), 150),
      "prune_host": (sparse, NONUPDATE_COUNT, schedule.is_update_step),
      "prune": (sparse, NONUPDATE_COUNT),
      "prune_pivots": (forced(sparse, "pivots"), NONUPDATE_COUNT),
  }

  def maker(tx, count, is_update=None):
    step = make_step(tx)
    def make():
      run = Runner(step, copy_tree(params), tx.init(params), x, y, count,
                   is_update)
      if count is not None:  # real masks in the prune state
        run.set_count(UPDATE_COUNT)
        jax.block_until_ready(run())
        run.set_count(count)
      jax.block_until_ready(run())
      return run
    return make

  log("compiling ...")
  reps = replicas({n: maker(*v) for n, v in txs.items()}, args.replicas)
  log(f"timing {args.rounds} interleaved rounds, {args.replicas} replicas "
      "per variant ...")
  times = interleaved({n: Cycle(rs) for n, rs in reps.items()},
                      rounds=args.rounds)
  med = {n: median_ms(v) for n, v in times.items()}
  paired = {n: paired_ratio(times, n, "dense") for n in times}
  print(f"{'variant':<14} {'median ms':>10} {'paired':>7} {'ratio':>6}")
  for n in times:
    print(f"{n:<14} {med[n]:>10.3f} {paired[n]:>7.4f} "
          f"{med[n] / med['dense']:>6.4f}")
  print(json.dumps({n: round(v, 4) for n, v in paired.items()
                    if n != "dense"} | {"rounds": args.rounds,
                                        "replicas": args.replicas}))


if __name__ == "__main__":
  main()
