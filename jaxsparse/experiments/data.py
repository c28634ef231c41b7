"""Image-classification data through `tfds.data_source` and `grain`.

One pipeline for every dataset, without TensorFlow: a random-access
`tfds.data_source` (array_record files) feeds a `grain.MapDataset` that
shuffles, batches, repeats and normalizes.

Datasets:

* ``"digits"``: scikit-learn's 8x8 handwritten digits (1,797 images, 10
  classes, pixel values 0..16), shipped inside the scikit-learn wheel. It is
  written once, offline, as the tfds dataset ``jaxsparse_digits`` into
  `data_dir` on first use. Split (deterministic, no shuffling): ``train`` is
  the first 1,437 images of `sklearn.datasets.load_digits()` (80%), ``test``
  the last 360, both in scikit-learn's order.
* ``"mnist1d"``: MNIST-1D (Greydanus, 2020), 1-D signals of length 40 in 10
  classes, generated offline by the `mnist1d` package with its default
  arguments (4,000 train, 1,000 test; seed 0, see `mnist1d_arrays`). Examples
  are (40, 1, 1) "images" (H=40); values are already standardized.
* ``"mnist"``, ``"fashion_mnist"``, ``"cifar10"``: the tfds datasets of these
  names, read from `data_dir`. They must have been prepared there in the
  array_record format (see `DatasetNotFoundError`).

Example::

  train = data.load("digits", "train")
  for batch in data.make_loader(train, batch_size=128, seed=0):
    batch["image"]  # float32 (128, 8, 8, 1), values in [0, 1]
    batch["label"]  # int32 (128,)
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np
from etils import epath

from jaxsparse.experiments.errors import DataError

try:
  import grain
  import tensorflow_datasets as tfds
except ImportError as e:  # pragma: no cover - depends on the environment.
  raise ImportError(
      "jaxsparse.experiments.data needs tensorflow-datasets and grain: "
      "pip install 'jaxsparse[data]'"
  ) from e

__all__ = (
    "DIGITS_NUM_TRAIN",
    "DatasetNotFoundError",
    "DatasetSpec",
    "DigitsBuilder",
    "Source",
    "SUPPORTED_DATASETS",
    "dataset_info",
    "default_data_dir",
    "load",
    "make_loader",
    "mnist1d_arrays",
    "normalize",
    "prepare_digits",
    "to_arrays",
)

Batch = dict[str, np.ndarray]

DIGITS_NUM_TRAIN = 1437  # first 1,437 of 1,797 digits; the last 360 are test.
_DIGITS_TFDS_NAME = "jaxsparse_digits"
MNIST1D_LENGTH = 40  # samples per MNIST-1D signal.


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
  """Static facts about a supported dataset."""

  tfds_name: str
  input_shape: tuple[int, int, int]  # (H, W, C) of one image.
  num_classes: int
  scale: float  # raw pixel values are divided by this ...
  mean: tuple[float, ...]  # ... then `mean` is subtracted per channel ...
  std: tuple[float, ...]  # ... and the result divided by `std`.
  num_train: int = 0  # examples in the train split (for run lengths).
  # Images of varying size: center-cropped to a square and resized to
  # `input_shape` (ImageNet).
  resize: bool = False


# CIFAR-10 per-channel training-set statistics of pixel/255.
_CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
_CIFAR10_STD = (0.2470, 0.2435, 0.2616)

SUPPORTED_DATASETS: dict[str, DatasetSpec] = {
    "digits": DatasetSpec(_DIGITS_TFDS_NAME, (8, 8, 1), 10, 16.0, (0.0,),
                          (1.0,), DIGITS_NUM_TRAIN),
    "mnist": DatasetSpec("mnist", (28, 28, 1), 10, 255.0, (0.0,), (1.0,),
                         60000),
    "fashion_mnist": DatasetSpec("fashion_mnist", (28, 28, 1), 10, 255.0,
                                 (0.0,), (1.0,), 60000),
    "cifar10": DatasetSpec("cifar10", (32, 32, 3), 10, 255.0, _CIFAR10_MEAN,
                           _CIFAR10_STD, 50000),
    "imagenet2012": DatasetSpec(
        "imagenet2012", (224, 224, 3), 1000, 255.0,
        (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), 1281167,
        resize=True),
    "mnist1d": DatasetSpec("mnist1d", (MNIST1D_LENGTH, 1, 1), 10, 1.0,
                           (0.0,), (1.0,), 4000),
}


class DatasetNotFoundError(DataError):
  """A supported dataset is not prepared (as array_record) in `data_dir`."""


def _spec(name: str) -> DatasetSpec:
  if name not in SUPPORTED_DATASETS:
    raise ValueError(
        f"Unknown dataset {name!r}; supported datasets: "
        f"{', '.join(sorted(SUPPORTED_DATASETS))}."
    )
  return SUPPORTED_DATASETS[name]


def dataset_info(name: str) -> tuple[tuple[int, int, int], int]:
  """`(input_shape, num_classes)` of a supported dataset, e.g. `((8, 8, 1),
  10)` for ``"digits"``; `input_shape` is one image's (H, W, C)."""
  spec = _spec(name)
  return spec.input_shape, spec.num_classes


def default_data_dir() -> str:
  """`$TFDS_DATA_DIR` if set, else ``~/tensorflow_datasets`` (as tfds)."""
  return os.environ.get("TFDS_DATA_DIR") or os.path.expanduser(
      "~/tensorflow_datasets")


def normalize(batch: Batch, name: str) -> Batch:
  """Raw examples (any leading dims) to float32 images and int32 labels.

  ``image = (raw / scale - mean) / std`` per channel: digits ``/16``, MNIST and
  Fashion-MNIST ``/255``, CIFAR-10 ``/255`` then per-channel mean/std.
  """
  spec = _spec(name)
  image = np.asarray(batch["image"], np.float32) / np.float32(spec.scale)
  mean = np.asarray(spec.mean, np.float32)
  std = np.asarray(spec.std, np.float32)
  image = (image - mean) / std
  return {"image": image.astype(np.float32, copy=False),
          "label": np.asarray(batch["label"], np.int32)}


# ---------------------------------------------------------------------------
# The embedded digits dataset as a tfds builder.


class DigitsBuilder(tfds.core.GeneratorBasedBuilder):
  """scikit-learn's 8x8 digits as a tfds dataset, generated offline.

  The examples come from `sklearn.datasets.load_digits()` (the UCI optical
  recognition of handwritten digits test set); no download is needed. Order
  is kept (`disable_shuffling`): ``train`` holds examples ``[0, 1437)`` and
  ``test`` examples ``[1437, 1797)``.
  """

  name = _DIGITS_TFDS_NAME
  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "scikit-learn load_digits, 1437 train/360 test."}
  # Where tfds looks for a checksums file (there is none: nothing to
  # download). Set explicitly: tfds's own lookup for a builder defined inside
  # a package imports the optional `importlib_resources`.
  code_path = epath.Path(__file__)

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description=(
            "scikit-learn's 8x8 handwritten digits (values 0..16). Train: "
            "the first 1437 examples of load_digits(); test: the last 360."
        ),
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Tensor(shape=(8, 8, 1), dtype=np.uint8),
            "label": tfds.features.ClassLabel(num_classes=10),
        }),
        supervised_keys=("image", "label"),
        homepage="https://archive.ics.uci.edu/dataset/80",
        disable_shuffling=True,
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # Nothing to download.
    return {
        "train": self._generate_examples(0, DIGITS_NUM_TRAIN),
        "test": self._generate_examples(DIGITS_NUM_TRAIN, None),
    }

  def _generate_examples(self, start: int, stop: int | None):
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = digits.images.astype(np.uint8)[..., None]
    labels = digits.target.astype(np.int64)
    stop = len(labels) if stop is None else stop
    for i in range(start, stop):
      yield i, {"image": images[i], "label": int(labels[i])}


@contextlib.contextmanager
def _file_lock(path: str) -> Iterator[None]:
  """An exclusive lock on `path` (a no-op where `fcntl` is missing)."""
  try:
    import fcntl
  except ImportError:  # pragma: no cover - non-POSIX.
    yield
    return
  with open(path, "a") as f:
    fcntl.flock(f, fcntl.LOCK_EX)
    try:
      yield
    finally:
      fcntl.flock(f, fcntl.LOCK_UN)


def prepare_digits(data_dir: str | None = None) -> DigitsBuilder:
  """Writes the digits dataset into `data_dir` unless already there.

  Safe to call from several processes at once (a file lock serializes the
  first preparation).
  """
  data_dir = os.path.expanduser(data_dir or default_data_dir())
  builder = DigitsBuilder(data_dir=data_dir, file_format="array_record")
  if not builder.is_prepared():
    os.makedirs(data_dir, exist_ok=True)
    with _file_lock(os.path.join(data_dir, f".{_DIGITS_TFDS_NAME}.lock")):
      builder = DigitsBuilder(data_dir=data_dir, file_format="array_record")
      if not builder.is_prepared():
        builder.download_and_prepare()
  return builder


# ---------------------------------------------------------------------------
# MNIST-1D, generated offline.

_MNIST1D_CACHE: dict[int, tuple[np.ndarray, ...]] = {}


def _mnist1d_generate(seed: int) -> tuple[np.ndarray, ...]:
  """Runs `mnist1d.make_dataset` with `seed`, keeping global RNGs intact.

  `make_dataset` reseeds NumPy's and Python's global RNGs (`set_seed`); both
  states are saved and restored. Never calls `mnist1d.get_dataset`, which
  tries a download first.
  """
  import random

  try:
    from mnist1d.data import get_dataset_args, make_dataset
  except ImportError as e:  # pragma: no cover - depends on the environment.
    raise ImportError(
        "The 'mnist1d' dataset needs the mnist1d package: "
        "pip install 'jaxsparse[data]' (or pip install mnist1d)") from e
  args = get_dataset_args()
  args.seed = int(seed)
  np_state, py_state = np.random.get_state(), random.getstate()
  try:
    d = make_dataset(args)
  finally:
    np.random.set_state(np_state)
    random.setstate(py_state)
  return (np.asarray(d["x"], np.float32), np.asarray(d["y"], np.int32),
          np.asarray(d["x_test"], np.float32),
          np.asarray(d["y_test"], np.int32))


def mnist1d_arrays(
    seed: int = 0,
    cache_dir: str | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
  """MNIST-1D as arrays: `(x_train, y_train, x_test, y_test)`.

  Generated offline by the `mnist1d` package with its default arguments
  (5,000 signals, 80/20 split, length 40) and `seed` in place of the
  package's 42; no download. NumPy's and Python's global RNG states are left
  as they were. Results are cached in memory per seed and, when `cache_dir`
  is given, in ``cache_dir/mnist1d_seed{seed}.npz`` (generation takes a few
  seconds).

  Returns:
    ``x_train`` float32 (4000, 40), ``y_train`` int32 (4000,), ``x_test``
    float32 (1000, 40), ``y_test`` int32 (1000,); labels in [0, 10).

  References:
    Greydanus, 2020, Scaling down deep learning (MNIST-1D).
  """
  seed = int(seed)
  if seed not in _MNIST1D_CACHE:
    path = (os.path.join(os.path.expanduser(cache_dir),
                         f"mnist1d_seed{seed}.npz") if cache_dir else None)
    if path and os.path.exists(path):
      with np.load(path) as z:
        arrays = tuple(z[k] for k in ("x", "y", "x_test", "y_test"))
    else:
      arrays = _mnist1d_generate(seed)
      if path:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = f"{path}.{os.getpid()}.tmp.npz"
        np.savez(tmp, **dict(zip(("x", "y", "x_test", "y_test"), arrays,
                                 strict=True)))
        os.replace(tmp, path)
    _MNIST1D_CACHE[seed] = arrays
  return tuple(a.copy() for a in _MNIST1D_CACHE[seed])  # type: ignore


class _ArraySource(Sequence):
  """Random access to examples held in arrays: `src[i]` -> example dict."""

  def __init__(self, images: np.ndarray, labels: np.ndarray):
    self.images, self.labels = images, labels

  def __len__(self) -> int:
    return len(self.labels)

  def __getitem__(self, index):
    return {"image": self.images[index], "label": self.labels[index]}


def _mnist1d_source(split: str, data_dir: str, seed: int = 0) -> _ArraySource:
  if split not in ("train", "test"):
    raise ValueError(
        f"mnist1d has the splits 'train' and 'test', got {split!r}.")
  x, y, x_test, y_test = mnist1d_arrays(
      seed, cache_dir=os.path.join(data_dir, "mnist1d"))
  if split == "test":
    x, y = x_test, y_test
  return _ArraySource(x.reshape(-1, MNIST1D_LENGTH, 1, 1), y)


# ---------------------------------------------------------------------------
# Loading.


class Source(Sequence):
  """A random-access split: `len(src)`, `src[i]` -> raw example dict.

  Examples hold ``"image"`` (uint8, (H, W, C)) and ``"label"``. `name` tells
  `make_loader` and `to_arrays` how to normalize.
  """

  def __init__(self, name: str, split: str, source: Any):
    self.name = name
    self.split = split
    self.source = source  # the tfds data source (or any random-access seq).

  def __len__(self) -> int:
    return len(self.source)

  def __getitem__(self, index):
    return self.source[index]

  @property
  def input_shape(self) -> tuple[int, int, int]:
    return _spec(self.name).input_shape

  @property
  def num_classes(self) -> int:
    return _spec(self.name).num_classes

  def __repr__(self) -> str:
    return f"Source({self.name!r}, split={self.split!r}, len={len(self)})"


def _not_found(name: str, split: str, data_dir: str, detail: str) -> str:
  tfds_name = _spec(name).tfds_name
  return (
      f"Dataset {name!r} (split {split!r}) is not available in data_dir "
      f"{data_dir!r}: {detail}\n"
      "jaxsparse reads it with tfds.data_source, which needs the dataset "
      "prepared in the array_record format. On a machine with internet "
      "access (and TensorFlow, which tfds uses to generate this dataset), "
      "run one of:\n"
      f"  tfds build {tfds_name} --data_dir={data_dir} "
      "--file_format=array_record\n"
      "  python -c \"import tensorflow_datasets as tfds; "
      f"tfds.data_source('{tfds_name}', data_dir='{data_dir}', "
      "builder_kwargs={'file_format': 'array_record'})\"\n"
      f"then copy {os.path.join(data_dir, tfds_name)} to this machine, or "
      "pass data_dir=... to where it is. The built-in 'digits' dataset "
      "needs no preparation."
  )


def load(
    name: str,
    split: str,
    data_dir: str | None = None,
    *,
    download: bool = False,
) -> Source:
  """A random-access `Source` for one split of a supported dataset.

  Args:
    name: one of `SUPPORTED_DATASETS` (``"digits"``, ``"mnist1d"``,
      ``"mnist"``, ``"fashion_mnist"``, ``"cifar10"``).
    split: a tfds split, e.g. ``"train"``, ``"test"``, ``"train[:90%]"``.
    data_dir: tfds data directory; defaults to `default_data_dir()`.
    download: let tfds download and prepare a missing dataset (needs internet
      and TensorFlow). ``"digits"`` and ``"mnist1d"`` are always prepared
      offline.

  Returns:
    A `Source` (``len``, ``[i]``) of raw examples.

  Raises:
    ValueError: unknown dataset name.
    DatasetNotFoundError: the dataset is not prepared in `data_dir`.
  """
  spec = _spec(name)
  data_dir = os.path.expanduser(data_dir or default_data_dir())
  if name == "digits":
    builder = prepare_digits(data_dir)
    return Source(name, split, builder.as_data_source(split=split))
  if name == "mnist1d":
    return Source(name, split, _mnist1d_source(split, data_dir))
  try:
    source = tfds.data_source(
        spec.tfds_name,
        split=split,
        data_dir=data_dir,
        download=download,
        builder_kwargs={"file_format": "array_record"},
    )
  except Exception as e:  # tfds raises various types from deep inside.
    detail = _diagnose(spec.tfds_name, data_dir)
    if detail is None:
      raise
    raise DatasetNotFoundError(_not_found(name, split, data_dir, detail)) from e
  return Source(name, split, source)


def _diagnose(tfds_name: str, data_dir: str) -> str | None:
  """Why `tfds_name` cannot be read from `data_dir`, or None if it can."""
  try:
    builder = tfds.builder(tfds_name, data_dir=data_dir)
  except Exception as e:
    return f"tfds could not open it ({type(e).__name__}: {e})."
  if not builder.is_prepared():
    return f"no prepared copy found (looked in {builder.data_dir})."
  file_format = builder.info.file_format
  random_access = tfds.core.file_adapters.FileFormat.with_random_access()
  if file_format is not None and file_format not in random_access:
    return (
        f"it is prepared in {builder.data_dir} in the {file_format.value} "
        "format, which has no random access; prepare it again with "
        "--file_format=array_record (in another data_dir or after deleting "
        "it)."
    )
  return None


# ---------------------------------------------------------------------------
# Batching.


def _source_name(source: Any, name: str | None) -> str:
  name = name if name is not None else getattr(source, "name", None)
  if name is None:
    raise ValueError(
        "Cannot tell how to normalize this source: pass name=... (one of "
        f"{', '.join(sorted(SUPPORTED_DATASETS))}) or use data.load()."
    )
  _spec(name)
  return name


CACHE_MAX_EXAMPLES = 100_000  # e.g. MNIST's 60,000 train images: 47 MB


def make_loader(
    source: Sequence[Any],
    batch_size: int,
    *,
    seed: int = 0,
    shuffle: bool = True,
    num_epochs: int | None = 1,
    drop_remainder: bool = False,
    worker_count: int = 0,
    name: str | None = None,
    cache: bool | None = None,
    rows: slice | None = None,
) -> Iterable[Batch]:
  """Normalized numpy batches of a source, through a `grain.MapDataset`.

  Each epoch visits every example exactly once, in an order that depends
  only on `seed` and the epoch number: epoch e is
  `np.random.default_rng([seed, e]).permutation(n)`. Batches never straddle
  two epochs: with ``drop_remainder=False`` the last batch of each epoch is
  smaller. Batch `step` is `loader[step]` (random access, so a resumed run
  sees the same batches).

  Args:
    source: a `Source` from `load`, or any random-access sequence of raw
      examples (then pass `name`).
    batch_size: examples per batch.
    seed: shuffle seed.
    shuffle: shuffle each epoch (else the source order).
    num_epochs: passes over the data; None repeats forever.
    drop_remainder: drop each epoch's last, smaller batch.
    worker_count: 0 reads in this process; more uses grain worker processes.
    name: dataset name for normalization (default: `source.name`).
    cache: decode every example once and keep them in memory (the batches
      are the same). None: when the source has at most `CACHE_MAX_EXAMPLES`
      examples. Reading digits from its array_record file costs about 16 ms
      per batch of 64 here, ten times the training step.
    rows: read only these rows of every batch (a process's share in a
      multi-process run, `jaxsparse.distributed.process_rows`); the
      batches' order and content do not depend on the process count.

  Returns:
    A `Batches` (``worker_count=0``; supports ``len``, iteration and
    ``ds[step]``) or a `grain.IterDataset` with `worker_count` processes, of
    dicts ``{"image": float32 (B, H, W, C), "label": int32 (B,)}``.
  """
  name = _source_name(source, name)
  if batch_size < 1:
    raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
  if num_epochs is not None and num_epochs < 1:
    raise ValueError(f"num_epochs must be >= 1 or None, got {num_epochs}.")
  cached = cache or (cache is None and worker_count == 0
                     and len(source) <= CACHE_MAX_EXAMPLES)
  if cached:
    arrays = to_arrays(source, name=name)
    fetch = _Gather(arrays)
  else:
    fetch = _Fetch(source, name)
  ds = Batches(len(source), batch_size, fetch, seed=seed, shuffle=shuffle,
               num_epochs=num_epochs, drop_remainder=drop_remainder,
               rows=rows)
  if worker_count > 0:
    from absl import flags

    if not flags.FLAGS.is_parsed():  # grain workers read absl flags.
      flags.FLAGS.mark_as_parsed()
    return grain.MapDataset.source(ds).to_iter_dataset().mp_prefetch(
        grain.MultiprocessingOptions(num_workers=worker_count))
  return ds


def _stack(examples: Sequence[Any]) -> Batch:
  """Stacks the image and label of raw examples (other features dropped)."""
  return {"image": np.stack([np.asarray(ex["image"]) for ex in examples]),
          "label": np.asarray([ex["label"] for ex in examples])}


class Batches(Sequence):
  """Random-access batches: `batches[step]` for step in [0, len)."""

  def __init__(self, n: int, batch_size: int, fetch, *, seed: int,
               shuffle: bool, num_epochs: int | None, drop_remainder: bool,
               rows: slice | None = None):
    self.n, self.batch_size, self.fetch = n, batch_size, fetch
    self.rows = slice(None) if rows is None else rows
    self.seed, self.shuffle, self.num_epochs = seed, shuffle, num_epochs
    self.per_epoch = (n // batch_size if drop_remainder
                      else -(-n // batch_size))
    self._perms: dict[int, np.ndarray] = {}

  def __len__(self) -> int:
    if self.num_epochs is None:
      return 2**62  # repeats forever
    return self.per_epoch * self.num_epochs

  def order(self, epoch: int) -> np.ndarray:
    """The example indices of `epoch`, in the order they are visited."""
    if epoch not in self._perms:
      if len(self._perms) > 2:
        self._perms.clear()
      self._perms[epoch] = (
          np.random.default_rng([self.seed, epoch]).permutation(self.n)
          if self.shuffle else np.arange(self.n))
    return self._perms[epoch]

  def __getitem__(self, step):
    if not 0 <= step < len(self):
      raise IndexError(step)
    epoch, j = divmod(int(step), self.per_epoch)
    b = self.batch_size
    return self.fetch(self.order(epoch)[j * b:(j + 1) * b][self.rows])

  def __iter__(self):
    step = 0
    while step < len(self):
      yield self[step]
      step += 1


@dataclasses.dataclass(frozen=True)
class _Fetch:
  """Reads, stacks and normalizes the examples at a batch of indices."""

  source: Any
  name: str

  def __call__(self, index: np.ndarray) -> Batch:
    examples = [self.source[int(i)] for i in index]
    spec = _spec(self.name)
    if spec.resize:
      examples = [dict(ex, image=center_resize(ex["image"],
                                               spec.input_shape[:2]))
                  for ex in examples]
    return normalize(_stack(examples), self.name)


def center_resize(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
  """The central square of `image` (H, W, C uint8), resized to `size`."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  image = np.asarray(image)
  h, w = image.shape[:2]
  side = min(h, w)
  top, left = (h - side) // 2, (w - side) // 2
  crop = image[top:top + side, left:left + side]
  out = Image.fromarray(crop.squeeze(-1) if crop.shape[-1] == 1 else crop)
  out = np.asarray(out.resize((size[1], size[0]), Image.BILINEAR))
  return out.reshape(size + image.shape[2:])


@dataclasses.dataclass(frozen=True)
class _Gather:
  """The batch of normalized arrays at a batch of example indices."""

  arrays: Batch

  def __call__(self, index: np.ndarray) -> Batch:
    return {k: v[index] for k, v in self.arrays.items()}


def to_arrays(
    source: Sequence[Any],
    *,
    name: str | None = None,
    chunk_size: int = 4096,
) -> Batch:
  """A whole split as normalized arrays, in source order (for evaluation).

  Returns:
    ``{"image": float32 (N, H, W, C), "label": int32 (N,)}``.
  """
  name = _source_name(source, name)
  n = len(source)
  images, labels = [], []
  for start in range(0, n, chunk_size):
    stop = min(start + chunk_size, n)
    batch = _stack([source[i] for i in range(start, stop)])
    images.append(batch["image"])
    labels.append(batch["label"])
  if not images:
    shape = _spec(name).input_shape
    return {"image": np.zeros((0, *shape), np.float32),
            "label": np.zeros((0,), np.int32)}
  return normalize({"image": np.concatenate(images),
                    "label": np.concatenate(labels)}, name)
