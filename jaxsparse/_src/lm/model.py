"""A decoder-only language model in the LLaMA layout (Flax NNX).

Pre-norm blocks `x + Attn(RMSNorm(x))`, `x + MLP(RMSNorm(x))`, rotary
position embeddings (the Hugging Face "rotate_half" convention: the two
halves of each head are rotated together, not interleaved pairs), grouped
query attention and a SwiGLU MLP `down(silu(gate(x)) * up(x))`.

Attribute names are those of Hugging Face's `LlamaForCausalLM` (without its
`model.` prefix), so a parameter path maps mechanically to a checkpoint
name: `layers/3/self_attn/q_proj/kernel` is `model.layers.3.self_attn.
q_proj.weight` transposed (kernels here are (in, out), as in `nnx.Linear`).

Every parameter carries logical axis names (`nnx.with_partitioning`, read
back as the `out_sharding` metadata of each `nnx.Param`): "vocab", "embed",
"q_heads" (the flattened heads x head_dim of queries and of the attention
output), "kv_heads" (the same for keys and values), "mlp" and "norm". They
are annotations only (`eager_sharding=False`): place the model on a mesh
with `nnx.get_partition_spec` under logical axis rules.

References:
  Touvron et al., 2023, LLaMA: open and efficient foundation language
  models; Llama 2: open foundation and fine-tuned chat models.
  Su et al., 2021, RoFormer: enhanced transformer with rotary position
  embedding. Ainslie et al., 2023, GQA. Shazeer, 2020, GLU variants
  improve Transformer (SwiGLU). Zhang & Sennrich, 2019, Root mean square
  layer normalization.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

Array = jax.Array

LINEAR_NAMES: tuple[str, ...] = (
    "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
    "self_attn.o_proj", "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj",
)
"""The 7 linear layers of a `Block`, by Hugging Face name (block-relative)."""

_INIT_STD = 0.02  # Hugging Face's `initializer_range` for LLaMA.


@dataclasses.dataclass(frozen=True, kw_only=True)
class LlamaConfig:
  """Shapes and constants of a `Llama` model (keyword-only fields).

  `n_kv_heads` defaults to `n_heads` (no GQA), `head_dim` to
  `dim // n_heads`. `dtype` is the compute dtype, `param_dtype` the storage
  dtype of parameters; logits are always float32.
  """

  vocab_size: int
  dim: int
  n_layers: int
  n_heads: int
  hidden_dim: int
  max_seq_len: int
  n_kv_heads: int | None = None
  head_dim: int | None = None
  rope_theta: float = 10000.0
  norm_eps: float = 1e-5
  tie_embeddings: bool = False
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  def __post_init__(self):
    if self.n_kv_heads is None:
      object.__setattr__(self, "n_kv_heads", self.n_heads)
    if self.head_dim is None:
      if self.dim % self.n_heads:
        raise ValueError(f"dim {self.dim} is not divisible by n_heads "
                         f"{self.n_heads}; pass head_dim.")
      object.__setattr__(self, "head_dim", self.dim // self.n_heads)
    if self.n_heads % self.n_kv_heads:
      raise ValueError(f"n_heads {self.n_heads} is not a multiple of "
                       f"n_kv_heads {self.n_kv_heads}.")
    if self.head_dim % 2:
      raise ValueError(f"head_dim must be even for RoPE, got "
                       f"{self.head_dim}.")


def tiny(**overrides: Any) -> LlamaConfig:
  """A byte-level model for CPU experiments (about 0.46 M parameters)."""
  return dataclasses.replace(
      LlamaConfig(vocab_size=256, dim=128, n_layers=2, n_heads=4,
                  n_kv_heads=2, hidden_dim=384, max_seq_len=256), **overrides)


def llama_7b(**overrides: Any) -> LlamaConfig:
  """The shapes of Hugging Face's Llama-2-7B (`meta-llama/Llama-2-7b-hf`)."""
  return dataclasses.replace(
      LlamaConfig(vocab_size=32000, dim=4096, n_layers=32, n_heads=32,
                  n_kv_heads=32, hidden_dim=11008, max_seq_len=4096,
                  norm_eps=1e-5), **overrides)


def _init(axes: tuple[str, ...]):
  return nnx.with_partitioning(nnx.initializers.normal(_INIT_STD), axes,
                               eager_sharding=False)


def _linear(cfg: LlamaConfig, n_in: int, n_out: int, axes: tuple[str, str],
            rngs: nnx.Rngs) -> nnx.Linear:
  return nnx.Linear(n_in, n_out, use_bias=False, dtype=cfg.dtype,
                    param_dtype=cfg.param_dtype, kernel_init=_init(axes),
                    rngs=rngs)


class KVCache(NamedTuple):
  """One layer's key/value cache for decoding."""

  k: Array  # (B, S, n_kv_heads, head_dim), rotated keys of slots < index.
  v: Array  # (B, S, n_kv_heads, head_dim)
  index: Array  # shape=(), int32: number of filled slots.


Cache = tuple[KVCache, ...]


def init_cache(model_or_config: Llama | LlamaConfig, batch: int,
               max_len: int) -> Cache:
  """An empty cache (one `KVCache` per layer) for `max_len` tokens.

  `max_len` must cover the prompt and every decoded token: writes past the
  end are not checked (under `jit` they would be clamped).
  """
  cfg = getattr(model_or_config, "config", model_or_config)
  shape = (batch, max_len, cfg.n_kv_heads, cfg.head_dim)
  z = jnp.zeros(shape, cfg.dtype)
  return tuple(KVCache(z, z, jnp.zeros((), jnp.int32))
               for _ in range(cfg.n_layers))


def rope(positions: Array, head_dim: int,
         theta: float) -> tuple[Array, Array]:
  """cos, sin of shape positions.shape + (head_dim,) (halves repeated)."""
  inv_freq = 1.0 / (theta ** (jnp.arange(0, head_dim, 2, dtype=jnp.float32)
                              / head_dim))
  freqs = jnp.asarray(positions, jnp.float32)[..., None] * inv_freq
  emb = jnp.concatenate([freqs, freqs], axis=-1)
  return jnp.cos(emb), jnp.sin(emb)


def _rotate_half(x: Array) -> Array:
  x1, x2 = jnp.split(x, 2, axis=-1)
  return jnp.concatenate([-x2, x1], axis=-1)


def apply_rope(x: Array, cos: Array, sin: Array) -> Array:
  """Rotates x (B, T, heads, head_dim) by cos, sin of shape (B|1, T, hd)."""
  cos = cos[:, :, None, :].astype(x.dtype)
  sin = sin[:, :, None, :].astype(x.dtype)
  return x * cos + _rotate_half(x) * sin


class RMSNorm(nnx.Module):
  """`weight * x / sqrt(mean(x^2) + eps)`, normalized in float32."""

  def __init__(self, dim: int, *, eps: float = 1e-5, dtype: Any = None,
               param_dtype: Any = jnp.float32,
               rngs: nnx.Rngs | None = None):
    del rngs  # deterministic init; accepted for a uniform signature.
    self.eps = eps
    self.dtype = dtype
    self.weight = nnx.Param(jnp.ones((dim,), param_dtype),
                            out_sharding=("norm",), eager_sharding=False)

  def __call__(self, x: Array) -> Array:
    dt = self.dtype or x.dtype
    x32 = jnp.asarray(x, jnp.float32)
    y = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, -1, keepdims=True) + self.eps)
    return self.weight.get_value().astype(dt) * y.astype(dt)


class Attention(nnx.Module):
  """Causal grouped-query self-attention with rotary embeddings.

  Query head h reads key/value head h // (n_heads // n_kv_heads), as
  Hugging Face's `repeat_kv`.
  """

  def __init__(self, cfg: LlamaConfig, *, rngs: nnx.Rngs):
    self.n_heads = cfg.n_heads
    self.n_kv_heads = cfg.n_kv_heads
    self.head_dim = cfg.head_dim
    self.rope_theta = cfg.rope_theta
    q, kv = cfg.n_heads * cfg.head_dim, cfg.n_kv_heads * cfg.head_dim
    self.q_proj = _linear(cfg, cfg.dim, q, ("embed", "q_heads"), rngs)
    self.k_proj = _linear(cfg, cfg.dim, kv, ("embed", "kv_heads"), rngs)
    self.v_proj = _linear(cfg, cfg.dim, kv, ("embed", "kv_heads"), rngs)
    self.o_proj = _linear(cfg, q, cfg.dim, ("q_heads", "embed"), rngs)

  def __call__(self, x: Array, positions: Array, *,
               cache: KVCache | None = None,
               record: dict[str, Array] | None = None):
    """Returns the output, or (output, new cache) when `cache` is given."""
    b, t, _ = x.shape
    hd, g = self.head_dim, self.n_kv_heads
    rep = self.n_heads // g
    if record is not None:
      for name in ("q_proj", "k_proj", "v_proj"):
        record[name] = x
    q = self.q_proj(x).reshape(b, t, self.n_heads, hd)
    k = self.k_proj(x).reshape(b, t, g, hd)
    v = self.v_proj(x).reshape(b, t, g, hd)
    positions = jnp.asarray(positions)
    if positions.ndim == 1:
      positions = positions[None, :]
    cos, sin = rope(positions, hd, self.rope_theta)
    q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
    q_slot = jnp.arange(t)
    if cache is not None:
      start = cache.index
      k = jax.lax.dynamic_update_slice(cache.k, k.astype(cache.k.dtype),
                                       (0, start, 0, 0))
      v = jax.lax.dynamic_update_slice(cache.v, v.astype(cache.v.dtype),
                                       (0, start, 0, 0))
      new_cache = KVCache(k, v, start + t)
      q_slot = q_slot + start
    causal = jnp.arange(k.shape[1])[None, :] <= q_slot[:, None]  # (T, S)
    q = q.reshape(b, t, g, rep, hd)
    scores = jnp.einsum("btgrd,bsgd->bgrts", q, k.astype(q.dtype))
    scores = scores.astype(jnp.float32) * (hd ** -0.5)
    scores = jnp.where(causal, scores, jnp.finfo(jnp.float32).min)
    probs = jax.nn.softmax(scores, axis=-1).astype(v.dtype)
    out = jnp.einsum("bgrts,bsgd->btgrd", probs, v)
    out = out.reshape(b, t, self.n_heads * hd).astype(x.dtype)
    if record is not None:
      record["o_proj"] = out
    out = self.o_proj(out)
    return out if cache is None else (out, new_cache)


class MLP(nnx.Module):
  """SwiGLU: `down_proj(silu(gate_proj(x)) * up_proj(x))`."""

  def __init__(self, cfg: LlamaConfig, *, rngs: nnx.Rngs):
    self.gate_proj = _linear(cfg, cfg.dim, cfg.hidden_dim, ("embed", "mlp"),
                             rngs)
    self.up_proj = _linear(cfg, cfg.dim, cfg.hidden_dim, ("embed", "mlp"),
                           rngs)
    self.down_proj = _linear(cfg, cfg.hidden_dim, cfg.dim, ("mlp", "embed"),
                             rngs)

  def __call__(self, x: Array, *,
               record: dict[str, Array] | None = None) -> Array:
    h = nnx.silu(self.gate_proj(x)) * self.up_proj(x)
    if record is not None:
      record["gate_proj"] = x
      record["up_proj"] = x
      record["down_proj"] = h
    return self.down_proj(h)


class Block(nnx.Module):
  """Pre-norm decoder block: `x + attn(norm(x))`, then `x + mlp(norm(x))`."""

  def __init__(self, cfg: LlamaConfig, *, rngs: nnx.Rngs):
    norm = functools.partial(RMSNorm, cfg.dim, eps=cfg.norm_eps,
                             dtype=cfg.dtype, param_dtype=cfg.param_dtype)
    self.input_layernorm = norm()
    self.self_attn = Attention(cfg, rngs=rngs)
    self.post_attention_layernorm = norm()
    self.mlp = MLP(cfg, rngs=rngs)

  def __call__(self, x: Array, positions: Array, *,
               cache: KVCache | None = None,
               record: dict[str, Array] | None = None):
    """The block's output, or (output, new cache) when `cache` is given.

    If `record` is a dict, the input of each linear layer is stored in it
    under its `LINEAR_NAMES` key, shape (B, T, in_features).
    """
    sub_a = None if record is None else {}
    sub_m = None if record is None else {}
    a = self.self_attn(self.input_layernorm(x), positions, cache=cache,
                       record=sub_a)
    if cache is not None:
      a, cache = a
    x = x + a
    x = x + self.mlp(self.post_attention_layernorm(x), record=sub_m)
    if record is not None:
      record.update({f"self_attn.{k}": v for k, v in sub_a.items()})
      record.update({f"mlp.{k}": v for k, v in sub_m.items()})
    return x if cache is None else (x, cache)


class Llama(nnx.Module):
  """A LLaMA decoder: `model(tokens) -> logits` (B, T, vocab), float32.

  `model.head(layers[-1](... layers[0](model.embed(tokens), pos) ...))`
  equals `model(tokens)`; with `cache=` (from `init_cache`) the call
  returns `(logits, new_cache)` and appends the tokens to the cache.
  """

  def __init__(self, config: LlamaConfig, *, rngs: nnx.Rngs):
    cfg = self.config = config
    self.embed_tokens = nnx.Embed(
        cfg.vocab_size, cfg.dim, dtype=cfg.dtype,
        param_dtype=cfg.param_dtype,
        embedding_init=_init(("vocab", "embed")), rngs=rngs)
    self.layers = nnx.List([Block(cfg, rngs=rngs)
                            for _ in range(cfg.n_layers)])
    self.norm = RMSNorm(cfg.dim, eps=cfg.norm_eps, dtype=cfg.dtype,
                        param_dtype=cfg.param_dtype)
    if cfg.tie_embeddings:
      self.lm_head = None
    else:
      self.lm_head = _linear(cfg, cfg.dim, cfg.vocab_size, ("embed", "vocab"),
                             rngs)

  def embed(self, tokens: Array) -> Array:
    """Token embeddings (B, T, dim): the lookup only."""
    return self.embed_tokens(jnp.asarray(tokens))

  def head(self, h: Array) -> Array:
    """Final RMSNorm and output projection (or the tied embedding)."""
    h = self.norm(h)
    if self.lm_head is None:
      logits = self.embed_tokens.attend(h)
    else:
      logits = self.lm_head(h)
    return logits.astype(jnp.float32)

  def __call__(self, tokens: Array, *, positions: Array | None = None,
               cache: Cache | None = None):
    """Logits (B, T, vocab); (logits, new cache) when `cache` is given.

    `positions` (T,) or (B, T) default to `arange(T)`, offset by the cache's
    fill when decoding.
    """
    tokens = jnp.asarray(tokens)
    t = tokens.shape[1]
    if positions is None:
      start = 0 if cache is None else cache[0].index
      positions = start + jnp.arange(t)
    h = self.embed(tokens)
    new_cache = []
    for i, layer in enumerate(self.layers):
      if cache is None:
        h = layer(h, positions)
      else:
        h, c = layer(h, positions, cache=cache[i])
        new_cache.append(c)
    logits = self.head(h)
    return logits if cache is None else (logits, tuple(new_cache))


def _key_name(k: Any) -> str:
  for attr in ("key", "name", "idx"):
    if hasattr(k, attr):
      return str(getattr(k, attr))
  return str(k)


def prunable(path: Sequence[Any], leaf: Any) -> bool:
  """Filter for `jaxsparse.masks`/`prune`: the 7 block linear kernels only.

  Embeddings, `lm_head` and norms stay dense. `path` is a key path of
  `nnx.state(model, nnx.Param)` (or a tuple of names).
  """
  del leaf
  parts = [_key_name(k) for k in path]
  if parts and parts[-1] == "value":  # a path into an nnx.Variable.
    parts = parts[:-1]
  return (len(parts) >= 5 and parts[-1] == "kernel"
          and ".".join(parts[-3:-1]) in LINEAR_NAMES
          and parts[-5] == "layers")


@functools.partial(jax.jit, static_argnums=(0, 3))
def _generate(graphdef: Any, state: Any, prompt: Array,
              num_steps: int) -> Array:
  model = nnx.merge(graphdef, state)
  b, p = prompt.shape
  cache = init_cache(model.config, b, p + num_steps)
  logits, cache = model(prompt, cache=cache)
  first = jnp.argmax(logits[:, -1], axis=-1).astype(prompt.dtype)

  def step(carry, _):
    tok, cache = carry
    logits, cache = model(tok[:, None], cache=cache)
    nxt = jnp.argmax(logits[:, -1], axis=-1).astype(prompt.dtype)
    return (nxt, cache), nxt

  _, rest = jax.lax.scan(step, (first, cache), None, length=num_steps - 1)
  return jnp.concatenate([prompt, first[:, None], rest.T], axis=1)


def generate(model: Llama, prompt_tokens: Array, num_steps: int) -> Array:
  """Greedy decoding: (B, P) int prompt -> (B, P + num_steps) tokens.

  One jitted program (prefill, then a `lax.scan` over cached steps),
  compiled once per model structure, prompt shape and `num_steps`.
  """
  prompt = jnp.asarray(prompt_tokens, jnp.int32)
  if prompt.ndim != 2:
    raise ValueError(f"prompt_tokens must be (B, P), got {prompt.shape}.")
  if num_steps <= 0:
    return prompt
  graphdef, state = nnx.split(model)
  return _generate(graphdef, state, prompt, int(num_steps))
