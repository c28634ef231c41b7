"""Training loop of the experiment runner: one run, a comparison, a sweep."""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import nnx

import jaxsparse
from jaxsparse import checkpoint as ckpt_lib
from jaxsparse import data as data_lib
from jaxsparse import models as models_lib
from jaxsparse import plotting


# ----------------------------------------------------------------- builders
def make_optimizer(cfg: ml_collections.ConfigDict, total_steps: int):
  """The inner optax optimizer named by `cfg.optimizer`."""
  lr: Any = cfg.learning_rate
  if cfg.get("lr_schedule", "constant") == "cosine":
    lr = optax.cosine_decay_schedule(cfg.learning_rate, total_steps)
  name = cfg.optimizer
  if name == "adam":
    return optax.adam(lr)
  if name == "adamw":
    return optax.adamw(lr, weight_decay=cfg.weight_decay)
  if name == "sgd":
    return optax.sgd(lr, momentum=cfg.momentum or None,
                     nesterov=bool(cfg.get("nesterov", False)))
  if name == "lion":
    return optax.lion(lr, weight_decay=cfg.weight_decay)
  raise ValueError(f"config.optimizer: unknown optimizer {name!r}; expected "
                   "one of adam, adamw, sgd, lion.")


_SCORES = {"magnitude": jaxsparse.magnitude, "random": jaxsparse.random,
           "saliency": jaxsparse.saliency}


def make_schedule(p: ml_collections.ConfigDict, total_steps: int):
  """The `PruningSchedule` named by `p.schedule`."""
  end = p.end_step if p.end_step >= 0 else int(total_steps * p.end_fraction)
  if p.schedule == "constant":
    return jaxsparse.constant(p.sparsity)
  if p.schedule == "one_shot":
    return jaxsparse.one_shot(p.sparsity, p.begin_step)
  if p.schedule == "polynomial":
    return jaxsparse.polynomial(
        p.sparsity, p.begin_step, end, p.frequency, p.initial_sparsity)
  if p.schedule == "iterative":
    return jaxsparse.iterative(p.fraction, p.every, p.num_rounds, p.begin_step)
  raise ValueError(f"config.pruning.schedule: unknown schedule {p.schedule!r};"
                   " expected constant, one_shot, polynomial or iterative.")


def make_allocation(p: ml_collections.ConfigDict):
  name = p.allocation
  if name == "uniform":
    return jaxsparse.uniform()
  if name == "er":
    return jaxsparse.er()
  if name == "erk":
    return jaxsparse.erk()
  if name == "global":
    return jaxsparse.global_(p.min_keep_fraction)
  raise ValueError(f"config.pruning.allocation: unknown allocation {name!r}; "
                   "expected uniform, er, erk or global.")


def make_structure(p: ml_collections.ConfigDict):
  name = p.structure
  if name == "unstructured":
    return jaxsparse.unstructured()
  if name == "n_m":
    return jaxsparse.n_m(p.n, p.m)
  if name == "block":
    return jaxsparse.block(*p.block_shape)
  if name == "channel":
    return jaxsparse.channel()
  raise ValueError(f"config.pruning.structure: unknown structure {name!r}; "
                   "expected unstructured, n_m, block or channel.")


def make_tx(config: ml_collections.ConfigDict, total_steps: int):
  opt = make_optimizer(config, total_steps)
  p = config.pruning
  if p.method == "none":
    return opt
  if p.method not in _SCORES:
    raise ValueError(f"config.pruning.method: unknown method {p.method!r}; "
                     f"expected none or one of {sorted(_SCORES)}.")
  return jaxsparse.prune(
      make_schedule(p, total_steps), score=_SCORES[p.method],
      allocation=make_allocation(p), structure=make_structure(p),
      optimizer=opt, seed=config.seed)


# ------------------------------------------------------------------- state
@dataclasses.dataclass
class Run:
  graphdef: Any
  state: dict  # {"params", "rest", "opt_state", "step"}: what is saved.


def _loss(graphdef, params, rest, batch, train: bool):
  model = nnx.merge(graphdef, params, rest)
  if train:
    model.train()
  else:
    model.eval()
  logits = model(batch["image"])
  loss = optax.softmax_cross_entropy_with_integer_labels(
      logits, batch["label"]).mean()
  _, _, new_rest = nnx.split(model, nnx.Param, ...)
  return loss, (logits, new_rest)


def make_steps(graphdef, tx):
  """Jitted pure train and eval steps."""

  @jax.jit
  def train_step(state, batch):
    (loss, (logits, rest)), grads = jax.value_and_grad(
        lambda p: _loss(graphdef, p, state["rest"], batch, True),
        has_aux=True)(state["params"])
    updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
    params = optax.apply_updates(state["params"], updates)
    acc = jnp.mean(jnp.argmax(logits, -1) == batch["label"])
    return (dict(params=params, rest=rest, opt_state=opt_state,
                 step=state["step"] + 1),
            {"loss": loss, "train_accuracy": acc})

  @jax.jit
  def eval_step(state, batch):
    loss, (logits, _) = _loss(
        graphdef, state["params"], state["rest"], batch, False)
    correct = jnp.sum(jnp.argmax(logits, -1) == batch["label"])
    return loss * batch["label"].shape[0], correct

  return train_step, eval_step


def evaluate(eval_step, state, images, labels, batch_size=1024):
  loss = correct = 0.0
  for i in range(0, len(labels), batch_size):
    b = {"image": images[i:i + batch_size], "label": labels[i:i + batch_size]}
    l, c = eval_step(state, b)
    loss += float(l)
    correct += float(c)
  return loss / len(labels), correct / len(labels)


def masks_of(state) -> Any:
  try:
    return jaxsparse.get_masks(state["opt_state"])
  except ValueError:
    return None


# --------------------------------------------------------------- one run
_NOT_IDENTITY = ("stop_after", "eval_every", "checkpoint_every", "name")


def train_and_evaluate(
    config: ml_collections.ConfigDict, workdir: str, *, progress: bool = True,
) -> dict[str, Any]:
  """Trains one model as `config` says; resumes from `workdir` if possible.

  Writes `metrics.jsonl`, `metrics.csv`, `summary.json` and checkpoints into
  `workdir`; returns the final metrics and per-layer sparsity.
  """
  os.makedirs(workdir, exist_ok=True)
  data_dir = config.get("data_dir") or None
  train_src = data_lib.load(config.dataset, "train", data_dir)
  test = data_lib.to_arrays(data_lib.load(config.dataset, "test", data_dir))
  input_shape, num_classes = data_lib.dataset_info(config.dataset)
  model = models_lib.create_model(
      config.model, num_classes=num_classes, input_shape=input_shape,
      rngs=nnx.Rngs(config.seed), **dict(config.get("model_kwargs", {})))
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)
  steps_per_epoch = len(train_src) // config.batch_size
  total = config.num_steps if config.num_steps > 0 else (
      config.num_epochs * steps_per_epoch)
  tx = make_tx(config, total)
  state = dict(params=params, rest=rest, opt_state=tx.init(params),
               step=jnp.zeros((), jnp.int32))
  train_step, eval_step = make_steps(graphdef, tx)

  identity = config.to_dict()
  for k in _NOT_IDENTITY:  # fields that do not change what is computed
    identity.pop(k, None)
  ckpt = ckpt_lib.Checkpointer(
      workdir, json.dumps(identity, sort_keys=True, default=str),
      every=config.checkpoint_every)
  start = 0
  restored = ckpt.restore(state)
  metrics_path = os.path.join(workdir, "metrics.jsonl")
  if restored is not None:
    start, state = restored
    _truncate_metrics(metrics_path, start)
  elif os.path.exists(metrics_path):
    os.remove(metrics_path)

  # Random access by step: a resumed run sees exactly the same batches.
  batches = data_lib.make_loader(
      train_src, config.batch_size, seed=config.seed, shuffle=True,
      num_epochs=None, drop_remainder=True)
  x_test, y_test = test["image"], test["label"]
  bar = _progress(total, start, progress, config.get("name", "run"))
  t_train, n_timed = 0.0, 0
  stop_at = config.get("stop_after", -1)
  with open(metrics_path, "a") as mf:
    for step in range(start, total):
      batch = batches[step]
      t0 = time.perf_counter()
      state, m = train_step(state, batch)
      if step > start:  # exclude compilation
        jax.block_until_ready(m)
        t_train += time.perf_counter() - t0
        n_timed += 1
      done = step + 1
      if done % config.eval_every == 0 or done == total:
        loss, acc = evaluate(eval_step, state, x_test, y_test)
        masks = masks_of(state)
        row = {"step": done, "loss": float(m["loss"]),
               "train_accuracy": float(m["train_accuracy"]),
               "test_loss": loss, "test_accuracy": acc,
               "sparsity": _sparsity(state["params"], masks)}
        mf.write(json.dumps(row) + "\n")
        mf.flush()
        if bar is not None:
          bar.set_postfix(acc=f"{acc:.3f}", sparsity=f"{row['sparsity']:.3f}")
      ckpt.save(done, state, force=done == total)
      if bar is not None:
        bar.update(1)
      if stop_at > 0 and done >= stop_at:  # simulated interruption (tests)
        break
  if bar is not None:
    bar.close()
  ckpt.close()
  history = [json.loads(line) for line in open(metrics_path)]
  _write_csv(os.path.join(workdir, "metrics.csv"), history)
  masks = masks_of(state)
  summ = jaxsparse.summary(state["params"], masks)
  loss, acc = evaluate(eval_step, state, x_test, y_test)
  result = {
      "name": config.get("name", "run"), "step": int(state["step"]),
      "test_accuracy": acc, "test_loss": loss,
      "sparsity": summ.pruned_sparsity,
      "steps_per_second": n_timed / t_train if t_train else float("nan"),
      "layers": summ.to_dict()["layers"], "history": history,
  }
  with open(os.path.join(workdir, "summary.json"), "w") as f:
    json.dump({k: v for k, v in result.items() if k != "history"}, f, indent=1)
  result["state"] = state
  result["summary"] = summ
  return result


def _sparsity(params, masks) -> float:
  return jaxsparse.summary(params, masks).pruned_sparsity


def _truncate_metrics(path: str, step: int) -> None:
  if not os.path.exists(path):
    return
  rows = [line for line in open(path) if json.loads(line)["step"] <= step]
  with open(path, "w") as f:
    f.writelines(rows)


def _write_csv(path: str, rows: list[dict]) -> None:
  if not rows:
    return
  with open(path, "w", newline="") as f:
    w = csv.DictWriter(f, fieldnames=list(rows[0]))
    w.writeheader()
    w.writerows(rows)


def _progress(total, start, enabled, desc):
  if not enabled:
    return None
  from tqdm.auto import tqdm  # pylint: disable=g-import-not-at-top
  return tqdm(total=total, initial=start, desc=desc, unit="step",
              dynamic_ncols=True, leave=False)


# ------------------------------------------------------- experiments
def run_experiment(config: ml_collections.ConfigDict, workdir: str,
                   progress: bool = True) -> list[dict[str, Any]]:
  """The configured run, next to a dense baseline if `config.compare_dense`,
  or a sweep over `config.sweep_sparsities`; prints a table, writes plots."""
  runs = []
  variants: list[tuple[str, ml_collections.ConfigDict]] = []
  if config.get("compare_dense", False) and config.pruning.method != "none":
    dense = ml_collections.ConfigDict(config.to_dict())
    dense.pruning.method = "none"
    variants.append(("dense", dense))
  sweep = list(config.get("sweep_sparsities", ()) or ())
  if sweep:
    for s in sweep:
      c = ml_collections.ConfigDict(config.to_dict())
      c.pruning.sparsity = float(s)
      variants.append((f"{config.pruning.method}@{s:g}", c))
  else:
    variants.append((config.get("name") or config.pruning.method, config))
  for name, c in variants:
    c = ml_collections.ConfigDict(c.to_dict())
    c.name = name
    res = train_and_evaluate(c, os.path.join(workdir, _slug(name)),
                             progress=progress)
    runs.append(res)
  table = results_table(runs)
  print(table)
  with open(os.path.join(workdir, "results.txt"), "w") as f:
    f.write(table + "\n")
  with open(os.path.join(workdir, "results.json"), "w") as f:
    json.dump([{k: v for k, v in r.items()
                if k not in ("state", "summary")} for r in runs], f, indent=1)
  plot_dir = os.path.join(workdir, "plots")
  paths = plotting.write_plots(runs, plot_dir, sweep=bool(sweep))
  print("plots: " + ", ".join(paths))
  return runs


def _slug(name: str) -> str:
  return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def results_table(runs: list[dict[str, Any]]) -> str:
  """Accuracy, total sparsity and speed per run, then per-layer sparsity."""
  lines = [f"{'run':<22}{'test acc':>10}{'sparsity':>10}{'steps/s':>10}"]
  lines.append("-" * len(lines[0]))
  for r in runs:
    lines.append(f"{r['name']:<22}{r['test_accuracy']:>10.4f}"
                 f"{r['sparsity']:>10.4f}{r['steps_per_second']:>10.1f}")
  lines.append("")
  names = [r["name"] for r in runs]
  head = f"{'layer':<28}{'shape':<14}" + "".join(f"{n[:14]:>15}" for n in names)
  lines += ["per-layer sparsity (pruned layers; biases and norms stay dense)",
            head, "-" * len(head)]
  pruned = [i for i, _ in enumerate(runs[0]["layers"])
            if any(r["layers"][i]["pruned"] for r in runs)]
  for i in pruned:
    layer = runs[0]["layers"][i]
    row = f"{layer['name'][:27]:<28}{str(tuple(layer['shape']))[:13]:<14}"
    row += "".join(f"{r['layers'][i]['sparsity']:>15.4f}" for r in runs)
    lines.append(row)
  return "\n".join(lines)
