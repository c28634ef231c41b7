"""ViT-B/16 on ImageNet (tfds), gradual magnitude to 90 %, on a TPU pod.

    --config configs/pod/vit_b16_imagenet.py:v4-32   (16 chips: data 16)
    --config configs/pod/vit_b16_imagenet.py:v5e-64  (64 chips: 16 x 4)
"""

from jaxsparse.experiments.config import base

# Slice -> (mesh.model); mesh.data takes the other chips. ViT-B (86 M
# params) fits one chip: v4 runs pure data parallel, v5e (16 GB HBM)
# shards the projections 4 ways to leave room for 4096-image batches.
MODEL_AXIS = {"v4-32": 1, "v5e-64": 4}


def get_config(slice_name: str = "v4-32"):
  if slice_name not in MODEL_AXIS:
    raise ValueError(f"slice {slice_name!r}: expected one of "
                     f"{sorted(MODEL_AXIS)}")
  c = base()
  c.name = f"vit_b16_{slice_name}"
  c.dataset = "imagenet2012"  # tfds, prepared as array_record in data_dir
  c.data_dir = "gs://YOUR_BUCKET/tensorflow_datasets"
  c.model = "vit"
  k = c.model_kwargs
  k.patch_size, k.dim, k.depth, k.heads, k.mlp_dim = 16, 768, 12, 12, 3072
  c.batch_size = 4096
  c.num_epochs, c.num_steps = 90, -1
  c.optimizer = "adamw"
  c.learning_rate = 3e-3
  c.weight_decay = 0.1
  c.eval_every = 2000
  c.checkpoint_every = 2000
  c.compare_dense = False
  c.pruning.method = "magnitude"
  c.pruning.schedule = "polynomial"  # Zhu & Gupta, 2017
  c.pruning.sparsity = 0.9
  c.pruning.frequency = 1000
  c.mesh.data, c.mesh.model = -1, MODEL_AXIS[slice_name]
  return c
