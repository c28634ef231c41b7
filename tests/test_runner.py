"""The experiment runner: configs, overrides, resume, errors, plots."""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from jaxsparse._src.core.masks import unwrap
from jaxsparse.experiments import checkpoint as ckpt_lib
from jaxsparse.experiments import config as config_lib
from jaxsparse.experiments import data as data_lib
from jaxsparse.experiments import methods, train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = os.path.join(ROOT, "configs")


def _load_config(name):
  return config_lib.load(os.path.join(CONFIGS, f"{name}.py"))


def _small(config, data_dir):
  config.data_dir = str(data_dir)
  config.model_kwargs.hidden = (32,)
  config.num_steps = 40
  config.num_epochs = -1
  config.eval_every = 20
  config.checkpoint_every = 10
  config.pruning.end_step = 20
  config.pruning.frequency = 10
  return config


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  d = tmp_path_factory.mktemp("tfds")
  data_lib.prepare_digits(str(d))
  return d


# Image-classifier configs; the language-model ones (task "lm": lm_*, the
# scaling study) are exercised by tests/test_lm_runner.py and
# tests/test_scaling.py.
_CONFIG_NAMES = sorted(
    f[:-3] for f in os.listdir(CONFIGS) if f.endswith(".py")
    and not config_lib.is_lm(config_lib.load(os.path.join(CONFIGS, f))))


def _kind(c):
  """What a config's training step depends on, beyond sizes and data."""
  q = c.pruning
  return (c.model, c.driver, q.method, q.schedule, q.allocation, q.structure,
          q.mapper, q.srste_lambda > 0, tuple(c.get("sweep_methods") or ()))


def _new_kinds():
  """Per config, the step kinds (`_kind`) of its variants that no config
  before it (in name order) already trains: each kind is compiled once in
  the suite. Every config still validates and plans its runs
  (`test_config.test_every_shipped_config_validates`)."""
  seen, out = set(), {}
  for name in _CONFIG_NAMES:
    config = _load_config(name)
    kinds = {_kind(config)}
    if config.get("sweep_variants"):
      kinds = {_kind(c) for _, c in config_lib.variants(config)}
    out[name] = kinds - seen
    seen |= kinds
  return out


_NEW_KINDS = _new_kinds()


@pytest.mark.parametrize("name", [n for n in _CONFIG_NAMES if _NEW_KINDS[n]])
def test_every_config_builds_and_takes_a_step(name):
  config = _load_config(name)
  config.model_kwargs.hidden = (16,)
  if "roast" in str(config.get("sweep_variants", ())):
    config.model_kwargs.hidden = (256,)  # memory holds a 32x32 ROAST tile
  config.pruning.pai_rounds = 3
  graphdef, params, rest = train.init_model(config)
  rng = np.random.RandomState(0)
  shape, _ = data_lib.dataset_info(config.dataset)
  x = rng.rand(30, *shape).astype(np.float32)
  y = np.repeat(np.arange(10), 3).astype(np.int32)
  fns = train.model_fns(config, graphdef, rest,
                        lambda: {"image": x, "label": y})
  p = config.pruning
  cands = []
  for method in (config.get("sweep_methods") or [p.method]):
    c = ml_collections.ConfigDict(config.to_dict())
    c.pruning.method = "static" if config.driver != "none" else method
    cands.append(c)
  if config.get("sweep_variants"):  # each new kind of variant (first seed)
    kinds = {}
    for _, c in config_lib.variants(config):
      if _kind(c) in _NEW_KINDS[name]:
        kinds.setdefault(_kind(c), c)
    cands = list(kinds.values())
  for c in cands:
    c.pruning.pai_samples_per_class = 3
    if c.pruning.method == "rps" and c.pruning.memory_fraction <= 0:
      c.pruning.memory_fraction = 0.1
    m = methods.build(c, 1000, params, fns)
    state = dict(params=m.trainable, rest=rest,
                 opt_state=m.tx.init(m.trainable), step=jnp.int32(0))
    train_step, eval_step, export = train.make_steps(graphdef, m)
    state, metrics = train_step(state, {"image": x[:8], "label": y[:8]})
    assert np.isfinite(float(metrics["loss"]))
    _, masks, pqi = export(state)
    assert 0.0 <= float(pqi) <= 1.0


def test_unknown_method_is_a_clear_error():
  config = _load_config("default")
  config.pruning.allocation = "bogus"
  with pytest.raises(ValueError, match="config.pruning.allocation"):
    train.make_tx(config, 100)
  config = _load_config("default")
  config.pruning.method = "bogus"
  with pytest.raises(ValueError, match="config.pruning.method.*bogus"):
    train.run_experiment(config, "/nonexistent", progress=False)
  config = _load_config("default")
  config.driver = "bogus"
  with pytest.raises(ValueError, match="config.driver"):
    train.run_driver(config, "/nonexistent", progress=False)


@pytest.mark.parametrize("name", ["default", "rigl"])
def test_resume_matches_uninterrupted_run_bit_for_bit(tmp_path, data_dir,
                                                      name):
  full = _small(_load_config(name), data_dir)
  a = train.train_and_evaluate(full, str(tmp_path / "a"), progress=False)

  part = _small(_load_config(name), data_dir)
  part.stop_after = 25  # interrupted after step 25; last checkpoint at 20
  b0 = train.train_and_evaluate(part, str(tmp_path / "b"), progress=False)
  assert int(b0["state"]["step"]) == 25
  resumed = _small(_load_config(name), data_dir)
  b = train.train_and_evaluate(resumed, str(tmp_path / "b"), progress=False)
  assert int(b["state"]["step"]) == 40
  la = jax.tree.leaves(a["state"])
  lb = jax.tree.leaves(b["state"])
  assert len(la) == len(lb)
  for x, y in zip(la, lb, strict=False):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
  # masks and schedule counter came back too, and sparsity is exact.
  assert a["sparsity"] == pytest.approx(0.9, abs=1e-3)
  steps = [r["step"] for r in b["history"]]
  assert steps == sorted(set(steps))  # no duplicated metric rows


def test_mismatched_checkpoint_is_refused_and_kept(tmp_path, data_dir):
  config = _small(_load_config("default"), data_dir)
  config.num_steps = 10
  config.pruning.end_step = 5
  train.train_and_evaluate(config, str(tmp_path), progress=False)
  before = sorted(os.listdir(tmp_path / "checkpoints"))
  other = _small(_load_config("default"), data_dir)
  other.num_steps = 10
  other.pruning.end_step = 5
  other.model_kwargs.hidden = (16,)
  with pytest.raises(ckpt_lib.CheckpointError, match="different config"):
    train.train_and_evaluate(other, str(tmp_path), progress=False)
  assert sorted(os.listdir(tmp_path / "checkpoints")) == before


def test_corrupt_checkpoint_gives_clear_error(tmp_path, data_dir):
  config = _small(_load_config("default"), data_dir)
  config.num_steps = 10
  config.pruning.end_step = 5
  train.train_and_evaluate(config, str(tmp_path), progress=False)
  step_dir = tmp_path / "checkpoints" / "10"
  for root, _, files in os.walk(step_dir):
    for f in files:
      if "manifest" in f or f.endswith(".ocdbt") or "d" == root[-1:]:
        with open(os.path.join(root, f), "wb") as fh:
          fh.write(b"garbage")
  with pytest.raises(ckpt_lib.CheckpointError, match="cannot restore"):
    train.train_and_evaluate(config, str(tmp_path), progress=False)
  assert step_dir.exists()  # never deleted or overwritten


def test_experiment_writes_table_metrics_and_plots(tmp_path, data_dir, capsys):
  config = _small(_load_config("sweep"), data_dir)
  config.sweep_sparsities = (0.5, 0.9)
  config.num_steps = 20
  config.pruning.end_step = 10  # last mask update at step 10 < 20
  runs = train.run_experiment(config, str(tmp_path), progress=False)
  out = capsys.readouterr().out
  assert [r["name"] for r in runs] == ["dense", "magnitude@0.5",
                                       "magnitude@0.9"]
  assert "test acc" in out and "per-layer sparsity" in out
  for r, s in zip(runs, (0.0, 0.5, 0.9), strict=False):
    assert r["sparsity"] == pytest.approx(s, abs=1e-3)
    for layer in r["layers"]:
      if layer["pruned"] and s:
        assert layer["zeros"] == int(np.floor(s * layer["params"] + 0.5))
  for f in ("training.png", "layer_sparsity.png", "accuracy_vs_sparsity.png"):
    assert (tmp_path / "plots" / f).stat().st_size > 1000
  rows = [json.loads(x) for x in open(tmp_path / "dense" / "metrics.jsonl")]
  assert rows[-1]["step"] == 20
  assert (tmp_path / "magnitude_0.9" / "metrics.csv").exists()


def _main(*args, cwd=ROOT):
  return subprocess.run(
      [sys.executable, "-m", "jaxsparse.experiments.main", *args],
      capture_output=True, text=True, cwd=cwd, timeout=300)


def test_command_line_overrides_and_bad_key(tmp_path, data_dir):
  r = _main("--config", os.path.join(CONFIGS, "default.py"),
            "--workdir", str(tmp_path / "w"), "--noprogress",
            f"--config.data_dir={data_dir}", "--config.num_steps=10",
            "--config.num_epochs=-1",
            "--config.compare_dense=False", "--config.pruning.sparsity=0.5",
            "--config.pruning.end_step=5", "--config.pruning.frequency=5")
  assert r.returncode == 0, r.stderr[-2000:]
  assert "magnitude" in r.stdout
  summary = json.load(open(tmp_path / "w" / "magnitude" / "summary.json"))
  assert summary["sparsity"] == pytest.approx(0.5, abs=1e-3)
  assert summary["step"] == 10

  r = _main("--config", os.path.join(CONFIGS, "default.py"),
            "--workdir", str(tmp_path / "x"), "--config.pruning.sparsty=0.5")
  assert r.returncode != 0
  assert "sparsty" in r.stderr


def test_missing_dataset_is_a_clear_error(tmp_path):
  config = _load_config("default")
  config.dataset = "mnist"
  config.data_dir = str(tmp_path)
  with pytest.raises(data_lib.DatasetNotFoundError, match="mnist"):
    train.train_and_evaluate(config, str(tmp_path / "w"), progress=False)


# --- methods and drivers through the runner ---------------------------------


def _np_pq_index(weights, p=0.5, q=1.0):
  """PQ index of one vector (Diao et al.), computed with NumPy."""
  w = np.abs(np.asarray(weights, np.float64))
  d = w.size
  norm = lambda r: np.sum(w ** r) ** (1.0 / r)
  return 1.0 - d ** (1.0 / q - 1.0 / p) * norm(p) / norm(q)


def _kernels(params):
  flat = jax.tree.flatten_with_path(unwrap(params))[0]
  return {jax.tree_util.keystr(k): np.asarray(v) for k, v in flat
          if np.ndim(v) >= 2}


def test_ste_runs_exact_and_logs_pqi_of_the_sparse_weights(tmp_path, data_dir):
  config = _small(_load_config("srste_2_4"), data_dir)
  res = train.train_and_evaluate(config, str(tmp_path), progress=False)
  kernels = _kernels(res["params"])
  for name, w in kernels.items():  # 2:4 along the input axis (axis 0)
    groups = (w != 0).reshape(-1, 4, w.shape[1]).sum(axis=1)
    assert np.all(groups == 2), name
  # Global PQ index over the unpruned entries, against NumPy.
  kept = np.concatenate([w[w != 0] for w in kernels.values()])
  assert res["pqi"] == pytest.approx(_np_pq_index(kept), rel=1e-4)
  assert res["history"][-1]["pqi"] == pytest.approx(res["pqi"], rel=1e-6)


def test_rigl_logs_mask_change_and_keeps_per_layer_counts(tmp_path, data_dir):
  config = _small(_load_config("rigl"), data_dir)
  config.eval_every = 10
  config.pruning.end_step = 30
  res = train.train_and_evaluate(config, str(tmp_path), progress=False)
  rows = res["history"]
  assert any(r["mask_change"] > 0 for r in rows[:3])  # masks moved
  assert rows[-1]["mask_change"] == 0.0  # no update after end_step
  assert len({round(r["sparsity"], 9) for r in rows}) == 1  # counts kept
  for w in _kernels(res["params"]).values():
    assert np.mean(w == 0) >= 0.5  # ERK at 90 %: every kernel is sparse


def test_imp_driver_nests_masks_at_density_0_8_per_level(tmp_path, data_dir):
  config = _small(_load_config("imp"), data_dir)
  config.driver_rounds = 2
  config.pruning.rewind_step = 10  # late rewinding: later rounds start at 10
  runs = train.run_experiment(config, str(tmp_path), progress=False)
  assert [r["name"] for r in runs] == ["imp_00", "imp_01", "imp_02"]
  n = sum(x["params"] for x in runs[0]["layers"] if x["pruned"])
  kept = n
  for r in runs[1:]:
    kept -= int(np.floor(0.2 * kept + 0.5))
    zeros = sum(x["zeros"] for x in r["layers"] if x["pruned"])
    assert n - zeros == kept
  for a, b in zip(runs[1:], runs[2:], strict=False):  # masks only shrink
    for ma, mb in zip(jax.tree.leaves(a["masks"]),
                      jax.tree.leaves(b["masks"]), strict=True):
      assert not np.any(np.asarray(mb) & ~np.asarray(ma))
  assert runs[1]["history"][0]["step"] == 20  # resumed at step 10
  assert (tmp_path / "plots" / "accuracy_vs_sparsity.png").exists()


def test_sap_driver_prunes_by_pq_index(tmp_path, data_dir):
  config = _small(_load_config("sap"), data_dir)
  config.driver_rounds = 3
  runs = train.run_experiment(config, str(tmp_path), progress=False)
  sparsity = [r["sparsity"] for r in runs]
  assert sparsity[0] == 0.0 and sparsity[1] > 0 and sparsity[2] > sparsity[1]
  assert all(0 < r["pqi"] < 1 for r in runs)


def test_rps_and_pruning_share_one_memory_axis(tmp_path, data_dir):
  config = _small(_load_config("rps_vs_pruning"), data_dir)
  config.model_kwargs.hidden = (64,)
  config.sweep_methods = ("magnitude", "rps")
  config.sweep_memory = (0.05,)
  config.num_steps = 20
  config.pruning.end_step = 10
  runs = train.run_experiment(config, str(tmp_path), progress=False)
  assert [r["name"] for r in runs] == ["dense", "magnitude@mem0.05",
                                       "rps@mem0.05"]
  mag, rps = runs[1], runs[2]
  assert mag["memory"] == pytest.approx(0.05, abs=1e-3)
  assert rps["memory"] == pytest.approx(0.05, abs=1e-3)
  assert rps["sparsity"] == 0.0  # expanded weights are dense
  assert np.isfinite(rps["test_accuracy"])


def _read_events(directory):
  """(tag, step, value) of every scalar in TFRecord event files (the record
  framing parsed here; the Event proto from tensorboardX)."""
  import struct

  from tensorboardX.proto import event_pb2
  out = []
  for name in sorted(os.listdir(directory)):
    with open(os.path.join(directory, name), "rb") as f:
      data = f.read()
    pos = 0
    while pos < len(data):
      (length,) = struct.unpack("<Q", data[pos:pos + 8])
      record = data[pos + 12:pos + 12 + length]
      pos += 12 + length + 4
      event = event_pb2.Event.FromString(record)
      for v in event.summary.value:
        out.append((v.tag, event.step, v.simple_value))
  return out


def test_tensorboard_scalars_match_metrics(tmp_path, data_dir):
  config = _small(_load_config("default"), data_dir)
  config.num_steps = 20
  config.pruning.end_step = 10
  config.eval_every = 10
  train.train_and_evaluate(config, str(tmp_path), progress=False)
  rows = [json.loads(x) for x in open(tmp_path / "metrics.jsonl")]
  events = _read_events(tmp_path / "tensorboard")
  acc = {s: v for t, s, v in events if t == "test_accuracy"}
  assert acc == {r["step"]: pytest.approx(r["test_accuracy"]) for r in rows}
  assert {t for t, _, _ in events} >= {"loss", "sparsity", "pqi",
                                        "mask_change"}
