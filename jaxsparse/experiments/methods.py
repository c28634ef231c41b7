"""What the experiment runner trains for a config's `pruning.method`.

A `Method` bundles the optax transformation, the trainable tree at step 0
(the model's params, or an RPS memory) and three pure maps used by the
training loop: the params the model sees in the training loss, the params
used for evaluation and export, and the masks (for sparsity, PQ index and
mask-change metrics).

Methods (`config.pruning.method`):

* `none`: dense training.
* `magnitude`, `random`, `saliency`: `jaxsparse.prune` with the configured
  schedule, allocation and structure (gradual, one-shot, iterative, ...).
* `snip`, `grasp`, `synflow`: masks scored once at initialization (global
  ranking unless `pruning.allocation` says otherwise), then static sparse
  training (`prune(0.0, initial_masks=...)`).
* `ste`: straight-through training: masks recomputed from the dense weights
  at every step (magnitude, or random with `pruning.score = "random"`),
  `pruning.srste_lambda > 0` gives SR-STE; with `structure = "n_m"` this is
  N:M STE / SR-STE. The schedule's sparsity at the current step is used.
* `set`, `rigl`: `jaxsparse.dst`; the training loss uses the params as
  they are (pruned weights are exactly 0), so its gradient is the dense
  gradient RigL grows with.
* `rps`: randomized parameter sharing (`pruning.mapper`: hashednet, roast
  or stable_rps) at `pruning.compression`; STABLE-RPS adds its gradient
  scaling before the optimizer.

`pruning.memory_fraction > 0` states the budget in stored floats per
compressible weight instead: pruning methods get the sparsity and RPS the
compression that store that many floats (`jaxsparse.sharing.memory_budget`, mask
cost `pruning.mask_cost`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

import jaxsparse
from jaxsparse._src.core.masks import unwrap
from jaxsparse.experiments import config as config_lib

PRUNE_SCORES = {"magnitude": jaxsparse.scores.magnitude,
                "random": jaxsparse.scores.random,
                "saliency": jaxsparse.scores.saliency}
PAI_METHODS = ("snip", "grasp", "synflow")
DST_METHODS = ("set", "rigl")
METHODS = ("none", *PRUNE_SCORES, *PAI_METHODS, "ste", *DST_METHODS, "rps",
           "static")


# ----------------------------------------------------------------- builders
def make_optimizer(cfg: ml_collections.ConfigDict, total_steps: int):
  """The inner optax optimizer named by `cfg.optimizer`."""
  lr: Any = cfg.learning_rate
  if cfg.get("lr_schedule", "constant") == "cosine":
    lr = optax.cosine_decay_schedule(cfg.learning_rate, total_steps)
  name = cfg.optimizer
  if name == "adam":
    return optax.adam(lr)
  if name == "adamw":
    return optax.adamw(lr, weight_decay=cfg.weight_decay)
  if name == "sgd":
    return optax.sgd(lr, momentum=cfg.momentum or None,
                     nesterov=bool(cfg.get("nesterov", False)))
  if name == "lion":
    return optax.lion(lr, weight_decay=cfg.weight_decay)
  raise ValueError(f"config.optimizer: unknown optimizer {name!r}; expected "
                   "one of adam, adamw, sgd, lion.")


def end_step(p: ml_collections.ConfigDict, total_steps: int) -> int:
  return p.end_step if p.end_step >= 0 else int(total_steps * p.end_fraction)


def make_schedule(p: ml_collections.ConfigDict, total_steps: int):
  """The `PruningSchedule` named by `p.schedule`."""
  if p.schedule == "constant":
    return jaxsparse.constant(p.sparsity)
  if p.schedule == "one_shot":
    return jaxsparse.one_shot(p.sparsity, p.begin_step)
  if p.schedule == "polynomial":
    return jaxsparse.polynomial(
        p.sparsity, p.begin_step, end_step(p, total_steps), p.frequency,
        p.initial_sparsity)
  if p.schedule == "iterative":
    return jaxsparse.iterative(p.fraction, p.every, p.num_rounds, p.begin_step)
  raise ValueError(f"config.pruning.schedule: unknown schedule {p.schedule!r};"
                   " expected constant, one_shot, polynomial or iterative.")


def make_allocation(p: ml_collections.ConfigDict):
  name = p.allocation
  if name == "uniform":
    return jaxsparse.allocation.uniform()
  if name == "er":
    return jaxsparse.allocation.er()
  if name == "erk":
    return jaxsparse.allocation.erk()
  if name == "global":
    return jaxsparse.allocation.global_(p.min_keep_fraction)
  raise ValueError(f"config.pruning.allocation: unknown allocation {name!r}; "
                   "expected uniform, er, erk or global.")


def make_structure(p: ml_collections.ConfigDict):
  name = p.structure
  if name == "unstructured":
    return jaxsparse.structures.unstructured()
  if name == "n_m":
    return jaxsparse.structures.n_m(p.n, p.m)
  if name == "block":
    return jaxsparse.structures.block(*p.block_shape)
  if name == "channel":
    return jaxsparse.structures.channel()
  raise ValueError(f"config.pruning.structure: unknown structure {name!r}; "
                   "expected unstructured, n_m, block or channel.")


def check_method(p: ml_collections.ConfigDict) -> None:
  if p.method not in METHODS:
    raise ValueError(f"config.pruning.method: unknown method {p.method!r}; "
                     f"expected one of {', '.join(METHODS)}.")


def make_tx(config: ml_collections.ConfigDict, total_steps: int,
            initial_masks: Any = None):
  """The optax transformation of the mask-based methods (not `rps`)."""
  return make_tx_and_updates(config, total_steps, initial_masks)[0]


def make_tx_and_updates(config: ml_collections.ConfigDict, total_steps: int,
                        initial_masks: Any = None):
  """`(tx, is_update)`: `make_tx`'s transformation, and for those that hold
  masks, the host-side `step -> bool` of their mask updates (else None)."""
  opt = make_optimizer(config, total_steps)
  p = config.pruning
  check_method(p)
  keep = config_lib.filter_fn(config)
  if p.method in ("none", "ste"):
    return opt, None
  if p.method in DST_METHODS:
    every, begin, end = p.frequency, p.begin_step, end_step(p, total_steps)
    return jaxsparse.dst.sparse_training(
        p.method, None if initial_masks is not None else p.sparsity,
        optimizer=opt, end_step=end,
        allocation=make_allocation(p), drop_fraction=p.drop_fraction,
        update_every=every, begin_step=begin,
        freeze_optimizer_on_update=bool(
            p.get("freeze_optimizer_on_update", False)),
        initial_masks=initial_masks, seed=config.seed, filter_fn=keep,
    ), jaxsparse.periodic_updates(every, begin, end)
  if p.method in PRUNE_SCORES and initial_masks is None:
    schedule = make_schedule(p, total_steps)
    return jaxsparse.prune(
        schedule, score=PRUNE_SCORES[p.method],
        allocation=make_allocation(p), structure=make_structure(p),
        optimizer=opt, seed=config.seed, filter_fn=keep
    ), schedule.is_update_step
  if p.method in (*PRUNE_SCORES, *PAI_METHODS, "static"):
    # Fixed masks from initialization (PaI) or from a driver round; without
    # masks (only when checking a config) all prunable leaves stay dense.
    schedule = jaxsparse.constant(0.0)
    return jaxsparse.prune(schedule, initial_masks=initial_masks,
                           optimizer=opt, seed=config.seed, filter_fn=keep
                           ), schedule.is_update_step
  raise ValueError(f"config.pruning.method={p.method!r} has no optax-only "
                   "form (it changes the trainable tree).")


# ------------------------------------------------------------------ methods
def _identity_forward(trainable, opt_state, step):
  del opt_state, step
  return trainable


def _state_masks(trainable, opt_state, step):
  del trainable, step
  try:
    return jaxsparse.get_masks(opt_state)
  except ValueError:
    return None


@dataclasses.dataclass(frozen=True)
class Method:
  """How the runner trains one config (all maps are pure and jittable).

  Attributes:
    tx: the optax transformation (its state is checkpointed).
    trainable: the trainable tree at step 0 (model params or RPS memory).
    forward: `(trainable, opt_state, step) -> params` the model sees in the
      training loss.
    evaluate: `(trainable, opt_state, step) -> params` for evaluation and
      export (hard masks for STE, expanded weights for RPS).
    masks: `(trainable, opt_state, step) -> masks or None`.
    memory: stored floats per compressible weight (None: from the masks).
    is_update: host-side `step -> bool`, whether `tx` updates its masks at
      a step; the runner passes it to `tx.update` as `mask_update`, so that
      non-update steps compile without mask-update code. None: `tx` takes
      no `mask_update`.
  """

  tx: optax.GradientTransformation
  trainable: Any
  forward: Callable[[Any, Any, jax.Array], Any] = _identity_forward
  evaluate: Callable[[Any, Any, jax.Array], Any] = _identity_forward
  masks: Callable[[Any, Any, jax.Array], Any] = _state_masks
  memory: float | None = None
  is_update: Callable[[int], bool] | None = None


@dataclasses.dataclass(frozen=True)
class ModelFns:
  """Pure functions of the model's params, in inference mode."""

  loss: Callable[[Any, dict[str, jax.Array]], jax.Array]  # (params, batch)
  apply: Callable[[Any, jax.Array], jax.Array]  # (params, images) -> logits
  input_shape: tuple[int, ...]
  # () -> {"image", "label"} arrays of the training split; called only by
  # the methods that score on data (SNIP, GraSP).
  train_data: Callable[[], dict[str, np.ndarray]]


def budget_of(config: ml_collections.ConfigDict, params: Any):
  """`sharing.memory_budget` for `pruning.memory_fraction`, or None."""
  p = config.pruning
  frac = float(p.get("memory_fraction", -1.0))
  if frac <= 0:
    return None
  n = sum(int(np.size(x)) for x in jax.tree.leaves(
      jaxsparse.ones_masks(params)))
  return jaxsparse.sharing.memory_budget(params, frac * n,
                                         mask_cost=p.mask_cost)


def build(
    config: ml_collections.ConfigDict,
    total_steps: int,
    params: Any,
    fns: ModelFns,
    initial_masks: Any = None,
) -> Method:
  """The `Method` for `config` (see the module docstring)."""
  p = config.pruning
  check_method(p)
  budget = budget_of(config, params)
  if budget is not None and p.method not in ("none", "rps"):
    p = config.pruning = ml_collections.ConfigDict(p.to_dict())
    p.sparsity = budget.sparsity
  if p.method == "rps":
    return _rps(config, total_steps, params, budget)
  if p.method == "ste":
    return _ste(config, total_steps, params)
  if p.method in PAI_METHODS and initial_masks is None:
    initial_masks = pai_masks(config, params, fns)
  tx, is_update = make_tx_and_updates(config, total_steps, initial_masks)
  return Method(tx=tx, trainable=params, is_update=is_update)


def pai_masks(config: ml_collections.ConfigDict, params: Any,
              fns: ModelFns) -> Any:
  """Masks at `pruning.sparsity` from SNIP, GraSP or SynFlow scores at init
  (global ranking unless `pruning.allocation` is not "uniform")."""
  p = config.pruning
  # Scores are computed on plain arrays (flax.nnx Variables unwrapped); the
  # model functions get the params back in their own tree.
  treedef = jax.tree.structure(params)
  rewrap = lambda q: jax.tree.unflatten(treedef, jax.tree.leaves(q))
  params = unwrap(params)
  fns = dataclasses.replace(
      fns, loss=lambda q, batch, f=fns.loss: f(rewrap(q), batch),
      apply=lambda q, x, f=fns.apply: f(rewrap(q), x))
  allocation = (jaxsparse.allocation.global_(p.min_keep_fraction)
                if p.allocation == "uniform" else make_allocation(p))
  structure = make_structure(p)
  keep = config_lib.filter_fn(config)
  if p.method == "synflow":
    return jaxsparse.pai.synflow_masks(
        fns.apply, params, fns.input_shape, p.sparsity, rounds=p.pai_rounds,
        allocation=allocation, structure=structure, filter_fn=keep)
  data = fns.train_data()
  x, y = jaxsparse.pai.class_balanced_batch(
      data["image"], data["label"], p.pai_samples_per_class,
      seed=config.seed)
  x, y = jnp.asarray(x), jnp.asarray(y)
  if p.method == "snip":
    scores = jaxsparse.pai.snip(fns.loss, params, {"image": x, "label": y},
                                filter_fn=keep)
  else:
    scores = jaxsparse.pai.grasp(fns.apply, params, (x, y), filter_fn=keep)
  return jaxsparse.pai.masks_from_scores(
      scores, params, p.sparsity, allocation=allocation, structure=structure,
      filter_fn=keep)


def _ste(config, total_steps, params) -> Method:
  p = config.pruning
  if p.score not in ("magnitude", "random"):
    raise ValueError(f"config.pruning.score: STE scores weights by "
                     f"'magnitude' or 'random', got {p.score!r}.")
  schedule = make_schedule(p, total_steps)
  kwargs = dict(structure=make_structure(p), allocation=make_allocation(p),
                score=PRUNE_SCORES[p.score],
                filter_fn=config_lib.filter_fn(config))
  base_key = jax.random.PRNGKey(config.seed)
  lam = float(p.srste_lambda)  # `ste_masks` validates the structure.

  def masks(trainable, opt_state, step):
    del opt_state
    return jaxsparse.dst.ste_masks(
        trainable, sparsity=schedule.sparsity(step),
        key=jax.random.fold_in(base_key, step), **kwargs)

  def forward(trainable, opt_state, step):
    return jaxsparse.dst.straight_through(
        trainable, masks(trainable, opt_state, step), lam)

  def evaluate(trainable, opt_state, step):
    return jaxsparse.apply_masks(trainable, masks(trainable, opt_state, step))

  return Method(tx=make_optimizer(config, total_steps), trainable=params,
                forward=forward, evaluate=evaluate, masks=masks)


def _rps(config, total_steps, params, budget) -> Method:
  p = config.pruning
  compression = budget.compression if budget is not None else p.compression
  # RPS works on plain arrays; expanded leaves go back into the params'
  # tree (flax.nnx Variables) in the same order.
  treedef = jax.tree.structure(params)
  memory, spec = jaxsparse.sharing.init(
      unwrap(params), compression, mapper=p.mapper,
      seed=config.seed)
  opt = make_optimizer(config, total_steps)
  if p.mapper == "stable_rps":
    opt = optax.chain(jaxsparse.sharing.gradient_scaling(spec), opt)

  def expand(trainable, opt_state, step):
    del opt_state, step
    return jax.tree.unflatten(treedef,
                              jax.tree.leaves(spec.expand(trainable)))

  return Method(tx=opt, trainable=memory, forward=expand, evaluate=expand,
                masks=lambda *_: None, memory=spec.compression)
