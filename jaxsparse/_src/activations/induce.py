"""Induced activation sparsity: transforms applied at inference.

Each transform is a hook `hook(name, x) -> x'` for `measure.intercept`
(top-k per token, calibrated magnitude thresholds) or an activation that
replaces an MLP's nonlinearity (ReLU-fication). `sparsify(model, hook)`
wraps a model so that every call applies them, with no retraining and no
change to its parameters; `straight_through(hook)` makes a hook trainable
(forward sparse, backward identity).

References:
  Liu et al., 2024, Training-free activation sparsity in large language
  models (TEAL): per-tensor magnitude thresholds on the inputs of every
  linear layer, calibrated to a target sparsity.
  Lee et al., 2024, CATS: contextually-aware thresholding for sparsity in
  large language models: a threshold on the gate's activation of SwiGLU.
  Mirzadeh et al., 2023, ReLU strikes back: exploiting activation sparsity
  in large language models (ReLU-fication, shifted ReLU).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxsparse._src.activations import measure

Array = jax.Array
Hook = measure.Hook
SparsitySpec = float | Mapping[str, float]

LLAMA_INPUT_TYPES: dict[str, str] = {
    "qkv": r"self_attn/[qkv]_proj$",
    "o": r"self_attn/o_proj$",
    "gate_up": r"mlp/(gate|up)_proj$",
    "down": r"mlp/down_proj$",
}
"""TEAL's input types of a `jaxsparse.lm` block: name patterns (re.search).

Pass `{LLAMA_INPUT_TYPES["down"]: 0.6, ...}` as `sparsity` to set one
target per type.
"""


def _check_sparsity(s: Any, what: str = "sparsity") -> float:
  try:
    v = float(s)
  except (TypeError, ValueError):
    raise ValueError(f"{what} must be a number in [0, 1), got {s!r}.") from None
  if not 0.0 <= v < 1.0:
    raise ValueError(f"{what} must be in [0, 1), got {s!r}.")
  return v


def _target(spec: SparsitySpec, name: str) -> float | None:
  if isinstance(spec, Mapping):
    for pat, s in spec.items():
      if re.search(pat, name):
        return _check_sparsity(s, f"sparsity[{pat!r}]")
    return None
  return _check_sparsity(spec)


# -------------------------------------------------------------- top-k
def topk_mask(x: Array, k: int) -> Array:
  """Boolean mask of the `k` largest |x| along the last axis (per token).

  Exactly `k` entries are kept per row; ties are broken towards the lower
  index (`jax.lax.top_k`).
  """
  width = x.shape[-1]
  if isinstance(k, bool) or not isinstance(k, int | np.integer) or not (
      1 <= k <= width):
    raise ValueError(f"k must be an integer in [1, {width}] (the width of "
                     f"the last axis), got {k!r}.")
  _, idx = jax.lax.top_k(jnp.abs(x), int(k))
  rows = jnp.zeros(x.shape, bool).reshape(-1, width)
  flat = idx.reshape(-1, int(k))
  rows = rows.at[jnp.arange(rows.shape[0])[:, None], flat].set(True)
  return rows.reshape(x.shape)


def topk(x: Array, k: int) -> Array:
  """`x` with all but its `k` largest-magnitude entries per token zeroed."""
  return jnp.where(topk_mask(x, k), x, jnp.zeros((), x.dtype))


def topk_hook(k: int | float, *,
              include: Callable[[str], bool] | None = None) -> Hook:
  """A hook keeping the top-`k` inputs per token of each included layer.

  `k` is a count (int) or, as a float in (0, 1], the kept fraction of each
  layer's width (rounded up). `include(name)` defaults to every linear
  input except `lm_head` and gate activations.
  """
  include = include or default_include
  if isinstance(k, float) and not 0.0 < k <= 1.0:
    raise ValueError(f"k as a fraction must be in (0, 1], got {k}.")

  def hook(name: str, x: Array) -> Array:
    if not include(name):
      return x
    kk = k if not isinstance(k, float) else max(
        1, int(np.ceil(k * x.shape[-1])))
    return topk(x, kk)

  return hook


# --------------------------------------------------------- thresholds
def threshold(x: Array, t: float | Array) -> Array:
  """`x` with the entries of |x| < t zeroed (t = 0 keeps everything)."""
  return jnp.where(jnp.abs(x) >= t, x, jnp.zeros((), x.dtype))


def threshold_hook(thresholds: Mapping[str, float]) -> Hook:
  """A hook applying `threshold` with `thresholds[name]`; others pass."""
  thresholds = {k: float(v) for k, v in thresholds.items()}

  def hook(name: str, x: Array) -> Array:
    t = thresholds.get(name)
    return x if t is None else threshold(x, t)

  return hook


def default_include(name: str) -> bool:
  """TEAL's points: linear inputs, without `lm_head` and gate activations."""
  last = name.rsplit("/", 1)[-1]
  return last not in (measure.ACT_SUFFIX, "lm_head")


def is_gate_activation(name: str) -> bool:
  """CATS's points: the gate activations `<mlp>/act` of SwiGLU MLPs."""
  return name.rsplit("/", 1)[-1] == measure.ACT_SUFFIX


def calibrate(samples: Mapping[str, np.ndarray],
              sparsity: SparsitySpec) -> dict[str, float]:
  """Per-name thresholds: the `sparsity`-quantile of each |x| sample.

  Args:
    samples: {name: |x| values} (e.g. from `measure.collect`).
    sparsity: one target in [0, 1), or {name pattern: target}; names that
      match no pattern get no threshold.

  Returns:
    {name: threshold}; zeroing |x| < threshold zeroes a `sparsity`
    fraction of the calibration entries.
  """
  if not isinstance(sparsity, Mapping):
    _check_sparsity(sparsity)
  out = {}
  for name, v in samples.items():
    s = _target(sparsity, name)
    if s is None:
      continue
    v = np.asarray(v, np.float32).reshape(-1)
    out[name] = 0.0 if s == 0.0 else float(np.quantile(v, s))
  return out


def teal_thresholds(model: nnx.Module, batches: Iterable[Any],
                    sparsity: SparsitySpec, *,
                    include: Callable[[str], bool] | None = None,
                    apply_fn: Callable[[nnx.Module, Any], Any] | None = None,
                    max_per_layer: int = 1 << 21,
                    passes: int = 2) -> dict[str, float]:
  """TEAL: magnitude thresholds on the inputs of every linear layer.

  Each layer's input (per input type: q/k/v, o, gate/up, down in a
  `jaxsparse.lm` block) gets the threshold that zeroes a `sparsity`
  fraction of its entries on the calibration `batches`. Apply them with
  `sparsify(model, threshold_hook(thresholds))`.

  With `passes=1` every threshold comes from the dense model's
  activations, as in TEAL; sparsifying the layers before a layer shifts
  its input distribution, so all thresholds together then miss the target
  by a few percent downstream (e.g. 52 % at the down projection for a
  50 % target). Each further pass recalibrates every layer with the
  previous pass's thresholds applied to the others, so the combined
  transform hits the target per layer.

  Args:
    model: a Flax NNX model.
    batches: calibration inputs (see `measure.measure_density`).
    sparsity: target in [0, 1), or {name pattern: target}
      (`LLAMA_INPUT_TYPES`).
    include: points to calibrate; default `default_include`.
    apply_fn: `apply_fn(model, batch)`; default `model(x)`.
    max_per_layer: calibration entries kept per layer (subsampled).
    passes: calibration passes over `batches` (>= 1, see above).

  Returns:
    {layer name: threshold}.
  """
  if not isinstance(sparsity, Mapping):
    _check_sparsity(sparsity)
  if isinstance(passes, bool) or not isinstance(passes, int) or passes < 1:
    raise ValueError(f"passes must be an integer >= 1, got {passes!r}.")
  batches = list(batches)
  thresholds: dict[str, float] = {}
  for _ in range(passes):
    samples = measure.collect(
        model, batches, include=include or default_include,
        hook=threshold_hook(thresholds) if thresholds else None,
        apply_fn=apply_fn, max_per_layer=max_per_layer)
    thresholds = calibrate(samples, sparsity)
  return thresholds


def cats_thresholds(model: nnx.Module, batches: Iterable[Any],
                    sparsity: float, *,
                    apply_fn: Callable[[nnx.Module, Any], Any] | None = None,
                    max_per_layer: int = 1 << 21) -> dict[str, float]:
  """CATS: a threshold on each SwiGLU MLP's gate activation `silu(g x)`.

  Zeroing the gate activation zeroes the same entries of the down
  projection's input, so the MLP's hidden state reaches `sparsity`; keys
  are `<mlp>/act`. Apply with `sparsify(model, threshold_hook(...))`.
  """
  _check_sparsity(sparsity)
  samples = measure.collect(model, batches, include=is_gate_activation,
                            apply_fn=apply_fn, max_per_layer=max_per_layer)
  if not samples:
    raise ValueError("cats_thresholds: the model has no gated MLP "
                     "(jaxsparse.lm MLP) to threshold.")
  return calibrate(samples, sparsity)


# ----------------------------------------------------- ReLU-fication
def shifted_relu(shift: float = 0.0) -> Callable[[Array], Array]:
  """`relu(x - shift)`: ReLU-fication's replacement for SiLU / GELU.

  Mirzadeh et al. (2023) replace the activation by ReLU (stage 1) and
  note that a positive shift raises sparsity further.
  """
  shift = float(shift)

  def act(x: Array) -> Array:
    return jax.nn.relu(x - shift) if shift else jax.nn.relu(x)

  return act


# --------------------------------------------------------- composing
def chain(*hooks: Hook | None) -> Hook:
  """One hook applying `hooks` in order (None entries are skipped)."""
  hs = [h for h in hooks if h is not None]

  def hook(name: str, x: Array) -> Array:
    for h in hs:
      x = h(name, x)
    return x

  return hook


def straight_through(hook: Hook) -> Hook:
  """The straight-through estimator of `hook`: sparse forward, identity
  backward (`x + stop_gradient(hook(x) - x)`), for training with induced
  activation sparsity."""

  def ste(name: str, x: Array) -> Array:
    return x + jax.lax.stop_gradient(hook(name, x) - x)

  return ste


class Sparsified(nnx.Module):
  """A model whose every call runs under `intercept(model, hook, ...)`.

  The wrapped model's state is `self.model`'s: `nnx.split`/`merge`,
  `jax.jit` and `jaxsparse.lm.evaluate` see the same parameters.
  """

  def __init__(self, model: nnx.Module, hook: Hook | None = None,
               activation: Callable[[Array], Array] | None = None):
    self.model = model
    self.hook = hook
    self.activation = activation

  def __call__(self, *args, **kwargs):
    with measure.intercept(self.model, self.hook,
                           activation=self.activation):
      return self.model(*args, **kwargs)


def sparsify(model: nnx.Module, hook: Hook | None = None, *,
             activation: Callable[[Array], Array] | None = None,
             ) -> Sparsified:
  """`model` with induced activation sparsity applied on every call.

  Args:
    model: a Flax NNX model; shared, not copied.
    hook: e.g. `threshold_hook(teal_thresholds(...))`, `topk_hook(k)`,
      their `chain`, or `straight_through(...)` of one for training.
    activation: e.g. `shifted_relu()` to ReLU-fy the MLPs.
  """
  if hook is None and activation is None:
    raise ValueError("sparsify: pass a hook, an activation, or both.")
  return Sparsified(model, hook, activation)


def relufied(model: nnx.Module, shift: float = 0.0) -> Sparsified:
  """`model` with its SwiGLU / GELU MLPs' nonlinearity replaced by ReLU.

  SwiGLU `down(silu(gate x) * up x)` becomes `down(relu(gate x - shift) *
  up x)`; a module with `fc1`/`fc2` that calls `nnx.gelu` computes
  `fc2(relu(fc1 x - shift))`. No retraining (Mirzadeh et al. fine-tune
  afterwards; with `straight_through` hooks, or plain training of the
  wrapped model, so can you).
  """
  return sparsify(model, activation=shifted_relu(shift))
