"""Pruning at initialization: SNIP, GraSP and SynFlow against the papers."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxsparse
from jaxsparse._src.pai import pai

# --------------------------------------------------------------------------
# Small models as plain functions.


def _mlp_params(key, sizes, bias=False, scale=1.0):
  params = {}
  for i, (a, b) in enumerate(itertools.pairwise(sizes)):
    key, k1, k2 = jax.random.split(key, 3)
    layer = {"kernel": scale * jax.random.normal(k1, (a, b)) * np.sqrt(2 / a)}
    if bias:
      layer["bias"] = 0.1 * jax.random.normal(k2, (b,))
    params[f"l{i}"] = layer
  return params


def _mlp(params, x, act=jax.nn.relu):
  n = len(params)
  for i in range(n):
    layer = params[f"l{i}"]
    x = x @ layer["kernel"] + layer.get("bias", 0.0)
    if i < n - 1:
      x = act(x)
  return x


def _cnn_params(key):
  k1, k2, k3 = jax.random.split(key, 3)
  return {
      "c0": {"kernel": jax.random.normal(k1, (3, 3, 2, 4)) * 0.3},
      "c1": {"kernel": jax.random.normal(k2, (3, 3, 4, 3)) * 0.3},
      "fc": {"kernel": jax.random.normal(k3, (6 * 6 * 3, 5)) * 0.1},
  }


def _conv(x, w):
  return jax.lax.conv_general_dilated(
      x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))


def _cnn(params, x):
  x = jax.nn.relu(_conv(x, params["c0"]["kernel"]))
  x = jax.nn.relu(_conv(x, params["c1"]["kernel"]))
  return x.reshape(x.shape[0], -1) @ params["fc"]["kernel"]


def _kernels(tree):
  return [x for x in jax.tree.leaves(tree) if x is not None]


# --------------------------------------------------------------------------
# SynFlow.


def test_synflow_scores_match_closed_form_and_conserve_on_mlp():
  sizes = [12, 20, 15, 7]
  params = _mlp_params(jax.random.PRNGKey(0), sizes)
  scores = pai.synflow(_mlp, params, (12,))
  r = float(pai.synaptic_flow(_mlp, params, (12,)))
  w = [np.abs(np.asarray(params[f"l{i}"]["kernel"], np.float64))
       for i in range(3)]
  # R = 1^T |W0| |W1| |W2| 1 and S_l = |W_l| * (1^T prod_{<l}) (prod_{>l} 1).
  r_np = np.ones(12) @ w[0] @ w[1] @ w[2] @ np.ones(7)
  np.testing.assert_allclose(r, r_np, rtol=1e-5)
  left = [np.ones(12), np.ones(12) @ w[0], np.ones(12) @ w[0] @ w[1]]
  right = [w[1] @ w[2] @ np.ones(7), w[2] @ np.ones(7), np.ones(7)]
  s = [np.asarray(scores[f"l{i}"]["kernel"]) for i in range(3)]
  for i in range(3):
    np.testing.assert_allclose(
        s[i], w[i] * np.outer(left[i], right[i]), rtol=1e-4, atol=1e-6)
    # Conservation per layer: every layer's scores sum to R.
    np.testing.assert_allclose(s[i].sum(), r_np, rtol=1e-4)
  # Conservation per hidden unit: incoming = outgoing.
  for i in range(2):
    np.testing.assert_allclose(s[i].sum(0), s[i + 1].sum(1), rtol=1e-4)


def test_synflow_conservation_on_cnn():
  params = _cnn_params(jax.random.PRNGKey(1))
  scores = pai.synflow(_cnn, params, (6, 6, 2), x64=True)
  r = float(pai.synaptic_flow(_cnn, params, (6, 6, 2), x64=True))
  assert r > 0
  s0, s1, sf = (np.asarray(scores[k]["kernel"], np.float64)
                for k in ("c0", "c1", "fc"))
  # With x64 the scores are rescaled by one power of two: compare ratios.
  scale = s0.sum() / r
  for s in (s0, s1, sf):
    np.testing.assert_allclose(s.sum() / scale, r, rtol=1e-6)
  # Per channel: what flows into channel c equals what flows out of it.
  np.testing.assert_allclose(s0.sum((0, 1, 2)), s1.sum((0, 1, 3)), rtol=1e-6)
  out_fc = sf.reshape(6, 6, 3, 5).sum((0, 1, 3))
  np.testing.assert_allclose(s1.sum((0, 1, 2)), out_fc, rtol=1e-6)


def test_synflow_uses_absolute_values_of_every_leaf():
  key = jax.random.PRNGKey(2)
  params = _mlp_params(key, [5, 6, 3], bias=True)
  flipped = jax.tree.map(lambda x: -x, params)
  a = pai.synflow(_mlp, params, (5,))
  b = pai.synflow(_mlp, flipped, (5,))
  for x, y in zip(_kernels(a), _kernels(b), strict=True):
    np.testing.assert_allclose(x, y, rtol=1e-6)
  # Biases count (|b| > 0 adds flow) but are not scored.
  assert a["l0"]["bias"] is None
  r_bias = pai.synaptic_flow(_mlp, params, (5,))
  no_bias = jax.tree.map(
      lambda x: x, {k: {"kernel": v["kernel"]} for k, v in params.items()})
  assert float(r_bias) > float(pai.synaptic_flow(_mlp, no_bias, (5,)))


def test_synflow_density_schedule():
  # rho = 0.01: density 0.954993 after round 1 and 0.1 after round 50 of 100.
  np.testing.assert_allclose(pai.synflow_density(0.99, 1, 100), 0.954993,
                             rtol=1e-6)
  np.testing.assert_allclose(pai.synflow_density(0.99, 50, 100), 0.1,
                             rtol=1e-6)


def test_iterative_synflow_avoids_collapse_where_magnitude_collapses():
  sizes = [256, 64, 32, 10]  # unequal widths: 16384, 2048, 320 weights.
  params = _mlp_params(jax.random.PRNGKey(0), sizes)
  n = sum(a * b for a, b in itertools.pairwise(sizes))
  ones = jaxsparse.ones_masks(params)
  traces = []

  def counted(p, x):
    traces.append(1)
    return _mlp(p, x)

  run = pai.iterative_synflow(counted, (256,), rounds=100)
  for keep in (100, 3):  # 3 weights = one path: the maximal compression.
    s = 1.0 - keep / n
    masks = run(params, s, ones)
    kept = [int(m.sum()) for m in _kernels(masks)]
    assert sum(kept) == keep
    assert min(kept) >= 1, kept
    assert float(pai.synaptic_flow(_mlp, params, (256,), masks)) > 0
  # One compiled loop: the model is traced once, not once per round, and
  # the traced sparsity reuses the compilation.
  assert len(traces) == 1
  # Single-shot global magnitude already collapses the widest layer.
  s = 1.0 - 100 / n
  mag = pai.masks_from_scores(jax.tree.map(jnp.abs, params), params, s)
  kept = [int(m.sum()) for m in _kernels(mag)]
  assert sum(kept) == 100 and kept[0] == 0
  assert float(pai.synaptic_flow(_mlp, params, (256,), mag)) == 0.0


def test_synflow_masks_prune_exact_counts_and_only_shrink():
  params = _mlp_params(jax.random.PRNGKey(3), [10, 8, 4])
  n = 10 * 8 + 8 * 4
  start = jaxsparse.ones_masks(params)
  start["l0"]["kernel"] = start["l0"]["kernel"].at[0, :].set(False)
  masks = pai.synflow_masks(_mlp, params, (10,), 0.75, rounds=5,
                            masks=start)
  assert sum(int((~m).sum()) for m in _kernels(masks)) == round(0.75 * n)
  assert not bool(masks["l0"]["kernel"][0].any())
  assert masks["l0"].get("bias") is None


def test_one_shot_mask_functions_compile_once_per_shape():
  # A second call with the same shapes and hyper-parameters (new sparsity
  # and weights, fresh factory objects) reuses the compiled function: the
  # model is traced once.
  traces = []

  def apply_fn(p, x):
    traces.append(1)
    return _mlp(p, x)

  params = _mlp_params(jax.random.PRNGKey(5), [6, 5, 3])
  other = jax.tree.map(lambda x: 2.0 * x, params)
  pai.synflow_masks(apply_fn, params, (6,), 0.5, rounds=3)
  first = len(traces)
  assert first > 0
  pai.synflow_masks(apply_fn, other, (6,), 0.7, rounds=3,
                    allocation=jaxsparse.allocation.global_(),
                    structure=jaxsparse.structures.unstructured())
  pai.iterative_synflow(apply_fn, (6,), rounds=3)(
      params, 0.6, jaxsparse.ones_masks(params))
  assert len(traces) == first

  # The jitted functions behind `masks_from_scores` and `jaxsparse.masks`.
  from jaxsparse._src.core import prune as prune_lib
  for one_shot, jitted in (
      (lambda p, s: pai.masks_from_scores(
          p, p, s, allocation=jaxsparse.allocation.uniform()), pai._masks_jit),
      (lambda p, s: jaxsparse.masks(
          p, s, allocation=jaxsparse.allocation.erk()), prune_lib._masks_jit)):
    one_shot(params, 0.5)
    size = jitted._cache_size()
    one_shot(other, 0.8)
    assert jitted._cache_size() == size


def test_synflow_x64_survives_float32_overflow():
  # |W| ~ 1e14: R ~ 8 * (3e14)^3 ~ 2e44 overflows float32 (max 3.4e38).
  params = _mlp_params(jax.random.PRNGKey(4), [8, 8, 8, 8], scale=1e14)
  r32 = pai.synaptic_flow(_mlp, params, (8,))
  assert not np.isfinite(float(r32))
  scores = pai.synflow(_mlp, params, (8,), x64=True)
  sums = np.asarray([np.asarray(s, np.float64).sum()
                     for s in _kernels(scores)])
  assert np.all(np.isfinite(sums)) and np.all(sums > 0)
  np.testing.assert_allclose(sums, sums[0], rtol=1e-5)  # conservation
  # Same ranking as float64 scores computed without rescaling.
  w = [np.abs(np.asarray(params[f"l{i}"]["kernel"], np.float64))
       for i in range(3)]
  want = w[1] * np.outer(np.ones(8) @ w[0], w[2] @ np.ones(8))
  np.testing.assert_array_equal(np.argsort(np.asarray(scores["l1"]["kernel"]),
                                           axis=None, kind="stable"),
                                np.argsort(want, axis=None, kind="stable"))
  masks = pai.synflow_masks(_mlp, params, (8,), 0.9, rounds=3, x64=True)
  kept = [int(m.sum()) for m in _kernels(masks)]
  assert sum(kept) == 192 - round(0.9 * 192) and min(kept) >= 1


def test_synflow_nnx_adapter_uses_running_statistics():
  nnx = pytest.importorskip("flax.nnx")

  class Net(nnx.Module):

    def __init__(self, rngs):
      self.l0 = nnx.Linear(6, 8, rngs=rngs)
      self.bn = nnx.BatchNorm(8, rngs=rngs)
      self.drop = nnx.Dropout(0.5, rngs=rngs)  # holds integer RNG state.
      self.l1 = nnx.Linear(8, 3, rngs=rngs)

    def __call__(self, x):
      return self.l1(self.drop(jax.nn.relu(self.bn(self.l0(x)))))

  apply_fn, state = pai.nnx_apply_fn(Net(nnx.Rngs(0)))
  # In train mode a batch of one normalises to the (zero) BN bias: R = 0.
  assert float(pai.synaptic_flow(apply_fn, state, (6,))) > 0
  masks = pai.synflow_masks(apply_fn, state, (6,), 0.5, rounds=4)
  kept = [int(m.sum()) for m in _kernels(masks)]
  assert sum(kept) == 6 * 8 + 8 * 3 - round(0.5 * (6 * 8 + 8 * 3))
  assert masks["bn"]["scale"] is None


# --------------------------------------------------------------------------
# SNIP.


def test_snip_equals_independent_theta_times_gradient():
  rng = np.random.default_rng(0)
  x = rng.normal(size=(16, 5)).astype(np.float32)
  y = rng.integers(0, 3, 16)
  params = _mlp_params(jax.random.PRNGKey(5), [5, 7, 3], bias=True)

  def loss_fn(p, batch):
    return pai.softmax_cross_entropy(_mlp(p, batch[0]), batch[1])

  scores = pai.snip(loss_fn, params, (x, y))
  # Hand-written backprop in float64.
  w0, b0 = (np.asarray(params["l0"][k], np.float64) for k in ("kernel", "bias"))
  w1, b1 = (np.asarray(params["l1"][k], np.float64) for k in ("kernel", "bias"))
  h_pre = x @ w0 + b0
  h = np.maximum(h_pre, 0)
  z = h @ w1 + b1
  p = np.exp(z - z.max(1, keepdims=True))
  p /= p.sum(1, keepdims=True)
  dz = (p - np.eye(3)[y]) / len(y)
  g1 = h.T @ dz
  g0 = x.T @ ((dz @ w1.T) * (h_pre > 0))
  np.testing.assert_allclose(scores["l0"]["kernel"], np.abs(w0 * g0),
                             rtol=1e-4, atol=1e-7)
  np.testing.assert_allclose(scores["l1"]["kernel"], np.abs(w1 * g1),
                             rtol=1e-4, atol=1e-7)
  assert scores["l0"]["bias"] is None
  # Connection sensitivity |dL/dc| at c = 1 gives the same numbers.
  c = jax.tree.map(jnp.ones_like, params)
  gc = jax.jit(jax.grad(lambda c: loss_fn(
      jax.tree.map(jnp.multiply, params, c), (x, y))))(c)
  np.testing.assert_allclose(scores["l1"]["kernel"],
                             jnp.abs(gc["l1"]["kernel"]), rtol=1e-5)
  # Global top-kappa: the kept weights are the largest scores overall.
  masks = pai.masks_from_scores(scores, params, 0.6)
  flat = np.concatenate([np.asarray(s).ravel() for s in _kernels(scores)])
  kept = np.concatenate([np.asarray(m).ravel() for m in _kernels(masks)])
  n_prune = int(np.floor(0.6 * flat.size + 0.5))
  assert kept.sum() == flat.size - n_prune
  assert flat[kept].min() >= flat[~kept].max()


# --------------------------------------------------------------------------
# GraSP.


def _grasp_setup():
  rng = np.random.default_rng(1)
  x = rng.normal(size=(8, 4))
  y = rng.integers(0, 3, 8)
  params = _mlp_params(jax.random.PRNGKey(6), [4, 6, 3], bias=True)
  params = jax.tree.map(lambda a: np.asarray(a, np.float64), params)
  return params, x, y


def _tanh_mlp(p, x):
  return _mlp(p, x, act=jnp.tanh)


def test_grasp_hessian_vector_product_matches_finite_differences():
  with jax.enable_x64(True):
    params, x, y = _grasp_setup()
    t = 200.0
    imp = pai.grasp(_tanh_mlp, params, (x, y), temperature=t)

    def loss(p):
      return pai.softmax_cross_entropy(_tanh_mlp(p, x) / t, y)

    grad = jax.jit(jax.grad(loss))
    g = grad(params)
    # The tangent covers the prunable weights only (kernels).
    g = jax.tree.map_with_path(
        lambda path, v: v if path[-1].key == "kernel" else 0 * v, g)
    eps = 1e-4
    plus = grad(jax.tree.map(lambda a, b: a + eps * b, params, g))
    minus = grad(jax.tree.map(lambda a, b: a - eps * b, params, g))
    for name in ("l0", "l1"):
      hg = (np.asarray(plus[name]["kernel"])
            - np.asarray(minus[name]["kernel"])) / (2 * eps)
      want = np.asarray(params[name]["kernel"]) * hg
      np.testing.assert_allclose(imp[name]["kernel"], want, rtol=1e-5,
                                 atol=1e-12 * np.abs(want).max())
      assert imp[name]["bias"] is None
    # Two halves as in the reference: g and Hg both double, scores x4.
    halves = pai.grasp(_tanh_mlp, params, (x, y), temperature=t,
                              num_splits=2)
    for name in ("l0", "l1"):
      np.testing.assert_allclose(halves[name]["kernel"],
                                 4 * np.asarray(imp[name]["kernel"]),
                                 rtol=1e-9)


def test_grasp_masks_remove_the_largest_paper_scores():
  params, x, y = _grasp_setup()
  params = jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), params)
  imp = pai.grasp(_tanh_mlp, params, (x, y))
  paper = -np.concatenate([np.asarray(s).ravel() for s in _kernels(imp)])
  for s in (0.3, 0.55, 0.9):
    masks = pai.masks_from_scores(imp, params, s)
    kept = np.concatenate([np.asarray(m).ravel() for m in _kernels(masks)])
    removed = np.sort(paper[~kept])
    assert (~kept).sum() == int(np.floor(s * paper.size + 0.5))
    # Removed = exactly the largest S = -theta * Hg.
    np.testing.assert_array_equal(
        removed, np.sort(paper)[paper.size - removed.size:])


def test_class_balanced_batch():
  labels = np.repeat(np.arange(4), 5)
  inputs = np.arange(20)[:, None]
  xb, yb = pai.class_balanced_batch(inputs, labels, 2, seed=3)
  assert np.bincount(yb).tolist() == [2, 2, 2, 2]
  np.testing.assert_array_equal(labels[xb[:, 0]], yb)
  with pytest.raises(ValueError):
    pai.class_balanced_batch(inputs, labels, 6)


def test_masks_from_scores_layerwise_and_existing_masks():
  params = _mlp_params(jax.random.PRNGKey(7), [6, 5, 4])
  scores = jax.tree.map(jnp.abs, params)
  masks = pai.masks_from_scores(scores, params, 0.5,
                                allocation=jaxsparse.allocation.uniform())
  assert int((~masks["l0"]["kernel"]).sum()) == 15
  assert int((~masks["l1"]["kernel"]).sum()) == 10
  for name in ("l0", "l1"):
    w = np.abs(np.asarray(params[name]["kernel"]))
    m = np.asarray(masks[name]["kernel"])
    assert w[~m].max() <= w[m].min()
  # Starting from masks: pruned entries stay pruned and count in the target.
  more = pai.masks_from_scores(scores, params, 0.5, masks=masks)
  for name in ("l0", "l1"):
    np.testing.assert_array_equal(more[name]["kernel"], masks[name]["kernel"])
