"""Sequential post-training pruning of a decoder, block by block.

As the reference Wanda and SparseGPT drivers, block l is calibrated on the
outputs of the already-pruned blocks before it: the input statistics of
its linear layers (Wanda: ||X_j||²; SparseGPT: H = XᵀX) are summed over
calibration batches on the dense block, all its linear layers are pruned,
and the pruned block's outputs become the next block's inputs. Only one
block's activations (every calibration token at the model width) are held.

The model follows `jaxsparse.lm`'s interface: `model.embed(tokens)` gives
h (B, T, dim); `model.layers` is a sequence of blocks; `block(h, positions,
record=rec)` returns the new h and, when `rec` is a dict, stores the input
(B, T, in) of each linear layer under its dotted name (`"mlp.up_proj"`);
each linear layer is an `nnx.Linear` reached by that name
(`block.mlp.up_proj.kernel`, (in, out)).

References:
  Frantar & Alistarh, "SparseGPT", ICML 2023 (sequential calibration).
  Sun et al., "Wanda", arXiv 2306.11695, 2023.
  Yin et al., "OWL", ICML 2024.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax import lax

from jaxsparse._src.core import masks as masks_lib
from jaxsparse._src.core import threshold
from jaxsparse._src.posttrain import layer as layer_lib
from jaxsparse._src.posttrain import owl as owl_lib

LINEARS = (
    "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
    "self_attn.o_proj", "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj",
)
METHODS = ("magnitude", "wanda", "sparsegpt")


class LayerReport(NamedTuple):
  """One pruned kernel."""

  path: str  # e.g. "layers/0/mlp/up_proj/kernel".
  block: int
  target: float  # target sparsity (N:M: (m - n) / m).
  achieved: float  # fraction of the mask that is pruned.
  exact: bool | None  # exact target count (None: counted globally).
  seconds: float  # pruning time, statistics excluded.


class PruneReport(NamedTuple):
  """What `prune` did."""

  method: str
  layers: list[LayerReport]
  block_sparsities: list[float]  # per-block target (OWL or uniform).
  outlier_ratios: list[float] | None  # OWL's D per block, if used.
  sparsity: float  # pruned fraction over all pruned kernels.
  exact: bool  # every count (per layer, output, group or global) exact.
  seconds: float  # wall time of the whole call.


def _first(out: Any) -> jax.Array:
  return out[0] if isinstance(out, tuple) else out


@functools.partial(jax.jit, static_argnames=("graphdef", "names", "stat"))
def _block_stats(graphdef, state, h, positions, acc, *, names, stat):
  """Runs a block on h, adds its linear inputs' statistics to `acc`."""
  block = nnx.merge(graphdef, state)
  rec: dict[str, jax.Array] = {}
  out = _first(block(h, positions, record=rec))
  new = {}
  for name in names:
    if name not in rec:
      raise ValueError(
          f"the block recorded no input for '{name}' (it recorded "
          f"{sorted(rec)}).")
    x = rec[name].reshape(-1, rec[name].shape[-1]).astype(jnp.float32)
    if stat == "sq":
      new[name] = acc[name] + jnp.sum(x * x, axis=0)
    else:
      new[name] = acc[name] + layer_lib.gram(x)
  return out, new


@functools.partial(jax.jit, static_argnames=("graphdef",))
def _block_forward(graphdef, state, h, positions):
  return _first(nnx.merge(graphdef, state)(h, positions))


@jax.jit
def _global_keep(kernels, k):
  """Keep-masks pruning the k smallest |w| over all `kernels`.

  One threshold found bit by bit over order-preserving keys (32 counting
  passes; a small program for any number of layers); ties are pruned in
  leaf order, then row-major, as `jaxsparse.masks` with a global
  allocation.
  """
  us = [lax.bitcast_convert_type(threshold.sortable_key(
      jnp.abs(x.astype(jnp.float32))), jnp.uint32) ^ jnp.uint32(0x80000000)
        for x in kernels]

  def count(pred):
    return sum(jnp.sum(pred(u), dtype=jnp.int32) for u in us)

  def step(i, t):  # smallest t with #{u <= t} >= k.
    one = jnp.left_shift(jnp.uint32(1), (31 - i).astype(jnp.uint32))
    return jnp.where(count(lambda u: u <= (t | (one - 1))) >= k, t, t | one)

  t = lax.fori_loop(0, 32, step, jnp.uint32(0))
  take = k - count(lambda u: u < t)
  keeps, before = [], jnp.int32(0)
  for u in us:
    tie = u == t
    rank = before + jnp.cumsum(tie.reshape(-1), dtype=jnp.int32)
    keeps.append(~((u < t) | (tie & (rank.reshape(u.shape) <= take))))
    before = before + jnp.sum(tie, dtype=jnp.int32)
  return keeps


def _linear(block: Any, name: str, index: int) -> Any:
  obj = block
  for part in name.split("."):
    if not hasattr(obj, part):
      raise ValueError(
          f"block {index} has no linear layer '{name}' (missing "
          f"'{part}'); pass `linears` to name the block's layers.")
    obj = getattr(obj, part)
  if not isinstance(getattr(obj, "kernel", None), nnx.Variable):
    raise ValueError(f"block {index}: '{name}' has no nnx `kernel`.")
  return obj


def _stats(block, hs, positions, names, dims, stat, outputs=False):
  """Summed statistics of the block's linear inputs (and its outputs)."""
  graphdef, state = nnx.split(block)
  acc = {n: jnp.zeros((d,) if stat == "sq" else (d, d), jnp.float32)
         for n, d in zip(names, dims, strict=True)}
  outs = []
  for h in hs:
    out, acc = _block_stats(graphdef, state, h, positions, acc,
                            names=tuple(names), stat=stat)
    if outputs:
      outs.append(out)
  return acc, outs


def _forward(block, hs, positions):
  graphdef, state = nnx.split(block)
  return [_block_forward(graphdef, state, h, positions) for h in hs]


def _check_args(method, sparsity, nm, owl, owl_m, owl_lambda, scope,
                batch_size, blocksize, percdamp, calib_tokens):
  if method not in METHODS:
    raise ValueError(f"`method` must be one of {METHODS}, got {method!r}.")
  if scope not in ("layer", "global"):
    raise ValueError(f"`scope` must be 'layer' or 'global', got {scope!r}.")
  if scope == "global" and (method != "magnitude" or nm is not None):
    raise ValueError(
        "`scope`='global' is for method='magnitude' with `sparsity` only.")
  if owl:
    if method == "magnitude":
      raise ValueError("`owl` needs method 'wanda' or 'sparsegpt'.")
    if nm is not None:
      raise ValueError("`owl` needs an unstructured `sparsity`, not `nm`.")
    if not math.isfinite(float(owl_m)):
      raise ValueError(f"`owl_m` must be finite, got {owl_m!r}.")
    lam = float(owl_lambda)
    if not (math.isfinite(lam) and lam >= 0.0):
      raise ValueError(f"`owl_lambda` must be >= 0, got {owl_lambda!r}.")
  if method == "sparsegpt":
    layer_lib.check_sparsegpt_args(blocksize, percdamp, nm)
  if method == "magnitude":
    return None
  if calib_tokens is None:
    raise ValueError(f"method {method!r} needs `calib_tokens`.")
  tokens = jnp.asarray(calib_tokens)
  if tokens.ndim != 2 or not jnp.issubdtype(tokens.dtype, jnp.integer):
    raise ValueError(
        "`calib_tokens` must be integer tokens (num_sequences, seq_len), got "
        f"{tokens.dtype} {tokens.shape}.")
  if isinstance(batch_size, bool) or int(batch_size) != batch_size \
      or batch_size < 1:
    raise ValueError(
        f"`batch_size` must be a positive integer, got {batch_size!r}.")
  return tokens


def prune(
    model: Any,
    calib_tokens: Any = None,
    *,
    method: str = "wanda",
    sparsity: float | None = None,
    nm: tuple[int, int] | None = None,
    owl: bool = False,
    owl_m: float = 5.0,
    owl_lambda: float = 0.08,
    scope: str = "layer",
    batch_size: int = 8,
    blocksize: int = 128,
    percdamp: float = 0.01,
    linears: Sequence[str] = LINEARS,
) -> tuple[Any, Any, PruneReport]:
  """Prunes the linear layers of every block of `model`, in place.

  Args:
    model: an nnx decoder with `embed`, `layers` (see the module doc).
    calib_tokens: int (num_sequences, seq_len) calibration tokens (not
      needed for magnitude).
    method: "magnitude", "wanda" (Sun et al., 2023) or "sparsegpt"
      (Frantar & Alistarh, 2023).
    sparsity: unstructured target: exactly round(s · n) per layer (Wanda:
      per output; magnitude with `scope="global"`: over all layers).
    nm: `(n, m)`: n kept of every m consecutive inputs of each output.
    owl: per-block sparsities from OWL (Yin et al., 2024), computed on the
      dense model with Wanda scores, for wanda or sparsegpt.
    owl_m: OWL's outlier multiple M.
    owl_lambda: OWL's λ (the sparsities spread over 2λ).
    scope: "layer", or "global" (one magnitude ranking of all layers).
    batch_size: calibration sequences per forward pass.
    blocksize: SparseGPT's lazy-update block.
    percdamp: SparseGPT's dampening.
    linears: dotted names of the pruned linear layers of a block.

  Returns:
    `(model, masks, report)`: masks is an `nnx.State` shaped like
    `nnx.state(model, nnx.Param)`, bool for pruned kernels and None
    elsewhere, as `jaxsparse.apply_masks` and
    `jaxsparse.prune(0.0, initial_masks=masks, ...)` take
    (`nnx.to_pure_dict(masks)` for plain dicts); a `PruneReport`.
  """
  start = time.perf_counter()
  tokens = _check_args(method, sparsity, nm, owl, owl_m, owl_lambda, scope,
                       batch_size, blocksize, percdamp, calib_tokens)
  if not hasattr(model, "layers"):
    raise ValueError("`model` has no `layers` (its sequence of blocks).")
  blocks = list(model.layers)
  names = tuple(linears)
  lins = [[_linear(b, n, i) for n in names] for i, b in enumerate(blocks)]
  for i, row in enumerate(lins):
    for n, lin in zip(names, row, strict=True):
      layer_lib.check_kernel(lin.kernel.get_value(), f"layers/{i}/{n}")
      try:
        layer_lib.check_target(sparsity, nm,
                               lin.kernel.get_value().shape[0])
      except ValueError as e:
        raise ValueError(f"block {i}, '{n}': {e}") from None
  if method != "magnitude" and tokens is not None and blocks \
      and not hasattr(model, "embed"):
    raise ValueError("`model` has no `embed` (tokens -> h).")

  keeps: dict[int, jax.Array] = {}
  block_s = [sparsity] * len(blocks)
  ratios = None
  per_layer: list[tuple[int, Any, float]] = []  # (block, linear, seconds)

  def set_kernel(i, lin, new, keep, seconds):
    lin.kernel.set_value(new)
    keeps[id(lin.kernel)] = keep
    per_layer.append((i, lin, seconds))

  def timed(fn, *args, **kw):
    t0 = time.perf_counter()
    out = jax.block_until_ready(fn(*args, **kw))
    return out, time.perf_counter() - t0

  if method == "magnitude" and scope == "global":
    kernels = [lin.kernel.get_value() for row in lins for lin in row]
    total = sum(k.size for k in kernels)
    t0 = time.perf_counter()
    flat_keep = _global_keep(kernels, layer_lib.prune_count(total, sparsity))
    flat_keep = jax.block_until_ready(flat_keep)
    dt = (time.perf_counter() - t0) / max(1, len(kernels))
    it = iter(flat_keep)
    for i, row in enumerate(lins):
      for lin in row:
        keep = next(it)
        w = lin.kernel.get_value()
        set_kernel(i, lin, jnp.where(keep, w, jnp.zeros((), w.dtype)), keep,
                   dt)
  elif method == "magnitude":
    for i, row in enumerate(lins):
      for lin in row:
        (new, keep), dt = timed(layer_lib.magnitude, lin.kernel.get_value(),
                                sparsity=sparsity, nm=nm)
        set_kernel(i, lin, new, keep, dt)
  else:
    positions = jnp.arange(tokens.shape[1])[None]
    batches = [tokens[j:j + batch_size]
               for j in range(0, tokens.shape[0], batch_size)]
    dims = lambda row: [lin.kernel.get_value().shape[0] for lin in row]
    if owl:  # OWL's ratios, on the dense model (as the reference).
      hs = [model.embed(b) for b in batches]
      ratios = []
      for block, row in zip(blocks, lins, strict=True):
        acc, hs = _stats(block, hs, positions, names, dims(row), "sq",
                         outputs=True)
        scores = [layer_lib.wanda_score(lin.kernel.get_value(),
                                        jnp.sqrt(acc[n]))
                  for n, lin in zip(names, row, strict=True)]
        ratios.append(float(owl_lib.outlier_ratio(scores, owl_m)))
      del hs
      block_s = owl_lib.owl_sparsities(ratios, sparsity, owl_lambda)
    stat = "sq" if method == "wanda" else "h"
    hs = [model.embed(b) for b in batches]
    for i, (block, row) in enumerate(zip(blocks, lins, strict=True)):
      acc, _ = _stats(block, hs, positions, names, dims(row), stat)
      s = None if nm is not None else block_s[i]
      for n, lin in zip(names, row, strict=True):
        w = lin.kernel.get_value()
        if method == "wanda":
          (new, keep), dt = timed(layer_lib.wanda, w, jnp.sqrt(acc[n]),
                                  sparsity=s, nm=nm)
        else:
          (new, keep), dt = timed(layer_lib.sparsegpt, w, acc[n],
                                  sparsity=s, nm=nm, blocksize=blocksize,
                                  percdamp=percdamp)
        set_kernel(i, lin, new, keep, dt)
      del acc
      hs = _forward(block, hs, positions)
    del hs

  state = nnx.state(model, nnx.Param)
  masks = jax.tree.map(lambda v: keeps.get(id(v)), state,
                       is_leaf=masks_lib.is_variable)
  paths = {id(v): masks_lib.path_str(p) for p, v in
           jax.tree.flatten_with_path(
               state, is_leaf=masks_lib.is_variable)[0]}
  reports, pruned, size = [], 0, 0
  for i, lin, dt in per_layer:
    keep = np.asarray(keeps[id(lin.kernel)])
    zeros = int((~keep).sum())
    pruned, size = pruned + zeros, size + keep.size
    if nm is not None:
      target = (nm[1] - nm[0]) / nm[1]
    else:
      target = float(block_s[i])
    exact = None if scope == "global" else layer_lib.counts_exact(
        keep, sparsity=None if nm else target, nm=nm,
        per_column=method == "wanda")
    reports.append(LayerReport(paths.get(id(lin.kernel), "?"), i, target,
                               zeros / keep.size, exact, dt))
  if scope == "global":
    all_exact = pruned == layer_lib.prune_count(size, sparsity)
  else:
    all_exact = all(r.exact for r in reports)
  report = PruneReport(
      method=method, layers=reports,
      block_sparsities=[] if nm is not None else [float(s) for s in block_s],
      outlier_ratios=ratios, sparsity=pruned / size if size else 0.0,
      exact=bool(all_exact), seconds=time.perf_counter() - start)
  return model, masks, report
