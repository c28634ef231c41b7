"""Text for language models: embedded corpora, tokenizers, batches, eval.

Corpora that need no download (both ship with every CPython, so they are
fixed for a given Python version):

* `pydoc_topics()`: the 79 documentation topics of `pydoc_data.topics`
  (about 465 KB of English), joined in sorted key order.
* `stdlib_source()`: the standard library's `.py` files (without
  `site-packages`, `test`/`tests` and `idlelib`), sorted by path.

`tfds_text` reads the text feature of a tfds dataset (``"lm1b"``, ``"c4"``)
through `tfds.data_source`, without TensorFlow, once it is prepared in the
array_record format.

Split: `split(text)` keeps the first 90 % of the UTF-8 bytes for training
and the last 10 % for validation (the cut moved forward to the next
character boundary), with no shuffling.

Tokens are bytes by default (`ByteTokenizer`, vocabulary 256); `train_bpe`
trains a byte-level BPE with the `tokenizers` package. `evaluate` reports
the loss in nats per token, the perplexity and bits per byte, `total nats /
(ln 2 * bytes of the evaluated text)`, comparable across tokenizers.
"""

from __future__ import annotations

import functools
import importlib
import math
import os
import sys
import sysconfig
from collections.abc import Iterator
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

VALIDATION_FRACTION = 0.1
_STDLIB_EXCLUDE = frozenset(
    {"site-packages", "dist-packages", "test", "tests", "idlelib",
     "__pycache__"})


# -- Corpora -------------------------------------------------------------------


def pydoc_topics() -> str:
  """Python's documentation topics (`pydoc_data.topics`), sorted by key."""
  from pydoc_data.topics import topics
  return "\n\n".join(topics[k] for k in sorted(topics))


def _truncate_utf8(data: bytes, max_bytes: int) -> str:
  """At most `max_bytes` of `data`, cut at a character boundary."""
  return data[:max_bytes].decode("utf-8", errors="ignore")


def stdlib_source(max_bytes: int | None = None) -> str:
  """The standard library's `.py` sources, concatenated (deterministic).

  Files are sorted by their path relative to the standard library
  directory and each is preceded by a line `# file: <path>`. Directories
  named `site-packages`, `dist-packages`, `test`, `tests` and `idlelib` are
  left out. `max_bytes` caps the UTF-8 size (all of it: about 11 MB on 3.11).
  """
  root = sysconfig.get_paths()["stdlib"]
  files = []
  for dirpath, dirnames, filenames in os.walk(root):
    dirnames[:] = [d for d in dirnames if d not in _STDLIB_EXCLUDE]
    for f in filenames:
      if f.endswith(".py"):
        rel = os.path.relpath(os.path.join(dirpath, f), root)
        files.append(rel.replace(os.sep, "/"))
  parts, size = [], 0
  for rel in sorted(files):
    with open(os.path.join(root, rel), "rb") as fh:
      text = fh.read().decode("utf-8", errors="replace")
    chunk = f"# file: {rel}\n{text}\n".encode()
    parts.append(chunk)
    size += len(chunk)
    if max_bytes is not None and size >= max_bytes:
      break
  data = b"".join(parts)
  if max_bytes is not None:
    return _truncate_utf8(data, max_bytes)
  return data.decode("utf-8")


def split(data: Any, validation_fraction: float = VALIDATION_FRACTION):
  """(train, validation): the last `validation_fraction` is validation.

  A `str` is cut by its UTF-8 bytes (the cut moved forward to the next
  character boundary); bytes, arrays and sequences by length.
  """
  if not 0.0 <= validation_fraction < 1.0:
    raise ValueError(
        f"validation_fraction must be in [0, 1), got {validation_fraction}.")
  if isinstance(data, str):
    raw = data.encode("utf-8")
    cut = int(len(raw) * (1.0 - validation_fraction))
    while cut < len(raw) and (raw[cut] & 0xC0) == 0x80:
      cut += 1  # skip UTF-8 continuation bytes.
    return raw[:cut].decode("utf-8"), raw[cut:].decode("utf-8")
  cut = int(len(data) * (1.0 - validation_fraction))
  return data[:cut], data[cut:]


# -- Tokenizers ----------------------------------------------------------------


class ByteTokenizer:
  """UTF-8 bytes as tokens 0..255."""

  vocab_size = 256

  def encode(self, text: str) -> np.ndarray:
    return np.frombuffer(text.encode("utf-8"), np.uint8).astype(np.int32)

  def decode(self, tokens: Any) -> str:
    return bytes(np.asarray(tokens, np.uint8).tolist()).decode(
        "utf-8", errors="replace")

  def token_bytes(self) -> np.ndarray:
    """Bytes of text per token id (all 1)."""
    return np.ones((256,), np.int64)


@functools.cache
def _byte_level_decoder() -> dict[str, int]:
  """Inverse of GPT-2's byte -> printable character table (ByteLevel)."""
  bs = (list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1)))
  cs = bs[:]
  n = 0
  for b in range(256):
    if b not in bs:
      bs.append(b)
      cs.append(256 + n)
      n += 1
  return {chr(c): b for b, c in zip(bs, cs, strict=True)}


class BPETokenizer:
  """A trained byte-level BPE (`tokenizers.Tokenizer`); see `train_bpe`."""

  def __init__(self, tokenizer: Any):
    self.tokenizer = tokenizer

  @property
  def vocab_size(self) -> int:
    return self.tokenizer.get_vocab_size()

  def encode(self, text: str) -> np.ndarray:
    return np.asarray(self.tokenizer.encode(text).ids, np.int32)

  def decode(self, tokens: Any) -> str:
    return self.tokenizer.decode(np.asarray(tokens).tolist())

  def token_bytes(self) -> np.ndarray:
    """Bytes of text per token id (0 for special tokens)."""
    table = _byte_level_decoder()
    out = np.zeros((self.vocab_size,), np.int64)
    for piece, i in self.tokenizer.get_vocab().items():
      if all(c in table for c in piece):
        out[i] = len(piece)
    return out

  def save(self, path: str) -> None:
    self.tokenizer.save(path)


def train_bpe(text: str, vocab_size: int) -> BPETokenizer:
  """Trains a byte-level BPE (GPT-2 style) on `text`; needs `tokenizers`.

  The 256 byte symbols are always in the vocabulary, so every text is
  encodable and `decode(encode(t)) == t`.

  References:
    Sennrich et al., 2016, Neural machine translation of rare words with
    subword units. Radford et al., 2019, Language models are unsupervised
    multitask learners (byte-level BPE).
  """
  try:
    from tokenizers import (
        Tokenizer,
        decoders,
        models,
        pre_tokenizers,
        trainers,
    )
  except ImportError as e:  # pragma: no cover - depends on the environment.
    raise ImportError(
        "train_bpe needs the `tokenizers` package: pip install tokenizers"
    ) from e
  if vocab_size < 256:
    raise ValueError(f"vocab_size must be >= 256, got {vocab_size}.")
  tok = Tokenizer(models.BPE())
  tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  tok.decoder = decoders.ByteLevel()
  trainer = trainers.BpeTrainer(
      vocab_size=vocab_size, show_progress=False,
      initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
  tok.train_from_iterator([text], trainer=trainer)
  return BPETokenizer(tok)


# -- Batches -------------------------------------------------------------------


def lm_batches(tokens: Any, batch_size: int, seq_len: int, *, seed: int,
               num_batches: int | None = None
               ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
  """Random (inputs, targets) windows, each (batch_size, seq_len) int32.

  Window starts are uniform in [0, len - seq_len - 1], drawn by
  `np.random.default_rng(seed)`; `targets` is `inputs` shifted by one.
  Endless unless `num_batches` is given.
  """
  tokens = np.asarray(tokens, np.int32)
  high = len(tokens) - seq_len
  if high < 1:
    raise ValueError(f"{len(tokens)} tokens are too few for seq_len "
                     f"{seq_len}.")
  rng = np.random.default_rng(seed)
  idx = np.arange(seq_len + 1)
  n = 0
  while num_batches is None or n < num_batches:
    starts = rng.integers(0, high, size=batch_size)
    w = tokens[starts[:, None] + idx]
    yield w[:, :-1], w[:, 1:]
    n += 1


def eval_windows(tokens: Any,
                 seq_len: int) -> tuple[np.ndarray, np.ndarray]:
  """Non-overlapping (inputs, targets), each (N, seq_len) int32.

  Window i reads tokens[i*seq_len : (i+1)*seq_len + 1], so each token
  after the first is a target at most once; N = (len - 1) // seq_len.
  """
  tokens = np.asarray(tokens, np.int32)
  n = (len(tokens) - 1) // seq_len
  if n < 1:
    raise ValueError(f"{len(tokens)} tokens are too few for seq_len "
                     f"{seq_len}.")
  x = tokens[:n * seq_len].reshape(n, seq_len)
  y = tokens[1:n * seq_len + 1].reshape(n, seq_len)
  return x, y


@functools.partial(jax.jit, static_argnums=0)
def _nll_sum(graphdef: Any, state: Any, x: jax.Array, y: jax.Array,
             w: jax.Array) -> jax.Array:
  model = nnx.merge(graphdef, state)
  logp = jax.nn.log_softmax(model(x).astype(jnp.float32), axis=-1)
  nll = -jnp.take_along_axis(logp, y[..., None], axis=-1)[..., 0]
  return jnp.sum(nll * w[:, None])


def evaluate(model: nnx.Module, tokens: Any, seq_len: int, batch_size: int,
             *, token_bytes: np.ndarray | None = None) -> dict[str, float]:
  """Loss (nats/token), perplexity and bits per byte on `eval_windows`.

  Args:
    model: called as `model(inputs) -> logits` (B, T, vocab).
    tokens: the evaluation token ids.
    seq_len, batch_size: window length and windows per forward pass (the
      last batch is padded, with zero weight).
    token_bytes: bytes of text per token id (`tokenizer.token_bytes()`);
      default one byte per token (`ByteTokenizer`).

  Returns:
    `loss` (mean nats per target token), `perplexity` (exp(loss)),
    `bits_per_byte` (total nats / (ln 2 * bytes of the target tokens)) and
    `tokens` (targets evaluated).
  """
  x, y = eval_windows(tokens, seq_len)
  n = len(x)
  pad = -n % batch_size
  w = np.concatenate([np.ones(n, np.float32), np.zeros(pad, np.float32)])
  x = np.concatenate([x, np.zeros((pad, seq_len), np.int32)])
  y = np.concatenate([y, np.zeros((pad, seq_len), np.int32)])
  graphdef, state = nnx.split(model)
  total = 0.0
  for i in range(0, len(x), batch_size):
    s = slice(i, i + batch_size)
    total += float(_nll_sum(graphdef, state, x[s], y[s], w[s]))
  targets = y[:n]
  count = targets.size
  if token_bytes is None:
    num_bytes = count
  else:
    num_bytes = int(np.asarray(token_bytes)[targets].sum())
  loss = total / count
  return {"loss": loss, "perplexity": math.exp(loss),
          "bits_per_byte": total / (math.log(2.0) * num_bytes),
          "tokens": count}


# -- tfds ----------------------------------------------------------------------


def _register(name: str) -> None:
  """Imports tfds's text builder module (c4 is not registered lazily)."""
  base = name.split("/")[0].split(":")[0]
  module = f"tensorflow_datasets.text.{base}"
  if module not in sys.modules:
    try:
      importlib.import_module(module)
    except ImportError:
      pass


def tfds_text(name: str, split: str, data_dir: str | None = None, *,
              feature: str = "text", max_examples: int | None = None,
              max_bytes: int | None = None, separator: str = "\n",
              download: bool = False) -> str:
  """The `feature` of a tfds text dataset, examples joined by `separator`.

  Reads with `tfds.data_source` (random access, no TensorFlow), so the
  dataset (e.g. ``"lm1b"``, ``"c4/en"``) must be prepared in `data_dir` as
  array_record: `tfds build lm1b --file_format=array_record`.

  Args:
    name: tfds name, optionally with config and version.
    split: a tfds split, e.g. ``"train"``, ``"test[:1%]"``.
    data_dir: tfds data directory (default: tfds's).
    feature: the text feature ("text" for lm1b and c4).
    max_examples: read at most this many examples, in order.
    max_bytes: stop once this many UTF-8 bytes are read (and cut there).
    separator: put between examples.
    download: let tfds download and prepare it (needs internet and
      TensorFlow).
  """
  try:
    import tensorflow_datasets as tfds
  except ImportError as e:  # pragma: no cover - depends on the environment.
    raise ImportError("tfds_text needs tensorflow-datasets: pip install "
                      "'jaxsparse[data]'") from e
  _register(name)
  src = tfds.data_source(name, split=split, data_dir=data_dir,
                         download=download,
                         builder_kwargs={"file_format": "array_record"})
  n = len(src) if max_examples is None else min(len(src), max_examples)
  sep = separator.encode("utf-8")
  parts, size = [], 0
  for i in range(n):
    t = src[i][feature]
    t = t if isinstance(t, bytes) else str(t).encode("utf-8")
    if parts:
      parts.append(sep)
      size += len(sep)
    parts.append(t)
    size += len(t)
    if max_bytes is not None and size >= max_bytes:
      break
  data = b"".join(parts)
  if max_bytes is not None:
    return _truncate_utf8(data, max_bytes)
  return data.decode("utf-8", errors="replace")

