# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # jaxsparse quick start
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/<owner>/jaxsparse/blob/main/colabs/quick_start.ipynb)
#
# Prune a small network while it trains, by changing one line: the optimizer.
# The masks live in the optax state as a pytree shaped like the params.
#
# **Running it.** Locally: `bash run.sh test` executes this notebook; or
# `.venv/bin/jupyter lab colabs/quick_start.ipynb` after `bash run.sh test`
# has made `.venv`. In Colab: jaxsparse is not on PyPI, so install it from
# the repository: set `JAXSPARSE_PIP_SPEC` to a pip spec of it (for example
# `git+https://<host>/<owner>/jaxsparse.git`), or upload a clone of the
# repository to `/content/jaxsparse`; the next cell installs it.

# %%
# Installs jaxsparse when it is not importable (Colab); elsewhere a no-op.
import importlib.util
import os
import subprocess
import sys

if importlib.util.find_spec("jaxsparse") is None:
  spec = os.environ.get("JAXSPARSE_PIP_SPEC", "")
  if not spec and os.path.isdir("/content/jaxsparse"):
    spec = "/content/jaxsparse"
  if not spec:
    raise RuntimeError(
        "jaxsparse is not installed: set JAXSPARSE_PIP_SPEC to a pip spec of "
        "the repository (git+https://...), or put a clone in "
        "/content/jaxsparse, then run this cell again.")
  subprocess.run([sys.executable, "-m", "pip", "install", "-q", spec],
                 check=True)

# %%
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
import optax
from flax import nnx
from sklearn.datasets import load_digits

import jaxsparse

# Parameters. JAXSPARSE_SMALL=1 (set by the test suite) runs a short version.
SMALL = os.environ.get("JAXSPARSE_SMALL", "0") == "1"
STEPS = 150 if SMALL else 1500
FIGURES = os.environ.get("JAXSPARSE_FIGURES", "figures")
os.makedirs(FIGURES, exist_ok=True)

# %% [markdown]
# Data: scikit-learn's digits (8x8 images, shipped with scikit-learn).

# %%
digits = load_digits()
x = (digits.images / 16.0).reshape(-1, 64).astype(np.float32)
y = digits.target.astype(np.int32)
x_train, y_train, x_test, y_test = x[:1437], y[:1437], x[1437:], y[1437:]


# %%
class MLP(nnx.Module):
  def __init__(self, rngs: nnx.Rngs):
    self.l1 = nnx.Linear(64, 300, rngs=rngs)
    self.l2 = nnx.Linear(300, 100, rngs=rngs)
    self.l3 = nnx.Linear(100, 10, rngs=rngs)

  def __call__(self, x):
    return self.l3(nnx.relu(self.l2(nnx.relu(self.l1(x)))))


model = MLP(nnx.Rngs(0))

# %% [markdown]
# The one line: wrap the optimizer with `jaxsparse.prune`. Here, gradual
# magnitude pruning to 90 % sparsity over the first 60 % of training, with
# the cubic schedule of Zhu & Gupta ("To prune, or not to prune",
# arXiv:1710.01878, 2017): the sparsity rises fast at first, while the
# network has many redundant weights, and slowly near the target. Kernels
# are pruned; biases stay dense.

# %%
schedule = jaxsparse.polynomial(final_sparsity=0.9, begin_step=0,
                                end_step=int(0.6 * STEPS), frequency=50)
tx = jaxsparse.prune(schedule, optimizer=optax.adam(1e-3))
optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)


@nnx.jit
def train_step(model, optimizer, xb, yb):
  def loss_fn(model):
    logits = model(xb)
    return optax.softmax_cross_entropy_with_integer_labels(logits, yb).mean()
  loss, grads = nnx.value_and_grad(loss_fn)(model)
  optimizer.update(model, grads)
  return loss


@nnx.jit
def accuracy(model, xb, yb):
  return jnp.mean(jnp.argmax(model(xb), -1) == yb)


# %%
rng = np.random.default_rng(0)
history = []
for step in range(STEPS):
  idx = rng.integers(0, len(x_train), 64)
  train_step(model, optimizer, x_train[idx], y_train[idx])
  if (step + 1) % 100 == 0 or step + 1 == STEPS:
    masks = jaxsparse.get_masks(optimizer.opt_state)
    history.append((step + 1, float(accuracy(model, x_test, y_test)),
                    float(jaxsparse.sparsity(masks))))
print(f"test accuracy {history[-1][1]:.4f} at sparsity {history[-1][2]:.4f}")

# %% [markdown]
# Pruned weights are exactly zero, and the per-layer table shows the
# sparsity reached.

# %%
params = nnx.state(model, nnx.Param)
masks = jaxsparse.get_masks(optimizer.opt_state)
print(jaxsparse.summary(params, masks))
assert float(jaxsparse.sparsity(masks)) > 0.89

# %%
steps, accs, sparsities = zip(*history, strict=True)
fig, ax = plt.subplots(figsize=(6, 3.5))
ax.plot(steps, accs, label="test accuracy")
ax.plot(steps, sparsities, label="sparsity")
ax.set_xlabel("step")
ax.legend()
fig.tight_layout()
fig.savefig(os.path.join(FIGURES, "quick_start.png"), dpi=120)
plt.show()
