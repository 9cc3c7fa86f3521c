"""The backbone registry, in-model preprocessing, freezing and unfreezing."""

import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from tl_keras.errors import UserError
from tl_keras import families
from tl_keras.models import applications
from tl_keras.models import blocks


def _smallest_of_each_family():
  """The registry rows that run by default: the smallest member of each
  family. The others take 3-25 s each to build and cut on 2 cores (2.5
  minutes for the 27 rows under 40M parameters) and share their family's
  code paths; they run with `pytest -m slow`."""
  smallest = {}
  for name, spec in applications.REGISTRY.items():
    family = applications.describe(name)["family"]
    if (family not in smallest or spec.parameters
        < applications.REGISTRY[smallest[family]].parameters):
      smallest[family] = name
  return set(smallest.values())


@pytest.mark.parametrize("name", [
    n if n in _smallest_of_each_family() else
    pytest.param(n, marks=pytest.mark.slow)
    for n in sorted(applications.REGISTRY)])
def test_every_registry_entry_builds(name):
  spec = applications.REGISTRY[name]
  size = max(spec.min_size, 32)
  model = applications.build_classifier(name, 3, image_size=size, weights=None)
  images = np.random.default_rng(0).integers(0, 256, (2, 40, 50, 3))
  probs = model.predict(images.astype("float32"), verbose=0)
  assert probs.shape == (2, 3)
  np.testing.assert_allclose(probs.sum(-1), 1.0, rtol=1e-5)
  base = applications.base_of(model)
  assert not base.trainable
  assert base.count_params() == spec.parameters
  # Every block boundary is a clean cut: the rest of the base is a model
  # of the tensor just below it (Keras refuses if a skip path crosses).
  grouped = blocks.blocks(base)
  assert len(grouped) >= 3
  members = [l for _, block in grouped for l in block]
  assert {id(l) for l in members} == {
      id(o) for o in base.operations
      if not isinstance(o, keras.layers.InputLayer)}
  for _, block in grouped[1:]:
    below = base.operations[base.operations.index(block[0]) - 1]
    keras.Model(below.output, base.output)
  keras.backend.clear_session()


def test_registry_covers_the_families():
  families = {spec.family for spec in applications.REGISTRY.values()}
  assert {"resnet", "resnet_v2", "mobilenet", "efficientnet", "efficientnet_v2",
          "convnext", "densenet", "inception", "xception", "vgg"} <= families


@pytest.mark.parametrize("mode, reference", [
    ("caffe", keras.applications.resnet50.preprocess_input),
    ("tf", keras.applications.mobilenet_v2.preprocess_input),
    ("torch", keras.applications.densenet.preprocess_input),
])
def test_preprocessing_layer_matches_keras_applications(mode, reference):
  pixels = np.random.default_rng(1).uniform(0, 255, (2, 4, 4, 3)).astype(
      "float32")
  ours = applications.ImagePreprocessing(mode)(pixels)
  np.testing.assert_allclose(ours, reference(pixels.copy()), rtol=1e-5,
                             atol=1e-4)


def test_unknown_model_lists_close_matches():
  with pytest.raises(UserError, match="did you mean resnet50"):
    applications.get_backbone("resnet05")


def test_image_size_below_minimum_is_rejected():
  with pytest.raises(UserError, match="too small for inceptionv3"):
    applications.resolve_image_size("inceptionv3", 32)


def test_convnet_small_has_no_imagenet_weights():
  with pytest.raises(UserError, match="--weights=synthetic"):
    applications.build_base("convnet_small", 32, "imagenet")


def test_base_is_called_in_inference_mode():
  """Dropout or BN in training mode would make these two calls differ."""
  model = applications.build_classifier("convnet_small", 3, weights=None,
                                  dropout=0.0)
  families.of(model).unfreeze_top(model, "all", None)
  x = np.random.default_rng(2).uniform(0, 255, (4, 32, 32, 3)).astype("float32")
  np.testing.assert_allclose(model(x, training=True), model(x, training=False),
                             rtol=1e-5, atol=1e-6)


def test_unfreeze_top_blocks_keeps_batchnorm_frozen():
  model = applications.build_classifier("convnet_small", 3, weights=None)
  base = applications.base_of(model)
  assert [name for name, _ in blocks.blocks(base)] == [
      "stage0", "stage1", "stage2"]
  families.of(model).unfreeze_top(model, "layers", 1)
  assert families.of(model).first_unfrozen_block(model, "layers", 1) == "stage2"
  layers = [l for l in base.layers if not isinstance(l, keras.layers.InputLayer)]
  top = [l for l in layers if l.name.startswith("stage2")]
  bottom = [l for l in layers if not l.name.startswith("stage2")]
  assert not any(l.trainable for l in bottom)
  for layer in top:
    assert layer.trainable == (
        not isinstance(layer, keras.layers.BatchNormalization))
  assert all(not l.trainable for l in base.layers
             if isinstance(l, keras.layers.BatchNormalization))


def test_unfreeze_beyond_depth_names_the_flag():
  model = applications.build_classifier("convnet_small", 3, weights=None)
  with pytest.raises(UserError, match="--unfreeze=999 exceeds the 3 blocks"):
    families.of(model).unfreeze_top(model, "layers", 999)


def test_unfreeze_never_splits_a_residual_block():
  """resnet50: a fraction counts blocks; the boundary is a block's start."""
  model = applications.build_classifier("resnet50", 3, image_size=32, weights=None)
  grouped = blocks.blocks(applications.base_of(model))
  assert [n for n, _ in grouped[-3:]] == [
      "conv5_block1", "conv5_block2", "conv5_block3"]
  assert families.of(model).unfreeze_count(model, "fraction", 0.25) == round(
      0.25 * len(grouped))
  families.of(model).unfreeze_top(model, "layers", 2, train_batchnorm=True)
  trainable = {l.name for l in applications.base_of(model).layers
               if l.trainable and not isinstance(l, keras.layers.InputLayer)}
  assert {n.split("_")[1] for n in trainable} == {"block2", "block3"}
  assert all(n.startswith("conv5_") for n in trainable)
  assert "conv5_block2_add" in trainable and "conv5_block2_1_conv" in trainable
  keras.backend.clear_session()


def test_offline_imagenet_weights_give_a_clear_error(monkeypatch):
  def fail(*args, **kwargs):
    raise Exception("URL fetch failure on https://example/weights.h5: None")
  monkeypatch.setattr(keras.utils, "get_file", fail)
  monkeypatch.setattr("keras.src.utils.file_utils.get_file", fail)
  with pytest.raises(UserError, match="seems offline.*--weights=PATH"):
    applications.build_base("mobilenetv2", 32, "imagenet")


# EfficientNet-B0 has both kinds: dropout and stochastic depth (Dropout
# layers with a noise shape, as EfficientNet-Lite's drop-connect).
@pytest.mark.parametrize("name", ["efficientnet_b0"])
def test_a_saved_classifier_keeps_its_frozen_base_in_inference_mode(
    name, tmp_path):
  """Loaded with plain Keras and called with training=True, the frozen
  base's dropout and stochastic depth stay off: the features are those
  the head was fitted on."""
  model = applications.build_classifier(name, 3, weights=None, image_size=64)
  model.save(str(tmp_path / "model.keras"))
  code = (
      "import numpy as np, keras, tl_keras.models.applications\n"
      f"m = keras.saving.load_model({str(tmp_path / 'model.keras')!r})\n"
      "f = keras.Model(m.input, m.get_layer('pool').output)\n"
      "x = np.random.default_rng(0).uniform(0, 255, (4, 64, 64, 3))\n"
      "a, b = np.asarray(f(x, training=False)), np.asarray(f(x, training=True))\n"
      "print(float(np.abs(a - b).max() / np.abs(a).max()))\n"
      "base = m.get_layer('base')\n"
      "drops = [l for l in base._flatten_layers() if 'Dropout' in type(l).__name__]\n"
      "assert drops and all(not l.trainable for l in drops)\n"
      "for l in base.layers: l.trainable = True\n"
      "c = np.asarray(f(x, training=True))\n"
      "print(float(np.abs(a - c).max() / np.abs(a).max()))\n")
  result = subprocess.run([sys.executable, "-c", code], capture_output=True,
                          text=True, check=False,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
  assert result.returncode == 0, result.stderr[-2000:]
  frozen, unfrozen = map(float, result.stdout.split())
  assert frozen == 0.0
  assert unfrozen > 0.01  # unfrozen, they train as usual
