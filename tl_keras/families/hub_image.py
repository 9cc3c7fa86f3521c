"""KerasHub image backbones from presets: ResNet-18, EfficientNet-Lite, ...

--model names a KerasHub image-classifier preset (`resnet_18_imagenet`,
downloaded on first use) or a local preset folder (written by
`save_to_preset`; works offline). The backbone comes from the preset; the
preset's `ImageConverter` is not used as KerasHub uses it, in tf.data
outside the model: its normalization (x * scale + offset) becomes the
classifier's "preprocess" layer and its resize is replaced by the one resize
every tl_keras image model has, so the trained model, the SavedModel and
the .tflite files take raw pixels and agree with each other.

--weights: pretrained (or imagenet: the preset's own), none, or an earlier
run of the same architecture.
"""

import json
import logging
import os

import keras

from tl_keras.errors import unknown_name
from tl_keras.errors import UserError
import tl_keras.families.base as base_lib
import tl_keras.families.images as images
from tl_keras.models import applications

DEFAULT_SIZE = 224


def _hub():
  import keras_hub  # pylint: disable=g-import-not-at-top
  return keras_hub


def presets():
  """KerasHub's image-classifier presets (a built-in table, no network)."""
  return dict(sorted(_hub().models.ImageClassifier.presets.items()))


def is_image_preset_dir(name):
  """A preset folder holding an image backbone (its converter or shape)."""
  path = os.path.expanduser(name)
  config = os.path.join(path, "config.json")
  if not os.path.isfile(config):
    return False
  if os.path.exists(os.path.join(path, "image_converter.json")):
    return True
  with open(config, encoding="utf-8") as f:
    return "image_shape" in json.load(f).get("config", {})


class HubImage(images.ImageFamily):
  """Image classification on a KerasHub backbone."""

  name = "keras_hub_image"

  def owns(self, name):
    return is_image_preset_dir(name) or name in presets()

  def owns_base(self, base):
    return isinstance(base, _hub().models.Backbone)

  def check(self, config):
    if config.weights == "synthetic":
      raise UserError(f"--weights=synthetic is for convnet_small and the "
                      f"keras.applications backbones; --model={config.model} "
                      "brings its own weights: use --weights=pretrained")

  def image_size(self, config):
    if config.image_size:
      return config.image_size
    size = _converter_config(config.model).get("image_size")
    return int(size[0]) if size and size[0] else DEFAULT_SIZE

  def listing(self):
    return [("image: KerasHub presets", name, "preset", preset.get(
        "metadata", {}).get("params"), preset.get("metadata", {}).get(
            "description", "")) for name, preset in presets().items()]

  def build(self, config, num_classes, strategy, raw_splits=None):
    del raw_splits  # the weights do not depend on the data
    size = self.image_size(config)
    spec = config.weights
    source = None
    if spec not in ("imagenet", "pretrained", "none"):
      source = images.earlier_run(spec)
      if not source:
        raise UserError(f"--weights={spec}: use pretrained (the preset's), "
                        "none, or an earlier run's output directory")
    converter = _converter_config(config.model)
    keras.utils.set_random_seed(config.seed)
    with strategy.scope():
      backbone = _from_preset(config.model, load_weights=spec in (
          "imagenet", "pretrained"))
      preprocess = applications.ImagePreprocessing(
          "affine", scale=converter.get("scale"),
          offset=converter.get("offset"), name="preprocess")
      model = applications.classifier_around(
          backbone, size, preprocess, num_classes, dropout=config.dropout,
          activation=base_lib.activation(config),
          name=_model_name(config.model))
      if source:
        images.transfer_backbone(model, source)
    logging.info("KerasHub image backbone %s (%s): input %dpx, "
                 "normalization %s", config.model, type(backbone).__name__,
                 size, preprocess.describe())
    return model

  def describe(self, config, model):
    base = applications.base_of(model)
    return {"name": config.model, "family": type(base).__name__,
            "image_size": int(model.get_layer("resize").height),
            "preprocessing": model.get_layer("preprocess").describe(),
            "base_parameters": base.count_params()}


def _model_name(name):
  """A Keras-safe model name from a preset name or folder."""
  base = os.path.basename(os.path.normpath(os.path.expanduser(name)))
  return "".join(c if c.isalnum() or c == "_" else "_" for c in base)


def _converter_config(name):
  """The preset's ImageConverter settings, or {} if it has none."""
  path = os.path.expanduser(name)
  if os.path.isdir(path):
    file = os.path.join(path, "image_converter.json")
    if not os.path.exists(file):
      return {}
    with open(file, encoding="utf-8") as f:
      return json.load(f).get("config", {})
  try:
    return _hub().layers.ImageConverter.from_preset(name).get_config()
  except Exception as e:  # Hub, HTTP, and file errors come in many types.
    raise _preset_error(name, e) from e


def _from_preset(name, load_weights):
  if not os.path.isdir(os.path.expanduser(name)) and name not in presets():
    raise unknown_name("KerasHub image preset", name, presets(), "model")
  try:
    return _hub().models.Backbone.from_preset(name, load_weights=load_weights)
  except Exception as e:  # Hub, HTTP, and file errors come in many types.
    raise _preset_error(name, e) from e


def _preset_error(name, error):
  text = " ".join(str(error).split())[:160]
  if os.path.isdir(os.path.expanduser(name)):
    return UserError(f"cannot load the preset folder --model={name} "
                     f"({type(error).__name__}: {text}); write it again with "
                     "save_to_preset")
  return UserError(
      f"could not fetch the KerasHub preset {name!r} ({type(error).__name__}: "
      f"{text}); if this machine is offline, run save_to_preset on a machine "
      "that has it and pass that folder as --model")


FAMILY = HubImage()
