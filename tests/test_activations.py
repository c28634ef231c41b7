"""Activation sparsity: measurement, induced sparsity, sparse decoding.

Kept fast on CPU: the models are built once per module (inside `nnx.jit`,
one compilation instead of one per initializer), every computation runs
inside one `jax.jit` (eager calls compile each primitive separately), and
the Pallas kernel runs in interpret mode on small shapes.
"""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxsparse import activations as act
from jaxsparse import lm
from jaxsparse.experiments import config as config_lib
from jaxsparse.experiments import data as data_lib
from jaxsparse.experiments import errors, models, train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _build(make):
  """`make()` run inside `nnx.jit`: one compilation for all initializers."""
  return nnx.jit(make)()


def _tiny_lm(seed=0, n_layers=1):
  cfg = lm.tiny(dim=64, hidden_dim=128, n_layers=n_layers, n_heads=2,
                n_kv_heads=1)
  return _build(lambda: lm.Llama(cfg, rngs=nnx.Rngs(seed)))


# The models are shared and never changed: `intercept` and `sparsify`
# leave them as they were (checked in the ReLU-fication test).
@pytest.fixture(scope="module")
def lm1():
  return _tiny_lm()


@pytest.fixture(scope="module")
def lm2():
  return _tiny_lm(n_layers=2)


@pytest.fixture(scope="module")
def vit():
  return _build(lambda: models.SmallViT(10, (8, 8, 1), rngs=nnx.Rngs(0)))


@pytest.fixture(scope="module")
def mlp():
  return _build(lambda: models.MLP(10, (8, 8, 1), hidden=(32, 16),
                                   rngs=nnx.Rngs(0)))


@pytest.fixture(scope="module")
def text_batches():
  train_text, valid_text = lm.split(lm.pydoc_topics())
  tok = lm.ByteTokenizer()
  a = tok.encode(train_text)
  b = tok.encode(valid_text)
  calib = [x for x, _ in lm.lm_batches(a, 16, 64, seed=0, num_batches=2)]
  held = [x for x, _ in lm.lm_batches(b, 16, 64, seed=1, num_batches=2)]
  return calib, held


# ---------------------------------------------------------- measurement
def test_measure_matches_numpy_count_on_runner_mlp(mlp):
  rng = np.random.default_rng(0)
  xs = [rng.random((7, 8, 8, 1)).astype(np.float32) for _ in range(3)]
  xs[0][:, :4] = 0.0  # some exact zeros in the input layer
  dens = act.measure_density(mlp, xs, threshold=0.1)
  assert list(dens) == ["hidden/0", "hidden/1", "out"]
  # numpy reference: the same layers by hand
  get = lambda v: np.asarray(v.get_value())
  w0, b0 = get(mlp.hidden[0].kernel), get(mlp.hidden[0].bias)
  w1, b1 = get(mlp.hidden[1].kernel), get(mlp.hidden[1].bias)
  inputs = {"hidden/0": [], "hidden/1": [], "out": []}
  for x in xs:
    h0 = x.reshape(len(x), -1)
    h1 = np.maximum(h0 @ w0 + b0, 0)
    inputs["hidden/0"].append(h0)
    inputs["hidden/1"].append(h1)
    inputs["out"].append(np.maximum(h1 @ w1 + b1, 0))
  for name, parts in inputs.items():
    v = np.concatenate([q.ravel() for q in parts])
    assert dens[name].size == v.size
    assert dens[name].nonzero == pytest.approx(np.mean(v != 0), abs=1e-6)
    assert dens[name].above == pytest.approx(np.mean(np.abs(v) > 0.1),
                                             abs=2e-3)
  assert dens["hidden/1"].nonzero < 0.9  # ReLU zeros show up


def test_measure_lm_and_vit_names(lm1, vit):
  toks = np.random.default_rng(0).integers(0, 256, (2, 16))
  dens = act.measure_density(lm1, [toks])
  assert "layers/0/mlp/down_proj" in dens and "layers/0/mlp/act" in dens
  assert "layers/0/self_attn/o_proj" in dens
  d = act.measure_density(vit, [np.ones((2, 8, 8, 1), np.float32)])
  assert "blocks/0/fc2" in d and "blocks/1/attn/query" in d
  with pytest.raises(ValueError, match="threshold"):
    act.measure_density(lm1, [toks], threshold=-1.0)


# --------------------------------------------------------------- top-k
def test_topk_keeps_exactly_k_with_ties():
  x = jnp.asarray([[1.0, -1.0, 1.0, 0.5, 1.0, 0.0],
                   [0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
                   [3.0, -4.0, 2.0, 2.0, -2.0, 1.0]])
  big = jax.random.normal(jax.random.PRNGKey(0), (4, 5, 64))
  m, y, mb = jax.jit(lambda x, big: (act.topk_mask(x, 2), act.topk(x, 3),
                                     act.topk_mask(big, 7)))(x, big)
  m = np.asarray(m)
  assert (m.sum(-1) == 2).all()  # ties (row 0: four 1s, row 1: all 0)
  np.testing.assert_array_equal(m[0], [1, 1, 0, 0, 0, 0])  # lower index
  np.testing.assert_array_equal(m[2], [1, 1, 0, 0, 0, 0])
  np.testing.assert_array_equal(np.asarray(y)[2], [3.0, -4.0, 2.0, 0, 0, 0])
  assert (np.asarray(mb).sum(-1) == 7).all()
  for bad in (0, 7, 2.5):
    with pytest.raises(ValueError, match="k must be"):
      act.topk_mask(x, bad)


def test_topk_hook_in_lm_keeps_k_per_token(lm1):
  toks = np.random.default_rng(1).integers(0, 256, (2, 8))
  d = act.measure_density(lm1, [toks], hook=act.topk_hook(16),
                          include=act.default_include)
  assert d["layers/0/mlp/down_proj"].nonzero == pytest.approx(16 / 128)
  assert d["layers/0/self_attn/q_proj"].nonzero == pytest.approx(16 / 64)


# ---------------------------------------------------------- thresholds
def test_calibrate_quantiles_per_input_type():
  rng = np.random.default_rng(0)
  names = [f"layers/0/{n.replace('.', '/')}" for n in lm.LINEAR_NAMES]
  samples = {n: np.abs(rng.standard_normal(10_000)) * (i + 1)
             for i, n in enumerate(names)}
  th = act.calibrate(samples, 0.3)
  assert set(th) == set(names)
  for n, t in th.items():
    assert np.mean(samples[n] < t) == pytest.approx(0.3, abs=1e-3)
  spec = {act.LLAMA_INPUT_TYPES["down"]: 0.6,
          act.LLAMA_INPUT_TYPES["gate_up"]: 0.0}
  th = act.calibrate(samples, spec)
  assert set(th) == {f"layers/0/mlp/{n}"
                     for n in ("gate_proj", "up_proj", "down_proj")}
  assert th["layers/0/mlp/gate_proj"] == 0.0  # 0: keep everything
  assert np.mean(samples["layers/0/mlp/down_proj"] < th[
      "layers/0/mlp/down_proj"]) == pytest.approx(0.6, abs=1e-3)
  hook = act.threshold_hook(th)
  x = jnp.asarray([0.0, 1e-3, -5.0])
  np.testing.assert_array_equal(hook("layers/0/self_attn/q_proj", x), x)
  with pytest.raises(ValueError, match="sparsity"):
    act.calibrate(samples, {"down": 1.0})


def test_teal_thresholds_hit_target_on_held_out_text(lm2, text_batches):
  """Per input type targets of 40 % and 50 %, o_proj left dense; the
  thresholds come from training text, the check is on validation text."""
  calib, held = text_batches
  types = act.LLAMA_INPUT_TYPES
  spec = {types["qkv"]: 0.4, types["gate_up"]: 0.5, types["down"]: 0.4}
  th = act.teal_thresholds(lm2, calib, spec)
  assert set(th) == {f"layers/{i}/{n.replace('.', '/')}" for i in range(2)
                     for n in lm.LINEAR_NAMES if "o_proj" not in n}
  d = act.measure_density(lm2, held, hook=act.threshold_hook(th))
  target = {k: 0.4 if ("/mlp/down" in k or "/self_attn/" in k) else 0.5
            for k in th}
  for s in (0.4, 0.5):
    ks = [k for k in th if target[k] == s]
    zeros = sum((1 - d[k].nonzero) * d[k].size for k in ks)
    overall = zeros / sum(d[k].size for k in ks)
    assert abs(overall - s) <= 0.01, (s, overall)
  # Per layer, held-out text shifts an untrained model's inputs more
  # (one embedding per byte, other byte frequencies; attention outputs):
  # the MLP inputs stay within 1 %, every layer within 5 %.
  for k in th:
    tol = 0.01 if "/mlp/" in k else 0.05
    assert abs((1 - d[k].nonzero) - target[k]) <= tol, (k, d[k])
  for i in range(2):  # the layers without a threshold are untouched
    assert d[f"layers/{i}/self_attn/o_proj"].nonzero > 0.999
  assert d["lm_head"].nonzero > 0.999
  for bad in (1.0, -0.1, "x"):
    with pytest.raises(ValueError, match="sparsity"):
      act.teal_thresholds(lm2, calib[:1], bad)
  with pytest.raises(ValueError, match="passes"):
    act.teal_thresholds(lm2, calib[:1], 0.5, passes=0)


def test_cats_threshold_on_gate_and_sparsified_model(lm1, mlp,
                                                     text_batches):
  calib, held = text_batches
  m = lm1
  th = act.cats_thresholds(m, calib[:1], 0.5)
  assert set(th) == {"layers/0/mlp/act"}
  hook = act.threshold_hook(th)
  d = act.measure_density(m, held[:1], hook=hook)
  # zeroing the gate activation zeroes the down projection's input
  assert abs((1 - d["layers/0/mlp/down_proj"].nonzero) - 0.5) < 0.03
  # reference for block 0's MLP by hand
  blk = m.layers[0]
  hin = jnp.asarray(np.random.default_rng(0).normal(size=(1, 3, 64)),
                    jnp.float32)

  @jax.jit
  def block(hin):
    a = nnx.silu(blk.mlp.gate_proj(hin))
    a = jnp.where(jnp.abs(a) >= th["layers/0/mlp/act"], a, 0)
    ref = blk.mlp.down_proj(a * blk.mlp.up_proj(hin))
    with act.intercept(m, hook):
      got = m.layers[0].mlp(hin)
    return ref, got

  ref, got = block(hin)
  np.testing.assert_allclose(got, ref, atol=1e-5)
  # the wrapper works through lm.evaluate (split/merge inside jit): its
  # loss is the sparse model's, computed here from the wrapper's logits
  sparse = act.sparsify(m, hook)
  toks = held[0][:2].reshape(-1)
  e_dense = lm.evaluate(m, toks, 32, 2)
  e_sparse = lm.evaluate(sparse, toks, 32, 2)
  assert e_sparse["loss"] != e_dense["loss"]
  x, y = lm.eval_windows(toks, 32)
  logp = jax.nn.log_softmax(jax.jit(lambda t: sparse(t))(x), axis=-1)
  nll = -np.take_along_axis(np.asarray(logp), y[..., None], -1).mean()
  assert e_sparse["loss"] == pytest.approx(nll, rel=1e-5)
  with pytest.raises(ValueError, match="gated MLP"):
    act.cats_thresholds(mlp, [np.ones((2, 8, 8, 1), np.float32)], 0.5)


# ------------------------------------------------------- ReLU-fication
def test_relufication_changes_the_function_as_expected(lm1, vit):
  m = lm1
  mlp = m.layers[0].mlp
  x = jax.random.normal(jax.random.PRNGKey(0), (1, 4, 64))
  toks = np.arange(16)[None] % 256
  r = act.relufied(m)

  @jax.jit
  def run(x, toks):
    ref = mlp.down_proj(jax.nn.relu(mlp.gate_proj(x) - 0.1) * mlp.up_proj(x))
    with act.intercept(m, activation=act.shifted_relu(0.1)):
      got = m.layers[0].mlp(x)
    restored = m.layers[0].mlp(x)  # restored afterwards
    silu_ref = mlp.down_proj(nnx.silu(mlp.gate_proj(x)) * mlp.up_proj(x))
    return ref, got, restored, silu_ref, r(toks), m(toks)

  ref, got, restored, silu_ref, r_out, m_out = run(x, toks)
  np.testing.assert_allclose(got, ref, atol=1e-6)
  np.testing.assert_allclose(restored, silu_ref, atol=1e-6)
  assert not np.allclose(r_out, m_out)
  d = act.measure_density(m, [toks], activation=act.shifted_relu())
  assert d["layers/0/mlp/act"].nonzero < 0.7  # ReLU zeros the negatives
  # a GELU MLP (the runner's ViT block): fc2(relu(fc1 x))
  blk = vit.blocks[0]
  h = jax.random.normal(jax.random.PRNGKey(1), (2, 16, 32))

  @jax.jit
  def vit_block(h):
    y = h + blk.attn(blk.ln1(h), deterministic=True)
    ref = y + blk.fc2(jax.nn.relu(blk.fc1(blk.ln2(y))))
    with act.intercept(vit, activation=act.shifted_relu()):
      got = vit.blocks[0](h)
    return ref, got

  ref, got = vit_block(h)
  np.testing.assert_allclose(got, ref, atol=1e-5)
  with act.intercept(m):
    with pytest.raises(ValueError, match="already intercepted"):
      with act.intercept(m):
        pass


def test_straight_through_trains_through_the_mask(lm1):
  hook = act.straight_through(act.threshold_hook({"a": 0.5}))
  x = jnp.asarray([0.1, -0.7, 0.4, 2.0])
  y, g = jax.jit(lambda v: (hook("a", v), jax.grad(
      lambda v: jnp.sum(hook("a", v) * jnp.arange(4.0)))(v)))(x)
  np.testing.assert_allclose(y, [0.0, -0.7, 0.0, 2.0])
  np.testing.assert_array_equal(g, jnp.arange(4.0))  # identity backward
  toks = np.random.default_rng(0).integers(0, 256, (2, 9))
  splits = [nnx.split(act.sparsify(lm1, h), nnx.Param, ...) for h in (
      act.straight_through(act.topk_hook(8)), act.topk_hook(8))]

  @jax.jit
  def gate_grads(params):
    out = []
    for (gd, _, rest), p in zip(splits, params, strict=True):

      def loss(p, gd=gd, rest=rest):
        logits = nnx.merge(gd, p, rest)(toks[:, :-1])
        return -jnp.mean(jax.nn.log_softmax(logits)[..., 0])

      g = jax.grad(loss)(p)
      out.append(g["model"]["layers"][0]["mlp"]["gate_proj"][
          "kernel"].get_value())
    return out

  g_ste, g_plain = map(np.asarray, gate_grads([s[1] for s in splits]))
  # STE: the gradient also reaches the dropped activations' producers
  assert np.isfinite(g_ste).all() and np.abs(g_plain).max() > 0
  assert not np.allclose(g_ste, g_plain)


# ---------------------------------------------------------- decoding
@pytest.mark.parametrize("k,n,t", [(60, 256, 0.7), (40, 128, 0.0)])
def test_sparse_matvec_equals_dense_on_masked_input(k, n, t):
  rng = np.random.default_rng(k + n)
  x = rng.standard_normal(k).astype(np.float32)
  w = rng.standard_normal((k, n)).astype(np.float32)
  x[:5] = 9.0  # some active entries for any t
  ref = np.where(np.abs(x) >= t, x, 0).astype(np.float64) @ w
  got, got_p = jax.jit(lambda x, w: (
      act.sparse_matvec(x, w, t),
      act.sparse_matvec(x, w, t, backend="pallas", block_n=128,
                        interpret=True)))(jnp.asarray(x), jnp.asarray(w))
  np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(got_p, ref, rtol=1e-4, atol=1e-4)


def test_active_entries_and_capacity():
  x = jnp.asarray([0.0, 2.0, 0.0, -1.0, 3.0])
  a = jax.jit(act.active_entries, static_argnums=1)(x, 4)
  np.testing.assert_array_equal(a.index, [1, 3, 4, 4])
  np.testing.assert_array_equal(a.value, [2.0, -1.0, 3.0, 0.0])
  assert int(a.count) == 3
  with pytest.raises(ValueError, match="capacity"):
    act.active_entries(x, 6)
  with pytest.raises(ValueError, match="x must be one vector"):
    act.sparse_matvec(jnp.ones((2, 5)), jnp.ones((5, 3)))
  with pytest.raises(ValueError, match="backend"):
    jax.jit(lambda x: act.sparse_matvec(x, jnp.ones((5, 3)),
                                        backend="cuda"))(x)


def test_mlp_decode_matches_dense_on_thresholded_inputs(lm1):
  mlp = lm1.layers[0].mlp
  x = jax.random.normal(jax.random.PRNGKey(2), (64,))

  @jax.jit
  def run(x):
    w = act.pack_mlp(mlp)
    t_in = jnp.quantile(jnp.abs(x), 0.5)
    xs = act.threshold(x, t_in)
    g, u = jnp.split(xs @ w.gate_up, 2)
    h = jax.nn.silu(g) * u
    t_h = jnp.quantile(jnp.abs(h), 0.5)
    ref = act.threshold(h, t_h) @ w.down
    return (act.mlp_decode(w, x, t_in, t_h), ref,
            act.dense_mlp_decode(w, x), mlp(x[None, None])[0, 0])

  got, ref, dense, module = run(x)
  np.testing.assert_allclose(got, ref, atol=1e-5)
  np.testing.assert_allclose(dense, module, atol=1e-5)
  assert not np.allclose(got, dense, atol=1e-3)  # the thresholds matter


def test_pallas_kernel_lowers_for_tpu():
  x = jnp.ones((256,), jnp.float32)
  w = jnp.ones((256, 512), jnp.float32)
  f = lambda x, w: act.sparse_matvec(x, w, 0.5, backend="pallas",
                                     block_n=256)
  text = jax.jit(f).trace(x, w).lower(lowering_platforms=("tpu",)).as_text()
  assert text.count("tpu_custom_call") == 1
  with pytest.raises(ValueError, match="block_n"):
    act.sparse_matvec(x, w, 0.5, backend="pallas", block_n=100)


# -------------------------------------------------------------- runner
def test_runner_records_activation_density(tmp_path):
  d = tmp_path / "tfds"
  data_lib.prepare_digits(str(d))
  c = config_lib.load(os.path.join(ROOT, "configs", "default.py"))
  c.data_dir = str(d)
  c.model_kwargs.hidden = (32,)
  c.num_steps, c.num_epochs, c.eval_every = 20, -1, 10
  c.pruning.method = "none"
  c.tensorboard = False
  c.activations.record_every = 10
  res = train.train_and_evaluate(c, str(tmp_path / "run"), progress=False)
  hist = res["activation_density"]
  assert [h["step"] for h in hist] == [10, 20]
  assert set(hist[0]["density"]) == {"hidden/0", "out"}
  assert 0 < hist[-1]["density"]["out"] < 1  # post-ReLU zeros
  assert (tmp_path / "run" / "activation_density.png").exists()
  saved = json.load(open(tmp_path / "run" / "activation_density.json"))
  assert saved == hist
  c.activations.record_every = -1
  with pytest.raises(errors.ConfigError,
                     match="config.activations.record_every"):
    config_lib.validate(c)
