"""Tests for jaxsparse.experiments.models (Flax NNX classifiers)."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import jaxsparse
from jaxsparse.experiments import models

DIGITS, MNIST, CIFAR = (8, 8, 1), (28, 28, 1), (32, 32, 3)
NAMES = ("mlp", "lenet5", "vgg", "resnet", "vit")


def _rngs(seed):
  # The "rbg" PRNG compiles far faster on CPU than the default threefry,
  # which dominates the cost of initializing a model; numerics are the same.
  return nnx.Rngs(jax.random.key(seed, impl="rbg"))


def _abstract(name, shape, **kwargs):
  """The model with ShapeDtypeStruct leaves (no initialization cost)."""
  return nnx.eval_shape(
      lambda: models.create_model(name, 10, shape, nnx.Rngs(0), **kwargs))


def _params(model):
  """{path: variable} of the nnx.Param leaves."""
  return dict(nnx.to_flat_state(nnx.state(model, nnx.Param)))


def _big_params(model):
  """{path: shape} of the nnx.Param leaves with ndim >= 2."""
  return {p: tuple(v.shape) for p, v in _params(model).items()
          if len(v.shape) >= 2}


def _loss(model, x, y, train):
  logits = model(x, train=train)
  return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()


def _batch(shape, n=8):
  x = jax.random.normal(jax.random.key(1), (n, *shape), jnp.float32)
  return x, jnp.arange(n) % 10


# -- shapes and layouts (abstract: no compute) -------------------------------


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("shape", [DIGITS, MNIST, CIFAR])
@pytest.mark.parametrize("train", [False, True])
def test_output_shape(name, shape, train):
  model = _abstract(name, shape)
  x = jax.ShapeDtypeStruct((3, *shape), jnp.float32)
  out = nnx.eval_shape(lambda m, x: m(x, train=train), model, x)
  assert out.shape == (3, 10) and out.dtype == jnp.float32


_DIGITS_KERNELS = {
    "mlp": {
        ("hidden", 0, "kernel"): (64, 300),
        ("hidden", 1, "kernel"): (300, 100),
        ("out", "kernel"): (100, 10),
    },
    "lenet5": {
        ("conv1", "kernel"): (5, 5, 1, 6),
        ("conv2", "kernel"): (5, 5, 6, 16),
        ("fc1", "kernel"): (2 * 2 * 16, 120),
        ("fc2", "kernel"): (120, 84),
        ("out", "kernel"): (84, 10),
    },
    "vgg": {
        ("convs", 0, "kernel"): (3, 3, 1, 16),
        ("convs", 1, "kernel"): (3, 3, 16, 32),
        ("convs", 2, "kernel"): (3, 3, 32, 64),
        ("out", "kernel"): (2 * 2 * 64, 10),
    },
    "resnet": {
        ("stem", "kernel"): (3, 3, 1, 16),
        ("blocks", 0, "conv1", "kernel"): (3, 3, 16, 16),
        ("blocks", 0, "conv2", "kernel"): (3, 3, 16, 16),
        ("blocks", 1, "conv1", "kernel"): (3, 3, 16, 32),
        ("blocks", 1, "conv2", "kernel"): (3, 3, 32, 32),
        ("blocks", 1, "down", "kernel"): (1, 1, 16, 32),
        ("blocks", 2, "conv1", "kernel"): (3, 3, 32, 64),
        ("blocks", 2, "conv2", "kernel"): (3, 3, 64, 64),
        ("blocks", 2, "down", "kernel"): (1, 1, 32, 64),
        ("out", "kernel"): (64, 10),
    },
    "vit": {
        ("embed", "kernel"): (2, 2, 1, 32),
        **{("blocks", i, "attn", p, "kernel"): (32, 2, 16)
           for i in range(2) for p in ("query", "key", "value")},
        **{("blocks", i, "attn", "out", "kernel"): (2, 16, 32)
           for i in range(2)},
        **{("blocks", i, "fc1", "kernel"): (32, 64) for i in range(2)},
        **{("blocks", i, "fc2", "kernel"): (64, 32) for i in range(2)},
        ("out", "kernel"): (32, 10),
    },
}


@pytest.mark.parametrize("name", NAMES)
def test_kernel_layouts_on_digits(name):
  # Dense kernels (in, out), conv kernels HWIO, attention (in, heads, dh) and
  # (heads, dh, out): the only nnx.Param leaves with ndim >= 2.
  assert _big_params(_abstract(name, DIGITS)) == _DIGITS_KERNELS[name]


def test_kernel_layouts_follow_input_shape():
  assert _big_params(_abstract("mlp", MNIST))[("hidden", 0, "kernel")] == (
      784, 300)
  lenet = _big_params(_abstract("lenet5", MNIST))
  assert lenet[("conv1", "kernel")] == (5, 5, 1, 6)
  assert lenet[("fc1", "kernel")] == (7 * 7 * 16, 120)
  lenet = _big_params(_abstract("lenet5", CIFAR))
  assert lenet[("conv1", "kernel")] == (5, 5, 3, 6)
  assert lenet[("fc1", "kernel")] == (8 * 8 * 16, 120)
  assert _big_params(_abstract("vgg", CIFAR))[("out", "kernel")] == (
      8 * 8 * 64, 10)
  assert _big_params(_abstract("vit", MNIST))[("embed", "kernel")] == (
      4, 4, 1, 32)
  vgg = _big_params(_abstract("vgg", DIGITS, channels=(8, "M", 8, 8)))
  assert vgg == {("convs", 0, "kernel"): (3, 3, 1, 8),
                 ("convs", 1, "kernel"): (3, 3, 8, 8),
                 ("convs", 2, "kernel"): (3, 3, 8, 8),
                 ("out", "kernel"): (4 * 4 * 8, 10)}
  mlp = _big_params(_abstract("mlp", DIGITS, hidden=(32,)))
  assert mlp == {("hidden", 0, "kernel"): (64, 32), ("out", "kernel"): (32, 10)}


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("shape", [DIGITS, CIFAR])
def test_default_filter_prunes_exactly_the_kernels(name, shape):
  model = _abstract(name, shape)
  kernel_modules = (nnx.Linear, nnx.Conv, nnx.LinearGeneral)
  expected = {path + ("kernel",) for path, node in nnx.iter_graph(model)
              if isinstance(node, kernel_modules)}
  assert set(_big_params(model)) == expected
  masks = jaxsparse.ones_masks(nnx.state(model, nnx.Param))
  masked = {p for p, m in nnx.to_flat_state(masks) if m is not None}
  assert masked == expected
  # Everything else (biases, norm scales and offsets) is 1-D.
  for path, v in _params(model).items():
    if path not in expected:
      assert len(v.shape) == 1, path


def test_batch_stats_are_not_params():
  model = _abstract("resnet", DIGITS)
  stats = nnx.to_flat_state(nnx.state(model, nnx.BatchStat))
  assert len(stats) > 0
  assert not set(dict(stats)) & set(_params(model))


# -- numerics ----------------------------------------------------------------


def test_mlp_forward_matches_numpy():
  model = models.MLP(10, DIGITS, hidden=(16, 12), rngs=_rngs(3))
  x, _ = _batch(DIGITS, 5)
  h = np.asarray(x).reshape(5, 64)
  for layer in model.hidden:
    h = np.maximum(h @ np.asarray(layer.kernel[...])
                   + np.asarray(layer.bias[...]), 0.0)
  logits = h @ np.asarray(model.out.kernel[...]) + np.asarray(
      model.out.bias[...])
  np.testing.assert_allclose(model(x), logits, rtol=1e-5, atol=1e-5)


@functools.cache
def _probe(name):
  """Loss, grads and a small descent step, all in one compiled call."""

  @jax.jit
  def run(x, y):
    model = models.create_model(name, 10, DIGITS, _rngs(0))

    def train_loss(m):
      logits = m(x, train=True)
      loss = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
      return loss, logits

    # Evaluation mode reads the running averages of batch norm ...
    out_eval = model(x, train=False)
    # ... training mode uses batch statistics and updates the averages. The
    # training loss does not depend on the averages: a function of params.
    (loss, out_train), grads = nnx.value_and_grad(
        train_loss, has_aux=True)(model)
    stats = nnx.state(model, nnx.BatchStat)
    params = nnx.state(model, nnx.Param)
    lr = 1e-3
    nnx.update(model, jax.tree.map(lambda p, g: p - lr * g, params, grads))
    sq_norm = sum(jnp.sum(g * g) for g in jax.tree.leaves(grads))
    return dict(loss=loss, grads=grads, stepped_loss=train_loss(model)[0],
                sq_norm=sq_norm, out_eval=out_eval, out_train=out_train,
                stats=stats)

  return jax.device_get(run(*_batch(DIGITS)))


@pytest.mark.parametrize("name", NAMES)
def test_gradients_flow(name):
  r = _probe(name)
  assert np.isfinite(r["loss"])
  for path, g in nnx.to_flat_state(r["grads"]):
    g = np.asarray(g.get_value())
    assert np.all(np.isfinite(g)), path
    assert np.any(g != 0), f"no gradient reaches {path}"
  # A small step against the gradient lowers the loss (first order:
  # L(p - lr g) ~ L(p) - lr |g|^2).
  assert r["stepped_loss"] < r["loss"]
  np.testing.assert_allclose(r["loss"] - r["stepped_loss"],
                             1e-3 * r["sq_norm"], rtol=0.2)


@pytest.mark.parametrize("name", ["vgg", "resnet"])
def test_batch_norm_train_and_eval_modes(name):
  r = _probe(name)
  assert not np.allclose(r["out_train"], r["out_eval"])
  means = [np.asarray(v.get_value()) for p, v in nnx.to_flat_state(r["stats"])
           if p[-1] == "mean"]
  assert means and any(np.any(m != 0) for m in means)  # updated in training


@pytest.mark.parametrize("name", ["mlp", "lenet5", "vit"])
def test_models_without_batch_norm_ignore_train(name):
  r = _probe(name)
  np.testing.assert_allclose(r["out_train"], r["out_eval"], rtol=1e-5,
                             atol=1e-6)


def test_prune_half_of_every_mlp_kernel():
  model = models.MLP(10, DIGITS, rngs=_rngs(0))
  tx = jaxsparse.prune(0.5, optimizer=optax.sgd(0.1))
  opt = nnx.Optimizer(model, tx, wrt=nnx.Param)
  x, y = _batch(DIGITS, 16)

  @nnx.jit
  def step(model, opt, x, y):
    grads = nnx.grad(lambda m: _loss(m, x, y, True))(model)
    opt.update(model, grads)
    return grads

  before = {p: np.asarray(v.get_value()) for p, v in _params(model).items()}
  grads = step(model, opt, x, y)
  grads = {p: np.asarray(v.get_value()) for p, v in nnx.to_flat_state(grads)}
  after = {p: np.asarray(v.get_value()) for p, v in _params(model).items()}
  kernels = _DIGITS_KERNELS["mlp"]
  for path, w in before.items():
    new = after[path]
    if path not in kernels:  # biases: a plain SGD step, nothing pruned.
      np.testing.assert_allclose(new, w - 0.1 * grads[path], rtol=1e-6,
                                 atol=1e-7)
      continue
    n = w.size
    assert np.sum(new == 0) == n // 2, path
    # Magnitude pruning at step 0: the half with the smallest |w| is zeroed.
    order = np.argsort(np.abs(w).ravel(), kind="stable")
    pruned = np.zeros(n, bool)
    pruned[order[:n // 2]] = True
    pruned = pruned.reshape(w.shape)
    np.testing.assert_array_equal(new == 0, pruned)
    np.testing.assert_allclose(new[~pruned], (w - 0.1 * grads[path])[~pruned],
                               rtol=1e-6, atol=1e-7)
  # A second step keeps the same weights at exactly zero.
  step(model, opt, x, y)
  for path in kernels:
    w = np.asarray(_params(model)[path].get_value())
    np.testing.assert_array_equal(w == 0, after[path] == 0)


# -- errors ------------------------------------------------------------------


def test_unknown_model_name():
  with pytest.raises(ValueError, match="transformer") as info:
    models.create_model("transformer", 10, DIGITS, nnx.Rngs(0))
  for name in NAMES:
    assert name in str(info.value)


def test_bad_configurations():
  with pytest.raises(ValueError, match="pools"):
    _abstract("vgg", DIGITS, channels=(8, "M", "M", "M", "M", 8))
  with pytest.raises(ValueError, match="input_shape"):
    models.create_model("lenet5", 10, (8, 8), nnx.Rngs(0))
  with pytest.raises(ValueError, match="divisible"):
    _abstract("vit", DIGITS, dim=32, heads=3)
