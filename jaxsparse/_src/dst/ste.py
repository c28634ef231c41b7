"""Straight-through sparse training: masks recomputed from the weights.

`ste_mask(params, ...)` is applied to the params inside the loss function,
before the forward pass. Its forward value is `m(W) * W`, with the mask
`m(W)` recomputed from the current dense weights at every call; its
gradient is the straight-through estimator, so every weight (pruned or not)
is trained:

    grad_W = g(W~) + lambda_W * (1 - m) * W

with `lambda_W = 0` for plain STE and `lambda_W = 2e-4` for SR-STE
(`SRSTE_LAMBDA`). The model needs no change: only the params it reads are
masked. Example::

    def loss_fn(params, batch):
      sparse = jaxsparse.dst.ste_mask(
          params, structure=jaxsparse.structures.n_m(2, 4),
          srste_lambda=jaxsparse.dst.SRSTE_LAMBDA)
      return cross_entropy(model.apply(sparse, batch["x"]), batch["y"])

The dense params held by the optimizer stay dense; the deployed network is
`ste_mask(params, ...)` (or `apply_masks(params, ste_masks(params, ...))`).

References:
  Zhou et al., "Learning N:M Fine-grained Structured Sparse Neural Networks
  From Scratch", ICLR 2021 (SR-STE).
  Bengio et al., "Estimating or Propagating Gradients Through Stochastic
  Neurons for Conditional Computation", 2013 (straight-through estimator).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from jaxsparse._src.core import allocation as alloc_lib
from jaxsparse._src.core import masks as masks_lib
from jaxsparse._src.core import prune as prune_lib
from jaxsparse._src.core import scores as scores_lib
from jaxsparse._src.core import structures as struct_lib

_is_none = masks_lib._is_none  # pylint: disable=protected-access

# lambda_W of SR-STE (Zhou et al., 2021; NM-sparsity reference code).
SRSTE_LAMBDA = 2e-4


@jax.custom_vjp
def _masked(w: jax.Array, m: jax.Array, lam: jax.Array) -> jax.Array:
  return jnp.where(m, w, jnp.zeros((), w.dtype))


def _masked_fwd(w, m, lam):
  return _masked(w, m, lam), (w, m, lam)


def _masked_bwd(res, g):
  w, m, lam = res
  decay = jnp.where(m, jnp.zeros((), w.dtype), w)
  dw = g + jnp.asarray(lam, g.dtype) * decay
  return dw, None, jnp.zeros_like(lam)


_masked.defvjp(_masked_fwd, _masked_bwd)


def straight_through(
    params: Any, masks: Any, srste_lambda: float | jax.Array = 0.0) -> Any:
  """`m * W` forward; straight-through (optionally SR-STE) gradient.

  Leaves whose mask is `None` pass through unchanged (flax.nnx `State`s
  work too). With `srste_lambda = 0` the gradient w.r.t. `W` is the
  gradient w.r.t. the masked weights at every entry, i.e. the dense
  gradient that RigL grows with; with `srste_lambda > 0` the pruned entries
  also get `srste_lambda * W` (SR-STE's sparse-refined term).

  Args:
    params: the dense parameters.
    masks: pytree like params; bool (or 0/1) arrays, `None` for dense leaves.
    srste_lambda: lambda_W (a Python float or a traced scalar).

  Returns:
    The masked params.
  """
  lam = jnp.asarray(srste_lambda, jnp.float32)
  masks = masks_lib.unwrap(masks)
  flat_m, treedef = jax.tree.flatten(masks, is_leaf=_is_none)
  flat_p = treedef.flatten_up_to(
      jax.tree.map(lambda x: x, params, is_leaf=masks_lib.is_variable))

  def one(m, p):
    if m is None:
      return p
    v = masks_lib.unwrap(p)
    out = _masked(v, jax.lax.stop_gradient(jnp.asarray(m) != 0), lam)
    return p.replace(out) if masks_lib.is_variable(p) else out

  return jax.tree.unflatten(
      treedef, [one(m, p) for m, p in zip(flat_m, flat_p, strict=True)])


def ste_masks(
    params: Any,
    *,
    sparsity: float | jax.Array = 0.0,
    structure: struct_lib.Structure | None = None,
    score: scores_lib.ScoreFn = scores_lib.magnitude,
    allocation: alloc_lib.Allocation | None = None,
    filter_fn: masks_lib.FilterFn = masks_lib.is_kernel,
    key: jax.Array | None = None,
) -> Any:
  """Masks of the current weights, as used by `ste_mask` (no gradient).

  N:M structures fix the mask themselves (`sparsity` is ignored); other
  structures prune exactly `round(s_l * n_l)` groups per layer with the
  given allocation (default `uniform()`). Useful for logging and for
  exporting the final sparse network.
  """
  structure = struct_lib.unstructured() if structure is None else structure
  allocation = alloc_lib.uniform() if allocation is None else allocation
  key = jax.random.PRNGKey(0) if key is None else key
  params = jax.lax.stop_gradient(masks_lib.unwrap(params))
  ones = masks_lib.ones_masks(params, filter_fn)
  for (path, _), m in zip(masks_lib.leaves_with_path(params),
                          jax.tree.leaves(ones, is_leaf=_is_none),
                          strict=True):
    if m is not None:
      structure.validate(masks_lib.path_str(path), tuple(m.shape))
  return prune_lib.compute_masks(
      params, None, ones, sparsity, key, score=score, allocation=allocation,
      structure=structure)


def ste_mask(
    params: Any,
    *,
    sparsity: float | jax.Array = 0.0,
    structure: struct_lib.Structure | None = None,
    score: scores_lib.ScoreFn = scores_lib.magnitude,
    allocation: alloc_lib.Allocation | None = None,
    filter_fn: masks_lib.FilterFn = masks_lib.is_kernel,
    srste_lambda: float | jax.Array = 0.0,
    key: jax.Array | None = None,
) -> Any:
  """Params masked by their own current scores, with an STE gradient.

  Call it on the params inside `loss_fn`. The mask is recomputed from the
  current weights at every call (magnitude STE, N:M STE, random STE); the
  forward pass sees `m * W`; the gradient reaches all weights (see the
  module docstring). Leaves not chosen by `filter_fn` pass through.

  Args:
    params: the dense parameters.
    sparsity: target sparsity for unstructured / block / channel structures
      (a float or a traced scalar, e.g. `schedule.sparsity(step)` for a
      gradual STE); ignored by `n_m`.
    structure: `n_m(n, m)` for N:M (groups along the input axis), default
      `unstructured()`.
    score: `(params, grads, key) -> scores`; `magnitude` (default) or
      `random` (random STE: pass a fresh `key` each step, e.g.
      `jax.random.fold_in(key, step)`). Scores may not use gradients.
    allocation: spread of `sparsity` over layers (default `uniform()`).
    filter_fn: `(path, leaf) -> bool` choosing masked leaves.
    srste_lambda: lambda_W; 0.0 is plain STE, `SRSTE_LAMBDA` (2e-4) is
      SR-STE's default.
    key: PRNG key for random scores (default `PRNGKey(0)`).

  Returns:
    Params with exactly the pruned entries zero.

  References:
    Zhou et al., "Learning N:M Fine-grained Structured Sparse Neural
    Networks From Scratch", ICLR 2021.
  """
  masks = ste_masks(
      params, sparsity=sparsity, structure=structure, score=score,
      allocation=allocation, filter_fn=filter_fn, key=key)
  return straight_through(params, masks, srste_lambda)
