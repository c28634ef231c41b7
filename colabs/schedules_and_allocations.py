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
# # Schedules and allocations
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/<owner>/jaxsparse/blob/main/colabs/schedules_and_allocations.ipynb)
#
# *When* to prune (a schedule) and *where* (an allocation over layers) are
# two separate choices in jaxsparse: `jaxsparse.prune(schedule,
# allocation=...)`. This notebook draws Zhu & Gupta's gradual schedules,
# compares the per-layer densities of uniform, ER, ERK and global
# allocations, and trains an MLP on MNIST-1D with each at equal sparsity.
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
from jaxsparse.experiments import notebook as nb

# Parameters. JAXSPARSE_SMALL=1 (set by the test suite) runs a short version.
SMALL = os.environ.get("JAXSPARSE_SMALL", "0") == "1"
SIZES = (40, 256, 256, 10)
STEPS = 300 if SMALL else 3000
BATCH = 64 if SMALL else 128
LR = 3e-3
SEEDS = (0,) if SMALL else (0, 1, 2)
SPARSITIES = (0.95,) if SMALL else (0.8, 0.9, 0.95, 0.98)
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
# ## 1. Zhu-Gupta schedules
#
# Gradual magnitude pruning (Zhu & Gupta, "To prune, or not to prune",
# arXiv:1710.01878, 2017) raises the sparsity from s_i to s_f over n steps
# as s_t = s_f + (s_i - s_f)(1 - (t - t_0)/n)^3: fast early, when many
# weights are redundant, slow near the end, so the network can recover.
# `jaxsparse.polynomial` is that curve; its `power` changes the shape and
# its `frequency` how often the masks are recomputed (the staircase).

# %%
fig, axes = plt.subplots(1, 3, figsize=(15, 4))
steps = np.arange(0, 1001)
for power in (1, 2, 3, 5):
  sched = jaxsparse.polynomial(0.95, begin_step=100, end_step=700,
                               frequency=50, power=power)
  s = np.asarray(jax.vmap(sched.sparsity)(steps))
  upd = np.asarray(jax.vmap(sched.is_update_step)(steps))
  # The masks hold the value of the last update step: a staircase.
  held = np.maximum.accumulate(np.where(upd, s, 0.0))
  axes[0].plot(steps, held, label=f"power {power}" + (
      " (Zhu-Gupta)" if power == 3 else ""))
axes[0].set_xlabel("step")
axes[0].set_ylabel("sparsity of the masks")
axes[0].set_title("jaxsparse.polynomial(0.95, 100, 700, frequency=50)")
axes[0].legend(fontsize=8)

# %% [markdown]
# ## 2. Per-layer densities: uniform, ER, ERK, global
#
# An *allocation* spreads one target sparsity over the layers. `uniform()`
# prunes every layer to the target (layer-wise pruning). Erdos-Renyi (ER;
# Mocanu et al., "Scalable training of artificial neural networks with
# adaptive sparse connectivity", Nature Communications 2018) and its kernel
# variant ERK (Evci et al., "Rigging the Lottery", ICML 2020) give layer l a
# density proportional to (n_in + n_out)/(n_in n_out): small layers stay
# denser. `global_()` ranks all weights together (Global MP; Gupta et
# al., arXiv:2209.14624, 2022) and lets the scores decide.

# %%
params0 = init_mlp(jax.random.PRNGKey(0), SIZES)
LAYERS = [f"dense_{i}" for i in range(len(SIZES) - 1)]


def layer_densities(masks):
  return [float(np.mean(np.asarray(masks[k]["kernel"]))) for k in LAYERS]


ALLOCATIONS = {
    "uniform": jaxsparse.allocation.uniform(),
    "ER": jaxsparse.allocation.er(),
    "ERK": jaxsparse.allocation.erk(),
    "global": jaxsparse.allocation.global_(),
}
S_SHOW = 0.95
dens = {}
for name, alloc in ALLOCATIONS.items():
  score = (jaxsparse.scores.magnitude if name == "global"
           else jaxsparse.scores.random)
  m = jaxsparse.masks(params0, S_SHOW, score=score, allocation=alloc)
  dens[name] = layer_densities(m)
  print(f"{name:8s} densities per layer {np.round(dens[name], 4)}  "
        f"sparsity {float(jaxsparse.sparsity(m)):.4f}")
shapes = [params0[k]["kernel"].shape for k in LAYERS]
width = 0.2
for j, (name, d) in enumerate(dens.items()):
  axes[1].bar(np.arange(len(LAYERS)) + (j - 1.5) * width, d, width,
              label=name + (" (magnitude at init)" if name == "global"
                            else ""))
axes[1].set_xticks(range(len(LAYERS)),
                   [f"{a}x{b}" for a, b in shapes])
axes[1].set_yscale("log")
axes[1].set_ylabel("density of the layer")
axes[1].set_title(f"allocations at {S_SHOW:.0%} sparsity")
axes[1].legend(fontsize=8)

# %% [markdown]
# ## 3. Accuracy at equal sparsity
#
# Every method keeps exactly the same number of kernel weights. Two
# families:
#
# * **random pruning at initialization** with a fixed mask (Liu et al.,
#   "The unreasonable effectiveness of random pruning", ICLR 2022): the
#   allocation is all that differs. The claim to check: ERK >= uniform.
# * **gradual magnitude pruning** (Zhu-Gupta, to 60 % of training) with a
#   layer-wise (uniform), global or ERK allocation.

# %%
TRAINERS = {}  # one compiled training loop per transform that differs


def trainer(key, make_tx, fixed_masks=False):
  if key not in TRAINERS:
    tx = make_tx()
    TRAINERS[key] = tx, make_trainer(tx, fixed_masks)
  return TRAINERS[key]


def run(method, sparsity, seed):
  params = init_mlp(jax.random.PRNGKey(seed), SIZES)
  opt = optax.adam(optax.cosine_decay_schedule(LR, STEPS))
  kind, alloc_name = method.split("/") if "/" in method else (method, None)
  alloc = ALLOCATIONS.get(alloc_name)
  if kind == "dense":
    tx, train = trainer("dense", lambda: opt)
    state = tx.init(params)
  elif kind == "random":
    masks = jaxsparse.masks(params, sparsity, score=jaxsparse.scores.random,
                            allocation=alloc,
                            key=jax.random.PRNGKey(1000 + seed))
    params = jaxsparse.apply_masks(params, masks)
    # Sparsity 0.0 with initial masks: the masks stay fixed. The masks live
    # in the state, so one compiled loop serves every allocation.
    tx, train = trainer("static", lambda: jaxsparse.prune(
        0.0, optimizer=opt, initial_masks=masks), fixed_masks=True)
    state = jaxsparse.replace_masks(tx.init(params), masks)
  else:
    schedule = jaxsparse.polynomial(sparsity, begin_step=0,
                                    end_step=int(0.6 * STEPS),
                                    frequency=max(1, STEPS // 30))
    tx, train = trainer((method, sparsity), lambda: jaxsparse.prune(
        schedule, optimizer=opt, allocation=alloc))
    state = tx.init(params)
  params, state = train(params, state, batches(seed))
  if kind != "dense":
    got = float(jaxsparse.sparsity(jaxsparse.get_masks(state)))
    assert abs(got - sparsity) < 1e-3, (method, got)
  return float(accuracy(params))


# ER equals ERK for dense layers (they differ on convolution kernels), so
# only ERK is trained. Small mode leaves out magnitude/ERK.
METHODS = ("random/uniform", "random/ERK", "magnitude/uniform",
           "magnitude/global") + (() if SMALL else ("magnitude/ERK",))
t0 = time.perf_counter()
dense_acc = [run("dense", 0.0, s) for s in SEEDS]
results = {m: {s: [run(m, s, seed) for seed in SEEDS] for s in SPARSITIES}
           for m in METHODS}
print(f"trained {len(SEEDS) * (1 + len(METHODS) * len(SPARSITIES))} runs "
      f"in {time.perf_counter() - t0:.0f} s")

# %%
print(f"test accuracy, mean +- std over {len(SEEDS)} seed(s); dense "
      f"{np.mean(dense_acc):.4f} +- {np.std(dense_acc):.4f}")
print(f"{'method':20s}" + "".join(f"{s:>18.0%}" for s in SPARSITIES))
for m in METHODS:
  print(f"{m:20s}" + "".join(
      f"{np.mean(results[m][s]):>10.4f} +- {np.std(results[m][s]):.4f}"
      for s in SPARSITIES))

ax = axes[2]
ax.axhline(np.mean(dense_acc), color="k", ls="--", lw=1, label="dense")
for m in METHODS:
  mean = [np.mean(results[m][s]) for s in SPARSITIES]
  std = [np.std(results[m][s]) for s in SPARSITIES]
  ax.errorbar([100 * s for s in SPARSITIES], mean, yerr=std, marker="o",
              capsize=3, ls="-" if m.startswith("magnitude") else ":",
              label=m)
ax.set_xlabel("sparsity of the kernels (%)")
ax.set_ylabel("MNIST-1D test accuracy")
ax.set_title(f"MLP {'-'.join(map(str, SIZES))}, {STEPS} steps")
ax.legend(fontsize=7)
fig.tight_layout()
fig.savefig(os.path.join(FIGURES, "schedules_and_allocations.png"), dpi=120)
plt.show()

# %% [markdown]
# **What to read off.** Random masks test the allocation alone. At 95 %
# uniform leaves the 40-input first layer and the 10-output last layer
# with only a few connections per unit, while ERK keeps them denser; Liu
# et al.'s ERK >= uniform reproduces. Full mode (3 seeds, 3,000 steps,
# mean +- std; dense 0.669 +- 0.011): random ERK 0.575 +- 0.013 against
# random uniform 0.471 +- 0.010 at 95 %, and 0.415 against 0.238 at 98 %.
# Gradual magnitude pruning is better than random at every sparsity, and
# there the allocation matters too: at 95 % layer-wise (uniform) 0.591 +-
# 0.013, global 0.634 +- 0.015, ERK 0.665 +- 0.011 (at 98 %: 0.427, 0.502,
# 0.529). So global magnitude beats layer-wise at high sparsity, as Gupta
# et al. report, and ERK is better still on this MLP; at 80-90 % the
# magnitude variants are within seed noise of dense. Small mode (one seed,
# 300 steps, 95 % only) gives lower numbers and only the random ERK >
# uniform gap is clear in it (0.330 against 0.269).
