"""Hash functions for randomized parameter sharing (`jaxsparse.sharing.init`).

Two families, each written twice, so that the jitted version can be checked
against the exact one:

* The universal hash of HashedNets and ROAST,
  `h(x) = ((a*x + b*x**2 + c) mod P) mod K` with `P = 2038074743`. Host-side
  metadata (ROAST tile starts, RANDOMFOLD chunk offsets) uses exact Python /
  NumPy int64 arithmetic. Per-element hashes inside a jitted `expand` use
  Montgomery multiplication on uint32 limbs, exact without `jax_enable_x64`.
* A ±1 sign per weight from the murmur3 32-bit finaliser of the weight's
  global offset.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

P = 2038074743  # prime of the reference universal hash (< 2**31)
_R = 1 << 32
_P_NEG_INV = (-pow(P, -1, _R)) % _R  # -P^{-1} mod 2^32 (Montgomery)
_MASK16 = 0xFFFF


def hash_coefficients(rng: np.random.Generator) -> tuple[int, int, int]:
  """Draws (a, b, c): odd numbers in [3, P) as in the reference `UHasher`."""
  a, b, c = (2 * int(v) + 1 for v in rng.integers(1, P // 2 - 1, size=3))
  return a, b, c


def uhash_np(x: np.ndarray, coeffs: tuple[int, int, int], k: int
             ) -> np.ndarray:
  """Exact `((a*x + b*x**2 + c) mod P) mod k` for 0 <= x < 2**31 (int64)."""
  a, b, c = coeffs
  x = np.asarray(x, np.int64) % P
  x2 = (x * x) % P  # < 2**62: exact in int64
  h = ((a * x) % P + (b * x2) % P + c) % P
  return h % k


def _add_mod(u: jax.Array, v: jax.Array) -> jax.Array:
  """(u + v) mod P for u, v < P (uint32; u + v < 2**32)."""
  s = u + v
  return jnp.where(s >= P, s - P, s)


def _mul64(u: jax.Array, v: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Full 64-bit product of uint32 arrays as (hi, lo) uint32 words."""
  u0, u1 = u & _MASK16, u >> 16
  v0, v1 = v & _MASK16, v >> 16
  p00, p01, p10, p11 = u0 * v0, u0 * v1, u1 * v0, u1 * v1
  mid = p01 + p10
  mid_carry = (mid < p01).astype(jnp.uint32)
  lo = p00 + (mid << 16)
  lo_carry = (lo < p00).astype(jnp.uint32)
  hi = p11 + (mid >> 16) + (mid_carry << 16) + lo_carry
  return hi, lo


def _redc(hi: jax.Array, lo: jax.Array) -> jax.Array:
  """Montgomery reduction: (hi*2**32 + lo) * 2**-32 mod P, for T < P*2**32."""
  m = lo * jnp.uint32(_P_NEG_INV)  # wraps mod 2**32
  mh, _ = _mul64(m, jnp.full_like(m, P))
  # lo + low(m*P) == 0 mod 2**32, with a carry exactly when lo != 0.
  t = hi + mh + (lo != 0).astype(jnp.uint32)
  return jnp.where(t >= P, t - P, t)


def _mont_mul(u: jax.Array, v: jax.Array) -> jax.Array:
  return _redc(*_mul64(u, v))


def uhash_jnp(x: jax.Array, coeffs: tuple[int, int, int], k: int
              ) -> jax.Array:
  """`uhash_np` in uint32 arithmetic (no x64), for uint32 `x` < 2**32.

  Horner with two Montgomery products: `mont(b*R**2, x) = b*x*R`, plus
  `a*R`, gives `(b*x + a)*R`; `mont(., x)` then drops the factor R.
  """
  a, b, c = coeffs
  x = x.astype(jnp.uint32)
  b_r2 = jnp.uint32((b * _R * _R) % P)
  t = _add_mod(_mont_mul(x, jnp.full_like(x, b_r2)),
               jnp.uint32((a * _R) % P))  # (b*x + a) * R mod P
  h = _add_mod(_mont_mul(t, x), jnp.uint32(c % P))  # b*x**2 + a*x + c
  return h % jnp.uint32(k)


def fmix32_np(x: np.ndarray) -> np.ndarray:
  """murmur3's 32-bit finaliser (a bijection of uint32), in NumPy."""
  h = np.asarray(x, np.uint64) & 0xFFFFFFFF
  h ^= h >> 16
  h = (h * 0x85EBCA6B) & 0xFFFFFFFF
  h ^= h >> 13
  h = (h * 0xC2B2AE35) & 0xFFFFFFFF
  h ^= h >> 16
  return h.astype(np.uint32)


def fmix32_jnp(h: jax.Array) -> jax.Array:
  h = h.astype(jnp.uint32)
  h = h ^ (h >> 16)
  h = h * jnp.uint32(0x85EBCA6B)
  h = h ^ (h >> 13)
  h = h * jnp.uint32(0xC2B2AE35)
  return h ^ (h >> 16)


def signs_np(offsets: np.ndarray, sign_seed: int) -> np.ndarray:
  """±1 (float32) for global offsets: top bit of fmix32(offset ^ seed)."""
  h = fmix32_np(np.asarray(offsets, np.uint64) ^ np.uint64(sign_seed))
  return np.where(h >> 31, 1.0, -1.0).astype(np.float32)


def signed_scale_jnp(offset: int, shape: tuple[int, ...], sign_seed: int,
                     scale: float) -> jax.Array:
  """`scale * signs` for a leaf whose flattened entries start at `offset`.

  Computed from an iota inside the jitted function: nothing of the leaf's
  size is stored.
  """
  n = int(np.prod(shape, dtype=np.int64))
  i = jax.lax.iota(jnp.uint32, n) + jnp.uint32(offset)
  h = fmix32_jnp(i ^ jnp.uint32(sign_seed))
  s = jnp.where((h >> 31) != 0, jnp.float32(scale), jnp.float32(-scale))
  return s.reshape(shape)
