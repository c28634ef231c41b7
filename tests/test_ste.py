"""Straight-through sparse training (STE, SR-STE), checked against NumPy."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxsparse._src.core import structures
from jaxsparse._src.core.scores import random as random_score
from jaxsparse._src.dst import ste as ste_lib


def np_nm_mask(w, n, m, axis):
  """Keep the n largest |w| of every m consecutive entries along `axis`."""
  a = np.moveaxis(np.abs(np.asarray(w, np.float64)), axis, -1)
  g = a.reshape(a.shape[:-1] + (a.shape[-1] // m, m))
  order = np.argsort(-g, axis=-1, kind="stable")
  keep = np.zeros_like(g, bool)
  np.put_along_axis(keep, order[..., :n], True, axis=-1)
  return np.moveaxis(keep.reshape(a.shape), -1, axis)


def np_group_counts(w, m, axis):
  a = np.moveaxis(np.asarray(w) != 0, axis, -1)
  return a.reshape(a.shape[:-1] + (a.shape[-1] // m, m)).sum(-1)


def make_params(key):
  k1, k2, k3 = jax.random.split(key, 3)
  return {
      "conv": {"kernel": jax.random.normal(k1, (3, 3, 8, 4)),
               "bias": jnp.zeros((4,))},
      "dense": {"kernel": jax.random.normal(k2, (16, 8)),
                "bias": jax.random.normal(k3, (8,))},
  }


def forward(params, x):
  """A conv (HWIO, input axis 2) then a dense layer (in, out)."""
  h = jax.lax.conv_general_dilated(
      x, params["conv"]["kernel"], (1, 1), "SAME",
      dimension_numbers=("NHWC", "HWIO", "NHWC"))
  h = jax.nn.relu(h + params["conv"]["bias"])
  h = h.reshape(h.shape[0], -1)[:, :16]
  return h @ params["dense"]["kernel"] + params["dense"]["bias"]


@pytest.mark.parametrize("n,m,lam", [(2, 4, 0.0), (1, 4, ste_lib.SRSTE_LAMBDA)])
def test_nm_counts_exact_along_input_axis_every_step(n, m, lam):
  params = make_params(jax.random.PRNGKey(0))
  x = jax.random.normal(jax.random.PRNGKey(1), (4, 4, 4, 8))
  y = jax.random.normal(jax.random.PRNGKey(2), (4, 8))
  structure = structures.n_m(n, m)
  fwd = lambda p: ste_lib.ste_mask(p, structure=structure, srste_lambda=lam)
  tx = optax.sgd(0.05, momentum=0.9)
  state = tx.init(params)

  @jax.jit
  def step(params, state):
    loss = lambda p: jnp.mean((forward(fwd(p), x) - y) ** 2)
    g = jax.grad(loss)(params)
    u, state = tx.update(g, state, params)
    return optax.apply_updates(params, u), state

  fwd_jit = jax.jit(fwd)
  for _ in range(6):
    params, state = step(params, state)
    sparse = fwd_jit(params)
    for name, axis in (("conv", 2), ("dense", 0)):
      w = np.asarray(params[name]["kernel"])
      ws = np.asarray(sparse[name]["kernel"])
      # Exactly n non-zeros in every group of m along the input axis.
      assert (np_group_counts(ws, m, axis) == n).all()
      # ... and they are the n largest |w| of each group (NumPy reference).
      np.testing.assert_array_equal(ws != 0, np_nm_mask(w, n, m, axis))
      np.testing.assert_array_equal(ws[ws != 0], w[ws != 0])
    # Biases are not masked.
    np.testing.assert_array_equal(sparse["dense"]["bias"],
                                  params["dense"]["bias"])
  # Dense weights keep training, so the mask is recomputed (and can move).
  assert np.abs(np.asarray(params["dense"]["kernel"])).min() > 0


@pytest.mark.parametrize("lam", [ste_lib.SRSTE_LAMBDA, 0.3])
def test_srste_gradient_matches_numpy(lam):
  rng = np.random.default_rng(0)
  w = rng.standard_normal((8, 6)).astype(np.float32)
  x = rng.standard_normal((5, 8)).astype(np.float32)
  t = rng.standard_normal((5, 6)).astype(np.float32)

  def loss(w):
    ws = ste_lib.ste_mask({"w": w}, structure=structures.n_m(2, 4),
                          srste_lambda=lam)["w"]
    return 0.5 * jnp.sum((x @ ws - t) ** 2)

  got = np.asarray(jax.jit(jax.grad(loss))(jnp.asarray(w)), np.float64)
  # Independent NumPy: mask, masked forward, gradient w.r.t. the masked
  # weights, then the SR-STE term on the pruned weights.
  wd, xd, td = (a.astype(np.float64) for a in (w, x, t))
  mask = np_nm_mask(wd, 2, 4, axis=0)
  g = xd.T @ (xd @ (mask * wd) - td)
  want = g + lam * (~mask) * wd
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
  # The SR-STE term is exactly what separates it from plain STE.
  plain = np.asarray(jax.grad(
      lambda w: 0.5 * jnp.sum((x @ ste_lib.ste_mask(
          {"w": w}, structure=structures.n_m(2, 4))["w"] - t) ** 2))(
              jnp.asarray(w)), np.float64)
  np.testing.assert_allclose(got - plain, lam * (~mask) * wd, rtol=1e-4,
                             atol=1e-6)


def test_ste_gradient_reaches_pruned_weights():
  rng = np.random.default_rng(1)
  w = rng.standard_normal((12, 4)).astype(np.float32)
  x = rng.standard_normal((7, 12)).astype(np.float32)
  t = rng.standard_normal((7, 4)).astype(np.float32)

  def loss(w):
    ws = ste_lib.ste_mask({"w": w}, sparsity=0.75)["w"]
    return 0.5 * jnp.sum((x @ ws - t) ** 2)

  got = np.asarray(jax.jit(jax.grad(loss))(jnp.asarray(w)), np.float64)
  wd = w.astype(np.float64)
  # Magnitude mask at 75%: the 12 largest |w| of 48 survive.
  thr = np.sort(np.abs(wd).ravel())[-12]
  mask = np.abs(wd) >= thr
  assert mask.sum() == 12
  g = x.T.astype(np.float64) @ (x.astype(np.float64) @ (mask * wd) - t)
  np.testing.assert_allclose(got, g, rtol=1e-5, atol=1e-5)
  # The gradient is non-zero at the pruned entries: it flows to all weights.
  assert (np.abs(got[~mask]) > 0).all()
  # Whereas masking with a plain multiply would stop it there.
  blocked = np.asarray(jax.grad(
      lambda w: 0.5 * jnp.sum((x @ (w * mask) - t) ** 2))(jnp.asarray(w)))
  assert (blocked[~mask] == 0).all()


def test_magnitude_ste_counts_and_dense_leaves():
  params = {
      "a": {"kernel": jax.random.normal(jax.random.PRNGKey(0), (10, 20)),
            "bias": jnp.ones((20,))},
      "b": {"kernel": jax.random.normal(jax.random.PRNGKey(1), (20, 3)),
            "bias": jnp.ones((3,))},
  }
  out = jax.jit(lambda p: ste_lib.ste_mask(p, sparsity=0.9))(params)
  for name in ("a", "b"):
    w = np.asarray(params[name]["kernel"])
    ws = np.asarray(out[name]["kernel"])
    n_zero = int(np.floor(0.9 * w.size + 0.5))
    assert (ws == 0).sum() == n_zero
    keep = np.argsort(-np.abs(w).ravel())[: w.size - n_zero]
    want = np.zeros(w.size, bool)
    want[keep] = True
    np.testing.assert_array_equal(ws.ravel() != 0, want)
    np.testing.assert_array_equal(out[name]["bias"], params[name]["bias"])
  # A filter can leave a kernel dense.
  only_a = jax.jit(lambda p: ste_lib.ste_mask(
      p, sparsity=0.9,
      filter_fn=lambda path, leaf: "a" in str(path) and leaf.ndim == 2))(
          params)
  np.testing.assert_array_equal(only_a["b"]["kernel"], params["b"]["kernel"])
  assert (np.asarray(only_a["a"]["kernel"]) == 0).sum() == 180


def test_nm_mask_ignores_weight_signs():
  w = jax.random.normal(jax.random.PRNGKey(3), (16, 8))
  flips = jnp.where(jax.random.bernoulli(jax.random.PRNGKey(4), 0.5, w.shape),
                    -1.0, 1.0)
  f = jax.jit(lambda w: ste_lib.ste_masks(
      {"w": w}, structure=structures.n_m(2, 4))["w"])
  m1, m2, m3 = f(w), f(w * flips), f(-w)
  np.testing.assert_array_equal(m1, m2)
  np.testing.assert_array_equal(m1, m3)


def test_random_ste_exact_count_and_key():
  params = {"w": jnp.ones((16, 16))}  # equal magnitudes: only keys differ.
  f = jax.jit(lambda p, k: ste_lib.ste_masks(
      p, sparsity=0.5, score=random_score, key=k)["w"])
  m1 = np.asarray(f(params, jax.random.PRNGKey(0)))
  m2 = np.asarray(f(params, jax.random.PRNGKey(1)))
  m1b = np.asarray(f(params, jax.random.PRNGKey(0)))
  assert m1.sum() == m2.sum() == 128
  np.testing.assert_array_equal(m1, m1b)
  assert (m1 != m2).any()


def test_straight_through_identity_gradient_with_given_masks():
  w = jnp.arange(1.0, 7.0).reshape(2, 3)
  masks = {"w": jnp.array([[True, False, True], [False, True, False]]),
           "b": None}
  params = {"w": w, "b": jnp.ones((3,))}
  out = ste_lib.straight_through(params, masks)
  np.testing.assert_array_equal(out["w"], np.where(masks["w"], w, 0.0))
  g = jax.grad(lambda p: jnp.sum(
      ste_lib.straight_through(p, masks, 0.5)["w"] * 3.0)
      + jnp.sum(p["b"]))(params)
  np.testing.assert_allclose(
      g["w"], 3.0 + 0.5 * np.where(masks["w"], 0.0, w))
  np.testing.assert_array_equal(g["b"], np.ones(3))


def test_srste_default_lambda():
  assert ste_lib.SRSTE_LAMBDA == 2e-4


def test_flax_nnx_state_params():
  from flax import nnx

  model = nnx.Linear(8, 4, rngs=nnx.Rngs(0))
  graphdef, params = nnx.split(model, nnx.Param)
  x = jnp.ones((3, 8))

  def loss(p):
    sparse = ste_lib.ste_mask(p, structure=structures.n_m(1, 4))
    return jnp.sum(nnx.merge(graphdef, sparse)(x) ** 2)

  g = jax.jit(jax.grad(loss))(params)
  w = np.asarray(params["kernel"].get_value())
  sparse = ste_lib.ste_mask(params, structure=structures.n_m(1, 4))
  ws = np.asarray(sparse["kernel"].get_value())
  np.testing.assert_array_equal(ws != 0, np_nm_mask(w, 1, 4, axis=0))
  # STE: the gradient reaches the pruned kernel entries too.
  gk = np.asarray(g["kernel"].get_value())
  assert (gk[ws == 0] != 0).all()
