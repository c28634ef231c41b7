"""Config validation, dry runs, short errors and honest tables (runner)."""

import json
import os
import subprocess
import sys
import time

import jax.numpy as jnp
import numpy as np
import pytest

import jaxsparse
from jaxsparse.experiments import config as config_lib
from jaxsparse.experiments import data as data_lib
from jaxsparse.experiments import errors, train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = os.path.join(ROOT, "configs")


def _load(name):
  return config_lib.load(os.path.join(CONFIGS, f"{name}.py"))


def _set(config, dotted, value):
  *head, last = dotted.split(".")
  node = config
  for k in head:
    node = node[k]
  node[last] = value


# (config file, overrides, the key the message must name, a fragment)
BAD = [
    ("default", {"pruning.sparsity": 1.5}, "config.pruning.sparsity=1.5",
     "[0, 1)"),
    ("default", {"pruning.sparsity": -0.1}, "config.pruning.sparsity",
     "[0, 1)"),
    ("default", {"pruning.schedule": "cubic"}, "config.pruning.schedule",
     "'polynomial'"),
    ("default", {"pruning.allocation": "erk2"}, "config.pruning.allocation",
     "'erk'"),
    ("default", {"pruning.structure": "nm"}, "config.pruning.structure",
     "'n_m'"),
    ("default", {"pruning.method": "prune"}, "config.pruning.method",
     "'rigl'"),
    ("ste", {"pruning.score": "grad"}, "config.pruning.score", "'random'"),
    ("default", {"model": "resnet50"}, "config.model", "'vgg'"),
    ("default", {"dataset": "imagenet"}, "config.dataset", "'digits'"),
    ("default", {"optimizer": "adagrad"}, "config.optimizer", "'adam'"),
    ("default", {"learning_rate": 0.0}, "config.learning_rate", "(0"),
    ("default", {"batch_size": 0}, "config.batch_size", ">= 1"),
    ("nm_2_4", {"pruning.m": 7, "pruning.n": 2, "pruning.exclude": ("input",),
                "pruning.sparsity": 1 - 2 / 7},
     "config.pruning.structure='n_m'", "not divisible by M=7"),
    ("nm_2_4", {"pruning.n": 5}, "config.pruning.n=5", "N <= M"),
    ("default", {"pruning.structure": "n_m"}, "config.pruning.sparsity=0.9",
     "prunes exactly 0.5"),
    ("nm_2_4", {"num_epochs": 5}, "config.pruning.begin_step=300",
     "last step is 109"),
    ("iterative", {"num_steps": 440}, "config.pruning.num_rounds=10",
     "last step is 439"),
    ("default", {"num_steps": 100}, "config.num_steps=100",
     "config.num_epochs=60 are both set"),
    ("default", {"num_epochs": 2, "pruning.end_step": 100},
     "config.pruning.end_step", "last step is 43"),
    ("rigl", {"pruning.begin_step": 5000}, "config.pruning.begin_step=5000",
     "end step"),
    ("default", {"model_kwargs.widths": (8, 16)},
     "config.model_kwargs.widths", "its arguments: hidden"),
    ("default", {"pruning.exclude": (".",)}, "config.pruning.exclude",
     "excludes every layer"),
    ("block", {"pruning.block_shape": (3, 3), "pruning.exclude": ()},
     "config.pruning.structure='block'", "3x3"),
    ("nm_2_4", {"pruning.m": 7, "pruning.sparsity": 1 - 2 / 7},
     "config.pruning.exclude=('auto',)", "cannot divide"),
    ("set", {"pruning.structure": "n_m", "pruning.sparsity": 0.5},
     "config.pruning.structure='n_m'", "unstructured only"),
    ("sweep", {"sweep_sparsities": (0.5, 1.2)}, "config.pruning.sparsity=1.2",
     "[0, 1)"),
]


@pytest.mark.parametrize("name,overrides,key,fragment", BAD,
                         ids=[f"{b[0]}-{'-'.join(b[1])}" for b in BAD])
def test_bad_config_fails_fast_naming_the_key(name, overrides, key, fragment):
  config = _load(name)
  for k, v in overrides.items():
    _set(config, k, v)
  t0 = time.perf_counter()
  with pytest.raises(errors.ConfigError) as e:
    config_lib.validate(config)
  assert time.perf_counter() - t0 < 5.0
  assert key in str(e.value), str(e.value)
  assert fragment in str(e.value), str(e.value)


def test_every_shipped_config_validates():
  for name in sorted(f[:-3] for f in os.listdir(CONFIGS) if f.endswith(".py")):
    plan = config_lib.validate(_load(name))
    assert plan.runs, name


def test_plan_resolves_targets_steps_and_exclusions():
  config = _load("nm_2_4")
  config.model = "vgg"
  plan = config_lib.validate(config)
  dense, nm = plan.runs
  assert dense.target is None and nm.target == 0.5 and nm.steps == 1320
  targets = {layer.path.split("/")[0] + "/" + layer.path.split("/")[1]:
             layer.target for layer in nm.layers}
  assert targets["convs/0"] is None  # "auto": the input layer stays dense
  assert targets["convs/1"] == targets["convs/2"] == 0.5
  assert "dense" in str(plan) and "0.5000" in str(plan)

  erk = config_lib.validate(_load("erk")).runs[-1]
  ts = [layer.target for layer in erk.layers]
  assert len(set(ts)) > 1  # ERK: one target per layer
  n = [int(np.prod(layer.shape)) for layer in erk.layers]
  assert np.dot(ts, n) / sum(n) == pytest.approx(0.9, abs=1e-4)


def test_exclude_patterns_and_names():
  config = _load("default")
  config.model = "lenet5"
  config.pruning.exclude = ("input", "output", "fc2")
  keep = config_lib.filter_fn(config)
  plan = config_lib.validate(config).runs[-1]
  dense = {layer.path.split("/")[0] for layer in plan.layers
           if layer.target is None}
  assert dense == {"conv1", "out", "fc2"}
  del keep


def _main(*args):
  return subprocess.run(
      [sys.executable, "-m", "jaxsparse.experiments.main", *args],
      capture_output=True, text=True, cwd=ROOT, timeout=300)


def test_user_errors_print_one_paragraph_and_exit_code(tmp_path):
  r = _main("--config", os.path.join(CONFIGS, "nm_2_4.py"),
            "--workdir", str(tmp_path / "w"), "--config.num_epochs=5")
  assert r.returncode == errors.ConfigError.exit_code
  assert "Traceback" not in r.stderr
  assert "begin_step=300" in r.stderr and "110 steps" in r.stderr
  assert not (tmp_path / "w").exists()  # nothing was started

  r = _main("--config", os.path.join(CONFIGS, "default.py"), "--dry_run",
            "--config.pruning.sparsity=1.5", "--debug")
  assert r.returncode != 0 and "Traceback" in r.stderr  # --debug: traceback

  r = _main("--config", os.path.join(CONFIGS, "default.py"), "--dry_run",
            "--config.model=lenet5", "--config.model_kwargs.hidden=(8,)")
  assert r.returncode == 2 and "model_kwargs.hidden" in r.stderr
  assert "Traceback" not in r.stderr


def test_dry_run_prints_the_plan_and_trains_nothing(tmp_path):
  r = _main("--config", os.path.join(CONFIGS, "default.py"), "--dry_run",
            "--config.model_kwargs.hidden=(32, 16)")
  assert r.returncode == 0, r.stderr
  assert "run 'magnitude'" in r.stdout and "1320 steps" in r.stdout
  assert "(64, 32)" in r.stdout and "0.9000" in r.stdout


def test_corrupt_checkpoint_error_names_the_file(tmp_path):
  d = tmp_path / "tfds"
  data_lib.prepare_digits(str(d))
  args = ["--config", os.path.join(CONFIGS, "default.py"),
          "--workdir", str(tmp_path / "w"), f"--config.data_dir={d}",
          "--config.num_steps=6", "--config.num_epochs=-1",
          "--config.compare_dense=False", "--config.checkpoint_every=3",
          "--config.pruning.end_step=4", "--config.pruning.frequency=2",
          "--config.model_kwargs.hidden=(8,)", "--config.tensorboard=False"]
  # The run and its rerun in this process (the same runner as the command
  # line's, on the same config and overrides); the corrupt checkpoint's
  # error below goes through the command line, as a user sees it.
  def run():
    config = _load("default")
    config.data_dir = str(d)
    config.num_steps, config.num_epochs = 6, -1
    config.compare_dense = False
    config.checkpoint_every = 3
    config.pruning.end_step, config.pruning.frequency = 4, 2
    config.model_kwargs.hidden = (8,)
    config.tensorboard = False
    train.run_experiment(config, str(tmp_path / "w"), progress=False)

  run()
  summary = json.load(open(tmp_path / "w" / "magnitude" / "summary.json"))
  assert summary["target_sparsity"] == 0.9
  assert summary["achieved_sparsity"] == pytest.approx(0.9, abs=1e-2)
  assert summary["sparsity_all_params"] < summary["achieved_sparsity"]
  assert np.isfinite(summary["steps_per_second"])
  assert summary["steps_per_second"] <= summary["step_only_per_second"]
  # A finished run, rerun, keeps its measured figures.
  run()
  again = json.load(open(tmp_path / "w" / "magnitude" / "summary.json"))
  assert again["steps_per_second"] == summary["steps_per_second"]
  ckpt = tmp_path / "w" / "magnitude" / "checkpoints" / "6"
  for root, _, files in os.walk(ckpt):
    for f in files:
      with open(os.path.join(root, f), "wb") as fh:
        fh.write(b"garbage")
  r = _main(*args)
  assert r.returncode == errors.CheckpointError.exit_code
  assert "Traceback" not in r.stderr and str(ckpt) in r.stderr
  assert len(r.stderr.strip().splitlines()) <= 3


@pytest.mark.parametrize("model", ["lenet5", "vgg"])
def test_n_m_config_is_exact_in_every_included_layer(tmp_path, model):
  config = _load("nm_2_4")
  config.model = model
  config.num_steps, config.num_epochs = 3, -1
  config.pruning.begin_step = 1
  config.compare_dense = False
  config.tensorboard = False
  config.eval_every = 3
  d = tmp_path / "tfds"
  data_lib.prepare_digits(str(d))
  config.data_dir = str(d)
  runs = train.run_experiment(config, str(tmp_path / "w"), progress=False)
  (r,) = runs
  assert r["target_sparsity"] == 0.5 and r["shortfalls"] == []
  plan = config_lib.validate(config).runs[0]
  included = {layer.path for layer in plan.layers if layer.target == 0.5}
  assert included
  for layer in r["layers"]:
    if layer["name"] in included:
      assert layer["zeros"] * 2 == layer["params"], layer
    elif layer["pruned"]:
      assert layer["zeros"] == 0, layer  # excluded: dense


def test_shortfall_is_detected():
  config = _load("default")
  config.num_steps, config.num_epochs = 10, -1
  config.pruning.end_step = 5
  result = {"name": "x", "target_sparsity": 0.9, "layers": [
      {"name": "hidden/0/kernel", "params": 64 * 300, "zeros": 0,
       "pruned": True}]}
  (msg,) = train.shortfalls(config, result)
  assert "hidden/0/kernel" in msg and "target 0.9000" in msg
  ok = dict(result, layers=[dict(result["layers"][0], zeros=17280)])
  assert train.shortfalls(config, ok) == []


def test_apply_masks_names_the_leaf_on_a_shape_mismatch():
  params = {"dense_0": {"kernel": jnp.ones((4, 3))}}
  masks = {"dense_0": {"kernel": jnp.ones((3, 4), bool)}}
  with pytest.raises(ValueError, match=r"\(3, 4\) vs param shape \(4, 3\) "
                     r"at 'dense_0/kernel'"):
    jaxsparse.apply_masks(params, masks)


def test_periodic_updates_rejects_zero_period():
  with pytest.raises(ValueError, match="every"):
    jaxsparse.periodic_updates(0, 0, 10)
  f = jaxsparse.periodic_updates(3, 1, 10)
  assert [t for t in range(12) if f(t)] == [1, 4, 7, 10]


def test_host_callback_errors_reach_the_user_unwrapped():
  import jax

  from jaxsparse.experiments import main

  def boom(x):
    raise ValueError(f"mask_update=True was passed at step count {int(x)}")

  f = jax.jit(lambda x: jax.debug.callback(boom, x) or x)
  with pytest.raises(jax.errors.JaxRuntimeError) as e:
    jax.block_until_ready(f(jnp.int32(7)))
  assert main._callback_error(e.value) == (
      "ValueError: mask_update=True was passed at step count 7")


def test_interrupt_exits_130_without_traceback(tmp_path):
  import signal
  d = tmp_path / "tfds"
  data_lib.prepare_digits(str(d))
  work = tmp_path / "w"
  proc = subprocess.Popen(
      [sys.executable, "-m", "jaxsparse.experiments.main", "--config",
       os.path.join(CONFIGS, "default.py"), "--workdir", str(work),
       f"--config.data_dir={d}", "--config.compare_dense=False",
       "--config.eval_every=10", "--config.tensorboard=False"],
      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
  metrics = work / "magnitude" / "metrics.jsonl"
  deadline = time.time() + 120
  while not (metrics.exists() and metrics.stat().st_size) and (
      time.time() < deadline and proc.poll() is None):
    time.sleep(0.2)
  proc.send_signal(signal.SIGINT)
  _, err = proc.communicate(timeout=60)
  assert proc.returncode == errors.INTERRUPT_EXIT_CODE, err[-2000:]
  assert "Traceback" not in err and "resume" in err
