"""Masks on a mesh: what a mask update moves, weak scaling, many processes.

On 8 forced CPU devices (set below, before JAX starts):

* `allgather_bytes_per_mask_update`: bytes of all-gathers in the compiled
  mask-update step (magnitude, layer-wise, adam) of the MLP
  784-1024-1024-10 with kernels sharded over a (data 2, model 4) mesh;
  goal 0.
* `comm_bytes_per_mask_update_over_param_bytes`: bytes of every collective
  in that step over the params' bytes; goal <= 0.01. The threshold search
  runs its passes in a `while` loop whose body holds the one all-reduce of
  histograms; the HLO shows it once, so it is counted once per pass, for
  the passes a search can take (8-bit digits of the 32-bit keys, plus the
  positional tie-break): an upper bound. Also for RigL (two searches).
* `masks_equal_single_device`: the sharded update's masks equal the
  single-device ones, for layer-wise, global, N:M, block and RigL.
* `weak_scaling_efficiency_8`: training-step time on 1 device with batch b
  over the time on 8 devices with batch 8b (1.0 = perfect). The 8 devices
  are virtual, on this machine's cores, so this measures the partitioned
  program's overhead, not a pod; see the README for TPU figures.
* `multiprocess_equal`: the runner on 2 processes x 4 devices ends with the
  same masks and (to 1e-6) params as on 1 process x 8 devices.
* `restore_8_to_4_equal`: a run interrupted on 8 devices and resumed on 4
  (another mesh shape) ends like the uninterrupted run.

    python benchmarks/scaling.py [--quick] [--no-processes]
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("XLA_FLAGS",
                      "--xla_force_host_platform_device_count=8")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import argparse  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from _common import init_mlp, xent  # noqa: E402
from _timing import interleaved, log, median_ms  # noqa: E402

import jaxsparse  # noqa: E402
from jaxsparse import distributed as dist  # noqa: E402
from jaxsparse._src.core import threshold  # noqa: E402
from jaxsparse._src.distributed import local  # noqa: E402
from jaxsparse.experiments import checkpoint as ckpt_lib  # noqa: E402

SIZES = (784, 1024, 1024, 10)
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _update_step(tx):
  def step(params, state, grads):
    updates, state = tx.update(grads, state, params, mask_update=True)
    return optax.apply_updates(params, updates), state
  return step


def _sharded(tx, params, mesh):
  psh = dist.param_shardings(params, mesh)
  p = jax.device_put(params, psh)
  ssh = dist.like_params(jax.eval_shape(tx.init, p), p, psh)
  st = jax.jit(tx.init, out_shardings=ssh)(p)
  f = jax.jit(_update_step(tx), in_shardings=(psh, ssh, psh),
              out_shardings=(psh, ssh))
  return f, p, st, psh


def _passes(n_max: int) -> int:
  """Passes a search can take: 8-bit digits of 32-bit keys, then of the
  tied entries' positions."""
  bits = threshold._SHARDED_DIGIT_BITS  # pylint: disable=protected-access
  return math.ceil(32 / bits) + math.ceil(max(1, n_max).bit_length() / bits)


def comm_figures(params, mesh) -> dict:
  adam = optax.adam(1e-3)
  grads = jax.tree.map(lambda x: jnp.cos(3.0 * x), params)
  param_bytes = sum(x.size * x.dtype.itemsize
                    for x in jax.tree.leaves(params))
  n_max = max(x.size for x in jax.tree.leaves(params))
  s = jaxsparse.structures
  methods = {
      "layerwise": jaxsparse.prune(0.9, optimizer=adam),
      "global": jaxsparse.prune(
          0.9, allocation=jaxsparse.allocation.global_(), optimizer=adam),
      "n_m": jaxsparse.prune(0.5, structure=s.n_m(2, 4), optimizer=adam),
      "block": jaxsparse.prune(0.9, structure=s.block(2, 2), optimizer=adam),
      # Two searches (drop and grow): both in the HLO.
      "rigl": jaxsparse.dst.rigl(0.9, update_every=1, end_step=100,
                                 optimizer=adam),
  }
  out, equal = {}, True
  for name, tx in methods.items():
    f, p, st, psh = _sharded(tx, params, mesh)
    g = jax.device_put(grads, psh)
    with jax.set_mesh(mesh):
      hlo = f.lower(p, st, g).compile().as_text()
      _, new = f(p, st, g)
    _, ref = jax.jit(_update_step(tx))(params, tx.init(params), grads)
    same = all(
        np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(
            jax.tree.leaves(jaxsparse.get_masks(ref)),
            jax.tree.leaves(jaxsparse.get_masks(new)), strict=True))
    equal &= same
    comm = dist.collective_bytes(hlo)
    moved = sum(comm.values()) * _passes(n_max)
    out[name] = {"allgather": comm.get("all-gather", 0),
                 "comm_static": sum(comm.values()), "comm_bound": moved,
                 "ratio": moved / param_bytes, "masks_equal": same}
    log(f"{name}: {out[name]}")
  return {
      "allgather_bytes_per_mask_update": max(
          v["allgather"] for v in out.values()),
      "comm_bytes_per_mask_update_over_param_bytes": round(
          out["layerwise"]["ratio"], 6),
      "comm_ratio_rigl": round(out["rigl"]["ratio"], 6),
      "comm_ratio_max": round(max(v["ratio"] for v in out.values()), 6),
      "masks_equal_single_device": bool(equal),
      "param_bytes": param_bytes,
  }


def weak_scaling(params, batch: int, rounds: int) -> dict:
  """Step time at batch b on 1 device over batch 8b on 8 devices."""
  tx = jaxsparse.prune(0.9, optimizer=optax.adam(1e-3))
  rng = np.random.default_rng(0)
  fns = {}
  for n in (1, 8):
    mesh = dist.make_mesh(n, 1, jax.devices()[:n])
    psh = dist.param_shardings(params, mesh)
    p = jax.device_put(params, psh)
    ssh = dist.like_params(jax.eval_shape(tx.init, p), p, psh)
    st = jax.jit(tx.init, out_shardings=ssh)(p)
    bsh = dist.batch_sharding(mesh)
    x = jax.device_put(rng.normal(size=(batch * n, SIZES[0])).astype(
        np.float32), bsh)
    y = jax.device_put(rng.integers(0, 10, batch * n).astype(np.int32), bsh)

    def step(p, st, x, y):
      g = jax.grad(xent)(p, x, y)
      u, st = tx.update(g, st, p, mask_update=False)
      return optax.apply_updates(p, u), st

    f = jax.jit(step, in_shardings=(psh, ssh, bsh, bsh),
                out_shardings=(psh, ssh))
    fns[f"d{n}"] = lambda f=f, p=p, st=st, x=x, y=y: f(p, st, x, y)
  times = interleaved(fns, rounds)
  per = {k: median_ms(v) for k, v in times.items()}
  return {"weak_scaling_efficiency_8": round(per["d1"] / per["d8"], 4),
          "step_ms_1dev_batch": per["d1"], "step_ms_8dev_8batch": per["d8"],
          "weak_scaling_batch": batch}


CONFIG = """
from jaxsparse.experiments.config import base


def get_config():
  c = base()
  c.num_epochs, c.num_steps = -1, 20
  c.eval_every = c.checkpoint_every = 10
  c.compare_dense = False
  c.tensorboard = False
  c.pruning.sparsity = 0.9
  c.pruning.end_step, c.pruning.frequency = 15, 5
  c.mesh.data, c.mesh.model = 4, 2
  return c
"""


def _final(workdir):
  return ckpt_lib.read(os.path.join(workdir, "magnitude"), 20)


def _same(a, b) -> tuple[bool, float]:
  """(masks bit-identical, max abs difference of the float leaves)."""
  masks_ok, diff = True, 0.0
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
    x, y = np.asarray(x), np.asarray(y)
    if x.dtype.kind in "biu":
      masks_ok &= bool(np.array_equal(x, y))
    else:
      diff = max(diff, float(np.max(np.abs(x.astype(np.float64) - y))))
  return masks_ok, diff


def process_figures(timeout: float = 600) -> dict:
  root = tempfile.mkdtemp(prefix="jaxsparse_scaling_")
  try:
    cfg = os.path.join(root, "config.py")
    with open(cfg, "w") as f:
      f.write(CONFIG)

    def cmd(workdir, *flags):
      return [sys.executable, "-m", "jaxsparse.experiments.main", "--config",
              cfg, "--workdir", os.path.join(root, workdir),
              "--progress=false", *flags]

    log("runner: 1 process x 8 devices, 2 processes x 4, an interrupted run")
    procs = ([local.start(cmd("full"), devices=8, cwd=ROOT)]
             + local.launch(cmd("multi"), 2, devices_per_process=4, cwd=ROOT)
             + [local.start(cmd("cut", "--config.stop_after=10"), devices=8,
                            cwd=ROOT)])
    local.wait_all(procs, timeout)
    log("runner: resuming the 8-device checkpoint on 4 devices")
    local.wait_all([local.start(
        cmd("cut", "--config.mesh.data=2", "--config.mesh.model=2"),
        devices=4, cwd=ROOT)], timeout)
    full = _final(os.path.join(root, "full"))
    mp_masks, mp_diff = _same(full, _final(os.path.join(root, "multi")))
    rs_masks, rs_diff = _same(full, _final(os.path.join(root, "cut")))
    tol = 1e-6
    return {"multiprocess_equal": mp_masks and mp_diff <= tol,
            "multiprocess_max_abs_diff": mp_diff,
            "restore_8_to_4_equal": rs_masks and rs_diff <= tol,
            "restore_8_to_4_max_abs_diff": rs_diff}
  finally:
    shutil.rmtree(root, ignore_errors=True)


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--quick", action="store_true")
  ap.add_argument("--no-processes", action="store_true",
                  help="skip the runner's multi-process and restore runs")
  args = ap.parse_args()
  if jax.device_count() < 8:
    sys.exit("needs 8 devices: XLA_FLAGS was set before this script ran")
  params = init_mlp(jax.random.PRNGKey(0), SIZES)
  mesh = dist.make_mesh(2, 4)
  out = comm_figures(params, mesh)
  out.update(weak_scaling(params, 64 if args.quick else 128,
                          10 if args.quick else 30))
  if not args.no_processes:
    out.update(process_figures())
  print(json.dumps(out))


if __name__ == "__main__":
  main()
