"""Pruning at initialization, then static sparse training.

    python benchmarks/pai_accuracy.py --outdir runs/pai_accuracy
    python benchmarks/pai_accuracy.py --dataset mnist   # if prepared in tfds

Each method builds masks at initialization for sparsity 90%, 98% and 99.5%
of an MLP 64-300-100-10 (input flattened: 784-300-100-10 on MNIST,
3072-300-100-10 on CIFAR-10); the masks then stay fixed while the network
trains with `jaxsparse.prune(0.0, initial_masks=masks,
optimizer=optax.adam(lr))` (pruned weights stay exactly 0). One shared
config: Adam lr 1e-3, batch 64, 40 epochs on digits (scikit-learn's 1,797
8x8 images; first 1,437 train, last 360 test) and 3 epochs on MNIST/CIFAR-10
(`jaxsparse.experiments.data`, only when prepared locally), seeds 0..n-1
(the seed sets
the initialization, the masks and the data order).

Methods: SynFlow (100 rounds, data-free), SNIP and GraSP (one class-balanced
batch of 10 examples per class; GraSP temperature 200), global magnitude,
and random masks with uniform per-layer density or ERK. All but the random
ones rank globally. The table gives mean +- std test accuracy and the
density of the sparsest layer (0 = collapsed); `accuracy.png` plots test
accuracy against sparsity. The last stdout line is JSON.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import _timing  # noqa: E402
from _common import digits, init_mlp, kernel_floats, mlp  # noqa: E402

import jaxsparse  # noqa: E402
from jaxsparse._src.core import allocation as alloc_lib  # noqa: E402
from jaxsparse._src.core import masks as masks_lib  # noqa: E402
from jaxsparse._src.core import scores as scores_lib  # noqa: E402
from jaxsparse._src.pai import pai  # noqa: E402

METHODS = ("synflow", "snip", "grasp", "magnitude", "random", "random_erk")
SPARSITIES = (0.9, 0.98, 0.995)
HIDDEN = (300, 100)


def load_data(name):
  if name == "digits":
    x, y = digits()
    return (x[:1437], y[:1437]), (x[1437:], y[1437:]), 40
  from jaxsparse.experiments import data
  train = data.to_arrays(data.load(name, "train"))
  test = data.to_arrays(data.load(name, "test"))
  flat = lambda a: a["image"].reshape(len(a["image"]), -1)
  return (flat(train), train["label"]), (flat(test), test["label"]), 3


def loss_fn(params, batch):
  return pai.softmax_cross_entropy(mlp(params, batch[0]), batch[1])


def make_masks(method, params, sparsity, batch, key):
  if method == "synflow":
    return pai.synflow_masks(mlp, params, batch[0].shape[1:], sparsity)
  if method == "snip":
    scores = pai.snip(loss_fn, params, batch)
  elif method == "grasp":
    scores = pai.grasp(mlp, params, batch)
  elif method == "magnitude":
    scores = jax.tree.map(jnp.abs, params)
  else:
    scores = scores_lib.random(params, None, key)
  alloc = {"random": alloc_lib.uniform(), "random_erk": alloc_lib.erk()}
  return pai.masks_from_scores(scores, params, sparsity,
                               allocation=alloc.get(method))


@functools.partial(jax.jit, static_argnames=("lr",))
def train_run(params, masks, x, y, order, lr):
  """All epochs in one compiled scan; `order` is [steps, batch] indices."""
  tx = jaxsparse.prune(0.0, initial_masks=masks, optimizer=optax.adam(lr))
  params = jaxsparse.apply_masks(params, masks)
  state = tx.init(params)

  def step(carry, idx):
    params, state = carry
    grads = jax.grad(loss_fn)(params, (x[idx], y[idx]))
    updates, state = tx.update(grads, state, params)
    return (optax.apply_updates(params, updates), state), None

  (params, _), _ = jax.lax.scan(step, (params, state), order)
  return params


@jax.jit
def accuracy(params, x, y):
  return jnp.mean(jnp.argmax(mlp(params, x), -1) == y)


def train(params, masks, train_data, test_data, epochs, seed, lr, batch):
  if masks is None:
    masks = masks_lib.ones_masks(params)
  x, y = train_data
  rng = np.random.default_rng(seed)
  steps = len(x) // batch
  order = np.concatenate([rng.permutation(len(x))[:steps * batch]
                          for _ in range(epochs)]).reshape(-1, batch)
  params = train_run(params, masks, jnp.asarray(x), jnp.asarray(y),
                     jnp.asarray(order), lr)
  # The masks held: pruned weights are exactly 0.
  leaked = jax.tree.map(
      lambda m, p: 0 if m is None else int(jnp.sum(jnp.where(m, 0, p != 0))),
      masks, params, is_leaf=lambda z: z is None)
  assert sum(jax.tree.leaves(leaked)) == 0
  return float(accuracy(params, *test_data))


def main():
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--dataset", default="digits",
                  choices=["digits", "mnist", "fashion_mnist", "cifar10"])
  ap.add_argument("--outdir", default="runs/pai_accuracy")
  ap.add_argument("--seeds", type=int, default=2)
  ap.add_argument("--epochs", type=int, default=None)
  ap.add_argument("--lr", type=float, default=1e-3)
  ap.add_argument("--batch", type=int, default=64)
  args = ap.parse_args()
  os.makedirs(args.outdir, exist_ok=True)
  try:
    train_data, test_data, epochs = load_data(args.dataset)
  except Exception as e:  # noqa: BLE001 - tfds raises many types.
    print(f"{args.dataset} is not available here ({type(e).__name__}); "
          "prepare it with tfds or use --dataset digits.")
    print(json.dumps({"dataset": args.dataset, "skipped": True}))
    return
  epochs = args.epochs or epochs
  sizes = (train_data[0].shape[1], *HIDDEN, 10)
  n_prunable = kernel_floats(sizes)
  _timing.log(f"{args.dataset}: MLP {'-'.join(map(str, sizes))}, "
              f"{n_prunable:,} prunable weights, {epochs} epochs, "
              f"{args.seeds} seeds")
  acc = {m: {s: [] for s in SPARSITIES} for m in METHODS}
  min_density = {m: {s: [] for s in SPARSITIES} for m in METHODS}
  dense = []
  t0 = time.perf_counter()
  for seed in range(args.seeds):
    key = jax.random.PRNGKey(seed)
    params = init_mlp(key, sizes)
    batch = pai.class_balanced_batch(*train_data, 10, seed=seed)
    dense.append(train(params, None, train_data, test_data, epochs, seed,
                       args.lr, args.batch))
    for method in METHODS:
      for s in SPARSITIES:
        masks = make_masks(method, params, s, batch,
                           jax.random.fold_in(key, 1))
        kern = [m for m in jax.tree.leaves(masks) if m is not None]
        min_density[method][s].append(
            min(float(m.mean()) for m in kern))
        acc[method][s].append(train(params, masks, train_data, test_data,
                                    epochs, seed, args.lr, args.batch))
      _timing.log(f"  seed {seed} {method:10s} "
                  + " ".join(f"{a[-1]:.3f}" for a in acc[method].values())
                  + f"  ({time.perf_counter() - t0:.0f}s)")

  def fmt(xs):
    sd = statistics.stdev(xs) if len(xs) > 1 else 0.0
    return f"{100 * statistics.mean(xs):5.1f} +- {100 * sd:3.1f}"

  print(f"\n{args.dataset}: test accuracy (%) after static sparse training, "
        f"MLP {'-'.join(map(str, sizes))}, mean +- std over {args.seeds} "
        "seeds")
  print(f"dense: {fmt(dense)}")
  header = f"{'method':12s}" + "".join(f"{f'{100 * s:g}%':>16s}"
                                       for s in SPARSITIES)
  print(header + "   sparsest layer density")
  for m in METHODS:
    dens = " / ".join(f"{statistics.mean(min_density[m][s]):.4f}"
                      for s in SPARSITIES)
    print(f"{m:12s}" + "".join(f"{fmt(acc[m][s]):>16s}" for s in SPARSITIES)
          + f"   {dens}")

  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  fig, ax = plt.subplots(figsize=(6, 4))
  xs = [-math.log10(1 - s) for s in SPARSITIES]
  for m in METHODS:
    ys = [100 * statistics.mean(acc[m][s]) for s in SPARSITIES]
    ax.plot(xs, ys, marker="o", label=m)
  ax.axhline(100 * statistics.mean(dense), color="k", ls=":", label="dense")
  ax.set_xticks(xs, [f"{100 * s:g}%" for s in SPARSITIES])
  ax.set_xlabel("sparsity (log compression axis)")
  ax.set_ylabel("test accuracy (%)")
  ax.set_title(f"PaI + static sparse training, {args.dataset}")
  ax.legend(fontsize=8)
  fig.tight_layout()
  path = os.path.join(args.outdir, "accuracy.png")
  fig.savefig(path, dpi=120)
  _timing.log(f"wrote {path}")
  out = {"dataset": args.dataset, "dense": statistics.mean(dense),
         "accuracy": {m: {f"{s:g}": round(statistics.mean(acc[m][s]), 4)
                          for s in SPARSITIES} for m in METHODS}}
  with open(os.path.join(args.outdir, "results.json"), "w") as f:
    json.dump({**out, "per_seed": acc, "dense_per_seed": dense,
               "min_layer_density": min_density}, f, default=str)
  print(json.dumps(out))


if __name__ == "__main__":
  main()
