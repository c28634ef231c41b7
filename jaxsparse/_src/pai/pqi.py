"""PQ Index (PQI) and Sparsity-informed Adaptive Pruning (SAP).

For 0 < p < q and a vector w of d (unmasked) entries,

    I(w) = 1 - d^(1/q - 1/p) ||w||_p / ||w||_q,

which is 0 when all magnitudes are equal and reaches its maximum
1 - d^(1/q - 1/p) for a one-hot vector: higher PQI = sparser = more
compressible. SAP uses it to choose how many weights to prune per round.

References:
  Diao et al., "Pruning Deep Neural Networks from a Sparsity Perspective",
  ICLR 2023.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxsparse._src.core import masks as masks_lib
from jaxsparse._src.core import threshold
from jaxsparse._src.lottery import lottery

_is_none = masks_lib._is_none  # pylint: disable=protected-access

_SCOPES = ("global", "layer", "neuron")


def _check_pq(p: float, q: float) -> None:
  if not 0.0 < p < q:
    raise ValueError(f"PQ Index needs 0 < p < q, got p={p}, q={q}.")


def _power_sums(a, m, axis, top, p, q):
  """(sum (|a|/top)^p, sum (|a|/top)^q, d) over unmasked entries."""
  a = jnp.where(m, jnp.abs(a).astype(jnp.float32) / top, 0.0)
  return (jnp.sum(a ** p, axis=axis), jnp.sum(a ** q, axis=axis),
          jnp.sum(m, axis=axis, dtype=jnp.float32))


def _index(sp, sq, d, p, q, nonzero):
  """1 - d^(1/q-1/p) sp^(1/p) / sq^(1/q); 0 where d = 0 or w = 0."""
  ok = (d > 0) & nonzero
  safe_d = jnp.where(ok, d, 1.0)
  ratio = (jnp.where(ok, sp, 1.0) ** (1.0 / p)
           / jnp.where(ok, sq, 1.0) ** (1.0 / q))
  val = 1.0 - safe_d ** (1.0 / q - 1.0 / p) * ratio
  # I >= 0 in exact arithmetic (power-mean inequality): clip rounding.
  return jnp.where(ok, jnp.maximum(val, 0.0), 0.0)


def pq_index(
    w: jax.Array,
    p: float = 0.5,
    q: float = 1.0,
    mask: jax.Array | None = None,
    *,
    axis: int | tuple[int, ...] | None = None,
) -> jax.Array:
  """PQ Index of `w` over its unmasked entries.

  Args:
    w: weights.
    p, q: the norms, 0 < p < q (the paper's main settings are (0.5, 1) and
      (1, 2)).
    mask: optional keep-mask like `w`; pruned entries are left out and d
      counts the kept ones.
    axis: axes reduced over (default all: one value for the tensor).

  Returns:
    I in [0, 1 - d^(1/q - 1/p)]; 0 where d = 0 (as the reference code)
    and for an all-zero vector (all magnitudes equal).
  """
  _check_pq(p, q)
  if isinstance(axis, list):
    axis = tuple(axis)
  return _pq_index_jit(w, mask, float(p), float(q), axis)


@functools.partial(jax.jit, static_argnums=(2, 3, 4))
def _pq_index_jit(w, mask, p, q, axis):
  w = jnp.asarray(w)
  m = jnp.ones(w.shape, bool) if mask is None else jnp.asarray(mask, bool)
  top = jnp.max(jnp.where(m, jnp.abs(w), 0.0), axis=axis, keepdims=True)
  nonzero = jnp.squeeze(top > 0, axis=axis) if axis is not None else (
      top.reshape(()) > 0)
  top = jnp.where(top > 0, top, 1.0).astype(jnp.float32)
  sp, sq, d = _power_sums(w, m, axis, top, p, q)
  return _index(sp, sq, d, p, q, nonzero)


def pq_index_neurons(
    w: jax.Array,
    p: float = 0.5,
    q: float = 1.0,
    mask: jax.Array | None = None,
    *,
    axis: int = -1,
) -> jax.Array:
  """PQ Index of every output unit: one value per index along `axis`.

  For Dense (in, out) and Conv HWIO kernels the output unit is axis -1
  (a row of the PyTorch (out, ...) weight in the reference code).
  """
  w = jnp.asarray(w)
  a = axis % w.ndim
  others = tuple(i for i in range(w.ndim) if i != a)
  return pq_index(w, p, q, mask, axis=others)


def _masks_or_ones(params, masks, filter_fn):
  if masks is None:
    return masks_lib.ones_masks(params, filter_fn)
  return masks_lib.as_bool_masks(masks)


def _pairs(params, masks):
  """(index, param, mask) for the leaves with a mask."""
  flat_m, treedef = jax.tree.flatten(masks, is_leaf=_is_none)
  flat_p = treedef.flatten_up_to(params)
  return [(i, w, m) for i, (w, m) in enumerate(zip(flat_p, flat_m, strict=True))
          if m is not None], treedef, len(flat_m)


def _global_index(pairs, p, q):
  tops = [jnp.max(jnp.where(m, jnp.abs(w), 0.0)) for _, w, m in pairs]
  top = jnp.max(jnp.stack(tops)).astype(jnp.float32)
  nonzero = top > 0
  top = jnp.where(nonzero, top, 1.0)
  sums = [_power_sums(w, m, None, top, p, q) for _, w, m in pairs]
  sp, sq, d = (sum(x[j] for x in sums) for j in range(3))
  return _index(sp, sq, d, p, q, nonzero)


def pq_index_tree(
    params: Any,
    masks: Any = None,
    p: float = 0.5,
    q: float = 1.0,
    *,
    scope: str = "layer",
    filter_fn: masks_lib.FilterFn = masks_lib.is_kernel,
) -> Any:
  """PQ Index of a model, per layer, per neuron or globally.

  Args:
    params: the parameters.
    masks: optional masks (None leaves are not measured); default all
      leaves chosen by `filter_fn` (kernels), fully kept.
    p, q: the norms, 0 < p < q.
    scope: "layer" (a scalar per prunable leaf), "neuron" (a vector per
      prunable leaf, one value per output unit, axis -1) or "global" (one
      scalar over all prunable weights together).
    filter_fn: chooses leaves when `masks` is None.

  Returns:
    For "global" a scalar; otherwise a tree like `params` with None on the
    unmeasured leaves. Usable as a training metric (jittable).
  """
  _check_pq(p, q)
  if scope not in _SCOPES:
    raise ValueError(f"`scope` must be one of {_SCOPES}, got {scope!r}.")
  masks = _masks_or_ones(params, masks, filter_fn)
  pairs, treedef, n = _pairs(params, masks)
  if scope == "global":
    if not pairs:
      return jnp.zeros((), jnp.float32)
    return _global_index(pairs, p, q)
  fn = pq_index if scope == "layer" else pq_index_neurons
  out: list = [None] * n
  for i, w, m in pairs:
    out[i] = fn(w, p, q, m)
  return jax.tree.unflatten(treedef, out)


# --------------------------------------------------------------------------
# SAP.


def sap_counts(
    d: Any,
    pqi: Any,
    p: float = 0.5,
    q: float = 1.0,
    eta_r: float = 0.0,
    gamma: float = 1.0,
    beta: float = 0.9,
    *,
    round_up_r: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
  """SAP's lower bound r on the retained count and its removal count c.

  r = d (1 + eta_r)^(-q/(q-p)) (1 - I)^(qp/(q-p)) and
  c = floor(d * min(gamma (1 - r/d), beta)), clipped at 0, in float64.

  Args:
    d: number of unmasked weights (scalar or array, e.g. per neuron).
    pqi: their PQ Index I.
    p, q, eta_r, gamma, beta: SAP's hyper-parameters; the paper's main
      settings are (p, q, eta_r, gamma) = (0.5, 1, 0, 1) and (1, 2, 0, 1)
      with beta = 0.9.
    round_up_r: use ceil(r) as the reference code does (the paper's
      Algorithm 1 uses r itself).

  Returns:
    (r, c) as float64 and int64 NumPy arrays; both 0 where d = 0.
  """
  _check_pq(p, q)
  d = np.asarray(d, np.float64)
  pqi = np.asarray(pqi, np.float64)
  r = (d * (1.0 + eta_r) ** (-q / (q - p))
       * np.clip(1.0 - pqi, 0.0, None) ** (q * p / (q - p)))
  if round_up_r:
    r = np.ceil(r)
  frac = np.where(d > 0, 1.0 - r / np.where(d > 0, d, 1.0), 0.0)
  ratio = np.clip(gamma * frac, 0.0, beta)
  c = np.floor(d * ratio).astype(np.int64)
  return r, c


@jax.jit
def _per_leaf_select(keys, ks):
  return threshold.smallest_k_per_leaf(keys, ks)


@jax.jit
def _global_select(keys, k):
  return threshold.global_smallest_k(keys, k)


@jax.jit
def _per_row_select(keys, ks):
  return jax.vmap(
      lambda row, k: threshold.smallest_k_per_leaf([row], k[None])[0])(
          keys, ks)


def _keys(w, m):
  return threshold.sortable_key(jnp.where(m, jnp.abs(w), -jnp.inf))


def _rows(x, axis=-1):
  """Moves the output axis first and flattens the rest: (units, fan_in)."""
  x = jnp.moveaxis(x, axis, 0)
  return x.reshape(x.shape[0], -1)


def _unrows(x, shape, axis=-1):
  a = axis % len(shape)
  moved = (shape[a],) + tuple(s for i, s in enumerate(shape) if i != a)
  return jnp.moveaxis(x.reshape(moved), 0, a)


def sap_stats(
    params: Any,
    masks: Any = None,
    p: float = 0.5,
    q: float = 1.0,
    eta_r: float = 0.0,
    gamma: float = 1.0,
    beta: float = 0.9,
    *,
    scope: str = "global",
    round_up_r: bool = False,
    filter_fn: masks_lib.FilterFn = masks_lib.is_kernel,
) -> dict[str, Any]:
  """PQI, d, r and c of one SAP step, per pruning unit of `scope`.

  Returns:
    A dict with NumPy values "pqi", "d", "r", "c": scalars for "global",
    lists over the masked leaves for "layer", lists of per-neuron arrays
    for "neuron"; plus "removed", the total of c.
  """
  if scope not in _SCOPES:
    raise ValueError(f"`scope` must be one of {_SCOPES}, got {scope!r}.")
  masks = _masks_or_ones(params, masks, filter_fn)
  pairs, _, _ = _pairs(params, masks)
  if scope == "global":
    pqi = np.asarray(_global_index(pairs, p, q)) if pairs else np.zeros(())
    d = np.asarray(sum(int(jnp.sum(m)) for _, _, m in pairs))
  elif scope == "layer":
    pqi = np.asarray([float(pq_index(w, p, q, m)) for _, w, m in pairs])
    d = np.asarray([int(jnp.sum(m)) for _, w, m in pairs])
  else:
    pqi = [np.asarray(pq_index_neurons(w, p, q, m)) for _, w, m in pairs]
    d = [np.asarray(jnp.sum(_rows(m), axis=1)) for _, w, m in pairs]
  if scope == "neuron":
    rc = [sap_counts(di, ii, p, q, eta_r, gamma, beta, round_up_r=round_up_r)
          for di, ii in zip(d, pqi, strict=True)]
    r, c = [x[0] for x in rc], [x[1] for x in rc]
    removed = int(sum(int(ci.sum()) for ci in c))
  else:
    r, c = sap_counts(d, pqi, p, q, eta_r, gamma, beta,
                      round_up_r=round_up_r)
    removed = int(np.sum(c))
  return {"pqi": pqi, "d": d, "r": r, "c": c, "removed": removed}


def sap_prune(
    params: Any,
    masks: Any = None,
    p: float = 0.5,
    q: float = 1.0,
    eta_r: float = 0.0,
    gamma: float = 1.0,
    beta: float = 0.9,
    *,
    scope: str = "global",
    round_up_r: bool = False,
    filter_fn: masks_lib.FilterFn = masks_lib.is_kernel,
) -> Any:
  """One SAP pruning step: removes c retained weights of smallest |w|.

  c comes from the PQ Index of the retained weights (`sap_counts`). With
  scope "global" (default) PQI, d and c are computed over all prunable
  weights together and the c smallest are removed by one global ranking;
  "layer" and "neuron" compute them per leaf or per output unit and prune
  within it (the paper studies all three). Exactly c weights are removed
  (ties broken by position); the reference code removes |w| below the
  c-th smallest value, keeping ties, so it can remove fewer.

  Args:
    params: trained parameters.
    masks: current masks (default: all prunable leaves kept).
    p, q, eta_r, gamma, beta: see `sap_counts`.
    scope: "global", "layer" or "neuron".
    round_up_r: ceil(r), as in the reference code.
    filter_fn: chooses prunable leaves when `masks` is None.

  Returns:
    New masks (a subset of `masks`). PQI is computed on the device, r and c
    on the host in float64: call this between training rounds, outside
    `jax.jit`.

  References:
    Diao et al., "Pruning Deep Neural Networks from a Sparsity
    Perspective", ICLR 2023 (Algorithm 1).
  """
  masks = _masks_or_ones(params, masks, filter_fn)
  st = sap_stats(params, masks, p, q, eta_r, gamma, beta, scope=scope,
                 round_up_r=round_up_r)
  pairs, treedef, n = _pairs(params, masks)
  out = jax.tree.leaves(masks, is_leaf=_is_none)
  if not pairs:
    return masks
  if scope == "global":
    pruned = sum(int(m.size - jnp.sum(m)) for _, _, m in pairs)
    keep = _global_select([_keys(w, m) for _, w, m in pairs],
                          jnp.int32(pruned + int(st["c"])))
  elif scope == "layer":
    ks = [int(m.size - jnp.sum(m)) + int(c) for (_, _, m), c in
          zip(pairs, st["c"], strict=True)]
    keep = _per_leaf_select([_keys(w, m) for _, w, m in pairs],
                            jnp.asarray(ks, jnp.int32))
  else:
    keep = []
    for (_, w, m), c in zip(pairs, st["c"], strict=True):
      rows_m = _rows(m)
      ks = rows_m.shape[1] - jnp.sum(rows_m, axis=1) + jnp.asarray(c)
      k_rows = _per_row_select(_rows(_keys(w, m)), ks.astype(jnp.int32))
      keep.append(_unrows(k_rows, m.shape))
  for (i, _, m), k in zip(pairs, keep, strict=True):
    out[i] = k.reshape(m.shape) & m
  return jax.tree.unflatten(treedef, out)


def run_sap(
    train_fn: Callable[[Any, Any], tuple[Any, Any]],
    init_params: Any,
    rounds: int,
    *,
    p: float = 0.5,
    q: float = 1.0,
    eta_r: float = 0.0,
    gamma: float = 1.0,
    beta: float = 0.9,
    scope: str = "global",
    round_up_r: bool = False,
    masks: Any = None,
    filter_fn: masks_lib.FilterFn = masks_lib.is_kernel,
    callback: Callable[[dict[str, Any]], None] | None = None,
) -> tuple[Any, Any, list[dict[str, Any]]]:
  """SAP driver: rounds of rewind -> train -> PQI -> prune.

  Round t rewinds to `init_params * m_t`, calls
  `train_fn(params, masks) -> (trained_params, metrics)` (which must keep
  pruned weights at zero, e.g. with `jaxsparse.prune(0.0,
  initial_masks=masks, optimizer=...)`, and should return the best
  checkpoint if it selects one, as the reference does), measures the PQI of
  the trained weights and prunes with `sap_prune`. No pruning follows the
  last round.

  Args:
    train_fn: `(params, masks) -> (params, metrics)`.
    init_params: the weights to rewind to (w_init).
    rounds: number of train rounds (the paper's T + 1; T = 30 for MLP and
      CNN, 15 for ResNets).
    p, q, eta_r, gamma, beta, scope, round_up_r: see `sap_prune`.
    masks: starting masks (default: all prunable leaves kept).
    filter_fn: chooses prunable leaves when `masks` is None.
    callback: called with each round's record (for logging).

  Returns:
    (trained params of the last round, its masks, history), the history a
    list of records {"round", "density", "pqi" (global PQI of the trained
    weights), "removed" (weights pruned after this round), "metrics"}.
  """
  if int(rounds) != rounds or rounds < 1:
    raise ValueError(f"`rounds` must be a positive integer, got {rounds}.")
  masks = _masks_or_ones(init_params, masks, filter_fn)
  history: list[dict[str, Any]] = []
  params = init_params
  for t in range(int(rounds)):
    params, metrics = train_fn(lottery.rewind(init_params, masks), masks)
    st = sap_stats(params, masks, p, q, eta_r, gamma, beta, scope=scope,
                   round_up_r=round_up_r)
    record = {
        "round": t,
        "density": float(1.0 - masks_lib.sparsity(masks)),
        "pqi": float(pq_index_tree(params, masks, p, q, scope="global")),
        "removed": st["removed"] if t < rounds - 1 else 0,
        "metrics": metrics,
    }
    history.append(record)
    if callback is not None:
      callback(record)
    if t < rounds - 1:
      masks = sap_prune(params, masks, p, q, eta_r, gamma, beta, scope=scope,
                        round_up_r=round_up_r)
  return params, masks, history

