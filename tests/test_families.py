"""The family matrix: one small member of each backbone family, end to end.

Random weights (`weights=None`) at the smallest input each accepts, on tiny
data: the frozen base is deterministic in training mode, the cached and
uncached phase 1 train the same head, and every TFLite variant converts,
takes raw uint8 pixels and is what it claims: float32 agrees with Keras,
float16 stores float16 weights, int8 is integer-only with uint8 output. The
block boundaries of every registry row are checked in test_models.py.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tl_keras.data import datasets
from tl_keras.export import litert
from tl_keras.export import tflite
from tl_keras import families
from tl_keras.models import applications
from tl_keras.models import freezing
from tl_keras import training

STRATEGY = tf.distribute.get_strategy()
CLASSES = 3
# Largest |tflite - keras| probability for float32. Random deep networks
# amplify the converter's different (equally valid) summation order more
# than trained ones: 3e-3 measured on resnet50 at 32 px. They amplify
# float16's weight rounding chaotically (0.45 measured), so float16 and
# int8 agreement is measured on trained models (benchmarks/int8_families.py).
FLOAT32_TOLERANCE = 1e-2


def _size(name):
  return max(32, applications.get_backbone(name).min_size)


def _images(n, size, seed=0):
  """Images of different colors and brightness gradients, with noise.

  Uniform noise alone would not do: globally pooled, every noise image
  gives about the same features, and the head would separate rounding.
  """
  rng = np.random.default_rng(seed)
  color = rng.uniform(0, 255, (n, 1, 1, 3))
  ramp = np.linspace(-1, 1, size)[None, :, None, None] * rng.uniform(
      -80, 80, (n, 1, 1, 3))
  noise = rng.uniform(-20, 20, (n, size, size, 3))
  return np.clip(color + ramp + noise, 0, 255).astype(np.uint8)


def _spread_head(model, images):
  """Sets the classifier so its logits spread (std ~4) on `images`.

  Random backbones give features of any scale (1e-13 for MobileNetV2):
  BatchNorm's statistics are first estimated on the images, as a trained
  network's would be, then a head scaled to the features makes the
  probabilities far from uniform, so a wrong conversion shows. Its weights
  stay in float16's range.
  """
  freezing.recalibrate_batchnorm(model, images.astype(np.float32),
                                 batch_size=len(images))
  extractor = keras.Model(model.input, families.of(model).head_parts(model)[0])
  features = extractor(images.astype(np.float32), training=False).numpy()
  rng = np.random.default_rng(1)
  kernel = rng.normal(size=(features.shape[-1], CLASSES))
  logits = (features - features.mean(0)) @ kernel
  kernel *= 4.0 / max(float(logits.std()), 1e-12)
  bias = -(features.mean(0) @ kernel)
  assert np.abs(kernel).max() < 1e3
  model.get_layer("classifier").set_weights(
      [kernel.astype(np.float32), bias.astype(np.float32)])
  return extractor


def _spread_member(name):
  """(size, model, 8 images, feature extractor): `name` at its smallest
  input, random weights, its head set by `_spread_head`."""
  size = _size(name)
  keras.utils.set_random_seed(0)
  model = applications.build_classifier(name, CLASSES, image_size=size,
                                  weights=None, dropout=0.0)
  images = _images(8, size)
  return size, model, images, _spread_head(model, images)


# Converting the larger members takes 40-70 s each on 2 cores, and their
# two phase-1 trainings 6-15 s: they run with `pytest -m slow`. ConvNeXt's
# LayerNorm rewrites keep their own fast tests in test_tflite.py.
SLOW = ("resnet50", "resnet50v2", "efficientnetv2_b0", "densenet121",
        "inceptionv3", "xception", "convnext_tiny", "efficientnet_b0",
        "mobilenetv2")


def _by_speed(names):
  """`names` as parameters, the `SLOW` ones marked slow."""
  return [pytest.param(n, marks=pytest.mark.slow) if n in SLOW else n
          for n in names]


@pytest.mark.parametrize("name", _by_speed(applications.FAMILY_EXAMPLES))
def test_family_frozen_base_head_and_every_tflite_variant(name, tmp_path):
  size, model, images, extractor = _spread_member(name)
  x = images.astype(np.float32)
  # Frozen: Dropout, stochastic depth and BatchNorm inside the base are off
  # even when the model is called in training mode.
  np.testing.assert_array_equal(extractor(x, training=True).numpy(),
                                extractor(x, training=False).numpy())

  keras_probs = families.serving_of(model).keras_probabilities(model, images)
  assert keras_probs.max(-1).mean() > 0.6  # far from uniform: a fair check
  calibration = _images(8, size, seed=1)
  served = families.serving_of(model)
  with tflite.converters(model, served) as make:
    for variant in tflite.DEFAULT_VARIANTS:
      tflite.export(model, variant, str(tmp_path / tflite.filename(variant)),
                    serving=served, class_names=["a", "b", "c"],
                    calibration_images=calibration, make=make)
  sizes = {v: (tmp_path / tflite.filename(v)).stat().st_size
           for v in tflite.DEFAULT_VARIANTS}
  assert sizes["float16"] < 0.6 * sizes["float32"]
  assert max(sizes["dynamic"], sizes["int8"]) < 0.35 * sizes["float32"]
  for variant in tflite.DEFAULT_VARIANTS:
    runner = litert.ImageRunner(str(tmp_path / tflite.filename(variant)))
    assert runner.input["dtype"] == np.uint8
    assert list(runner.input["shape"]) == [1, size, size, 3]
    probs = runner.predict(images)
    np.testing.assert_allclose(probs.sum(-1), 1.0, atol=0.02)
    ops = runner.op_dtypes()
    if variant == "float32":
      np.testing.assert_allclose(probs, keras_probs, atol=FLOAT32_TOLERANCE)
      top2 = np.sort(keras_probs, -1)[:, -2:]
      clear = top2[:, 1] - top2[:, 0] > 2 * FLOAT32_TOLERANCE
      np.testing.assert_array_equal(probs.argmax(-1)[clear],
                                    keras_probs.argmax(-1)[clear])
    if variant == "float16":  # float16 weights, dequantized to compute
      assert "float16" in ops["DEQUANTIZE"]
    if variant == "int8":
      assert runner.input["quantization"] == (1.0, 0)
      assert runner.output["dtype"] == np.uint8
      assert not {op for op, dtypes in runner.op_dtypes().items()
                  if dtypes & {"float32", "float16"}}
  keras.backend.clear_session()


@pytest.mark.parametrize("name", ["efficientnet_b0", "mobilenetv2"])
def test_slow_members_are_frozen_in_training_mode(name):
  """The frozen-base check of the test above, for members whose TFLite
  conversions run only with `pytest -m slow` (EfficientNet's stochastic
  depth and dropout, MobileNetV2's BatchNorm)."""
  _, _, images, extractor = _spread_member(name)
  x = images.astype(np.float32)
  np.testing.assert_array_equal(extractor(x, training=True).numpy(),
                                extractor(x, training=False).numpy())
  keras.backend.clear_session()


# Ops the int16x8 file of a family keeps in float besides the input's cast
# and (de)quantization: there is no int16 HARD_SWISH kernel (XNNPACK takes
# the float ones as DELEGATE nodes).
INT16X8_FLOAT_OPS = {"mobilenetv3_small": {"HARD_SWISH", "DELEGATE"}}


@pytest.mark.slow  # 10-25 s a member; the variant is not a default export
@pytest.mark.parametrize("name", applications.FAMILY_EXAMPLES)
def test_family_int16x8_converts_and_runs(name, tmp_path):
  size, model, images, _ = _spread_member(name)
  path = str(tmp_path / tflite.filename("int16x8"))
  tflite.export(model, "int16x8", path, serving=families.serving_of(model),
                class_names=["a", "b", "c"],
                calibration_images=_images(8, size, seed=1))
  runner = litert.ImageRunner(path)
  assert runner.input["dtype"] == np.uint8
  assert runner.output["dtype"] == np.float32
  np.testing.assert_allclose(runner.predict(images).sum(-1), 1.0, atol=0.02)
  ops = runner.op_dtypes()
  float_ops = {op for op, dtypes in ops.items()
               if dtypes & {"float32", "float16"}}
  assert float_ops == {"CAST", "QUANTIZE", "DEQUANTIZE"} | (
      INT16X8_FLOAT_OPS.get(name, set())), float_ops
  assert "int16" in ops["CONV_2D"]
  keras.backend.clear_session()


@pytest.mark.parametrize("name", _by_speed(applications.FAMILY_EXAMPLES))
def test_family_cached_and_uncached_phase_1_train_the_same_head(name):
  size = _size(name)
  images = _images(8, size)
  labels = np.arange(8, dtype=np.int32) % 2
  ds = tf.data.Dataset.from_tensor_slices((images, labels))
  splits = datasets.Splits(train=ds, validation=ds, test=ds,
                       sizes={"train": 8, "validation": 8, "test": 8},
                       class_names=["a", "b"])
  keras.utils.set_random_seed(3)
  model = applications.build_classifier(name, 2, image_size=size, weights=None,
                                  dropout=0.0)
  head = model.get_layer("classifier")
  start, heads = head.get_weights(), []
  for cached in (False, True):
    head.set_weights(start)
    features = training.FeatureCache(
        model, splits, family=families.of(model), image_size=size,
        batch_size=4) if cached else None
    training.train_phase(
        model, training.PhaseSpec("head", 1, 1e-2), splits,
        training.Context(STRATEGY, size, 4, augment="none"),
        features=features)
    heads.append(head.get_weights())
  for slow, fast in zip(*heads):
    np.testing.assert_allclose(slow, fast, rtol=1e-4, atol=1e-5)
  keras.backend.clear_session()
