"""Capturing and measuring the activations of a Flax NNX model.

`intercept(model, hook)` routes the input of every linear layer (and the
gate activation of `jaxsparse.lm`'s SwiGLU MLPs) through `hook(name, x)`
while it is active: the one mechanism behind measurement (`measure_density`,
`collect`) and the inference-time transforms of `induce`. Names are the
module paths joined by "/": `layers/0/mlp/down_proj`, `hidden/1`,
`blocks/0/attn/query`; a gated MLP's activation `silu(gate_proj(x))` is
`layers/0/mlp/act`.

It works by giving each matched module, for the duration of the context, a
subclass of its own class whose `__call__` applies the hook; the model's
parameters and structure are untouched. Enter it on the model you call
(inside `jax.jit`: on the model you `nnx.merge`); copies made by
`nnx.split`/`nnx.merge` inside the context are not intercepted.

References:
  Li et al., 2023, The lazy neuron phenomenon: on emergence of activation
  sparsity in Transformers (ICLR).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator
from typing import Any, NamedTuple

import flax
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxsparse._src.lm import model as lm_model

Array = jax.Array
Hook = Callable[[str, Array], Array]
Activation = Callable[[Array], Array]

LINEAR_TYPES: tuple[type, ...] = (nnx.Linear, nnx.LinearGeneral, nnx.Conv,
                                  nnx.Einsum)
"""Modules whose input `intercept` hooks (named by the module's path)."""

ACT_SUFFIX = "act"
"""Name of a gated MLP's activation point: `<mlp path>/act`."""


def path_name(path: tuple[Any, ...]) -> str:
  """'a/0/b' from a module path ('a', 0, 'b')."""
  return "/".join(str(p) for p in path)


def _gated_call(cls: type, names: dict[int, str], hook: Hook,
                activation: Activation | None):
  """`__call__` of a SwiGLU `MLP` with the act hooked / replaced."""

  def __call__(self, x, *, record=None):  # noqa: N807
    name = names.get(id(self))
    if name is None:
      return cls.__call__(self, x, record=record)
    act = activation or nnx.silu
    a = hook(f"{name}/{ACT_SUFFIX}", act(self.gate_proj(x)))
    h = a * self.up_proj(x)
    if record is not None:
      record["gate_proj"] = x
      record["up_proj"] = x
      record["down_proj"] = h
    return self.down_proj(h)

  return __call__


def _rebound_call(cls: type, names: dict[int, str], activation: Activation):
  """`__call__` that runs the original with `nnx.gelu`/`nnx.silu` replaced.

  For MLPs that call `nnx.gelu(...)` inline (e.g. the runner's ViT block):
  the two names of `flax.nnx` are rebound for the duration of the call.
  """

  def __call__(self, *args, **kwargs):  # noqa: N807
    if id(self) not in names:
      return cls.__call__(self, *args, **kwargs)
    saved = flax.nnx.gelu, flax.nnx.silu
    flax.nnx.gelu = flax.nnx.silu = activation
    try:
      return cls.__call__(self, *args, **kwargs)
    finally:
      flax.nnx.gelu, flax.nnx.silu = saved

  return __call__


def _linear_call(cls: type, names: dict[int, str], hook: Hook):

  def __call__(self, x, *args, **kwargs):  # noqa: N807
    name = names.get(id(self))
    if name is not None:
      x = hook(name, x)
    return cls.__call__(self, x, *args, **kwargs)

  return __call__


def _is_plain_mlp(module: nnx.Module) -> bool:
  return hasattr(module, "fc1") and hasattr(module, "fc2")


def _identity_hook(name: str, x: Array) -> Array:
  del name
  return x


@contextlib.contextmanager
def intercept(model: nnx.Module, hook: Hook | None = None, *,
              activation: Activation | None = None) -> Iterator[nnx.Module]:
  """Routes linear-layer inputs (and gate activations) through `hook`.

  Args:
    model: any Flax NNX module; its linear layers (`LINEAR_TYPES`) are
      hooked by path name.
    hook: `hook(name, x) -> x'`, called on the input of each linear layer
      (and on `silu(gate_proj(x))` of `jaxsparse.lm` MLPs, named
      `<mlp>/act`) every time it is called; the layer sees `x'`. None: the
      identity.
    activation: if given, replaces the MLP nonlinearity: SiLU of
      `jaxsparse.lm` SwiGLU MLPs, and `nnx.gelu`/`nnx.silu` inside modules
      with `fc1` and `fc2` (the runner's ViT block). See `induce.relufied`.

  Yields:
    `model` itself, intercepted until the context exits.

  Raises:
    ValueError: if `model` is already intercepted (compose hooks with
      `induce.chain` instead of nesting).
  """
  hook = hook or _identity_hook
  names: dict[int, str] = {}
  swapped: list[tuple[nnx.Module, type]] = []
  subclasses: dict[type, type] = {}
  mods = list(nnx.iter_modules(model))
  for _, m in mods:
    if getattr(type(m), "_jaxsparse_intercept", False):
      raise ValueError("intercept: model is already intercepted; pass one "
                       "hook (compose several with induce.chain).")
  try:
    for path, m in mods:
      cls = type(m)
      if isinstance(m, lm_model.MLP) and (
          activation is not None or hook is not _identity_hook):
        call = _gated_call(cls, names, hook, activation)
      elif isinstance(m, LINEAR_TYPES):
        call = _linear_call(cls, names, hook)
      elif activation is not None and _is_plain_mlp(m):
        call = _rebound_call(cls, names, activation)
      else:
        continue
      names[id(m)] = path_name(path)
      if cls not in subclasses:
        subclasses[cls] = type(cls.__name__, (cls,), {
            "__call__": call, "_jaxsparse_intercept": True,
            "__module__": cls.__module__})
      # object.__setattr__: nnx's own refuses writes from inside a trace.
      object.__setattr__(m, "__class__", subclasses[cls])
      swapped.append((m, cls))
    yield model
  finally:
    for m, cls in swapped:
      object.__setattr__(m, "__class__", cls)


class LayerDensity(NamedTuple):
  """Activation density of one hooked input over a dataset."""

  nonzero: float  # fraction of entries != 0
  above: float  # fraction of entries with |x| > threshold
  size: int  # number of entries counted


def _batch_input(batch: Any) -> Any:
  if isinstance(batch, dict):
    return batch["image"] if "image" in batch else next(iter(batch.values()))
  if isinstance(batch, tuple | list):
    return batch[0]
  return batch


def _default_apply(model: nnx.Module, batch: Any) -> Any:
  return model(_batch_input(batch))


def measure_density(
    model: nnx.Module,
    batches: Iterable[Any],
    *,
    threshold: float = 0.0,
    hook: Hook | None = None,
    activation: Activation | None = None,
    apply_fn: Callable[[nnx.Module, Any], Any] | None = None,
    include: Callable[[str], bool] | None = None,
) -> dict[str, LayerDensity]:
  """Per-layer activation density of `model` over `batches`.

  Counts, for the input of every linear layer (and the gate activation
  `<mlp>/act` of `jaxsparse.lm` MLPs), the fraction of non-zero entries
  and of entries with |x| > `threshold`, in one jitted pass per batch.

  Args:
    model: a Flax NNX model (e.g. `jaxsparse.lm.Llama`, the runner's MLP).
    batches: an iterable of model inputs; an `(x, y)` pair or a dict with
      "image" is reduced to its input.
    threshold: the magnitude threshold of `above` (>= 0).
    hook: a transform applied before counting (e.g. `induce.threshold_hook`
      to measure the sparsity it achieves).
    activation: passed to `intercept` (e.g. `induce.shifted_relu()`).
    apply_fn: `apply_fn(model, batch)` runs the model; default
      `model(x)`.
    include: `include(name) -> bool` selects the counted layers; default
      all.

  Returns:
    {name: LayerDensity}, sorted by name.
  """
  if not threshold >= 0:
    raise ValueError(f"threshold must be >= 0, got {threshold}.")
  apply_fn = apply_fn or _default_apply
  user_hook = hook or _identity_hook
  graphdef, state = nnx.split(model)

  @jax.jit
  def counts(state, batch):
    m = nnx.merge(graphdef, state)
    out: dict[str, Array] = {}

    def record(name, x):
      x = user_hook(name, x)
      if include is None or include(name):
        c = jnp.stack([jnp.sum(x != 0), jnp.sum(jnp.abs(x) > threshold),
                       jnp.int32(x.size)])
        out[name] = out[name] + c if name in out else c
      return x

    with intercept(m, record, activation=activation):
      apply_fn(m, batch)
    return out

  totals: dict[str, np.ndarray] = {}
  for batch in batches:
    for k, v in counts(state, batch).items():
      totals[k] = totals.get(k, 0) + np.asarray(v, np.int64)
  return {k: LayerDensity(float(v[0] / v[2]), float(v[1] / v[2]), int(v[2]))
          for k, v in totals.items()}


def collect(
    model: nnx.Module,
    batches: Iterable[Any],
    *,
    include: Callable[[str], bool] | None = None,
    hook: Hook | None = None,
    activation: Activation | None = None,
    apply_fn: Callable[[nnx.Module, Any], Any] | None = None,
    max_per_layer: int = 1 << 21,
    seed: int = 0,
) -> dict[str, np.ndarray]:
  """|x| of every hooked input over `batches`, flattened (host memory).

  The calibration data of `induce.teal_thresholds`/`cats_thresholds`:
  `max_per_layer` entries per name at most (a uniform random subsample
  once more are seen, so quantiles stay unbiased). Each input is recorded
  before `hook` (if given) transforms it, so with `hook` the recorded
  inputs show the effect of the hook on the layers before.
  """
  user_hook = hook or _identity_hook
  apply_fn = apply_fn or _default_apply
  graphdef, state = nnx.split(model)

  @jax.jit
  def grab(state, batch):
    m = nnx.merge(graphdef, state)
    out: dict[str, list[Array]] = {}

    def record(name, x):
      if include is None or include(name):
        out.setdefault(name, []).append(jnp.abs(x).reshape(-1))
      return user_hook(name, x)

    with intercept(m, record, activation=activation):
      apply_fn(m, batch)
    return {k: jnp.concatenate(v) for k, v in out.items()}

  rng = np.random.default_rng(seed)
  acc: dict[str, list[np.ndarray]] = {}
  for batch in batches:
    for k, v in grab(state, batch).items():
      acc.setdefault(k, []).append(np.asarray(v, np.float32))
  out = {}
  for k, parts in acc.items():
    v = np.concatenate(parts)
    if v.size > max_per_layer:
      v = rng.choice(v, max_per_layer, replace=False)
    out[k] = v
  return out
