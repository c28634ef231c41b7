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
# # Dynamic sparse training: SET, RigL and static masks
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/<owner>/jaxsparse/blob/main/colabs/dynamic_sparse_training.ipynb)
#
# Dynamic sparse training keeps the number of weights fixed from the first
# step and moves the mask while training. Every Delta T steps, each layer
# drops the fraction f(t) of its active weights with the smallest |w| and
# regrows as many elsewhere: at random in SET (Mocanu et al., "Scalable
# training of artificial neural networks with adaptive sparse connectivity
# inspired by network science", Nature Communications 2018), at the
# largest dense-gradient magnitude in RigL (Evci et al., "Rigging the
# Lottery: Making All Tickets Winners", ICML 2020), with a cosine-decaying
# f(t) that reaches 0 at 75 % of training. The static baseline trains the
# initial random (ERK) mask unchanged. All three start from the same mask.
#
# We track how far the mask moves (Hamming distance to the initial mask)
# and compare accuracy at equal training FLOPs: SET and static cost the
# same per step; RigL adds one dense gradient every Delta T steps.
#
# **Running it.** Locally: `bash run.sh test` executes this notebook in
# small mode. In Colab: jaxsparse is not on PyPI; set `JAXSPARSE_PIP_SPEC`
# to a pip spec of the repository (for example
# `git+https://<host>/<owner>/jaxsparse.git`), or upload a clone to
# `/content/jaxsparse`; the next cell installs it.

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
  # The `data` extra: MNIST-1D and the runner's loaders.
  subprocess.run([sys.executable, "-m", "pip", "install", "-q", "mnist1d",
                  "tensorflow-datasets>=4.9.4", "grain>=0.2.10"], check=True)

# %%
import time

import jax
import matplotlib.pyplot as plt
import numpy as np
import optax

import jaxsparse
from jaxsparse import dst
from jaxsparse.experiments import notebook as nb

# Parameters. JAXSPARSE_SMALL=1 (set by the test suite) runs a short version.
SMALL = os.environ.get("JAXSPARSE_SMALL", "0") == "1"
SIZES = (40, 256, 256, 10)
SPARSITY = 0.9
UPDATE_EVERY = 25 if SMALL else 100  # Delta T
STEPS = 400 if SMALL else 4000  # a multiple of UPDATE_EVERY
BATCH = 64 if SMALL else 128
LR = 2e-3
DROP_FRACTION = 0.3  # alpha
SEEDS = (0,) if SMALL else (0, 1, 2)
FIGURES = os.environ.get("JAXSPARSE_FIGURES", "figures")
os.makedirs(FIGURES, exist_ok=True)

# %% [markdown]
# **Data: MNIST-1D** (Greydanus & Kobak, "Scaling down deep learning with
# MNIST-1D", ICML 2024): 4,000 training and 1,000 test sequences of 40
# points, 10 classes, generated procedurally offline. A small MLP reaches
# only about 60-70 % on it, so, unlike 8x8 digits, it leaves room for
# sparse networks to differ.

# %%
# Data, MLP and trainer are shared with the other MNIST-1D notebooks
# (jaxsparse/experiments/notebook.py).
x_train, y_train, x_test, y_test = nb.load_mnist1d(seed=0)
print(x_train.shape, x_test.shape)

# %% [markdown]
# The model is a plain-JAX MLP whose parameters are a nested dict; jaxsparse
# prunes every leaf with two or more dimensions (the kernels) and leaves the
# biases dense. Each training run is one compiled `lax.scan` over the steps.

# %%
TASK = nb.task((x_train, y_train, x_test, y_test))
init_mlp, mlp = nb.init_mlp, nb.mlp
loss_fn, make_trainer, accuracy, batches = nb.bind(TASK, STEPS, BATCH)

# %% [markdown]
# Training runs in chunks of Delta T steps (one compiled `lax.scan` per
# method, reused for every chunk), so the masks can be read between mask
# updates. `dst.mask_hamming(a, b)` counts per layer the entries where two
# masks differ.

# %%
def make_tx(method, masks):
  opt = optax.adam(LR)
  if method == "dense":
    return opt
  if method == "static":
    return jaxsparse.prune(0.0, optimizer=opt, initial_masks=masks)
  make = {"SET": dst.set, "RigL": dst.rigl}[method]
  return make(None, optimizer=opt, initial_masks=masks,
              drop_fraction=DROP_FRACTION, update_every=UPDATE_EVERY,
              end_step=int(0.75 * STEPS))


def hamming(a, b):
  return sum(int(v) for v in jax.tree.leaves(dst.mask_hamming(a, b)))


TRAINERS = {}


def run(method, seed, chunks):
  params = init_mlp(jax.random.PRNGKey(seed), SIZES)
  masks0 = jaxsparse.masks(params, SPARSITY, score=jaxsparse.scores.random,
                           allocation=jaxsparse.allocation.erk(),
                           key=jax.random.PRNGKey(1000 + seed))
  if method not in TRAINERS:  # the masks only shape the initial state
    tx = make_tx(method, masks0)
    TRAINERS[method] = tx, make_trainer(tx, fixed_masks=method == "static")
  tx, train = TRAINERS[method]
  state = tx.init(params)
  if method != "dense":
    state = jaxsparse.replace_masks(state, masks0)
    params = jaxsparse.apply_masks(params, masks0)
  idx = np.random.default_rng(seed).integers(
      0, len(x_train), (chunks, UPDATE_EVERY, BATCH))
  n_active = sum(int(np.sum(m)) for m in jax.tree.leaves(masks0))
  trace, prev = [], masks0
  for c in range(chunks):
    params, state = train(params, state, idx[c])
    if method != "dense":
      m = jaxsparse.get_masks(state)
      trace.append(((c + 1) * UPDATE_EVERY, hamming(masks0, m) / n_active,
                    hamming(prev, m) / n_active))
      prev = m
  if method != "dense":
    assert abs(float(jaxsparse.sparsity(prev)) - SPARSITY) < 1e-3
  return float(accuracy(params)), trace


chunks = STEPS // UPDATE_EVERY
t0 = time.perf_counter()
runs = {}
for m in ("dense", "static", "SET", "RigL"):
  runs[m] = [run(m, s, chunks) for s in SEEDS]
# The same FLOPs as RigL's 1x run, spent by the static mask (see below).
runs["static (longer)"] = None
print(f"trained in {time.perf_counter() - t0:.0f} s")

# %% [markdown]
# **Training FLOPs.** With f_D the FLOPs of a dense forward pass and f_S
# those of the sparse one (proportional to the non-zero weights), a
# training step costs about 3 f (forward, two backward matmuls). SET and
# static cost 3 f_S per step. RigL's update steps also need the dense
# weight gradient: on average (3 f_S Delta T + 2 f_S + f_D) / (Delta T + 1)
# per step (Evci et al., Appendix H). To compare at equal FLOPs, the static
# mask also trains for as many extra steps as RigL's extra FLOPs buy.

# %%
params0 = init_mlp(jax.random.PRNGKey(0), SIZES)
kernels = [params0[f"dense_{i}"]["kernel"] for i in range(len(SIZES) - 1)]
masks0 = jaxsparse.masks(params0, SPARSITY, score=jaxsparse.scores.random,
                         allocation=jaxsparse.allocation.erk())
f_d = sum(k.size for k in kernels)
f_s = sum(int(np.sum(m)) for m in jax.tree.leaves(masks0))
per_step = {"dense": 3 * f_d, "static": 3 * f_s, "SET": 3 * f_s,
            "RigL": (3 * f_s * UPDATE_EVERY + 2 * f_s + f_d)
            / (UPDATE_EVERY + 1)}
rigl_total = per_step["RigL"] * STEPS
extra = int(np.ceil(rigl_total / per_step["static"] / UPDATE_EVERY))
runs["static (longer)"] = [run("static", s, extra) for s in SEEDS]
flops = {m: per_step[m] * STEPS / (3 * f_d * STEPS) for m in per_step}
flops["static (longer)"] = (per_step["static"] * extra * UPDATE_EVERY
                            / (3 * f_d * STEPS))
print(f"static (longer) trains {extra * UPDATE_EVERY} steps for RigL's "
      f"{STEPS}")
print(f"{'method':16s}{'train FLOPs / dense':>20s}{'test accuracy':>22s}"
      f"{'mask moved':>12s}")
for m, rs in runs.items():
  accs = [a for a, _ in rs]
  moved = rs[0][1][-1][1] if rs[0][1] else 0.0
  print(f"{m:16s}{flops[m]:>20.4f}{np.mean(accs):>13.4f} +- "
        f"{np.std(accs):.4f}{moved:>12.3f}")

# %%
fig, axes = plt.subplots(1, 2, figsize=(12, 4.2))
for m in ("static", "SET", "RigL"):
  steps, to_init, step_change = zip(*runs[m][0][1], strict=True)
  axes[0].plot(steps, to_init, label=f"{m}: vs initial mask")
  if m != "static":
    axes[0].plot(steps, step_change, ls=":",
                 label=f"{m}: vs previous chunk")
axes[0].axvline(0.75 * STEPS, color="gray", lw=0.8, ls="--")
axes[0].set_xlabel("step")
axes[0].set_ylabel("Hamming distance / active weights")
axes[0].set_title(f"mask movement at {SPARSITY:.0%} sparsity (ERK)")
axes[0].legend(fontsize=8)
for m, rs in runs.items():
  accs = [a for a, _ in rs]
  axes[1].errorbar(flops[m], np.mean(accs), yerr=np.std(accs), marker="o",
                   capsize=3, label=m, ls="none")
axes[1].set_xscale("log")
axes[1].set_xlabel("training FLOPs relative to dense")
axes[1].set_ylabel("MNIST-1D test accuracy")
axes[1].set_title(f"MLP {'-'.join(map(str, SIZES))}, seeds {len(SEEDS)}")
axes[1].legend(fontsize=8)
fig.tight_layout()
fig.savefig(os.path.join(FIGURES, "dynamic_sparse_training.png"), dpi=120)
plt.show()

# %% [markdown]
# **What to read off.** The Hamming distance to the initial mask rises
# while the drop fraction is large and flattens as it decays to 0 at 75 %
# of training (dashed line): the mask stops moving. From one update to
# the next, RigL's mask changes less than SET's (dotted lines): part of
# what RigL drops by magnitude it grows back by gradient, while SET's
# random regrowth rarely picks the same entries. Evci et al.
# report RigL > SET > static at equal FLOPs on ImageNet. In full mode (3
# seeds, 4,000 steps, mean +- std) we measured SET 0.670 +- 0.015, RigL
# 0.658 +- 0.008, static 0.619 +- 0.005 and the static mask given RigL's
# FLOPs 0.613 +- 0.007 (dense 0.664): moving the mask beats keeping it by
# 4-5 points, well beyond seed noise, and reaches dense accuracy at 90 %
# sparsity; but RigL does not beat SET here (the difference is within
# seed noise), so that part of the claim does not reproduce at this size.
# Small mode (one seed, 400 steps) gave SET 0.482, RigL 0.479, static
# 0.462, static longer 0.474 (dense 0.593).
