"""End to end: block-prune an MLP on digits, convert it, run it faster.

An MLP 64-2048-2048-2048-10 (Flax NNX) is trained on scikit-learn's digits
(1,797 8x8 images; 80/20 split) with
`jaxsparse.prune(polynomial(0.9), structure=jaxsparse.structures.block(B, B),
optimizer=optax.adam)`: the two 2048x2048 hidden kernels are pruned to 90 %
in B x B blocks (first and last layers stay dense). The pruned model is then
converted with `jaxsparse.nn.to_block_sparse` and evaluated again: the
accuracy must be the same, and inference (a batch of `--batch` rows) is
timed against the masked dense model. A dense model trained the same way
gives the unpruned baseline accuracy.

The last stdout line is one JSON object.

Run: .venv/bin/python benchmarks/block_sparse_e2e.py [--quick] [--block B]
"""

from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from _timing import interleaved, log, median_ms  # noqa: E402
from flax import nnx  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402

import jaxsparse  # noqa: E402
from jaxsparse import nn as jsnn  # noqa: E402

HIDDEN = 2048


class MLP(nnx.Module):
  """64 -> HIDDEN -> HIDDEN -> HIDDEN -> 10, ReLU."""

  def __init__(self, rngs: nnx.Rngs, hidden: int = HIDDEN):
    self.inp = nnx.Linear(64, hidden, rngs=rngs)
    self.hidden = nnx.List([nnx.Linear(hidden, hidden, rngs=rngs)
                            for _ in range(2)])
    self.out = nnx.Linear(hidden, 10, rngs=rngs)

  def __call__(self, x):
    x = jax.nn.relu(self.inp(x))
    for layer in self.hidden:
      x = jax.nn.relu(layer(x))
    return self.out(x)


def hidden_only(path, leaf):
  """Prune the hidden kernels only (their blocks divide 2048)."""
  names = [str(getattr(k, "key", k)) for k in path]
  return jaxsparse.is_kernel(path, leaf) and "hidden" in names


def data(seed=0):
  d = load_digits()
  x = (d.data / 16.0).astype(np.float32)
  y = d.target.astype(np.int32)
  perm = np.random.default_rng(seed).permutation(len(x))
  x, y = x[perm], y[perm]
  n_train = int(0.8 * len(x))
  return (x[:n_train], y[:n_train]), (x[n_train:], y[n_train:])


def train(model, tx, train_set, epochs, batch, seed=0):
  opt = nnx.Optimizer(model, tx, wrt=nnx.Param)
  x, y = train_set

  @nnx.jit
  def step(model, opt, xb, yb):
    def loss_fn(model):
      logits = model(xb)
      return optax.softmax_cross_entropy_with_integer_labels(
          logits, yb).mean()
    loss, grads = nnx.value_and_grad(loss_fn)(model)
    opt.update(model, grads)
    return loss

  rng = np.random.default_rng(seed)
  steps_per_epoch = len(x) // batch
  for epoch in range(epochs):
    perm = rng.permutation(len(x))
    for i in range(steps_per_epoch):
      idx = perm[i * batch:(i + 1) * batch]
      loss = step(model, opt, x[idx], y[idx])
    if epoch % 5 == 4 or epoch == epochs - 1:
      log(f"  epoch {epoch + 1}: loss {float(loss):.4f}")
  return opt


def predict(model, x):
  return np.asarray(nnx.jit(lambda m, x: jnp.argmax(m(x), -1))(model, x))


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--quick", action="store_true")
  ap.add_argument("--block", type=int, default=128)
  ap.add_argument("--epochs", type=int, default=None)
  ap.add_argument("--batch", type=int, default=1024,
                  help="rows per timed inference call")
  ap.add_argument("--rounds", type=int, default=None)
  args = ap.parse_args()
  epochs = args.epochs or (6 if args.quick else 15)
  rounds = args.rounds or (5 if args.quick else 20)
  bs = 64
  train_set, test_set = data()
  steps = epochs * (len(train_set[0]) // bs)
  b = args.block

  log(f"digits: {len(train_set[0])} train / {len(test_set[0])} test; "
      f"MLP 64-{HIDDEN}x3-10, {epochs} epochs ({steps} steps), block {b}")
  log("dense baseline ...")
  dense = MLP(nnx.Rngs(0))
  train(dense, optax.adam(1e-3), train_set, epochs, bs)
  acc_dense = float((predict(dense, test_set[0]) == test_set[1]).mean())

  log("block pruning to 90 % ...")
  schedule = jaxsparse.polynomial(
      0.9, begin_step=steps // 10, end_step=(6 * steps) // 10,
      frequency=max(1, steps // 20))
  tx = jaxsparse.prune(schedule, structure=jaxsparse.structures.block(b, b),
                       filter_fn=hidden_only, optimizer=optax.adam(1e-3))
  model = MLP(nnx.Rngs(0))
  opt = train(model, tx, train_set, epochs, bs)
  masks = jaxsparse.get_masks(opt.opt_state)
  sparsity = float(jaxsparse.sparsity(masks))
  pred_pruned = predict(model, test_set[0])
  acc_pruned = float((pred_pruned == test_set[1]).mean())

  masked_dense = nnx.clone(model)
  sparse = jsnn.to_block_sparse(model, masks, (b, b))
  pred_sparse = predict(sparse, test_set[0])
  acc_sparse = float((pred_sparse == test_set[1]).mean())
  differ = int((pred_sparse != pred_pruned).sum())
  densities = [float(layer.weight().density()) for layer in sparse.hidden]
  log(f"hidden block densities after conversion: {densities}")

  xb = jnp.asarray(np.resize(test_set[0], (args.batch, 64)))
  f_dense = nnx.jit(lambda m, x: m(x))
  f_sparse = nnx.jit(lambda m, x: m(x))
  times = interleaved({"masked_dense": lambda: f_dense(masked_dense, xb),
                       "block_sparse": lambda: f_sparse(sparse, xb)},
                      rounds=rounds)
  med = {k: median_ms(v) for k, v in times.items()}
  ratio = med["masked_dense"] / med["block_sparse"]
  print(f"{'model':<22} {'test acc':>8} {'infer ms':>9}")
  print(f"{'dense (unpruned)':<22} {acc_dense:>8.4f} {'':>9}")
  print(f"{'pruned, masked dense':<22} {acc_pruned:>8.4f} "
        f"{med['masked_dense']:>9.2f}")
  print(f"{'pruned, BlockSparse':<22} {acc_sparse:>8.4f} "
        f"{med['block_sparse']:>9.2f}")
  print(f"inference speed-up (masked dense / block sparse, batch "
        f"{args.batch}): {ratio:.2f}x; predictions that differ: {differ}")
  print(json.dumps(dict(
      acc_dense=acc_dense, acc_pruned=acc_pruned, acc_block_sparse=acc_sparse,
      predictions_differ=differ, sparsity=round(sparsity, 4),
      block=b, inference_speedup=round(ratio, 3),
      masked_dense_ms=round(med["masked_dense"], 3),
      block_sparse_ms=round(med["block_sparse"], 3), batch=args.batch,
      epochs=epochs, backend=jax.default_backend())))


if __name__ == "__main__":
  main()
