"""Hugging Face checkpoints: LLaMA safetensors in and out, GPT-2 key maps.

`save_hf(model, path)` writes `model.safetensors` and a `config.json` that
`transformers.LlamaForCausalLM.from_pretrained(path)` reads; `load_hf(path)`
reads such a directory (single file or sharded with
`model.safetensors.index.json`) into a `Llama`. Names map mechanically:

  ===========================================  ==============================
  Hugging Face                                 `Llama` parameter
  ===========================================  ==============================
  model.embed_tokens.weight (vocab, dim)       embed_tokens/embedding
  model.layers.{i}.self_attn.q_proj.weight     layers/{i}/self_attn/q_proj/
    (out, in), also k/v/o_proj, mlp.gate/up/     kernel (in, out) = weight.T
    down_proj
  model.layers.{i}.input_layernorm.weight      layers/{i}/input_layernorm/
    (also post_attention_layernorm)              weight
  model.norm.weight                            norm/weight
  lm_head.weight (vocab, dim), absent if tied  lm_head/kernel = weight.T
  ===========================================  ==============================

Masked (pruned) kernels are written as they are, so zeros stay zeros; a
`jaxsparse.nn.BlockSparseDense` layer is written as its dense kernel.

GPT-2 does not map onto `Llama` (LayerNorm with biases, GELU, learned
positions, fused QKV with biases): `from_gpt2_names` / `to_gpt2_names`
only translate GPT-2 checkpoint keys to a nested Flax-style params dict
(and back), for pruning it as a plain pytree.
"""

from __future__ import annotations

import dataclasses
import glob
import json
import os
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxsparse._src.lm.model import Llama, LlamaConfig, RMSNorm

_INDEX = "model.safetensors.index.json"
_IGNORED_SUFFIXES = ("rotary_emb.inv_freq",)  # buffers of old checkpoints.


def _safetensors():
  try:
    import safetensors.numpy as st
  except ImportError as e:  # pragma: no cover - depends on the environment.
    raise ImportError("Hugging Face checkpoints need `safetensors`: pip "
                      "install safetensors") from e
  return st


# -- config.json ---------------------------------------------------------------


def config_to_hf(config: LlamaConfig) -> dict[str, Any]:
  """A `config.json` dict for `transformers.LlamaConfig`."""
  c = config
  dtype = jnp.dtype(c.param_dtype).name
  return {
      "architectures": ["LlamaForCausalLM"],
      "model_type": "llama",
      "vocab_size": c.vocab_size,
      "hidden_size": c.dim,
      "intermediate_size": c.hidden_dim,
      "num_hidden_layers": c.n_layers,
      "num_attention_heads": c.n_heads,
      "num_key_value_heads": c.n_kv_heads,
      "head_dim": c.head_dim,
      "max_position_embeddings": c.max_seq_len,
      "rms_norm_eps": c.norm_eps,
      "rope_theta": c.rope_theta,
      "rope_parameters": {"rope_type": "default", "rope_theta": c.rope_theta},
      "tie_word_embeddings": c.tie_embeddings,
      "hidden_act": "silu",
      "attention_bias": False,
      "mlp_bias": False,
      "attention_dropout": 0.0,
      "initializer_range": 0.02,
      "torch_dtype": dtype,
      "dtype": dtype,
  }


def config_from_hf(hf: Mapping[str, Any], **overrides: Any) -> LlamaConfig:
  """A `LlamaConfig` from a Hugging Face LLaMA `config.json` dict.

  Raises ValueError for other architectures and for features `Llama` does
  not implement (biases, other activations, RoPE scaling).
  """
  model_type = hf.get("model_type", "llama")
  if model_type != "llama":
    hint = (" For GPT-2 checkpoints use from_gpt2_names."
            if model_type == "gpt2" else "")
    raise ValueError(f"config.json has model_type {model_type!r}; only "
                     f"'llama' maps onto jaxsparse.lm.Llama.{hint}")
  act = hf.get("hidden_act", "silu")
  if act != "silu":
    raise ValueError(f"hidden_act {act!r} is not supported (only 'silu').")
  for key in ("attention_bias", "mlp_bias"):
    if hf.get(key, False):
      raise ValueError(f"{key}=True is not supported (Llama has no biases).")
  rope = hf.get("rope_parameters") or {}
  scaling = hf.get("rope_scaling") or {}
  rope_type = scaling.get("rope_type", scaling.get("type", rope.get(
      "rope_type", "default")))
  if rope_type != "default":
    raise ValueError(f"RoPE scaling {rope_type!r} is not supported.")
  theta = hf.get("rope_theta", rope.get("rope_theta", 10000.0))
  heads = hf["num_attention_heads"]
  head_dim = hf.get("head_dim") or hf["hidden_size"] // heads
  kwargs = dict(
      vocab_size=hf["vocab_size"], dim=hf["hidden_size"],
      n_layers=hf["num_hidden_layers"], n_heads=heads,
      n_kv_heads=hf.get("num_key_value_heads") or heads, head_dim=head_dim,
      hidden_dim=hf["intermediate_size"],
      max_seq_len=hf.get("max_position_embeddings", 2048),
      rope_theta=float(theta), norm_eps=float(hf.get("rms_norm_eps", 1e-6)),
      tie_embeddings=bool(hf.get("tie_word_embeddings", False)))
  kwargs.update(overrides)
  return LlamaConfig(**kwargs)


# -- Names ---------------------------------------------------------------------


def hf_name(path: tuple[Any, ...]) -> tuple[str, bool]:
  """(Hugging Face name, transpose?) of a `Llama` parameter path."""
  names = [str(p) for p in path]
  transpose = names[-1] == "kernel"
  names[-1] = "weight"
  prefix = "" if names[0] == "lm_head" else "model."
  return prefix + ".".join(names), transpose


def _weights(model: Llama) -> dict[tuple[Any, ...], Any]:
  """Parameter path -> array, dense kernels for block-sparse layers."""
  out = {}
  for path, node in nnx.iter_graph(model):
    if isinstance(node, nnx.Linear):
      out[(*path, "kernel")] = node.kernel.get_value()
    elif hasattr(node, "to_dense") and hasattr(node, "blocks"):
      out[(*path, "kernel")] = node.to_dense()  # BlockSparseDense.
    elif isinstance(node, nnx.Embed):
      out[(*path, "embedding")] = node.embedding.get_value()
    elif isinstance(node, RMSNorm):
      out[(*path, "weight")] = node.weight.get_value()
  return out


def save_hf(model: Llama, path: str, *, naming: str = "llama") -> None:
  """Writes `path/model.safetensors` and `path/config.json` (HF LLaMA).

  Tensors keep the parameters' dtype; metadata `{"format": "pt"}` as
  `save_pretrained` writes. Only `naming="llama"`: GPT-2 does not share
  this architecture (see `to_gpt2_names` for GPT-2 key maps).
  """
  if naming != "llama":
    raise ValueError(
        f"naming={naming!r}: only 'llama' is supported. GPT-2 checkpoints "
        "have LayerNorm biases, GELU, learned positions and a fused QKV, "
        "which Llama lacks; use to_gpt2_names/from_gpt2_names to map GPT-2 "
        "keys for a plain params dict.")
  st = _safetensors()
  tensors = {}
  for p, w in _weights(model).items():
    name, transpose = hf_name(p)
    w = np.asarray(jax.device_get(w))
    tensors[name] = np.ascontiguousarray(w.T if transpose else w)
  cfg = model.config
  expected = 9 * cfg.n_layers + 2 + (0 if cfg.tie_embeddings else 1)
  if len(tensors) != expected:
    raise ValueError(f"found {len(tensors)} tensors, expected {expected}: "
                     "the model has layers save_hf cannot write.")
  os.makedirs(path, exist_ok=True)
  st.save_file(tensors, os.path.join(path, "model.safetensors"),
               metadata={"format": "pt"})
  with open(os.path.join(path, "config.json"), "w") as f:
    json.dump(config_to_hf(model.config), f, indent=2)


def read_safetensors(path: str) -> dict[str, np.ndarray]:
  """All tensors of a `.safetensors` file or of a checkpoint directory."""
  st = _safetensors()
  if os.path.isdir(path):
    index = os.path.join(path, _INDEX)
    if os.path.exists(index):
      with open(index) as f:
        files = sorted(set(json.load(f)["weight_map"].values()))
      files = [os.path.join(path, f) for f in files]
    else:
      files = sorted(glob.glob(os.path.join(path, "*.safetensors")))
    if not files:
      raise FileNotFoundError(f"no .safetensors files in {path}.")
  else:
    files = [path]
  tensors = {}
  for f in files:
    tensors.update(st.load_file(f))
  return tensors


def load_hf(path: str, config: LlamaConfig | None = None, *,
            dtype: Any = None, param_dtype: Any = None) -> Llama:
  """A `Llama` from a Hugging Face LLaMA checkpoint (safetensors).

  Args:
    path: a directory (`config.json` and `model.safetensors`, or shards
      listed in `model.safetensors.index.json`) or a `.safetensors` file.
    config: overrides `path/config.json`.
    dtype, param_dtype: compute and storage dtypes (default: the config's,
      float32 when read from `config.json`).

  Raises:
    KeyError: a parameter is missing, or the checkpoint has unknown names.
    ValueError: a tensor's shape does not match the config.
  """
  if config is None:
    root = path if os.path.isdir(path) else os.path.dirname(path)
    with open(os.path.join(root, "config.json")) as f:
      config = config_from_hf(json.load(f))
  over = {k: v for k, v in (("dtype", dtype), ("param_dtype", param_dtype))
          if v is not None}
  config = dataclasses.replace(config, **over)
  tensors = read_safetensors(path)
  abstract = nnx.eval_shape(lambda: Llama(config, rngs=nnx.Rngs(0)))
  graphdef, state = nnx.split(abstract)
  used = set()
  for p, var in nnx.to_flat_state(state):
    name, transpose = hf_name(p)
    if name not in tensors:
      raise KeyError(f"checkpoint {path} has no tensor {name!r}.")
    w = tensors[name]
    w = w.T if transpose else w
    if tuple(w.shape) != tuple(var.shape):
      raise ValueError(f"{name}: checkpoint shape {w.shape} (as "
                       f"{'kernel' if transpose else 'stored'}) does not "
                       f"match the model's {tuple(var.shape)}.")
    var.set_value(jnp.asarray(w, config.param_dtype))
    used.add(name)
  extra = [n for n in tensors if n not in used
           and not n.endswith(_IGNORED_SUFFIXES)
           and not (n == "lm_head.weight" and config.tie_embeddings)]
  if extra:
    raise KeyError(f"checkpoint {path} has tensors the model does not use: "
                   f"{sorted(extra)[:8]}")
  return nnx.merge(graphdef, state)


# -- GPT-2 key maps ------------------------------------------------------------

_GPT2_BUFFERS = ("bias", "masked_bias")  # attn.bias: a causal-mask buffer.
_GPT2_LINEAR = ("c_attn", "c_proj", "c_fc")
_GPT2_NORMS = ("ln_1", "ln_2", "ln_f")


def from_gpt2_names(tensors: Mapping[str, Any]) -> dict[str, Any]:
  """GPT-2 checkpoint tensors -> nested params in Flax naming.

  `wte`/`wpe` -> `{"embedding"}`; LayerNorms -> `{"scale", "bias"}`;
  Conv1D layers (`c_attn`, `c_proj`, `c_fc`, already (in, out)) ->
  `{"kernel", "bias"}`; `h.{i}` -> the list `"h"`; `lm_head.weight`
  (vocab, dim) -> `lm_head/kernel` (dim, vocab). A `transformer.` prefix
  and the `attn.bias`/`attn.masked_bias` mask buffers are dropped. Note
  that `jaxsparse.is_kernel` also selects the 2-D `wte` and `wpe`.
  """
  out: dict[str, Any] = {}
  for name, w in tensors.items():
    parts = name.removeprefix("transformer.").split(".")
    if len(parts) >= 2 and parts[-2] == "attn" and parts[-1] in _GPT2_BUFFERS:
      continue
    kind = parts[-2] if len(parts) >= 2 else ""
    leaf = parts[-1]
    if kind in ("wte", "wpe"):
      leaf = "embedding"
    elif kind in _GPT2_NORMS:
      leaf = {"weight": "scale"}.get(leaf, leaf)
    elif kind in _GPT2_LINEAR:
      leaf = {"weight": "kernel"}.get(leaf, leaf)
    elif kind == "lm_head":
      leaf, w = "kernel", np.asarray(w).T
    else:
      raise KeyError(f"unknown GPT-2 tensor name {name!r}.")
    node: Any = out
    keys = [*parts[:-1], leaf]
    for i, k in enumerate(keys[:-1]):
      if k == "h":
        node = node.setdefault("h", [])
        idx = int(keys[i + 1])
        while len(node) <= idx:
          node.append({})
        continue
      if isinstance(node, list):
        node = node[int(k)]
        continue
      node = node.setdefault(k, {})
    node[keys[-1]] = w
  return out


def to_gpt2_names(params: Mapping[str, Any], *,
                  prefix: str = "") -> dict[str, np.ndarray]:
  """The inverse of `from_gpt2_names`: flat GPT-2 names -> arrays."""
  out = {}
  for path, w in jax.tree.flatten_with_path(dict(params))[0]:
    parts = [str(getattr(k, "key", getattr(k, "idx", k))) for k in path]
    kind, leaf = parts[-2], parts[-1]
    w = np.asarray(jax.device_get(w))
    if kind == "lm_head":
      out["lm_head.weight"] = np.ascontiguousarray(w.T)
      continue
    leaf = {"embedding": "weight", "scale": "weight",
            "kernel": "weight"}.get(leaf, leaf)
    out[prefix + ".".join([*parts[:-1], leaf])] = w
  return out
