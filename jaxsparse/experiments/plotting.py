"""Plots of runs: accuracy and sparsity over training, per-layer sparsity."""

from __future__ import annotations

import os
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def write_plots(runs: list[dict[str, Any]], outdir: str,
                sweep: bool = False, x_key: str = "sparsity") -> list[str]:
  """Writes PNGs into `outdir`; returns their paths."""
  os.makedirs(outdir, exist_ok=True)
  paths = []

  fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.8))
  for r in runs:
    h = r["history"]
    steps = [x["step"] for x in h]
    ax1.plot(steps, [x["test_accuracy"] for x in h], label=r["name"])
    ax2.plot(steps, [x["sparsity"] for x in h], label=r["name"])
  ax1.set(xlabel="step", ylabel="test accuracy", title="accuracy")
  ax2.set(xlabel="step", ylabel="sparsity (prunable weights)",
          title="sparsity", ylim=(-0.02, 1.02))
  for ax in (ax1, ax2):
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
  fig.tight_layout()
  paths.append(_save(fig, outdir, "training.png"))

  fig, ax = plt.subplots(figsize=(max(5, 1.2 * len(runs[0]["layers"])), 3.8))
  layers = [x["name"] for x in runs[0]["layers"]]
  width = 0.8 / len(runs)
  for j, r in enumerate(runs):
    xs = [i + j * width for i in range(len(layers))]
    ax.bar(xs, [x["sparsity"] for x in r["layers"]], width, label=r["name"])
  ax.set_xticks([i + 0.4 - width / 2 for i in range(len(layers))])
  ax.set_xticklabels(layers, rotation=30, ha="right", fontsize=7)
  ax.set(ylabel="sparsity", title="per-layer sparsity", ylim=(0, 1.05))
  ax.legend(fontsize=8)
  fig.tight_layout()
  paths.append(_save(fig, outdir, "layer_sparsity.png"))

  if sweep:
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    groups: dict[str, list] = {}
    for r in runs:
      if r["name"] != "dense":
        groups.setdefault(_group(r["name"]), []).append(r)
    for name, rs in groups.items():
      rs = sorted(rs, key=lambda r: r[x_key])
      ax.plot([r[x_key] for r in rs], [r["test_accuracy"] for r in rs],
              "o-", label=name)
    for r in runs:
      if r["name"] == "dense":
        ax.axhline(r["test_accuracy"], color="k", ls="--", label="dense")
    if x_key == "memory":
      ax.set_xscale("log")
      xlabel = "stored floats per weight"
    else:
      xlabel = "sparsity"
    ax.set(xlabel=xlabel, ylabel="test accuracy",
           title=f"accuracy vs {'memory' if x_key == 'memory' else 'sparsity'}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    paths.append(_save(fig, outdir, "accuracy_vs_sparsity.png"))
  return paths


def _group(name: str) -> str:
  """Method of a run name: "rigl@0.9" -> "rigl", "imp_03" -> "imp"."""
  name = name.split("@")[0]
  head, _, tail = name.rpartition("_")
  return head if head and tail.isdigit() else name


def _save(fig, outdir: str, name: str) -> str:
  path = os.path.join(outdir, name)
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return path
