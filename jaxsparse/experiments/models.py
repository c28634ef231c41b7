"""Small Flax NNX image classifiers for pruning experiments.

Every model takes `(num_classes, input_shape, *, rngs)`, where `input_shape`
is one image's (H, W, C), and is called as `model(x, train=False)` on NHWC
float inputs, returning logits of shape (B, num_classes). `train` only
matters for batch norm (batch statistics in training, running averages in
evaluation).

Layouts follow Flax: `nnx.Linear` kernels are (in, out), `nnx.Conv` kernels
HWIO, attention kernels (in, heads, head_dim) and (heads, head_dim, out).
These are exactly the `nnx.Param` leaves with ndim >= 2, so
`jaxsparse.is_kernel` (the default filter of `jaxsparse.prune`) prunes
kernels and leaves biases, norm scales and offsets dense. No other parameter
has ndim >= 2 (the ViT's position embedding is a fixed sin-cos table).

Defaults are tiny so that each model trains in seconds on 8x8 digits on CPU.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

__all__ = (
    "CNN1D",
    "LeNet5",
    "MLP",
    "INPUT_LAYERS",
    "MODELS",
    "OUTPUT_LAYER",
    "SmallResNet",
    "SmallVGG",
    "SmallViT",
    "create_model",
)


def _shape(input_shape: Sequence[int]) -> tuple[int, int, int]:
  shape = tuple(int(d) for d in input_shape)
  if len(shape) != 3:
    raise ValueError(
        f"input_shape must be (H, W, C) of one image, got {input_shape}.")
  return shape  # type: ignore[return-value]


def _max_pool(x: jax.Array) -> jax.Array:
  return nnx.max_pool(x, window_shape=(2, 2), strides=(2, 2), padding="VALID")


class MLP(nnx.Module):
  """A multilayer perceptron on flattened images; LeNet-300-100 by default.

  References:
    LeCun et al., 1998, Gradient-based learning applied to document
    recognition. Han et al., 2015, Learning both weights and connections for
    efficient neural networks (the LeNet-300-100 pruning benchmark).
  """

  def __init__(
      self,
      num_classes: int,
      input_shape: Sequence[int],
      *,
      hidden: Sequence[int] = (300, 100),
      rngs: nnx.Rngs,
  ):
    in_features = math.prod(int(d) for d in input_shape)
    sizes = (in_features, *hidden)
    self.hidden = nnx.List([
        nnx.Linear(a, b, rngs=rngs)
        for a, b in zip(sizes[:-1], sizes[1:], strict=True)])
    self.out = nnx.Linear(sizes[-1], num_classes, rngs=rngs)

  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    del train
    x = x.reshape(x.shape[0], -1)
    for layer in self.hidden:
      x = nnx.relu(layer(x))
    return self.out(x)


class LeNet5(nnx.Module):
  """LeNet-5: conv 6@5x5, pool, conv 16@5x5, pool, fc 120, fc 84, fc out.

  'SAME' convolutions and 2x2 max pooling (ReLU), so any input of at least
  4x4 works; the first dense layer's width is computed from `input_shape`
  (8x8 -> 2x2x16, 28x28 -> 7x7x16, 32x32 -> 8x8x16).

  References:
    LeCun et al., 1998, Gradient-based learning applied to document
    recognition.
  """

  def __init__(
      self,
      num_classes: int,
      input_shape: Sequence[int],
      *,
      rngs: nnx.Rngs,
  ):
    h, w, c = _shape(input_shape)
    if h < 4 or w < 4:
      raise ValueError(f"LeNet5 needs images of at least 4x4, got {h}x{w}.")
    self.conv1 = nnx.Conv(c, 6, (5, 5), padding="SAME", rngs=rngs)
    self.conv2 = nnx.Conv(6, 16, (5, 5), padding="SAME", rngs=rngs)
    flat = (h // 4) * (w // 4) * 16
    self.fc1 = nnx.Linear(flat, 120, rngs=rngs)
    self.fc2 = nnx.Linear(120, 84, rngs=rngs)
    self.out = nnx.Linear(84, num_classes, rngs=rngs)

  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    del train
    x = _max_pool(nnx.relu(self.conv1(x)))
    x = _max_pool(nnx.relu(self.conv2(x)))
    x = x.reshape(x.shape[0], -1)
    x = nnx.relu(self.fc1(x))
    x = nnx.relu(self.fc2(x))
    return self.out(x)


class SmallVGG(nnx.Module):
  """A VGG-style network: 3x3 'SAME' convs (ints) and 2x2 max pools ('M').

  Each conv is followed by batch norm (if `batch_norm`) and ReLU; the final
  feature map is flattened into one dense layer.

  References:
    Simonyan & Zisserman, 2015, Very deep convolutional networks for
    large-scale image recognition.
  """

  def __init__(
      self,
      num_classes: int,
      input_shape: Sequence[int],
      *,
      channels: Sequence[int | str] = (16, "M", 32, "M", 64),
      batch_norm: bool = True,
      rngs: nnx.Rngs,
  ):
    h, w, c = _shape(input_shape)
    self.plan = tuple(channels)
    convs, norms = [], []
    for item in self.plan:
      if item == "M":
        h, w = h // 2, w // 2
        if h < 1 or w < 1:
          raise ValueError(
              f"Too many 'M' pools in {self.plan} for input {input_shape}.")
        continue
      if not isinstance(item, int):
        raise ValueError(f"channels entries are ints or 'M', got {item!r}.")
      convs.append(nnx.Conv(c, item, (3, 3), padding="SAME",
                            use_bias=not batch_norm, rngs=rngs))
      if batch_norm:
        norms.append(nnx.BatchNorm(item, momentum=0.9, rngs=rngs))
      c = item
    self.convs = nnx.List(convs)
    self.norms = nnx.List(norms) if batch_norm else None
    self.out = nnx.Linear(h * w * c, num_classes, rngs=rngs)

  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    i = 0
    for item in self.plan:
      if item == "M":
        x = _max_pool(x)
        continue
      x = self.convs[i](x)
      if self.norms is not None:
        x = self.norms[i](x, use_running_average=not train)
      x = nnx.relu(x)
      i += 1
    return self.out(x.reshape(x.shape[0], -1))


class _BasicBlock(nnx.Module):
  """Two 3x3 convs with batch norm; a 1x1 conv + BN shortcut on reshape."""

  def __init__(self, cin: int, cout: int, stride: int, *, rngs: nnx.Rngs):
    self.conv1 = nnx.Conv(cin, cout, (3, 3), strides=stride, padding="SAME",
                          use_bias=False, rngs=rngs)
    self.bn1 = nnx.BatchNorm(cout, momentum=0.9, rngs=rngs)
    self.conv2 = nnx.Conv(cout, cout, (3, 3), padding="SAME", use_bias=False,
                          rngs=rngs)
    self.bn2 = nnx.BatchNorm(cout, momentum=0.9, rngs=rngs)
    if stride != 1 or cin != cout:
      self.down = nnx.Conv(cin, cout, (1, 1), strides=stride, padding="SAME",
                           use_bias=False, rngs=rngs)
      self.down_bn = nnx.BatchNorm(cout, momentum=0.9, rngs=rngs)
    else:
      self.down = None
      self.down_bn = None

  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    ra = not train
    y = nnx.relu(self.bn1(self.conv1(x), use_running_average=ra))
    y = self.bn2(self.conv2(y), use_running_average=ra)
    if self.down is not None:
      x = self.down_bn(self.down(x), use_running_average=ra)
    return nnx.relu(x + y)


class SmallResNet(nnx.Module):
  """A CIFAR-style ResNet: 3x3 stem, stages of basic blocks, global pool.

  Stage `i` has `widths[i]` channels and `blocks` basic blocks; stages after
  the first start with stride 2. The defaults (16, 32, 64) x 1 give an
  8-layer ResNet.

  References:
    He et al., 2016, Deep residual learning for image recognition (Sec. 4.2).
  """

  def __init__(
      self,
      num_classes: int,
      input_shape: Sequence[int],
      *,
      widths: Sequence[int] = (16, 32, 64),
      blocks: int = 1,
      rngs: nnx.Rngs,
  ):
    _, _, c = _shape(input_shape)
    self.stem = nnx.Conv(c, widths[0], (3, 3), padding="SAME", use_bias=False,
                         rngs=rngs)
    self.stem_bn = nnx.BatchNorm(widths[0], momentum=0.9, rngs=rngs)
    layers = []
    cin = widths[0]
    for i, width in enumerate(widths):
      for j in range(blocks):
        stride = 2 if (i > 0 and j == 0) else 1
        layers.append(_BasicBlock(cin, width, stride, rngs=rngs))
        cin = width
    self.blocks = nnx.List(layers)
    self.out = nnx.Linear(cin, num_classes, rngs=rngs)

  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    x = nnx.relu(self.stem_bn(self.stem(x), use_running_average=not train))
    for block in self.blocks:
      x = block(x, train)
    return self.out(jnp.mean(x, axis=(1, 2)))


def _sincos_2d(h: int, w: int, dim: int) -> np.ndarray:
  """Fixed 2D sin-cos position embedding, shape (h * w, dim)."""
  if dim % 4:
    raise ValueError(f"ViT dim must be a multiple of 4, got {dim}.")
  y, x = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
  omega = 1.0 / (10000 ** (np.arange(dim // 4) / max(dim // 4 - 1, 1)))
  y = y.reshape(-1)[:, None] * omega[None, :]
  x = x.reshape(-1)[:, None] * omega[None, :]
  pe = np.concatenate([np.sin(x), np.cos(x), np.sin(y), np.cos(y)], axis=1)
  return pe.astype(np.float32)


class _EncoderBlock(nnx.Module):
  """Pre-norm transformer block: x + MHA(LN(x)); x + MLP(LN(x)).

  The attention projections have no biases: theirs would be 2-D (heads,
  head_dim) and so be taken for kernels by `jaxsparse.is_kernel`.
  """

  def __init__(self, dim: int, heads: int, mlp_dim: int, *, rngs: nnx.Rngs):
    self.ln1 = nnx.LayerNorm(dim, rngs=rngs)
    self.attn = nnx.MultiHeadAttention(
        num_heads=heads, in_features=dim, use_bias=False, decode=False,
        keep_rngs=False, rngs=rngs)
    self.ln2 = nnx.LayerNorm(dim, rngs=rngs)
    self.fc1 = nnx.Linear(dim, mlp_dim, rngs=rngs)
    self.fc2 = nnx.Linear(mlp_dim, dim, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    x = x + self.attn(self.ln1(x), deterministic=True)
    return x + self.fc2(nnx.gelu(self.fc1(self.ln2(x))))


class SmallViT(nnx.Module):
  """A small Vision Transformer with global average pooling.

  Patches are embedded by a conv with kernel = stride = `patch_size`, plus a
  fixed 2D sin-cos position embedding; no class token: the head reads the
  mean of the final tokens. `patch_size=None` picks 2 for images up to 16
  pixels high (8x8 digits: 16 tokens) and 4 otherwise (28x28: 49 tokens,
  32x32: 64 tokens).

  References:
    Dosovitskiy et al., 2021, An image is worth 16x16 words. Beyer et al.,
    2022, Better plain ViT baselines for ImageNet-1k (sin-cos position
    embedding, average pooling).
  """

  def __init__(
      self,
      num_classes: int,
      input_shape: Sequence[int],
      *,
      patch_size: int | None = None,
      dim: int = 32,
      depth: int = 2,
      heads: int = 2,
      mlp_dim: int = 64,
      rngs: nnx.Rngs,
  ):
    h, w, c = _shape(input_shape)
    if patch_size is None:
      patch_size = 2 if h <= 16 else 4
    if h < patch_size or w < patch_size:
      raise ValueError(f"patch_size {patch_size} larger than image {h}x{w}.")
    if dim % heads:
      raise ValueError(f"dim {dim} is not divisible by heads {heads}.")
    self.patch_size = patch_size
    self.grid = (h // patch_size, w // patch_size)
    self.dim = dim
    self.embed = nnx.Conv(c, dim, (patch_size, patch_size),
                          strides=patch_size, padding="VALID", rngs=rngs)
    self.blocks = nnx.List(
        [_EncoderBlock(dim, heads, mlp_dim, rngs=rngs) for _ in range(depth)])
    self.norm = nnx.LayerNorm(dim, rngs=rngs)
    self.out = nnx.Linear(dim, num_classes, rngs=rngs)

  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    del train
    x = self.embed(x)
    x = x.reshape(x.shape[0], -1, self.dim)
    x = x + jnp.asarray(_sincos_2d(*self.grid, self.dim), x.dtype)
    for block in self.blocks:
      x = block(x)
    return self.out(self.norm(x).mean(axis=1))


class CNN1D(nnx.Module):
  """The 1-D CNN of the MNIST-1D paper, for signals stored as (L, 1, C).

  An input of shape (B, H, W, C) is read as a sequence of length H with
  W * C channels (MNIST-1D: (B, 40, 1, 1), length 40, one channel). Three
  1-D convs (kernels 5, 3, 3; stride 2; padding 1; ReLU) of `channels`
  channels, then one dense layer on the flattened features: for length 40
  and 25 channels, 40 -> 19 -> 10 -> 5 positions and a 125 -> 10 head
  (about 5,100 weights).

  References:
    Greydanus, 2020, Scaling down deep learning (the ``ConvBase`` model of
    the mnist1d repository).
  """

  def __init__(
      self,
      num_classes: int,
      input_shape: Sequence[int],
      *,
      channels: Sequence[int] = (25, 25, 25),
      rngs: nnx.Rngs,
  ):
    h, w, c = _shape(input_shape)
    kernels = (5, 3, 3)
    if len(channels) != len(kernels):
      raise ValueError(
          f"CNN1D takes {len(kernels)} channel counts, got {channels}.")
    cin, length, convs = w * c, h, []
    for k, cout in zip(kernels, channels, strict=True):
      if not isinstance(cout, int):
        raise ValueError(f"CNN1D channels are ints, got {cout!r}.")
      convs.append(nnx.Conv(cin, cout, (k,), strides=2, padding=((1, 1),),
                            rngs=rngs))
      cin, length = cout, (length + 2 - k) // 2 + 1
      if length < 1:
        raise ValueError(f"CNN1D needs a longer input than {h}.")
    self.convs = nnx.List(convs)
    self.out = nnx.Linear(length * cin, num_classes, rngs=rngs)

  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    del train
    x = x.reshape(x.shape[0], x.shape[1], -1)
    for conv in self.convs:
      x = nnx.relu(conv(x))
    return self.out(x.reshape(x.shape[0], -1))


MODELS: dict[str, type[nnx.Module]] = {
    "mlp": MLP,
    "lenet5": LeNet5,
    "vgg": SmallVGG,
    "resnet": SmallResNet,
    "vit": SmallViT,
    "cnn1d": CNN1D,
}

# Path patterns (`re.search` on 'a/b/kernel' paths) of each model's input
# layer and output head: what `pruning.exclude` means by "input" and
# "output". The input layer sees the image's channels (1 for digits), which
# N:M groups along the input dimension cannot divide.
INPUT_LAYERS: dict[str, str] = {
    "mlp": r"^hidden/0/", "lenet5": r"^conv1/", "vgg": r"^convs/0/",
    "resnet": r"^stem/", "vit": r"^embed/", "cnn1d": r"^convs/0/",
}
OUTPUT_LAYER = r"^out/"


def create_model(
    name: str,
    num_classes: int,
    input_shape: Sequence[int],
    rngs: nnx.Rngs,
    **kwargs: Any,
) -> nnx.Module:
  """Builds a model of `MODELS` by name; `kwargs` go to its constructor.

  Example::

    model = create_model("mlp", 10, (8, 8, 1), nnx.Rngs(0), hidden=(64,))
  """
  if name not in MODELS:
    raise ValueError(
        f"Unknown model {name!r}; available models: "
        f"{', '.join(sorted(MODELS))}.")
  return MODELS[name](num_classes, input_shape, rngs=rngs, **kwargs)
