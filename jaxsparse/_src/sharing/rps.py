"""Randomized parameter sharing (RPS) as a functional transform of params.

`init(params, compression, mapper=...)` returns a trainable
`Memory` and a static `Spec` whose pure `spec.expand(memory)`
materialises full-shape params: every compressed weight is
`W_i = lambda_l * xi_i * M[idx(i)]`, with `M` the shared memory, `xi_i = ±1`
a hashed sign, `lambda_l` a per-leaf scale and `idx` the mapper. Leaves the
filter does not select (biases, norms) pass through `memory.dense` as
ordinary trainable arrays. Train `loss(spec.expand(memory), batch)` with any
optax optimizer. The maps are fixed at `init`, so their index layouts are
built once on the host and the memory's gradient avoids per-weight hashing
and generic scatter-adds: HashedNet gathers through a precomputed slot table
(its gradient is a scatter-add on those constant indices), ROAST scatters
whole tiles, and RANDOMFOLD's gradient (a `custom_vjp`) is a sum of
`ceil(n / m)` static rotations of the cotangent. Hence pure forward mode
(`jax.jvp`, `jax.jacfwd`) through a "stable_rps" expand raises; reverse mode
and Hessian-vector products (`jax.jvp` of `jax.grad`) work.

Mappers (global offset `i` runs over the compressed leaves in tree order):

* `"hashednet"` (Chen et al., 2015): one memory segment of
  `round(compression * n_l)` floats per leaf, element-wise universal hash
  `((a*i + b*i**2 + c) mod P) mod K_l`, `P = 2038074743`.
* `"roast"` (Desai, Zhou & Shrivastava, 2022): one global memory; each
  leaf, seen as a 2-D `(prod(shape[:-1]), shape[-1])` matrix, is cut into
  `BK x BN` tiles and tile `(k, n)` reads the contiguous block starting at
  `((k'*a + n'*b + c) mod P) mod (m - BK*BN + 1)`, with `k' = k + offset`,
  `n' = n + offset + rows` (the reference `RoastMapper`).
* `"stable_rps"` (Desai & Shrivastava, ICLR 2024): one global memory with
  RANDOMFOLD `idx(i) = (h(i // m) + i mod m) mod m`; slot loads differ by at
  most one and `compression=1` is a bijection. Pair it with
  `gradient_scaling(spec)` in the optimizer (the paper's other fix).

Departures from the reference code (apd10/FakeRoast), all documented:
signs come from the murmur3 finaliser of the global offset rather than a
stored random tensor (HashedNet's reference derives them from the same hash
as the slot, which ties signs to slot parity); the universal hash is computed
exactly mod P (the reference's int64 `b*x**2` wraps for offsets above ~2**16);
ROAST tile starts range over `m - BK*BN + 1` values so the last slot is used.

References:
  Chen et al., "Compressing Neural Networks with the Hashing Trick", ICML 2015.
  Desai, Zhou & Shrivastava, "Efficient model compression with Random
  Operation Access Specific Tile (ROAST) hashing", 2022.
  Desai & Shrivastava, "In defense of parameter sharing for model-compression",
  ICLR 2024 (arXiv:2310.11611).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax

from jaxsparse._src.core import bits as bits_lib
from jaxsparse._src.core import masks as masks_lib
from jaxsparse._src.sharing import mappers as hashing

MAPPERS = ("hashednet", "roast", "stable_rps")
MASK_COSTS = ("none", "bitmap", "index")
_ELEMENT_GATHER = lax.GatherDimensionNumbers(
    offset_dims=(), collapsed_slice_dims=(0,), start_index_map=(0,))


class Memory(NamedTuple):
  """Trainable state of a parameter-sharing model (`jaxsparse.sharing.init`)."""

  shared: jax.Array  # shape=(m,), float32: the hashed memory.
  dense: Any  # like params: uncompressed leaves as is, None where compressed.


@dataclasses.dataclass(frozen=True)
class Leaf:
  """Static description of one compressed leaf."""

  path: str
  shape: tuple[int, ...]
  dtype: np.dtype
  offset: int  # global offset of the leaf's first entry
  scale: float  # lambda_l: std(original leaf) / init_scale
  segment: int = 0  # HashedNet: start of the leaf's memory segment
  segment_size: int = 0  # HashedNet: the segment's length K_l

  @property
  def size(self) -> int:
    return math.prod(self.shape)

  @property
  def matrix(self) -> tuple[int, int]:
    """The 2-D view tiled by ROAST: (fan-in, fan-out)."""
    return math.prod(self.shape[:-1]), self.shape[-1]


def _round_count(fraction: float, n: int) -> int:
  return max(1, int(math.floor(fraction * n + 0.5)))


@dataclasses.dataclass(frozen=True)
class Spec:
  """Static (hashable) description of an RPS model; `expand` is pure.

  Holds no arrays. The index layouts `expand` reads are built on the host
  once per spec (cached) and enter the compiled program as constants:
  HashedNet's slot table (one int32 per weight: 4 bytes per weight while a
  program that expands is compiled), ROAST's tile starts and RANDOMFOLD's
  chunk shifts (at most `n / min(m, BK*BN)` entries).
  """

  mapper: str
  treedef: Any
  leaves: tuple[Leaf | None, ...]  # per params leaf; None = pass-through
  memory_size: int  # m: floats in `memory.shared`
  n_compressed: int  # n: weights materialised from the memory
  tile: tuple[int, int]  # (BK, BN), used by "roast"
  coeffs: tuple[int, int, int]  # (a, b, c) of the universal hash
  sign_seed: int  # uint32 seed of the ±1 signs

  @property
  def compression(self) -> float:
    """Stored floats / original floats over the compressed leaves."""
    return self.memory_size / self.n_compressed

  @property
  def compressed(self) -> tuple[Leaf, ...]:
    return tuple(x for x in self.leaves if x is not None)

  # --- host-side tables (Python ints, exact) ------------------------------
  @functools.cache  # noqa: B019 (the spec is frozen and hashable)
  def _fold_shifts(self) -> np.ndarray:
    """RANDOMFOLD: h(c) for every chunk c of m consecutive offsets."""
    chunks = -(-self.n_compressed // self.memory_size)
    return hashing.uhash_np(np.arange(chunks), self.coeffs, self.memory_size)

  @functools.cache  # noqa: B019
  def tile_starts(self, leaf: Leaf) -> np.ndarray:
    """ROAST: start slot of each tile, shape (tiles_k, tiles_n), int64."""
    bk, bn = self.tile
    rows, cols = leaf.matrix
    k = np.arange(-(-rows // bk), dtype=np.int64)[:, None] + leaf.offset
    n = np.arange(-(-cols // bn), dtype=np.int64)[None, :] + (
        leaf.offset + rows)
    a, b, c = self.coeffs
    h = ((a * (k % hashing.P)) % hashing.P
         + (b * (n % hashing.P)) % hashing.P + c) % hashing.P
    return h % (self.memory_size - bk * bn + 1)

  def slot_index(self, leaf: Leaf) -> np.ndarray:
    """The slot of every entry of `leaf` (NumPy, leaf-shaped, int64).

    For inspection and tests; `expand` never builds this array.
    """
    n, m = leaf.size, self.memory_size
    i = np.arange(n, dtype=np.int64) + leaf.offset
    if self.mapper == "hashednet":
      idx = leaf.segment + hashing.uhash_np(i, self.coeffs, leaf.segment_size)
      return idx.reshape(leaf.shape)
    if self.mapper == "stable_rps":
      idx = (self._fold_shifts()[i // m] + i % m) % m
      return idx.reshape(leaf.shape)
    bk, bn = self.tile
    rows, cols = leaf.matrix
    starts = self.tile_starts(leaf)
    r = np.arange(rows)[:, None]
    q = np.arange(cols)[None, :]
    idx = starts[r // bk, q // bn] + (r % bk) * bn + q % bn
    return idx.reshape(leaf.shape)

  def signs(self, leaf: Leaf) -> np.ndarray:
    """The ±1 sign of every entry of `leaf` (NumPy, leaf-shaped)."""
    i = np.arange(leaf.size, dtype=np.int64) + leaf.offset
    return hashing.signs_np(i, self.sign_seed).reshape(leaf.shape)

  @functools.cache  # noqa: B019
  def _sign_bits(self, leaf: Leaf) -> np.ndarray:
    """The signs of `leaf` packed 8 per byte (`bits.pack`'s layout).

    One bit per weight, built on the host once per spec: unpacking is a
    shift and a compare per weight, where hashing the offset (the murmur3
    finaliser: two multiplies and three xor-shifts) cost ~10 % of a step.
    """
    with jax.ensure_compile_time_eval():  # a constant, even under jit
      return np.asarray(bits_lib.pack(jnp.asarray(self.signs(leaf) > 0)))

  def signed_scale(self, leaf: Leaf) -> jax.Array:
    """`lambda_l * xi_i` for every entry of `leaf` (leaf-shaped float32)."""
    positive = bits_lib.unpack(jnp.asarray(self._sign_bits(leaf)),
                               leaf.shape)
    return jnp.where(positive, jnp.float32(leaf.scale),
                     jnp.float32(-leaf.scale))

  @functools.cache  # noqa: B019
  def segment_slots(self, leaf: Leaf) -> np.ndarray:
    """HashedNet: slot of every entry of `leaf` in its segment (flat int32).

    The per-weight hash, computed once on the host; the memory's gradient
    is then a scatter-add over these constant indices (no hash in the step).
    """
    i = np.arange(leaf.size, dtype=np.int64) + leaf.offset
    idx = hashing.uhash_np(i, self.coeffs, leaf.segment_size)
    return idx.astype(np.int32)

  # --- expand --------------------------------------------------------------
  def _gather(self, shared: jax.Array, leaf: Leaf) -> jax.Array:
    """Unsigned, unscaled memory values of `leaf` (leaf-shaped)."""
    if self.mapper == "hashednet":
      segment = lax.slice_in_dim(
          shared, leaf.segment, leaf.segment + leaf.segment_size)
      # A gather on constant indices: its transpose is a scatter-add on the
      # same constants (no per-weight hash in the forward or the backward).
      idx = jnp.asarray(self.segment_slots(leaf))[:, None]
      vals = lax.gather(
          segment, idx, _ELEMENT_GATHER, (1,),
          mode=lax.GatherScatterMode.PROMISE_IN_BOUNDS)
      return vals.reshape(leaf.shape)
    bk, bn = self.tile
    rows, cols = leaf.matrix
    starts = self.tile_starts(leaf)
    tk, tn = starts.shape
    blocks = _windows(shared, starts.reshape(-1), bk * bn)
    w = blocks.reshape(tk, tn, bk, bn).transpose(0, 2, 1, 3)
    w = w.reshape(tk * bk, tn * bn)[:rows, :cols]
    return w.reshape(leaf.shape)

  def _mapped(self, shared: jax.Array) -> list[jax.Array]:
    """`M[idx(i)]` for every compressed leaf (no sign, no scale)."""
    if self.mapper == "stable_rps":
      return _randomfold(self, shared)
    return [self._gather(shared, leaf) for leaf in self.compressed]

  def expand_compressed(self, shared: jax.Array) -> list[jax.Array]:
    """The compressed leaves (float32), in tree order, from the memory."""
    return [
        w * self.signed_scale(leaf)
        for w, leaf in zip(self._mapped(shared), self.compressed, strict=True)]

  def expand(self, memory: Memory) -> Any:
    """Full-shape params from `memory` (pure; use inside the loss).

    Args:
      memory: an `Memory` built by `init` (or `project`).

    Returns:
      A pytree like the original params.
    """
    _check_memory(self, memory)
    dense = self.treedef.flatten_up_to(memory.dense)
    values = iter(self.expand_compressed(memory.shared))
    out = [d if leaf is None else next(values).astype(leaf.dtype)
           for leaf, d in zip(self.leaves, dense, strict=True)]
    return jax.tree.unflatten(self.treedef, out)

  __call__ = expand

  # --- slot statistics and projection -------------------------------------
  def _transpose(self, cotangents: list[jax.Array]) -> jax.Array:
    """Adjoint of `_mapped`: slot j gets the sum of cot_i over i -> j."""
    zero = jnp.zeros((self.memory_size,), jnp.float32)
    _, vjp = jax.vjp(self._mapped, zero)
    return vjp(cotangents)[0]

  def slot_stats(self) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Per slot j: load c_j, sum_{i->j} lambda_i and sum_{i->j} lambda_i**2."""
    t = jax.jit(self._transpose)
    full = lambda v: [jnp.full(x.shape, v(x), jnp.float32)
                      for x in self.compressed]
    load = t(full(lambda x: 1.0))
    sum_scale = t(full(lambda x: x.scale))
    sum_scale_sq = t(full(lambda x: x.scale**2))
    return load, sum_scale, sum_scale_sq

  def project(self, params: Any) -> Memory:
    """The memory whose expansion is closest to `params` (least squares).

    Slot j gets `sum_{i->j} lambda_i xi_i W_i / sum_{i->j} lambda_i**2`; for a
    bijection (`stable_rps` at compression 1) `expand(project(p)) == p` up
    to float rounding. Uncompressed leaves are copied.
    """
    flat = self.treedef.flatten_up_to(params)
    comp = [
        jnp.asarray(masks_lib._leaf_value(p), jnp.float32)  # pylint: disable=protected-access
        * self.signed_scale(leaf)
        for leaf, p in zip(self.leaves, flat, strict=True)
        if leaf is not None]
    num = jax.jit(self._transpose)(comp)  # sum_{i->j} lambda_i xi_i W_i
    _, _, den = self.slot_stats()
    shared = jnp.where(den > 0, num / jnp.where(den > 0, den, 1.0), 0.0)
    dense = jax.tree.unflatten(self.treedef, [
        p if leaf is None else None
        for leaf, p in zip(self.leaves, flat, strict=True)])
    return Memory(shared=shared, dense=dense)


def _windows(mem: jax.Array, starts: np.ndarray, size: int) -> jax.Array:
  """Rows `mem[s:s+size]` for each static start: a windowed gather."""
  starts = jnp.asarray(np.asarray(starts, np.int32))
  return jax.vmap(lambda s: lax.dynamic_slice_in_dim(mem, s, size))(starts)


def _randomfold_values(spec: Spec, shared: jax.Array) -> list[jax.Array]:
  """RANDOMFOLD over all compressed leaves at once.

  Chunk c of m consecutive offsets is the window of `concat(M, M[:m-1])`
  starting at h(c) (one windowed gather); the flat vector is then split
  into leaves.
  """
  m = spec.memory_size
  doubled = jnp.concatenate([shared, shared[:m - 1]])
  flat = _windows(doubled, spec._fold_shifts(), m).reshape(-1)
  return [lax.slice_in_dim(flat, x.offset, x.offset + x.size).reshape(
      x.shape) for x in spec.compressed]


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _randomfold(spec: Spec, shared: jax.Array) -> list[jax.Array]:
  return _randomfold_values(spec, shared)


def _randomfold_fwd(spec, shared):
  return _randomfold_values(spec, shared), None


def _randomfold_bwd(spec, _, cots):
  """The transposed gather: a sum of `chunks` static rotations.

  Chunk c is `M` rotated left by h(c), so its cotangent, rotated right by
  h(c), lands on the slots it read; the last chunk is zero-padded to m. A
  sum of static slices in one fused loop replaces the windowed scatter-add
  (JAX's transpose of the gather, several times slower on CPU).
  """
  m, shifts = spec.memory_size, spec._fold_shifts()
  pad = len(shifts) * m - spec.n_compressed
  flat = jnp.concatenate([x.reshape(-1) for x in cots]
                         + [jnp.zeros((pad,), cots[0].dtype)])
  grad = None
  for c, h in enumerate(int(h) for h in shifts):
    row = lax.slice_in_dim(flat, c * m, (c + 1) * m)
    if h:
      row = jnp.concatenate([row[m - h:], row[:m - h]])
    grad = row if grad is None else grad + row
  return (grad,)


_randomfold.defvjp(_randomfold_fwd, _randomfold_bwd)


def _check_memory(spec: Spec, memory: Any) -> None:
  if not isinstance(memory, Memory):
    raise TypeError(
        "expand() takes the Memory returned by init, got "
        f"{type(memory).__name__}.")
  if jnp.shape(memory.shared) != (spec.memory_size,):
    raise ValueError(
        f"memory.shared has shape {jnp.shape(memory.shared)}, expected "
        f"({spec.memory_size},).")


def _check_compression(compression: float) -> float:
  try:
    c = float(compression)
  except (TypeError, ValueError) as e:
    raise TypeError(
        f"`compression` must be a number, got {compression!r}.") from e
  if not 0.0 < c <= 1.0:
    raise ValueError(
        "`compression` (stored floats / original floats) must be in (0, 1], "
        f"got {compression!r}.")
  return c


def _leaf_std(leaf: Any, shape: tuple[int, ...]) -> float:
  """std of an initialised leaf; 1/sqrt(fan_in) for shapes or constants."""
  fallback = 1.0 / math.sqrt(max(1, math.prod(shape[:-1])))
  if isinstance(leaf, jax.ShapeDtypeStruct) or not hasattr(leaf, "dtype"):
    return fallback
  std = float(np.std(np.asarray(leaf, np.float64)))
  return std if std > 0.0 and math.isfinite(std) else fallback


def init(
    params: Any,
    compression: float,
    *,
    mapper: str = "stable_rps",
    seed: int = 0,
    key: jax.Array | None = None,
    tile: tuple[int, int] = (32, 32),
    filter_fn: masks_lib.FilterFn = masks_lib.is_kernel,
    init_scale: float = 0.04,
    init: str = "uniform",
) -> tuple[Memory, Spec]:
  """Replaces the selected leaves of `params` by one hashed memory.

  Args:
    params: initialised params (their std sets each leaf's scale) or a tree
      of `jax.ShapeDtypeStruct` (scale from std = 1/sqrt(fan_in)).
    compression: memory floats / compressed floats, in (0, 1]. The memory
      holds `round(compression * n)` floats (per leaf for "hashednet").
    mapper: "hashednet", "roast" or "stable_rps".
    seed: seeds the hashes, the signs and (without `key`) the memory.
    key: optional PRNG key for the memory's initial values.
    tile: (BK, BN) block of "roast" over the (fan-in, fan-out) view.
    filter_fn: `(path, leaf) -> bool` choosing compressed leaves; default
      floating leaves with ndim >= 2 (Dense/Conv kernels).
    init_scale: the memory is drawn in [-init_scale, init_scale] and leaf l
      is scaled by `lambda_l = std_l / init_scale` (reference: 0.04).
    init: "uniform" (U(-s, s), the paper) or "normal" (N(0, s**2), what the
      reference's global ROAST code draws; expanded std then matches std_l).

  Returns:
    `(memory, spec)`: the trainable `Memory` and the static `Spec`;
    `spec.expand(memory)` gives params.

  Examples:
    >>> import jax, jax.numpy as jnp, optax, jaxsparse
    >>> params = {"w": jnp.ones((64, 32)) * 0.1, "b": jnp.zeros(32)}
    >>> memory, spec = jaxsparse.sharing.init(params, 0.25, seed=0)
    >>> memory.shared.shape, memory.dense["b"].shape
    ((512,), (32,))
    >>> scaling = jaxsparse.sharing.gradient_scaling(spec)
    >>> tx = optax.chain(scaling, optax.sgd(0.1))
    >>> state = tx.init(memory)
    >>> loss = lambda mem: jnp.sum(spec.expand(mem)["w"] ** 2)
    >>> updates, state = tx.update(jax.grad(loss)(memory), state)
    >>> memory = optax.apply_updates(memory, updates)

  Raises:
    ValueError: compression outside (0, 1], unknown mapper, nothing to
      compress, a leaf smaller than one ROAST tile or a memory smaller than
      one tile.
  """
  c = _check_compression(compression)
  if mapper not in MAPPERS:
    raise ValueError(f"`mapper` must be one of {MAPPERS}, got {mapper!r}.")
  if init not in ("uniform", "normal"):
    raise ValueError(f"`init` must be 'uniform' or 'normal', got {init!r}.")
  if not init_scale > 0:
    raise ValueError(f"`init_scale` must be > 0, got {init_scale!r}.")
  bk, bn = (int(t) for t in tile)
  if bk < 1 or bn < 1:
    raise ValueError(f"`tile` must be two positive ints, got {tile!r}.")
  flat, treedef = jax.tree.flatten_with_path(params)
  sel = masks_lib.select(params, filter_fn)
  sel = treedef.flatten_up_to(sel)
  leaves: list[Leaf | None] = []
  offset = segment = 0
  for (path, p), s in zip(flat, sel, strict=True):
    if s is None:
      leaves.append(None)
      continue
    value = masks_lib._leaf_value(p)  # pylint: disable=protected-access
    shape = tuple(int(d) for d in jnp.shape(value))
    name = masks_lib.path_str(path)
    size = math.prod(shape)
    if mapper == "roast" and size < bk * bn:
      raise ValueError(
          f"leaf '{name}' has {size} weights, fewer than one {bk}x{bn} ROAST "
          "tile; use a smaller `tile` or leave it out with `filter_fn`.")
    k = _round_count(c, size) if mapper == "hashednet" else 0
    leaves.append(Leaf(
        path=name, shape=shape, dtype=np.dtype(value.dtype), offset=offset,
        scale=_leaf_std(value, shape) / init_scale, segment=segment,
        segment_size=k))
    offset += size
    segment += k
  n = offset
  if n == 0:
    raise ValueError("`filter_fn` selected no leaf to compress.")
  if n >= 2**31:
    raise ValueError(f"{n} compressed weights: at most 2**31 - 1 supported.")
  m = segment if mapper == "hashednet" else _round_count(c, n)
  if mapper == "roast" and m < bk * bn:
    raise ValueError(
        f"a memory of {m} floats (compression {c} of {n}) is smaller than one "
        f"{bk}x{bn} ROAST tile; use a smaller `tile` or a larger compression.")
  rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0x525053]))
  coeffs = hashing.hash_coefficients(rng)
  sign_seed = int(rng.integers(0, 2**32, dtype=np.uint64))
  spec = Spec(
      mapper=mapper, treedef=treedef, leaves=tuple(leaves), memory_size=m,
      n_compressed=n, tile=(bk, bn), coeffs=coeffs, sign_seed=sign_seed)
  key = jax.random.PRNGKey(seed) if key is None else key
  if init == "uniform":
    shared = jax.random.uniform(
        key, (m,), jnp.float32, -1.0, 1.0) * init_scale
  else:
    shared = jax.random.normal(key, (m,), jnp.float32) * init_scale
  dense = jax.tree.unflatten(treedef, [
      p if leaf is None else None
      for leaf, (_, p) in zip(leaves, flat, strict=True)])
  return Memory(shared=shared, dense=dense), spec


class GradientScalingState(NamedTuple):
  """State of `jaxsparse.sharing.gradient_scaling`."""

  scaler: jax.Array  # shape=(m,), float32: slot j's gradient is divided by it.


def gradient_scaling(
    spec: Spec,
    mode: str = "v1",
    eps: float = 1e-6,
) -> optax.GradientTransformation:
  """STABLE-RPS gradient scaling of the shared memory (before the optimizer).

  Divides the gradient of slot j by `eps + s_j`, with `s_j` the slot's
  `(sum_{i->j} lambda_i)**2 / c_j` ("v1", the reference default; `c_j` is the
  slot's load) or `sum_{i->j} lambda_i**2` ("v5", the paper's theory; the
  reference's "v5" branch actually returns the square root). The two agree
  when every weight of a slot has the same scale. With SGD the trained
  function is then independent of the memory's init scale, and at
  compression 1 with RANDOMFOLD it follows dense SGD. Dense (pass-through)
  leaves are untouched.

  Use as `optax.chain(gradient_scaling(spec), optax.sgd(lr))`; `init` and
  `update` take `Memory` trees.

  References:
    Desai & Shrivastava, "In defense of parameter sharing for
    model-compression", ICLR 2024.
  """
  if mode not in ("v1", "v5"):
    raise ValueError(f"`mode` must be 'v1' or 'v5', got {mode!r}.")

  def init_fn(params):
    _check_memory(spec, params)
    load, s1, s2 = spec.slot_stats()
    if mode == "v1":
      s = jnp.where(load > 0, s1 * s1 / jnp.where(load > 0, load, 1.0), 0.0)
    else:
      s = s2
    return GradientScalingState(scaler=(eps + s).astype(jnp.float32))

  def update_fn(updates, state, params=None):
    del params
    if not isinstance(updates, Memory):
      raise TypeError(
          "gradient_scaling expects Memory updates, got "
          f"{type(updates).__name__}.")
    shared = updates.shared / state.scaler.astype(updates.shared.dtype)
    return updates._replace(shared=shared), state

  return optax.GradientTransformation(init_fn, update_fn)


class MemoryBudget(NamedTuple):
  """A budget of stored floats, as an RPS compression and a pruning sparsity.

  Counts the compressible leaves only (the filter's); pass-through leaves
  (biases, norms) are stored densely by both and reported in `dense_floats`.
  """

  budget: float  # stored floats for the compressible leaves
  n_weights: int  # compressible weights
  compression: float  # RPS: init(..., compression) stores `budget` floats
  sparsity: float  # pruning: 1 - nonzeros / n_weights
  nonzeros: int  # non-zeros kept by pruning
  mask_floats: float  # pruning's mask cost, in float32 units
  dense_floats: int  # uncompressed leaves (same for both)


def memory_budget(
    params: Any,
    budget: float,
    *,
    mask_cost: str = "bitmap",
    filter_fn: masks_lib.FilterFn = masks_lib.is_kernel,
) -> MemoryBudget:
  """The RPS compression and the pruning sparsity storing `budget` floats.

  Pruning stores the non-zeros plus a mask cost, in units of float32:

  * "none": non-zeros only (the convention of pruning papers' compression
    ratios; favours pruning).
  * "bitmap": non-zeros + 1 bit per weight (n/32 floats).
  * "index": non-zeros + one 32-bit index per non-zero (COO).

  Args:
    params: params (or a tree of `jax.ShapeDtypeStruct`).
    budget: stored floats for the leaves chosen by `filter_fn`.
    mask_cost: "none", "bitmap" or "index".
    filter_fn: the leaves that are compressed / pruned.

  Returns:
    A `MemoryBudget`; use `compression` with `init` and `sparsity` with
    `prune`.

  Raises:
    ValueError: a budget above the weights, or one that pruning cannot meet
      (e.g. below the bitmap's own size).
  """
  if mask_cost not in MASK_COSTS:
    raise ValueError(
        f"`mask_cost` must be one of {MASK_COSTS}, got {mask_cost!r}.")
  params = masks_lib.unwrap(params)  # flax.nnx Variables -> arrays.
  flat = jax.tree.flatten_with_path(params)[0]
  sel = jax.tree.structure(params).flatten_up_to(
      masks_lib.select(params, filter_fn))
  n = dense = 0
  for (_, p), s in zip(flat, sel, strict=True):
    size = math.prod(jnp.shape(masks_lib._leaf_value(p)))  # pylint: disable=protected-access
    if s is None:
      dense += size
    else:
      n += size
  budget = float(budget)
  if n == 0:
    raise ValueError("`filter_fn` selected no leaf.")
  if not 0 < budget <= n:
    raise ValueError(
        f"`budget` must be in (0, {n}] floats (the compressible weights), got "
        f"{budget!r}.")
  if mask_cost == "none":
    mask, nnz = 0.0, budget
  elif mask_cost == "bitmap":
    mask = n / 32.0
    nnz = budget - mask
  else:
    nnz = budget / 2.0
  nnz = int(math.floor(min(nnz, n)))
  if mask_cost == "index":
    mask = float(nnz)
  if nnz < 1:
    raise ValueError(
        f"a budget of {budget:g} floats cannot hold a pruned model with "
        f"mask_cost={mask_cost!r} (mask alone: {n / 32.0:g} floats).")
  return MemoryBudget(
      budget=budget, n_weights=n, compression=budget / n,
      sparsity=1.0 - nnz / n, nonzeros=nnz, mask_floats=mask,
      dense_floats=dense)
