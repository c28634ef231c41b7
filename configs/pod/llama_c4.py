"""A LLaMA-style LM on C4 (tfds), gradual magnitude to 50 %, on a TPU pod.

    --config configs/pod/llama_c4.py:v4-32   (16 chips: data 4 x model 4)
    --config configs/pod/llama_c4.py:v5e-64  (64 chips: data 8 x model 8)
"""

from jaxsparse.experiments.config import lm_base

# Slice -> mesh.model (Megatron-style shards of the attention and MLP
# projections); mesh.data takes the other chips.
MODEL_AXIS = {"v4-32": 4, "v5e-64": 8}


def get_config(slice_name: str = "v4-32"):
  if slice_name not in MODEL_AXIS:
    raise ValueError(f"slice {slice_name!r}: expected one of "
                     f"{sorted(MODEL_AXIS)}")
  c = lm_base()
  c.name = f"llama_c4_{slice_name}"
  c.dataset = "tfds:c4/en:3.1.0"  # prepared as array_record in data_dir
  c.data_dir = "gs://YOUR_BUCKET/tensorflow_datasets"
  k = c.lm  # about 1.2 B parameters (byte-level vocabulary)
  k.dim, k.n_layers, k.n_heads, k.n_kv_heads = 2048, 24, 16, 16
  k.hidden_dim, k.seq_len, k.eval_batch_size = 5632, 2048, 64
  c.batch_size = 256
  c.num_steps = 100_000
  c.optimizer = "adamw"
  c.learning_rate = 3e-4
  c.weight_decay = 0.1
  c.eval_every = 5000
  c.checkpoint_every = 2000
  c.pruning.method = "magnitude"
  c.pruning.schedule = "polynomial"
  c.pruning.sparsity = 0.5
  c.pruning.frequency = 1000
  c.posttrain.methods = ("wanda", "sparsegpt")
  c.mesh.data, c.mesh.model = -1, MODEL_AXIS[slice_name]
  return c
