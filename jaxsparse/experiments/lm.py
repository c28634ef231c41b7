"""The language-model experiment: dense, sparse training, post-training.

A config with `task = "lm"` (`config.lm_base`) trains a byte-level LLaMA
(`jaxsparse.lm`) on an embedded corpus, caches the dense model in
`<workdir>/dense/model.safetensors`, then

* trains the sparse methods of `pruning.method` / `sweep_methods` (gradual
  magnitude, RigL, SR-STE N:M, ...: the runner's `methods`, with
  `lm.prunable` choosing the 7 linear kernels of each block), and
* prunes the dense model with each `posttrain.methods` x `posttrain.targets`
  (`jaxsparse.posttrain`: calibration on `posttrain.calib_sequences`
  training windows),

and prints one table (method, target and achieved sparsity, validation
perplexity and bits per byte, seconds) and writes a perplexity-vs-sparsity
plot.
"""

from __future__ import annotations

import functools
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

from jaxsparse import distributed, lm, posttrain
from jaxsparse.experiments import config as config_lib
from jaxsparse.experiments import errors
from jaxsparse.experiments import methods as methods_lib
from jaxsparse.experiments import parallel as parallel_lib


def corpus(config: ml_collections.ConfigDict) -> tuple[np.ndarray, ...]:
  """(train, validation) byte tokens of `config.dataset` (fixed split)."""
  name = config.dataset
  if name == "pydoc":
    text = lm.pydoc_topics()
  elif name == "stdlib":
    text = lm.stdlib_source(max_bytes=config.lm.stdlib_bytes)
  else:
    tfds_name = name.split(":", 1)[1]
    data_dir = config.get("data_dir") or None
    try:
      train = "\n".join(lm.tfds_text(tfds_name, "train", data_dir))
      valid = "\n".join(lm.tfds_text(tfds_name, "validation", data_dir))
    except Exception as e:  # tfds raises many kinds; one clear message.
      raise errors.DataError(
          f"config.dataset={name!r}: cannot read it from data_dir "
          f"{data_dir!r} ({type(e).__name__}: {str(e)[:300]}); prepare it "
          "with tfds (array_record) first.") from None
    tok = lm.ByteTokenizer()
    return tok.encode(train), tok.encode(valid)
  train, valid = lm.split(text)
  tok = lm.ByteTokenizer()
  return tok.encode(train), tok.encode(valid)


def _evaluate(model, valid, config) -> dict[str, float]:
  return lm.evaluate(model, valid, config.lm.seq_len,
                     config.lm.eval_batch_size)


def _nll(model, x, y):
  logits = model(x)
  return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()


def train_lm(config: ml_collections.ConfigDict, train_tokens: np.ndarray,
             *, model: lm.Llama | None = None) -> tuple[lm.Llama, Any, float]:
  """Trains the LM as `config.pruning` says; returns (model, masks, steps/s).

  The method comes from the runner's `methods.build` (dense, `prune` with a
  schedule, RigL/SET, STE/SR-STE), so every method of the image runner
  applies; `lm.prunable` selects the block linear kernels.
  """
  if model is None:
    model = lm.Llama(config_lib.lm_config(config),
                     rngs=nnx.Rngs(config.seed))
  graphdef, params = nnx.split(model, nnx.Param)
  total = config_lib.total_steps(config)
  fns = methods_lib.ModelFns(
      loss=lambda p, b: _nll(nnx.merge(graphdef, p), b["image"], b["label"]),
      apply=lambda p, x: nnx.merge(graphdef, p)(x),
      input_shape=(config.lm.seq_len,), train_data=lambda: None)
  method = methods_lib.build(config, total, params, fns)
  state = dict(params=method.trainable, opt_state=method.tx.init(
      method.trainable), step=jnp.int32(0))
  # Megatron-style shards of the projections over `mesh.model`, masks and
  # optimizer slots with them; batches over `mesh.data`.
  par = parallel_lib.setup(config, state, method.trainable)
  state = par.put_state(state)

  @functools.partial(
      jax.jit, static_argnums=3, donate_argnums=0,
      in_shardings=(par.state, par.batch, par.batch),
      out_shardings=(par.state, par.replicated))
  def step(state, x, y, mask_update=None):
    extra = {} if mask_update is None else {"mask_update": mask_update}

    def loss_fn(trainable):
      p = method.forward(trainable, state["opt_state"], state["step"])
      return _nll(nnx.merge(graphdef, p), x, y)

    loss, grads = jax.value_and_grad(loss_fn)(state["params"])
    updates, opt_state = method.tx.update(grads, state["opt_state"],
                                          state["params"], **extra)
    return dict(params=optax.apply_updates(state["params"], updates),
                opt_state=opt_state, step=state["step"] + 1), loss

  batches = lm.lm_batches(train_tokens, config.batch_size, config.lm.seq_len,
                          seed=config.seed, num_batches=total)
  rows = distributed.process_rows(config.batch_size)
  seen, t_loop, n_loop = set(), 0.0, 0
  for i, (x, y) in enumerate(batches):
    t0 = time.perf_counter()
    flag = (None if method.is_update is None else
            bool(method.is_update(i)))
    x, y = (par.put_batch(a[rows], config.batch_size) for a in (x, y))
    with jax.set_mesh(par.mesh):  # mask updates: all-reduced histograms
      state, loss = step(state, x, y, flag)
    if flag in seen:
      jax.block_until_ready(loss)
      t_loop += time.perf_counter() - t0
      n_loop += 1
    seen.add(flag)
  args = (state["params"], state["opt_state"], state["step"])
  params = distributed.to_host(method.evaluate(*args))
  masks = distributed.to_host(method.masks(*args))
  nnx.update(model, jax.tree.map(jnp.asarray, params))
  return model, masks, (n_loop / t_loop if t_loop else float("nan"))


def _dense_model(config, workdir, train_tokens):
  """The dense model, trained once per config and cached in `workdir`."""
  dense = ml_collections.ConfigDict(config.to_dict())
  dense.pruning.method = "none"
  identity = json.dumps({k: dense.to_dict()[k] for k in (
      "dataset", "lm", "seed", "batch_size", "num_steps", "optimizer",
      "learning_rate", "lr_schedule", "weight_decay")}, sort_keys=True,
      default=str)
  d = os.path.join(workdir, "dense")
  os.makedirs(d, exist_ok=True)
  path = os.path.join(d, "model.safetensors")
  id_path = os.path.join(d, "identity.json")
  info_path = os.path.join(d, "train.json")
  if os.path.exists(path) and os.path.exists(id_path) and open(
      id_path).read() == identity:
    info = json.load(open(info_path)) if os.path.exists(info_path) else {}
    return lm.load_hf(d, config_lib.lm_config(config)), info
  t0 = time.perf_counter()
  model, _, sps = train_lm(dense, train_tokens)
  info = {"train_seconds": time.perf_counter() - t0, "steps_per_second": sps}
  lm.save_hf(model, d)  # d/model.safetensors and d/config.json (HF LLaMA)
  with open(info_path, "w") as f:
    json.dump(info, f)
  with open(id_path, "w") as f:  # last: marks the cache complete
    f.write(identity)
  return model, info


def _achieved(model) -> tuple[float, float]:
  """Sparsity over the prunable kernels, and over all parameters."""
  params = nnx.state(model, nnx.Param)
  keep = jax.tree.flatten_with_path(params)[0]
  n = z = n_all = z_all = 0
  for path, leaf in keep:
    v = np.asarray(leaf.get_value() if hasattr(leaf, "get_value") else leaf)
    zeros = int(np.sum(v == 0))
    n_all, z_all = n_all + v.size, z_all + zeros
    if lm.prunable(path, v):
      n, z = n + v.size, z + zeros
  return (z / n if n else 0.0), z_all / n_all


def _copy(model: lm.Llama) -> lm.Llama:
  graphdef, state = nnx.split(model)
  return nnx.merge(graphdef, jax.tree.map(jnp.array, state))


def run(config: ml_collections.ConfigDict, workdir: str,
        progress: bool = True) -> list[dict[str, Any]]:
  """Dense, sparse-trained and post-training-pruned LMs in one table."""
  del progress
  config_lib.validate(config)
  os.makedirs(workdir, exist_ok=True)
  train_tokens, valid = corpus(config)
  rows = []
  dense, info = _dense_model(config, workdir, train_tokens)
  ev = _evaluate(dense, valid, config)
  rows.append(dict(name="dense", kind="dense", target=0.0, achieved=0.0,
                   sparsity_all_params=_achieved(dense)[1],
                   seconds=info.get("train_seconds", float("nan")),
                   exact=True, **ev))
  for name, c in config_lib.variants(config):
    if c.pruning.method == "none":
      continue
    t0 = time.perf_counter()
    model, masks, _ = train_lm(c, train_tokens)
    ach, ach_all = _achieved(model)
    target = config_lib._final_target(c)  # pylint: disable=protected-access
    leaves = jax.tree.leaves(masks)
    n = sum(int(np.size(x)) for x in leaves)
    rows.append(dict(name=name, kind="train", target=target, achieved=ach,
                     sparsity_all_params=ach_all,
                     seconds=time.perf_counter() - t0,
                     exact=abs(ach - target) * n <= len(leaves) + 1e-6,
                     **_evaluate(model, valid, c)))
  t = config.posttrain
  calib, _ = next(lm.lm_batches(train_tokens, t.calib_sequences,
                                config.lm.seq_len, seed=config.seed + 1,
                                num_batches=1))
  skipped: list[str] = []
  for method in t.methods:
    owl = method.startswith("owl_")
    base = method[4:] if owl else method
    for target in t.targets:
      sparsity, nm = config_lib.parse_target(target)
      if owl and nm is not None:
        skipped.append(f"{method}@{target}")
        continue  # OWL spreads an unstructured target over blocks
      model = _copy(dense)
      t0 = time.perf_counter()
      model, masks, report = posttrain.prune(
          model, calib, method=base, sparsity=sparsity, nm=nm, owl=owl,
          owl_m=t.owl_m, owl_lambda=t.owl_lambda, blocksize=t.blocksize,
          percdamp=t.percdamp)
      secs = time.perf_counter() - t0
      ach, ach_all = _achieved(model)
      want = sparsity if nm is None else 1.0 - nm[0] / nm[1]
      rows.append(dict(name=f"{method}@{target}", kind="posttrain",
                       target=want, achieved=ach,
                       sparsity_all_params=ach_all, seconds=secs,
                       exact=bool(report.exact),
                       **_evaluate(model, valid, config)))
  table = results_table(rows)
  if skipped:
    table += ("\nnot run: " + ", ".join(skipped) + " (OWL sets per-block "
              "unstructured sparsities; it has no N:M form)")
  print(table)
  with open(os.path.join(workdir, "results.txt"), "w") as f:
    f.write(table + "\n")
  with open(os.path.join(workdir, "results.json"), "w") as f:
    json.dump(rows, f, indent=1)
  path = _plot(rows, os.path.join(workdir, "plots"))
  print(f"plots: {path}")
  bad = [r["name"] for r in rows if not r["exact"]]
  if bad:
    raise errors.ShortfallError(
        "delivered sparsity differs from the target: " + ", ".join(bad))
  return rows


def results_table(rows: list[dict[str, Any]]) -> str:
  head = (f"{'run':<24}{'target':>8}{'achieved':>10}{'all params':>11}"
          f"{'val ppl':>10}{'bits/byte':>11}{'seconds':>9}{'exact':>7}")
  lines = [head, "-" * len(head)]
  for r in rows:
    lines.append(
        f"{r['name']:<24}{r['target']:>8.4f}{r['achieved']:>10.4f}"
        f"{r['sparsity_all_params']:>11.4f}{r['perplexity']:>10.3f}"
        f"{r['bits_per_byte']:>11.4f}{r['seconds']:>9.1f}"
        f"{'yes' if r['exact'] else 'NO':>7}")
  lines.append("target / achieved: sparsity of the block linear kernels; "
               "all params: embeddings, head and norms included; val ppl: "
               "validation perplexity (bytes); seconds: training or pruning")
  return "\n".join(lines)


def _plot(rows: list[dict[str, Any]], outdir: str) -> str:
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  os.makedirs(outdir, exist_ok=True)
  fig, ax = plt.subplots(figsize=(6, 4))
  dense = next(r for r in rows if r["kind"] == "dense")
  ax.axhline(dense["perplexity"], color="k", ls="--", lw=1, label="dense")
  groups: dict[str, list] = {}
  for r in rows:
    if r["kind"] == "dense":
      continue
    key = r["name"].split("@")[0]
    nm = ":" in r["name"]
    groups.setdefault(key + (" (N:M)" if nm else ""), []).append(r)
  for key, rs in sorted(groups.items()):
    rs = sorted(rs, key=lambda r: r["achieved"])
    ax.plot([r["achieved"] for r in rs], [r["perplexity"] for r in rs],
            "o-" if "N:M" not in key else "s", label=key)
  ax.set_xlabel("sparsity of the block linear layers")
  ax.set_ylabel("validation perplexity")
  ax.set_yscale("log")
  ax.legend(fontsize=7)
  fig.tight_layout()
  path = os.path.join(outdir, "perplexity_vs_sparsity.png")
  fig.savefig(path, dpi=120)
  plt.close(fig)
  return path


__all__ = ("corpus", "results_table", "run", "train_lm")
