"""TFLite conversion: five variants, with metadata inside the file.

What a file takes is the model's `serving` object's business. An image
file takes a raw RGB uint8 image [1, S, S, 3] at the model's input size S,
resized by the caller as training resized (`inputs.resize`: bilinear with
antialiasing, `tf.image.resize(..., antialias=True)`, rounded); the
backbone's normalization is inside the graph. `litert` runs the files.

    float32   no quantization: the reference.
    float16   float16 weights, float32 compute on CPU.
    dynamic   int8 weights, activations quantized on the fly.
    int8      full-integer: int8 weights and activations, integer-only ops
              (unless `quantization` kept its worst layers in float),
              uint8 input and uint8 output (scale and zero point recorded),
              calibrated on a class-stratified sample of the training split.
    int16x8   int8 weights, int16 activations ("16x8"), calibrated alike;
              uint8 input cast to float and quantized inside, float32
              output (the float32 file's inputs and outputs). Ops without
              an int16 kernel (hard-swish) stay in float; LayerNorm is
              rewritten so that it has them. Holds accuracy where int8
              does not (EfficientNet), at the cost of LiteRT's reference
              kernels: slower than float32 on CPUs. Not a default export.

Each file carries a metadata entry named `METADATA_NAME` (JSON: labels, input
size, dtype and quantization, normalization) that `read_metadata` reads back.
"""

import contextlib
import json
import logging
import os
import tempfile
import time

import keras
import numpy as np
import tensorflow as tf

from tl_keras import console
from tl_keras.errors import UserError
from tl_keras.models import precision

VARIANTS = ("float32", "float16", "dynamic", "int8", "int16x8")
# Variants written unless --export names them: int16x8 is asked for.
DEFAULT_VARIANTS = VARIANTS[:4]
# Variants calibrated on training images.
CALIBRATED = ("int8", "int16x8")
METADATA_NAME = "tl_keras"


def filename(variant):
  return f"model_{variant}.tflite"


@keras.saving.register_keras_serializable("tl_keras")
class SubtractingLayerNormalization(keras.layers.LayerNormalization):
  """LayerNormalization written as (x - mean) * inv + beta, for int8.

  Keras computes x * inv + (-mean * inv + beta); TFLite has no int8 kernel
  for that negation, so a full-integer ConvNeXt would keep a float NEG
  (with a dequantize and a quantize) in every LayerNormalization. Same
  weights, same maths; only the last-axis, non-RMS form is rewritten.
  """

  def call(self, inputs):
    mean, variance = keras.ops.moments(inputs, axes=self.axis, keepdims=True)
    return self._normalized(inputs - mean, variance)

  def _normalized(self, centered, variance):
    inv = keras.ops.rsqrt(variance + self.epsilon)
    if self.scale:
      inv = inv * self.gamma
    outputs = centered * inv
    if self.center:
      outputs = outputs + self.beta
    return outputs


@keras.saving.register_keras_serializable("tl_keras")
class CenteredLayerNormalization(SubtractingLayerNormalization):
  """`SubtractingLayerNormalization` with variance mean(c * c), c = x - mean.

  For int16x8: the converter writes Keras's variance as a SQUARED_DIFFERENCE
  with int16 inputs, which LiteRT has no kernel for (the file converts and
  then fails to run). SUB, MUL, MEAN and RSQRT all have int16 kernels.
  """

  def call(self, inputs):
    centered = inputs - keras.ops.mean(inputs, axis=self.axis, keepdims=True)
    return self._normalized(centered, keras.ops.mean(
        centered * centered, axis=self.axis, keepdims=True))


def _rewritable(layer):
  if type(layer) is not keras.layers.LayerNormalization:  # pylint: disable=unidiomatic-typecheck
    return False
  axis = layer.axis if isinstance(layer.axis, list) else [layer.axis]
  rank = len(layer.input.shape)
  return not layer.rms_scaling and [a % rank for a in axis] == [rank - 1]


def integer_friendly(model, variant="int8"):
  """`model` with its LayerNormalization layers as
  `SubtractingLayerNormalization` (int8) or `CenteredLayerNormalization`
  (int16x8), same weights; `model` itself when it has none."""
  names = {l.name for l in precision.all_layers(model) if _rewritable(l)}
  if not names:
    return model
  layer = (SubtractingLayerNormalization if variant == "int8"
           else CenteredLayerNormalization)
  return precision.rebuilt(model, _with_layer_norm_rewritten(model.get_config(), names,
                                                    layer.__name__))


def _with_layer_norm_rewritten(config, names, class_name):
  """A config tree with the LayerNormalization layers `names` replaced by
  the registered `class_name`."""
  if isinstance(config, dict):
    if (config.get("class_name") == "LayerNormalization"
        and config.get("config", {}).get("name") in names):
      return {**config, "module": None, "class_name": class_name,
              "registered_name": f"tl_keras>{class_name}"}
    return {k: _with_layer_norm_rewritten(v, names, class_name)
            for k, v in config.items()}
  if isinstance(config, list):
    return [_with_layer_norm_rewritten(v, names, class_name) for v in config]
  return config


def convert(model, variant, serving, calibration_images=None, make=None):
  """Converts a classifier to TFLite flatbuffer bytes.

  Args:
    model: a classifier built by tl_keras.
    variant: one of `serving.variants`.
    serving: the model's `serving` object (its inputs).
    calibration_images: uint8 [N, S, S, 3] training images (`CALIBRATED`
      variants only).
    make: a `converters` context's function for `model`, to share its
      SavedModels across variants; default: a context of its own.

  Returns:
    The .tflite file contents, before metadata.
  """
  if make is None:
    with converters(model, serving) as make:
      return convert(model, variant, serving, calibration_images, make)
  converter = make(variant, calibration_images)
  calibrating = (f", {len(calibration_images):,} calibration images"
                 if variant in CALIBRATED else "")
  with console.quiet_native_output(), console.Heartbeat(
      f"TFLite {variant} conversion{calibrating}"):
    return converter.convert()


@contextlib.contextmanager
def converters(model, serving):
  """Yields make(variant, calibration_images=None) -> a set-up converter.

  Converters read a temporary SavedModel (which freezes the variables),
  written once per input type (`serving.tflite_input`) and shared by the
  variants that take it. For images: float32, float16 and dynamic take
  uint8 pixels and cast them; int8 takes float pixels of the
  `integer_friendly` model, so the converter can quantize the input: with
  the calibration range forced to [0, 255] (see `representative`) its uint8
  input has scale 1 and zero point 0, i.e. it *is* the raw pixel.
  """
  model = serving.float32(model)
  with tempfile.TemporaryDirectory() as tmp:
    written = {}

    def make(variant, calibration_images=None):
      if variant not in serving.variants:
        raise ValueError(f"{serving.kind} models have no TFLite {variant}")
      key = serving.tflite_input(variant)
      if key not in written:
        written[key] = os.path.join(tmp, key)
        served, serve, specs = serving.tflite_serving(model, key)
        archive = keras.export.ExportArchive()
        archive.track(served)
        archive.add_endpoint("serving_default", serve, input_signature=specs)
        archive.write_out(written[key], verbose=False)
      converter = tf.lite.TFLiteConverter.from_saved_model(written[key])
      _configure(converter, variant, calibration_images)
      return converter

    yield make


def _configure(converter, variant, calibration_images):
  """Sets the converter's quantization for `variant`."""
  if variant == "float16":
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.target_spec.supported_types = [tf.float16]
  elif variant == "dynamic":
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
  elif variant in CALIBRATED:
    if calibration_images is None or not len(calibration_images):
      raise ValueError(f"{variant} conversion needs calibration images")
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if variant == "int8":
      converter.representative_dataset = representative(calibration_images)
      converter.target_spec.supported_ops = [
          tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
      converter.inference_input_type = tf.uint8
      converter.inference_output_type = tf.uint8
    else:  # uint8 input (cast inside), float32 output: no I/O to quantize.
      converter.representative_dataset = representative(calibration_images,
                                                        np.uint8)
      converter.target_spec.supported_ops = [
          tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8,
          tf.lite.OpsSet.TFLITE_BUILTINS]  # the input's cast, in float
  elif variant != "float32":
    raise ValueError(f"unknown TFLite variant {variant!r}")


def representative(images, dtype=np.float32):
  """Calibration generator: each image alone, as `dtype` pixels.

  One pixel of the first image is set to 0 and one to 255 so the input's
  calibrated range is exactly [0, 255] whatever the data: int8's uint8
  input then takes raw pixels unchanged. (Two pixels barely move any other
  range.) int16x8 takes uint8 pixels as they are.
  """
  images = np.array(images, dtype=dtype)
  images[0, 0, 0, :] = 0.0
  images[0, 0, -1, :] = 255.0

  def gen():
    for image in images:
      yield [image[None]]

  return gen


def stratified_sample(images, labels, count, seed=0):
  """Up to `count` indices, the same share from every class, seeded
  (multi-hot labels: by each example's first label)."""
  labels = np.asarray(labels)
  if labels.ndim == 2:
    labels = labels.argmax(-1)
  classes = np.unique(labels)
  rng = np.random.default_rng(seed)
  per_class = max(1, count // max(1, len(classes)))
  picked = []
  for c in classes:
    where = np.flatnonzero(labels == c)
    picked.extend(rng.permutation(where)[:per_class].tolist())
  return np.array(sorted(picked[:max(count, len(classes))]), dtype=np.int64)


# --- Metadata inside the flatbuffer --------------------------------------

def _schema():
  from tensorflow.lite.python import schema_py_generated  # pylint: disable=g-import-not-at-top
  return schema_py_generated


def add_metadata(content, metadata):
  """Returns `content` with a JSON metadata entry named METADATA_NAME."""
  schema = _schema()
  model = schema.ModelT.InitFromObj(
      schema.Model.GetRootAsModel(bytearray(content), 0))
  buffer = schema.BufferT()
  buffer.data = np.frombuffer(json.dumps(metadata).encode("utf-8"),
                              dtype=np.uint8)
  model.buffers.append(buffer)
  entry = schema.MetadataT()
  entry.name = METADATA_NAME
  entry.buffer = len(model.buffers) - 1
  model.metadata = [m for m in (model.metadata or [])
                    if _decode(m.name) != METADATA_NAME] + [entry]
  import flatbuffers  # pylint: disable=g-import-not-at-top
  builder = flatbuffers.Builder(1024)
  builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
  return bytes(builder.Output())


def _decode(name):
  return name.decode("utf-8") if isinstance(name, bytes) else name


def read_metadata(path):
  """The METADATA_NAME entry of a .tflite file, or {} if it has none.

  Raises:
    UserError: the file is not a TFLite model.
  """
  with open(path, "rb") as f:
    content = f.read()
  if len(content) < 8 or content[4:8] != b"TFL3":
    raise UserError(f"{path} is not a TFLite model (no TFL3 identifier); "
                    "pass a .tflite file written by a TFLite converter")
  schema = _schema()
  model = schema.Model.GetRootAsModel(content, 0)
  for i in range(model.MetadataLength()):
    entry = model.Metadata(i)
    if _decode(entry.Name()) == METADATA_NAME:
      data = model.Buffers(entry.Buffer()).DataAsNumpy()
      return json.loads(bytes(data).decode("utf-8"))
  return {}


# How a caller of the fixed-size input must resize, to see what training saw.
RESIZE_NOTE = ("resize to the input size with antialiased bilinear "
               "(tf.image.resize(image, [S, S], antialias=True)), then round "
               "to uint8, as training did")


def metadata_for(variant, content, class_names, image_size, preprocessing):
  """What goes inside the file: enough to use it without anything else."""
  from ai_edge_litert import interpreter as litert  # pylint: disable=g-import-not-at-top
  interpreter = litert.Interpreter(model_content=content)
  inp = interpreter.get_input_details()[0]
  out = interpreter.get_output_details()[0]
  return {
      "labels": list(class_names),
      "variant": variant,
      "input": {"shape": [int(d) for d in inp["shape"]],
                "dtype": np.dtype(inp["dtype"]).name,
                "scale": float(inp["quantization"][0]),
                "zero_point": int(inp["quantization"][1]),
                "pixels": "raw RGB 0..255; normalization "
                          f"({preprocessing}) is inside the model",
                "resize": RESIZE_NOTE},
      "output": {"dtype": np.dtype(out["dtype"]).name,
                 "scale": float(out["quantization"][0]),
                 "zero_point": int(out["quantization"][1]),
                 "meaning": "class probabilities, in label order"},
      "image_size": int(image_size),
  }


def export(model, variant, path, *, serving, class_names,
           calibration_images=None, make=None):
  """Converts, embeds metadata, writes `path`. Returns the metadata.

  `make`: as in `convert`.
  """
  started = time.time()
  try:
    content = convert(model, variant, serving, calibration_images, make)
  except Exception as e:  # The converter raises many types.
    raise UserError(f"TFLite {variant} conversion failed: "
                    f"{str(e).strip().splitlines()[0][:300]}") from e
  metadata = write(path, content, serving.tflite_metadata(
      variant, content, class_names), standard=lambda c: (
          serving.standard_metadata(variant, c, class_names)))
  logging.info("wrote %s (%d bytes, %.1fs)", os.path.basename(path),
               os.path.getsize(path), time.time() - started)
  return metadata


def write(path, content, metadata, standard=None):
  """Writes `content` with `metadata` embedded to `path`. Returns it.

  `standard`: bytes -> bytes adding the standard metadata, applied last
  (its packed files follow the flatbuffer, which `add_metadata` rebuilds).
  """
  content = add_metadata(content, metadata)
  if standard:
    content = standard(content)
  with open(path, "wb") as f:
    f.write(content)
  return metadata
