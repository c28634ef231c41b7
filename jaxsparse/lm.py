"""Language models: a LLaMA-style decoder, embedded text, HF checkpoints.

`Llama(tiny(), rngs=nnx.Rngs(0))` is a byte-level decoder for CPU runs;
`prunable` is the filter that selects its 7 block linear kernels for
`jaxsparse.masks`/`prune` and post-training pruning. `pydoc_topics()` and
`stdlib_source()` are real corpora shipped with Python (`split` holds out
the last 10 % of bytes); `evaluate` reports loss, perplexity and bits per
byte. `save_hf`/`load_hf` read and write Hugging Face LLaMA safetensors.

Example::

  model = lm.Llama(lm.tiny(), rngs=nnx.Rngs(0))
  train, valid = lm.split(lm.pydoc_topics())
  tokens = lm.ByteTokenizer().encode(train)
  for x, y in lm.lm_batches(tokens, 16, 128, seed=0, num_batches=100):
    ...
  lm.evaluate(model, lm.ByteTokenizer().encode(valid), 128, 16)
"""

from jaxsparse._src.lm.hf import (
    config_from_hf,
    config_to_hf,
    from_gpt2_names,
    load_hf,
    save_hf,
    to_gpt2_names,
)
from jaxsparse._src.lm.model import (
    LINEAR_NAMES,
    Block,
    KVCache,
    Llama,
    LlamaConfig,
    RMSNorm,
    generate,
    init_cache,
    llama_7b,
    prunable,
    tiny,
)
from jaxsparse._src.lm.text import (
    BPETokenizer,
    ByteTokenizer,
    eval_windows,
    evaluate,
    lm_batches,
    pydoc_topics,
    split,
    stdlib_source,
    tfds_text,
    train_bpe,
)

__all__ = (
    "BPETokenizer", "Block", "ByteTokenizer", "KVCache", "LINEAR_NAMES",
    "Llama", "LlamaConfig", "RMSNorm", "config_from_hf", "config_to_hf",
    "eval_windows", "evaluate", "from_gpt2_names", "generate", "init_cache",
    "lm_batches", "llama_7b", "load_hf", "prunable", "pydoc_topics",
    "save_hf", "split", "stdlib_source", "tfds_text", "tiny",
    "to_gpt2_names", "train_bpe",
)
