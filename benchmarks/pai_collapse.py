"""Layer collapse at initialization (no training) and SynFlow's speed.

    python benchmarks/pai_collapse.py --outdir runs/pai_collapse
    python benchmarks/pai_collapse.py --quick      # fewer points, 1 timing

Part 1 (Tanaka et al. 2020, Fig. 1 / Fig. 3 analogue). Two models at
initialization: a VGG-style conv net (VGG-11 layout with 1/4 of the
channels, batch norm, CIFAR-10 input 32x32x3; 0.58 M prunable weights) and
an MLP with unequal widths 64-512-128-32-10 (digits input; 0.10 M weights).
Compression c = 1 / density sweeps 10^0.5 ... 10^4 in steps of 10^0.25; at
each c every method builds global masks (random: exact per-layer density
1/c, and ERK) and we record whether some layer is fully pruned (layer
collapse) and whether any input-output path is left (SynFlow's R > 0). The
table gives, per method, the largest log10 c of the sweep up to which no
layer has collapsed. SNIP and GraSP score one class-balanced batch of 10
examples per class: digits for the MLP and, since CIFAR-10 is not
available offline, Gaussian images with balanced random labels for the conv
net (the collapse is driven by layer sizes, not by the data). GraSP runs
batch norm on batch statistics (train mode, two halves as in its code);
SNIP and SynFlow run in eval mode. `collapse.png` plots, per model and
method, the density of the most pruned layer against the compression.

Part 2 (speed). SynFlow with 100 rounds at compression 10^2 on VGG-11 with
batch norm for CIFAR-10 (9,222,848 prunable weights), one compiled
`fori_loop`: `synflow_vgg11_seconds` is its wall time after compilation
(median of the timed runs; the authors' PyTorch code takes 19.4 s on this
2-core CPU, the target is <= 6.5 s). `synflow_cost_ratio` divides it by the
sum of its parts timed alone, each as its own compiled 100-iteration loop:
100 forward+backward passes at the all-ones input (masked |theta|, scores
|theta * dR/dtheta|) and 100 global exact thresholds (`compute_masks` with
`global_()` on fixed scores, following the same density schedule).

Convolutions are written as im2col matrix products (pad, 9 shifted slices,
one matmul): the same function as `lax.conv_general_dilated`, but XLA:CPU's
weight gradient of a batch-1 convolution is ~20x slower than the matmul's.

The last stdout line is one JSON object with `max_compression` (method ->
{model: log10 c}), `synflow_cost_ratio`, `synflow_vgg11_seconds`,
`synflow_vgg11_compile_seconds` and `synflow_vgg11_cpu_seconds` (CPU time of
one run, all threads: a guide to the unloaded wall time on a shared host).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import _timing  # noqa: E402
from _common import digits, init_mlp, mlp  # noqa: E402

from jaxsparse._src.core import allocation as alloc_lib  # noqa: E402
from jaxsparse._src.core import masks as masks_lib  # noqa: E402
from jaxsparse._src.core import prune as prune_lib  # noqa: E402
from jaxsparse._src.core import scores as scores_lib  # noqa: E402
from jaxsparse._src.pai import pai  # noqa: E402

VGG11 = (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512)
MLP_SIZES = (64, 512, 128, 32, 10)
METHODS = ("synflow", "snip", "grasp", "magnitude", "random", "random_erk")

# --------------------------------------------------------------------------
# Models (plain functions of a variables dict).


def conv3x3(x: jax.Array, w: jax.Array) -> jax.Array:
  """SAME 3x3 convolution, stride 1, NHWC x HWIO, as one matmul."""
  n, h, wd, c = x.shape
  xp = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
  cols = jnp.concatenate(
      [xp[:, i:i + h, j:j + wd, :] for i in range(3) for j in range(3)],
      axis=-1)
  out = cols.reshape(n * h * wd, 9 * c) @ w.reshape(9 * c, -1)
  return out.reshape(n, h, wd, -1)


def init_vgg(key, cfg, in_ch=3, num_classes=10):
  params, stats = {}, {}
  cin, i = in_ch, 0
  for v in cfg:
    if v == "M":
      continue
    key, k = jax.random.split(key)
    std = math.sqrt(2.0 / (9 * cin))
    params[f"conv{i}"] = {
        "kernel": std * jax.random.normal(k, (3, 3, cin, v)),
        "bias": jnp.zeros((v,))}
    params[f"bn{i}"] = {"scale": jnp.ones((v,)), "bias": jnp.zeros((v,))}
    stats[f"bn{i}"] = {"mean": jnp.zeros((v,)), "var": jnp.ones((v,))}
    cin, i = v, i + 1
  key, k = jax.random.split(key)
  params["fc"] = {
      "kernel": jax.random.normal(k, (cin, num_classes)) / math.sqrt(cin),
      "bias": jnp.zeros((num_classes,))}
  return {"params": params, "batch_stats": stats}


def make_vgg(cfg, train=False):
  """apply(variables, x): conv-BN-ReLU blocks, 2x2 max pools, average pool
  to 1x1 and a linear classifier (the SynFlow repository's VGG layout).
  `train=True` normalizes with batch statistics."""
  def apply(variables, x):
    p, s = variables["params"], variables["batch_stats"]
    i = 0
    for v in cfg:
      if v == "M":
        # reduce_window, not reshape + max: jit-compiled second derivatives
        # of a max reduction can divide by a zero tie count (NaN) in GraSP.
        x = lax.reduce_window(x, -jnp.inf, lax.max, (1, 2, 2, 1),
                              (1, 2, 2, 1), "VALID")
        continue
      x = conv3x3(x, p[f"conv{i}"]["kernel"]) + p[f"conv{i}"]["bias"]
      if train:
        mean, var = x.mean(axis=(0, 1, 2)), x.var(axis=(0, 1, 2))
      else:
        mean, var = s[f"bn{i}"]["mean"], s[f"bn{i}"]["var"]
      x = (x - mean) * lax.rsqrt(var + 1e-5)
      x = x * p[f"bn{i}"]["scale"] + p[f"bn{i}"]["bias"]
      x = jax.nn.relu(x)
      i += 1
    x = x.mean(axis=(1, 2))
    return x @ p["fc"]["kernel"] + p["fc"]["bias"]
  return apply


# --------------------------------------------------------------------------
# Part 1: layer collapse.


def _kernels(tree):
  return [x for x in jax.tree.leaves(tree) if x is not None]


def digits_batch(per_class=10, seed=0):
  x, y = digits()
  return pai.class_balanced_batch(x[:1437], y[:1437], per_class, seed=seed)


def noise_batch(shape, per_class=10, num_classes=10, seed=0):
  rng = np.random.default_rng(seed)
  y = np.repeat(np.arange(num_classes), per_class).astype(np.int32)
  x = rng.normal(size=(len(y), *shape)).astype(np.float32)
  return x, y


def method_scores(method, model, key):
  """Score tree of `method` (None for iterative SynFlow / random)."""
  v, apply_eval, apply_train, batch = (
      model["params"], model["apply"], model["apply_train"], model["batch"])
  if method == "snip":
    loss = lambda p, b: pai.softmax_cross_entropy(apply_eval(p, b[0]), b[1])
    return pai.snip(loss, v, batch)
  if method == "grasp":
    return pai.grasp(apply_train, v, batch, num_splits=2)
  if method == "magnitude":
    return jax.tree.map(jnp.abs, v)
  if method in ("random", "random_erk"):
    return scores_lib.random(v, None, key)
  return None


def sweep_model(name, model, log10s, rounds):
  v = model["params"]
  ones = masks_lib.ones_masks(v)
  n_total = sum(m.size for m in _kernels(ones))
  pruner = pai.iterative_synflow(model["apply"], model["input_shape"],
                              rounds=rounds)
  rows = {}
  for method in METHODS:
    t0 = time.perf_counter()
    scores = method_scores(method, model, jax.random.PRNGKey(1))
    alloc = {"random": alloc_lib.uniform(),
             "random_erk": alloc_lib.erk()}.get(method)
    per_c = []
    for lc in log10s:
      s = 1.0 - 10.0 ** (-lc)
      if method == "synflow":
        masks = pruner(v, s, ones)
      else:
        masks = pai.masks_from_scores(scores, v, s, allocation=alloc)
      kept = [int(m.sum()) for m in _kernels(masks)]
      flow = float(pai.synaptic_flow(model["apply"], v, model["input_shape"],
                                     masks))
      per_c.append({"log10_c": lc, "kept": kept, "flow_positive": flow > 0,
                    "collapsed": min(kept) == 0,
                    "min_density": min(
                        k / m.size for k, m in
                        zip(kept, _kernels(masks), strict=True))})
    best = None
    for r in per_c:
      if r["collapsed"]:
        break
      best = r["log10_c"]
    rows[method] = {"max_log10_c": best, "points": per_c}
    _timing.log(f"  {name:8s} {method:10s} max log10 c = {best}  "
                f"({time.perf_counter() - t0:.1f}s)")
  return rows, n_total


def print_table(results, log10s):
  models = list(results)
  print("\nLargest compression before layer collapse (log10 c; sweep "
        f"{log10s[0]}..{log10s[-1]} step 0.25)")
  print(f"{'method':12s}" + "".join(f"{m:>14s}" for m in models))
  for method in METHODS:
    cells = []
    for m in models:
      best = results[m][method]["max_log10_c"]
      capped = best == log10s[-1]
      cells.append("none" if best is None else
                   f"{'>=' if capped else ''}{best:.2f}")
    print(f"{method:12s}" + "".join(f"{c:>14s}" for c in cells))
  print("\nLargest compression with an input-output path left (R > 0)")
  for method in METHODS:
    cells = []
    for m in models:
      best = None
      for r in results[m][method]["points"]:
        if not r["flow_positive"]:
          break
        best = r["log10_c"]
      cells.append("none" if best is None else f"{best:.2f}")
    print(f"{method:12s}" + "".join(f"{c:>14s}" for c in cells))


def plot(results, outdir):
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  fig, axes = plt.subplots(1, len(results), figsize=(6 * len(results), 4.2))
  for ax, (model, rows) in zip(np.atleast_1d(axes), results.items(),
                               strict=True):
    for method in METHODS:
      pts = rows[method]["points"]
      x = [p["log10_c"] for p in pts]
      y = [max(p["min_density"], 1e-7) for p in pts]
      ax.plot(x, y, marker="o", ms=3, label=method)
    ax.set_yscale("log")
    ax.axhline(1e-7, color="k", lw=0.5, ls=":")
    ax.set_xlabel("log10 compression")
    ax.set_ylabel("density of the most pruned layer (1e-7 = collapsed)")
    ax.set_title(model)
    ax.legend(fontsize=8)
  fig.tight_layout()
  path = os.path.join(outdir, "collapse.png")
  fig.savefig(path, dpi=120)
  _timing.log(f"wrote {path}")


# --------------------------------------------------------------------------
# Part 2: SynFlow speed on VGG-11-bn.


def synflow_parts(apply_fn, input_shape, rounds):
  """Jitted loops of the two parts of SynFlow, each timed alone."""
  dtype = jnp.float32
  # The very function SynFlow's loop body uses for R and its scores.
  flow_and_scores = pai._flow_and_scores  # pylint: disable=protected-access

  @jax.jit
  def fwd_bwd(variables, masks):
    abs_v = jax.tree.map(jnp.abs, variables)
    ones = jnp.ones((1, *input_shape), dtype)
    sel = jax.tree.map(lambda m: None if m is None else True, masks,
                       is_leaf=lambda x: x is None)

    def body(_, masks):
      _, scores = flow_and_scores(apply_fn, abs_v, ones, masks, sel)
      # Keep a data dependence on every score so that XLA can neither hoist
      # nor drop the pass (s != -1 always holds but is not folded).
      return jax.tree.map(
          lambda m, s: None if m is None else m & (s != -1.0), masks,
          scores, is_leaf=lambda x: x is None)

    return lax.fori_loop(1, rounds + 1, body, masks)

  @jax.jit
  def thresholds(variables, scores, masks, sparsity):
    key = jax.random.PRNGKey(0)

    def body(k, masks):
      s_k = 1.0 - pai.synflow_density(sparsity, k, rounds)
      return prune_lib.compute_masks(
          variables, None, masks, s_k, key, score=lambda p, g, kk: scores,
          allocation=alloc_lib.global_())

    return lax.fori_loop(1, rounds + 1, body, masks)

  return fwd_bwd, thresholds


def time_vgg11(repeats, rounds=100, log10_c=2.0):
  v = init_vgg(jax.random.PRNGKey(0), VGG11)
  apply_fn = make_vgg(VGG11)
  shape = (32, 32, 3)
  ones = masks_lib.ones_masks(v)
  n = sum(m.size for m in _kernels(ones))
  s = 1.0 - 10.0 ** (-log10_c)
  pruner = pai.iterative_synflow(apply_fn, shape, rounds=rounds)
  t0 = time.perf_counter()
  masks = jax.block_until_ready(pruner(v, s, ones))
  first = time.perf_counter() - t0
  kept = [int(m.sum()) for m in _kernels(masks)]
  _timing.log(f"VGG-11-bn: {n:,} prunable weights; 100 rounds at 10^2 keep "
              f"{sum(kept):,}; per layer {kept}")
  fwd_bwd, thresholds = synflow_parts(apply_fn, shape, rounds)
  scores = pai.synflow(apply_fn, v, shape)
  s_arr = jnp.float32(s)
  fns = {
      "synflow": lambda: pruner(v, s_arr, ones),
      "fwd_bwd": lambda: fwd_bwd(v, ones),
      "thresholds": lambda: thresholds(v, scores, ones, s_arr),
  }
  for name, fn in fns.items():  # compile
    t0 = time.perf_counter()
    jax.block_until_ready(fn())
    _timing.log(f"  first call of {name}: {time.perf_counter() - t0:.1f}s")
  times = _timing.interleaved(fns, rounds=repeats, warmup=0)
  med = {k: statistics.median(t) for k, t in times.items()}
  compile_s = max(first - med["synflow"], 0.0)
  # CPU seconds of one more run (all threads): on a shared, loaded host the
  # wall time also counts waiting for the cores.
  c0 = time.process_time()
  jax.block_until_ready(fns["synflow"]())
  cpu_s = time.process_time() - c0
  return {
      "n": n, "kept": kept, "median_s": med, "all_s": times,
      "compile_s": compile_s, "cpu_s": cpu_s,
      "ratio": med["synflow"] / (med["fwd_bwd"] + med["thresholds"]),
  }


# --------------------------------------------------------------------------


def main():
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--outdir", default="runs/pai_collapse")
  ap.add_argument("--quick", action="store_true",
                  help="step 0.5 in the sweep and one timing repeat")
  ap.add_argument("--repeats", type=int, default=3,
                  help="timed runs of each SynFlow program")
  ap.add_argument("--skip-timing", action="store_true")
  ap.add_argument("--skip-sweep", action="store_true")
  args = ap.parse_args()
  os.makedirs(args.outdir, exist_ok=True)
  step = 0.5 if args.quick else 0.25
  log10s = [round(x, 2) for x in np.arange(0.5, 4.0 + 1e-9, step)]

  vgg_cfg = tuple(c if c == "M" else c // 4 for c in VGG11)
  xb, yb = noise_batch((32, 32, 3))
  models = {
      "vgg_small": {
          "params": init_vgg(jax.random.PRNGKey(0), vgg_cfg),
          "apply": make_vgg(vgg_cfg),
          "apply_train": make_vgg(vgg_cfg, train=True),
          "input_shape": (32, 32, 3), "batch": (xb, yb)},
      "mlp": {
          "params": init_mlp(jax.random.PRNGKey(0), MLP_SIZES),
          "apply": mlp, "apply_train": mlp, "input_shape": (64,),
          "batch": digits_batch()},
  }
  results, sizes = {}, {}
  for name, model in ({} if args.skip_sweep else models).items():
    _timing.log(f"sweeping {name} ...")
    results[name], sizes[name] = sweep_model(name, model, log10s, 100)
  if results:
    print("models: " + ", ".join(f"{k} ({v:,} prunable weights)"
                                 for k, v in sizes.items()))
    print_table(results, log10s)
    plot(results, args.outdir)

  out = {"max_compression": {
      method: {m: results[m][method]["max_log10_c"] for m in results}
      for method in METHODS}}
  if not args.skip_timing:
    _timing.log("timing SynFlow on VGG-11-bn ...")
    t = time_vgg11(1 if args.quick else args.repeats)
    med = t["median_s"]
    print(f"\nSynFlow, VGG-11-bn (CIFAR-10 input), {t['n']:,} prunable "
          "weights, 100 rounds at compression 1e2:")
    print(f"  wall time (median of {len(t['all_s']['synflow'])}): "
          f"{med['synflow']:.2f} s  (target <= 6.5 s; authors' PyTorch "
          f"19.4 s); compilation {t['compile_s']:.1f} s; one run used "
          f"{t['cpu_s']:.2f} CPU s")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"  host: {os.cpu_count()} CPUs, load average {load:.1f} at the end")
    print(f"  parts alone: 100 fwd+bwd {med['fwd_bwd']:.2f} s, 100 global "
          f"thresholds {med['thresholds']:.2f} s; ratio "
          f"{t['ratio']:.3f} (target <= 1.5)")
    out.update(synflow_cost_ratio=round(t["ratio"], 4),
               synflow_vgg11_seconds=round(med["synflow"], 3),
               synflow_vgg11_compile_seconds=round(t["compile_s"], 2),
               synflow_vgg11_cpu_seconds=round(t["cpu_s"], 2))
  with open(os.path.join(args.outdir, "results.json"), "w") as f:
    json.dump({"results": results, **out}, f, default=str)
  print(json.dumps(out))


if __name__ == "__main__":
  main()
