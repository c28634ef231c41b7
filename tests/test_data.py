"""Tests for jaxsparse.experiments.data: digits, tfds sources, grain loader."""

import itertools

import numpy as np
import pytest
import tensorflow_datasets as tfds
from sklearn.datasets import load_digits

from jaxsparse.experiments import data

_CIFAR10_MEAN = np.array([0.4914, 0.4822, 0.4465], np.float32)
_CIFAR10_STD = np.array([0.2470, 0.2435, 0.2616], np.float32)


@pytest.fixture(scope="module")
def digits_dir(tmp_path_factory):
  return str(tmp_path_factory.mktemp("tfds"))


@pytest.fixture(scope="module")
def digits_train(digits_dir):
  return data.load("digits", "train", digits_dir)


@pytest.fixture(scope="module")
def sk_digits():
  return load_digits()


def _index_source(n):
  """Examples whose label is their index (to track visits)."""
  return [{"image": np.full((8, 8, 1), i % 17, np.uint8), "label": i}
          for i in range(n)]


def _labels(batches):
  return np.concatenate([b["label"] for b in batches])


# -- digits ------------------------------------------------------------------


def test_digits_splits_match_sklearn(digits_dir, digits_train, sk_digits):
  test = data.load("digits", "test", digits_dir)
  assert len(digits_train) == 1437 and len(test) == 360
  assert len(digits_train) + len(test) == 1797 == len(sk_digits.target)
  train_arr = data.to_arrays(digits_train)
  test_arr = data.to_arrays(test)
  np.testing.assert_array_equal(train_arr["label"], sk_digits.target[:1437])
  np.testing.assert_array_equal(test_arr["label"], sk_digits.target[1437:])
  assert train_arr["label"].dtype == np.int32
  assert train_arr["image"].dtype == np.float32
  assert train_arr["image"].shape == (1437, 8, 8, 1)
  # Normalized pixels are sklearn's 0..16 values divided by 16.
  np.testing.assert_array_equal(
      train_arr["image"][..., 0] * 16.0, sk_digits.images[:1437])
  np.testing.assert_array_equal(
      test_arr["image"][..., 0] * 16.0, sk_digits.images[1437:])
  assert train_arr["image"].min() == 0.0 and train_arr["image"].max() == 1.0


def test_digits_raw_examples(digits_train, sk_digits):
  for i in (0, 1, 700, 1436):
    ex = digits_train[i]
    assert ex["image"].dtype == np.uint8 and ex["image"].shape == (8, 8, 1)
    np.testing.assert_array_equal(ex["image"][..., 0], sk_digits.images[i])
    assert int(ex["label"]) == sk_digits.target[i]


def test_digits_is_a_tfds_dataset(digits_dir, digits_train):
  del digits_train  # prepared by the fixture
  src = tfds.data_source("jaxsparse_digits", split="test", data_dir=digits_dir,
                         download=False)
  assert len(src) == 360
  builder = data.DigitsBuilder(data_dir=digits_dir)
  assert builder.is_prepared()
  assert builder.info.splits["train"].num_examples == 1437
  assert builder.info.features["label"].num_classes == 10


def test_digits_reuses_prepared_data(digits_dir, digits_train):
  again = data.load("digits", "train", digits_dir)
  np.testing.assert_array_equal(
      data.to_arrays(again)["label"], data.to_arrays(digits_train)["label"])


def test_dataset_info():
  assert data.dataset_info("digits") == ((8, 8, 1), 10)
  assert data.dataset_info("mnist") == ((28, 28, 1), 10)
  assert data.dataset_info("fashion_mnist") == ((28, 28, 1), 10)
  assert data.dataset_info("cifar10") == ((32, 32, 3), 10)


# -- loader ------------------------------------------------------------------


def test_loader_shapes_and_remainder(digits_train):
  batches = list(data.make_loader(digits_train, 128, seed=0))
  assert len(batches) == 12  # ceil(1437 / 128)
  assert [len(b["label"]) for b in batches] == [128] * 11 + [1437 - 11 * 128]
  b = batches[0]
  assert b["image"].shape == (128, 8, 8, 1) and b["image"].dtype == np.float32
  assert b["label"].dtype == np.int32
  assert 0.0 <= b["image"].min() and b["image"].max() <= 1.0
  dropped = list(data.make_loader(digits_train, 128, drop_remainder=True))
  assert len(dropped) == 11
  assert all(len(b["label"]) == 128 for b in dropped)


def test_loader_epoch_label_counts(digits_train, sk_digits):
  labels = _labels(data.make_loader(digits_train, 100, seed=3))
  np.testing.assert_array_equal(
      np.bincount(labels, minlength=10),
      np.bincount(sk_digits.target[:1437], minlength=10))


def test_every_example_once_per_epoch():
  n, bs = 53, 8
  src = _index_source(n)
  batches = list(data.make_loader(src, bs, seed=1, num_epochs=3,
                                  name="digits"))
  per_epoch = -(-n // bs)
  assert len(batches) == 3 * per_epoch
  # Batches never straddle epochs: each epoch ends with a short batch.
  assert [len(b["label"]) for b in batches[:per_epoch]][-1] == n % bs
  epochs = [_labels(batches[e * per_epoch:(e + 1) * per_epoch])
            for e in range(3)]
  for order in epochs:
    np.testing.assert_array_equal(np.sort(order), np.arange(n))
    assert not np.array_equal(order, np.arange(n))  # shuffled
  assert not np.array_equal(epochs[0], epochs[1])  # reshuffled each epoch
  assert not np.array_equal(epochs[1], epochs[2])


def test_loader_repeats_forever_with_none():
  n = 20
  loader = data.make_loader(_index_source(n), 5, seed=0, num_epochs=None,
                            name="digits")
  labels = _labels(itertools.islice(loader, 12))  # three epochs
  for e in range(3):
    np.testing.assert_array_equal(np.sort(labels[e * n:(e + 1) * n]),
                                  np.arange(n))


def test_loader_deterministic_from_seed(digits_train):
  def run(seed):
    return list(data.make_loader(digits_train, 64, seed=seed, num_epochs=2))

  a, b, c = run(7), run(7), run(8)
  for x, y in zip(a, b, strict=True):
    np.testing.assert_array_equal(x["image"], y["image"])
    np.testing.assert_array_equal(x["label"], y["label"])
  # Images identify examples (no duplicates would hide a reorder).
  assert not np.array_equal(
      np.concatenate([x["image"] for x in a]),
      np.concatenate([x["image"] for x in c]))


def test_loader_without_shuffle_keeps_order():
  n = 30
  labels = _labels(data.make_loader(_index_source(n), 7, shuffle=False,
                                    name="digits"))
  np.testing.assert_array_equal(labels, np.arange(n))


def test_loader_needs_a_name_for_plain_sequences():
  with pytest.raises(ValueError, match="name="):
    data.make_loader(_index_source(4), 2)


def test_loader_rejects_bad_arguments(digits_train):
  with pytest.raises(ValueError, match="batch_size"):
    data.make_loader(digits_train, 0)
  with pytest.raises(ValueError, match="num_epochs"):
    data.make_loader(digits_train, 8, num_epochs=0)


# -- normalization -----------------------------------------------------------


def test_normalize_per_dataset():
  rng = np.random.default_rng(0)
  raw = rng.integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
  labels = np.arange(4, dtype=np.int64)
  out = data.normalize({"image": raw, "label": labels}, "cifar10")
  expected = (raw.astype(np.float64) / 255.0 - _CIFAR10_MEAN) / _CIFAR10_STD
  np.testing.assert_allclose(out["image"], expected, rtol=1e-5, atol=1e-5)
  assert out["image"].dtype == np.float32 and out["label"].dtype == np.int32
  gray = raw[..., :1]
  np.testing.assert_allclose(
      data.normalize({"image": gray, "label": labels}, "mnist")["image"],
      gray / 255.0, rtol=1e-6)
  small = rng.integers(0, 17, (4, 8, 8, 1), dtype=np.uint8)
  np.testing.assert_array_equal(
      data.normalize({"image": small, "label": labels}, "digits")["image"],
      (small / 16.0).astype(np.float32))


# -- tfds datasets (mocked) --------------------------------------------------


def test_mnist_through_mock_data(tmp_path):
  with tfds.testing.mock_data(num_examples=24):
    src = data.load("mnist", "train", str(tmp_path))
    assert len(src) == 24
    raw = np.stack([np.asarray(src[i]["image"]) for i in range(24)])
    raw_labels = np.array([int(src[i]["label"]) for i in range(24)])
    batches = list(data.make_loader(src, 8, seed=0, shuffle=False))
    arrays = data.to_arrays(src)
  assert raw.shape == (24, 28, 28, 1) and raw.dtype == np.uint8
  assert [b["image"].shape for b in batches] == [(8, 28, 28, 1)] * 3
  np.testing.assert_allclose(np.concatenate([b["image"] for b in batches]),
                             raw / 255.0, rtol=1e-6)
  np.testing.assert_array_equal(_labels(batches), raw_labels)
  np.testing.assert_allclose(arrays["image"], raw / 255.0, rtol=1e-6)
  np.testing.assert_array_equal(arrays["label"], raw_labels)
  assert arrays["label"].dtype == np.int32
  assert set(raw_labels) <= set(range(10))


def test_cifar10_through_mock_data(tmp_path):
  with tfds.testing.mock_data(num_examples=10):
    src = data.load("cifar10", "test", str(tmp_path))
    raw = np.stack([np.asarray(src[i]["image"]) for i in range(10)])
    batches = list(data.make_loader(src, 4, seed=5))
  assert raw.shape == (10, 32, 32, 3)
  assert [b["image"].shape for b in batches] == [
      (4, 32, 32, 3), (4, 32, 32, 3), (2, 32, 32, 3)]
  assert set(batches[0]) == {"image", "label"}  # the "id" feature is dropped
  got = np.concatenate([b["image"] for b in batches])
  expected = (raw / 255.0 - _CIFAR10_MEAN) / _CIFAR10_STD
  # Shuffled: match each batch row to a raw image.
  for row in got:
    dist = np.abs(expected - row).reshape(10, -1).max(axis=1)
    assert dist.min() < 1e-4
  assert len({np.argmin(np.abs(expected - row).reshape(10, -1).max(axis=1))
              for row in got}) == 10


# -- errors ------------------------------------------------------------------


@pytest.mark.parametrize("name", ["mnist", "fashion_mnist", "cifar10"])
def test_missing_dataset_error(tmp_path, name):
  data_dir = str(tmp_path / "empty")
  with pytest.raises(data.DatasetNotFoundError) as info:
    data.load(name, "train", data_dir)
  msg = str(info.value)
  assert f"'{name}'" in msg
  assert data_dir in msg
  assert "array_record" in msg
  assert f"tfds build {name}" in msg
  assert isinstance(info.value, RuntimeError)


def test_unknown_dataset_name():
  with pytest.raises(ValueError, match="imagenet") as info:
    data.load("imagenet", "train")
  for name in ("digits", "mnist", "fashion_mnist", "cifar10"):
    assert name in str(info.value)
  with pytest.raises(ValueError, match="supported"):
    data.dataset_info("svhn")


@pytest.mark.parametrize("drop", [True, False])
def test_cached_loader_gives_the_same_batches(digits_train, drop):
  kw = dict(seed=3, num_epochs=2, drop_remainder=drop)
  a = list(data.make_loader(digits_train, 100, cache=True, **kw))
  b = list(data.make_loader(digits_train, 100, cache=False, **kw))
  assert len(a) == len(b) == 2 * (14 if drop else 15)
  for x, y in zip(a, b, strict=True):
    assert x["image"].dtype == y["image"].dtype == np.float32
    np.testing.assert_array_equal(x["image"], y["image"])
    np.testing.assert_array_equal(x["label"], y["label"])
  loader = data.make_loader(digits_train, 100, cache=True, **kw)
  np.testing.assert_array_equal(loader[17]["label"], a[17]["label"])


# -- MNIST-1D ----------------------------------------------------------------


@pytest.fixture(scope="module")
def mnist1d_0():
  return data.mnist1d_arrays(0)


def test_mnist1d_shapes_dtypes_and_labels(mnist1d_0):
  x, y, x_test, y_test = mnist1d_0
  assert x.shape == (4000, 40) and x.dtype == np.float32
  assert x_test.shape == (1000, 40) and x_test.dtype == np.float32
  assert y.shape == (4000,) and y.dtype == np.int32
  assert y_test.shape == (1000,) and y_test.dtype == np.int32
  assert set(np.unique(y)) == set(range(10))
  assert np.bincount(y, minlength=10).min() > 300  # about 400 per class
  assert np.all(np.isfinite(x))
  assert abs(float(x.mean())) < 0.1 and 0.8 < float(x.std()) < 1.2


def test_mnist1d_is_deterministic_in_its_seed(mnist1d_0):
  data._MNIST1D_CACHE.pop(0, None)  # generate again, not from the cache
  again = data.mnist1d_arrays(0)
  for a, b in zip(mnist1d_0, again, strict=True):
    np.testing.assert_array_equal(a, b)
  other = data.mnist1d_arrays(1)
  assert not np.array_equal(other[0], mnist1d_0[0])


def test_mnist1d_leaves_global_rngs_alone():
  import random

  np.random.seed(123)
  random.seed(123)
  want_np, want_py = np.random.rand(3), random.random()
  np.random.seed(123)
  random.seed(123)
  data._MNIST1D_CACHE.pop(7, None)
  data.mnist1d_arrays(7)  # make_dataset calls np.random.seed / random.seed
  np.testing.assert_array_equal(np.random.rand(3), want_np)
  assert random.random() == want_py


def test_mnist1d_never_downloads(monkeypatch, tmp_path, mnist1d_0):
  import mnist1d.data

  def fail(*args, **kwargs):
    raise AssertionError("mnist1d.get_dataset (which downloads) was called")

  monkeypatch.setattr(mnist1d.data, "get_dataset", fail)
  monkeypatch.setattr(mnist1d, "get_dataset", fail)
  import requests
  monkeypatch.setattr(requests, "get", fail)
  data._MNIST1D_CACHE.pop(0, None)
  got = data.mnist1d_arrays(0, cache_dir=str(tmp_path))
  np.testing.assert_array_equal(got[0], mnist1d_0[0])
  assert (tmp_path / "mnist1d_seed0.npz").exists()
  data._MNIST1D_CACHE.pop(0, None)  # now read back from the disk cache
  np.testing.assert_array_equal(
      data.mnist1d_arrays(0, cache_dir=str(tmp_path))[2], mnist1d_0[2])


def test_mnist1d_through_load_and_loader(tmp_path, mnist1d_0):
  train = data.load("mnist1d", "train", str(tmp_path))
  test = data.load("mnist1d", "test", str(tmp_path))
  assert (len(train), len(test)) == (4000, 1000)
  assert train.input_shape == (40, 1, 1) and train.num_classes == 10
  arrays = data.to_arrays(test)
  np.testing.assert_array_equal(arrays["image"][..., 0, 0], mnist1d_0[2])
  np.testing.assert_array_equal(arrays["label"], mnist1d_0[3])
  batch = next(iter(data.make_loader(train, 16, seed=0)))
  assert batch["image"].shape == (16, 40, 1, 1)
  assert batch["image"].dtype == np.float32
  with pytest.raises(ValueError, match="splits"):
    data.load("mnist1d", "validation", str(tmp_path))
