"""The language-model experiment of the runner (task 'lm')."""

import json
import os

import numpy as np
import pytest

from jaxsparse.experiments import config as config_lib
from jaxsparse.experiments import errors
from jaxsparse.experiments import lm as lm_runner


def _small():
  c = config_lib.lm_base()
  c.lm.dim, c.lm.n_heads, c.lm.n_kv_heads, c.lm.hidden_dim = 32, 2, 1, 64
  c.lm.n_layers, c.lm.seq_len = 1, 32
  c.num_steps, c.batch_size = 12, 4
  # Projections sharded over 2 devices (Megatron-style), batches over 2.
  c.mesh.data, c.mesh.model = 2, 2
  c.posttrain.calib_sequences = 4
  c.posttrain.blocksize = 16
  return c


def test_lm_configs_validate_and_bad_keys_are_named():
  here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  for name in ("lm_dense", "lm_posttrain", "lm_gradual", "lm_srste_2_4"):
    config = config_lib.load(os.path.join(here, "configs", f"{name}.py"))
    assert config_lib.validate(config).runs
  c = _small()
  c.posttrain.methods = ("wanda", "obs")
  c.posttrain.targets = ("0.5", "3:2")
  c.pruning.method = "snip"
  with pytest.raises(errors.ConfigError) as e:
    config_lib.validate(c)
  msg = str(e.value)
  assert "config.posttrain.methods='obs'" in msg and "'sparsegpt'" in msg
  assert "'3:2'" in msg and "config.pruning.method='snip'" in msg


def test_lm_run_table_is_exact_and_cached(tmp_path, capsys):
  c = _small()
  c.pruning.method = "magnitude"
  c.pruning.sparsity = 0.5
  c.pruning.end_step = 6
  c.pruning.frequency = 3
  c.posttrain.methods = ("wanda", "sparsegpt", "owl_wanda")
  c.posttrain.targets = ("0.5", "2:4")
  rows = lm_runner.run(c, str(tmp_path))
  names = [r["name"] for r in rows]
  assert names == ["dense", "magnitude", "wanda@0.5", "wanda@2:4",
                   "sparsegpt@0.5", "sparsegpt@2:4", "owl_wanda@0.5"]
  out = capsys.readouterr().out
  assert "not run: owl_wanda@2:4" in out and "val ppl" in out
  for r in rows[1:]:
    assert r["exact"] and r["target"] == 0.5
    assert r["achieved"] == pytest.approx(0.5, abs=1e-9)
    assert r["sparsity_all_params"] < r["achieved"]  # embeddings stay dense
    assert np.isfinite(r["perplexity"]) and r["bits_per_byte"] > 0
  assert (tmp_path / "plots" / "perplexity_vs_sparsity.png").exists()
  saved = json.load(open(tmp_path / "results.json"))
  assert [r["name"] for r in saved] == names
  # The dense model is cached: a second run reuses it (same perplexity).
  c.posttrain.methods, c.sweep_methods, c.pruning.method = (), (), "none"
  again = lm_runner.run(c, str(tmp_path))
  assert again[0]["perplexity"] == rows[0]["perplexity"]
