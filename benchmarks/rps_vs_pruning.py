"""Parameter sharing (HashedNet, ROAST, STABLE-RPS) vs pruning at equal memory.

Accuracy on scikit-learn's embedded digits (1,797 8x8 images; 80/20 split)
of an MLP 64-1024-1024-10 (1,124,352 kernel weights) compressed to
`compression` in {1e-1, 1e-2, 1e-3} stored floats per kernel weight, for

  dense-small  a narrower MLP 64-H-H-10 whose kernels fit the budget;
  mag-init     one-shot global magnitude pruning at init;
  mag-gradual  global magnitude pruning on the cubic schedule during training;
  snip         global |w * g| on one batch at init (Lee et al., 2019);
  synflow      100 rounds of global SynFlow at init (Tanaka et al., 2020);
               (both from `jaxsparse._src.pai.pai` when present, else local
               fallbacks of the same definitions)
  hashednet    `rps_init(mapper="hashednet")` (per-layer memories);
  roast        `rps_init(mapper="roast")` (one global memory, tiles);
  stable_rps   `rps_init(mapper="stable_rps")` + `rps_gradient_scaling`.

Biases are stored densely by every method (not counted). Pruning's budget
counts non-zeros only (`--mask-cost none`, the convention of pruning
papers; the mask itself would cost 1 bit per weight, 35,136 floats here,
more than the whole 1e-3 budget). RPS trains `expand(memory)` directly; the
memory is what is stored. Every method trains the same number of steps
with the same optimizer (`--optimizer sgd`: momentum 0.9, or `adam`), at
one lr (`--lr`) or at the lr of `--lr-grid` with the best accuracy on a
validation split (20 % of the training split, seed 0), chosen per method
and compression. A table (mean ± std over seeds) goes to stdout; with
`--outdir`, `rps_vs_pruning_<optimizer>[_tuned].{json,png}` (or `--tag`).
A full default run (2 seeds, 300 steps) takes ~20 minutes on a busy 2-core
CPU; `--quick` (1 seed, 60 steps) is a smoke run.

`--overhead-only` times a jitted training step through `spec.expand` for an
MLP 784-1024-1024-10 (1.86 M weights) at compression 0.1 against the dense
step (SGD with momentum, batch 128, 60 interleaved rounds, 30 with
`--quick`), reports the compiled memory of `expand` and of its gradient at
~20 M weights, and prints a JSON line with `expand_step_ratio` (STABLE-RPS)
last. Each `<mapper>_step_ratio` is a quotient of median wall times;
`_paired_ratio` (median of same-round quotients) and `_cpu_ratio` (process
CPU time, less sensitive to other processes on a shared host) estimate the
same ratio.

Run: .venv/bin/python benchmarks/rps_vs_pruning.py [--quick] [--outdir DIR]
     .venv/bin/python benchmarks/rps_vs_pruning.py --overhead-only
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from _common import (  # noqa: E402
    digits_split,
    init_mlp,
    kernel_floats,
    lecun_normal,
    mlp,
    xent,
)
from _timing import (  # noqa: E402
    interleaved,
    log,
    median_ms,
    paired_ratio,
    spread_ms,
)

import jaxsparse  # noqa: E402
from jaxsparse._src.core.prune import compute_masks
from jaxsparse._src.sharing import rps  # noqa: E402

try:  # the library's SNIP / SynFlow (pruning at init), when present
  from jaxsparse._src.pai import pai  # noqa: E402
except ImportError:  # pragma: no cover
  pai = None

METHODS = ("dense-small", "mag-init", "mag-gradual", "snip", "synflow",
           "hashednet", "roast", "stable_rps")
COMPRESSIONS = (1e-1, 1e-2, 1e-3)


# --- model -------------------------------------------------------------------
def small_width(n_in, n_out, budget):
  """Largest H with n_in*H + H*H + H*n_out <= budget."""
  b = n_in + n_out
  return max(1, int((-b + math.sqrt(b * b + 4 * budget)) // 2))


# --- data --------------------------------------------------------------------
def batches(x, y, batch, steps, seed):
  rng = np.random.default_rng(seed)
  n, i, perm = len(x), len(x), None
  for _ in range(steps):
    if i + batch > n:
      perm, i = rng.permutation(n), 0
    idx = perm[i:i + batch]
    i += batch
    yield x[idx], y[idx]


# --- pruning at init ----------------------------------------------------------
def snip_masks(params, x, y, sparsity, key):
  """SNIP: global top |w * g| on one batch (Lee et al., 2019)."""
  if pai is not None:
    scores = pai.snip(lambda p, b: xent(p, *b), params, (x, y))
    return pai.masks_from_scores(scores, params, sparsity)

  @jax.jit
  def masks_fn(params, x, y):
    grads = jax.grad(xent)(params, x, y)
    return compute_masks(
        params, grads, jaxsparse.ones_masks(params), jnp.float32(sparsity),
        key, score=jaxsparse.scores.saliency,
        allocation=jaxsparse.allocation.global_())
  return masks_fn(params, x, y)


def synflow_masks(params, sparsity, key, rounds=100):
  """Iterative SynFlow: density (1-s)^(k/n), global, weights only."""
  n_in = params["dense_0"]["kernel"].shape[0]
  if pai is not None:
    return pai.synflow_masks(mlp, params, (n_in,), sparsity,
                             rounds=rounds)

  def flow(abs_params, masks):
    h = jnp.ones((1, n_in), jnp.float32)
    for i in range(len(abs_params)):
      h = h @ (abs_params[f"dense_{i}"]["kernel"] * masks[f"dense_{i}"][
          "kernel"])
    return jnp.sum(h)

  @jax.jit
  def one_round(masks, s):
    fmasks = jax.tree.map(lambda m: None if m is None else m.astype(
        jnp.float32), masks, is_leaf=lambda m: m is None)
    ap = jax.tree.map(jnp.abs, params)
    g = jax.grad(flow)(ap, fmasks)
    scores = jax.tree.map(lambda p, gg: jnp.abs(p * gg), ap, g)
    return compute_masks(
        params, None, masks, s, key, score=lambda p, gr, k: scores,
        allocation=jaxsparse.allocation.global_())

  masks = jaxsparse.ones_masks(params)
  density = 1.0 - sparsity
  for k in range(1, rounds + 1):
    masks = one_round(masks, jnp.float32(1.0 - density ** (k / rounds)))
  return masks


# --- training -----------------------------------------------------------------
def base_optimizer(name, lr):
  if name == "sgd":
    return optax.sgd(lr, momentum=0.9)
  return optax.adam(lr)


_STEPS = {}  # compiled training steps, reused across seeds / compressions


def train_step(key, tx, fn):
  """A jitted step for (tx, fn), cached under `key`."""
  if key not in _STEPS:
    @jax.jit
    def step(params, state, x, y):
      loss, grads = jax.value_and_grad(lambda p: xent(fn(p), x, y))(params)
      updates, state = tx.update(grads, state, params)
      return optax.apply_updates(params, updates), state, loss
    _STEPS[key] = step
  return _STEPS[key]


def run(method, compression, seed, data, args, lr):
  """Trains one model; returns (test accuracy, stored kernel floats, info)."""
  xtr, ytr, xte, yte = data
  sizes = (xtr.shape[1], args.hidden, args.hidden, 10)
  n_kernel = kernel_floats(sizes)
  budget = compression * n_kernel
  kinit, kmask = jax.random.split(jax.random.PRNGKey(seed))
  base = base_optimizer(args.optimizer, lr)
  fn = lambda p: p  # trainable tree -> MLP params
  extra = {}
  pruned = method in ("mag-init", "mag-gradual", "snip", "synflow")

  if method in ("dense", "dense-small"):
    h = args.hidden if method == "dense" else small_width(
        sizes[0], sizes[-1], budget)
    params = init_mlp(kinit, (sizes[0], h, h, 10), lecun_normal)
    stored = kernel_floats((sizes[0], h, h, 10))
    tx, step_key = base, ("dense", h, lr)
    if method == "dense-small":
      extra["width"] = h
  elif pruned:
    params = init_mlp(kinit, sizes, lecun_normal)
    s = rps.memory_budget(params, budget, mask_cost=args.mask_cost).sparsity
    if method == "mag-gradual":
      tx = jaxsparse.prune(
          jaxsparse.polynomial(s, begin_step=0, end_step=int(0.6 * args.steps),
                               frequency=max(1, args.steps // 20)),
          allocation=jaxsparse.allocation.global_(), optimizer=base)
      step_key = ("gradual", s, lr)
    else:
      # Masks fixed at init; one compiled step serves every at-init method.
      if method == "mag-init":
        masks = jax.jit(lambda p: compute_masks(
            p, None, jaxsparse.ones_masks(p), jnp.float32(s), kmask,
            allocation=jaxsparse.allocation.global_()))(params)
      elif method == "snip":
        xb, yb = next(batches(xtr, ytr, args.batch, 1, seed + 1000))
        masks = snip_masks(params, xb, yb, s, kmask)
      else:
        masks = synflow_masks(params, s, kmask)
      params = jaxsparse.apply_masks(params, masks)
      tx = _STEPS.setdefault(("fixed_tx", lr),
                             jaxsparse.prune(0.0, optimizer=base))
      step_key = ("fixed", lr)
  else:
    params = init_mlp(kinit, sizes, lecun_normal)
    m = compression * n_kernel
    tile = next((t for t in ((32, 32), (16, 16), (8, 8), (4, 4))
                 if t[0] * t[1] * 16 <= m), (2, 2))
    params, spec = rps.init(params, compression, mapper=method,
                                seed=seed, tile=tile)
    fn, tx = spec.expand, base
    if method == "stable_rps":
      tx = optax.chain(rps.gradient_scaling(spec), base)
    stored = spec.memory_size
    step_key = (method, spec, lr)
    if method == "roast":
      extra["tile"] = tile

  state = tx.init(params)
  if pruned and method != "mag-gradual":
    state = jaxsparse.replace_masks(state, masks)
  step = train_step(step_key, tx, fn)
  for xb, yb in batches(xtr, ytr, args.batch, args.steps, seed):
    params, state, loss = step(params, state, xb, yb)
  logits = jax.jit(lambda p, x: mlp(fn(p), x))(params, xte)
  acc = float(np.mean(np.argmax(np.asarray(logits), -1) == yte))
  if pruned:
    masks = [m for m in jax.tree.leaves(jaxsparse.get_masks(state))]
    stored = int(sum(int(m.sum()) for m in masks))
    # A layer with no surviving weight disconnects the network.
    extra["dead_layers"] = int(sum(int(m.sum()) == 0 for m in masks))
  extra["final_loss"] = round(float(loss), 4)
  return acc, int(stored), extra


def pick_lr(method, c, data, args):
  """The lr of `args.lr_grid` with the best validation accuracy (seed 0;
  the last 20 % of the training split is held out)."""
  if not args.lr_grid:
    return args.lr, None
  xtr, ytr = data[0], data[1]
  cut = int(0.8 * len(xtr))
  val_data = (xtr[:cut], ytr[:cut], xtr[cut:], ytr[cut:])
  scores = {lr: run(method, c, 0, val_data, args, lr)[0]
            for lr in args.lr_grid}
  return max(scores, key=scores.get), scores


def accuracy_sweep(args):
  data = digits_split()
  sizes = (data[0].shape[1], args.hidden, args.hidden, 10)
  grid = f"lr grid {args.lr_grid}" if args.lr_grid else f"lr {args.lr:g}"
  log(f"digits: {len(data[0])} train / {len(data[2])} test; MLP {sizes}, "
      f"{kernel_floats(sizes):,} kernel weights; {args.optimizer} ({grid}), "
      f"{args.steps} steps of batch {args.batch}; seeds {args.seeds}")
  results = []
  t0 = time.time()
  cells = [] if args.skip_dense else [("dense", 1.0)]
  cells += [(m, c) for c in args.compressions for m in args.methods]
  for method, c in cells:
    try:
      lr, val = pick_lr(method, c, data, args)
    except ValueError as e:  # e.g. a budget below the bitmap's size
      results.append({"method": method, "compression": c,
                      "acc": [float("nan")], "stored": 0, "lr": None,
                      "val_acc_by_lr": None, "extra": {"error": str(e)}})
      log(f"c={c:g} {method:<12} skipped: {e}")
      continue
    accs, stored, extras = [], [], []
    for s in range(args.seeds):
      acc, st, ex = run(method, c, s, data, args, lr)
      accs.append(acc)
      stored.append(st)
      extras.append(ex)
    results.append({"method": method, "compression": c, "acc": accs,
                    "stored": int(np.mean(stored)), "lr": lr,
                    "val_acc_by_lr": val, "extra": extras[0]})
    log(f"c={c:g} {method:<12} acc {np.mean(accs):.4f} lr {lr:g} "
        f"stored {int(np.mean(stored)):,} {extras[0]} "
        f"({time.time() - t0:.0f}s)")
  return results


def print_table(results, args):
  comps = list(args.compressions)
  lr = (f"lr per cell from {args.lr_grid} on validation" if args.lr_grid
        else f"lr {args.lr:g}")
  print(f"digits, MLP 64-{args.hidden}-{args.hidden}-10, {args.optimizer} "
        f"({lr}), {args.steps} steps, {args.seeds} seed(s); test accuracy "
        "(mean ± std); pruning budget = non-zeros + mask cost "
        f"'{args.mask_cost}'; dense-small = 64-H-H-10 in budget")
  for r in results:
    if r["method"] == "dense":
      print(f"dense (compression 1): {np.mean(r['acc']):.4f}")
  print(f"{'method':<12}" + "".join(f"{'c=' + format(c, 'g'):>24}"
                                    for c in comps))
  for method in args.methods:
    row = f"{method:<12}"
    for c in comps:
      r = next(r for r in results
               if r["method"] == method and r["compression"] == c)
      cell = f"{np.mean(r['acc']):.4f} ± {np.std(r['acc']):.3f}"
      if args.lr_grid and r["lr"] is not None:
        cell += f" ({r['lr']:g})"
      row += f"{cell:>24}"
    print(row)


def plot(results, args, path):
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  fig, ax = plt.subplots(figsize=(6, 4))
  for method in args.methods:
    rs = sorted((r for r in results if r["method"] == method),
                key=lambda r: r["compression"])
    ax.errorbar([r["compression"] for r in rs],
                [np.mean(r["acc"]) for r in rs],
                yerr=[np.std(r["acc"]) for r in rs], marker="o",
                label=method, capsize=2,
                linestyle="-" if method in ("hashednet", "roast", "stable_rps")
                else "--")
  for r in results:
    if r["method"] == "dense":
      ax.axhline(np.mean(r["acc"]), color="k", lw=0.8, label="dense")
  ax.set_xscale("log")
  ax.invert_xaxis()
  ax.set_xlabel("compression (stored floats / kernel weights)")
  ax.set_ylabel("test accuracy")
  ax.set_title(f"digits, MLP 64-{args.hidden}-{args.hidden}-10, "
               f"{args.optimizer}" + (", lr tuned" if args.lr_grid else ""))
  ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=120)


# --- overhead -----------------------------------------------------------------
class Runner:
  """Calls a donated step repeatedly, feeding its outputs back."""

  def __init__(self, step, params, state):
    self.step, self.params, self.state = step, params, state

  def __call__(self):
    self.params, self.state = self.step(self.params, self.state)
    return self.params


def compiled_bytes(fn, *args):
  """Temporary bytes of the compiled `fn` and its largest materialised
  integer buffer (top-level HLO instructions; fusion bodies are not
  materialised)."""
  c = jax.jit(fn).lower(*args).compile()
  largest = 0
  for block in re.split(r"\n(?=\S)", c.as_text()):
    head = block.split("\n", 1)[0]
    if "fused_computation" in head or head.startswith("HloModule"):
      continue
    for dims in re.findall(r"= [su]32\[([\d,]*)\]", block):
      largest = max(largest, math.prod(int(d) for d in dims.split(",") if d))
  return {"temp": int(c.memory_analysis().temp_size_in_bytes),
          "max_int_array": largest}


def overhead(args):
  sizes = (784, 1024, 1024, 10)
  batch = 128
  key = jax.random.PRNGKey(0)
  kp, kx, ky = jax.random.split(key, 3)
  params = init_mlp(kp, sizes, lecun_normal)
  x = jax.random.normal(kx, (batch, sizes[0]))
  y = jax.random.randint(ky, (batch,), 0, sizes[-1])
  n_kernel = kernel_floats(sizes)
  base = optax.sgd(0.01, momentum=0.9)

  def make(tx, fn):
    def step(p, s):
      grads = jax.grad(lambda q: xent(fn(q), x, y))(p)
      updates, s = tx.update(grads, s, p)
      return optax.apply_updates(p, updates), s
    return jax.jit(step, donate_argnums=(0, 1))

  copy = lambda t: jax.tree.map(jnp.copy, t)
  runners = {"dense": Runner(make(base, lambda q: q), copy(params),
                             base.init(params))}
  for mapper in args.mappers:
    memory, spec = rps.init(params, 0.1, mapper=mapper)
    tx = base
    if mapper == "stable_rps":
      tx = optax.chain(rps.gradient_scaling(spec), base)
    runners[mapper] = Runner(make(tx, spec.expand), copy(memory),
                             tx.init(memory))
  log(f"MLP {sizes}: {n_kernel:,} kernel weights, compression 0.1, batch "
      f"{batch}; {args.rounds} interleaved rounds ...")
  for r in runners.values():
    jax.block_until_ready(r())
  cpu = {}
  times = interleaved(runners, rounds=args.rounds, cpu=cpu)
  med = {k: median_ms(v) for k, v in times.items()}
  med_cpu = {k: median_ms(v) for k, v in cpu.items()}
  print(f"{'variant':<11} {'median ms':>10} {'p25 ms':>8} {'p75 ms':>8} "
        f"{'ratio':>6}")
  for name, samples in times.items():
    lo, hi = spread_ms(samples)
    print(f"{name:<11} {med[name]:>10.3f} {lo:>8.3f} {hi:>8.3f} "
          f"{med[name] / med['dense']:>6.3f}")

  # Memory of expand (and of its gradient) at ~20 M weights.
  big = (2048, 4096, 4096, 10)
  shapes = {f"dense_{i}": {
      "kernel": jax.ShapeDtypeStruct((a, b), jnp.float32),
      "bias": jax.ShapeDtypeStruct((b,), jnp.float32)}
      for i, (a, b) in enumerate(zip(big[:-1], big[1:], strict=True))}
  n_big = kernel_floats(big)
  log(f"compiled memory of expand at {n_big:,} weights (compression 0.1):")
  mem_report = {}
  for mapper in args.mappers:
    memory, spec = rps.init(shapes, 0.1, mapper=mapper)
    memory = jax.tree.map(
        lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), memory)
    fwd = compiled_bytes(spec.expand, memory)
    loss = lambda mem, spec=spec: sum(
        jnp.vdot(w, w) for w in jax.tree.leaves(spec.expand(mem)))
    bwd = compiled_bytes(jax.grad(loss), memory)
    mem_report[mapper] = {"expand": fwd, "grad": bwd}
    print(f"{mapper:<11} weights {4 * n_big / 2**20:6.1f} MiB | expand: temp "
          f"{fwd['temp'] / 2**20:6.1f} MiB, largest int buffer "
          f"{fwd['max_int_array']:,} | grad: temp {bwd['temp'] / 2**20:6.1f} "
          f"MiB, largest int buffer {bwd['max_int_array']:,}")
  result = {f"{k}_step_ratio": round(med[k] / med["dense"], 4)
            for k in args.mappers}
  result.update({
      **{f"{k}_paired_ratio": round(paired_ratio(times, k, "dense"), 4)
         for k in args.mappers},
      **{f"{k}_cpu_ratio": round(med_cpu[k] / med_cpu["dense"], 4)
         for k in args.mappers},
      "dense_ms": round(med["dense"], 3),
      **{f"{k}_ms": round(med[k], 3) for k in args.mappers},
      "n_kernel": n_kernel, "rounds": args.rounds,
      "big_n_kernel": n_big, "big_memory": mem_report,
      "backend": jax.default_backend(),
  })
  if "stable_rps" in args.mappers:
    result["expand_step_ratio"] = result["stable_rps_step_ratio"]
  print(json.dumps(result))


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--overhead-only", action="store_true")
  parser.add_argument("--quick", action="store_true",
                      help="smoke run: 1 seed, few steps / rounds")
  parser.add_argument("--outdir", default=None)
  parser.add_argument("--tag", default=None, help="output file name stem")
  parser.add_argument("--seeds", type=int, default=2)
  parser.add_argument("--steps", type=int, default=300)
  parser.add_argument("--batch", type=int, default=128)
  parser.add_argument("--hidden", type=int, default=1024)
  parser.add_argument("--optimizer", choices=("sgd", "adam"), default="sgd")
  parser.add_argument("--lr", type=float, default=None,
                      help="default 0.05 (sgd) or 1e-3 (adam), all methods")
  parser.add_argument("--lr-grid", nargs="+", type=float, default=None,
                      help="pick each cell's lr on a validation split")
  parser.add_argument("--skip-dense", action="store_true",
                      help="leave out the dense (compression 1) reference")
  parser.add_argument("--mask-cost", choices=rps.MASK_COSTS, default="none")
  parser.add_argument("--methods", nargs="+", default=list(METHODS),
                      choices=METHODS)
  parser.add_argument("--compressions", nargs="+", type=float,
                      default=list(COMPRESSIONS))
  parser.add_argument("--mappers", nargs="+", default=list(rps.MAPPERS),
                      choices=rps.MAPPERS)
  parser.add_argument("--rounds", type=int, default=None)
  args = parser.parse_args()
  if args.quick:
    args.seeds, args.steps = 1, min(args.steps, 60)
  if args.lr is None:
    args.lr = 0.05 if args.optimizer == "sgd" else 1e-3
  if args.overhead_only:
    args.rounds = args.rounds or (30 if args.quick else 60)
    overhead(args)
    return
  results = accuracy_sweep(args)
  print_table(results, args)
  summary = {"results": results, "optimizer": args.optimizer,
             "lr": args.lr, "lr_grid": args.lr_grid,
             "steps": args.steps, "hidden": args.hidden,
             "mask_cost": args.mask_cost, "seeds": args.seeds}
  if args.outdir:
    os.makedirs(args.outdir, exist_ok=True)
    tag = args.tag or (f"rps_vs_pruning_{args.optimizer}"
                       + ("_tuned" if args.lr_grid else ""))
    with open(os.path.join(args.outdir, tag + ".json"), "w") as f:
      json.dump(summary, f, indent=1)
    plot(results, args, os.path.join(args.outdir, tag + ".png"))
    log(f"wrote {args.outdir}/{tag}.{{json,png}}")
  best = {}
  for r in results:
    acc = float(np.mean(r["acc"]))
    best.setdefault(r["compression"], {})[r["method"]] = (
        None if math.isnan(acc) else round(acc, 4))
  print(json.dumps({"accuracy": {format(c, "g"): v
                                 for c, v in best.items()}}))


if __name__ == "__main__":
  main()
