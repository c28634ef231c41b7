"""Tests of seeds, named variants and the study configs (configs/study_*)."""

import json
import os

import numpy as np
import pytest

from jaxsparse.experiments import config as config_lib
from jaxsparse.experiments import data as data_lib
from jaxsparse.experiments import plotting, train
from jaxsparse.experiments.errors import ConfigError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = os.path.join(ROOT, "configs")
STUDIES = sorted(f[:-3] for f in os.listdir(CONFIGS)
                 if f.startswith("study_") and f.endswith(".py"))


def _load(name):
  return config_lib.load(os.path.join(CONFIGS, f"{name}.py"))


def test_parse_variant():
  name, kw = config_lib.parse_variant(
      "random_erk: pruning.method='random'; pruning.sparsity=0.95; "
      "pruning.allocation=erk")
  assert name == "random_erk"
  assert kw == {"pruning.method": "random", "pruning.sparsity": 0.95,
                "pruning.allocation": "erk"}
  with pytest.raises(ValueError, match="name: key=value"):
    config_lib.parse_variant("no colon")
  assert config_lib.split_seed("random@0.9#s12") == ("random@0.9", 12)
  assert config_lib.split_seed("dense") == ("dense", None)


def test_variants_times_sparsities_times_seeds():
  c = config_lib.base()
  c.seeds = (0, 3)
  c.sweep_sparsities = (0.8, 0.9)
  c.sweep_variants = ("uni: pruning.method='random'",
                      "erk: pruning.method='random'; pruning.allocation='erk'")
  runs = config_lib.variants(c)
  assert [n for n, _ in runs] == [
      "dense#s0", "dense#s3", "uni@0.8#s0", "uni@0.8#s3", "uni@0.9#s0",
      "uni@0.9#s3", "erk@0.8#s0", "erk@0.8#s3", "erk@0.9#s0", "erk@0.9#s3"]
  by = dict(runs)
  assert by["erk@0.9#s3"].seed == 3
  assert by["erk@0.9#s3"].pruning.allocation == "erk"
  assert by["erk@0.9#s3"].pruning.sparsity == 0.9
  assert by["uni@0.8#s0"].pruning.allocation == "uniform"
  assert by["dense#s3"].pruning.method == "none"


def test_bad_seeds_and_variants_are_config_errors():
  c = config_lib.base()
  c.seeds = (0, 0)
  with pytest.raises(ConfigError, match="seeds repeat"):
    config_lib.validate(c)
  c = config_lib.base()
  c.sweep_variants = ("x: pruning.sparsty=0.5",)
  with pytest.raises(ConfigError, match="sparsty"):
    config_lib.validate(c)


@pytest.mark.parametrize("name", STUDIES)
def test_study_config_validates(name):
  c = _load(name)
  assert c.dataset == "mnist1d"
  assert tuple(c.seeds) == (0, 1, 2)
  plan = config_lib.validate(c)
  assert len(plan.runs) >= 9


def _fake_run(name, acc, sparsities, mask_change=0.0):
  layers = [{"name": n, "shape": [4, 4], "params": 16, "zeros": 0,
             "pruned": True, "sparsity": x}
            for n, x in zip(("hidden/0/kernel", "out/kernel"), sparsities,
                            strict=True)]
  return {"name": name, "test_accuracy": acc, "target_sparsity": 0.9,
          "achieved_sparsity": 0.9, "sparsity": 0.9, "memory": 0.1,
          "layers": layers,
          "history": [{"step": t, "mask_change": mask_change,
                       "test_accuracy": acc, "sparsity": 0.9}
                      for t in (10, 20)]}


def test_seed_aggregates_table_and_plots(tmp_path):
  runs = [_fake_run("uni@0.9#s0", 0.5, (0.9, 0.9)),
          _fake_run("uni@0.9#s1", 0.7, (0.9, 0.9)),
          _fake_run("uni@0.9#s2", 0.6, (0.9, 0.9)),
          _fake_run("rigl@0.9#s0", 0.8, (0.95, 0.5), 0.1),
          _fake_run("rigl@0.9#s1", 0.9, (0.93, 0.7), 0.3)]
  (tmp_path / "results.json").write_text(json.dumps(runs))
  table, paths = plotting.write_seed_results(str(tmp_path))
  groups = json.load(open(tmp_path / "results_seeds.json"))
  assert [(g["name"], g["n"], g["seeds"]) for g in groups] == [
      ("uni@0.9", 3, [0, 1, 2]), ("rigl@0.9", 2, [0, 1])]
  uni, rigl = groups
  assert uni["test_accuracy"] == pytest.approx(0.6)
  assert uni["test_accuracy_std"] == pytest.approx(np.std([.5, .7, .6],
                                                          ddof=1))
  assert rigl["test_accuracy_std"] == pytest.approx(np.std([.8, .9], ddof=1))
  assert [x["density"] for x in rigl["layers"]] == pytest.approx([0.06, 0.4])
  assert rigl["mask_change"] == [[10, pytest.approx(0.2)],
                                 [20, pytest.approx(0.2)]]
  assert "0.6000 ± 0.1000" in table and "0.8500 ± 0.0707" in table
  assert "per-layer density" in table
  assert (tmp_path / "results_seeds.txt").read_text().strip() == table
  for f in ("layer_density_seeds.png", "mask_change_seeds.png"):
    assert str(tmp_path / "plots" / f) in paths
    assert (tmp_path / "plots" / f).stat().st_size > 1000
  # The sweep plot of the per-run results draws error bars over seeds.
  plotting.write_plots(runs, str(tmp_path / "p"), sweep=True)
  assert (tmp_path / "p" / "accuracy_vs_sparsity.png").stat().st_size > 1000


def test_seeds_run_on_digits(tmp_path):
  d = tmp_path / "tfds"
  data_lib.prepare_digits(str(d))
  c = config_lib.base()
  c.data_dir = str(d)
  c.model_kwargs.hidden = (16,)
  c.num_steps, c.num_epochs = 8, -1
  c.eval_every, c.checkpoint_every = 4, 1000
  c.tensorboard = False
  c.compare_dense = False
  c.seeds = (0, 1)
  c.sweep_variants = (
      "erk: pruning.method='random'; pruning.schedule='constant'; "
      "pruning.allocation='erk'",)
  runs = train.run_experiment(c, str(tmp_path / "w"), progress=False)
  assert [r["name"] for r in runs] == ["erk#s0", "erk#s1"]
  k0, k1 = (np.asarray(r["masks"]["hidden"][0]["kernel"]) for r in runs)
  assert k0.mean() == k1.mean() and not np.array_equal(k0, k1)  # reseeded
  table, _ = plotting.write_seed_results(str(tmp_path / "w"))
  (g,) = json.load(open(tmp_path / "w" / "results_seeds.json"))
  accs = [r["test_accuracy"] for r in runs]
  assert g["test_accuracy"] == pytest.approx(np.mean(accs))
  assert g["test_accuracy_std"] == pytest.approx(np.std(accs, ddof=1))
  assert g["achieved_sparsity"] == pytest.approx(0.9, abs=2e-3)
  assert "erk" in table and "±" in table
