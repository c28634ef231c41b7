"""The experiment runner: configs, overrides, resume, errors, plots."""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from jaxsparse import checkpoint as ckpt_lib
from jaxsparse import data as data_lib
from jaxsparse import train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = os.path.join(ROOT, "configs")


def _load_config(name):
  import importlib.util
  spec = importlib.util.spec_from_file_location(
      f"cfg_{name}", os.path.join(CONFIGS, f"{name}.py"))
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod.get_config()


def _small(config, data_dir):
  config.data_dir = str(data_dir)
  config.model_kwargs.hidden = (32,)
  config.num_steps = 40
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


@pytest.mark.parametrize("name", sorted(
    f[:-3] for f in os.listdir(CONFIGS)
    if f.endswith(".py") and not f.startswith("_")))
def test_every_config_builds_its_optimizer(name):
  config = _load_config(name)
  tx = train.make_tx(config, total_steps=1000)
  assert hasattr(tx, "init") and hasattr(tx, "update")


def test_unknown_method_is_a_clear_error():
  config = _load_config("default")
  config.pruning.allocation = "bogus"
  with pytest.raises(ValueError, match="config.pruning.allocation"):
    train.make_tx(config, 100)


def test_resume_matches_uninterrupted_run_bit_for_bit(tmp_path, data_dir):
  full = _small(_load_config("default"), data_dir)
  a = train.train_and_evaluate(full, str(tmp_path / "a"), progress=False)

  part = _small(_load_config("default"), data_dir)
  part.stop_after = 25  # interrupted after step 25; last checkpoint at 20
  b0 = train.train_and_evaluate(part, str(tmp_path / "b"), progress=False)
  assert int(b0["state"]["step"]) == 25
  resumed = _small(_load_config("default"), data_dir)
  b = train.train_and_evaluate(resumed, str(tmp_path / "b"), progress=False)
  assert int(b["state"]["step"]) == 40
  la = jax.tree.leaves(a["state"])
  lb = jax.tree.leaves(b["state"])
  assert len(la) == len(lb)
  for x, y in zip(la, lb):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
  # masks and schedule counter came back too, and sparsity is exact.
  assert a["sparsity"] == pytest.approx(0.9, abs=1e-3)
  steps = [r["step"] for r in b["history"]]
  assert steps == sorted(set(steps))  # no duplicated metric rows


def test_mismatched_checkpoint_is_refused_and_kept(tmp_path, data_dir):
  config = _small(_load_config("default"), data_dir)
  config.num_steps = 10
  train.train_and_evaluate(config, str(tmp_path), progress=False)
  before = sorted(os.listdir(tmp_path / "checkpoints"))
  other = _small(_load_config("default"), data_dir)
  other.num_steps = 10
  other.model_kwargs.hidden = (16,)
  with pytest.raises(ckpt_lib.CheckpointError, match="different config"):
    train.train_and_evaluate(other, str(tmp_path), progress=False)
  assert sorted(os.listdir(tmp_path / "checkpoints")) == before


def test_corrupt_checkpoint_gives_clear_error(tmp_path, data_dir):
  config = _small(_load_config("default"), data_dir)
  config.num_steps = 10
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
  for r, s in zip(runs, (0.0, 0.5, 0.9)):
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
      [sys.executable, "-m", "jaxsparse.main", *args],
      capture_output=True, text=True, cwd=cwd, timeout=300)


def test_command_line_overrides_and_bad_key(tmp_path, data_dir):
  r = _main("--config", os.path.join(CONFIGS, "default.py"),
            "--workdir", str(tmp_path / "w"), "--noprogress",
            f"--config.data_dir={data_dir}", "--config.num_steps=10",
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
