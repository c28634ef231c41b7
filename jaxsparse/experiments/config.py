"""The base experiment config (ml-collections) shared by `configs/`, and
its validation: every run of a config is checked before any work.

`validate(config)` raises one `ConfigError` naming each bad key, its value
and what is allowed, and returns the resolved `Plan` (runs, steps, per-layer
target sparsity) that `--dry_run` prints.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import math
import re
from typing import Any

import ml_collections
from ml_collections import config_dict

from jaxsparse.experiments.errors import ConfigError


def base() -> ml_collections.ConfigDict:
  """The default experiment; every file in configs/ starts from it."""
  c = ml_collections.ConfigDict()
  c.name = ""
  c.dataset = "digits"
  c.data_dir = ""
  c.model = "mlp"
  # Constructor arguments of the model; None = the model's default. Which
  # model takes which: `jaxsparse/experiments/models.py`.
  k = c.model_kwargs = ml_collections.ConfigDict()
  k.hidden = config_dict.placeholder(tuple)  # mlp
  k.channels = config_dict.placeholder(tuple)  # vgg, cnn1d
  k.batch_norm = config_dict.placeholder(bool)  # vgg
  k.widths = config_dict.placeholder(tuple)  # resnet
  k.blocks = config_dict.placeholder(int)  # resnet
  k.patch_size = config_dict.placeholder(int)  # vit
  k.dim = config_dict.placeholder(int)  # vit
  k.depth = config_dict.placeholder(int)  # vit
  k.heads = config_dict.placeholder(int)  # vit
  k.mlp_dim = config_dict.placeholder(int)  # vit
  c.seed = 0
  c.batch_size = 64
  # Run length: exactly one of num_epochs and num_steps is > 0.
  c.num_epochs = 60
  c.num_steps = -1
  c.optimizer = "adam"
  c.learning_rate = 3e-3
  c.lr_schedule = "cosine"  # constant | cosine
  c.momentum = 0.9
  c.nesterov = False
  c.weight_decay = 1e-4
  c.eval_every = 100
  c.checkpoint_every = 500
  c.compare_dense = True
  c.sweep_sparsities = ()  # one run per pruning.sparsity
  c.sweep_memory = ()  # one run per pruning.memory_fraction
  c.sweep_methods = ()  # one run per pruning.method (x the sweeps above)
  # One run per seed of each run above ("name#s<seed>"); mean and std over
  # seeds go to results_seeds.txt and the plots. () = just config.seed.
  c.seeds = ()
  # Named variants, in place of sweep_methods (x the sweeps above): entries
  # "name: key=value; key=value" override this config, e.g.
  # "random_erk: pruning.method='random'; pruning.allocation='erk'".
  c.sweep_variants = ()
  # Multi-round drivers: none | imp (lottery tickets) | sap (PQ-index SAP).
  c.driver = "none"
  c.driver_rounds = 5  # IMP: pruning levels after the dense run; SAP: rounds
  c.tensorboard = True  # workdir/tensorboard, if tensorboardX is installed
  c.stop_after = -1  # stop early (simulates an interruption); -1: never
  # Many-run studies (experiments/study.py): none | scaling (sparse scaling
  # law over LM widths x steps; configs/scaling_study.py).
  c.study = "none"
  # Device mesh, data x model devices (-1: what the other axis leaves).
  # Batches are split over `data`; params, masks and optimizer slots over
  # `model` by jaxsparse.distributed's logical axis rules.
  c.mesh = ml_collections.ConfigDict({"data": -1, "model": 1})
  # N > 0: per-layer activation density every N steps (image runner).
  c.activations = ml_collections.ConfigDict({"record_every": 0})

  p = c.pruning = ml_collections.ConfigDict()
  # none | magnitude | random | saliency (jaxsparse.prune with a schedule)
  # | snip | grasp | synflow (masks at init) | ste (straight-through; SR-STE
  # with srste_lambda > 0) | set | rigl (dynamic sparse training) | rps.
  p.method = "magnitude"
  p.schedule = "polynomial"  # constant | one_shot | polynomial | iterative
  p.sparsity = 0.9
  p.initial_sparsity = 0.0
  p.begin_step = 0
  p.end_step = -1  # -1: end_fraction of training
  p.end_fraction = 0.6
  p.frequency = 50
  p.fraction = 0.2  # iterative: pruned fraction of the rest per round
  p.every = 200
  p.num_rounds = 5
  p.allocation = "uniform"  # uniform | er | erk | global
  p.min_keep_fraction = 0.0
  p.structure = "unstructured"  # unstructured | n_m | block | channel
  # Layers kept dense: `re.search` patterns on param paths ('convs/0/kernel'),
  # plus "input" (the model's first layer) and "output" (its head). "auto":
  # nothing for unstructured sparsity; for n_m and block, every layer the
  # structure cannot divide (a first conv sees 1 channel on digits).
  p.exclude = ("auto",)
  p.n = 2
  p.m = 4
  p.block_shape = (4, 4)
  p.score = "magnitude"  # ste: magnitude | random
  p.srste_lambda = 0.0  # ste: SR-STE's lambda_W (2e-4 in the paper)
  p.drop_fraction = 0.3  # set/rigl: alpha (cosine decay to end_step)
  # rigl: True = the optimizer state skips mask-update steps (as in the
  # reference code), at a per-step cost; see `jaxsparse.dst`.
  p.freeze_optimizer_on_update = False
  p.pai_rounds = 100  # synflow rounds
  p.pai_samples_per_class = 10  # snip/grasp batch
  p.mapper = "stable_rps"  # rps: hashednet | roast | stable_rps
  p.compression = 0.1  # rps: stored floats / compressed weights
  p.memory_fraction = -1.0  # > 0: budget in stored floats per weight
  p.mask_cost = "bitmap"  # none | bitmap | index: what a mask costs
  # Drivers (config.driver).
  p.rewind_step = 0  # imp: rewind to the weights after this step
  p.imp_fraction = 0.2  # imp: fraction of the remaining weights per level
  p.scope = "global"  # imp/sap: global | layer
  p.sap_p = 0.5
  p.sap_q = 1.0
  p.sap_eta_r = 0.0
  p.sap_gamma = 1.0
  p.sap_beta = 0.9
  return c


def mnist1d_base() -> ml_collections.ConfigDict:
  """The MNIST-1D studies: MLP 40-100-100-10, 30 epochs, 3 seeds."""
  c = base()
  c.dataset = "mnist1d"
  c.model = "mlp"
  c.model_kwargs.hidden = (100, 100)
  c.num_epochs = 30  # 1,860 steps of 64
  c.eval_every = 250
  c.checkpoint_every = 10_000
  c.tensorboard = False
  c.seeds = (0, 1, 2)
  return c


def lm_base() -> ml_collections.ConfigDict:
  """The language-model experiment: a tiny LLaMA on Python's own docs.

  Trains the dense model (cached in the workdir), then runs the sparse
  training of `pruning.method` / `sweep_methods` and every post-training
  method x target of `posttrain`, in one table against dense.
  """
  c = base()
  c.task = "lm"
  c.dataset = "pydoc"  # pydoc | stdlib | tfds:<name> (e.g. tfds:lm1b)
  c.model = "llama"
  c.compare_dense = True
  k = c.lm = ml_collections.ConfigDict()
  k.dim = 128
  k.n_layers = 2
  k.n_heads = 4
  k.n_kv_heads = 2
  k.hidden_dim = 384
  k.seq_len = 128
  k.stdlib_bytes = 4_000_000  # corpus size for dataset=stdlib
  k.eval_batch_size = 32
  c.batch_size = 16
  c.num_epochs = -1
  c.num_steps = 1500
  c.optimizer = "adamw"
  c.learning_rate = 3e-3
  c.weight_decay = 0.0
  c.eval_every = 500
  c.pruning.method = "none"
  c.pruning.exclude = ()
  t = c.posttrain = ml_collections.ConfigDict()
  # magnitude | wanda | sparsegpt | owl_wanda | owl_sparsegpt
  t.methods = ()
  t.targets = ("0.5", "0.7", "2:4")  # sparsities or "N:M"
  t.calib_sequences = 32  # calibration windows of lm.seq_len tokens
  t.blocksize = 128
  t.percdamp = 0.01
  t.owl_m = 5.0
  t.owl_lambda = 0.08
  return c


POSTTRAIN_METHODS = ("magnitude", "wanda", "sparsegpt", "owl_wanda",
                     "owl_sparsegpt")


def parse_target(text: str) -> tuple[float | None, tuple[int, int] | None]:
  """"0.5" -> (0.5, None); "2:4" -> (None, (2, 4)); raises ValueError."""
  text = str(text).strip()
  if ":" in text:
    n, m = (int(x) for x in text.split(":"))
    if not 0 < n <= m:
      raise ValueError("N:M needs 0 < N <= M")
    return None, (n, m)
  s = float(text)
  if not 0 <= s < 1:
    raise ValueError("must be in [0, 1)")
  return s, None


def load(path: str) -> ml_collections.ConfigDict:
  """`get_config()` of a config file (as `--config path` loads it);
  `path:arg` calls `get_config(arg)`."""
  import importlib.util  # pylint: disable=g-import-not-at-top
  import os  # pylint: disable=g-import-not-at-top
  arg = None
  if ":" in os.path.basename(path):
    path, arg = path.rsplit(":", 1)
  name = os.path.splitext(os.path.basename(path))[0]
  spec = importlib.util.spec_from_file_location(f"jaxsparse_config_{name}",
                                                path)
  if spec is None or not os.path.exists(path):
    raise ConfigError(f"--config {path}: no such config file")
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod.get_config() if arg is None else mod.get_config(arg)


# ------------------------------------------------------------- the names
SCHEDULES = ("constant", "one_shot", "polynomial", "iterative")
ALLOCATIONS = ("uniform", "er", "erk", "global")
STRUCTURES = ("unstructured", "n_m", "block", "channel")
OPTIMIZERS = ("adam", "adamw", "sgd", "lion")
LR_SCHEDULES = ("constant", "cosine")
DRIVERS = ("none", "imp", "sap")
SCOPES = ("global", "layer")
STE_SCORES = ("magnitude", "random")
# Methods whose masks follow `pruning.schedule` (`prune` or STE).
SCHEDULED = ("magnitude", "random", "saliency", "ste")


def variants(config: ml_collections.ConfigDict
             ) -> list[tuple[str, ml_collections.ConfigDict]]:
  """(name, config) of every run: dense baseline, then method x sweeps."""
  copy = lambda c: ml_collections.ConfigDict(c.to_dict())
  out = []
  methods = list(config.get("sweep_methods", ()) or ())
  named = [parse_variant(v) for v in config.get("sweep_variants", ()) or ()]
  if config.get("compare_dense", False) and (
      config.pruning.method != "none" or methods or named):
    dense = copy(config)
    dense.pruning.method = "none"
    out.append(("dense", dense))
  sparsities = list(config.get("sweep_sparsities", ()) or ())
  memories = list(config.get("sweep_memory", ()) or ())
  bases = []
  for name, overrides in named:
    b = copy(config)
    b.sweep_variants = ()  # a run's identity: not the other variants
    for key, value in overrides.items():
      *parents, leaf = key.split(".")
      node = b
      for part in parents:
        node = node[part]
      if leaf not in node:
        raise KeyError(f"sweep_variants {name!r}: unknown key {key!r}")
      node[leaf] = value
    bases.append((name, b))
  for method in [] if named else methods or [config.pruning.method]:
    b = copy(config)
    b.pruning.method = method
    base_name = (config.get("name") or method) if not methods else method
    bases.append((base_name, b))
  for base_name, b in bases:
    if sparsities:
      for x in sparsities:
        c = copy(b)
        c.pruning.sparsity = float(x)
        out.append((f"{base_name}@{x:g}", c))
    elif memories:
      for x in memories:
        c = copy(b)
        c.pruning.memory_fraction = float(x)
        out.append((f"{base_name}@mem{x:g}", c))
    else:
      out.append((base_name, b))
  seeds = list(config.get("seeds", ()) or ())
  if seeds:
    if any(_int("config.seeds", s, 0) for s in seeds):
      raise ValueError(f"config.seeds={tuple(seeds)!r}: must be integers "
                       ">= 0")
    if len(set(seeds)) != len(seeds):
      raise ValueError(f"config.seeds={tuple(seeds)!r}: seeds repeat")
    if config.get("driver", "none") != "none":
      raise ValueError(f"config.seeds={tuple(seeds)!r}: not supported with "
                       f"config.driver={config.driver!r}; run the driver "
                       "once per --config.seed")
    seeded = []
    for name, c in out:
      for s in seeds:
        cs = copy(c)
        cs.seed = int(s)
        cs.seeds = ()  # a run's identity: its own seed only
        seeded.append((f"{name}{SEED_SEP}{int(s)}", cs))
    out = seeded
  return out


def parse_variant(text: str) -> tuple[str, dict[str, Any]]:
  """("random_erk", {"pruning.allocation": "erk"}) for
  "random_erk: pruning.allocation='erk'" (values are Python literals;
  anything else is taken as a string)."""
  name, sep, rest = str(text).partition(":")
  name = name.strip()
  if not sep or not name:
    raise ValueError(f"sweep_variants entry {text!r}: expected "
                     "'name: key=value; key=value'")
  overrides: dict[str, Any] = {}
  for item in rest.split(";"):
    if not item.strip():
      continue
    key, eq, value = item.partition("=")
    if not eq:
      raise ValueError(f"sweep_variants entry {text!r}: {item!r} is not "
                       "key=value")
    try:
      overrides[key.strip()] = ast.literal_eval(value.strip())
    except (ValueError, SyntaxError):
      overrides[key.strip()] = value.strip()
  return name, overrides


SEED_SEP = "#s"  # run name "<variant>#s<seed>" under config.seeds


def split_seed(name: str) -> tuple[str, int | None]:
  """("random@0.95", 1) for "random@0.95#s1"; (name, None) without seed."""
  head, sep, tail = name.rpartition(SEED_SEP)
  if sep and tail.isdigit():
    return head, int(tail)
  return name, None


def model_kwargs(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """`config.model_kwargs` without the unset (None) entries."""
  kw = config.get("model_kwargs", None)
  kw = {} if kw is None else (kw.to_dict() if hasattr(kw, "to_dict")
                              else dict(kw))
  return {k: v for k, v in kw.items() if v is not None}


def steps_per_epoch(config: ml_collections.ConfigDict) -> int:
  from jaxsparse.experiments import data  # pylint: disable=g-import-not-at-top
  if is_lm(config):
    return 0  # language models count steps (config.num_steps)
  return data.SUPPORTED_DATASETS[config.dataset].num_train // config.batch_size


def total_steps(config: ml_collections.ConfigDict) -> int:
  """Training steps of one run: `num_steps`, or `num_epochs` epochs."""
  if config.num_steps > 0:
    return int(config.num_steps)
  return int(config.num_epochs) * steps_per_epoch(config)


def length_text(config: ml_collections.ConfigDict) -> str:
  """How the run length was set, for plans and errors."""
  if config.num_steps > 0:
    return f"{config.num_steps} steps, from config.num_steps"
  return (f"{total_steps(config)} steps, from config.num_epochs="
          f"{config.num_epochs} x {steps_per_epoch(config)} steps per epoch")


def exclude_patterns(config: ml_collections.ConfigDict) -> tuple[str, ...]:
  """`pruning.exclude` resolved to path patterns (see `base`)."""
  from jaxsparse.experiments import models  # pylint: disable=g-import-not-at-top
  p = config.pruning
  raw = p.get("exclude", ("auto",))
  raw = (raw,) if isinstance(raw, str) else tuple(raw or ())
  out: list[str] = []
  for pat in raw:
    if pat == "auto":
      continue  # layers the structure cannot divide: `filter_fn`
    if pat == "input":
      out.append(models.INPUT_LAYERS.get(config.model, r"^$"))
    elif pat == "output":
      out.append(models.OUTPUT_LAYER)
    else:
      out.append(pat)
  return tuple(out)


def _auto(config: ml_collections.ConfigDict) -> bool:
  raw = config.pruning.get("exclude", ("auto",))
  raw = (raw,) if isinstance(raw, str) else tuple(raw or ())
  return "auto" in raw and config.pruning.structure in ("n_m", "block")


def filter_fn(config: ml_collections.ConfigDict):
  """`(path, leaf) -> bool`: kernels not excluded by `pruning.exclude`.

  With "auto" and an N:M or block structure, a layer the structure cannot
  divide (its input channels, for N:M) is kept dense too, as NVIDIA's ASP
  does; the plan and the table list it as dense.
  """
  import jaxsparse  # pylint: disable=g-import-not-at-top
  from jaxsparse._src.core import masks as masks_lib  # pylint: disable=g-import-not-at-top
  from jaxsparse.experiments import methods  # pylint: disable=g-import-not-at-top
  pats = [re.compile(x) for x in exclude_patterns(config)]
  structure = methods.make_structure(config.pruning) if _auto(config) else None
  if is_lm(config):
    from jaxsparse import lm  # pylint: disable=g-import-not-at-top
    base_fn = lm.prunable
  else:
    base_fn = jaxsparse.is_kernel
  if not pats and structure is None:
    return base_fn

  def fn(path, leaf):
    if not base_fn(path, leaf):
      return False
    name = masks_lib.path_str(path)
    if any(x.search(name) for x in pats):
      return False
    if structure is not None:
      try:
        structure.validate(name, tuple(leaf.shape))
      except ValueError:
        return False
    return True

  return fn


# -------------------------------------------------------------- the plan
@dataclasses.dataclass(frozen=True)
class LayerPlan:
  path: str
  shape: tuple[int, ...]
  target: float | None  # None: dense (excluded, or not a kernel)
  group: int = 1  # weights per pruning decision (N:M: 1; block: bh*bw)


@dataclasses.dataclass(frozen=True)
class RunPlan:
  """What one run of a config will do."""

  name: str
  method: str
  steps: int
  length: str
  target: float | None  # over the included layers; None: not a mask method
  per_layer: bool  # whether each layer's target is fixed (not global)
  schedule: str
  layers: tuple[LayerPlan, ...]


@dataclasses.dataclass(frozen=True)
class Plan:
  runs: tuple[RunPlan, ...]

  def __str__(self) -> str:
    lines = []
    for r in self.runs:
      tgt = "-" if r.target is None else f"{r.target:.4f}"
      lines.append(f"run {r.name!r}: method={r.method}, {r.length}, target "
                   f"sparsity {tgt}; {r.schedule}")
      for layer in r.layers:
        if layer.target is None:
          t = "dense"
        elif not r.per_layer:
          t = "global ranking"
        else:
          t = f"{layer.target:.4f}"
        lines.append(f"  {layer.path:<34}{str(layer.shape):<18}{t}")
    return "\n".join(lines)


def _allowed(key: str, value: Any, allowed) -> str | None:
  if value not in allowed:
    return (f"{key}={value!r}: unknown; allowed: "
            f"{', '.join(repr(a) for a in allowed)}")
  return None


def _in(key: str, value: Any, lo: float, hi: float, *, lo_open=False,
        hi_open=False) -> str | None:
  try:
    v = float(value)
  except (TypeError, ValueError):
    return f"{key}={value!r}: must be a number"
  ok = ((v > lo) if lo_open else (v >= lo)) and (
      (v < hi) if hi_open else (v <= hi))
  if not ok or v != v:
    lb, rb = "(" if lo_open else "[", ")" if hi_open else "]"
    return f"{key}={value!r}: must be in {lb}{lo:g}, {hi:g}{rb}"
  return None


def _int(key: str, value: Any, lo: int) -> str | None:
  if isinstance(value, bool) or not isinstance(value, int) or value < lo:
    return f"{key}={value!r}: must be an integer >= {lo}"
  return None


def is_lm(config: ml_collections.ConfigDict) -> bool:
  return config.get("task", "classify") == "lm"


def mesh_shape(c: ml_collections.ConfigDict,
               num_devices: int | None = None) -> tuple[int, int]:
  """(data, model) device counts of `config.mesh` over `num_devices`; the
  mesh takes the first data x model devices (all of them by default)."""
  import jax  # pylint: disable=g-import-not-at-top
  n = jax.device_count() if num_devices is None else num_devices
  m = c.get("mesh", None) or {}
  data, model = int(m.get("data", -1)), int(m.get("model", 1))
  if data == -1:
    data = n // max(model, 1)
  if model == -1:
    model = n // max(data, 1)
  return data, model


def _check_mesh(c: ml_collections.ConfigDict, add, bad) -> None:
  """`config.mesh` against the devices, and the batch against `data`."""
  import jax  # pylint: disable=g-import-not-at-top
  m = c.get("mesh", None)
  if m is None:
    return
  for k in m:
    if k not in ("data", "model"):
      bad(f"config.mesh.{k}: unknown key; allowed: data, model")
  for k in ("data", "model"):
    v = m.get(k, -1 if k == "data" else 1)
    if not isinstance(v, int) or isinstance(v, bool) or (v < 1 and v != -1):
      bad(f"config.mesh.{k}={v!r}: must be a positive device count or -1")
      return
  n = jax.device_count()
  if m.get("data", -1) == -1 and m.get("model", 1) == -1:
    bad("config.mesh: data and model cannot both be -1")
    return
  data, model = mesh_shape(c, n)
  procs = jax.process_count()
  if data < 1 or model < 1 or data * model > n or (
      procs > 1 and data * model != n):
    bad(f"config.mesh: data={m.get('data', -1)} x model="
        f"{m.get('model', 1)} does not fit the {n} devices of "
        f"{procs} process(es)" + (" (a multi-process mesh uses every "
                                  "device)" if procs > 1 else ""))
    return
  batch = c.get("batch_size", 1)
  if isinstance(batch, int) and batch > 0 and batch % data:
    bad(f"config.batch_size={batch}: not divisible by mesh.data={data} "
        "(each data-parallel device takes an equal share)")
  if isinstance(batch, int) and batch > 0 and batch % jax.process_count():
    bad(f"config.batch_size={batch}: not divisible by the "
        f"{jax.process_count()} processes")


def _check_lm(c: ml_collections.ConfigDict, add, bad) -> None:
  """The language-model task's own keys (`lm_base`)."""
  if c.dataset not in ("pydoc", "stdlib") and not str(c.dataset).startswith(
      "tfds:"):
    add(f"config.dataset={c.dataset!r}: unknown for task 'lm'; allowed: "
        "'pydoc', 'stdlib', 'tfds:<name>' (e.g. 'tfds:lm1b')")
  bad(_allowed("config.model", c.model, ("llama",)))
  if c.num_epochs > 0:
    add(f"config.num_epochs={c.num_epochs}: task 'lm' counts steps; set "
        "config.num_steps and config.num_epochs=-1")
  k = c.lm
  for key in ("dim", "n_layers", "n_heads", "n_kv_heads", "hidden_dim",
              "seq_len", "eval_batch_size"):
    bad(_int(f"config.lm.{key}", k[key], 1))
  if all(isinstance(k[x], int) and k[x] > 0 for x in ("dim", "n_heads",
                                                      "n_kv_heads")):
    if k.dim % k.n_heads or (k.dim // k.n_heads) % 2:
      bad(f"config.lm.dim={k.dim}: must be a multiple of 2 x "
          f"config.lm.n_heads={k.n_heads} (even head dimension for RoPE)")
    if k.n_heads % k.n_kv_heads:
      bad(f"config.lm.n_kv_heads={k.n_kv_heads}: must divide "
          f"config.lm.n_heads={k.n_heads}")
  allowed = ("none", "magnitude", "random", "saliency", "ste", "set", "rigl")
  for m in (c.pruning.method, *(c.get("sweep_methods", ()) or ())):
    if m not in allowed:
      add(f"config.pruning.method={m!r}: not available for task 'lm'; "
          f"allowed: {', '.join(repr(a) for a in allowed)}")
  t = c.posttrain
  for m in t.methods:
    bad(_allowed("config.posttrain.methods", m, POSTTRAIN_METHODS))
  for x in t.targets:
    try:
      parse_target(x)
    except ValueError as e:
      add(f"config.posttrain.targets: {x!r}: {e} (a sparsity like '0.5' "
          "or 'N:M' like '2:4')")
  bad(_int("config.posttrain.calib_sequences", t.calib_sequences, 1))
  bad(_int("config.posttrain.blocksize", t.blocksize, 1))


def _check_run(config: ml_collections.ConfigDict, errs: list[str]) -> bool:
  """Config-level checks that need no model; True if a name or number is
  invalid (the checks that need the model would fail on it)."""
  from jaxsparse._src.sharing import rps  # pylint: disable=g-import-not-at-top
  from jaxsparse.experiments import data, methods, models  # pylint: disable=g-import-not-at-top
  c, p = config, config.pruning
  add = lambda e: e is not None and e not in errs and errs.append(e)
  fatal: list[str] = []
  bad = lambda e: e is not None and (fatal.append(e), add(e))
  if is_lm(c):
    _check_lm(c, add, bad)
  else:
    bad(_allowed("config.dataset", c.dataset,
                 tuple(data.SUPPORTED_DATASETS)))
    bad(_allowed("config.model", c.model, tuple(models.MODELS)))
  bad(_allowed("config.optimizer", c.optimizer, OPTIMIZERS))
  bad(_allowed("config.lr_schedule", c.get("lr_schedule", "constant"),
               LR_SCHEDULES))
  bad(_allowed("config.driver", c.get("driver", "none"), DRIVERS))
  if c.get("study", "none") != "none":
    from jaxsparse.experiments import study  # pylint: disable=g-import-not-at-top
    for e in study.check(c):
      bad(e)
  bad(_int("config.batch_size", c.batch_size, 1))
  _check_mesh(c, add, bad)
  bad(_int("config.eval_every", c.eval_every, 1))
  bad(_int("config.activations.record_every", c.get(
      "activations", {}).get("record_every", 0), 0))
  bad(_int("config.seed", c.seed, 0))
  bad(_in("config.learning_rate", c.learning_rate, 0, math.inf,
          lo_open=True))
  if c.num_steps > 0 and c.num_epochs > 0:
    add(f"config.num_steps={c.num_steps} and config.num_epochs="
        f"{c.num_epochs} are both set: set the other one to -1 (e.g. "
        f"--config.num_epochs=-1)")
  elif c.num_steps <= 0 and c.num_epochs <= 0:
    add("config.num_steps and config.num_epochs are both <= 0: set one")
  bad(_allowed("config.pruning.method", p.method, methods.METHODS))
  bad(_allowed("config.pruning.schedule", p.schedule, SCHEDULES))
  bad(_allowed("config.pruning.allocation", p.allocation, ALLOCATIONS))
  bad(_allowed("config.pruning.structure", p.structure, STRUCTURES))
  bad(_allowed("config.pruning.score", p.score, STE_SCORES))
  bad(_allowed("config.pruning.mapper", p.mapper, rps.MAPPERS))
  bad(_allowed("config.pruning.mask_cost", p.mask_cost, rps.MASK_COSTS))
  bad(_allowed("config.pruning.scope", p.scope, SCOPES))
  bad(_in("config.pruning.sparsity", p.sparsity, 0, 1, hi_open=True))
  bad(_in("config.pruning.initial_sparsity", p.initial_sparsity, 0,
          float(p.sparsity) if _in("", p.sparsity, 0, 1) is None else 1))
  bad(_in("config.pruning.min_keep_fraction", p.min_keep_fraction, 0, 1))
  bad(_in("config.pruning.fraction", p.fraction, 0, 1, lo_open=True,
          hi_open=True))
  bad(_in("config.pruning.drop_fraction", p.drop_fraction, 0, 1,
          hi_open=True))
  bad(_in("config.pruning.compression", p.compression, 0, 1, lo_open=True))
  bad(_in("config.pruning.end_fraction", p.end_fraction, 0, 1, lo_open=True))
  bad(_in("config.pruning.imp_fraction", p.imp_fraction, 0, 1, lo_open=True,
          hi_open=True))
  bad(_in("config.pruning.srste_lambda", p.srste_lambda, 0, math.inf))
  bad(_int("config.pruning.frequency", p.frequency, 1))
  bad(_int("config.pruning.every", p.every, 1))
  bad(_int("config.pruning.num_rounds", p.num_rounds, 1))
  bad(_int("config.pruning.begin_step", p.begin_step, 0))
  bad(_int("config.pruning.pai_rounds", p.pai_rounds, 1))
  bad(_int("config.pruning.pai_samples_per_class", p.pai_samples_per_class,
           1))
  if c.get("driver", "none") != "none":
    bad(_int("config.driver_rounds", c.driver_rounds, 1))
  mf = float(p.get("memory_fraction", -1.0))
  if mf > 0:
    bad(_in("config.pruning.memory_fraction", mf, 0, 1, lo_open=True))
  if p.structure == "n_m":
    for key in ("n", "m"):
      bad(_int(f"config.pruning.{key}", p[key], 1 if key == "m" else 0))
    if isinstance(p.n, int) and isinstance(p.m, int) and p.n > p.m:
      bad(f"config.pruning.n={p.n} > config.pruning.m={p.m}: must be "
          "N <= M (N:M keeps N of every M weights)")
    elif isinstance(p.n, int) and isinstance(p.m, int) and p.m > 0 and (
        p.method not in ("none", "rps") and mf <= 0):
      want = 1.0 - p.n / p.m
      if abs(float(p.sparsity) - want) > 1e-9:
        add(f"config.pruning.sparsity={p.sparsity!r}: structure n_m "
            f"{p.n}:{p.m} prunes exactly {want:g} of every included layer; "
            f"set --config.pruning.sparsity={want:g}")
    if p.allocation != "uniform" and p.method in SCHEDULED:
      add(f"config.pruning.allocation={p.allocation!r}: has no effect with "
          "structure n_m (every group keeps N of M); use 'uniform'")
  if p.structure == "block":
    bs = tuple(p.block_shape)
    if len(bs) != 2 or any(not isinstance(b, int) or b < 1 for b in bs):
      bad(f"config.pruning.block_shape={bs!r}: must be two integers >= 1")
  if p.method in methods.DST_METHODS and p.structure != "unstructured":
    add(f"config.pruning.structure={p.structure!r}: {p.method} is "
        "unstructured only")
  if c.get("driver", "none") != "none" and p.method not in (
      "none", "magnitude", "static"):
    add(f"config.pruning.method={p.method!r}: config.driver={c.driver!r} "
        "trains its own rounds; leave the method at 'magnitude'")
  return bool(fatal)


def _schedule_text_and_last(config, total: int) -> tuple[str, int, str]:
  """(description, last mask-update step, the config key that sets it)."""
  from jaxsparse.experiments import methods  # pylint: disable=g-import-not-at-top
  p = config.pruning
  if p.method in methods.DST_METHODS:
    end = methods.end_step(p, total)
    return (f"mask updates every {p.frequency} steps from step "
            f"{p.begin_step} to {end}", max(p.begin_step, end),
            "config.pruning.end_step/end_fraction")
  if p.method in methods.PAI_METHODS or p.method == "static":
    return "masks fixed at initialization", 0, ""
  if p.schedule == "constant":
    return "pruned once at step 0", 0, ""
  if p.schedule == "one_shot":
    return (f"pruned once at step {p.begin_step}", p.begin_step,
            f"config.pruning.begin_step={p.begin_step} (one-shot step)")
  if p.schedule == "polynomial":
    end = methods.end_step(p, total)
    key = ("config.pruning.end_step" if p.end_step >= 0 else
           f"config.pruning.end_fraction={p.end_fraction}")
    return (f"Zhu-Gupta from step {p.begin_step} to {end}, every "
            f"{p.frequency}", end, f"{key} (end step {end})")
  last = p.begin_step + p.every * (p.num_rounds - 1)
  return (f"{p.num_rounds} rounds of {p.fraction:g}, every {p.every} steps",
          last, f"config.pruning.num_rounds={p.num_rounds} x every="
          f"{p.every} (last round at step {last})")


def _final_target(config) -> float | None:
  p = config.pruning
  if p.method in ("none",):
    return 0.0
  if p.method == "rps" or float(p.get("memory_fraction", -1.0)) > 0:
    return None
  if p.method in SCHEDULED and p.schedule == "iterative":
    return 1.0 - (1.0 - p.fraction) ** p.num_rounds
  return float(p.sparsity)


def lm_config(config: ml_collections.ConfigDict):
  """The `jaxsparse.lm.LlamaConfig` of a task-'lm' config (byte tokens)."""
  from jaxsparse import lm  # pylint: disable=g-import-not-at-top
  k = config.lm
  return lm.LlamaConfig(vocab_size=256, dim=k.dim, n_layers=k.n_layers,
                        n_heads=k.n_heads, n_kv_heads=k.n_kv_heads,
                        hidden_dim=k.hidden_dim, max_seq_len=k.seq_len)


def _param_shapes(config) -> list[tuple[str, tuple[int, ...], Any]]:
  """(path, shape, leaf) of the model's params, by `nnx.eval_shape`."""
  import jax  # pylint: disable=g-import-not-at-top
  from flax import nnx  # pylint: disable=g-import-not-at-top

  from jaxsparse._src.core import masks as masks_lib  # pylint: disable=g-import-not-at-top
  from jaxsparse.experiments import data, models  # pylint: disable=g-import-not-at-top
  if is_lm(config):
    from jaxsparse import lm  # pylint: disable=g-import-not-at-top
    cfg = lm_config(config)
    model = nnx.eval_shape(lambda: lm.Llama(cfg, rngs=nnx.Rngs(0)))
    state = masks_lib.unwrap(nnx.state(model, nnx.Param))
    return [(masks_lib.path_str(path), tuple(x.shape), x) for path, x in
            jax.tree.flatten_with_path(state)[0]]
  input_shape, num_classes = data.dataset_info(config.dataset)
  kw = model_kwargs(config)
  cls = models.MODELS[config.model]
  accepted = set(inspect.signature(cls.__init__).parameters) - {
      "self", "num_classes", "input_shape", "rngs"}
  bad = sorted(set(kw) - accepted)
  if bad:
    raise ConfigError(
        f"config.model_kwargs.{bad[0]}={kw[bad[0]]!r}: not an argument of "
        f"model {config.model!r}; its arguments: {', '.join(sorted(accepted))}")
  try:
    model = nnx.eval_shape(lambda: models.create_model(
        config.model, num_classes=num_classes, input_shape=input_shape,
        rngs=nnx.Rngs(0), **kw))
  except (TypeError, ValueError) as e:
    raise ConfigError(f"config.model_kwargs={kw!r} for model "
                      f"{config.model!r}: {e}") from None
  state = masks_lib.unwrap(nnx.state(model, nnx.Param))
  return [(masks_lib.path_str(path), tuple(x.shape), x) for path, x in
          jax.tree.flatten_with_path(state)[0]]


def _layers(config, target, errs) -> tuple[LayerPlan, ...]:
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top

  import jaxsparse  # pylint: disable=g-import-not-at-top
  from jaxsparse.experiments import methods  # pylint: disable=g-import-not-at-top
  p = config.pruning
  keep = filter_fn(config)
  shapes = _param_shapes(config)
  kernels = [(n, s) for n, s, x in shapes if jaxsparse.is_kernel((), x)]
  included = [(n, s) for n, s, x in shapes if keep(_path(n), x)]
  if target is not None and target > 0 and not included:
    why = (f"; 'auto' keeps dense the layers that structure "
           f"{p.structure} cannot divide" if _auto(config) else "")
    errs.append(f"config.pruning.exclude={tuple(p.exclude)!r}: excludes "
                f"every layer of model {config.model!r} "
                f"({', '.join(n for n, _ in kernels)}){why}")
  structure = methods.make_structure(p) if p.method != "rps" else None
  group = 1
  if p.structure == "block":
    group = int(np.prod(tuple(p.block_shape)))
  if structure is not None and target is not None and target > 0:
    for n, s in included:
      try:
        structure.validate(n, s)
      except ValueError as e:
        errs.append(f"config.pruning.structure={p.structure!r}: {e} Exclude "
                    f"it with --config.pruning.exclude (path patterns, or "
                    f"'input' / 'output').")
  per_layer = {n: target for n, _ in included}
  if target is not None and p.allocation in ("er", "erk") and included and (
      p.structure == "unstructured"):
    d = jaxsparse.allocation.erk_densities(
        [s for _, s in included], jnp.float32(1.0 - target), kind=p.allocation)
    per_layer = {n: 1.0 - float(x) for (n, _), x in zip(
        included, np.asarray(d), strict=True)}
  names = {n for n, _ in included}
  return tuple(LayerPlan(n, s, per_layer.get(n) if n in names else None,
                         group) for n, s in kernels)


def _path(name: str) -> tuple:
  """A key path whose `path_str` is `name` (for filter functions)."""
  import jax  # pylint: disable=g-import-not-at-top
  return tuple(jax.tree_util.DictKey(k) for k in name.split("/"))


def _plan_one(name: str, c: ml_collections.ConfigDict, errs: list[str],
              target: float | None = None) -> RunPlan | None:
  """The plan of one run (no variants), appending problems to `errs`."""
  from jaxsparse.experiments import methods  # pylint: disable=g-import-not-at-top
  mine: list[str] = []
  fatal = _check_run(c, mine)
  errs.extend(e for e in mine if e not in errs)
  if fatal:
    return None  # later checks need valid names and numbers
  p = c.pruning
  total = total_steps(c)
  target = _final_target(c) if target is None else target
  text, last, key = _schedule_text_and_last(c, total)
  mask_method = p.method not in ("none", "rps")
  if not mask_method:
    text = "dense" if p.method == "none" else (
        f"parameter sharing ({p.mapper})")
  if c.get("driver", "none") != "none":
    text, last = f"{c.driver} driver, {c.driver_rounds} rounds", 0
  elif mask_method and last > total - 1:
    errs.append(f"{key}: the last pruning step lies beyond the run, whose "
                f"last step is {total - 1} ({length_text(c)}); prune "
                "earlier or train longer")
  if (mask_method and p.method in methods.DST_METHODS
      and p.begin_step > methods.end_step(p, total)):
    errs.append(f"config.pruning.begin_step={p.begin_step}: after the end "
                f"step {methods.end_step(p, total)} of the mask updates")
  if p.method in SCHEDULED and p.schedule == "polynomial" and (
      methods.end_step(p, total) <= p.begin_step):
    errs.append(f"config.pruning.begin_step={p.begin_step}: the Zhu-Gupta "
                f"schedule ends at step {methods.end_step(p, total)}, "
                "not after it begins")
  try:
    layers = _layers(c, target if mask_method else 0.0, errs)
  except ConfigError as e:
    errs.append(str(e))
    return None
  if not mask_method:
    layers = tuple(dataclasses.replace(x, target=None) for x in layers)
  global_rank = p.allocation == "global" or (
      p.method in methods.PAI_METHODS and p.allocation == "uniform")
  per_layer = p.structure == "n_m" or not global_rank
  return RunPlan(name, p.method, total, length_text(c),
                 target if mask_method else None, per_layer, text, layers)


def _raise(errs: list[str]) -> None:
  if errs:
    head = ("config has a problem:" if len(errs) == 1 else
            f"config has {len(errs)} problems:")
    raise ConfigError(head + "\n" + "\n".join(f"  - {e}" for e in errs))


def plan_of(config: ml_collections.ConfigDict,
            target: float | None = None) -> RunPlan:
  """The plan of exactly this run (no dense baseline, no sweep)."""
  errs: list[str] = []
  plan = _plan_one(config.get("name", "") or "run", config, errs, target)
  _raise(errs)
  return plan


def validate(config: ml_collections.ConfigDict) -> Plan:
  """Checks every run of `config`; returns its plan or raises ConfigError.

  The message lists each problem as `key=value: what is wrong; allowed`.
  """
  errs: list[str] = []
  try:
    runs = variants(config)
  except (AttributeError, KeyError, TypeError, ValueError) as e:
    raise ConfigError(f"config: {e}") from None
  plans = [_plan_one(name, c, errs) for name, c in runs]
  _raise(errs)
  return Plan(tuple(plans))
