"""Tests for jaxsparse.lm: the LLaMA decoder, text utilities, HF weights."""

from __future__ import annotations

import dataclasses
import json
import math
import os
from pydoc_data.topics import topics as _TOPICS

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import safetensors.numpy as stnp
import tensorflow_datasets as tfds
from flax import nnx

import jaxsparse
from jaxsparse import lm
from jaxsparse.nn import BlockSparseDense, to_block_sparse

# Small, but every feature on: GQA (4 query heads on 2 kv heads), a SwiGLU
# width different from dim, two layers.
CFG = lm.LlamaConfig(vocab_size=256, dim=64, n_layers=2, n_heads=4,
                     n_kv_heads=2, hidden_dim=128, max_seq_len=64)
B, T = 2, 16
BLOCK = (16, 16)
# For the (slower) sparse tests: one layer, every kernel 64x64, so that
# block-sparse conversion compiles few distinct programs.
CFG1 = dataclasses.replace(CFG, n_layers=1, n_kv_heads=4, hidden_dim=64)

_fwd_jit = nnx.jit(lambda m, t, p: m(t, positions=p))


def _fwd(model, tokens, positions=None):
  """One jitted forward pass (compiled once per model structure, shape)."""
  if positions is None:
    positions = jnp.arange(tokens.shape[1])
  return _fwd_jit(model, tokens, positions)


def _new(cfg: lm.LlamaConfig, seed: int) -> lm.Llama:
  """A model with `_randomize`d weights (no jitted init to compile)."""
  abstract = nnx.eval_shape(lambda: lm.Llama(cfg, rngs=nnx.Rngs(0)))
  return _randomize(abstract, seed)


def _randomize(model: nnx.Module, seed: int) -> nnx.Module:
  """O(1) activations: kernels N(0, 1/fan_in), embeddings N(0, 1), norm
  weights 1 + N(0, 0.2^2) (the init's 0.02 std makes attention uniform)."""
  rng = np.random.default_rng(seed)
  state = nnx.state(model, nnx.Param)
  for path, var in nnx.to_flat_state(state):
    shape = var.shape
    if path[-1] == "kernel":
      w = rng.normal(size=shape) / math.sqrt(shape[0])
    elif path[-1] == "embedding":
      w = rng.normal(size=shape)
    else:
      w = 1.0 + 0.2 * rng.normal(size=shape)
    var.set_value(jnp.asarray(w, jnp.float32))
  nnx.update(model, state)
  return model


@pytest.fixture(scope="module")
def model():
  return _new(CFG, 0)


@pytest.fixture(scope="module")
def tokens():
  return jnp.asarray(
      np.random.default_rng(1).integers(0, 256, (B, T)), jnp.int32)


@pytest.fixture(scope="module")
def logits(model, tokens):
  return np.asarray(_fwd(model, tokens))


@pytest.fixture(scope="module")
def model1():
  return _new(CFG1, 2)


@pytest.fixture(scope="module")
def block_masks(model1):
  state = nnx.state(model1, nnx.Param)
  fn = jax.jit(lambda s: jaxsparse.masks(
      s, 0.5, filter_fn=lm.prunable,
      structure=jaxsparse.structures.block(*BLOCK)))
  return fn(state)


@pytest.fixture(scope="module")
def masked(model1, block_masks):
  m = nnx.clone(model1)
  state = nnx.state(m, nnx.Param)
  nnx.update(m, jaxsparse.apply_masks(state, block_masks))
  return m


@pytest.fixture(scope="module")
def sparse(masked, block_masks):
  return to_block_sparse(nnx.clone(masked), block_masks, BLOCK)


@pytest.fixture(scope="module")
def ckpt(model, tmp_path_factory):
  path = str(tmp_path_factory.mktemp("hf"))
  lm.save_hf(model, path)
  return path


def _flat(tree) -> dict[str, object]:
  return {"/".join(str(p) for p in path): v
          for path, v in nnx.to_flat_state(tree)}


# -- An independent NumPy forward pass from Hugging Face tensors -------------


def _np_forward(t: dict[str, np.ndarray], cfg: lm.LlamaConfig,
                tokens: np.ndarray) -> np.ndarray:
  """LLaMA logits in float64 from HF-named (out, in) tensors."""
  t = {k: np.asarray(v, np.float64) for k, v in t.items()}
  h_, g_, d = cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
  b, n = tokens.shape

  def rms(x, w):
    return w * x / np.sqrt(np.mean(x * x, -1, keepdims=True) + cfg.norm_eps)

  inv = 1.0 / cfg.rope_theta ** (np.arange(0, d, 2) / d)
  ang = np.arange(n)[:, None] * inv[None, :]
  cos = np.cos(np.concatenate([ang, ang], -1))[None, :, None, :]
  sin = np.sin(np.concatenate([ang, ang], -1))[None, :, None, :]

  def rot(x):  # rotate_half: (x1, x2) -> (-x2, x1).
    half = np.concatenate([-x[..., d // 2:], x[..., :d // 2]], -1)
    return x * cos + half * sin

  h = t["model.embed_tokens.weight"][tokens]
  causal = np.tril(np.ones((n, n), bool))
  for i in range(cfg.n_layers):
    p = f"model.layers.{i}."
    x = rms(h, t[p + "input_layernorm.weight"])
    q = rot((x @ t[p + "self_attn.q_proj.weight"].T).reshape(b, n, h_, d))
    k = rot((x @ t[p + "self_attn.k_proj.weight"].T).reshape(b, n, g_, d))
    v = (x @ t[p + "self_attn.v_proj.weight"].T).reshape(b, n, g_, d)
    k = np.repeat(k, h_ // g_, axis=2)  # HF repeat_kv: head j -> j // rep.
    v = np.repeat(v, h_ // g_, axis=2)
    s = np.einsum("bthd,bshd->bhts", q, k) / math.sqrt(d)
    s = np.where(causal, s, -np.inf)
    s = np.exp(s - s.max(-1, keepdims=True))
    s = s / s.sum(-1, keepdims=True)
    o = np.einsum("bhts,bshd->bthd", s, v).reshape(b, n, h_ * d)
    h = h + o @ t[p + "self_attn.o_proj.weight"].T
    x = rms(h, t[p + "post_attention_layernorm.weight"])
    gate = x @ t[p + "mlp.gate_proj.weight"].T
    up = x @ t[p + "mlp.up_proj.weight"].T
    h = h + (gate / (1.0 + np.exp(-gate)) * up) @ t[
        p + "mlp.down_proj.weight"].T
  h = rms(h, t["model.norm.weight"])
  head = t.get("lm_head.weight", t["model.embed_tokens.weight"])
  return h @ head.T


# -- Config and structure ----------------------------------------------------


def test_presets():
  t = lm.tiny()
  assert (t.vocab_size, t.dim, t.n_layers, t.n_heads, t.n_kv_heads,
          t.hidden_dim, t.max_seq_len) == (256, 128, 2, 4, 2, 384, 256)
  assert t.head_dim == 32 and not t.tie_embeddings
  s = lm.llama_7b()
  assert (s.vocab_size, s.dim, s.n_layers, s.n_heads, s.n_kv_heads,
          s.hidden_dim, s.max_seq_len) == (32000, 4096, 32, 32, 32, 11008,
                                           4096)
  counts = []
  for layers in (1, 2):  # 32 layers from the per-layer count (fast).
    abstract = nnx.eval_shape(lambda n=layers: lm.Llama(
        dataclasses.replace(s, n_layers=n), rngs=nnx.Rngs(0)))
    counts.append(sum(v.size for v in jax.tree.leaves(
        nnx.state(abstract, nnx.Param))))
  per_layer = counts[1] - counts[0]
  assert per_layer == 4 * 4096**2 + 3 * 4096 * 11008 + 2 * 4096
  assert counts[0] + 31 * per_layer == 6_738_415_616  # Llama-2-7B.
  assert lm.LlamaConfig(vocab_size=8, dim=8, n_layers=1, n_heads=2,
                        hidden_dim=8, max_seq_len=8).n_kv_heads == 2
  with pytest.raises(ValueError, match="multiple of n_kv_heads"):
    lm.LlamaConfig(vocab_size=8, dim=12, n_layers=1, n_heads=3, n_kv_heads=2,
                   hidden_dim=8, max_seq_len=8)


def test_hf_attribute_names_shapes_and_sharding(model):
  flat = _flat(nnx.state(model, nnx.Param))
  per_layer = {
      "input_layernorm/weight": ((64,), ("norm",)),
      "self_attn/q_proj/kernel": ((64, 64), ("embed", "q_heads")),
      "self_attn/k_proj/kernel": ((64, 32), ("embed", "kv_heads")),
      "self_attn/v_proj/kernel": ((64, 32), ("embed", "kv_heads")),
      "self_attn/o_proj/kernel": ((64, 64), ("q_heads", "embed")),
      "post_attention_layernorm/weight": ((64,), ("norm",)),
      "mlp/gate_proj/kernel": ((64, 128), ("embed", "mlp")),
      "mlp/up_proj/kernel": ((64, 128), ("embed", "mlp")),
      "mlp/down_proj/kernel": ((128, 64), ("mlp", "embed")),
  }
  want = {"embed_tokens/embedding": ((256, 64), ("vocab", "embed")),
          "norm/weight": ((64,), ("norm",)),
          "lm_head/kernel": ((64, 256), ("embed", "vocab"))}
  for i in range(2):
    want.update({f"layers/{i}/{k}": v for k, v in per_layer.items()})
  assert set(flat) == set(want)
  for name, var in flat.items():
    shape, axes = want[name]
    assert var.shape == shape, name
    sharding = var.get_metadata()["out_sharding"]
    assert isinstance(sharding, tuple) and sharding == axes, name
    assert len(sharding) == var.ndim
  assert isinstance(model.layers[1], lm.Block)
  assert isinstance(model.norm, lm.RMSNorm)
  assert isinstance(model.layers[0].self_attn.q_proj, nnx.Linear)
  assert model.layers[0].self_attn.q_proj.use_bias is False
  tied = nnx.eval_shape(lambda: lm.Llama(
      dataclasses.replace(CFG, tie_embeddings=True), rngs=nnx.Rngs(0)))
  assert tied.lm_head is None
  assert not any(k.startswith("lm_head") for k in
                 _flat(nnx.state(tied, nnx.Param)))


def test_prunable_selects_the_block_linear_kernels(model):
  state = nnx.state(model, nnx.Param)
  got = sorted(jaxsparse._src.core.masks.path_str(p)
               for p, v in jax.tree.flatten_with_path(
                   jaxsparse._src.core.masks.unwrap(state))[0]
               if lm.prunable(p, v))
  want = sorted(f"layers/{i}/{n.replace('.', '/')}/kernel"
                for i in range(2) for n in lm.LINEAR_NAMES)
  assert got == want and len(lm.LINEAR_NAMES) == 7
  assert lm.prunable(("layers", 0, "mlp", "up_proj", "kernel"), None)
  for path in [("lm_head", "kernel"), ("embed_tokens", "embedding"),
               ("layers", 0, "input_layernorm", "weight"),
               ("layers", 0, "mlp", "up_proj", "bias")]:
    assert not lm.prunable(path, None)


# -- Forward pass --------------------------------------------------------------


def test_forward_matches_numpy_and_pieces(model, tokens, logits, ckpt):
  assert logits.shape == (B, T, 256) and logits.dtype == np.float32
  ref = _np_forward(stnp.load_file(os.path.join(ckpt, "model.safetensors")),
                    CFG, np.asarray(tokens))
  assert np.abs(ref).max() > 1.0  # the check is not vacuous.
  np.testing.assert_allclose(logits, ref, atol=1e-4, rtol=1e-4)
  # Shifting every position leaves RoPE attention (relative) unchanged.
  shifted = _fwd(model, tokens, jnp.arange(T) + 7)
  np.testing.assert_allclose(shifted, logits, atol=1e-4)


def test_embed_blocks_head_and_record(model, tokens, logits):
  shared = []  # checked while tracing: one array serves q/k/v, gate/up.

  @nnx.jit
  def pieces(m, t):
    pos = jnp.arange(t.shape[1])
    h = m.embed(t)
    out = []
    for layer in m.layers:
      rec = {}
      out.append((h, rec))
      h = layer(h, pos, record=rec)
      shared.append(rec["self_attn.k_proj"] is rec["self_attn.q_proj"]
                    and rec["self_attn.v_proj"] is rec["self_attn.q_proj"]
                    and rec["mlp.up_proj"] is rec["mlp.gate_proj"])
    return m.embed(t), m.head(h), out, h

  emb, head, out, last = pieces(model, tokens)
  assert shared == [True, True]
  np.testing.assert_array_equal(
      emb, np.asarray(model.embed_tokens.embedding.get_value())[tokens])
  np.testing.assert_allclose(head, logits, atol=1e-5)
  ins = {"self_attn.o_proj": 64, "mlp.down_proj": 128}
  for _, rec in out:
    assert set(rec) == set(lm.LINEAR_NAMES)
    for name in lm.LINEAR_NAMES:
      assert rec[name].shape == (B, T, ins.get(name, 64)), name
  # The recorded inputs are exactly what the linear layers consumed: the
  # block's output rebuilt from them in NumPy (float64).
  w = {k: np.asarray(v.get_value(), np.float64)
       for k, v in _flat(nnx.state(model.layers[1], nnx.Param)).items()}
  x, rec = out[1]
  x = np.asarray(x, np.float64)
  r = {k: np.asarray(v, np.float64) for k, v in rec.items()}

  def rms(v, g):
    return g * v / np.sqrt(np.mean(v * v, -1, keepdims=True) + 1e-5)

  np.testing.assert_allclose(r["self_attn.q_proj"],
                             rms(x, w["input_layernorm/weight"]), atol=1e-4)
  mid = x + r["self_attn.o_proj"] @ w["self_attn/o_proj/kernel"]
  g = r["mlp.gate_proj"]
  np.testing.assert_allclose(
      g, rms(mid, w["post_attention_layernorm/weight"]), atol=1e-4)
  gate = g @ w["mlp/gate_proj/kernel"]
  np.testing.assert_allclose(
      r["mlp.down_proj"],
      gate / (1 + np.exp(-gate)) * (g @ w["mlp/up_proj/kernel"]), atol=1e-4)
  np.testing.assert_allclose(
      last, mid + r["mlp.down_proj"] @ w["mlp/down_proj/kernel"], atol=1e-4)


def test_kv_cache_decoding_matches_full_forward(model, tokens, logits):
  step = nnx.jit(lambda m, t, c: m(t, cache=c))
  cache = lm.init_cache(model, B, T + 4)
  assert len(cache) == 2 and cache[0].k.shape == (B, T + 4, 2, 16)
  out, cache = step(model, tokens[:, :5], cache)  # prefill 5 tokens ...
  got = [out]
  for i in range(5, T):  # ... then one at a time.
    out, cache = step(model, tokens[:, i:i + 1], cache)
    got.append(out)
  assert int(cache[0].index) == T and int(cache[1].index) == T
  np.testing.assert_allclose(np.concatenate(got, 1), logits, atol=1e-5)


def test_generate_is_greedy(model, tokens):
  p, n = 4, 6
  out = lm.generate(model, tokens[:, :p], n)
  assert out.shape == (B, p + n)
  np.testing.assert_array_equal(out[:, :p], tokens[:, :p])
  # Causality: one full forward pass scores every generated step.
  full = _fwd(model, out[:, :-1])
  np.testing.assert_array_equal(
      np.argmax(np.asarray(full)[:, p - 1:], -1), np.asarray(out[:, p:]))
  assert lm.generate(model, tokens[:, :p], 0).shape == (B, p)


# -- Masks and block-sparse layers ---------------------------------------------


def test_masks_prune_exactly_the_block_kernels(model1, block_masks, masked):
  flat_m = {jaxsparse._src.core.masks.path_str(p): m
            for p, m in jax.tree.flatten_with_path(
                jaxsparse._src.core.masks.unwrap(block_masks),
                is_leaf=lambda x: x is None)[0]}
  kept = {k for k, m in flat_m.items() if m is not None}
  assert len(kept) == 7 and all(lm.prunable(k.split("/"), None)
                                for k in kept)
  dense = _flat(nnx.state(model1, nnx.Param))
  pruned = _flat(nnx.state(masked, nnx.Param))
  for name, var in pruned.items():
    w, w0 = np.asarray(var.get_value()), np.asarray(dense[name].get_value())
    if name in kept:
      m = np.asarray(flat_m[name])
      assert m.mean() == 0.5, name
      assert np.all(w[~m] == 0.0) and np.array_equal(w[m], w0[m]), name
      # Block structure: the mask is constant on each 16x16 block.
      r, c = m.shape
      blocks = m.reshape(r // 16, 16, c // 16, 16)
      assert np.all(blocks == blocks[:, :1, :, :1]), name
    else:
      np.testing.assert_array_equal(w, w0, err_msg=name)


def test_to_block_sparse_matches_masked_dense(masked, sparse, tokens):
  want = np.asarray(_fwd(masked, tokens))
  for layer in sparse.layers:
    for name in lm.LINEAR_NAMES:
      mod, lin = name.split(".")
      node = getattr(getattr(layer, mod), lin)
      assert isinstance(node, BlockSparseDense), name
      assert float(node.weight().density()) == 0.5
  assert isinstance(sparse.lm_head, nnx.Linear)
  np.testing.assert_allclose(_fwd(sparse, tokens), want, atol=1e-4,
                             rtol=1e-4)


# -- Text ----------------------------------------------------------------------


def test_pydoc_topics():
  text = lm.pydoc_topics()
  assert len(text.encode()) > 300_000
  keys = sorted(_TOPICS)
  assert text.startswith(_TOPICS[keys[0]]) and text.endswith(
      _TOPICS[keys[-1]])
  at = 0
  for k in keys:  # every topic, in sorted key order.
    at = text.index(_TOPICS[k], at) + len(_TOPICS[k])
  assert at == len(text)
  assert lm.pydoc_topics() == text


def test_stdlib_source():
  cap = 200_000
  text = lm.stdlib_source(max_bytes=cap)
  assert cap - 4 <= len(text.encode()) <= cap
  headers = [ln[len("# file: "):] for ln in text.splitlines()
             if ln.startswith("# file: ")]
  assert len(headers) > 3 and headers == sorted(headers)
  assert all(h.endswith(".py") for h in headers)
  for h in headers:
    parts = h.split("/")
    assert not {"site-packages", "test", "tests", "idlelib"} & set(parts)
  assert lm.stdlib_source(max_bytes=cap) == text
  assert lm.stdlib_source(max_bytes=1000) == text[:1000]  # ASCII start.


def test_split():
  text = "naïve café " * 50 + "日本語のテキスト" * 20
  train, valid = lm.split(text)
  assert train + valid == text
  n = len(text.encode())
  assert int(0.9 * n) <= len(train.encode()) <= int(0.9 * n) + 3
  a = np.arange(1000)
  tr, va = lm.split(a)
  np.testing.assert_array_equal(tr, a[:900])
  np.testing.assert_array_equal(va, a[900:])
  with pytest.raises(ValueError):
    lm.split(a, 1.0)


def test_byte_tokenizer():
  tok = lm.ByteTokenizer()
  text = "héllo, wörld ✓"
  ids = tok.encode(text)
  assert ids.dtype == np.int32 and tok.vocab_size == 256
  assert list(ids) == list(text.encode())
  assert tok.decode(ids) == text


def test_train_bpe():
  text = lm.pydoc_topics()[:60_000]
  tok = lm.train_bpe(text, 400)
  assert 256 < tok.vocab_size <= 400
  ids = tok.encode(text)
  assert len(ids) < 0.8 * len(text.encode())  # merges compress.
  assert tok.decode(ids) == text
  sample = "Unicode ✓ — naïve"
  assert tok.decode(tok.encode(sample)) == sample
  # token_bytes counts exactly the UTF-8 bytes each token stands for.
  assert tok.token_bytes()[ids].sum() == len(text.encode())
  s_ids = tok.encode(sample)
  assert tok.token_bytes()[s_ids].sum() == len(sample.encode())


def test_lm_batches_and_eval_windows():
  toks = np.arange(500)
  a = list(lm.lm_batches(toks, 4, 10, seed=3, num_batches=3))
  b = list(lm.lm_batches(toks, 4, 10, seed=3, num_batches=3))
  c = next(lm.lm_batches(toks, 4, 10, seed=4))
  assert len(a) == 3
  for (x, y), (x2, y2) in zip(a, b, strict=True):
    np.testing.assert_array_equal(x, x2)
    np.testing.assert_array_equal(y, y2)
    assert x.shape == y.shape == (4, 10) and x.dtype == np.int32
    np.testing.assert_array_equal(x - x[:, :1], np.arange(10)[None].repeat(
        4, 0))  # contiguous windows ...
    np.testing.assert_array_equal(y, x + 1)  # ... and shifted targets.
    assert x.min() >= 0 and y.max() <= 499
  assert not np.array_equal(a[0][0], c[0])
  x, y = lm.eval_windows(toks, 7)
  assert x.shape == y.shape == (71, 7)  # (500 - 1) // 7
  np.testing.assert_array_equal(x.reshape(-1), toks[:497])
  np.testing.assert_array_equal(y.reshape(-1), toks[1:498])
  with pytest.raises(ValueError):
    lm.eval_windows(toks[:5], 7)


def test_evaluate_matches_numpy(model):
  toks = np.random.default_rng(5).integers(0, 256, 100).astype(np.int32)
  res = lm.evaluate(model, toks, T, 4)  # 6 windows: one padded batch.
  x, y = lm.eval_windows(toks, T)
  lg = np.concatenate([np.asarray(_fwd(model, x[i:i + 2]), np.float64)
                       for i in range(0, 6, 2)])
  lse = np.log(np.exp(lg - lg.max(-1, keepdims=True)).sum(-1)) + lg.max(-1)
  nll = lse - np.take_along_axis(lg, y[..., None], -1)[..., 0]
  assert res["tokens"] == 6 * T
  np.testing.assert_allclose(res["loss"], nll.mean(), rtol=1e-5)
  np.testing.assert_allclose(res["perplexity"], math.exp(nll.mean()),
                             rtol=1e-5)
  np.testing.assert_allclose(res["bits_per_byte"], nll.mean() / math.log(2),
                             rtol=1e-5)
  two = lm.evaluate(model, toks, T, 4, token_bytes=np.full(256, 2))
  np.testing.assert_allclose(two["bits_per_byte"],
                             res["bits_per_byte"] / 2, rtol=1e-6)


@pytest.mark.parametrize("name", ["lm1b", "c4/en"])
def test_tfds_text_through_mock_data(name, tmp_path):
  with tfds.testing.mock_data(num_examples=6):
    text = lm.tfds_text(name, "train", str(tmp_path))
    src = tfds.data_source(name, split="train", data_dir=str(tmp_path))
    raw = [src[i]["text"] for i in range(6)]
    three = lm.tfds_text(name, "train", str(tmp_path), max_examples=3)
    capped = lm.tfds_text(name, "train", str(tmp_path), max_bytes=10)
  raw = [r.decode() if isinstance(r, bytes) else str(r) for r in raw]
  assert text == "\n".join(raw) and len(text) > 6
  assert three == "\n".join(raw[:3])
  assert capped == text[:10]


# -- Hugging Face checkpoints --------------------------------------------------


def test_save_load_round_trip(model, ckpt, logits, tokens):
  with open(os.path.join(ckpt, "config.json")) as f:
    hf = json.load(f)
  assert hf["model_type"] == "llama"
  assert (hf["hidden_size"], hf["intermediate_size"],
          hf["num_attention_heads"], hf["num_key_value_heads"],
          hf["num_hidden_layers"], hf["vocab_size"],
          hf["tie_word_embeddings"]) == (64, 128, 4, 2, 2, 256, False)
  assert lm.config_from_hf(hf) == CFG
  t = stnp.load_file(os.path.join(ckpt, "model.safetensors"))
  assert len(t) == 2 * 9 + 3
  q = t["model.layers.1.self_attn.q_proj.weight"]
  np.testing.assert_array_equal(
      q, np.asarray(model.layers[1].self_attn.q_proj.kernel.get_value()).T)
  assert t["model.layers.0.mlp.down_proj.weight"].shape == (64, 128)
  assert t["lm_head.weight"].shape == (256, 64)
  loaded = lm.load_hf(ckpt)
  a, b = _flat(nnx.state(model, nnx.Param)), _flat(nnx.state(loaded,
                                                             nnx.Param))
  assert set(a) == set(b)
  for k in a:
    np.testing.assert_array_equal(a[k].get_value(), b[k].get_value())
    assert b[k].get_metadata()["out_sharding"] == a[k].get_metadata()[
        "out_sharding"]
  np.testing.assert_allclose(_fwd(loaded, tokens), logits, atol=1e-6)


def test_tied_embeddings_round_trip(tmp_path, tokens):
  cfg = dataclasses.replace(CFG, tie_embeddings=True, n_layers=1)
  model = _new(cfg, 1)
  lm.save_hf(model, str(tmp_path))
  t = stnp.load_file(str(tmp_path / "model.safetensors"))
  assert "lm_head.weight" not in t
  loaded = lm.load_hf(str(tmp_path))
  assert loaded.lm_head is None and loaded.config.tie_embeddings
  np.testing.assert_allclose(_fwd(loaded, tokens[:1, :6]),
                             _np_forward(t, cfg, np.asarray(tokens[:1, :6])),
                             atol=1e-4, rtol=1e-4)


def test_masks_survive_hf_round_trip(masked, sparse, tmp_path):
  for i, m in enumerate((masked, sparse)):  # block-sparse: dense kernels.
    lm.save_hf(m, str(tmp_path / str(i)))
    loaded = lm.load_hf(str(tmp_path / str(i)))
    a = _flat(nnx.state(masked, nnx.Param))
    b = _flat(nnx.state(loaded, nnx.Param))
    for k in a:
      wa, wb = np.asarray(a[k].get_value()), np.asarray(b[k].get_value())
      np.testing.assert_array_equal(wa, wb, err_msg=k)
      if lm.prunable(k.split("/"), None):
        assert (wb == 0).mean() == 0.5


def test_sharded_checkpoint_and_errors(ckpt, tmp_path):
  t = stnp.load_file(os.path.join(ckpt, "model.safetensors"))
  names = sorted(t)
  shards = {"model-00001-of-00002.safetensors": names[:10],
            "model-00002-of-00002.safetensors": names[10:]}
  for f, ns in shards.items():
    stnp.save_file({n: t[n] for n in ns}, str(tmp_path / f),
                   metadata={"format": "pt"})
  with open(tmp_path / "model.safetensors.index.json", "w") as f:
    json.dump({"metadata": {}, "weight_map": {
        n: f for f, ns in shards.items() for n in ns}}, f)
  with open(os.path.join(ckpt, "config.json")) as f:
    hf = json.load(f)
  with open(tmp_path / "config.json", "w") as f:
    json.dump(hf, f)
  loaded = lm.load_hf(str(tmp_path))
  np.testing.assert_array_equal(
      loaded.layers[1].mlp.up_proj.kernel.get_value(),
      t["model.layers.1.mlp.up_proj.weight"].T)
  bad = tmp_path / "bad"
  bad.mkdir()
  with open(bad / "config.json", "w") as f:
    json.dump(hf, f)
  extra = dict(t, **{"model.layers.0.mlp.extra.weight": t["model.norm.weight"]})
  stnp.save_file(extra, str(bad / "model.safetensors"))
  with pytest.raises(KeyError, match="does not use"):
    lm.load_hf(str(bad))
  wrong = dict(t, **{"model.norm.weight": np.ones(3, np.float32)})
  stnp.save_file(wrong, str(bad / "model.safetensors"))
  with pytest.raises(ValueError, match="model.norm.weight"):
    lm.load_hf(str(bad))
  missing = {k: v for k, v in t.items() if k != "lm_head.weight"}
  stnp.save_file(missing, str(bad / "model.safetensors"))
  with pytest.raises(KeyError, match="lm_head.weight"):
    lm.load_hf(str(bad))
  with pytest.raises(ValueError, match="only 'llama'"):
    lm.save_hf(loaded, str(bad), naming="gpt2")


def test_config_from_hf_variants():
  base = {"model_type": "llama", "vocab_size": 32000, "hidden_size": 4096,
          "intermediate_size": 11008, "num_attention_heads": 32,
          "num_hidden_layers": 32, "max_position_embeddings": 4096,
          "rms_norm_eps": 1e-5, "rope_theta": 10000.0}
  assert lm.config_from_hf(base) == lm.llama_7b()
  v5 = {k: v for k, v in base.items() if k != "rope_theta"}
  v5.update(rope_parameters={"rope_type": "default", "rope_theta": 5e5},
            num_key_value_heads=8, tie_word_embeddings=True, head_dim=128)
  c = lm.config_from_hf(v5)
  assert (c.rope_theta, c.n_kv_heads, c.tie_embeddings) == (5e5, 8, True)
  assert lm.config_from_hf(lm.config_to_hf(c)) == c
  for bad, match in [({"model_type": "gpt2"}, "from_gpt2_names"),
                     ({"hidden_act": "gelu"}, "hidden_act"),
                     ({"attention_bias": True}, "attention_bias"),
                     ({"rope_scaling": {"rope_type": "llama3"}}, "llama3")]:
    with pytest.raises(ValueError, match=match):
      lm.config_from_hf(dict(base, **bad))


def test_gpt2_name_maps():
  rng = np.random.default_rng(0)
  d, v, n = 8, 11, 5
  shapes = {"wte.weight": (v, d), "wpe.weight": (n, d),
            "ln_f.weight": (d,), "ln_f.bias": (d,)}
  for i in range(2):
    shapes.update({
        f"h.{i}.ln_1.weight": (d,), f"h.{i}.ln_1.bias": (d,),
        f"h.{i}.attn.c_attn.weight": (d, 3 * d),
        f"h.{i}.attn.c_attn.bias": (3 * d,),
        f"h.{i}.attn.c_proj.weight": (d, d), f"h.{i}.attn.c_proj.bias": (d,),
        f"h.{i}.ln_2.weight": (d,), f"h.{i}.ln_2.bias": (d,),
        f"h.{i}.mlp.c_fc.weight": (d, 4 * d), f"h.{i}.mlp.c_fc.bias": (4 * d,),
        f"h.{i}.mlp.c_proj.weight": (4 * d, d),
        f"h.{i}.mlp.c_proj.bias": (d,)})
  tensors = {k: rng.normal(size=s).astype(np.float32)
             for k, s in shapes.items()}
  ckpt = {f"transformer.{k}": w for k, w in tensors.items()}
  ckpt["transformer.h.0.attn.bias"] = np.ones((1, 1, n, n), np.float32)
  ckpt["lm_head.weight"] = tensors["wte.weight"]
  p = lm.from_gpt2_names(ckpt)
  assert len(p["h"]) == 2
  assert p["h"][1]["attn"]["c_attn"]["kernel"] is tensors[
      "h.1.attn.c_attn.weight"]  # Conv1D: already (in, out).
  assert p["h"][0]["ln_1"]["scale"].shape == (d,)
  assert p["wte"]["embedding"].shape == (v, d)
  assert p["lm_head"]["kernel"].shape == (d, v)
  assert "bias" not in p["h"][0]["attn"]  # the mask buffer is dropped.
  back = lm.to_gpt2_names(p, prefix="transformer.")
  want = {k: w for k, w in ckpt.items() if k != "transformer.h.0.attn.bias"}
  assert set(back) == set(want)
  for k in want:
    np.testing.assert_array_equal(back[k], want[k])
  with pytest.raises(KeyError):
    lm.from_gpt2_names({"h.0.attn.rotary.weight": np.ones(2)})
