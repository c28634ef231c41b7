"""Hash functions for randomized parameter sharing (`jaxsparse.sharing.init`).

Both run on the host, in exact NumPy int64 arithmetic: the maps are fixed
at `init`, so `Spec` turns them into tables once (HashedNet's slot table,
ROAST's tile starts, RANDOMFOLD's chunk shifts, the packed signs) and a
jitted `expand` hashes nothing.

* The universal hash of HashedNets and ROAST,
  `h(x) = ((a*x + b*x**2 + c) mod P) mod K` with `P = 2038074743`.
* A ±1 sign per weight from the murmur3 32-bit finaliser of the weight's
  global offset.
"""

from __future__ import annotations

import numpy as np

P = 2038074743  # prime of the reference universal hash (< 2**31)


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


def fmix32_np(x: np.ndarray) -> np.ndarray:
  """murmur3's 32-bit finaliser (a bijection of uint32), in NumPy."""
  h = np.asarray(x, np.uint64) & 0xFFFFFFFF
  h ^= h >> 16
  h = (h * 0x85EBCA6B) & 0xFFFFFFFF
  h ^= h >> 13
  h = (h * 0xC2B2AE35) & 0xFFFFFFFF
  h ^= h >> 16
  return h.astype(np.uint32)


def signs_np(offsets: np.ndarray, sign_seed: int) -> np.ndarray:
  """±1 (float32) for global offsets: top bit of fmix32(offset ^ seed)."""
  h = fmix32_np(np.asarray(offsets, np.uint64) ^ np.uint64(sign_seed))
  return np.where(h >> 31, 1.0, -1.0).astype(np.float32)
