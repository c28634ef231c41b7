"""Plots of runs: accuracy and sparsity over training, per-layer sparsity.

With `config.seeds` (run names "<variant>#s<seed>"), `aggregate` groups the
runs of a variant over seeds and `write_seed_results` writes their mean and
standard deviation: `results_seeds.txt`, `results_seeds.json` and plots with
error bars.
"""

from __future__ import annotations

import json
import math
import os
from typing import Any

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def write_plots(runs: list[dict[str, Any]], outdir: str,
                sweep: bool = False, x_key: str = "sparsity") -> list[str]:
  """Writes PNGs into `outdir`; returns their paths."""
  os.makedirs(outdir, exist_ok=True)
  paths = []
  all_runs = runs
  if any(_split_seed(r["name"])[1] is not None for r in runs):
    first = {}  # curves and bars of each variant's first seed only
    for r in runs:
      first.setdefault(_split_seed(r["name"])[0], r)
    runs = list(first.values())

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
    agg = aggregate(all_runs)
    for r in agg:
      if r["name"] != "dense":
        groups.setdefault(_group(r["name"]), []).append(r)
    for name, rs in groups.items():
      rs = sorted(rs, key=lambda r: r[x_key])
      ax.errorbar([r[x_key] for r in rs], [r["test_accuracy"] for r in rs],
                  yerr=[r["test_accuracy_std"] for r in rs], fmt="o-",
                  capsize=3, label=name)
    for r in agg:
      if r["name"] == "dense":
        m, sd = r["test_accuracy"], r["test_accuracy_std"]
        ax.axhline(m, color="k", ls="--", label="dense")
        if sd > 0:
          ax.axhspan(m - sd, m + sd, color="k", alpha=0.1)
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


def _split_seed(name: str) -> tuple[str, int | None]:
  from jaxsparse.experiments import config as config_lib  # pylint: disable=g-import-not-at-top
  return config_lib.split_seed(name)


def _std(xs: list[float]) -> float:
  """Sample standard deviation (ddof=1); 0 for a single value."""
  return float(np.std(xs, ddof=1)) if len(xs) > 1 else 0.0


def aggregate(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
  """Runs grouped by variant over seeds, in first-seen order.

  Each group has the variant's `name`, `seeds`, `n`, and the mean of
  `test_accuracy` (with `test_accuracy_std`, the sample standard deviation,
  and `test_accuracies`, one per seed), `target_sparsity`,
  `achieved_sparsity` (with `achieved_sparsity_std`), `sparsity`, `memory`,
  per-layer `layers` (mean sparsity and density) and `mask_change` over
  training (mean per evaluation step). Runs without a seed suffix form
  groups of one.
  """
  groups: dict[str, list[dict[str, Any]]] = {}
  for r in runs:
    groups.setdefault(_split_seed(r["name"])[0], []).append(r)
  out = []
  for name, rs in groups.items():
    mean = lambda k, rs=rs: float(np.mean([r.get(k, math.nan) for r in rs]))
    acc = [float(r["test_accuracy"]) for r in rs]
    ach = [float(r.get("achieved_sparsity", r["sparsity"])) for r in rs]
    targets = [r.get("target_sparsity") for r in rs]
    layers = []
    for i, layer in enumerate(rs[0].get("layers", ())):
      sp = float(np.mean([r["layers"][i]["sparsity"] for r in rs]))
      layers.append({"name": layer["name"], "shape": layer["shape"],
                     "pruned": any(r["layers"][i]["pruned"] for r in rs),
                     "sparsity": sp, "density": 1.0 - sp})
    steps: dict[int, list[float]] = {}
    for r in rs:
      for row in r.get("history", ()):
        steps.setdefault(int(row["step"]), []).append(
            float(row.get("mask_change", 0.0)))
    out.append({
        "name": name,
        "seeds": [_split_seed(r["name"])[1] for r in rs], "n": len(rs),
        "test_accuracy": float(np.mean(acc)), "test_accuracy_std": _std(acc),
        "test_accuracies": acc,
        "target_sparsity": (None if any(t is None for t in targets)
                            else float(np.mean(targets))),
        "achieved_sparsity": float(np.mean(ach)),
        "achieved_sparsity_std": _std(ach),
        "sparsity": float(np.mean(ach)),
        "memory": mean("memory"),
        "layers": layers,
        "mask_change": [(s, float(np.mean(v))) for s, v in sorted(
            steps.items())],
    })
  return out


def seeds_table(groups: list[dict[str, Any]]) -> str:
  """Mean ± std over seeds per variant, then mean per-layer density."""
  fmt = lambda x, w, d: f"{'-':>{w}}" if x is None else f"{x:>{w}.{d}f}"
  lines = [f"{'run':<22}{'seeds':>6}{'test acc (mean ± std)':>24}"
           f"{'target':>9}{'achieved':>10}{'memory':>9}"]
  lines.append("-" * len(lines[0]))
  for g in groups:
    acc = f"{g['test_accuracy']:.4f} ± {g['test_accuracy_std']:.4f}"
    lines.append(f"{g['name'][:21]:<22}{g['n']:>6}{acc:>24}"
                 f"{fmt(g['target_sparsity'], 9, 4)}"
                 f"{g['achieved_sparsity']:>10.4f}{g['memory']:>9.4f}")
  lines.append("mean ± sample std (ddof=1) over seeds; target / achieved: "
               "sparsity of the prunable layers asked for and delivered "
               "(mean over seeds; '-': no target)")
  lines.append("")
  if not groups or not groups[0]["layers"]:
    return "\n".join(lines)
  head = f"{'layer':<28}{'shape':<14}" + "".join(
      f"{g['name'][:14]:>15}" for g in groups)
  lines += ["per-layer density (fraction of weights kept, mean over seeds)",
            head, "-" * len(head)]
  for i, layer in enumerate(groups[0]["layers"]):
    if not any(g["layers"][i]["pruned"] for g in groups):
      continue
    row = f"{layer['name'][:27]:<28}{str(tuple(layer['shape']))[:13]:<14}"
    row += "".join(f"{g['layers'][i]['density']:>15.4g}" for g in groups)
    lines.append(row)
  return "\n".join(lines)


def write_seed_results(workdir: str) -> tuple[str, list[str]]:
  """Seed aggregates of `workdir/results.json`: writes `results_seeds.txt`,
  `results_seeds.json`, and into `workdir/plots` the per-layer density
  (`layer_density_seeds.png`, log scale, one panel per target sparsity)
  and, where masks changed during training, `mask_change_seeds.png`.
  Returns (table, plot paths)."""
  with open(os.path.join(workdir, "results.json")) as f:
    runs = json.load(f)
  groups = aggregate(runs)
  table = seeds_table(groups)
  with open(os.path.join(workdir, "results_seeds.txt"), "w") as f:
    f.write(table + "\n")
  with open(os.path.join(workdir, "results_seeds.json"), "w") as f:
    json.dump(groups, f, indent=1)
  outdir = os.path.join(workdir, "plots")
  os.makedirs(outdir, exist_ok=True)
  paths = []
  sparse = [g for g in groups if g["name"] != "dense" and g["layers"]]
  if sparse:
    levels = sorted({round(g["achieved_sparsity"], 3) for g in sparse})
    panels = sorted({_level(g, levels) for g in sparse})
    layers = [x["name"] for x in sparse[0]["layers"]]
    pruned = [i for i in range(len(layers))
              if any(g["layers"][i]["pruned"] for g in sparse)]
    fig, axes = plt.subplots(
        1, len(panels), squeeze=False, sharey=True,
        figsize=(max(4.5, 0.9 * len(pruned) + 2) * len(panels), 3.8))
    for ax, level in zip(axes[0], panels, strict=True):
      gs = [g for g in sparse if _level(g, levels) == level]
      width = 0.8 / len(gs)
      for j, g in enumerate(gs):
        ax.bar([k + j * width for k in range(len(pruned))],
               [max(g["layers"][i]["density"], 1e-5) for i in pruned],
               width, label=g["name"].split("@")[0])
      ax.set_xticks([k + 0.4 - width / 2 for k in range(len(pruned))])
      ax.set_xticklabels([layers[i] for i in pruned], rotation=30,
                         ha="right", fontsize=7)
      ax.set_yscale("log")
      ax.set(title=f"sparsity {level:g}", ylabel="density (kept fraction)")
      ax.grid(alpha=0.3, axis="y")
      ax.legend(fontsize=7)
    fig.tight_layout()
    paths.append(_save(fig, outdir, "layer_density_seeds.png"))
  moving = [g for g in groups
            if any(v > 0 for _, v in g["mask_change"][1:])]
  if moving:
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for g in moving:
      ax.plot([s for s, _ in g["mask_change"]],
              [v for _, v in g["mask_change"]], label=g["name"])
    ax.set(xlabel="step", ylabel="mask change since last evaluation",
           title="normalized mask Hamming distance")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    paths.append(_save(fig, outdir, "mask_change_seeds.png"))
  return table, paths


def _level(group: dict[str, Any], levels: list[float]) -> float:
  """The target sparsity of a group (its achieved one if it has none)."""
  t = group.get("target_sparsity")
  return round(t if t is not None else group["achieved_sparsity"], 4)


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
