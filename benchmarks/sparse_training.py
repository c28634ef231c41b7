"""Sparse training on digits: dense, static ERK, SET, RigL, STE, N:M SR-STE.

    python benchmarks/sparse_training.py --outdir runs/sparse_training
    python benchmarks/sparse_training.py --overhead-only

The full run trains an MLP 64-300-100-10 on scikit-learn's digits (1,437
train / 360 test images, stratified split) with SGD + momentum 0.9 for every
method: dense; static random ERK, SET and RigL (all three from the same
random ERK masks per seed; Delta T = 50, alpha = 0.3, T_end = 75% of the
steps) and magnitude STE (ERK) at 90% and 95%; 2:4 and 1:4 with STE and
SR-STE (lambda_W = 2e-4). All kernels are sparse, biases dense. It prints a
table of test accuracy (mean and std over seeds), the sparsity of the
deployed kernels, the final training loss and how far the masks moved, and
writes `sparse_training.png` to `--outdir`. `--dataset mnist` uses
`tfds.data_source("mnist")` when MNIST has been prepared locally.

`--overhead-only` times one jitted training step of an MLP 784-1024-1024-10
(batch 128, adam, harness of `step_overhead.py`): a dense optax step, a RigL
step that does not update the masks and a RigL mask-update step (the
default `freeze_optimizer_on_update=False`; `frozen_*` keys: True), with
the update decided on the host (`mask_update=` a static bool) and, in the
`*_traced` keys, on the device (`mask_update=None`, one compiled step for
both), interleaved; its last line is JSON with `rigl_nonupdate_ratio` and
`rigl_update_ratio` (host-decided, each vs the dense step).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import _timing  # noqa: E402
from _common import (  # noqa: E402
  digits_split,
  init_mlp,
  mlp,
  xent,
)

from jaxsparse._src.core import allocation as alloc_lib  # noqa: E402
from jaxsparse._src.core import masks as masks_lib  # noqa: E402
from jaxsparse._src.core import prune as prune_lib  # noqa: E402
from jaxsparse._src.core import schedules as sched_lib  # noqa: E402
from jaxsparse._src.core import scores as scores_lib  # noqa: E402
from jaxsparse._src.core import structures as struct_lib  # noqa: E402
from jaxsparse._src.dst import dst as dst_lib  # noqa: E402
from jaxsparse._src.dst import ste as ste_lib  # noqa: E402

# --------------------------------------------------------------------------
# Model and data.


def he_normal_f32(key: jax.Array, n_in: int, n_out: int) -> jax.Array:
  """N(0, 2 / n_in) kernel; its scale is a float32 square root, which for
  some widths (100) differs in the last bit from `_common.he_normal`'s."""
  return jax.random.normal(key, (n_in, n_out)) * jnp.sqrt(2.0 / n_in)


def init_sparse_mlp(key: jax.Array, sizes: tuple[int, ...]) -> dict:
  """The MLP trained here (all layer keys from one split of `key`)."""
  return init_mlp(key, sizes, he_normal_f32, split_all=True)


def load_mnist():
  import tensorflow_datasets as tfds  # optional dependency.
  out = []
  for split in ("train", "test"):
    ds = tfds.data_source("mnist", split=split)
    recs = [ds[i] for i in range(len(ds))]
    x = np.stack([r["image"] for r in recs]).reshape(len(recs), -1)
    out += [(x / 255.0).astype(np.float32),
            np.asarray([r["label"] for r in recs], np.int32)]
  return tuple(out)


# --------------------------------------------------------------------------
# Methods. Each returns (tx, forward_params_fn, final_masks_fn).


EVERY = 50  # DST mask updates (Delta T); T_end = 75% of training.
ALPHA = 0.3


def parse_nm(name):
  """"nm2:4" / "srste1:4" -> (n, m, lambda_W)."""
  lam = ste_lib.SRSTE_LAMBDA if name.startswith("srste") else 0.0
  n, m = (int(v) for v in name.removeprefix("srste").removeprefix("nm")
          .split(":"))
  return n, m, lam


@jax.jit
def random_erk_masks(params, sparsity, key):
  """Random masks with exact ERK per-layer counts (Evci et al., 2020)."""
  return prune_lib.compute_masks(
      params, None, masks_lib.ones_masks(params), sparsity, key,
      score=scores_lib.random, allocation=alloc_lib.erk())


def make_tx(name, sparsity, params, steps, lr, seed):
  """The optimizer of a method; its state carries masks where it has any.

  Static, SET and RigL start from the same random ERK masks for a seed.
  """
  opt = optax.sgd(lr, momentum=0.9)
  if name in ("static", "set", "rigl"):
    masks = random_erk_masks(params, jnp.float32(sparsity),
                             jax.random.PRNGKey(seed))
  if name == "static":
    return prune_lib.prune(0.0, optimizer=opt, initial_masks=masks)
  if name in ("set", "rigl"):
    return dst_lib.sparse_training(
        name, None, optimizer=opt, initial_masks=masks,
        drop_fraction=ALPHA, update_every=EVERY,
        end_step=int(0.75 * steps), seed=seed)
  return opt  # dense and the STE family train dense weights.


def forward_params(name, params, sparsity, lam):
  """The weights the forward pass sees (STE masks them on the fly)."""
  if name == "ste":
    return ste_lib.ste_mask(params, sparsity=sparsity,
                            allocation=alloc_lib.erk())
  if name.startswith(("nm", "srste")):
    n, m, _ = parse_nm(name)
    return ste_lib.ste_mask(params, structure=struct_lib.n_m(n, m),
                            srste_lambda=lam)
  return params  # dense, or exactly sparse params (static, SET, RigL).


def current_masks(name, params, state, sparsity):
  if name in ("static", "set", "rigl"):
    return masks_lib.get_masks(state)
  if name == "ste":
    return ste_lib.ste_masks(params, sparsity=sparsity,
                             allocation=alloc_lib.erk())
  if name.startswith(("nm", "srste")):
    n, m, _ = parse_nm(name)
    return ste_lib.ste_masks(params, structure=struct_lib.n_m(n, m))
  return None


@functools.cache
def trainer(name, steps, lr, sizes):
  """One compiled training run per method (sparsity, seed, data as args).

  The update of `prune` / `dst` does not depend on the sparsity or the seed
  (they only shape the initial state), so one representative transform
  serves every run of a method.
  """
  kind = "nm" if name.startswith(("nm", "srste")) else name
  tx = make_tx(kind if kind != "nm" else "dense", 0.9,
               init_sparse_mlp(jax.random.PRNGKey(0), sizes), steps, lr, 0)

  @jax.jit
  def run(params, state, xs, ys, sparsity, lam):
    m0 = current_masks(name, params, state, sparsity)

    def step(carry, batch):
      params, state = carry
      x, y = batch
      loss, g = jax.value_and_grad(
          lambda p: xent(forward_params(name, p, sparsity, lam), x, y))(params)
      u, state = tx.update(g, state, params)
      return (optax.apply_updates(params, u), state), loss

    (params, state), losses = jax.lax.scan(step, (params, state), (xs, ys))
    m1 = current_masks(name, params, state, sparsity)
    moved = None
    if m0 is not None:
      moved = sum(v for v in jax.tree.leaves(dst_lib.mask_hamming(m0, m1))
                  if v is not None)
    deployed = forward_params(name, params, sparsity, lam)
    if m1 is not None:
      deployed = masks_lib.apply_masks(deployed, m1)
    return deployed, losses, moved

  return run


def train_one(name, sparsity, data, *, steps, batch, lr, seed, sizes):
  xtr, ytr, xte, yte = data
  params = init_sparse_mlp(jax.random.PRNGKey(seed), sizes)
  tx = make_tx("dense" if name.startswith(("nm", "srste")) else name,
               sparsity, params, steps, lr, seed)
  state = tx.init(params)
  if name in ("static", "set", "rigl"):
    # Start exactly sparse (the forward pass reads the params unmasked).
    params = masks_lib.apply_masks(params, masks_lib.get_masks(state))
  lam = parse_nm(name)[2] if name.startswith(("nm", "srste")) else 0.0
  rng = np.random.default_rng(seed)
  per_epoch = len(xtr) // batch
  idx = np.concatenate([rng.permutation(len(xtr))[:per_epoch * batch]
                        for _ in range(steps // per_epoch + 1)])
  idx = idx[:steps * batch].reshape(steps, batch)
  run = trainer(name, steps, lr, sizes)
  t0 = time.perf_counter()
  deployed, losses, moved = jax.block_until_ready(run(
      params, state, jnp.asarray(xtr[idx]), jnp.asarray(ytr[idx]),
      jnp.float32(sparsity), jnp.float32(lam)))
  secs = time.perf_counter() - t0
  acc = float(jnp.mean(jnp.argmax(mlp(deployed, jnp.asarray(xte)), -1)
                       == jnp.asarray(yte)))
  kernels = [v["kernel"] for v in deployed.values()]
  nz = sum(int(jnp.sum(k != 0)) for k in kernels)
  tot = sum(k.size for k in kernels)
  return {"acc": acc, "sparsity": 1.0 - nz / tot,
          "sad": 0.0 if moved is None else int(moved) / tot,
          "loss": float(jnp.mean(losses[-100:])), "secs": secs}


def full(args):
  if args.dataset == "mnist":
    try:
      data = load_mnist()
    except Exception as e:  # pylint: disable=broad-except
      _timing.log(f"MNIST is not available ({type(e).__name__}: {e}); "
                  "using digits.")
      data = digits_split()
      args.dataset = "digits"
  else:
    data = digits_split()
  d_in = data[0].shape[1]
  sizes = (d_in, 300, 100, 10)
  runs = [("dense", 0.0)]
  for s in (0.9, 0.95):
    runs += [("static", s), ("set", s), ("rigl", s), ("ste", s)]
  runs += [("nm2:4", 0.5), ("srste2:4", 0.5), ("nm1:4", 0.75),
           ("srste1:4", 0.75)]
  labels = {"dense": "dense", "static": "static random ERK",
            "set": "SET (ERK)", "rigl": "RigL (ERK)",
            "ste": "magnitude STE (ERK)", "nm2:4": "2:4 STE",
            "srste2:4": "2:4 SR-STE", "nm1:4": "1:4 STE",
            "srste1:4": "1:4 SR-STE"}
  results = []
  for name, s in runs:
    accs, rows = [], []
    for seed in range(args.seeds):
      r = train_one(name, s, data, steps=args.steps, batch=args.batch,
                    lr=args.lr, seed=seed, sizes=sizes)
      rows.append(r)
      accs.append(r["acc"])
    row = {
        "method": labels[name], "key": name, "target": s,
        "acc_mean": float(np.mean(accs)), "acc_std": float(np.std(accs)),
        "sparsity": float(np.mean([r["sparsity"] for r in rows])),
        "sad": float(np.mean([r["sad"] for r in rows])),
        "loss": float(np.mean([r["loss"] for r in rows])),
        "secs": float(np.mean([r["secs"] for r in rows])),
    }
    results.append(row)
    _timing.log(f"{row['method']:<22} s={s:.2f} acc={row['acc_mean']:.4f}")
  header = (f"{'method':<22} {'target':>6} {'sparsity':>8} "
            f"{'test acc (mean ± std)':>21} {'train loss':>10} "
            f"{'mask moved':>10} {'s/run':>6}")
  print(f"{args.dataset}: MLP {'-'.join(map(str, sizes))}, {args.steps} "
        f"steps, batch {args.batch}, SGD momentum 0.9 lr {args.lr}, "
        f"{args.seeds} seeds")
  print(header)
  print("-" * len(header))
  for r in results:
    print(f"{r['method']:<22} {r['target']:>6.2f} {r['sparsity']:>8.4f} "
          f"{r['acc_mean']:>12.4f} ± {r['acc_std']:.4f} {r['loss']:>10.4f} "
          f"{r['sad']:>10.4f} {r['secs']:>6.1f}")
  print("sparsity: zeros in the deployed kernels; mask moved: fraction of "
        "kernel entries whose mask differs between the start and the end "
        "of training (Sparse Architecture Divergence); train loss: mean of "
        "the last 100 steps.")
  plot(results, args)
  by = {(r["key"], r["target"]): r["acc_mean"] for r in results}
  print(json.dumps({
      "dataset": args.dataset,
      "acc": {f"{r['key']}@{r['target']:.2f}": round(r["acc_mean"], 4)
              for r in results},
      "rigl_minus_static_90": round(by[("rigl", 0.9)] - by[("static", 0.9)],
                                    4),
      "srste_minus_ste_1_4": round(by[("srste1:4", 0.75)]
                                   - by[("nm1:4", 0.75)], 4),
  }))


def plot(results, args):
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  os.makedirs(args.outdir, exist_ok=True)
  fig, ax = plt.subplots(figsize=(9, 4.5))
  names = [f"{r['method']}\n@{r['target']:.2f}" for r in results]
  ax.bar(range(len(results)), [r["acc_mean"] for r in results],
         yerr=[r["acc_std"] for r in results], capsize=3,
         color=["0.4" if r["key"] == "dense" else
                "C0" if r["target"] == 0.9 else
                "C1" if r["target"] == 0.95 else "C2" for r in results])
  dense = [r["acc_mean"] for r in results if r["key"] == "dense"]
  if dense:
    ax.axhline(dense[0], color="0.4", ls="--", lw=0.8)
  ax.set_xticks(range(len(results)), names, rotation=70, fontsize=7)
  lo = min(r["acc_mean"] - r["acc_std"] for r in results)
  ax.set_ylim(max(0.0, lo - 0.02), 1.0)
  ax.set_ylabel("test accuracy")
  ax.set_title(f"Sparse training on {args.dataset} (MLP, {args.seeds} seeds; "
               "blue 90%, orange 95%, green N:M)")
  fig.tight_layout()
  path = os.path.join(args.outdir, "sparse_training.png")
  fig.savefig(path, dpi=120)
  _timing.log(f"wrote {path}")


# --------------------------------------------------------------------------
# Step overhead.


def overhead(args):
  """RigL step cost vs a dense adam step, with `step_overhead.py`'s harness.

  Same model (MLP 784-1024-1024-10, batch 128, adam), jitted step with
  donated buffers, the step count reset before each call (outside the
  jitted step). `mask_update` is decided on the host (a static argument of
  the jitted step: update and non-update steps compile apart), or, for the
  `*_traced` variants, on the device (one compiled step serves both). The
  `frozen_*` variants use `freeze_optimizer_on_update=True`.
  """
  import step_overhead as so  # same batch, step and runner.

  params, x, y = so.problem()
  dense_tx = optax.adam(1e-3)
  every, end = 100, 10_000

  def rigl(freeze):
    return dst_lib.sparse_training(
        "rigl", 0.9, optimizer=optax.adam(1e-3), allocation=alloc_lib.erk(),
        end_step=end, update_every=every, freeze_optimizer_on_update=freeze)

  rigl_tx, adv_tx = rigl(False), rigl(True)
  is_update = sched_lib.periodic_updates(every, 0, end)
  c_upd = 2 * every
  c_non = 2 * every + every // 2
  dense_step = so.make_step(dense_tx)
  rigl_step = so.make_step(rigl_tx)
  adv_step = so.make_step(adv_tx)

  def sparse(step, tx, count, host=True):
    def make():
      state = tx.init(params)
      return so.Runner(
          step, masks_lib.apply_masks(so.copy_tree(params), state.masks),
          state, x, y, count, is_update if host else None)
    return make

  def dense():
    return so.Runner(
        dense_step, so.copy_tree(params), dense_tx.init(params), x, y)

  k = max(1, args.replicas)
  makers = {
      "dense": dense, "dense_b": dense,
      "rigl_nonupdate": sparse(rigl_step, rigl_tx, c_non),
      "rigl_update": sparse(rigl_step, rigl_tx, c_upd),
      "rigl_nonupd_traced": sparse(rigl_step, rigl_tx, c_non, host=False),
      "rigl_update_traced": sparse(rigl_step, rigl_tx, c_upd, host=False),
      "frozen_nonupd": sparse(adv_step, adv_tx, c_non),
      "frozen_update": sparse(adv_step, adv_tx, c_upd),
  }
  reps = _timing.replicas(makers, k)
  update, nonupdate = reps["rigl_update"], reps["rigl_nonupdate"]
  _timing.log("compiling ...")
  before = jax.tree.map(jnp.copy, update[0].state.masks)
  for rs in reps.values():
    for r in rs:
      jax.block_until_ready(r())
  # mask_update=False, True, None: three programs of one jitted function.
  assert rigl_step._cache_size() == 3, rigl_step._cache_size()
  moved = sum(int(v) for v in jax.tree.leaves(
      dst_lib.mask_hamming(before, update[0].state.masks)) if v is not None)
  assert moved > 0, "the update variant did not move the masks"
  sp = float(masks_lib.sparsity(nonupdate[0].state.masks))
  _timing.log(f"mask sparsity {sp:.3f}; one update moved {moved} entries")

  rounds = args.rounds
  _timing.log(f"timing {rounds} interleaved rounds, {k} replicas each ...")
  cpu: dict[str, list[float]] = {}
  times = _timing.interleaved(
      {name: _timing.Cycle(rs) for name, rs in reps.items()},
      rounds=rounds, cpu=cpu)
  med = {k: _timing.median_ms(v) for k, v in times.items()}
  med_cpu = {k: _timing.median_ms(v) for k, v in cpu.items()}
  print(f"MLP {'-'.join(map(str, so.SIZES))}, batch {so.BATCH}, adam; RigL "
        f"90% ERK; {rounds} interleaved rounds x {k} replicas; "
        f"jax {jax.__version__} "
        f"{jax.default_backend()}")
  print(f"{'variant':<18} {'median ms':>10} {'p25 ms':>8} {'p75 ms':>8} "
        f"{'ratio':>6} {'cpu ms':>8} {'cpu ratio':>9}")
  for name, samples in times.items():
    lo, hi = _timing.spread_ms(samples)
    print(f"{name:<18} {med[name]:>10.3f} {lo:>8.3f} {hi:>8.3f} "
          f"{med[name] / med['dense']:>6.3f} {med_cpu[name]:>8.3f} "
          f"{med_cpu[name] / med_cpu['dense']:>9.3f}")
  print(json.dumps({
      "rigl_nonupdate_ratio": round(med["rigl_nonupdate"] / med["dense"], 4),
      "rigl_update_ratio": round(med["rigl_update"] / med["dense"], 4),
      "rigl_nonupdate_cpu_ratio": round(
          med_cpu["rigl_nonupdate"] / med_cpu["dense"], 4),
      "rigl_update_cpu_ratio": round(
          med_cpu["rigl_update"] / med_cpu["dense"], 4),
      "dense_ms": round(med["dense"], 4),
      "rigl_nonupdate_ms": round(med["rigl_nonupdate"], 4),
      "rigl_update_ms": round(med["rigl_update"], 4),
      # freeze_optimizer_on_update=True (the optimizer state skips
      # mask-update steps, as in the reference code; params identical).
      "frozen_nonupdate_ratio": round(
          med["frozen_nonupd"] / med["dense"], 4),
      "frozen_update_ratio": round(
          med["frozen_update"] / med["dense"], 4),
      # The same dense step, other replicas: the noise floor of the ratios.
      "dense_aa_ratio": round(med["dense_b"] / med["dense"], 4),
      # Median of the within-round ratios (`_timing.paired_ratio`).
      "rigl_nonupdate_paired_ratio": round(
          _timing.paired_ratio(times, "rigl_nonupdate", "dense"), 4),
      "rigl_update_paired_ratio": round(
          _timing.paired_ratio(times, "rigl_update", "dense"), 4),
      # mask_update=None: the device decides, inside one compiled step.
      "rigl_nonupdate_traced_ratio": round(
          med["rigl_nonupd_traced"] / med["dense"], 4),
      "rigl_update_traced_ratio": round(
          med["rigl_update_traced"] / med["dense"], 4),
      "rigl_nonupdate_traced_paired_ratio": round(
          _timing.paired_ratio(times, "rigl_nonupd_traced", "dense"), 4),
      "dense_aa_paired_ratio": round(
          _timing.paired_ratio(times, "dense_b", "dense"), 4),
      "rounds": rounds,
      "replicas": k,
      "backend": jax.default_backend(),
  }))


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--outdir", default="runs/sparse_training")
  p.add_argument("--dataset", default="digits", choices=("digits", "mnist"))
  p.add_argument("--steps", type=int, default=1500)
  p.add_argument("--batch", type=int, default=64)
  p.add_argument("--lr", type=float, default=0.05)
  p.add_argument("--seeds", type=int, default=3)
  p.add_argument("--rounds", type=int, default=300)
  p.add_argument("--replicas", type=int, default=3,
                 help="overhead: replicas (own buffers) per variant")
  p.add_argument("--overhead-only", action="store_true")
  args = p.parse_args()
  if args.overhead_only:
    overhead(args)
  else:
    full(args)


if __name__ == "__main__":
  main()
