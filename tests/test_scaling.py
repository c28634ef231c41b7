"""jaxsparse.scaling: the sparse scaling law of Frantar et al. (2023)."""

import importlib.util
import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsparse import scaling
from jaxsparse.experiments import config as config_lib
from jaxsparse.experiments import errors, study

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRUE = scaling.SparseScalingLaw(a_S=5e2, b_S=1.2, c_S=1e2, b_N=0.5,
                                a_D=2e4, b_D=0.4, c=1.0)


def _table(law=TRUE, noise=0.0, seed=0):
  """4 sparsities x 3 N x 3 D, as the CPU study (D term identifiable)."""
  s, n, d = np.meshgrid([0.0, 0.5, 0.75, 0.875], [1e4, 4e4, 1.6e5],
                        [2e5, 4e5, 8e5], indexing="ij")
  s, n, d = s.ravel(), n.ravel(), d.ravel()
  with jax.enable_x64(True):
    loss = np.asarray(law.predict(s, n, d))
  rng = np.random.default_rng(seed)
  return s, n, d, loss * np.exp(noise * rng.normal(size=loss.shape))


def _numpy_law(law, s, n, d):
  co = law.coefficients
  return ((co["a_S"] * (1 - s) ** co["b_S"] + co["c_S"]) * (1 / n) ** co["b_N"]
          + (co["a_D"] / d) ** co["b_D"] + co["c"])


def test_predict_is_the_formula_under_jit_and_vmap():
  s, n, d, _ = _table()
  want = _numpy_law(TRUE, s, n, d)
  got = jax.jit(lambda law, s, n, d: law.predict(s, n, d))(TRUE, s, n, d)
  np.testing.assert_allclose(got, want, rtol=1e-5)
  # A batch of laws (leading axis on every leaf) under vmap.
  laws = jax.tree.map(lambda x: jnp.array([x, 2 * x]), TRUE)
  out = jax.vmap(lambda law: law.predict(0.5, 1e5, 1e6))(laws)
  np.testing.assert_allclose(out[0], _numpy_law(TRUE, 0.5, 1e5, 1e6),
                             rtol=1e-5)
  assert set(TRUE.coefficients) == set(scaling.COEFFICIENTS)
  assert len(jax.tree.leaves(TRUE)) == 9  # 7 coefficients + 2 diagnostics


def test_fit_recovers_coefficients_without_noise():
  s, n, d, loss = _table()
  held = np.zeros(len(s), bool)
  held[::5] = True
  law = scaling.fit(s, n, d, loss, holdout=held)
  for k, v in TRUE.coefficients.items():
    assert law.coefficients[k] == pytest.approx(v, rel=2e-3), k
  assert law.rmse < 1e-4 and law.holdout_rmse < 1e-4
  with jax.enable_x64(True):
    pred = np.asarray(law.predict(s[held], n[held], d[held]))
  np.testing.assert_allclose(pred, loss[held], rtol=1e-4)


def test_fit_with_noise_predicts_held_out_runs():
  noise = 0.01  # 1 % multiplicative noise on every loss
  s, n, d, loss = _table(noise=noise)
  law = scaling.fit(s, n, d, loss, holdout=9, seed=1)
  clean = _numpy_law(TRUE, s, n, d)
  assert np.isfinite(law.holdout_rmse)
  # Within the noise on the runs, and close to the noise-free law.
  assert law.rmse < 2 * noise * loss.mean()
  assert law.holdout_rmse < 3 * noise * loss.mean()
  with jax.enable_x64(True):
    pred = np.asarray(law.predict(s, n, d))
  assert np.max(np.abs(pred / clean - 1)) < 3 * noise
  # The N and S exponents are well determined by this grid; D is not.
  assert law.b_N == pytest.approx(TRUE.b_N, rel=0.15)
  assert law.b_S == pytest.approx(TRUE.b_S, rel=0.25)


def test_huber_fit_resists_an_outlier():
  s, n, d, loss = _table()
  bad = loss.copy()
  bad[7] *= 1.5  # one broken run
  huber = scaling.fit(s, n, d, bad)
  squared = scaling.fit(s, n, d, bad, objective="squared")
  with jax.enable_x64(True):
    err = lambda law: np.abs(np.delete(
        np.asarray(law.predict(s, n, d)) / loss - 1, 7)).max()
  assert err(huber) < 1e-3 < err(squared)


def test_optimal_sparsity_matches_a_brute_force_grid():
  grid = np.linspace(0.0, 0.99, 200_001)
  for n, c in [(1e5, 1e13), (1e5, 1e15), (1e6, 1e14), (1e4, 1e11)]:
    d = c * (1 - grid) / (6 * n)  # fixed N and dense-cost compute
    losses = _numpy_law(TRUE, grid, n, d)
    want = grid[np.argmin(losses)]
    got = float(scaling.optimal_sparsity(TRUE, n, c))
    # Near S* the loss is flat to float32: compare the loss there too.
    assert got == pytest.approx(want, abs=2e-3), (n, c)
    at = _numpy_law(TRUE, got, n, c * (1 - got) / (6 * n))
    assert at <= losses.min() * (1 + 1e-6), (n, c)
  # Broadcasts and jits; more compute per parameter favours sparsity.
  out = jax.jit(scaling.optimal_sparsity)(TRUE, 1e5, jnp.array([1e12, 1e16]))
  assert out.shape == (2,) and out[0] <= out[1]
  # Without a data term, sparser is always better: the upper end.
  no_d = TRUE._replace(a_D=1e-30)
  assert float(scaling.optimal_sparsity(no_d, 1e5, 1e12)) == pytest.approx(
      0.99, abs=1e-6)


def test_law_is_monotone_as_in_the_paper():
  rng = np.random.default_rng(0)
  s = np.linspace(0.0, 0.95, 20)
  n = np.geomspace(1e3, 1e9, 20)
  d = np.geomspace(1e5, 1e12, 20)
  for _ in range(20):
    # Random exponents; scales that keep every term visible on the grids.
    b_s, b_n, b_d = rng.uniform(0.2, 1.5, size=3)
    law = scaling.SparseScalingLaw(
        a_S=rng.uniform(0.5, 2) * 1e6 ** b_n, b_S=b_s,
        c_S=rng.uniform(0.1, 1) * 1e6 ** b_n, b_N=b_n,
        a_D=rng.uniform(0.5, 2) * 1e8, b_D=b_d, c=rng.uniform(0.5, 2))
    with jax.enable_x64(True):
      by_n = np.asarray(law.predict(0.5, n, 1e8))
      by_d = np.asarray(law.predict(0.5, 1e6, d))
      by_s = np.asarray(law.predict(s, 1e6, 1e8))
    assert np.all(np.diff(by_n) < 0)  # more non-zero parameters: lower
    assert np.all(np.diff(by_d) < 0)  # more tokens: lower
    # At fixed non-zero parameters N and tokens D, a sparser (so larger)
    # model has the lower loss; c is the floor.
    assert np.all(np.diff(by_s) < 0)
    assert np.all(by_s > law.c) and np.all(by_d > law.c)


@pytest.mark.parametrize("column, change, match", [
    ("sparsity", lambda x: x[:-1], "same length"),
    ("sparsity", lambda x: x + 0.2, "^sparsity:"),
    ("n", lambda x: -x, "^n:"),
    ("d", lambda x: 0 * x, "^d:"),
    ("loss", lambda x: -x, "^loss:"),
    ("loss", lambda x: np.where(x > 2, np.nan, x), "^loss: .*non-finite"),
    ("all", lambda x: x[:6], "7 coefficients"),
])
def test_fit_rejects_bad_input_naming_the_parameter(column, change, match):
  cols = dict(zip(("sparsity", "n", "d", "loss"), _table(), strict=True))
  cols = {k: change(v) if column in (k, "all") else v
          for k, v in cols.items()}
  with pytest.raises(ValueError, match=match):
    scaling.fit(cols["sparsity"], cols["n"], cols["d"], cols["loss"])


def test_fit_rejects_bad_options():
  s, n, d, loss = _table()
  with pytest.raises(ValueError, match="holdout"):
    scaling.fit(s, n, d, loss, holdout=np.ones(3, bool))
  with pytest.raises(ValueError, match="7 coefficients"):
    scaling.fit(s, n, d, loss, holdout=len(s) - 6)
  with pytest.raises(ValueError, match="objective"):
    scaling.fit(s, n, d, loss, objective="l1")
  with pytest.raises(ValueError, match="max_sparsity"):
    scaling.optimal_sparsity(TRUE, 1e5, 1e12, max_sparsity=1.0)


def _study_config(mode=""):
  path = os.path.join(ROOT, "configs", "scaling_study.py")
  spec = importlib.util.spec_from_file_location("scaling_study_cfg", path)
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod.get_config(mode)


def test_study_config_validates_and_bad_keys_are_named():
  for mode in ("", "small"):
    c = _study_config(mode)
    assert config_lib.validate(c).runs
    assert len(study.cells(c)) == len(c.scaling.widths) * len(c.scaling.steps)
  full = _study_config()
  assert len(set(full.scaling.steps)) >= 3  # the D term needs 3 token counts
  assert tuple(full.sweep_sparsities) == (0.5, 0.75, 0.875)
  assert len(full.scaling.widths) == 3
  c = _study_config("small")
  c.scaling.widths = (16, 30)  # 30: not a multiple of 2 x n_heads=2 x 2
  c.scaling.steps = (10, 10, 20)
  c.scaling.holdout = 1.5
  with pytest.raises(errors.ConfigError) as e:
    config_lib.validate(c)
  msg = str(e.value)
  assert "config.scaling.widths: 30" in msg
  assert "config.scaling.steps=(10, 10, 20): values repeat" in msg
  assert "config.scaling.holdout=1.5" in msg
  c = config_lib.lm_base()
  c.study = "chinchilla"
  with pytest.raises(errors.ConfigError, match="config.study='chinchilla'"):
    config_lib.validate(c)


def test_scaling_writes_table_fit_and_plots(tmp_path):
  s, n, d, loss = _table(noise=0.005)
  rows = [dict(run=f"r{i}", sparsity=a, n=b, d=c, loss=x)
          for i, (a, b, c, x) in enumerate(zip(s, n, d, loss, strict=True))]
  out = study.scaling(rows, str(tmp_path), holdout=0.25)
  assert out["holdout_runs"] == 9 and np.isfinite(out["holdout_rmse"])
  assert np.isfinite(out["extrapolation_rmse"])
  assert out["rmse"] < 0.02
  saved = json.load(open(tmp_path / "scaling_law.json"))
  assert set(saved["coefficients"]) == set(scaling.COEFFICIENTS)
  table = saved["table"]
  assert [r["run"] for r in table] == [r["run"] for r in rows]
  for r in table:
    assert r["residual"] == pytest.approx(r["loss"] - r["predicted"])
  text = (tmp_path / "scaling_table.txt").read_text()
  assert "RMSE" in text and "hold-out RMSE" in text
  for name in ("scaling_law.png", "scaling_fit.png"):
    assert (tmp_path / "plots" / name).stat().st_size > 0


@pytest.mark.slow
def test_small_study_runs_end_to_end(tmp_path):
  c = _study_config("small")
  t0 = time.perf_counter()
  out = study.scaling_study(c, str(tmp_path))
  seconds = time.perf_counter() - t0
  runs = len(c.scaling.widths) * len(c.scaling.steps) * (
      1 + len(c.sweep_sparsities))
  assert out["runs"] == runs and len(out["table"]) == runs
  assert np.isfinite(out["rmse"]) and np.isfinite(out["holdout_rmse"])
  ns = {}
  for r in out["table"]:
    assert r["d"] in {s * c.batch_size * c.lm.seq_len for s in c.scaling.steps}
    ns.setdefault(r["sparsity"], set()).add(r["n"])
  assert set(ns) == {0.0, *c.sweep_sparsities}
  assert (tmp_path / "plots" / "scaling_law.png").exists()
  print(f"small study: {seconds:.0f} s")
