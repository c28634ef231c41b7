"""Studies over many runs of the runner: the sparse scaling law.

`config.study = "scaling"` (`configs/scaling_study.py`): for every model
width in `scaling.widths` x run length in `scaling.steps`, the language
model runner (`experiments/lm.py`) trains the dense model and each
`sweep_sparsities` run of `pruning.method`; `scaling` then fits the law of
Frantar et al. (2023) to the table of (sparsity, non-zero parameters N,
tokens D, validation loss) and writes

* `scaling_table.txt` / `.json`: every run with the law's prediction and
  its residual,
* `scaling_law.json`: the coefficients, the RMSE over all runs, and two
  hold-out errors (a random `scaling.holdout` of the runs left out of a
  second fit; the longest runs left out of a third: extrapolation in D),
* `plots/scaling_law.png` (loss vs N per sparsity with the fitted curves)
  and `plots/scaling_fit.png` (predicted vs observed loss).

N counts the non-zero non-embedding parameters (the block kernels after
pruning, plus the norms), as Frantar et al. and Kaplan et al. (2020) do;
D = steps x batch_size x seq_len target tokens.
"""

from __future__ import annotations

import json
import math
import os
import time
from typing import Any

import ml_collections
import numpy as np

from jaxsparse import scaling as scaling_lib
from jaxsparse.experiments import config as config_lib

STUDIES = ("none", "scaling")


def cells(config: ml_collections.ConfigDict
          ) -> list[tuple[str, ml_collections.ConfigDict]]:
  """(name, config) per width x steps: one LM runner call each."""
  s = config.scaling
  out = []
  for width in s.widths:
    for steps in s.steps:
      c = ml_collections.ConfigDict(config.to_dict())
      c.lm.dim = int(width)
      c.lm.hidden_dim = int(round(s.hidden_ratio * width))
      c.num_steps = int(steps)
      c.compare_dense = True
      c.posttrain.methods = ()
      out.append((f"w{int(width)}_steps{int(steps)}", c))
  return out


def tokens(config: ml_collections.ConfigDict) -> int:
  """D: target tokens one run trains on (steps x batch x seq_len)."""
  return int(config.num_steps) * int(config.batch_size) * int(
      config.lm.seq_len)


def param_counts(config: ml_collections.ConfigDict) -> tuple[int, int]:
  """(prunable block kernels, other non-embedding params) of the model."""
  import jax  # pylint: disable=g-import-not-at-top
  from flax import nnx  # pylint: disable=g-import-not-at-top

  from jaxsparse import lm  # pylint: disable=g-import-not-at-top
  model = nnx.eval_shape(lambda: lm.Llama(config_lib.lm_config(config),
                                          rngs=nnx.Rngs(0)))
  flat = jax.tree.flatten_with_path(nnx.state(model, nnx.Param))[0]
  prunable = other = 0
  for path, leaf in flat:
    size = int(np.prod(leaf.shape))
    names = "/".join(str(getattr(k, "key", k)) for k in path)
    if lm.prunable(path, leaf):
      prunable += size
    elif "embed_tokens" not in names and "lm_head" not in names:
      other += size
  return prunable, other


def scaling_study(config: ml_collections.ConfigDict, workdir: str,
                  progress: bool = True) -> dict[str, Any]:
  """Runs every cell (width x steps) of the study, then `scaling`."""
  import jax  # pylint: disable=g-import-not-at-top

  from jaxsparse.experiments import lm as lm_runner  # pylint: disable=g-import-not-at-top
  grid = cells(config)
  for _, c in grid:  # every run, before any work
    config_lib.validate(c)
  os.makedirs(workdir, exist_ok=True)
  t0 = time.perf_counter()
  rows = []
  for name, c in grid:
    prunable, other = param_counts(c)
    for r in lm_runner.run(c, os.path.join(workdir, name), progress=progress):
      s = float(r["achieved"])
      rows.append(dict(run=f"{name}/{r['name']}", width=int(c.lm.dim),
                       steps=int(c.num_steps), sparsity=s,
                       n=int(round((1.0 - s) * prunable)) + other,
                       d=tokens(c), loss=float(r["loss"]),
                       seconds=float(r["seconds"])))
  if jax.process_index() == 0:
    with open(os.path.join(workdir, "scaling_runs.json"), "w") as f:
      json.dump(rows, f, indent=1)  # the table, before the fit
  summary = scaling(rows, workdir, holdout=config.scaling.holdout,
                    seed=config.seed)
  summary["study_seconds"] = time.perf_counter() - t0
  if jax.process_index() == 0:
    with open(os.path.join(workdir, "scaling_law.json"), "w") as f:
      json.dump(summary, f, indent=1)
  print(f"study: {len(rows)} runs in {summary['study_seconds']:.0f} s")
  return summary


def scaling(results: list[dict[str, Any]], workdir: str, *,
            holdout: float = 0.25, seed: int = 0) -> dict[str, Any]:
  """Fits the sparse scaling law to `results`; writes table, fit and plots.

  Args:
    results: one dict per run with `sparsity`, `n` (non-zero params),
      `d` (tokens) and `loss`; `run` (a name) and `steps` if present.
    workdir: where `scaling_table.txt/.json`, `scaling_law.json` and
      `plots/scaling_law.png`, `plots/scaling_fit.png` go.
    holdout: fraction of the runs left out (at random, `seed`) of a second
      fit, whose error on them is `holdout_rmse`.
    seed: the fits' starting points and the random hold-out.

  Returns:
    The summary written to `scaling_law.json`: coefficients, `rmse`,
    `holdout_rmse`, `extrapolation_rmse` (fit without the longest runs,
    scored on them; NaN with one run length) and the table's rows.
  """
  cols = {k: np.array([float(r[k]) for r in results])
          for k in ("sparsity", "n", "d", "loss")}
  args = (cols["sparsity"], cols["n"], cols["d"], cols["loss"])
  law = scaling_lib.fit(*args, seed=seed)
  rows = len(results)
  k = min(int(round(holdout * rows)), rows - len(scaling_lib.COEFFICIENTS))
  mask = np.zeros(rows, bool)
  mask[np.random.default_rng(seed).permutation(rows)[:max(k, 0)]] = True
  held = scaling_lib.fit(*args, holdout=mask, seed=seed) if k > 0 else None
  longest = cols["d"] == cols["d"].max()
  extra = None
  if 0 < longest.sum() and (~longest).sum() >= len(
      scaling_lib.COEFFICIENTS) and len(set(cols["d"])) > 1:
    extra = scaling_lib.fit(*args, holdout=longest, seed=seed)
  pred = np.asarray(law.predict(*args[:3]), np.float64)
  table_rows = []
  for r, p in zip(results, pred, strict=True):
    table_rows.append(dict(run=r.get("run", ""), sparsity=float(r["sparsity"]),
                           n=int(r["n"]), d=int(r["d"]),
                           loss=float(r["loss"]), predicted=float(p),
                           residual=float(r["loss"]) - float(p)))
  nan = float("nan")
  summary = dict(
      coefficients={k: float(v) for k, v in law.coefficients.items()},
      rmse=float(law.rmse), runs=rows,
      holdout_runs=k, holdout_rmse=float(held.holdout_rmse) if held else nan,
      holdout_names=[r.get("run", "") for r, m in zip(results, mask,
                                                      strict=True) if m],
      holdout_coefficients=({k: float(v) for k, v in
                             held.coefficients.items()} if held else None),
      extrapolation_d=float(cols["d"].max()),
      extrapolation_rmse=float(extra.holdout_rmse) if extra else nan,
      table=table_rows)
  text = scaling_table(summary)
  print(text)
  import jax  # pylint: disable=g-import-not-at-top
  if jax.process_index() != 0:  # many processes: process 0 writes
    return summary
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, "scaling_table.txt"), "w") as f:
    f.write(text + "\n")
  with open(os.path.join(workdir, "scaling_table.json"), "w") as f:
    json.dump(table_rows, f, indent=1)
  with open(os.path.join(workdir, "scaling_law.json"), "w") as f:
    json.dump(summary, f, indent=1)
  paths = plot_scaling(law, table_rows, os.path.join(workdir, "plots"),
                       held=held, held_mask=mask)
  summary["plots"] = paths
  print("plots: " + ", ".join(paths))
  return summary


def scaling_table(summary: dict[str, Any]) -> str:
  """The table of runs with the fit's prediction, then the fit."""
  head = (f"{'run':<30}{'sparsity':>9}{'N':>10}{'D':>11}{'loss':>9}"
          f"{'law':>9}{'resid':>9}")
  lines = [head, "-" * len(head)]
  for r in summary["table"]:
    lines.append(f"{r['run']:<30}{r['sparsity']:>9.4f}{r['n']:>10d}"
                 f"{r['d']:>11d}{r['loss']:>9.4f}{r['predicted']:>9.4f}"
                 f"{r['residual']:>+9.4f}")
  co = summary["coefficients"]
  lines.append("L(S, N, D) = (a_S (1-S)^b_S + c_S) (1/N)^b_N + (a_D/D)^b_D "
               "+ c  (Frantar et al., 2023)")
  lines.append("  " + ", ".join(f"{k}={v:.4g}" for k, v in co.items()))
  lines.append(f"  RMSE {summary['rmse']:.4f} nats over {summary['runs']} "
               f"runs; hold-out RMSE {summary['holdout_rmse']:.4f} "
               f"({summary['holdout_runs']} random runs left out); "
               f"extrapolation RMSE {summary['extrapolation_rmse']:.4f} "
               f"(runs at D={summary['extrapolation_d']:.0f} left out)")
  lines.append("N: non-zero non-embedding parameters; D: training tokens; "
               "loss: validation nats per byte")
  return "\n".join(lines)


def plot_scaling(law, rows: list[dict[str, Any]], outdir: str, *,
                 held=None, held_mask=None) -> list[str]:
  """`scaling_law.png` (loss vs N per sparsity, one panel per D, fitted
  curves) and `scaling_fit.png` (predicted vs observed)."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  import matplotlib.ticker  # pylint: disable=g-import-not-at-top
  os.makedirs(outdir, exist_ok=True)
  sparsities = sorted({round(r["sparsity"], 3) for r in rows})
  ds = sorted({r["d"] for r in rows})
  colors = plt.cm.viridis(np.linspace(0, 0.9, len(sparsities)))
  fig, axes = plt.subplots(1, len(ds), figsize=(4 * len(ds), 3.6),
                           sharey=True, squeeze=False)
  n_all = np.array([r["n"] for r in rows], float)
  grid = np.geomspace(n_all.min() / 1.2, n_all.max() * 1.2, 100)
  losses = np.array([r["loss"] for r in rows])
  margin = 0.15 * (losses.max() - losses.min() + 1e-3)
  for ax, d in zip(axes[0], ds, strict=True):
    for color, s in zip(colors, sparsities, strict=True):
      pts = [r for r in rows if r["d"] == d and round(r["sparsity"], 3) == s]
      ax.plot([r["n"] for r in pts], [r["loss"] for r in pts], "o",
              color=color, label=f"S={s:g}")
      ax.plot(grid, np.asarray(law.predict(s, grid, d)), "-", color=color,
              lw=1)
    ax.set(xscale="log", xlabel="non-zero parameters N",
           title=f"D = {d / 1e6:.3g}M tokens",
           ylim=(losses.min() - margin, losses.max() + margin))
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.grid(alpha=0.3, which="both")
  axes[0][0].set_ylabel("validation loss (nats/byte)")
  axes[0][0].legend(fontsize=8)
  fig.suptitle("sparse scaling law fit (Frantar et al., 2023)", fontsize=10)
  fig.tight_layout()
  paths = [os.path.join(outdir, "scaling_law.png")]
  fig.savefig(paths[-1], dpi=120)
  plt.close(fig)

  fig, ax = plt.subplots(figsize=(4.2, 4))
  obs = np.array([r["loss"] for r in rows])
  ax.plot(obs, [r["predicted"] for r in rows], "o", ms=4,
          label=f"fit on all runs (RMSE {law.rmse:.3f})")
  if held is not None and held_mask is not None:
    s = np.array([r["sparsity"] for r in rows])
    n = np.array([r["n"] for r in rows], float)
    d = np.array([r["d"] for r in rows], float)
    p = np.asarray(held.predict(s, n, d))
    ax.plot(obs[held_mask], p[held_mask], "x", color="C3",
            label=f"held out (RMSE {held.holdout_rmse:.3f})")
  lo, hi = obs.min(), obs.max()
  pad = 0.05 * (hi - lo + 1e-9)
  ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], "k--", lw=1)
  ax.set(xlabel="observed loss", ylabel="predicted loss",
         title="law vs runs")
  ax.legend(fontsize=7)
  ax.grid(alpha=0.3)
  fig.tight_layout()
  paths.append(os.path.join(outdir, "scaling_fit.png"))
  fig.savefig(paths[-1], dpi=120)
  plt.close(fig)
  return paths


def check(config: ml_collections.ConfigDict) -> list[str]:
  """Problems of `config.study` and its keys (for `config.validate`)."""
  study = config.get("study", "none")
  if study not in STUDIES:
    return [f"config.study={study!r}: unknown; allowed: "
            f"{', '.join(repr(a) for a in STUDIES)}"]
  if study == "none":
    return []
  errs = []
  if not config_lib.is_lm(config):
    errs.append("config.study='scaling': needs task 'lm' (start from "
                "configs/scaling_study.py)")
  s = config.get("scaling", None)
  if s is None:
    return errs + ["config.scaling: missing; config.study='scaling' reads "
                   "scaling.widths, .steps, .hidden_ratio, .holdout "
                   "(see configs/scaling_study.py)"]
  for key in ("widths", "steps"):
    v = tuple(s.get(key, ()) or ())
    if not v or any(isinstance(x, bool) or not isinstance(x, int) or x < 1
                    for x in v):
      errs.append(f"config.scaling.{key}={v!r}: must be a non-empty tuple of "
                  "integers >= 1")
    elif len(set(v)) != len(v):
      errs.append(f"config.scaling.{key}={v!r}: values repeat")
  ratio = s.get("hidden_ratio", 3.0)
  if not isinstance(ratio, (int, float)) or not ratio > 0:
    errs.append(f"config.scaling.hidden_ratio={ratio!r}: must be > 0")
  h = s.get("holdout", 0.25)
  if not isinstance(h, (int, float)) or not 0 <= h < 1 or math.isnan(h):
    errs.append(f"config.scaling.holdout={h!r}: must be in [0, 1)")
  heads = config.lm.n_heads
  for w in tuple(s.get("widths", ()) or ()):
    if isinstance(w, int) and isinstance(heads, int) and heads > 0 and (
        w % (2 * heads)):
      errs.append(f"config.scaling.widths: {w} is not a multiple of 2 x "
                  f"config.lm.n_heads={heads} (even head dimension for RoPE)")
  if errs:
    return errs
  n_rows = len(s.widths) * len(s.steps) * (
      1 + len(tuple(config.get("sweep_sparsities", ()) or ())))
  if n_rows < len(scaling_lib.COEFFICIENTS):
    errs.append(f"config.scaling: {n_rows} runs (widths x steps x (dense + "
                f"sweep_sparsities)); the law has 7 coefficients: give at "
                "least 7 runs")
  return errs


__all__ = ("cells", "check", "param_counts", "plot_scaling", "scaling",
           "scaling_study", "scaling_table", "tokens")
