"""The KerasHub image family: a local preset folder through main.py.

The preset is a random-init ResNet with ResNet-18's basic blocks (two
stacks, 64 filters) and a ResNet image converter at 32 px, written with
`save_to_preset` as a downloaded preset would be.
"""

import json

import numpy as np
import pytest
import tensorflow as tf

from tests.helpers import run_main
from tl_keras import config as config_lib
from tl_keras.errors import UserError
from tl_keras import families
from tl_keras.models import applications
from tl_keras.models import blocks
from tl_keras.modes import predict_mode
from tl_keras.modes import predictors

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def write_preset(path, image_size=32):
  import keras_hub  # pylint: disable=g-import-not-at-top
  backbone = keras_hub.models.ResNetBackbone(
      input_conv_filters=[64], input_conv_kernel_sizes=[3],
      stackwise_num_filters=[64, 64], stackwise_num_blocks=[1, 1],
      stackwise_num_strides=[1, 2], block_type="basic_block",
      use_pre_activation=False, image_shape=(None, None, 3))
  converter = keras_hub.layers.ResNetImageConverter(
      image_size=(image_size, image_size),
      scale=[1 / (255 * s) for s in STD],
      offset=[-m / s for m, s in zip(MEAN, STD)])
  keras_hub.models.ResNetImageClassifier(
      backbone=backbone, num_classes=10,
      preprocessor=keras_hub.models.ResNetImageClassifierPreprocessor(
          image_converter=converter)).save_to_preset(str(path))
  return str(path), converter


@pytest.fixture(scope="module")
def preset(tmp_path_factory):
  return write_preset(tmp_path_factory.mktemp("hub") / "resnet_basic")


@pytest.fixture(scope="module")
def hub_run(preset, tmp_path_factory):
  out = tmp_path_factory.mktemp("run") / "out"
  result = run_main(f"--model={preset[0]}", "--weights=pretrained",
                    "--dataset=synthetic", "--batch_size=16", "--min_steps=0",
                    "--head_epochs=1", "--finetune_epochs=1",
                    "--finetune_lr=1e-3", "--batchnorm=frozen",
                    "--parity_samples=60", "--notransfer_check",
                    f"--output_dir={out}")
  assert result.returncode == 0, result.stderr[-3000:]
  return out


def test_names_find_their_family(preset, tmp_path):
  assert families.find("resnet50").name == "keras_applications"
  assert families.find("resnet_18_imagenet").name == "keras_hub_image"
  assert families.find(preset[0]).name == "keras_hub_image"
  assert families.find("bert_tiny_en_uncased").name == "keras_hub_text"
  with pytest.raises(UserError, match="no such preset folder"):
    families.find(str(tmp_path / "missing"))


def test_the_converter_normalization_is_inside_the_model(preset):
  """The model's preprocess layer computes what KerasHub's converter does
  in tf.data, on images already at the preset's size."""
  config = config_lib.Config(model=preset[0], weights="none")
  family = families.find(preset[0])
  model = family.build(config, 3, tf.distribute.get_strategy())
  assert family.image_size(config) == 32
  images = np.random.default_rng(0).integers(0, 256, (4, 32, 32, 3))
  images = images.astype(np.float32)
  ours = model.get_layer("preprocess")(images)
  np.testing.assert_allclose(ours, preset[1](images), atol=1e-4)
  assert families.of(model) is family
  assert family.unfreeze_count(model, "all", None) == len(
      blocks.blocks(applications.base_of(model)))


def test_a_preset_folder_trains_exports_and_serves(hub_run):
  record = json.loads((hub_run / "run.json").read_text())
  metrics = json.loads((hub_run / "metrics.json").read_text())
  assert record["model"]["family"] == "ResNetBackbone"
  assert record["model"]["preprocessing"].startswith("x * [0.0171")
  phases = {h["phase"] for h in record["history"]}
  assert {"head", "finetune"} <= phases
  assert set(metrics["tflite"]) == {"float32", "float16", "dynamic", "int8"}
  assert metrics["tflite"]["float32"]["agreement"] == 1.0
  # Every artifact gives the same answer on a photo-sized image.
  photo = np.random.default_rng(1).integers(0, 256, (90, 70, 3), np.uint8)
  path = hub_run / "photo.png"
  tf.io.write_file(str(path), tf.io.encode_png(photo))
  top = {a: predict_mode.predict_files(str(hub_run / a), [str(path)])[0][0][1]
         for a in ("model.keras", "saved_model", "model_float32.tflite")}
  assert len({t[0][0] for t in top.values()}) == 1
  np.testing.assert_allclose(top["saved_model"][0][1],
                             top["model.keras"][0][1], atol=1e-5)
  splits = families.for_data("image").load_splits(
      config_lib.Config(dataset="synthetic"))
  evaluated = predictors.evaluate(str(hub_run / "model_float32.tflite"),
                                  splits)
  assert evaluated["examples"] == splits.sizes["test"]
  assert evaluated["accuracy"] == pytest.approx(metrics["test"]["accuracy"],
                                                abs=0.01)
