"""Training loop of the experiment runner: one run, a comparison, a sweep."""

from __future__ import annotations

import csv
import dataclasses
import functools
import json
import math
import os
import sys
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import nnx

import jaxsparse
from jaxsparse.experiments import activation_density as act_density
from jaxsparse.experiments import checkpoint as ckpt_lib
from jaxsparse.experiments import config as config_lib
from jaxsparse.experiments import data as data_lib
from jaxsparse.experiments import errors, plotting
from jaxsparse.experiments import methods as methods_lib
from jaxsparse.experiments import models as models_lib
from jaxsparse.experiments import parallel as parallel_lib

# Builders live in `methods`; re-exported for existing callers.
make_optimizer = methods_lib.make_optimizer
make_schedule = methods_lib.make_schedule
make_allocation = methods_lib.make_allocation
make_structure = methods_lib.make_structure
make_tx = methods_lib.make_tx


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


def make_steps(graphdef, method: methods_lib.Method,
               par: parallel_lib.Parallel | None = None):
  """Jitted pure train and eval steps (with `par`'s shardings if given:
  state as placed, batches over `data`, metrics and exports replicated)."""
  tx = method.tx
  if par is None:
    jit, jit_train = jax.jit, functools.partial(
        jax.jit, static_argnames="mask_update")
    jit_eval = jit_export = jit
  else:
    jit_train = functools.partial(
        jax.jit, static_argnums=2,
        in_shardings=(par.state, par.batch),
        out_shardings=(par.state, par.replicated))
    jit_eval = functools.partial(
        jax.jit, in_shardings=(par.state, par.batch),
        out_shardings=par.replicated)
    jit_export = functools.partial(
        jax.jit, in_shardings=(par.state,), out_shardings=par.replicated)

  @jit_train
  def train_step(state, batch, mask_update=None):
    """One step; `mask_update`: `method.is_update(step)`, or None."""
    extra = {} if mask_update is None else {"mask_update": mask_update}

    def loss_fn(trainable):
      params = method.forward(trainable, state["opt_state"], state["step"])
      return _loss(graphdef, params, state["rest"], batch, True)

    (loss, (logits, rest)), grads = jax.value_and_grad(
        loss_fn, has_aux=True)(state["params"])
    updates, opt_state = tx.update(grads, state["opt_state"], state["params"],
                                   **extra)
    params = optax.apply_updates(state["params"], updates)
    acc = jnp.mean(jnp.argmax(logits, -1) == batch["label"])
    return (dict(params=params, rest=rest, opt_state=opt_state,
                 step=state["step"] + 1),
            {"loss": loss, "train_accuracy": acc})

  if par is not None:
    train_step = _under_mesh(par.mesh, train_step)

  @jit_eval
  def eval_step(state, batch):
    """Summed loss and correct count over the rows of weight 1."""
    params = method.evaluate(state["params"], state["opt_state"],
                             state["step"])
    model = nnx.merge(graphdef, params, state["rest"])
    model.eval()
    logits = model(batch["image"])
    w = batch["weight"]
    loss = optax.softmax_cross_entropy_with_integer_labels(
        logits, batch["label"])
    correct = (jnp.argmax(logits, -1) == batch["label"]).astype(jnp.float32)
    return jnp.sum(loss * w), jnp.sum(correct * w)

  @jit_export
  def export(state):
    """Evaluation params, masks and the global PQ index of the weights."""
    args = (state["params"], state["opt_state"], state["step"])
    params, masks = method.evaluate(*args), method.masks(*args)
    pqi = jaxsparse.pai.pq_index_tree(params, masks, scope="global")
    return params, masks, pqi

  return train_step, eval_step, export


def _to_host(fn):
  """`fn` with numpy results (replicated arrays, readable on every
  process of a multi-process run)."""
  return lambda *a: jaxsparse.distributed.to_host(fn(*a))


def _under_mesh(mesh, fn):
  """`fn` traced and run under `jax.set_mesh(mesh)`: the mask updates'
  threshold searches then use histograms small enough to all-reduce."""
  def call(state, batch, mask_update=None):
    with jax.set_mesh(mesh):  # positional: jit with in_shardings
      return fn(state, batch, mask_update)
  return call


def _mask_update(method: methods_lib.Method, step: int) -> bool | None:
  """`train_step`'s `mask_update`, decided on the host (see `Method`)."""
  return None if method.is_update is None else bool(method.is_update(step))


def evaluate(eval_step, state, images, labels, batch_size=1024,
             par: parallel_lib.Parallel | None = None):
  """Mean loss and accuracy over a split (padded to the mesh's `data`)."""
  loss = correct = 0.0
  multiple = 1 if par is None else par.data
  batch_size = -(-batch_size // multiple) * multiple
  for b in parallel_lib.eval_batches(images, labels, batch_size, multiple):
    if par is not None:
      b = par.put_global(b)
    batch_loss, c = eval_step(state, b)
    loss += float(batch_loss)
    correct += float(c)
  return loss / len(labels), correct / len(labels)


# --------------------------------------------------------------- one run
# Not in a run's identity: a run resumes on another mesh (resharded).
_NOT_IDENTITY = ("stop_after", "eval_every", "checkpoint_every", "name",
                 "mesh",
                 "activations",
                 "tensorboard")


def init_model(config: ml_collections.ConfigDict):
  """(graphdef, params, rest) of the configured model, seeded."""
  input_shape, num_classes = data_lib.dataset_info(config.dataset)
  model = models_lib.create_model(
      config.model, num_classes=num_classes, input_shape=input_shape,
      rngs=nnx.Rngs(config.seed), **config_lib.model_kwargs(config))
  return nnx.split(model, nnx.Param, ...)


def model_fns(config, graphdef, rest, train_data) -> methods_lib.ModelFns:
  """Inference-mode loss and apply functions of the model's params."""
  input_shape, _ = data_lib.dataset_info(config.dataset)

  def loss(params, batch):
    return _loss(graphdef, params, rest, batch, False)[0]

  def apply(params, x):
    model = nnx.merge(graphdef, params, rest)
    model.eval()
    return model(x)

  return methods_lib.ModelFns(
      loss=loss, apply=apply, input_shape=tuple(input_shape),
      train_data=train_data)


def train_and_evaluate(
    config: ml_collections.ConfigDict, workdir: str, *, progress: bool = True,
    init_params: Any = None, initial_masks: Any = None,
    save_params_at: int = -1, start_step: int = 0,
) -> dict[str, Any]:
  """Trains one model as `config` says; resumes from `workdir` if possible.

  Writes `metrics.jsonl`, `metrics.csv`, `summary.json` and checkpoints into
  `workdir`; returns the final metrics and per-layer sparsity. The keyword
  arguments serve the IMP/SAP drivers: start from `init_params` with fixed
  `initial_masks`, keep the params after step `save_params_at` (returned
  as `rewind_params`, also after a resume), or start at step `start_step`
  (schedules, learning rate and batches continue from there).
  """
  config_lib.plan_of(config)  # a bad config fails before any work
  os.makedirs(workdir, exist_ok=True)
  data_dir = config.get("data_dir") or None
  train_src = data_lib.load(config.dataset, "train", data_dir)
  test = data_lib.to_arrays(data_lib.load(config.dataset, "test", data_dir))
  graphdef, params, rest = init_model(config)
  if init_params is not None:
    params = init_params
  total = config_lib.total_steps(config)
  fns = model_fns(config, graphdef, rest,
                  lambda: data_lib.to_arrays(train_src))  # only if needed
  method = methods_lib.build(config, total, params, fns, initial_masks)
  opt_state = method.tx.init(method.trainable)
  if start_step:
    opt_state = optax.tree_utils.tree_set(
        opt_state, count=jnp.asarray(start_step, jnp.int32))
  state = dict(params=method.trainable, rest=rest, opt_state=opt_state,
               step=jnp.asarray(start_step, jnp.int32))
  # Masks, packed masks and optimizer slots sharded like their params.
  par = parallel_lib.setup(config, state, method.trainable)
  state = par.put_state(state)
  train_step, eval_step, export = make_steps(graphdef, method, par)
  export = _to_host(export)
  main = jax.process_index() == 0  # writes metrics, tables and plots

  identity = config.to_dict()
  for k in _NOT_IDENTITY:  # fields that do not change what is computed
    identity.pop(k, None)
  identity["start_step"] = start_step
  ckpt = ckpt_lib.Checkpointer(
      workdir, json.dumps(identity, sort_keys=True, default=str),
      every=config.checkpoint_every)
  start = start_step
  restored = ckpt.restore(state)
  metrics_path = os.path.join(
      workdir, "metrics.jsonl" if main else
      f"metrics.process{jax.process_index()}.jsonl")
  if restored is not None:
    start, state = restored
    _truncate_metrics(metrics_path, start)
  elif os.path.exists(metrics_path):
    os.remove(metrics_path)
  rewind_path = os.path.join(workdir, "rewind_params.npz")

  # Random access by step: a resumed run sees exactly the same batches.
  batches = data_lib.make_loader(
      train_src, config.batch_size, seed=config.seed, shuffle=True,
      num_epochs=None, drop_remainder=True,
      rows=jaxsparse.distributed.process_rows(config.batch_size))
  x_test, y_test = test["image"], test["label"]
  bar = _progress(total - start_step, start - start_step, progress,
                  config.get("name", "run"))
  t_train, n_timed = 0.0, 0  # the jitted step alone
  t_loop, n_loop = 0.0, 0  # the whole loop: data, step, evaluation, saving
  stop_at = config.get("stop_after", -1)
  prev_masks = export(state)[1]  # for the mask change between evaluations
  act_rec = act_density.Recorder(config, graphdef, workdir)
  tb = _tensorboard(workdir, config)
  with open(metrics_path, "a") as mf:
    seen = set()  # programs called so far (update and non-update steps)
    for step in range(start, total):
      t_start = time.perf_counter()
      batch = par.put_batch(batches[step], config.batch_size)
      flag = _mask_update(method, step)
      compiled = flag in seen
      seen.add(flag)
      t0 = time.perf_counter()
      state, m = train_step(state, batch, mask_update=flag)
      if compiled:  # exclude each program's compilation
        jax.block_until_ready(m)
        t_train += time.perf_counter() - t0
        n_timed += 1
      done = step + 1
      if done == save_params_at:
        _save_tree(rewind_path, export(state)[0])
      if done % config.eval_every == 0 or done == total:
        loss, acc = evaluate(eval_step, state, x_test, y_test, par=par)
        params_now, masks, pqi = export(state)
        row = {"step": done, "loss": float(m["loss"]),
               "train_accuracy": float(m["train_accuracy"]),
               "test_loss": loss, "test_accuracy": acc,
               "sparsity": _sparsity(params_now, masks),
               "pqi": float(pqi),
               "mask_change": _mask_change(prev_masks, masks)}
        prev_masks = masks
        act_rec.maybe_record(done, total, params_now, state["rest"], x_test)
        mf.write(json.dumps(row) + "\n")
        mf.flush()
        if tb is not None:
          for k, v in row.items():
            if k != "step":
              tb.add_scalar(k, v, done)
          tb.flush()
        if bar is not None:
          bar.set_postfix(acc=f"{acc:.3f}", sparsity=f"{row['sparsity']:.3f}")
      ckpt.save(done, state, force=done == total)
      if bar is not None:
        bar.update(1)
      if compiled:
        t_loop += time.perf_counter() - t_start
        n_loop += 1
      if stop_at > 0 and done >= stop_at:  # simulated interruption (tests)
        break
  if bar is not None:
    bar.close()
  if tb is not None:
    tb.close()
  ckpt.close()
  history = [json.loads(line) for line in open(metrics_path)]
  if main:
    _write_csv(os.path.join(workdir, "metrics.csv"), history)
  params_now, masks, pqi = export(state)
  summ = jaxsparse.summary(params_now, masks)
  loss, acc = evaluate(eval_step, state, x_test, y_test, par=par)
  memory = method.memory
  if memory is None:
    memory = _stored_fraction(summ, config.pruning.get("mask_cost", "none"))
  target = target_of(config, method) if method.masks is not None else None
  result = {
      "name": config.get("name", "run"), "step": int(state["step"]),
      "test_accuracy": acc, "test_loss": loss,
      "target_sparsity": target, "achieved_sparsity": summ.pruned_sparsity,
      "sparsity": summ.pruned_sparsity,
      "sparsity_all_params": summ.sparsity,
      "memory": memory, "pqi": float(pqi),
      "steps_per_second": n_loop / t_loop if t_loop else float("nan"),
      "step_only_per_second": (n_timed / t_train if t_train
                               else float("nan")),
      "layers": summ.to_dict()["layers"], "history": history,
  }
  result["activation_density"] = act_rec.finish()
  # An unfinished run (stop_after) has not reached its target yet.
  result["shortfalls"] = (shortfalls(config, result)
                          if result["step"] >= total else [])
  summary_path = os.path.join(
      workdir, "summary.json" if main else
      f"summary.process{jax.process_index()}.json")
  if not n_loop and os.path.exists(summary_path):
    # Nothing was trained (a finished run, rerun): keep the timings that
    # were measured, instead of writing NaN over them.
    with open(summary_path) as f:
      old = json.load(f)
    for k in ("steps_per_second", "step_only_per_second"):
      if k in old:
        result[k] = old[k]
  with open(summary_path, "w") as f:
    json.dump({k: v for k, v in result.items() if k != "history"}, f, indent=1)
  result["state"] = state
  result["summary"] = summ
  result["params"] = params_now
  result["masks"] = masks
  if save_params_at > 0:
    if not os.path.exists(rewind_path):
      raise ValueError(f"save_params_at={save_params_at} was never reached "
                       f"(training ends at step {total}).")
    result["rewind_params"] = _load_tree(rewind_path, params_now)
  return result


def target_of(config: ml_collections.ConfigDict, method) -> float | None:
  """The sparsity a run was asked for over its prunable layers (None: no
  target, e.g. parameter sharing or SAP's adaptive rounds)."""
  p = config.pruning
  if p.method == "rps":
    return None
  if p.method == "static":  # driver rounds: whatever masks they were given
    return None
  if float(p.get("memory_fraction", -1.0)) > 0:
    return float(p.sparsity)  # `methods.build` set it from the budget
  return config_lib._final_target(config)  # pylint: disable=protected-access


def shortfalls(config: ml_collections.ConfigDict, result: dict) -> list[str]:
  """Layers (or the total, for a global ranking) whose zeros differ from
  the target's count by more than one weight (one group for blocks)."""
  target = result.get("target_sparsity")
  if target is None:
    return []
  if config.pruning.method == "static":
    return []
  plan = config_lib.plan_of(config, target)
  got = {row["name"]: row for row in result["layers"]}
  out = []
  tot_zeros = tot_want = tot_n = 0
  for layer in plan.layers:
    row = got.get(layer.path)
    if row is None:
      continue
    zeros, n = row["zeros"], row["params"]
    if layer.target is None:
      if row["pruned"] and zeros:
        out.append(f"{result['name']}: {layer.path} should be dense, has "
                   f"{zeros} zeros of {n}")
      continue
    want = math.floor(layer.target * (n // layer.group) + 0.5) * layer.group
    tot_zeros, tot_want, tot_n = tot_zeros + zeros, tot_want + want, tot_n + 1
    if plan.per_layer and abs(zeros - want) > layer.group:
      out.append(f"{result['name']}: {layer.path} has {zeros} zeros of {n} "
                 f"({zeros / n:.4f}), target {layer.target:.4f} "
                 f"({want} zeros)")
  if not plan.per_layer and abs(tot_zeros - tot_want) > max(tot_n, 1):
    out.append(f"{result['name']}: {tot_zeros} zeros in the pruned layers, "
               f"target {tot_want} ({target:.4f})")
  return out


def _tensorboard(workdir: str, config: ml_collections.ConfigDict):
  """A tensorboardX writer in `workdir/tensorboard` when tensorboardX is
  installed and `config.tensorboard` is on (no TensorFlow needed)."""
  if not config.get("tensorboard", True):
    return None
  try:
    from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
  except ImportError:
    return None
  return SummaryWriter(os.path.join(workdir, "tensorboard"))


def _save_tree(path: str, tree: Any) -> None:
  leaves = {f"a{i}": np.asarray(x) for i, x in enumerate(jax.tree.leaves(tree))}
  tmp = path + f".tmp{jax.process_index()}.npz"
  np.savez(tmp, **leaves)
  os.replace(tmp, path)


def _load_tree(path: str, like: Any) -> Any:
  with np.load(path) as z:
    leaves = [jnp.asarray(z[f"a{i}"]) for i in range(len(z.files))]
  return jax.tree.unflatten(jax.tree.structure(like), leaves)


def _mask_change(old: Any, new: Any) -> float:
  """Fraction of mask entries that changed (Hamming distance / entries)."""
  if old is None or new is None:
    return 0.0
  diff = jax.tree.leaves(jaxsparse.dst.mask_hamming(old, new))
  total = sum(int(np.size(x)) for x in jax.tree.leaves(new))
  return float(sum(int(d) for d in diff)) / max(total, 1)


def _stored_fraction(summ, mask_cost: str) -> float:
  """Stored floats per prunable weight: non-zeros plus the mask's cost."""
  n = sum(layer.params for layer in summ.rows if layer.pruned)
  if not n:
    return 1.0
  nnz = n - sum(layer.zeros for layer in summ.rows if layer.pruned)
  if summ.pruned_sparsity == 0 or mask_cost == "none":
    return nnz / n
  extra = n / 32.0 if mask_cost == "bitmap" else float(nnz)
  return (nnz + extra) / n


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
  """A tqdm bar on a terminal; off when stderr is a file or a pipe (logs)."""
  if not enabled or not sys.stderr.isatty():
    return None
  from tqdm.auto import tqdm  # pylint: disable=g-import-not-at-top
  return tqdm(total=total, initial=start, desc=desc, unit="step",
              dynamic_ncols=True, leave=False)


# ------------------------------------------------------- experiments
def run_experiment(config: ml_collections.ConfigDict, workdir: str,
                   progress: bool = True) -> list[dict[str, Any]]:
  """The configured run(s): a dense baseline if `config.compare_dense`,
  sweeps over `sweep_methods` x (`sweep_sparsities` or `sweep_memory`), or
  an IMP/SAP driver (`config.driver`); prints a table, writes plots."""
  config_lib.validate(config)  # every run, before any work
  if config_lib.is_lm(config):
    from jaxsparse.experiments import lm as lm_runner  # pylint: disable=g-import-not-at-top
    return lm_runner.run(config, workdir, progress=progress)
  if config.get("driver", "none") != "none":
    runs = run_driver(config, workdir, progress=progress)
    sweep = True
  else:
    runs = []
    for name, c in config_lib.variants(config):
      c.name = name
      runs.append(train_and_evaluate(c, os.path.join(workdir, _slug(name)),
                                     progress=progress))
    sweep = len(runs) > 2 or bool(config.get("sweep_sparsities", ())
                                  or config.get("sweep_memory", ()))
  if jax.process_index() == 0:  # one process writes tables and plots
    table = results_table(runs)
    print(table)
    with open(os.path.join(workdir, "results.txt"), "w") as f:
      f.write(table + "\n")
    with open(os.path.join(workdir, "results.json"), "w") as f:
      json.dump([{k: v for k, v in r.items() if k not in _NOT_JSON}
                 for r in runs], f, indent=1)
    plot_dir = os.path.join(workdir, "plots")
    x_key = "memory" if config.get("sweep_memory", ()) else "sparsity"
    paths = plotting.write_plots(runs, plot_dir, sweep=sweep, x_key=x_key)
    print("plots: " + ", ".join(paths))
  short = [s for r in runs for s in r.get("shortfalls", ())]
  if short:
    raise errors.ShortfallError(
        "delivered sparsity differs from the target by more than one weight "
        "(or group) per layer:\n" + "\n".join(f"  - {s}" for s in short))
  return runs


_NOT_JSON = ("state", "summary", "params", "masks", "rewind_params")


def run_driver(config: ml_collections.ConfigDict, workdir: str,
               progress: bool = True) -> list[dict[str, Any]]:
  """Lottery-ticket IMP or SAP rounds, one resumable run directory each.

  Every round trains with fixed masks from the weights the driver rewinds
  to (`init_params`, or for IMP with `pruning.rewind_step = k` the weights
  after step k of the dense run, training then resuming at step k).
  """
  driver = config.driver
  if driver not in ("imp", "sap"):
    raise ValueError(f"config.driver: unknown driver {driver!r}; expected "
                     "none, imp or sap.")
  p = config.pruning
  _, init_params, _ = init_model(config)
  runs: list[dict[str, Any]] = []

  def train_fn(params, masks, save_step=None, start_step=0):
    c = ml_collections.ConfigDict(config.to_dict())
    c.pruning.method = "static"
    c.name = f"{driver}_{len(runs):02d}"
    res = train_and_evaluate(
        c, os.path.join(workdir, c.name), progress=progress,
        init_params=params, initial_masks=masks,
        save_params_at=save_step or -1, start_step=start_step)
    runs.append(res)
    metrics = {k: res[k] for k in ("test_accuracy", "sparsity", "pqi")}
    if save_step:
      return res["params"], metrics, res["rewind_params"]
    return res["params"], metrics

  if driver == "imp":
    jaxsparse.lottery.run(train_fn, init_params, config.driver_rounds,
                      p.rewind_step, fraction=p.imp_fraction, scope=p.scope)
  else:
    jaxsparse.pai.run_sap(train_fn, init_params, config.driver_rounds,
                      p=p.sap_p, q=p.sap_q, eta_r=p.sap_eta_r,
                      gamma=p.sap_gamma, beta=p.sap_beta, scope=p.scope)
  return runs


def _slug(name: str) -> str:
  return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def results_table(runs: list[dict[str, Any]]) -> str:
  """Accuracy, total sparsity and speed per run, then per-layer sparsity."""
  fmt = lambda x, w, d: f"{'-':>{w}}" if x is None else f"{x:>{w}.{d}f}"
  lines = [f"{'run':<22}{'test acc':>10}{'target':>9}{'achieved':>10}"
           f"{'all params':>11}{'memory':>9}{'PQI':>8}{'steps/s':>9}"
           f"{'step/s':>9}"]
  lines.append("-" * len(lines[0]))
  for r in runs:
    lines.append(
        f"{r['name']:<22}{r['test_accuracy']:>10.4f}"
        f"{fmt(r.get('target_sparsity'), 9, 4)}"
        f"{r.get('achieved_sparsity', r['sparsity']):>10.4f}"
        f"{fmt(r.get('sparsity_all_params'), 11, 4)}"
        f"{r.get('memory', 1.0):>9.4f}{r.get('pqi', float('nan')):>8.4f}"
        f"{r['steps_per_second']:>9.1f}"
        f"{fmt(r.get('step_only_per_second'), 9, 1)}")
  lines.append("target / achieved: sparsity of the prunable layers asked for "
               "and delivered ('-': no target); all params: over every "
               "parameter, biases and norms included")
  lines.append("steps/s: the whole training loop (data, step, evaluation, "
               "checkpoints); step/s: the jitted step alone; both leave out "
               "each program's first call (compilation)")
  lines.append("memory: stored floats per prunable weight (non-zeros plus "
               "the mask's cost, or the RPS memory)")
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
