"""Compile checks without hardware: the Pallas kernels lower for their target.

`jax.jit(f).trace(...).lower(lowering_platforms=(...,))` runs the Pallas
lowering on CPU: the TPU kernels become Mosaic `tpu_custom_call`s, the GPU
kernels Triton custom calls. Forward and backward (custom_vjp) are checked,
and illegal blocks must fail with our error before the backend's own.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pallas_kernels import BlockSparse, block_sparse_matmul
from pallas_kernels import tpu as tpu_impl

K, N, M = 512, 256, 200  # M not a multiple of the row tile


def make_w(block, dtype=jnp.float32, seed=0):
  rng = np.random.default_rng(seed)
  grid = (K // block[0], N // block[1])
  m = rng.random(grid) < 0.5
  m[0, 0] = True
  w = jnp.asarray(rng.standard_normal((K, N)), dtype)
  return BlockSparse.from_dense(w, m, block)


def lower(backend, platform, ws, dtype, grad):
  x = jnp.ones((M, K), dtype)

  def f(x, values):
    return block_sparse_matmul(x, ws.replace(values=values), backend=backend)

  fn = f
  if grad:
    fn = jax.grad(lambda x, v: jnp.sum(f(x, v).astype(jnp.float32) ** 2),
                  argnums=(0, 1))
  return jax.jit(fn).trace(x, ws.values).lower(
      lowering_platforms=(platform,)).as_text()


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_tpu_kernels_lower_to_mosaic(dtype):
  ws = make_w((128, 128), dtype)
  fwd = lower("tpu", "tpu", ws, dtype, grad=False)
  assert fwd.count("tpu_custom_call") == 1
  both = lower("tpu", "tpu", ws, dtype, grad=True)
  # forward (needed by the squared loss) + dx + dW kernels
  assert both.count("tpu_custom_call") == 3


def test_tpu_large_blocks_lower():
  ws = make_w((256, 256), jnp.bfloat16)
  assert "tpu_custom_call" in lower("tpu", "tpu", ws, jnp.bfloat16, True)


def test_tpu_illegal_block_rejected_with_our_error():
  ws = make_w((64, 128))
  with pytest.raises(ValueError, match="breaks the TPU block rule") as e:
    lower("tpu", "tpu", ws, jnp.float32, grad=False)
  assert "bk=64" in str(e.value)
  with pytest.raises(ValueError, match="bm=12"):
    tpu_impl.matmul(jnp.ones((12, K)), make_w((128, 128)), block_m=12,
                    interpret=True)


@pytest.mark.parametrize("block,dtype", [((128, 128), jnp.float32),
                                         ((64, 256), jnp.bfloat16),
                                         ((512, 256), jnp.bfloat16)])
def test_gpu_kernels_lower_to_triton(block, dtype):
  ws = make_w(block, dtype)
  fwd = lower("gpu", "cuda", ws, dtype, grad=False)
  assert fwd.count("triton") >= 1
  both = lower("gpu", "cuda", ws, dtype, grad=True)
  assert both.count("__gpu$xla.gpu.triton") == 3


def test_gpu_non_power_of_two_block_rejected():
  rng = np.random.default_rng(1)
  w = jnp.asarray(rng.standard_normal((96, 64)), jnp.float32)
  ws = BlockSparse.from_dense(w, np.ones((2, 2), bool), (48, 32))
  with pytest.raises(ValueError, match="powers of two"):
    block_sparse_matmul(jnp.ones((4, 96)), ws, backend="gpu", interpret=True)


def test_tpu_kernels_under_tpu_interpreter():
  """`pltpu.InterpretParams` simulates TPU memory spaces, DMAs and SMEM."""
  from jax.experimental.pallas import tpu as pltpu

  rng = np.random.default_rng(2)
  bmask = np.array([[1, 0], [0, 0], [1, 1]], bool)  # an empty row block
  w = rng.standard_normal((384, 256)).astype(np.float32)
  ws = BlockSparse.from_dense(w, bmask, (128, 128))
  wm = w * np.kron(bmask, np.ones((128, 128), bool))
  x = rng.standard_normal((24, 384)).astype(np.float32)
  dy = rng.standard_normal((24, 256)).astype(np.float32)
  kw = dict(interpret=pltpu.InterpretParams(), block_m=8)  # 3 row tiles
  np.testing.assert_allclose(tpu_impl.matmul(x, ws, **kw), x @ wm,
                             rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(tpu_impl.matmul_t(dy, ws, **kw), dy @ wm.T,
                             rtol=1e-4, atol=1e-4)
  dw = ws.replace(values=tpu_impl.sdd(x, dy, ws, **kw)).to_dense()
  np.testing.assert_allclose(
      dw, (x.T @ dy) * np.kron(bmask, np.ones((128, 128), bool)),
      rtol=1e-4, atol=1e-4)
