"""Many processes and resharded restore, end to end through the runner.

A 2-process x 4-device run (`jax.distributed` over localhost, CPU
collectives) against a 1-process x 8-device run of the same config; and a
run interrupted on 8 devices, resumed on 4 devices (another mesh shape)
and on 1 device, against the uninterrupted run.
"""

import os
import shutil
import sys

import jax
import numpy as np
import pytest

from jaxsparse._src.distributed import local
from jaxsparse.experiments import checkpoint as ckpt_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = """
from jaxsparse.experiments.config import base


def get_config():
  c = base()
  c.num_epochs, c.num_steps = -1, 20
  c.eval_every = 10
  c.checkpoint_every = 10
  c.compare_dense = False
  c.tensorboard = False
  c.pruning.method = "magnitude"
  c.pruning.sparsity = 0.9
  c.pruning.end_step, c.pruning.frequency = 15, 5
  c.mesh.data, c.mesh.model = 4, 2
  return c
"""
TIMEOUT = 420


def _start(workdir, devices, *flags, processes=1):
  cmd = [sys.executable, "-m", "jaxsparse.experiments.main",
         "--config", os.path.join(os.path.dirname(workdir), "config.py"),
         "--workdir", workdir, "--progress=false", *flags]
  if processes == 1:
    return [local.start(cmd, devices=devices, cwd=ROOT)]
  return local.launch(cmd, processes, devices_per_process=devices, cwd=ROOT)


def _final_state(workdir, step=20):
  return ckpt_lib.read(os.path.join(workdir, "magnitude"), step)


def _compare(a, b):
  """Masks bit-identical; floats to within summation-order rounding (a
  data-parallel mean is reduced in another order across processes)."""
  fa = jax.tree.flatten_with_path(a)[0]
  fb = jax.tree.leaves(b)
  assert len(fa) == len(fb)
  for (path, x), y in zip(fa, fb, strict=True):
    name = jax.tree_util.keystr(path)
    x, y = np.asarray(x), np.asarray(y)
    if x.dtype.kind in "biu":
      np.testing.assert_array_equal(x, y, err_msg=name)
    else:
      np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6, err_msg=name)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  root = tmp_path_factory.mktemp("mp")
  (root / "config.py").write_text(CONFIG)
  full, multi, cut = (str(root / n) for n in ("full", "multi", "cut"))
  # The uninterrupted run first: the interrupted one on 8 devices then
  # finds its programs in the suite's compilation cache.
  outs = local.wait_all(_start(full, 8), TIMEOUT)
  outs += local.wait_all(_start(multi, 4, processes=2)
                         + _start(cut, 8, "--config.stop_after=10"),
                         TIMEOUT)
  cut1 = str(root / "cut1")
  shutil.copytree(cut, cut1)
  local.wait_all(
      _start(cut, 4, "--config.mesh.data=2", "--config.mesh.model=2")
      + _start(cut1, 1, "--config.mesh.data=1", "--config.mesh.model=1"),
      TIMEOUT)
  return dict(full=full, multi=multi, cut=cut, cut1=cut1, outs=outs)


def test_two_processes_equal_one_process(runs):
  assert "per-layer sparsity" in runs["outs"][1]  # process 0: the table
  assert "per-layer sparsity" not in runs["outs"][2]  # process 1: none
  _compare(_final_state(runs["full"]), _final_state(runs["multi"]))


def test_checkpoint_from_8_devices_resumes_on_4_and_on_1(runs):
  full = _final_state(runs["full"])
  _compare(full, _final_state(runs["cut"]))
  _compare(full, _final_state(runs["cut1"]))
  # The interrupted run's checkpoint at step 10 was written on 8 devices.
  assert os.path.isdir(os.path.join(runs["cut1"], "magnitude",
                                    "checkpoints", "10"))
