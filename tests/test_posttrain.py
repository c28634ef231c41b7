"""Tests of jaxsparse.posttrain: magnitude, Wanda, SparseGPT, OWL, driver."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import jaxsparse
from jaxsparse import posttrain
from jaxsparse._src.posttrain import layer as layer_lib
from jaxsparse._src.posttrain import sequential as seq_lib


def np_count(s, n):
  return math.floor(s * n + 0.5)


# --- NumPy transcriptions of the references. ---------------------------------


def np_fasterprune(W, H, *, sparsity=None, nm=None, blocksize=128,
                   percdamp=0.01):
  """SparseGPT `fasterprune` (Frantar & Alistarh, sparsegpt.py) in NumPy.

  W is PyTorch's (out, in). One change, the project's exactness rule: the
  reference's per-block quantile `tmp <= sort(tmp)[int(numel * s)]` is
  replaced by the k lowest of the block (k by cumulative rounding, ties by
  kernel position); N:M keeps n of every m (jaxsparse.structures.n_m).
  Returns the new W and the keep mask (both (out, in)).
  """
  W = np.array(W, np.float64)
  H = np.array(H, np.float64)
  rows, cols = W.shape
  dead = np.diag(H) == 0
  H[dead, dead] = 1
  W[:, dead] = 0
  damp = percdamp * np.mean(np.diag(H))
  H[np.arange(cols), np.arange(cols)] += damp
  Hinv = np.linalg.cholesky(np.linalg.inv(H)).T  # cholesky(upper=True)
  pruned = np.zeros_like(W, bool)
  done = 0
  for i1 in range(0, cols, blocksize):
    i2 = min(i1 + blocksize, cols)
    count = i2 - i1
    W1 = W[:, i1:i2].copy()
    Q1 = np.zeros_like(W1)
    Err1 = np.zeros_like(W1)
    Hinv1 = Hinv[i1:i2, i1:i2]
    if nm is None:
      tmp = W1 ** 2 / (np.diag(Hinv1).reshape((1, -1))) ** 2
      k = np_count(sparsity, i2 * rows) - done
      done += k
      order = np.argsort(tmp.T.reshape(-1), kind="stable")  # kernel order
      flat = np.zeros(count * rows, bool)
      flat[order[:k]] = True
      mask1 = flat.reshape(count, rows).T
    else:
      mask1 = np.zeros_like(W1, bool)
    for i in range(count):
      w = W1[:, i]
      d = Hinv1[i, i]
      if nm is not None and i % nm[1] == 0:
        n, m = nm
        tmp = (W1[:, i:i + m] ** 2
               / (np.diag(Hinv1)[i:i + m].reshape((1, -1))) ** 2)
        rank = np.argsort(np.argsort(-tmp, axis=1, kind="stable"), axis=1)
        mask1[:, i:i + m] = rank >= n
      q = w.copy()
      q[mask1[:, i]] = 0
      Q1[:, i] = q
      err1 = (w - q) / d
      W1[:, i:] -= np.outer(err1, Hinv1[i, i:])
      Err1[:, i] = err1
    W[:, i1:i2] = Q1
    pruned[:, i1:i2] = mask1
    W[:, i2:] -= Err1 @ Hinv[i1:i2, i2:]
  return W, ~pruned


def np_wanda(W, scaler_row, *, sparsity=None, prune_n=0, prune_m=0):
  """Wanda's `prune_wanda` layer step (Sun et al., lib/prune.py) in NumPy.

  W (out, in), scaler_row = ||X_j||² / nsamples. Returns the keep mask.
  """
  metric = np.abs(W) * np.sqrt(scaler_row.reshape((1, -1)))
  pruned = np.zeros_like(W, bool)
  if prune_n:
    for ii in range(metric.shape[1]):
      if ii % prune_m == 0:
        tmp = metric[:, ii:ii + prune_m]
        idx = np.argsort(tmp, axis=1, kind="stable")[:, :prune_n]
        np.put_along_axis(pruned[:, ii:ii + prune_m], idx, True, axis=1)
  else:
    idx = np.argsort(metric, axis=-1, kind="stable")
    pruned_idx = idx[:, :int(W.shape[1] * sparsity)]
    np.put_along_axis(pruned, pruned_idx, True, axis=1)
  return ~pruned


def np_owl(ratios, sparsity, lam):
  """OWL's adjustment (Yin et al., lib/prune.py) -> per-layer sparsity."""
  r = np.array(ratios, np.float64)
  r = (r - r.min()) * (1 / (r.max() - r.min()) * lam * 2)
  r = r - np.mean(r) + (1 - sparsity)
  return 1 - r


# --- Data. -------------------------------------------------------------------


def layer_data(n_in=64, n_out=48, tokens=512, seed=0, dead=()):
  """Kernel (in, out) and calibration X (tokens, in) with outlier features
  (a few inputs of much larger norm, as in LLM activations) and
  correlated inputs."""
  rng = np.random.default_rng(seed)
  scale = np.where(rng.random(n_in) < 0.1, 8.0, 1.0)
  mix = np.eye(n_in) + 0.4 * rng.normal(size=(n_in, n_in)) / np.sqrt(n_in)
  x = (rng.normal(size=(tokens, n_in)) * scale) @ mix
  x[:, list(dead)] = 0.0
  kernel = rng.normal(size=(n_in, n_out)).astype(np.float32)
  return kernel, x.astype(np.float32)


def recon_error(x, kernel, new):
  x = np.asarray(x, np.float64)
  return float(np.sum((x @ np.asarray(kernel, np.float64)
                       - x @ np.asarray(new, np.float64)) ** 2))


# --- SparseGPT against the reference. -----------------------------------------


@pytest.mark.parametrize("n_in,target,bs", [
    (64, dict(sparsity=0.5), 16),
    (64, dict(nm=(2, 4)), 16),
    # 16 blocks of 4 (two lazy-update segments) and a tail of 2.
    (66, dict(sparsity=0.37), 4),
])
def test_sparsegpt_matches_numpy_reference(n_in, target, bs):
  kernel, x = layer_data(n_in, 48, dead=(5,))
  h = x.T.astype(np.float64) @ x
  w_ref, keep_ref = np_fasterprune(kernel.T, h, blocksize=bs, **target)
  new, keep = posttrain.sparsegpt(kernel, h.astype(np.float32),
                                  blocksize=bs, **target)
  keep, new = np.asarray(keep), np.asarray(new)
  assert keep.dtype == np.bool_ and keep.shape == kernel.shape
  np.testing.assert_array_equal(keep, keep_ref.T)
  np.testing.assert_allclose(new, w_ref.T, rtol=1e-4, atol=2e-4)
  assert np.all(new[~keep] == 0.0)
  assert np.all(new[5] == 0.0)  # dead input.
  assert not np.allclose(new[keep], kernel[keep])  # kept weights updated.
  if "sparsity" in target:
    assert int((~keep).sum()) == np_count(target["sparsity"], kernel.size)
    # Every block holds its share (cumulative rounding).
    for i1 in range(0, n_in, bs):
      i2 = min(i1 + bs, n_in)
      s = target["sparsity"]
      want = np_count(s, i2 * 48) - np_count(s, i1 * 48)
      assert int((~keep[i1:i2]).sum()) == want


def test_inverse_cholesky_upper_is_the_reference_factor():
  _, x = layer_data(32, 8)
  h = x.T.astype(np.float64) @ x + np.eye(32)
  u = np.asarray(layer_lib._inverse_cholesky_upper(jnp.asarray(h, jnp.float32)))
  ref = np.linalg.cholesky(np.linalg.inv(h)).T
  assert np.allclose(np.tril(u, -1), 0.0)
  np.testing.assert_allclose(u, ref, rtol=2e-3, atol=1e-6 * np.abs(ref).max())


def test_sparsegpt_does_not_depend_on_hessian_scale():
  kernel, x = layer_data(seed=2)
  h = jnp.asarray(x.T @ x)
  a, ka = posttrain.sparsegpt(kernel, h, sparsity=0.5, blocksize=16)
  b, kb = posttrain.sparsegpt(kernel, 3.0 * h, sparsity=0.5, blocksize=16)
  np.testing.assert_array_equal(ka, kb)
  np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


# --- Wanda against the reference. ---------------------------------------------


@pytest.mark.parametrize("target,ref", [
    (dict(sparsity=0.5), dict(sparsity=0.5)),
    (dict(nm=(2, 4)), dict(prune_n=2, prune_m=4)),
    (dict(nm=(4, 8)), dict(prune_n=4, prune_m=8)),
])
def test_wanda_matches_numpy_reference(target, ref):
  kernel, x = layer_data()
  scaler_row = np.sum(x.astype(np.float64) ** 2, axis=0) / x.shape[0]
  x_norm = np.linalg.norm(x.astype(np.float64), axis=0)
  new, keep = posttrain.wanda(kernel, x_norm.astype(np.float32), **target)
  keep_ref = np_wanda(kernel.T, scaler_row, **ref)
  np.testing.assert_array_equal(np.asarray(keep), keep_ref.T)
  np.testing.assert_array_equal(np.asarray(new), np.where(keep_ref.T, kernel,
                                                          0.0))


def test_wanda_exact_count_in_every_output_with_ties():
  # All scores equal: each output prunes exactly round(s * in), its first
  # inputs (ties by position).
  kernel = np.ones((10, 6), np.float32)
  _, keep = posttrain.wanda(kernel, np.ones(10, np.float32), sparsity=0.35)
  keep = np.asarray(keep)
  k = np_count(0.35, 10)  # 4 (3.5 rounds up)
  assert np.all((~keep).sum(axis=0) == k)
  assert np.all(~keep[:k]) and np.all(keep[k:])
  kernel, x = layer_data(50, 12)
  for s in (0.0, 0.13, 0.5, 0.91, 1.0):
    new, keep = posttrain.wanda(kernel, np.linalg.norm(x, axis=0),
                                sparsity=s)
    keep = np.asarray(keep)
    assert np.all((~keep).sum(axis=0) == np_count(s, 50)), s
    assert np.all(np.asarray(new)[~keep] == 0.0)
    assert posttrain.counts_exact(keep, sparsity=s, per_column=True)
  # Wanda is not per-layer magnitude: the input norms change the ranking.
  _, kw = posttrain.wanda(kernel, np.linalg.norm(x, axis=0), sparsity=0.5)
  _, km = posttrain.magnitude(kernel, sparsity=0.5)
  assert not np.array_equal(np.asarray(kw), np.asarray(km))


def test_magnitude_prunes_the_layers_smallest_exactly():
  # Reference: a stable sort of |W| in row-major order, the rule of
  # `jaxsparse.masks` (ties: earlier first).
  kernel, _ = layer_data(40, 24)
  kernel[3, :5] = kernel[7, 2]  # a run of ties.
  for s in (0.3, 0.77):
    new, keep = posttrain.magnitude(kernel, sparsity=s)
    order = np.argsort(np.abs(kernel).ravel(), kind="stable")
    ref = np.ones(kernel.size, bool)
    ref[order[:np_count(s, kernel.size)]] = False
    np.testing.assert_array_equal(np.asarray(keep), ref.reshape(40, 24))
    np.testing.assert_array_equal(np.asarray(new),
                                  np.where(ref.reshape(40, 24), kernel, 0.0))


# --- Paper properties. -------------------------------------------------------


@pytest.mark.parametrize("target", [dict(sparsity=0.5), dict(nm=(2, 4))])
def test_reconstruction_error_sparsegpt_le_wanda_le_magnitude(target):
  kernel, x = layer_data(64, 48, seed=1)
  errs = {}
  errs["magnitude"] = recon_error(
      x, kernel, posttrain.magnitude(kernel, **target)[0])
  errs["wanda"] = recon_error(x, kernel, posttrain.wanda(
      kernel, np.linalg.norm(x, axis=0), **target)[0])
  errs["sparsegpt"] = recon_error(x, kernel, posttrain.sparsegpt(
      kernel, posttrain.hessian(x, chunk_size=200), blocksize=16,
      **target)[0])
  assert errs["sparsegpt"] < errs["wanda"] < errs["magnitude"], errs


@pytest.mark.parametrize("nm", [(2, 4), (4, 8), (1, 4)])
def test_nm_counts_exact_for_every_method(nm):
  kernel, x = layer_data(64, 48)
  n, m = nm
  outs = {
      "magnitude": posttrain.magnitude(kernel, nm=nm),
      "wanda": posttrain.wanda(kernel, np.linalg.norm(x, axis=0), nm=nm),
      "sparsegpt": posttrain.sparsegpt(kernel, x.T @ x, nm=nm, blocksize=16),
  }
  for name, (new, keep) in outs.items():
    keep = np.asarray(keep)
    groups = keep.reshape(64 // m, m, 48).sum(axis=1)
    assert np.all(groups == n), name  # n kept, m - n pruned, per group.
    assert np.all(np.asarray(new)[~keep] == 0.0), name
    assert posttrain.counts_exact(keep, nm=nm), name


def test_hessian_helpers():
  _, x = layer_data(24, 4, tokens=300)
  ref = x.T.astype(np.float64) @ x
  np.testing.assert_allclose(posttrain.hessian(x, chunk_size=64), ref,
                             rtol=1e-5, atol=1e-3)
  chunks = [x[:100].reshape(10, 10, 24), x[100:]]
  np.testing.assert_allclose(posttrain.hessian(chunks), ref, rtol=1e-5,
                             atol=1e-3)
  h = posttrain.accumulate_hessian(jnp.zeros((24, 24)), x[:7])
  assert h.dtype == jnp.float32
  np.testing.assert_allclose(h, x[:7].T @ x[:7], rtol=1e-5, atol=1e-4)
  with pytest.raises(ValueError, match="`h`"):
    posttrain.accumulate_hessian(jnp.zeros((23, 23)), x)
  # Wide inputs: assembled from upper-triangle tiles.
  xw = np.random.default_rng(1).normal(size=(40, 1030)).astype(np.float32)
  np.testing.assert_allclose(layer_lib.gram(xw), xw.T.astype(np.float64) @ xw,
                             rtol=1e-4, atol=1e-3)


# --- Errors are raised before any compute. -----------------------------------


def test_bad_arguments_name_the_parameter_before_compute(monkeypatch):
  def boom(*a, **k):
    raise AssertionError("computed before validating")

  monkeypatch.setattr(layer_lib, "_sparsegpt", boom)
  monkeypatch.setattr(layer_lib, "_prune_by_score", boom)
  kernel = np.ones((12, 4), np.float32)
  h = np.eye(12, dtype=np.float32)
  xn = np.ones(12, np.float32)
  bad = [
      (dict(sparsity=1.5), "`sparsity`"),
      (dict(sparsity=-0.1), "`sparsity`"),
      (dict(nm=(2, 8)), r"`nm`.*divisible"),  # 12 % 8.
      (dict(nm=(5, 4)), r"`nm`.*n .*<= m"),
      (dict(nm=(2,)), "`nm`"),
      (dict(), "exactly one of `sparsity` and `nm`"),
      (dict(sparsity=0.5, nm=(2, 4)), "exactly one"),
  ]
  for kw, match in bad:
    with pytest.raises(ValueError, match=match):
      posttrain.magnitude(kernel, **kw)
    with pytest.raises(ValueError, match=match):
      posttrain.wanda(kernel, xn, **kw)
    with pytest.raises(ValueError, match=match):
      posttrain.sparsegpt(kernel, h, **kw)
  with pytest.raises(ValueError, match="`hessian`"):
    posttrain.sparsegpt(kernel, np.eye(11, dtype=np.float32), sparsity=0.5)
  with pytest.raises(ValueError, match="`x_norm`"):
    posttrain.wanda(kernel, np.ones(4, np.float32), sparsity=0.5)
  with pytest.raises(ValueError, match="`blocksize`"):
    posttrain.sparsegpt(kernel, h, nm=(2, 4), blocksize=6)
  with pytest.raises(ValueError, match="`blocksize`"):
    posttrain.sparsegpt(kernel, h, sparsity=0.5, blocksize=0)
  with pytest.raises(ValueError, match="`percdamp`"):
    posttrain.sparsegpt(kernel, h, sparsity=0.5, percdamp=-1.0)
  with pytest.raises(ValueError, match="`kernel`"):
    posttrain.magnitude(np.ones((2, 3, 4), np.float32), sparsity=0.5)


# --- OWL. --------------------------------------------------------------------


def test_owl_sparsities_follow_the_reference():
  ratios = [0.012, 0.031, 0.008, 0.020, 0.045, 0.010]
  s = np.array(posttrain.owl_sparsities(ratios, 0.7, lam=0.08))
  np.testing.assert_allclose(s, np_owl(ratios, 0.7, 0.08), atol=1e-12)
  assert abs(s.mean() - 0.7) < 1e-12  # the target on average.
  assert abs((s.max() - s.min()) - 0.16) < 1e-12  # spread 2λ.
  # More outliers, less pruning.
  np.testing.assert_array_equal(np.argsort(s), np.argsort(ratios)[::-1])
  assert s[np.argmax(ratios)] < 0.7 < s[np.argmin(ratios)]
  # Symmetric ratios: within [S - λ, S + λ] as the paper states.
  s = posttrain.owl_sparsities([0.0, 0.5, 1.0], 0.5, lam=0.08)
  np.testing.assert_allclose(s, [0.58, 0.5, 0.42], atol=1e-12)
  assert posttrain.owl_sparsities([0.2, 0.2], 0.6) == [0.6, 0.6]
  with pytest.raises(ValueError, match="lam"):
    posttrain.owl_sparsities([0.0, 1.0], 0.97, lam=0.08)
  with pytest.raises(ValueError, match="target"):
    posttrain.owl_sparsities([0.0, 1.0], 1.2)


def test_outlier_ratio_pools_all_layers_of_a_block():
  rng = np.random.default_rng(0)
  a = rng.exponential(size=(30, 20))
  b = rng.exponential(size=(10, 50)) * 3
  pooled = np.concatenate([a.ravel(), b.ravel()])
  want = np.mean(pooled > 5.0 * pooled.mean())
  got = float(posttrain.outlier_ratio([a, b], m=5.0))
  assert 0.0 < want and abs(got - want) < 1e-7
  assert float(posttrain.outlier_ratio(np.ones(10))) == 0.0


# --- Sequential driver on a stub model of jaxsparse.lm's interface. ---------


class StubAttn(nnx.Module):
  def __init__(self, dim, rngs):
    lin = lambda: nnx.Linear(dim, dim, use_bias=False, rngs=rngs)
    self.q_proj, self.k_proj, self.v_proj, self.o_proj = (
        lin(), lin(), lin(), lin())

  def __call__(self, x, positions, record):
    t = x.shape[1]
    q, k, v = self.q_proj(x), self.k_proj(x), self.v_proj(x)
    s = jnp.einsum("btd,bsd->bts", q, k) / math.sqrt(x.shape[-1])
    causal = positions[..., :, None] >= positions[..., None, :t]
    a = jnp.einsum("bts,bsd->btd", jax.nn.softmax(
        jnp.where(causal, s, -1e9), axis=-1), v)
    if record is not None:
      record.update({"self_attn.q_proj": x, "self_attn.k_proj": x,
                     "self_attn.v_proj": x, "self_attn.o_proj": a})
    return self.o_proj(a)


class StubMLP(nnx.Module):
  def __init__(self, dim, hidden, rngs):
    self.gate_proj = nnx.Linear(dim, hidden, use_bias=False, rngs=rngs)
    self.up_proj = nnx.Linear(dim, hidden, use_bias=False, rngs=rngs)
    self.down_proj = nnx.Linear(hidden, dim, use_bias=False, rngs=rngs)

  def __call__(self, x, record):
    g = nnx.silu(self.gate_proj(x)) * self.up_proj(x)
    if record is not None:
      record.update({"mlp.gate_proj": x, "mlp.up_proj": x,
                     "mlp.down_proj": g})
    return self.down_proj(g)


def _rms(x):
  return x * jax.lax.rsqrt(jnp.mean(x * x, axis=-1, keepdims=True) + 1e-5)


class StubBlock(nnx.Module):
  def __init__(self, dim, hidden, rngs):
    self.self_attn = StubAttn(dim, rngs)
    self.mlp = StubMLP(dim, hidden, rngs)

  def __call__(self, h, positions, *, record=None):
    h = h + self.self_attn(_rms(h), positions, record)
    return h + self.mlp(_rms(h), record)


class StubLM(nnx.Module):
  def __init__(self, seed=0, dim=16, hidden=32, n_layers=2, vocab=64):
    rngs = nnx.Rngs(seed)
    self.embed_tokens = nnx.Embed(vocab, dim, rngs=rngs)
    self.layers = nnx.List([StubBlock(dim, hidden, rngs)
                            for _ in range(n_layers)])
    self.norm_scale = nnx.Param(jnp.ones((dim,)))

  def embed(self, tokens):
    return self.embed_tokens(jnp.asarray(tokens))


def _tokens(n=6, t=8, vocab=64, seed=0):
  return np.random.default_rng(seed).integers(0, vocab, (n, t))


def _kernel(block, name):
  obj = block
  for part in name.split("."):
    obj = getattr(obj, part)
  return obj.kernel


def test_driver_prunes_each_block_on_the_pruned_predecessors():
  tokens = _tokens()
  model, masks, report = posttrain.prune(
      StubLM(), tokens, method="wanda", sparsity=0.5, batch_size=4)
  # By hand: block l's statistics from the outputs of pruned blocks < l.
  ref, dense = StubLM(), StubLM()
  pos = jnp.arange(tokens.shape[1])[None]
  h = ref.embed(tokens)
  hd = dense.embed(tokens)
  differs = False

  @nnx.jit
  def run(block, h):
    rec = {}
    return block(h, pos, record=rec), rec

  for block, dblock in zip(ref.layers, dense.layers, strict=True):
    _, rec = run(block, h)
    _, drec = run(dblock, hd)
    for name in seq_lib.LINEARS:
      x = np.asarray(rec[name]).reshape(-1, rec[name].shape[-1])
      new, keep = posttrain.wanda(_kernel(block, name).get_value(),
                                  np.linalg.norm(x, axis=0), sparsity=0.5)
      _kernel(block, name).set_value(new)
      xd = np.asarray(drec[name]).reshape(-1, drec[name].shape[-1])
      _, keep_dense = posttrain.wanda(_kernel(dblock, name).get_value(),
                                      np.linalg.norm(xd, axis=0),
                                      sparsity=0.5)
      differs |= not np.array_equal(np.asarray(keep), np.asarray(keep_dense))
    h, _ = run(block, h)  # the pruned block.
    hd, _ = run(dblock, hd)
  for i, (a, b) in enumerate(zip(model.layers, ref.layers, strict=True)):
    for name in seq_lib.LINEARS:
      np.testing.assert_allclose(_kernel(a, name).get_value(),
                                 _kernel(b, name).get_value(), atol=1e-6,
                                 err_msg=f"block {i} {name}")
  assert differs  # dense activations would give other masks downstream.
  assert report.exact and len(report.layers) == 14
  for r in report.layers:
    assert r.exact and r.target == 0.5 and r.achieved == 0.5


def test_driver_masks_work_with_apply_masks_and_prune():
  # hidden = dim: every kernel is 16 x 16 (one SparseGPT compile).
  model, masks, report = posttrain.prune(
      StubLM(hidden=16), _tokens(), method="sparsegpt", nm=(2, 4),
      batch_size=2)
  assert report.exact and report.sparsity == 0.5
  state = nnx.state(model, nnx.Param)
  flat = jax.tree.flatten_with_path(
      masks, is_leaf=lambda x: x is None)[0]
  chosen = {jaxsparse._src.core.masks.path_str(p) for p, m in flat
            if m is not None}
  assert chosen == {r.path for r in report.layers} and len(chosen) == 14
  assert masks["embed_tokens"]["embedding"] is None
  assert masks["norm_scale"] is None
  # Pruned kernels are already zero: apply_masks changes nothing.
  again = jaxsparse.apply_masks(state, masks)
  for a, b in zip(jax.tree.leaves(again), jax.tree.leaves(state),
                  strict=True):
    np.testing.assert_array_equal(a, b)
  for block in model.layers:
    for name in seq_lib.LINEARS:
      k = np.asarray(_kernel(block, name).get_value())
      groups = (k != 0).reshape(k.shape[0] // 4, 4, -1).sum(axis=1)
      assert np.all(groups <= 2)
  # `jaxsparse.prune` takes them as fixed initial masks.
  params = nnx.state(model, nnx.Param)
  tx = jaxsparse.prune(0.0, initial_masks=masks, optimizer=optax.sgd(0.1))
  got = jaxsparse.get_masks(tx.init(params))
  for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(masks), strict=True):
    np.testing.assert_array_equal(a, b)
  assert got["norm_scale"] is None and got["embed_tokens"]["embedding"] is None


def test_driver_owl_and_global_magnitude():
  tokens = _tokens()
  model, masks, report = posttrain.prune(
      StubLM(n_layers=3), tokens, method="wanda", sparsity=0.6, owl=True,
      owl_lambda=0.05, batch_size=3)
  s = np.array(report.block_sparsities)
  assert abs(s.mean() - 0.6) < 1e-12 and abs(np.ptp(s) - 0.1) < 1e-12
  np.testing.assert_array_equal(np.argsort(s),
                                np.argsort(report.outlier_ratios)[::-1])
  assert report.exact
  for r in report.layers:
    assert r.target == s[r.block]
    keep = np.asarray(masks["layers"][r.block][r.path.split("/")[2]][
        r.path.split("/")[3]]["kernel"])
    assert np.all((~keep).sum(axis=0) == np_count(s[r.block],
                                                  keep.shape[0]))
  model, masks, report = posttrain.prune(
      StubLM(), None, method="magnitude", sparsity=0.7, scope="global")
  kernels = [np.asarray(_kernel(b, n).get_value()) for b in model.layers
             for n in seq_lib.LINEARS]
  total = sum(k.size for k in kernels)
  pruned = sum(int((~np.asarray(m)).sum()) for m in jax.tree.leaves(masks))
  assert pruned == np_count(0.7, total) and report.exact
  assert len({round(r.achieved, 6) for r in report.layers}) > 1
  # One global threshold: every kept |w| >= every pruned |w|.
  leaves = zip(jax.tree.leaves(nnx.state(StubLM(), nnx.Param)),
               jax.tree.leaves(masks, is_leaf=lambda x: x is None),
               strict=True)
  dense, keeps = zip(*[(np.asarray(d), np.asarray(m)) for d, m in leaves
                       if m is not None], strict=True)
  kept = min(np.abs(d[k]).min() for d, k in zip(dense, keeps, strict=True))
  gone = max(np.abs(d[~k]).max() for d, k in zip(dense, keeps, strict=True))
  assert kept >= gone


def test_driver_errors_before_any_compute(monkeypatch):
  def boom(*a, **k):
    raise AssertionError("computed before validating")

  monkeypatch.setattr(seq_lib, "_block_stats", boom)
  monkeypatch.setattr(layer_lib, "_prune_by_score", boom)
  model, tokens = StubLM(), _tokens()
  bad = [
      (dict(method="obs", sparsity=0.5), "`method`"),
      (dict(method="wanda", sparsity=1.2), "`sparsity`"),
      (dict(method="wanda", nm=(2, 3)), r"`nm`.*divisible"),
      (dict(method="magnitude", sparsity=0.5, owl=True), "`owl`"),
      (dict(method="sparsegpt", nm=(2, 4), owl=True), "`owl`"),
      (dict(method="wanda", sparsity=0.5, scope="global"), "`scope`"),
      (dict(method="wanda", sparsity=0.5, batch_size=0), "`batch_size`"),
      (dict(method="sparsegpt", sparsity=0.5, percdamp=-1), "`percdamp`"),
      (dict(method="wanda", sparsity=0.5, linears=("mlp.w1",)), "mlp.w1"),
  ]
  for kw, match in bad:
    with pytest.raises(ValueError, match=match):
      posttrain.prune(model, tokens, **kw)
  with pytest.raises(ValueError, match="`calib_tokens`"):
    posttrain.prune(model, None, method="wanda", sparsity=0.5)
  with pytest.raises(ValueError, match="`calib_tokens`"):
    posttrain.prune(model, np.ones((2, 3, 4), np.int32), method="wanda",
                    sparsity=0.5)


# --- The real decoder, if present. -------------------------------------------


def test_driver_on_jaxsparse_lm_llama():
  lm = pytest.importorskip("jaxsparse.lm")
  cfg = lm.tiny(dim=32, n_layers=2, n_heads=2, n_kv_heads=2, hidden_dim=64,
                max_seq_len=16)
  model = lm.Llama(cfg, rngs=nnx.Rngs(0))
  tokens = _tokens(4, 16, vocab=cfg.vocab_size)
  model, masks, report = posttrain.prune(
      model, tokens, method="wanda", sparsity=0.5, batch_size=2)
  assert report.exact and len(report.layers) == 7 * cfg.n_layers
  assert all(r.achieved == 0.5 for r in report.layers)
  state = nnx.state(model, nnx.Param)
  for (path, leaf), m in zip(
      jax.tree.flatten_with_path(
          state, is_leaf=lambda x: isinstance(x, nnx.Variable))[0],
      jax.tree.leaves(masks, is_leaf=lambda x: x is None), strict=True):
    assert (m is not None) == lm.prunable(path, leaf), path
    if m is not None:
      w = np.asarray(leaf.get_value())
      assert np.all(w[~np.asarray(m)] == 0.0)
      assert np.all((w == 0).sum(axis=0) == w.shape[0] // 2)  # per output.
