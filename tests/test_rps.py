"""Tests of randomized parameter sharing (HashedNet, ROAST, STABLE-RPS).

Reference values come from independent NumPy / Python-int re-implementations
of the definitions (algorithms.md §11), not from the library's own helpers.
"""

import math
import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxsparse._src.sharing import mappers as rps_mappers
from jaxsparse._src.sharing import rps

P = 2038074743
MAPPERS = ("hashednet", "roast", "stable_rps")


# --- independent references -------------------------------------------------
def uhash(x, coeffs, k):
  a, b, c = coeffs
  return np.array([((a * int(v) + b * int(v) ** 2 + c) % P) % k for v in x],
                  np.int64)


def fmix32(h):
  h &= 0xFFFFFFFF
  h ^= h >> 16
  h = (h * 0x85EBCA6B) & 0xFFFFFFFF
  h ^= h >> 13
  h = (h * 0xC2B2AE35) & 0xFFFFFFFF
  return h ^ (h >> 16)


def ref_signs(offset, n, seed):
  return np.array([1.0 if fmix32((offset + i) ^ seed) >> 31 else -1.0
                   for i in range(n)], np.float32)


def ref_index(spec, leaf):
  """Slot of every entry of `leaf`, from the formulas (NumPy / ints)."""
  m, n = spec.memory_size, leaf.size
  i = np.arange(n) + leaf.offset
  if spec.mapper == "hashednet":
    idx = leaf.segment + uhash(i, spec.coeffs, leaf.segment_size)
  elif spec.mapper == "stable_rps":
    shifts = uhash(np.arange(-(-spec.n_compressed // m)), spec.coeffs, m)
    idx = (shifts[i // m] + i % m) % m
  else:
    bk, bn = spec.tile
    rows, cols = math.prod(leaf.shape[:-1]), leaf.shape[-1]
    a, b, c = spec.coeffs
    idx = np.empty((rows, cols), np.int64)
    for r in range(rows):
      for q in range(cols):
        k2 = r // bk + leaf.offset
        n2 = q // bn + leaf.offset + rows
        start = ((k2 * a + n2 * b + c) % P) % (m - bk * bn + 1)
        idx[r, q] = start + (r % bk) * bn + q % bn
  return idx.reshape(leaf.shape)


def mlp(key, sizes=(12, 40, 30, 5)):
  params = {}
  for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
    key, sub = jax.random.split(key)
    params[f"dense_{i}"] = {
        "kernel": jax.random.normal(sub, (a, b)) / math.sqrt(a),
        "bias": jnp.full((b,), 0.1 * (i + 1)),
    }
  return params


def forward(params, x):
  n = len(params)
  for i in range(n):
    x = x @ params[f"dense_{i}"]["kernel"] + params[f"dense_{i}"]["bias"]
    if i < n - 1:
      x = jnp.tanh(x)
  return x


def loss_fn(params, x, y):
  return optax.softmax_cross_entropy_with_integer_labels(
      forward(params, x), y).mean()


def data(n=32, d=12, classes=5, seed=1):
  rng = np.random.default_rng(seed)
  return (jnp.asarray(rng.normal(size=(n, d)), jnp.float32),
          jnp.asarray(rng.integers(0, classes, n)))


TILE = (4, 4)


def kernels(tree):
  return [v["kernel"] for v in tree.values()]


# --- expand = lambda * xi * M[idx] --------------------------------------------
@pytest.mark.parametrize("mapper", MAPPERS)
def test_expand_matches_numpy_definition(mapper):
  params = mlp(jax.random.PRNGKey(0))
  memory, spec = rps.init(params, 0.2, mapper=mapper, seed=3, tile=TILE)
  out = jax.jit(spec.expand)(memory)
  shared = np.asarray(memory.shared)
  assert spec.memory_size == (
      sum(max(1, math.floor(0.2 * k.size + 0.5)) for k in kernels(params))
      if mapper == "hashednet"
      else math.floor(0.2 * sum(k.size for k in kernels(params)) + 0.5))
  offset = 0
  for name in sorted(params):
    kernel = np.asarray(params[name]["kernel"])
    leaf = next(x for x in spec.compressed if x.path == f"{name}/kernel")
    assert leaf.offset == offset
    lam = np.std(kernel.astype(np.float64)) / 0.04
    np.testing.assert_allclose(leaf.scale, lam, rtol=1e-12)
    want = (lam * ref_signs(offset, kernel.size, spec.sign_seed).reshape(
        kernel.shape) * shared[ref_index(spec, leaf)])
    np.testing.assert_allclose(out[name]["kernel"], want, rtol=1e-6)
    # Biases pass through unchanged (and are part of the trainable tree).
    np.testing.assert_array_equal(out[name]["bias"], params[name]["bias"])
    assert memory.dense[name]["kernel"] is None
    offset += kernel.size
  # Signs are balanced and the memory is U(-0.04, 0.04).
  signs = ref_signs(0, spec.n_compressed, spec.sign_seed)
  assert abs(signs.mean()) < 0.05
  assert shared.min() >= -0.04 and shared.max() <= 0.04


@pytest.mark.parametrize("sizes", [(12, 40, 30, 5), (7, 33, 3)])
@pytest.mark.parametrize("compression", [1.0, 0.5, 0.13, 0.02])
def test_randomfold_loads_and_bijection(sizes, compression):
  params = mlp(jax.random.PRNGKey(1), sizes)
  memory, spec = rps.init(params, compression, mapper="stable_rps",
                              seed=5)
  m, n = spec.memory_size, spec.n_compressed
  # Recover the slot of every weight from expand itself: memory = 1..m.
  out = spec.expand(memory._replace(
      shared=jnp.arange(1, m + 1, dtype=jnp.float32)))
  idx = []
  for leaf in spec.compressed:
    w = np.asarray(out[leaf.path.split("/")[0]]["kernel"])
    slot = np.rint(np.abs(w) / np.float32(leaf.scale)).astype(np.int64) - 1
    np.testing.assert_array_equal(slot, ref_index(spec, leaf))
    idx.append(slot.ravel())
  loads = np.bincount(np.concatenate(idx), minlength=m)
  assert set(np.unique(loads)) <= {n // m, -(-n // m)}
  if compression == 1.0:
    assert m == n
    np.testing.assert_array_equal(np.sort(np.concatenate(idx)), np.arange(n))


def test_hashing_loads_are_not_balanced():
  # The contrast that makes the RANDOMFOLD test meaningful.
  params = mlp(jax.random.PRNGKey(1))
  for mapper in ("hashednet", "roast"):
    _, spec = rps.init(params, 0.13, mapper=mapper, tile=TILE)
    idx = np.concatenate([ref_index(spec, x).ravel() for x in spec.compressed])
    loads = np.bincount(idx, minlength=spec.memory_size)
    assert loads.max() - loads.min() > 1, mapper


# --- gradients ----------------------------------------------------------------
@pytest.mark.parametrize("mapper", MAPPERS)
def test_memory_gradient_is_scatter_add(mapper):
  params = mlp(jax.random.PRNGKey(2))
  memory, spec = rps.init(params, 0.15, mapper=mapper, seed=1, tile=TILE)
  rng = np.random.default_rng(0)
  cot = jax.tree.map(
      lambda p: jnp.asarray(rng.normal(size=p.shape), jnp.float32), params)
  f = lambda mem: sum(jnp.vdot(a, b) for a, b in zip(
      jax.tree.leaves(spec.expand(mem)), jax.tree.leaves(cot), strict=True))
  grad = jax.jit(jax.grad(f))(memory)
  want = np.zeros(spec.memory_size, np.float64)
  for leaf in spec.compressed:
    g = np.asarray(cot[leaf.path.split("/")[0]]["kernel"], np.float64)
    xi = ref_signs(leaf.offset, leaf.size, spec.sign_seed).reshape(leaf.shape)
    np.add.at(want, ref_index(spec, leaf).ravel(),
              (leaf.scale * xi * g).ravel())
  np.testing.assert_allclose(grad.shared, want, rtol=2e-5, atol=2e-5)
  for name in params:
    np.testing.assert_array_equal(grad.dense[name]["bias"], cot[name]["bias"])


def scatter_add_expand(spec):
  """The formulation `expand` replaces, inline: `lambda * xi * M[idx]`.

  Indices from `ref_index` (NumPy), signs from `ref_signs`; the memory's
  gradient is JAX's transpose of an integer-array gather, a generic
  scatter-add.
  """
  idx = [jnp.asarray(ref_index(spec, x)) for x in spec.compressed]
  sgn = [jnp.asarray(x.scale * ref_signs(x.offset, x.size, spec.sign_seed)
                     .reshape(x.shape)) for x in spec.compressed]

  def expand(memory):
    values = iter(memory.shared[i] * s for i, s in zip(idx, sgn, strict=True))
    dense = spec.treedef.flatten_up_to(memory.dense)
    return jax.tree.unflatten(spec.treedef, [
        d if x is None else next(values)
        for x, d in zip(spec.leaves, dense, strict=True)])
  return expand


# Many RANDOMFOLD chunks (leaves straddling chunk boundaries and the wrap),
# one chunk (compression 1), HashedNet segments with empty slots.
@pytest.mark.parametrize("mapper,compression", [
    ("hashednet", 0.02), ("roast", 0.15), ("stable_rps", 0.02),
    ("stable_rps", 1.0)])
def test_layouts_match_scatter_add_reference(mapper, compression):
  params = mlp(jax.random.PRNGKey(8))
  x, y = data()
  memory, spec = rps.init(params, compression, mapper=mapper, seed=4,
                          tile=TILE)
  ref = scatter_add_expand(spec)

  def parts(fn):
    def f(mem):
      loss, g = jax.value_and_grad(lambda q: loss_fn(fn(q), x, y))(mem)
      return fn(mem), loss, g
    return jax.jit(f)

  new, old = parts(spec.expand), parts(ref)
  close = lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
  mem_new = mem_old = memory
  for _ in range(2):  # at init and after one SGD step of each
    (w1, l1, g1), (w2, l2, g2) = new(mem_new), old(mem_old)
    jax.tree.map(np.testing.assert_array_equal if mem_new is memory
                 else close, w1, w2)  # the same values, bit for bit at init
    np.testing.assert_allclose(l1, l2, rtol=1e-5)
    jax.tree.map(close, g1, g2)  # the same gradients up to float rounding
    assert float(jnp.abs(g1.shared).max()) > 0
    mem_new = jax.tree.map(lambda p, g: p - 0.05 * g, mem_new, g1)
    mem_old = jax.tree.map(lambda p, g: p - 0.05 * g, mem_old, g2)
  jax.tree.map(close, mem_new, mem_old)


@pytest.mark.parametrize("mapper", MAPPERS)
def test_gradient_is_no_hash_and_no_generic_scatter(mapper):
  # The per-weight hashes are host-side tables: neither the universal hash
  # (Montgomery products mod P) nor the signs' murmur3 finaliser is in the
  # program; RANDOMFOLD's gradient is static rotations.
  params = mlp(jax.random.PRNGKey(2))
  memory, spec = rps.init(params, 0.1, mapper=mapper, tile=TILE)
  loss = lambda mem: sum(jnp.vdot(w, w) for w in jax.tree.leaves(
      spec.expand(mem)))
  text = jax.jit(jax.grad(loss)).lower(memory).compile().as_text()
  for c in (rps_mappers.P, 0x85EBCA6B, 0xC2B2AE35):
    assert f"constant({c})" not in text
  if mapper == "stable_rps":
    assert "scatter(" not in text


@pytest.mark.parametrize("mapper", MAPPERS)
def test_slot_statistics_and_scaler(mapper):
  params = mlp(jax.random.PRNGKey(3))
  memory, spec = rps.init(params, 0.1, mapper=mapper, tile=TILE)
  m = spec.memory_size
  load, s1, s2 = np.zeros(m), np.zeros(m), np.zeros(m)
  for leaf in spec.compressed:
    idx = ref_index(spec, leaf).ravel()
    np.add.at(load, idx, 1.0)
    np.add.at(s1, idx, leaf.scale)
    np.add.at(s2, idx, leaf.scale**2)
  got = spec.slot_stats()
  np.testing.assert_array_equal(got[0], load)
  np.testing.assert_allclose(got[1], s1, rtol=1e-5)
  np.testing.assert_allclose(got[2], s2, rtol=1e-5)
  v1 = np.where(load > 0, s1**2 / np.maximum(load, 1), 0.0)
  for mode, want in (("v1", v1), ("v5", s2)):
    state = rps.gradient_scaling(spec, mode).init(memory)
    np.testing.assert_allclose(state.scaler, 1e-6 + want, rtol=1e-5)


# --- STABLE-RPS at compression 1 is the dense model -----------------------
def test_compression_one_reproduces_dense_model_and_sgd():
  params = mlp(jax.random.PRNGKey(4))
  x, y = data()
  _, spec = rps.init(params, 1.0, mapper="stable_rps", seed=9)
  memory = spec.project(params)
  out = spec.expand(memory)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6),
               out, params)

  lr = 0.5
  dense_tx = optax.sgd(lr)
  rps_tx = optax.chain(rps.gradient_scaling(spec), optax.sgd(lr))

  @jax.jit
  def dense_step(p, s):
    loss, g = jax.value_and_grad(loss_fn)(p, x, y)
    u, s = dense_tx.update(g, s, p)
    return optax.apply_updates(p, u), s, loss

  @jax.jit
  def rps_step(mem, s):
    loss, g = jax.value_and_grad(lambda q: loss_fn(spec.expand(q), x, y))(mem)
    u, s = rps_tx.update(g, s, mem)
    return optax.apply_updates(mem, u), s, loss

  ds, rs = dense_tx.init(params), rps_tx.init(memory)
  p, mem = params, memory
  for _ in range(10):
    p, ds, l1 = dense_step(p, ds)
    mem, rs, l2 = rps_step(mem, rs)
    np.testing.assert_allclose(l2, l1, rtol=1e-5)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4,
                                                       atol=1e-6),
               spec.expand(mem), p)
  assert float(l1) < 0.8 * float(loss_fn(params, x, y))  # it did train


# --- gradient scaling: invariance to the memory's init scale ------------------
def _train(spec, memory, tx, steps=15):
  x, y = data()
  state = tx.init(memory)

  @jax.jit
  def step(mem, s):
    loss, g = jax.value_and_grad(lambda q: loss_fn(spec.expand(q), x, y))(mem)
    u, s = tx.update(g, s, mem)
    return optax.apply_updates(mem, u), s, loss

  losses = []
  for _ in range(steps):
    memory, state, loss = step(memory, state)
    losses.append(float(loss))
  return np.array(losses), spec.expand(memory)


def test_scaled_sgd_is_invariant_to_init_scale():
  params = mlp(jax.random.PRNGKey(5))
  runs = {}
  for scale in (0.04, 0.4):
    memory, spec = rps.init(params, 0.2, mapper="stable_rps", seed=2,
                                init_scale=scale)
    np.testing.assert_allclose(
        jnp.abs(memory.shared).max(), scale, rtol=0.05)
    runs[scale] = {
        mode: _train(spec, memory, optax.chain(
            rps.gradient_scaling(spec, mode), optax.sgd(3.0)))
        for mode in ("v1", "v5")}
    runs[scale]["none"] = _train(spec, memory, optax.sgd(0.01))
  for mode in ("v1", "v5"):
    (l_a, p_a), (l_b, p_b) = runs[0.04][mode], runs[0.4][mode]
    np.testing.assert_allclose(l_a, l_b, rtol=1e-4)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(
        a, b, rtol=1e-3, atol=1e-5), p_a, p_b)
    assert l_a[-1] < 0.7 * l_a[0]  # it trains
  # Without the scaling the trajectory depends on the init scale.
  u_a, u_b = runs[0.04]["none"][0], runs[0.4]["none"][0]
  assert np.all(np.isfinite(u_a)) and np.all(np.isfinite(u_b))
  assert np.max(np.abs(u_a - u_b)) > 1e-2


# --- determinism and errors ---------------------------------------------------
@pytest.mark.parametrize("mapper", MAPPERS)
def test_deterministic_from_seed(mapper):
  params = mlp(jax.random.PRNGKey(6))
  m1, s1 = rps.init(params, 0.1, mapper=mapper, seed=11, tile=TILE)
  m2, s2 = rps.init(params, 0.1, mapper=mapper, seed=11, tile=TILE)
  m3, s3 = rps.init(params, 0.1, mapper=mapper, seed=12, tile=TILE)
  assert s1 == s2 and hash(s1) == hash(s2)
  np.testing.assert_array_equal(m1.shared, m2.shared)
  jax.tree.map(np.testing.assert_array_equal, s1.expand(m1), s2.expand(m2))
  assert not np.array_equal(m1.shared, m3.shared)
  leaf1, leaf3 = s1.compressed[1], s3.compressed[1]
  assert not np.array_equal(ref_index(s1, leaf1), ref_index(s3, leaf3))
  # The same seed with another key: same hashes, other memory.
  m4, s4 = rps.init(params, 0.1, mapper=mapper, seed=11, tile=TILE,
                        key=jax.random.PRNGKey(99))
  assert s4 == s1 and not np.array_equal(m4.shared, m1.shared)


@pytest.mark.parametrize("bad", [0.0, -0.1, 1.01, 2.0, float("nan")])
def test_compression_outside_unit_interval_raises(bad):
  with pytest.raises(ValueError, match=r"\(0, 1\]"):
    rps.init(mlp(jax.random.PRNGKey(0)), bad)


def test_too_small_for_a_tile_raises():
  params = {"a": {"kernel": jnp.ones((64, 64))},
            "b": {"kernel": jnp.ones((4, 8)), "bias": jnp.zeros(8)}}
  with pytest.raises(ValueError, match="leaf 'b/kernel' has 32 weights.*8x8"):
    rps.init(params, 0.5, mapper="roast", tile=(8, 8))
  # Excluding the small leaf works; its kernel then passes through.
  mem, spec = rps.init(params, 0.5, mapper="roast", tile=(8, 8),
                           filter_fn=lambda path, x: x.size >= 64)
  np.testing.assert_array_equal(spec.expand(mem)["b"]["kernel"],
                                params["b"]["kernel"])
  # The memory itself smaller than one tile.
  with pytest.raises(ValueError, match="smaller than one 8x8"):
    rps.init(params["a"], 0.01, mapper="roast", tile=(8, 8))
  with pytest.raises(ValueError, match="mapper"):
    rps.init(params, 0.5, mapper="robe")


def test_expand_rejects_foreign_trees():
  params = mlp(jax.random.PRNGKey(0))
  memory, spec = rps.init(params, 0.1)
  with pytest.raises(TypeError, match="Memory returned by init"):
    spec.expand(params)
  with pytest.raises(ValueError, match="shape"):
    spec.expand(memory._replace(shared=memory.shared[:-1]))


# --- usage with optax, shapes and memory budgets ------------------------------
@pytest.mark.parametrize("mapper", MAPPERS)
def test_trains_with_adam_and_shape_inputs(mapper):
  params = mlp(jax.random.PRNGKey(7))
  shapes = jax.tree.map(lambda p: jax.ShapeDtypeStruct(p.shape, p.dtype),
                        params)
  memory, spec = rps.init(shapes, 0.3, mapper=mapper, tile=TILE)
  for leaf in spec.compressed:  # std from 1/sqrt(fan_in) for shapes
    np.testing.assert_allclose(
        leaf.scale, 1 / math.sqrt(math.prod(leaf.shape[:-1])) / 0.04)
  assert memory.dense["dense_0"]["bias"].shape == (40,)
  memory = memory._replace(dense=jax.tree.map(jnp.zeros_like, memory.dense))
  losses, _ = _train(spec, memory, optax.adam(3e-3), steps=30)
  assert losses[-1] < 0.7 * losses[0]


@pytest.mark.parametrize("mapper", ["roast", "stable_rps"])
def test_expand_builds_no_weight_sized_index_array(mapper):
  # ~1.3 M weights: only per-tile / per-chunk integer tables may exist.
  sizes = (512, 1024, 768)
  params = {f"l{i}": {"kernel": jax.ShapeDtypeStruct((a, b), jnp.float32)}
            for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True))}
  memory, spec = rps.init(params, 0.1, mapper=mapper)
  memory = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype),
                        memory)
  loss = lambda mem: sum(jnp.vdot(w, w) for w in jax.tree.leaves(
      spec.expand(mem)))
  text = jax.jit(jax.grad(loss)).lower(memory).compile().as_text()
  largest = 0
  for block in re.split(r"\n(?=\S)", text):
    if "fused_computation" in block.split("\n", 1)[0]:
      continue  # fusion bodies are computed on the fly, not stored
    for dims in re.findall(r"= [su]32\[([\d,]*)\]", block):
      largest = max(largest, math.prod(int(d) for d in dims.split(",") if d))
  assert largest <= spec.n_compressed // 500, largest


def test_memory_budget():
  params = mlp(jax.random.PRNGKey(0), (64, 256, 256, 10))
  n = 64 * 256 + 256 * 256 + 256 * 10
  biases = 256 + 256 + 10
  b = rps.memory_budget(params, 4000, mask_cost="none")
  assert (b.n_weights, b.dense_floats, b.nonzeros) == (n, biases, 4000)
  assert b.compression == pytest.approx(4000 / n)
  assert b.sparsity == pytest.approx(1 - 4000 / n)
  _, spec = rps.init(params, b.compression)
  assert spec.memory_size == 4000
  b = rps.memory_budget(params, 4000, mask_cost="bitmap")
  assert b.nonzeros == math.floor(4000 - n / 32) and b.mask_floats == n / 32
  b = rps.memory_budget(params, 4000, mask_cost="index")
  assert b.nonzeros == 2000 and b.mask_floats == 2000
  with pytest.raises(ValueError, match="cannot hold"):
    rps.memory_budget(params, 1000, mask_cost="bitmap")  # bitmap: 2,648
  with pytest.raises(ValueError, match="budget"):
    rps.memory_budget(params, n + 1)
  with pytest.raises(ValueError, match="mask_cost"):
    rps.memory_budget(params, 100, mask_cost="csr")
