"""The sparse scaling law of Frantar et al. (2023): fit, predict, optimum.

    L(S, N, D) = (a_S (1 - S)^b_S + c_S) * (1 / N)^b_N + (a_D / D)^b_D + c

with S the sparsity of the pruned layers, N the number of non-zero
parameters and D the number of training tokens. The fit follows Hoffmann et
al. (2022) as the paper does: positive coefficients through their logs, a
Huber loss on log-losses, many starting points, the best kept. The solver
is Levenberg-Marquardt on the residuals of log L, reweighted for the Huber
loss (IRLS): on 7 parameters it reaches the optimum `optax.lbfgs` reaches,
in a fraction of its iterations and about half its compile time.

References:
  Frantar, Riquelme, Houlsby, Alistarh and Evci, "Scaling Laws for
  Sparsely-Connected Foundation Models", ICLR 2024 (arXiv:2309.08520).
  Hoffmann et al., "Training Compute-Optimal Large Language Models",
  NeurIPS 2022 (arXiv:2203.15556).
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

COEFFICIENTS = ("a_S", "b_S", "c_S", "b_N", "a_D", "b_D", "c")
_LOSSES = ("huber", "squared")


class SparseScalingLaw(NamedTuple):
  """The 7 coefficients of the sparse scaling law and its fit diagnostics.

  A pytree: pass it through `jax.jit` / `jax.vmap` like any NamedTuple.
  """

  a_S: Any  # shape=(), float: scale of the sparsity term
  b_S: Any  # shape=(), float: exponent of (1 - S)
  c_S: Any  # shape=(), float: sparsity-independent part of the N term
  b_N: Any  # shape=(), float: exponent of 1 / N
  a_D: Any  # shape=(), float: token scale of the D term
  b_D: Any  # shape=(), float: exponent of a_D / D
  c: Any  # shape=(), float: irreducible loss
  rmse: Any = float("nan")  # loss units, over the fitted rows
  holdout_rmse: Any = float("nan")  # loss units, held-out rows; NaN: none

  @property
  def coefficients(self) -> dict[str, Any]:
    """The 7 coefficients by name (`a_S`, ..., `c`), diagnostics left out."""
    return {k: getattr(self, k) for k in COEFFICIENTS}

  def predict(self, sparsity, n, d) -> jax.Array:
    """L(S, N, D): the predicted loss; arguments broadcast together.

    Args:
      sparsity: S in [0, 1), the fraction of zero weights in pruned layers.
      n: non-zero parameters N (> 0).
      d: training tokens D (> 0).

    Returns:
      The loss, shaped like the broadcast arguments. Jit- and vmap-friendly.
    """
    theta = _theta(self)
    dtype = jnp.result_type(theta, jnp.asarray(sparsity, float))
    s, n, d = (jnp.asarray(x, dtype) for x in (sparsity, n, d))
    return jnp.exp(_log_predict(theta.astype(dtype), jnp.log1p(-s),
                                jnp.log(n), jnp.log(d)))


def _theta(law: SparseScalingLaw) -> jax.Array:
  """The coefficients as the 7 logs the fit optimizes."""
  return jnp.log(jnp.stack([jnp.asarray(law[i], float) for i in range(7)]))


def _log_predict(theta, log1m_s, log_n, log_d):
  """log L from log-coefficients, in log space throughout (no overflow)."""
  la_s, lb_s, lc_s, lb_n, la_d, lb_d, lc = theta
  b_s, b_n, b_d = jnp.exp(lb_s), jnp.exp(lb_n), jnp.exp(lb_d)
  t_n = jnp.logaddexp(la_s + b_s * log1m_s, lc_s) - b_n * log_n
  t_d = b_d * (la_d - log_d)
  t_c = jnp.broadcast_to(lc, jnp.broadcast_shapes(t_n.shape, t_d.shape))
  return jnp.logaddexp(jnp.logaddexp(t_n, t_d), t_c)


def _as_rows(name: str, x) -> np.ndarray:
  a = np.asarray(x, dtype=np.float64)
  if a.ndim != 1:
    raise ValueError(f"{name}: must be a 1-D sequence of numbers, got shape "
                     f"{a.shape}")
  if not np.all(np.isfinite(a)):
    raise ValueError(f"{name}: contains a non-finite value")
  return a


def _check(sparsity, n, d, loss) -> tuple[np.ndarray, ...]:
  cols = {"sparsity": sparsity, "n": n, "d": d, "loss": loss}
  arrays = {k: _as_rows(k, v) for k, v in cols.items()}
  lengths = {k: len(v) for k, v in arrays.items()}
  if len(set(lengths.values())) != 1:
    raise ValueError("sparsity, n, d and loss must have the same length; got "
                     + ", ".join(f"{k}={v}" for k, v in lengths.items()))
  s = arrays["sparsity"]
  if np.any((s < 0) | (s >= 1)):
    raise ValueError(f"sparsity: every value must be in [0, 1); got "
                     f"{s[(s < 0) | (s >= 1)][0]:g}")
  for k in ("n", "d", "loss"):
    if np.any(arrays[k] <= 0):
      raise ValueError(f"{k}: every value must be > 0; got "
                       f"{arrays[k][arrays[k] <= 0][0]:g}")
  return tuple(arrays.values())


def _holdout_mask(holdout, rows: int, seed: int) -> np.ndarray:
  """A boolean mask of held-out rows from `fit`'s `holdout` argument."""
  if holdout is None:
    return np.zeros(rows, bool)
  if isinstance(holdout, (int, np.integer)) and not isinstance(holdout, bool):
    if not 0 <= holdout < rows:
      raise ValueError(f"holdout: {holdout} rows of {rows}; must be in "
                       f"[0, {rows})")
    mask = np.zeros(rows, bool)
    mask[np.random.default_rng(seed).permutation(rows)[:holdout]] = True
    return mask
  mask = np.asarray(holdout)
  if mask.dtype != bool or mask.shape != (rows,):
    raise ValueError(f"holdout: must be None, a number of rows, or a boolean "
                     f"mask of shape ({rows},); got dtype {mask.dtype}, shape "
                     f"{mask.shape}")
  return mask


def _inits(key, num: int, log_n, log_d, loss) -> jax.Array:
  """`num` random starting points scaled to the data (log-coefficients)."""
  k = jax.random.split(key, 7)
  u = lambda i, lo, hi: jax.random.uniform(k[i], (num,), minval=lo,
                                           maxval=hi)
  l_min, l_med = jnp.min(loss), jnp.median(loss)
  c = l_min * u(0, 0.05, 0.95)
  frac = u(1, 0.1, 0.9)  # share of (L_med - c) taken by the N term
  rest = jnp.maximum(l_med - c, 1e-3 * l_med)
  b_n = jnp.exp(u(2, np.log(0.05), np.log(1.5)))
  b_d = jnp.exp(u(3, np.log(0.05), np.log(1.5)))
  b_s = jnp.exp(u(4, np.log(0.1), np.log(3.0)))
  q = u(5, 0.05, 0.95)  # a_S / (a_S + c_S)
  log_ac = jnp.log(frac * rest) + b_n * jnp.median(log_n)
  la_s, lc_s = log_ac + jnp.log(q), log_ac + jnp.log1p(-q)
  la_d = jnp.median(log_d) + jnp.log((1 - frac) * rest) / b_d
  return jnp.stack([la_s, jnp.log(b_s), lc_s, jnp.log(b_n), la_d,
                    jnp.log(b_d), jnp.log(c)], axis=1)


def _objective(theta, log1m_s, log_n, log_d, log_loss, weight, delta):
  """Mean Huber error of log L (squared error for a huge `delta`)."""
  r = _log_predict(theta, log1m_s, log_n, log_d) - log_loss
  per_row = optax.losses.huber_loss(r, delta=delta)  # 0.5 r^2 if |r| <= delta
  return jnp.sum(weight * per_row) / jnp.sum(weight)


def _minimize(theta0, data, delta, max_iters):
  """Levenberg-Marquardt from each row of `theta0`; (thetas, objectives).

  Each step solves the damped Gauss-Newton system of the residuals of log L
  weighted as iteratively reweighted least squares for the Huber loss
  (weight 1 within `delta`, delta / |r| beyond); a step is kept only if it
  lowers the objective. Traced `delta` and `max_iters`: one compilation per
  table size and number of starting points.
  """
  *cols, weight = data
  res = lambda t: _log_predict(t, *cols[:3]) - cols[3]
  fn = lambda t: _objective(t, *data, delta)
  eye = jnp.eye(theta0.shape[-1], dtype=theta0.dtype)

  def one(t0):
    def body(_, carry):
      t, lam, f = carry
      r, jac = res(t), jax.jacfwd(res)(t)  # (rows,), (rows, 7)
      w = weight * jnp.minimum(1.0, delta / jnp.maximum(jnp.abs(r), 1e-300))
      a = (jac * w[:, None]).T @ jac
      g = jac.T @ (w * r)
      step = -jnp.linalg.solve(a + lam * (eye * jnp.diag(a) + 1e-9 * eye), g)
      f_new = fn(t + step)
      ok = jnp.isfinite(f_new) & (f_new < f)
      lam = jnp.clip(jnp.where(ok, lam / 3.0, lam * 2.0), 1e-12, 1e12)
      return jnp.where(ok, t + step, t), lam, jnp.where(ok, f_new, f)

    lam0 = jnp.asarray(1e-3, theta0.dtype)
    t, _, f = jax.lax.fori_loop(0, max_iters, body, (t0, lam0, fn(t0)))
    return t, f

  return jax.vmap(one)(theta0)


_minimize_jit = jax.jit(_minimize)


def fit(sparsity, n, d, loss, *, objective: str = "huber",
        huber_delta: float = 1e-3, num_inits: int = 64,
        max_iters: int = 300, holdout=None,
        seed: int = 0) -> SparseScalingLaw:
  """Fits the sparse scaling law of Frantar et al. (2023) to a table of runs.

  Each row is one run: its sparsity S, non-zero parameters N, training
  tokens D and final (evaluation) loss L. The 7 coefficients are fitted as
  logs (so all are positive) by minimising the Huber (or squared) error of
  log L, with Levenberg-Marquardt (Huber by reweighting) from `num_inits`
  random starting points scaled to the data, in float64; the lowest
  objective wins.

  Args:
    sparsity: S per run, in [0, 1).
    n: non-zero parameters N per run, > 0.
    d: training tokens D per run, > 0.
    loss: final loss per run, > 0 (nats per token, say).
    objective: "huber" (delta `huber_delta` on log L, as Hoffmann et al.
      2022) or "squared" (least squares on log L).
    huber_delta: the Huber threshold, in log-loss units.
    num_inits: random starting points.
    max_iters: solver iterations from each starting point.
    holdout: rows left out of the fit and scored as `holdout_rmse`: None,
      a number of rows (drawn at random with `seed`), or a boolean mask
      (True = held out).
    seed: seeds the starting points and a random hold-out.

  Returns:
    A `SparseScalingLaw` of Python floats: the coefficients, `rmse` (root
    mean squared error of L over the fitted rows) and `holdout_rmse` (over
    the held-out rows; NaN without a hold-out).

  Raises:
    ValueError: columns of different lengths, a sparsity outside [0, 1),
      a non-positive n, d or loss, a bad `holdout`, or fewer than 7 rows
      left to fit 7 coefficients.

  Examples:
    >>> import numpy as np
    >>> from jaxsparse import scaling
    >>> true = scaling.SparseScalingLaw(5e2, 1.0, 1e2, 0.5, 2e4, 0.4, 1.0)
    >>> s, n, d = np.meshgrid([0., .5, .75], [1e4, 1e5, 1e6], [1e6, 1e7])
    >>> s, n, d = s.ravel(), n.ravel(), d.ravel()
    >>> law = scaling.fit(s, n, d, true.predict(s, n, d))
    >>> bool(law.rmse < 1e-3)
    True

  References:
    Frantar et al., "Scaling Laws for Sparsely-Connected Foundation
    Models", ICLR 2024 (arXiv:2309.08520), eq. (1).
  """
  s, n_, d_, l_ = _check(sparsity, n, d, loss)
  if objective not in _LOSSES:
    raise ValueError(f"objective={objective!r}: unknown; allowed: "
                     f"{', '.join(repr(x) for x in _LOSSES)}")
  if not huber_delta > 0:
    raise ValueError(f"huber_delta={huber_delta!r}: must be > 0")
  for name, v in (("num_inits", num_inits), ("max_iters", max_iters)):
    if not isinstance(v, (int, np.integer)) or v < 1:
      raise ValueError(f"{name}={v!r}: must be an integer >= 1")
  held = _holdout_mask(holdout, len(s), seed)
  if int((~held).sum()) < len(COEFFICIENTS):
    raise ValueError(
        f"loss: {int((~held).sum())} rows to fit (of {len(s)}, "
        f"{int(held.sum())} held out); the law has {len(COEFFICIENTS)} "
        "coefficients: give at least 7 rows (more to judge the fit)")
  fit_rows = ~held
  # Rows padded to a power of two (weight 0): one compilation serves tables
  # of similar sizes.
  pad = max(64, 1 << (len(s) - 1).bit_length()) - len(s)
  cols = [np.pad(x, (0, pad)) for x in (np.log1p(-s), np.log(n_),
                                        np.log(d_), np.log(l_),
                                        fit_rows.astype(np.float64))]
  with jax.enable_x64(True):
    data = tuple(jnp.asarray(x) for x in cols)
    theta0 = _inits(jax.random.key(seed), int(num_inits),
                    jnp.asarray(np.log(n_[fit_rows])),
                    jnp.asarray(np.log(d_[fit_rows])),
                    jnp.asarray(l_[fit_rows]))
    # Squared error: a Huber threshold no residual reaches (finite: no NaN).
    delta = float(huber_delta) if objective == "huber" else 1e30
    thetas, values = _minimize_jit(theta0, data, jnp.float64(delta),
                                   jnp.int32(max_iters))
    thetas, values = np.asarray(thetas), np.asarray(values)
  ok = np.isfinite(values) & np.all(np.isfinite(thetas), axis=1)
  if not ok.any():
    raise ValueError("loss: no starting point converged to a finite fit; "
                     "check the table (are n and d in raw units?)")
  best = thetas[np.flatnonzero(ok)[np.argmin(values[ok])]]
  coef = [float(x) for x in np.exp(best)]
  law = SparseScalingLaw(*coef)
  with jax.enable_x64(True):
    pred = np.asarray(law.predict(s, n_, d_))
  err = pred - l_
  rmse = float(np.sqrt(np.mean(err[~held] ** 2)))
  hold = float(np.sqrt(np.mean(err[held] ** 2))) if held.any() else (
      float("nan"))
  return law._replace(rmse=rmse, holdout_rmse=hold)


def _tokens(n, compute, s):
  """D at fixed N and C: C = 6 N / (1 - S) D (dense-cost training)."""
  return compute * (1.0 - s) / (6.0 * n)


def optimal_sparsity(law: SparseScalingLaw, n, compute, *,
                     max_sparsity: float = 0.99,
                     num: int = 1024) -> jax.Array:
  """The compute-optimal sparsity S* for N non-zero parameters and compute C.

  Held fixed: the non-zero parameters `n` (N) and the training compute
  `compute` (C, FLOPs). As in Frantar et al. (2023), training costs what
  the dense model of N / (1 - S) parameters costs, C = 6 N D / (1 - S), so
  the tokens follow, D = C (1 - S) / (6 N): a sparser model is larger but
  sees fewer tokens. Returns the S in [0, `max_sparsity`] minimising
  L(S, N, D(S)): a `num`-point grid, refined by golden-section search in
  the cell around the grid's best point. S* = 0 means dense is optimal.

  Args:
    law: a `SparseScalingLaw` (from `fit`, or built from coefficients).
    n: non-zero parameters N; broadcasts with `compute`.
    compute: training FLOPs C.
    max_sparsity: the largest sparsity considered (< 1).
    num: grid points (>= 3).

  Returns:
    S*, shaped like the broadcast `n` and `compute`. Jit-friendly.

  References:
    Frantar et al., "Scaling Laws for Sparsely-Connected Foundation
    Models", ICLR 2024 (arXiv:2309.08520), section 3 (optimal sparsity).
  """
  if not 0 < max_sparsity < 1:
    raise ValueError(f"max_sparsity={max_sparsity!r}: must be in (0, 1)")
  if num < 3:
    raise ValueError(f"num={num!r}: must be >= 3")
  law = jax.tree.map(lambda x: jnp.asarray(x, float), law)
  return _optimal(law, jnp.asarray(n, float), jnp.asarray(compute, float),
                  float(max_sparsity), int(num))


@functools.partial(jax.jit, static_argnums=(3, 4))
def _optimal(law, n, compute, max_sparsity, num):
  grid = jnp.linspace(0.0, max_sparsity, num)
  step = max_sparsity / (num - 1)

  def one(n, compute):
    f = lambda s: law.predict(s, n, _tokens(n, compute, s))
    i = jnp.argmin(f(grid))
    lo = jnp.maximum(grid[i] - step, 0.0)
    hi = jnp.minimum(grid[i] + step, max_sparsity)
    g = (np.sqrt(5.0) - 1.0) / 2.0

    def body(_, ab):
      a, b = ab
      x1, x2 = b - g * (b - a), a + g * (b - a)
      left = f(x1) <= f(x2)
      return jnp.where(left, a, x1), jnp.where(left, x2, b)

    a, b = jax.lax.fori_loop(0, 60, body, (lo, hi))
    mid = 0.5 * (a + b)
    return jnp.where(f(mid) <= f(grid[i]), mid, grid[i])

  return jnp.vectorize(one)(n, compute)
