"""Block-sparse format, kernels and layer, checked against NumPy dense math.

Every product is compared with float64 NumPy on the masked dense weight:
y = x Wm, dx = dy Wmᵀ, dW = (xᵀ dy) restricted to the kept blocks. The
Pallas kernels run in interpret mode on CPU.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import jaxsparse as js
from jaxsparse import nn as jsnn
from jaxsparse._src.core.prune import compute_masks
from pallas_kernels import BlockSparse, block_sparse_matmul, index_dtype


def expand(bmask, block):
  return np.kron(np.asarray(bmask), np.ones(block, bool)).astype(bool)


def rand_mask(rng, grid, density):
  return rng.random(grid) < density


# --- format -------------------------------------------------------------------


def test_roundtrip_and_metadata_against_numpy():
  rng = np.random.default_rng(0)
  bk, bn = 16, 8
  kb, nb = 5, 7
  w = rng.standard_normal((kb * bk, nb * bn)).astype(np.float32)
  bmask = rand_mask(rng, (kb, nb), 0.4)
  bmask[:, 2] = False  # an empty column block
  bmask[3, :] = True  # a full row block
  ws = BlockSparse.from_dense(w, bmask, (bk, bn))
  np.testing.assert_array_equal(ws.to_dense(), w * expand(bmask, (bk, bn)))
  np.testing.assert_array_equal(ws.block_mask(), bmask)
  assert ws.slots == bmask.sum(0).max()
  assert ws.slots_t == bmask.sum(1).max()
  rows, counts = np.asarray(ws.rows), np.asarray(ws.counts)
  vals = np.asarray(ws.values)
  for j in range(nb):
    ids = np.flatnonzero(bmask[:, j])
    assert counts[j] == len(ids)
    np.testing.assert_array_equal(rows[j, :len(ids)], ids)  # sorted
    pad = ids[-1] if len(ids) else 0  # padding repeats the last valid id
    assert (rows[j, len(ids):] == pad).all()
    for t, i in enumerate(ids):
      np.testing.assert_array_equal(
          vals[j, t], w[i * bk:(i + 1) * bk, j * bn:(j + 1) * bn])
    assert (vals[j, len(ids):] == 0).all()
  # Transposed metadata points into the same values.
  t_cols, t_slots = np.asarray(ws.t_cols), np.asarray(ws.t_slots)
  t_counts = np.asarray(ws.t_counts)
  for i in range(kb):
    ids = np.flatnonzero(bmask[i])
    assert t_counts[i] == len(ids)
    np.testing.assert_array_equal(t_cols[i, :len(ids)], ids)
    assert (t_cols[i, len(ids):] == (ids[-1] if len(ids) else 0)).all()
    for s, j in enumerate(ids):
      np.testing.assert_array_equal(
          vals[j, t_slots[i, s]], w[i * bk:(i + 1) * bk, j * bn:(j + 1) * bn])


def test_index_dtypes_are_small():
  assert index_dtype(127) == np.int8
  assert index_dtype(128) == np.int16
  assert index_dtype(40000) == np.int32
  ws = BlockSparse.from_dense(np.ones((64, 64), np.float32),
                              np.eye(8, dtype=bool), (8, 8))
  assert ws.rows.dtype == np.int8 and ws.t_slots.dtype == np.int8
  ws = BlockSparse.from_dense(np.ones((8, 300), np.float32),
                              np.ones((2, 150), bool), (4, 2))
  assert ws.rows.dtype == np.int16 and ws.t_cols.dtype == np.int16


def test_from_core_block_structure_mask():
  rng = np.random.default_rng(1)
  w = jnp.asarray(rng.standard_normal((64, 96)), jnp.float32)
  params = {"dense": {"kernel": w, "bias": jnp.zeros(96)}}
  masks = jax.jit(lambda p: compute_masks(
      p, None, js.ones_masks(p), 0.75, jax.random.key(0),
      structure=js.structures.block(16, 32)))(params)
  m = np.asarray(masks["dense"]["kernel"])
  ws = BlockSparse.from_dense(w, m, (16, 32))
  np.testing.assert_array_equal(ws.to_dense(), np.asarray(w) * m)
  assert int(ws.nnz_blocks()) == 3  # 12 blocks, 75 % pruned


def test_fixed_slots_reuse_compilation_and_jit_build():
  rng = np.random.default_rng(2)
  w = rng.standard_normal((64, 64)).astype(np.float32)
  traces = []

  @jax.jit
  def f(x, ws):
    traces.append(1)
    return block_sparse_matmul(x, ws)

  x = rng.standard_normal((5, 64)).astype(np.float32)
  m1 = np.eye(4, dtype=bool)
  m2 = np.roll(np.eye(4, dtype=bool), 1, axis=0) | np.eye(4, dtype=bool)
  w1 = BlockSparse.from_dense(w, m1, (16, 16), slots=2, slots_t=2)
  w2 = BlockSparse.from_dense(w, m2, (16, 16), slots=2, slots_t=2)
  # Re-masking keeps the stored values; new blocks start at zero.
  np.testing.assert_array_equal(
      w1.with_mask(jnp.asarray(m2)).to_dense(),
      w * expand(m1 & m2, (16, 16)))
  np.testing.assert_allclose(f(x, w1), x @ (w * expand(m1, (16, 16))),
                             rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(f(x, w2), x @ (w * expand(m2, (16, 16))),
                             rtol=1e-5, atol=1e-5)
  assert len(traces) == 1
  # Building inside jit from a traced mask needs static slots.
  build = jax.jit(lambda w, m: BlockSparse.from_dense(
      w, m, (16, 16), slots=2, slots_t=2).to_dense())
  np.testing.assert_array_equal(build(w, m2), w * expand(m2, (16, 16)))
  with pytest.raises(ValueError, match="slots"):
    jax.jit(lambda w, m: BlockSparse.from_dense(w, m, (16, 16)))(w, m2)
  with pytest.raises(ValueError, match="more than slots"):
    w1.with_mask(np.ones((4, 4), bool))


def test_clear_errors():
  w = np.ones((64, 96), np.float32)
  with pytest.raises(ValueError, match="does not divide"):
    BlockSparse.from_dense(w, np.ones((3, 3), bool), (20, 32))
  with pytest.raises(ValueError, match="matches neither"):
    BlockSparse.from_dense(w, np.ones((3, 3), bool), (16, 32))
  with pytest.raises(TypeError, match="bool"):
    BlockSparse.from_dense(w, np.ones((4, 3), np.float32), (16, 32))
  with pytest.raises(TypeError, match="floating"):
    BlockSparse.from_dense(w.astype(np.int32), np.ones((4, 3), bool),
                           (16, 32))
  with pytest.raises(ValueError, match="2-D"):
    BlockSparse.from_dense(w[None], np.ones((4, 3), bool), (16, 32))
  partly = np.ones((64, 96), bool)
  partly[0, 0] = False
  with pytest.raises(ValueError, match="not constant"):
    BlockSparse.from_dense(w, partly, (16, 32))
  with pytest.raises(ValueError, match="pair"):
    BlockSparse.from_dense(w, np.ones((4, 3), bool), 16)
  ws = BlockSparse.from_dense(w, np.ones((4, 3), bool), (16, 32))
  with pytest.raises(ValueError, match="K=64"):
    block_sparse_matmul(np.ones((2, 63), np.float32), ws)
  with pytest.raises(TypeError, match="floating"):
    block_sparse_matmul(np.ones((2, 64), np.int32), ws)
  with pytest.raises(ValueError, match="unknown backend"):
    block_sparse_matmul(np.ones((2, 64), np.float32), ws, backend="npu")


# --- kernels ------------------------------------------------------------------

# (name, K, N, block, mask kind, dtype, M, Pallas row tile or None)
CASES = [
    ("random", 256, 512, (128, 256), "random", np.float32, 37, 16),
    ("empty", 384, 256, (128, 256), "empty", np.float32, 16, None),
    ("full_bf16", 256, 256, (128, 128), "full", jnp.bfloat16, 40, None),
    ("unbalanced", 512, 256, (128, 128), "unbalanced", np.float32, 24, 16),
    ("small_blocks", 128, 256, (32, 64), "random", np.float32, 33, None),
    ("bf16_random", 256, 384, (128, 128), "random", jnp.bfloat16, 9, None),
]
BACKENDS = ["xla", "tpu", "gpu"]


def case_mask(kind, grid, rng):
  kb, nb = grid
  if kind == "random":
    m = rand_mask(rng, grid, 0.5)
    m[0, 0] = True
    return m
  if kind == "empty":
    return np.zeros(grid, bool)
  if kind == "full":
    return np.ones(grid, bool)
  m = np.zeros(grid, bool)  # unbalanced: one full column, one full row
  m[:, 0] = True
  m[kb - 1, :] = True
  return m


def supported(backend, block):
  if backend == "tpu":
    return all(b % 128 == 0 for b in block)
  if backend == "gpu":
    return all(b >= 16 and b & (b - 1) == 0 for b in block)
  return True


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_forward_and_gradients_match_dense(backend, case):
  _, k, n, block, kind, dtype, m, block_m = case
  if not supported(backend, block):
    pytest.skip(f"block {block} not valid for {backend}")
  rng = np.random.default_rng(CASES.index(case))
  grid = (k // block[0], n // block[1])
  bmask = case_mask(kind, grid, rng)
  emask = expand(bmask, block)
  cast = lambda a: np.asarray(jnp.asarray(a, dtype))
  w = cast(rng.standard_normal((k, n)))
  x = cast(rng.standard_normal((m, k)))
  dy = cast(rng.standard_normal((m, n)))
  ws = BlockSparse.from_dense(jnp.asarray(w), bmask, block)

  def f(x, values):
    return block_sparse_matmul(x, ws.replace(values=values),
                               backend=backend, block_m=block_m,
                               interpret=True)

  y, vjp = jax.jit(lambda x, v: jax.vjp(f, x, v))(jnp.asarray(x), ws.values)
  dx, dv = jax.jit(vjp)(jnp.asarray(dy))
  assert y.dtype == dtype and dx.dtype == dtype and dv.dtype == dtype

  x64, w64, dy64 = (np.asarray(a, np.float64) for a in (x, w, dy))
  wm = w64 * emask
  ref_y, ref_dx, ref_dw = x64 @ wm, dy64 @ wm.T, (x64.T @ dy64) * emask
  tol = 1e-5 if dtype == np.float32 else 2e-2

  def close(got, ref):
    got = np.asarray(jnp.asarray(got, jnp.float32), np.float64)
    scale = max(1.0, np.abs(ref).max())
    np.testing.assert_allclose(got, ref, rtol=tol, atol=tol * scale)

  close(y, ref_y)
  close(dx, ref_dx)
  dw = ws.replace(values=dv)
  close(dw.to_dense(), ref_dw)
  # Padding slots get exactly zero gradient.
  pad = np.arange(ws.slots)[None, :] >= np.asarray(ws.counts)[:, None]
  assert (np.asarray(dv, np.float32)[pad] == 0).all()
  if kind == "empty":
    assert (np.asarray(y, np.float32) == 0).all()


def test_leading_dims_and_mixed_dtypes():
  rng = np.random.default_rng(3)
  w = rng.standard_normal((64, 32)).astype(np.float32)
  bmask = np.array([[1, 0], [0, 1], [1, 1], [0, 0]], bool)
  ws = BlockSparse.from_dense(w, bmask, (16, 16))
  x = rng.standard_normal((2, 3, 64)).astype(np.float32)
  y = block_sparse_matmul(x, ws)
  assert y.shape == (2, 3, 32)
  np.testing.assert_allclose(y, x @ (w * expand(bmask, (16, 16))),
                             rtol=1e-5, atol=1e-5)
  yb = block_sparse_matmul(x.astype(jnp.bfloat16), ws)
  assert yb.dtype == jnp.float32  # result_type(bf16, f32)


# --- BlockSparseDense ---------------------------------------------------------


def test_layer_grad_equals_dense_masked_grad():
  rng = np.random.default_rng(5)
  k, n, block = 64, 96, (16, 32)
  kernel = rng.standard_normal((k, n)).astype(np.float32)
  bias = rng.standard_normal(n).astype(np.float32)
  bmask = rand_mask(rng, (4, 3), 0.5)
  bmask[0, 0] = True
  emask = expand(bmask, block)
  x = rng.standard_normal((7, k)).astype(np.float32)
  layer = jsnn.BlockSparseDense.from_dense(kernel, bmask, block, bias=bias)

  def loss(layer, x):
    return jnp.sum(jnp.tanh(layer(x)) ** 2)

  # Functional style: jax.grad over the layer's nnx.Param state.
  graphdef, params, index = nnx.split(layer, nnx.Param, ...)

  def loss_of_params(params, x):
    return loss(nnx.merge(graphdef, params, index), x)

  gp, gx = jax.jit(jax.grad(loss_of_params, argnums=(0, 1)))(params, x)
  gblocks = layer.weight().replace(values=gp["blocks"].get_value()).to_dense()
  gl = nnx.jit(nnx.grad(loss))(layer, x)  # the NNX spelling agrees
  np.testing.assert_allclose(gl.blocks.get_value(), gp["blocks"].get_value(),
                             rtol=1e-6, atol=1e-6)

  def dense_loss(kernel, bias, x):
    return jnp.sum(jnp.tanh(x @ (kernel * emask) + bias) ** 2)

  dk, db, dx = jax.grad(dense_loss, argnums=(0, 1, 2))(kernel, bias, x)
  # float32 sums in another order: absolute error of a few 1e-6 per term.
  tol = dict(rtol=1e-5, atol=5e-5)
  np.testing.assert_allclose(gblocks, dk * emask, **tol)
  np.testing.assert_allclose(gp["bias"].get_value(), db, **tol)
  np.testing.assert_allclose(gx, dx, **tol)
  np.testing.assert_allclose(layer(x), x @ (kernel * emask) + bias,
                             rtol=1e-5, atol=1e-5)


def test_layer_sparse_from_scratch_and_set_mask_under_jit():
  layer = jsnn.BlockSparseDense(64, 128, block=(16, 32), density=0.5,
                                rngs=nnx.Rngs(0))
  bm = np.asarray(layer.block_mask())
  assert bm.shape == (4, 4) and (bm.sum(0) == 2).all()  # balanced columns
  assert layer.blocks.get_value().shape == (4, 2, 16, 32)
  traces = []

  @nnx.jit
  def step(layer, mask, x):
    traces.append(1)
    layer.set_mask(mask)
    return layer(x)

  x = np.ones((3, 64), np.float32)
  dense = np.asarray(layer.to_dense())
  new = np.roll(bm, 1, axis=0)
  y = step(layer, jnp.asarray(new), x)
  np.testing.assert_array_equal(layer.block_mask(), new)
  kept_before = expand(new & bm, (16, 32))
  np.testing.assert_array_equal(np.asarray(layer.to_dense())[kept_before],
                                dense[kept_before])
  np.testing.assert_allclose(
      y, x @ np.asarray(layer.to_dense()) + layer.bias.get_value(),
      rtol=1e-5, atol=1e-5)
  step(layer, jnp.asarray(bm), x)
  assert len(traces) == 1


def test_convert_pruned_nnx_mlp():
  class MLP(nnx.Module):

    def __init__(self, rngs):
      self.hidden = nnx.List([nnx.Linear(32, 64, rngs=rngs),
                              nnx.Linear(64, 64, rngs=rngs)])
      self.out = nnx.Linear(64, 10, rngs=rngs)

    def __call__(self, x):
      for layer in self.hidden:
        x = jax.nn.relu(layer(x))
      return self.out(x)

  model = MLP(nnx.Rngs(0))
  keep_out = lambda path, leaf: js.is_kernel(path, leaf) and "out" not in (
      str(path))
  tx = js.prune(0.75, structure=js.structures.block(16, 16), filter_fn=keep_out,
                optimizer=optax.adam(1e-2))
  opt = nnx.Optimizer(model, tx, wrt=nnx.Param)
  x = np.random.default_rng(6).standard_normal((16, 32)).astype(np.float32)
  y = np.arange(16) % 10

  def loss(model):
    return optax.softmax_cross_entropy_with_integer_labels(model(x), y).mean()

  @nnx.jit
  def step(model, opt):
    opt.update(model, nnx.grad(loss)(model))

  for _ in range(2):
    step(model, opt)
  masks = js.get_masks(opt.opt_state)
  before = np.asarray(model(x))
  kernels = [np.asarray(layer.kernel.get_value()) for layer in model.hidden]
  jsnn.to_block_sparse(model, masks, (16, 16))
  assert all(isinstance(layer, jsnn.BlockSparseDense)
             for layer in model.hidden)
  assert isinstance(model.out, nnx.Linear)
  for layer, kern in zip(model.hidden, kernels, strict=True):
    np.testing.assert_array_equal(layer.to_dense(), kern)
    assert float(layer.weight().density()) == 0.25
  np.testing.assert_allclose(model(x), before, rtol=1e-5, atol=1e-5)
  # Plain-params conversion for non-NNX code.
  params = {"k": jnp.asarray(kernels[1]), "b": jnp.zeros(64)}
  pm = {"k": masks["hidden"][1]["kernel"], "b": None}
  sp = jsnn.block_sparse_params(params, pm, (16, 16))
  assert isinstance(sp["k"], BlockSparse) and sp["b"].shape == (64,)
  np.testing.assert_array_equal(sp["k"].to_dense(), kernels[1])
