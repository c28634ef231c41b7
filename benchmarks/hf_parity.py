"""Parity with Hugging Face: `jaxsparse.lm.load_hf` vs `LlamaForCausalLM`.

Builds a random tiny `transformers.LlamaForCausalLM` (2 layers, hidden 64,
4 heads, 2 key/value heads, SwiGLU 128, vocab 256; weights redrawn at O(1)
scale so that attention is not uniform), writes it with `save_pretrained`
(safetensors) to a temporary directory, loads that with `load_hf`, runs
both in float32 on the same random tokens and compares the logits.

Needs `torch` and `transformers` (optional, large); without them it prints
`{"max_abs_logit_diff": null, "skipped": ...}` and exits 0. The last
stdout line is one JSON object.

Run: .venv/bin/python benchmarks/hf_parity.py
"""

from __future__ import annotations

import json
import math
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))))

import numpy as np  # noqa: E402


def main() -> None:
  try:
    import torch
    import transformers
  except ImportError:
    print(json.dumps({"max_abs_logit_diff": None,
                      "skipped": "torch/transformers not installed"}))
    return
  import jax.numpy as jnp

  from jaxsparse import lm

  torch.manual_seed(0)
  cfg = transformers.LlamaConfig(
      vocab_size=256, hidden_size=64, intermediate_size=128,
      num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
      max_position_embeddings=64, rms_norm_eps=1e-5,
      tie_word_embeddings=False, attn_implementation="eager")
  ref = transformers.LlamaForCausalLM(cfg).float().eval()
  with torch.no_grad():
    for name, p in ref.named_parameters():
      if name.endswith("embed_tokens.weight"):
        p.normal_(0.0, 1.0)
      elif p.ndim == 2:  # (out, in)
        p.normal_(0.0, 1.0 / math.sqrt(p.shape[1]))
      else:  # RMSNorm weights
        p.copy_(1.0 + 0.2 * torch.randn_like(p))
  tokens = np.random.default_rng(0).integers(0, 256, (2, 24))
  with tempfile.TemporaryDirectory() as tmp:
    ref.save_pretrained(tmp)
    files = sorted(os.listdir(tmp))
    model = lm.load_hf(tmp)
  with torch.no_grad():
    want = ref(input_ids=torch.from_numpy(tokens)).logits.float().numpy()
  got = np.asarray(model(jnp.asarray(tokens, jnp.int32)))
  diff = float(np.abs(got - want).max())
  print(f"files written by save_pretrained: {files}")
  print(f"max |logit| {float(np.abs(want).max()):.3f}, max |diff| {diff:.3e}")
  print(json.dumps({"max_abs_logit_diff": diff, "torch": torch.__version__,
                    "transformers": transformers.__version__,
                    "max_abs_logit": float(np.abs(want).max())}))


if __name__ == "__main__":
  main()
