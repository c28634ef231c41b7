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
# # Parameter sharing vs pruning at matched memory
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/<owner>/jaxsparse/blob/main/colabs/parameter_sharing.ipynb)
#
# Pruning stores a fraction of the weights (and where they are);
# randomized parameter sharing (RPS) stores a small shared memory and
# *reads* every weight from it through a hash: W_i = lambda_l xi_i M[h(i)],
# with a random sign xi_i and a per-layer scale lambda_l. The network keeps
# its full shape, and all of it trains.
#
# * HashedNet (Chen et al., "Compressing Neural Networks with the Hashing
#   Trick", ICML 2015): one memory per layer, each weight hashed on its own.
# * ROAST (Desai, Zhou & Shrivastava, 2022): one global memory; whole tiles
#   of a layer read contiguous windows of it (cache-friendly).
# * STABLE-RPS (Desai & Shrivastava, "In defense of parameter sharing for
#   model-compression", ICLR 2024): RANDOMFOLD mapping (every slot serves
#   the same number of weights) and a gradient scaling that makes training
#   independent of the memory's initial scale. Their claim: RPS matches or
#   beats pruning at high compression.
#
# `jaxsparse.sharing.memory_budget` puts both on one axis: for a budget of
# stored floats it gives the RPS compression and the pruning sparsity that
# store the same amount.
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
from jaxsparse import sharing
from jaxsparse.experiments import notebook as nb

# Parameters. JAXSPARSE_SMALL=1 (set by the test suite) runs a short version.
SMALL = os.environ.get("JAXSPARSE_SMALL", "0") == "1"
SIZES = (40, 256, 256, 10)
STEPS = 300 if SMALL else 3000
BATCH = 64 if SMALL else 128
LR = 3e-3
SEEDS = (0,) if SMALL else (0, 1, 2)
# Stored floats per kernel weight.
BUDGETS = (0.05,) if SMALL else (0.2, 0.1, 0.05, 0.02)
MASK_COST = "none"  # pruning's mask is free: the convention of pruning papers
ROAST_TILE = (16, 16)
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
# `sharing.init(params, compression, mapper=...)` returns the trainable
# `Memory` (the shared array plus the dense biases) and a static `Spec`;
# the loss reads `spec.expand(memory)`, full-shape params, and JAX's
# gradient of the gather is the scatter-add into the memory. STABLE-RPS
# puts `sharing.gradient_scaling(spec)` before the optimizer. Pruning is
# Zhu-Gupta gradual magnitude pruning to the sparsity with the same
# stored floats.

# %%
def make_rps_trainer(spec, tx):
  @jax.jit
  def run(memory, idx):
    def step(carry, ix):
      memory, state = carry
      grads = jax.grad(lambda m: loss_fn(spec.expand(m), ix))(memory)
      updates, state = tx.update(grads, state, memory)
      return (optax.apply_updates(memory, updates), state), None
    (memory, _), _ = jax.lax.scan(step, (memory, tx.init(memory)), idx)
    return memory
  return run


def run(method, budget, seed):
  params = init_mlp(jax.random.PRNGKey(seed), SIZES)
  b = sharing.memory_budget(params, budget * N_WEIGHTS, mask_cost=MASK_COST)
  opt = optax.adam(optax.cosine_decay_schedule(LR, STEPS))
  if method == "pruning":
    schedule = jaxsparse.polynomial(b.sparsity, 0, int(0.6 * STEPS),
                                    frequency=max(1, STEPS // 30))
    tx = jaxsparse.prune(schedule, optimizer=opt)
    p, state = make_trainer(tx)(params, tx.init(params), batches(seed))
    stored = int(np.sum([np.sum(m) for m in jax.tree.leaves(
        jaxsparse.get_masks(state))]))
    return float(accuracy(p)), stored
  mapper = {"HashedNet": "hashednet", "ROAST": "roast",
            "STABLE-RPS": "stable_rps"}[method]
  memory, spec = sharing.init(params, b.compression, mapper=mapper,
                              seed=seed, tile=ROAST_TILE)
  if method == "STABLE-RPS":
    opt = optax.chain(sharing.gradient_scaling(spec), opt)
  memory = make_rps_trainer(spec, opt)(memory, batches(seed))
  return float(accuracy(spec.expand(memory))), int(memory.shared.size)


params0 = init_mlp(jax.random.PRNGKey(0), SIZES)
N_WEIGHTS = sum(params0[f"dense_{i}"]["kernel"].size
                for i in range(len(SIZES) - 1))
for budget in BUDGETS:
  for cost in ("none", "bitmap"):
    try:
      b = sharing.memory_budget(params0, budget * N_WEIGHTS, mask_cost=cost)
    except ValueError as e:  # below 1/32 float per weight: no room left
      print(f"budget {budget:.3f} floats/weight, mask cost {cost!r}: {e}")
      continue
    print(f"budget {budget:.3f} floats/weight, mask cost {cost!r}: RPS "
          f"compression {b.compression:.4f}, pruning sparsity "
          f"{b.sparsity:.4f} ({b.nonzeros} non-zeros)")

METHODS = ("pruning", "HashedNet", "ROAST", "STABLE-RPS")
t0 = time.perf_counter()
dense_tx = optax.adam(optax.cosine_decay_schedule(LR, STEPS))
dense_acc = []
for seed in SEEDS:
  p0 = init_mlp(jax.random.PRNGKey(seed), SIZES)
  p, _ = make_trainer(dense_tx)(p0, dense_tx.init(p0), batches(seed))
  dense_acc.append(float(accuracy(p)))
results = {m: {b: [run(m, b, s) for s in SEEDS] for b in BUDGETS}
           for m in METHODS}
print(f"trained in {time.perf_counter() - t0:.0f} s; {N_WEIGHTS} kernel "
      f"weights; dense {np.mean(dense_acc):.4f}")
print(f"{'method':12s}" + "".join(f"{f'{b:g} floats/w':>22s}"
                                  for b in BUDGETS))
for m in METHODS:
  print(f"{m:12s}" + "".join(
      f"{np.mean([a for a, _ in results[m][b]]):>14.4f} +- "
      f"{np.std([a for a, _ in results[m][b]]):.4f}" for b in BUDGETS))
for m in METHODS:  # the stored floats really match
  print(f"  {m:12s} stored kernel floats: "
        f"{[results[m][b][0][1] for b in BUDGETS]}")

# %%
fig, ax = plt.subplots(figsize=(6.5, 4.2))
ax.axhline(np.mean(dense_acc), color="k", ls="--", lw=1, label="dense")
for m in METHODS:
  accs = [[a for a, _ in results[m][b]] for b in BUDGETS]
  ax.errorbar(BUDGETS, [np.mean(a) for a in accs],
              yerr=[np.std(a) for a in accs], marker="o", capsize=3,
              label=m, ls="-" if m != "pruning" else "--")
ax.set_xscale("log")
ax.set_xlabel("stored floats per kernel weight")
ax.set_ylabel("MNIST-1D test accuracy")
ax.set_title(f"sharing vs pruning, MLP {'-'.join(map(str, SIZES))}")
ax.legend(fontsize=8)
fig.tight_layout()
fig.savefig(os.path.join(FIGURES, "parameter_sharing.png"), dpi=120)
plt.show()

# %% [markdown]
# **What to read off.** The budget counts pruning's mask as free
# (`MASK_COST = "none"`), which favours pruning; with a bitmap mask the
# same budget leaves pruning 1/32 float per weight fewer (printed above).
# Desai & Shrivastava find RPS ahead of pruning at high compression on
# CIFAR and Tiny-ImageNet. Full mode (3 seeds, 3,000 steps, mean +- std;
# dense 0.669) shows that crossover: gradual magnitude pruning wins at
# 0.2, 0.1 and 0.05 floats per weight (0.595 +- 0.008 against 0.563 for
# STABLE-RPS and 0.559 for ROAST at 0.05), and loses at 0.02 (pruning
# 0.425 +- 0.004; ROAST 0.498 +- 0.021, HashedNet 0.490, STABLE-RPS
# 0.486). So the claim reproduces only at the highest compression here,
# with the mask counted as free. Among the RPS methods, ROAST and
# STABLE-RPS are ahead of HashedNet at 0.05-0.2. Small mode (one seed,
# 300 steps, 0.05) shows RPS far ahead (ROAST 0.516 against pruning
# 0.279): an artefact of the short run, in which pruning reaches 95 % at
# step 180 and has little time to recover. With Adam the STABLE-RPS
# gradient scaling cancels in Adam's per-coordinate normalisation (up to
# its epsilon), so here STABLE-RPS differs from ROAST only by its
# RANDOMFOLD mapping; the scaling matters with SGD.
