"""Pruning at initialization: SNIP, GraSP and SynFlow scores.

Every score here is a pure function of a loss or apply function, the
parameters and a batch (or an input shape) and returns a score pytree shaped
like the parameters: an array for each prunable leaf (chosen by `filter_fn`,
Dense/Conv kernels by default) and `None` elsewhere. Higher is more
important, as for every jaxsparse score, so the lowest scores are pruned.
`masks_from_scores` turns a score tree into masks with any allocation
(global by default, as in the papers) and structure; `synflow_masks` runs
SynFlow's iterative schedule as one compiled loop.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax

from jaxsparse._src.core import allocation as alloc_lib
from jaxsparse._src.core import masks as masks_lib
from jaxsparse._src.core import prune as prune_lib
from jaxsparse._src.core import structures as struct_lib

_is_none = masks_lib._is_none  # pylint: disable=protected-access

LossFn = Callable[[Any, Any], jax.Array]  # (params, batch) -> scalar
ApplyFn = Callable[[Any, jax.Array], Any]  # (params, inputs) -> outputs


def _on_selected(params, fn, *trees, filter_fn=masks_lib.is_kernel):
  """fn(param, *others) on leaves chosen by `filter_fn`, None elsewhere."""
  sel = masks_lib.select(params, filter_fn)
  return jax.tree.map(
      lambda s, p, *xs: None if s is None else fn(p, *xs),
      sel, params, *trees, is_leaf=_is_none)


def masks_from_scores(
    scores: Any,
    params: Any,
    sparsity: float | jax.Array,
    *,
    allocation: alloc_lib.Allocation | None = None,
    structure: struct_lib.Structure | None = None,
    filter_fn: masks_lib.FilterFn = masks_lib.is_kernel,
    masks: Any = None,
) -> Any:
  """Masks at `sparsity` that prune the lowest `scores`.

  Args:
    scores: score tree like `params` (arrays on prunable leaves; other
      leaves may be None or anything).
    params: the parameters (used for the tree structure and paths).
    sparsity: target fraction of pruned weights (or groups). Each pruned
      count is exact, `round(s * n)` with halves rounded up (`count_for`).
    allocation: how the target is spread over layers; default `global_()`,
      one ranking over all prunable weights as in SNIP, GraSP and SynFlow.
      `uniform()`, `erk()`, ... give layer-wise variants.
    structure: grouping of weights (default `unstructured()`).
    filter_fn: chooses prunable leaves when `masks` is None.
    masks: optional current masks; already-pruned entries stay pruned.

  Returns:
    Masks like `params`: bool arrays on prunable leaves, None elsewhere.
  """
  if masks is None:
    masks = masks_lib.ones_masks(params, filter_fn)
  return _masks_jit(scores, params, masks_lib.as_bool_masks(masks),
                    jnp.asarray(sparsity, jnp.float32), allocation,
                    structure)


@functools.partial(jax.jit, static_argnames=("allocation", "structure"))
def _masks_jit(scores, params, masks, sparsity, allocation, structure):
  allocation = alloc_lib.global_() if allocation is None else allocation
  return prune_lib.compute_masks(
      params, None, masks, sparsity, jax.random.PRNGKey(0),
      score=lambda p, g, k: scores, allocation=allocation,
      structure=structure)


# --------------------------------------------------------------------------
# SNIP.


def snip(
    loss_fn: LossFn,
    params: Any,
    batch: Any,
    *,
    filter_fn: masks_lib.FilterFn = masks_lib.is_kernel,
) -> Any:
  """SNIP connection sensitivity |theta * dL/dtheta| on one batch.

  This equals |dL/dc| at c = 1 for the loss of `theta * c`. The reference
  code divides by the sum of all scores, which does not change the ranking
  and is left out. Lee et al. keep the global top scores: use
  `masks_from_scores(scores, params, s)` (global by default). Run the model
  in inference mode (no dropout, batch norm on batch statistics is fine).
  The reference code also masks biases (zero at init, so score 0); pass a
  `filter_fn` selecting them to reproduce that.

  Args:
    loss_fn: `(params, batch) -> scalar loss`.
    params: parameters at initialization.
    batch: one minibatch, passed to `loss_fn`.
    filter_fn: chooses the scored (prunable) leaves.

  Returns:
    Score tree: arrays on prunable leaves, None elsewhere.

  References:
    Lee et al., "SNIP: Single-shot Network Pruning based on Connection
    Sensitivity", ICLR 2019.
  """
  return _snip_jit(loss_fn, params, batch, filter_fn)


@functools.partial(jax.jit, static_argnums=(0, 3))
def _snip_jit(loss_fn, params, batch, filter_fn):
  grads = jax.grad(loss_fn)(params, batch)
  return _on_selected(params, lambda p, g: jnp.abs(p * g), grads,
                      filter_fn=filter_fn)


# --------------------------------------------------------------------------
# GraSP.


def softmax_cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """Mean cross-entropy; integer labels or one-hot / soft labels."""
  if jnp.issubdtype(labels.dtype, jnp.integer):
    return optax.softmax_cross_entropy_with_integer_labels(
        logits, labels).mean()
  return optax.softmax_cross_entropy(logits, labels).mean()


def class_balanced_batch(
    inputs: np.ndarray,
    labels: np.ndarray,
    samples_per_class: int,
    *,
    num_classes: int | None = None,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
  """`samples_per_class` random examples of every class (GraSP's batch).

  GraSP's configs use 10 per class on CIFAR-10; SynFlow's re-implementations
  use 10 x classes samples for SNIP and GraSP.
  """
  labels = np.asarray(labels)
  num_classes = int(labels.max()) + 1 if num_classes is None else num_classes
  rng = np.random.default_rng(seed)
  idx = []
  for c in range(num_classes):
    pool = np.flatnonzero(labels == c)
    if len(pool) < samples_per_class:
      raise ValueError(
          f"class {c} has {len(pool)} examples, fewer than "
          f"samples_per_class={samples_per_class}.")
    idx.append(rng.choice(pool, samples_per_class, replace=False))
  idx = np.concatenate(idx)
  return np.asarray(inputs)[idx], labels[idx]


def grasp(
    apply_fn: ApplyFn,
    params: Any,
    batch: tuple[Any, jax.Array],
    *,
    temperature: float = 200.0,
    loss: Callable[[jax.Array, jax.Array], jax.Array] = softmax_cross_entropy,
    num_splits: int = 1,
    filter_fn: masks_lib.FilterFn = masks_lib.is_kernel,
) -> Any:
  """GraSP importance theta * Hg: prune the lowest, i.e. the largest -theta*Hg.

  GraSP's score is S = -theta * Hg and the paper removes the weights with
  the LARGEST S (their removal reduces the gradient flow g^T g least). This
  function returns the negation, theta * Hg = -S, so that it plugs into the
  lowest-pruned machinery: `masks_from_scores(grasp(...), params, s)`
  removes exactly the round(s * N) largest S (global by default). The
  reference code removes one weight fewer than int(s * N) (an off-by-one in
  its `topk` threshold); the paper and this function remove the full count.

  g = dL/dtheta is treated as a constant and Hg = d/dtheta (g . dL/dtheta)
  is a Hessian-vector product computed forward-over-reverse (`jax.jvp` of
  `jax.grad`). Both use the loss of the logits divided by `temperature`.
  As in the reference code, g and Hg cover the prunable weights only (the
  tangent is zero on biases and norm parameters).

  Args:
    apply_fn: `(params, inputs) -> logits`, in the mode used for scoring
      (the reference scores in train mode on a class-balanced batch; see
      `class_balanced_batch`).
    params: parameters at initialization.
    batch: `(inputs, labels)`.
    temperature: logits are divided by T (200 in the paper).
    loss: `(logits, labels) -> scalar`; mean softmax cross-entropy.
    num_splits: the batch is split into this many equal parts and
      g = sum of the parts' gradients, Hg = sum of their Hessian-vector
      products (the reference uses 2 halves). For a per-example mean loss
      this only rescales the scores by a positive constant; it matters with
      batch-dependent layers (batch norm on batch statistics).
    filter_fn: chooses the scored (prunable) leaves.

  Returns:
    Importance tree theta * Hg: arrays on prunable leaves, None elsewhere.

  References:
    Wang et al., "Picking Winning Tickets Before Training by Preserving
    Gradient Flow", ICLR 2020.
  """
  inputs, labels = batch
  n = jax.tree.leaves(inputs)[0].shape[0]
  if num_splits < 1 or n % num_splits:
    raise ValueError(
        f"batch size {n} is not divisible by num_splits={num_splits}.")
  return _grasp_jit(apply_fn, params, inputs, labels,
                    jnp.asarray(temperature), loss, num_splits, filter_fn)


@functools.partial(jax.jit, static_argnums=(0, 5, 6, 7))
def _grasp_jit(apply_fn, params, inputs, labels, temperature, loss,
               num_splits, filter_fn):
  n = jax.tree.leaves(inputs)[0].shape[0]
  size = n // num_splits
  parts = [
      (jax.tree.map(lambda a, i=i: a[i * size:(i + 1) * size], inputs),
       labels[i * size:(i + 1) * size]) for i in range(num_splits)]

  def loss_of(p, xb, yb):
    return loss(apply_fn(p, xb) / temperature, yb)

  grad_fn = jax.grad(loss_of)
  sel = masks_lib.select(params, filter_fn)

  def only_selected(tree):
    return jax.tree.map(
        lambda s, x: jnp.zeros_like(x) if s is None else x,
        sel, tree, is_leaf=_is_none)

  g = None
  for xb, yb in parts:
    gi = grad_fn(params, xb, yb)
    g = gi if g is None else jax.tree.map(jnp.add, g, gi)
  g = jax.lax.stop_gradient(only_selected(g))
  hg = None
  for xb, yb in parts:
    _, hgi = jax.jvp(lambda p, xb=xb, yb=yb: grad_fn(p, xb, yb),
                     (params,), (g,))
    hg = hgi if hg is None else jax.tree.map(jnp.add, hg, hgi)
  return _on_selected(params, lambda p, h: p * h, hg, filter_fn=filter_fn)


# --------------------------------------------------------------------------
# SynFlow.


def nnx_apply_fn(model: Any) -> tuple[ApplyFn, Any]:
  """A pure `(state, x) -> model(x)` and the state of a flax NNX model.

  The model is rebuilt with `nnx.merge` and switched to inference mode
  (`use_running_average=True`, `deterministic=True` where present), as
  SynFlow scores in eval mode. Pass the state as `params` to the SynFlow
  functions: it holds every variable, batch-norm statistics included.
  """
  from flax import nnx  # pylint: disable=g-import-not-at-top
  graphdef, state = nnx.split(model)

  def apply_fn(state, x):
    m = nnx.merge(graphdef, state)
    m = nnx.view(m, use_running_average=True, deterministic=True,
                 raise_if_not_found=False)
    return m(x)

  return apply_fn, state


def _is_float(x):
  return jnp.issubdtype(jnp.result_type(x), jnp.floating)


def _abs_floating(params):
  return jax.tree.map(lambda x: jnp.abs(x) if _is_float(x) else x, params)


def _cast(params, dtype):
  return jax.tree.map(lambda x: x.astype(dtype) if _is_float(x) else x,
                      params)


def _mask_or_keep(masks, params):
  if masks is None:
    return params
  return masks_lib.apply_masks(params, masks)


def _total(out):
  return sum(jnp.sum(x) for x in jax.tree.leaves(out))


def _flow_and_scores(apply_fn, abs_params, ones, masks, sel):
  """R = sum f(1; m * |theta|) and |theta * dR/dtheta| on selected leaves."""
  leaves, treedef = jax.tree.flatten(abs_params)
  idx = [i for i, x in enumerate(leaves) if _is_float(x)]

  def flow(floats):
    full = list(leaves)  # non-floating leaves (e.g. RNG counters) stay put.
    for i, x in zip(idx, floats, strict=True):
      full[i] = x
    p = jax.tree.unflatten(treedef, full)
    return _total(apply_fn(_mask_or_keep(masks, p), ones))

  r, float_grads = jax.value_and_grad(flow)([leaves[i] for i in idx])
  grads: list = [None] * len(leaves)
  for i, g in zip(idx, float_grads, strict=True):
    grads[i] = g
  grads = jax.tree.unflatten(treedef, grads)
  scores = jax.tree.map(
      lambda s, p, g: None if s is None else jnp.abs(p * g),
      sel, abs_params, grads, is_leaf=_is_none)
  return r, scores


def _x64_context(x64: bool):
  return jax.enable_x64(True) if x64 else contextlib.nullcontext()


def _rescale(scores):
  """Divides all scores by one power of two so the largest is < 1.

  Exact in floating point (no ranking change) unless values underflow;
  keeps float64 scores inside float32 range for the float32 threshold keys.
  """
  leaves = [s for s in jax.tree.leaves(scores) if s is not None]
  if not leaves:
    return scores
  top = functools.reduce(jnp.maximum, [jnp.max(s) for s in leaves])
  top = jnp.where(jnp.isfinite(top) & (top > 0), top, 1.0)
  _, e = jnp.frexp(top)
  return jax.tree.map(lambda s: jnp.ldexp(s, -e).astype(jnp.float32), scores)


def synaptic_flow(
    apply_fn: ApplyFn,
    params: Any,
    input_shape: Sequence[int],
    masks: Any = None,
    *,
    x64: bool = False,
) -> jax.Array:
  """SynFlow's objective R = sum(f(1; m * |theta|)) for one all-ones input.

  R > 0 means some path from input to output survives (for nets without
  biases); R = 0 signals layer collapse.
  """
  with _x64_context(x64):
    return _flow_jit(apply_fn, params, tuple(input_shape), masks, x64)


@functools.partial(jax.jit, static_argnums=(0, 2, 4))
def _flow_jit(apply_fn, params, input_shape, masks, x64):
  dtype = jnp.float64 if x64 else jnp.float32
  abs_params = _abs_floating(_cast(params, dtype))
  ones = jnp.ones((1, *input_shape), dtype)
  return _total(apply_fn(_mask_or_keep(masks, abs_params), ones))


def synflow(
    apply_fn: ApplyFn,
    params: Any,
    input_shape: Sequence[int],
    *,
    masks: Any = None,
    filter_fn: masks_lib.FilterFn = masks_lib.is_kernel,
    x64: bool = False,
) -> Any:
  """One round of SynFlow scores |theta * dR/dtheta| (data-free).

  Every floating leaf of `params` is replaced by its absolute value
  (biases, batch-norm scales, shifts and running statistics too, as in the
  reference code), the forward pass uses `masks * |theta|` (so pruned
  weights score 0) and the input is all ones of shape [1, *input_shape].
  R = sum of the outputs; for a bias-free ReLU net, R = 1^T prod|W_l| 1 and
  the scores of every layer sum to R (conservation).

  Args:
    apply_fn: pure `(params, x) -> outputs` in inference mode: batch norm
      must use its running statistics, which are then part of `params`
      (e.g. `{"params": ..., "batch_stats": ...}` for linen;
      `nnx_apply_fn(model)` for NNX).
    params: all variables the forward pass reads.
    input_shape: shape of one example, without the batch dimension.
    masks: optional current masks (pytree like params, None for dense).
    filter_fn: chooses the scored (prunable) leaves.
    x64: compute in float64. Scores are products over all layers and
      overflow float32 on deep nets (ResNet-18 reaches ~1e27); with `x64`
      they are divided by one power of two (exact, order-preserving) so
      that the largest is below 1 and returned as float32: the ranking is
      kept except that scores within float32 rounding (~6e-8 relative) or
      below ~1e-45 of the largest may tie (ties are pruned in positional
      order). Non-floating leaves (e.g. NNX RNG state) pass through.

  Returns:
    Score tree: float32 arrays on prunable leaves, None elsewhere.

  References:
    Tanaka et al., "Pruning neural networks without any data by
    iteratively conserving synaptic flow", NeurIPS 2020.
  """
  with _x64_context(x64):
    return _synflow_jit(apply_fn, params, tuple(input_shape), masks,
                        filter_fn, x64)


@functools.partial(jax.jit, static_argnums=(0, 2, 4, 5))
def _synflow_jit(apply_fn, params, input_shape, masks, filter_fn, x64):
  dtype = jnp.float64 if x64 else jnp.float32
  abs_params = _abs_floating(_cast(params, dtype))
  ones = jnp.ones((1, *input_shape), dtype)
  sel = masks_lib.select(params, filter_fn)
  _, scores = _flow_and_scores(apply_fn, abs_params, ones, masks, sel)
  return _rescale(scores) if x64 else scores


def synflow_density(
    sparsity: float | jax.Array, k: int | jax.Array, rounds: int
) -> jax.Array:
  """Density after round k of n: (1 - sparsity)^(k / n) (exponential)."""
  d = 1.0 - jnp.asarray(sparsity, jnp.float32)
  return jnp.power(d, jnp.asarray(k, jnp.float32) / rounds)


def iterative_synflow(
    apply_fn: ApplyFn,
    input_shape: Sequence[int],
    *,
    rounds: int = 100,
    allocation: alloc_lib.Allocation | None = None,
    structure: struct_lib.Structure | None = None,
    x64: bool = False,
) -> Callable[[Any, jax.Array, Any], Any]:
  """A jitted `(params, sparsity, masks) -> masks` running iterative SynFlow.

  All `rounds` rounds run in one `lax.fori_loop` inside one compiled
  function; `sparsity` is traced, so one compilation serves a whole sweep.
  Round k (1..n) scores with the current masks and prunes to density
  (1 - sparsity)^(k/n) with `allocation` (global by default, one exact
  threshold without sorting; already pruned weights stay pruned). Pruned
  counts use jaxsparse's rounding, round(s * N); the reference code floors
  (int((1 - density) * N)), a difference of at most one weight per round.

  See `synflow_masks` for the arguments. `masks` must come from
  `ones_masks(params, filter_fn)` or an earlier pruning.
  """
  if int(rounds) != rounds or rounds < 1:
    raise ValueError(f"`rounds` must be a positive integer, got {rounds}.")
  # Defaults resolved here: None and the default object share a compilation.
  allocation = alloc_lib.global_() if allocation is None else allocation
  structure = struct_lib.unstructured() if structure is None else structure
  static = dict(apply_fn=apply_fn, input_shape=tuple(input_shape),
                rounds=int(rounds), allocation=allocation,
                structure=structure, x64=bool(x64))

  def call(params, sparsity, masks):
    with _x64_context(x64):
      return _iterative_synflow_jit(
          params, jnp.asarray(sparsity, jnp.float32), masks, **static)

  return call


# Module-level, keyed by the hyper-parameters: `synflow_masks` and every
# `iterative_synflow` with the same ones share one compilation per shape.
@functools.partial(jax.jit, static_argnames=(
    "apply_fn", "input_shape", "rounds", "allocation", "structure", "x64"))
def _iterative_synflow_jit(params, sparsity, masks, *, apply_fn, input_shape,
                           rounds, allocation, structure, x64):
  dtype = jnp.float64 if x64 else jnp.float32
  sel = jax.tree.map(
      lambda m: None if m is None else True, masks, is_leaf=_is_none)
  abs_params = _abs_floating(_cast(params, dtype))
  ones = jnp.ones((1, *input_shape), dtype)
  key = jax.random.PRNGKey(0)

  def body(k, masks):
    _, scores = _flow_and_scores(apply_fn, abs_params, ones, masks, sel)
    if x64:
      scores = _rescale(scores)
    s_k = 1.0 - synflow_density(sparsity, k, rounds)
    # The ranking runs on float32 scores with 32-bit counts: trace it with
    # x64 off so that integer reductions keep their 32-bit types.
    with jax.enable_x64(False):
      return prune_lib.compute_masks(
          params, None, masks, s_k, key, score=lambda p, g, kk: scores,
          allocation=allocation, structure=structure)

  return lax.fori_loop(1, rounds + 1, body, masks)


def synflow_masks(
    apply_fn: ApplyFn,
    params: Any,
    input_shape: Sequence[int],
    sparsity: float | jax.Array,
    *,
    rounds: int = 100,
    masks: Any = None,
    allocation: alloc_lib.Allocation | None = None,
    structure: struct_lib.Structure | None = None,
    filter_fn: masks_lib.FilterFn = masks_lib.is_kernel,
    x64: bool = False,
) -> Any:
  """Iterative SynFlow masks at `sparsity` (Tanaka et al., Algorithm 1).

  Compression ratio c = 1 / (1 - sparsity) (the paper's 10^x). Round k of n
  rescores with the current masks and prunes globally to density
  (1 - sparsity)^(k/n), which avoids layer collapse up to the maximal
  compression. One compiled `fori_loop`, compiled once per shapes and
  hyper-parameters (`iterative_synflow` gives the same function).

  Args:
    apply_fn: pure `(params, x) -> outputs` in inference mode (see
      `synflow`; `nnx_apply_fn` for NNX models).
    params: all variables read by the forward pass, batch-norm statistics
      included; their absolute values are used.
    input_shape: shape of one example (no batch dimension).
    sparsity: final fraction of pruned prunable weights.
    rounds: number of pruning rounds n (100 in the paper; 1 = single-shot).
    masks: optional starting masks (default: all prunable leaves dense).
    allocation: default `global_()` as in the paper.
    structure: default `unstructured()`.
    filter_fn: chooses prunable leaves when `masks` is None.
    x64: score in float64 (see `synflow`); slower, needed when
      scores overflow float32 on deep nets.

  Returns:
    Masks like `params`: bool arrays on prunable leaves, None elsewhere.

  References:
    Tanaka et al., "Pruning neural networks without any data by
    iteratively conserving synaptic flow", NeurIPS 2020.
  """
  if masks is None:
    masks = masks_lib.ones_masks(params, filter_fn)
  run = iterative_synflow(apply_fn, input_shape, rounds=rounds,
                       allocation=allocation, structure=structure, x64=x64)
  return run(params, sparsity, masks)
