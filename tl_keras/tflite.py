"""TFLite export: four variants, labels inside the file, a parity check.

Every variant takes a raw RGB uint8 image [1, S, S, 3] at the model's input
size S, resized by the caller as training resized (`data.resize`: bilinear
with antialiasing, `tf.image.resize(..., antialias=True)`, rounded); the
backbone's normalization is inside the graph.

    float32   no quantization: the reference.
    float16   float16 weights, float32 compute on CPU.
    dynamic   int8 weights, activations quantized on the fly.
    int8      full-integer: int8 weights and activations, integer-only ops
              (unless `quantization` kept its worst layers in float),
              uint8 input and uint8 output (scale and zero point recorded),
              calibrated on a class-stratified sample of the training split.

Each file carries a metadata entry named `METADATA_NAME` (JSON: labels, input
size, dtype and quantization, normalization) that `read_metadata` reads back.
"""

import contextlib
import json
import logging
import os
import statistics
import sys
import tempfile
import time

import keras
import numpy as np
import tensorflow as tf

from tl_keras.errors import CheckFailed, UserError

VARIANTS = ("float32", "float16", "dynamic", "int8")
METADATA_NAME = "tl_keras"
LATENCY_THREADS = 2
LATENCY_RUNS = 50
LATENCY_WARMUP = 5


def filename(variant):
  return f"model_{variant}.tflite"


def float32_copy(model):
  """`model` rebuilt under the float32 policy, with the same weights.

  Models trained under `mixed_float16` must be converted from a float32 copy
  (converting float16 compute graphs fails or loses accuracy).
  """
  if all(layer.dtype_policy.name == "float32"
         for layer in _all_layers(model)):
    return model
  return _rebuilt(model, _with_float32_policy(model.get_config()))


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
    inv = keras.ops.rsqrt(variance + self.epsilon)
    if self.scale:
      inv = inv * self.gamma
    outputs = (inputs - mean) * inv
    if self.center:
      outputs = outputs + self.beta
    return outputs


def _rewritable(layer):
  if type(layer) is not keras.layers.LayerNormalization:  # pylint: disable=unidiomatic-typecheck
    return False
  axis = layer.axis if isinstance(layer.axis, list) else [layer.axis]
  rank = len(layer.input.shape)
  return not layer.rms_scaling and [a % rank for a in axis] == [rank - 1]


def integer_friendly(model):
  """`model` with its LayerNormalization layers as
  `SubtractingLayerNormalization` (same weights), or `model` itself when it
  has none."""
  names = {l.name for l in _all_layers(model) if _rewritable(l)}
  if not names:
    return model
  return _rebuilt(model, _with_layer_norm_rewritten(model.get_config(), names))


def _rebuilt(model, config):
  """A model of `model`'s class from `config`, with `model`'s weights."""
  clone = model.__class__.from_config(config)
  clone.set_weights(model.get_weights())
  return clone


def _with_layer_norm_rewritten(config, names):
  """A config tree with the LayerNormalization layers `names` replaced."""
  if isinstance(config, dict):
    if (config.get("class_name") == "LayerNormalization"
        and config.get("config", {}).get("name") in names):
      return {**config, "module": None,
              "class_name": "SubtractingLayerNormalization",
              "registered_name": "tl_keras>SubtractingLayerNormalization"}
    return {k: _with_layer_norm_rewritten(v, names)
            for k, v in config.items()}
  if isinstance(config, list):
    return [_with_layer_norm_rewritten(v, names) for v in config]
  return config


def _all_layers(model):
  for layer in model._flatten_layers(include_self=False):  # pylint: disable=protected-access
    yield layer


def _with_float32_policy(config):
  """A layer config tree with every dtype policy replaced by float32."""
  if isinstance(config, dict):
    if config.get("class_name") == "DTypePolicy":
      return {**config, "config": {**config["config"], "name": "float32"}}
    return {k: ("float32" if k == "dtype" and isinstance(v, str)
                and "mixed" in v else _with_float32_policy(v))
            for k, v in config.items()}
  if isinstance(config, list):
    return [_with_float32_policy(v) for v in config]
  return config


def convert(model, variant, image_size, calibration_images=None, make=None):
  """Converts a raw-pixels classifier to TFLite flatbuffer bytes.

  Args:
    model: a classifier taking float32 pixels 0..255 of any size.
    variant: one of VARIANTS.
    image_size: S of the [1, S, S, 3] input.
    calibration_images: uint8 [N, S, S, 3] training images (int8 only).
    make: a `converters` context's function for `model`, to share its
      SavedModels across variants; default: a context of its own.

  Returns:
    The .tflite file contents, before metadata.
  """
  if make is None:
    with converters(model, image_size) as make:
      return convert(model, variant, image_size, calibration_images, make)
  converter = make(variant, calibration_images)
  with native_stdout_silenced():
    return converter.convert()


@contextlib.contextmanager
def converters(model, image_size):
  """Yields make(variant, calibration_images=None) -> a set-up converter.

  Converters read a temporary SavedModel (which freezes the variables),
  written once per input type and shared by the variants that take it:
  float32, float16 and dynamic take uint8 pixels and cast them; int8 takes
  float pixels of the `integer_friendly` model, so the converter can
  quantize the input: with the calibration range forced to [0, 255] (see
  `representative`) its uint8 input has scale 1 and zero point 0, i.e. it
  *is* the raw pixel.
  """
  model = float32_copy(model)
  shape = [1, image_size, image_size, 3]
  with tempfile.TemporaryDirectory() as tmp:
    written = {}

    def make(variant, calibration_images=None):
      pixels = "float32" if variant == "int8" else "uint8"
      if pixels not in written:
        written[pixels] = os.path.join(tmp, pixels)
        if pixels == "float32":
          served = integer_friendly(model)
          spec = tf.TensorSpec(shape, tf.float32, name="images")
          serve = lambda images: served(images, training=False)
        else:
          served, spec = model, tf.TensorSpec(shape, tf.uint8, name="images")
          serve = lambda images: served(tf.cast(images, tf.float32),
                                        training=False)
        archive = keras.export.ExportArchive()
        archive.track(served)
        archive.add_endpoint("serving_default", serve, input_signature=[spec])
        archive.write_out(written[pixels], verbose=False)
      converter = tf.lite.TFLiteConverter.from_saved_model(written[pixels])
      _configure(converter, variant, calibration_images)
      return converter

    yield make


@contextlib.contextmanager
def native_stdout_silenced():
  """The quantizer prints a status line from C++ straight to fd 1."""
  sys.stdout.flush()
  saved = os.dup(1)
  try:
    with open(os.devnull, "w", encoding="utf-8") as devnull:
      os.dup2(devnull.fileno(), 1)
      yield
  finally:
    os.dup2(saved, 1)
    os.close(saved)


def _configure(converter, variant, calibration_images):
  """Sets the converter's quantization for `variant`."""
  if variant == "float16":
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.target_spec.supported_types = [tf.float16]
  elif variant == "dynamic":
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
  elif variant == "int8":
    if calibration_images is None or not len(calibration_images):
      raise ValueError("int8 conversion needs calibration images")
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative(calibration_images)
    converter.target_spec.supported_ops = [
        tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.uint8
    converter.inference_output_type = tf.uint8
  elif variant != "float32":
    raise ValueError(f"unknown TFLite variant {variant!r}")


def representative(images):
  """Calibration generator: each image alone, as float32 pixels.

  One pixel of the first image is set to 0 and one to 255 so the input's
  calibrated range is exactly [0, 255] whatever the data: the uint8 input
  then takes raw pixels unchanged. (Two pixels barely move any other range.)
  """
  images = np.array(images, dtype=np.float32)
  images[0, 0, 0, :] = 0.0
  images[0, 0, -1, :] = 255.0

  def gen():
    for image in images:
      yield [image[None]]

  return gen


def stratified_sample(images, labels, count, seed=0):
  """Up to `count` indices, the same share from every class, seeded."""
  labels = np.asarray(labels)
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


# --- Running .tflite files -------------------------------------------------

class Runner:
  """A .tflite model under the LiteRT interpreter: uint8 images in, probs out.

  Quantized outputs are dequantized with the file's own scale and zero point;
  a quantized input is quantized from pixels the same way.
  """

  def __init__(self, path, num_threads=LATENCY_THREADS):
    from ai_edge_litert import interpreter as litert  # pylint: disable=g-import-not-at-top
    self.path = path
    try:
      self.interpreter = litert.Interpreter(model_path=path,
                                            num_threads=num_threads)
      self.interpreter.allocate_tensors()
    except (ValueError, RuntimeError) as e:
      raise UserError(f"cannot load {path} as a TFLite model: "
                      f"{str(e).splitlines()[0][:200]}") from e
    self.input = self.interpreter.get_input_details()[0]
    self.output = self.interpreter.get_output_details()[0]
    self.image_size = int(self.input["shape"][1])

  def _quantize(self, images):
    dtype = self.input["dtype"]
    scale, zero = self.input["quantization"]
    if dtype in (np.float32, np.float16):
      return images.astype(dtype)
    if scale and (scale, zero) != (1.0, 0):
      images = np.round(images.astype(np.float32) / scale + zero)
    info = np.iinfo(dtype)
    return np.clip(images, info.min, info.max).astype(dtype)

  def _dequantize(self, values):
    scale, zero = self.output["quantization"]
    if self.output["dtype"] in (np.float32, np.float16):
      return values.astype(np.float32)
    return (values.astype(np.float32) - zero) * scale

  def predict_one(self, image):
    """uint8 [S, S, 3] -> float32 [num_classes]."""
    self.interpreter.set_tensor(self.input["index"],
                               self._quantize(image[None]))
    self.interpreter.invoke()
    return self._dequantize(self.interpreter.get_tensor(
        self.output["index"]))[0]

  def predict(self, images):
    """uint8 [N, S, S, 3] -> float32 [N, num_classes], one image at a time."""
    return np.stack([self.predict_one(image) for image in images])

  @staticmethod
  def first(images):
    """The example latency is measured on."""
    return images[0]

  def latency_ms(self, image, runs=LATENCY_RUNS, warmup=LATENCY_WARMUP):
    """Median single-image latency after warm-up, in milliseconds."""
    data = self._quantize(image[None])
    times = []
    for i in range(warmup + runs):
      self.interpreter.set_tensor(self.input["index"], data)
      start = time.perf_counter()
      self.interpreter.invoke()
      if i >= warmup:
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)

  def op_dtypes(self):
    """{op name: set of tensor dtype names it reads or writes}."""
    details = self.interpreter._get_ops_details()  # pylint: disable=protected-access
    tensors = {t["index"]: t for t in self.interpreter.get_tensor_details()}
    out = {}
    for op in details:
      for index in list(op["inputs"]) + list(op["outputs"]):
        if index >= 0 and index in tensors:
          out.setdefault(op["op_name"], set()).add(
              np.dtype(tensors[index]["dtype"]).name)
    return out


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


def export(model, variant, path, *, image_size, class_names, preprocessing,
           calibration_images=None, make=None):
  """Converts, embeds metadata, writes `path`. Returns the metadata.

  `make`: as in `convert`.
  """
  started = time.time()
  try:
    content = convert(model, variant, image_size, calibration_images, make)
  except Exception as e:  # The converter raises many types.
    raise UserError(f"TFLite {variant} conversion failed: "
                    f"{str(e).strip().splitlines()[0][:300]}") from e
  metadata = write(path, content, metadata_for(
      variant, content, class_names, image_size, preprocessing))
  logging.info("wrote %s (%d bytes, %.1fs)", os.path.basename(path),
               os.path.getsize(path), time.time() - started)
  return metadata


def write(path, content, metadata):
  """Writes `content` with `metadata` embedded to `path`. Returns it."""
  with open(path, "wb") as f:
    f.write(add_metadata(content, metadata))
  return metadata


def parity(path, images, labels, keras_probs, runner=None):
  """One row of the parity table for the .tflite at `path`.

  Args:
    path: the .tflite file.
    images: uint8 [N, S, S, 3] test images (or what `runner` takes).
    labels: int [N].
    keras_probs: float [N, C], the Keras model on the same images.
    runner: the file's runner (default: an image `Runner`).

  Returns:
    {accuracy, agreement, max_abs_diff, size_bytes, latency_ms, threads}.
  """
  runner = runner or Runner(path)
  probs = runner.predict(images)
  top1 = probs.argmax(-1)
  return {
      "accuracy": float(np.mean(top1 == labels)),
      "agreement": float(np.mean(top1 == keras_probs.argmax(-1))),
      "max_abs_diff": float(np.abs(probs - keras_probs).max()),
      "size_bytes": os.path.getsize(path),
      "latency_ms": runner.latency_ms(runner.first(images)),
      "threads": LATENCY_THREADS,
      "examples": int(len(labels)),
  }


def format_parity(rows):
  """The parity table as aligned text: Keras first, then each variant."""
  first = next(iter(rows.values()))
  lines = [f"{'variant':<10} {'accuracy':>9} {'agreement':>10} "
           f"{'size':>10} {'latency':>10}   ({first['examples']} test examples, "
           f"{first['threads']} threads)",
           f"{'keras':<10} {first['keras_accuracy']:>9.4f}"]
  for variant, row in rows.items():
    lines.append(f"{variant:<10} {row['accuracy']:>9.4f} "
                 f"{row['agreement']:>10.4f} "
                 f"{row['size_bytes'] / 1024:>8.1f}KB "
                 f"{row['latency_ms']:>8.3f}ms")
  return "\n".join(lines)


def too_far(row, max_drop):
  """Whether a parity row is more than `max_drop` below Keras.

  A drop of a single example never counts: on a small test split one
  flipped image is more than a point.
  """
  drop = row["keras_accuracy"] - row["accuracy"]
  return drop > max_drop + 1e-9 and drop * row["examples"] > 1.5


def check_accuracy_drop(rows, max_drop):
  """Raises CheckFailed naming each variant `too_far` below Keras.

  `rows` maps variant -> parity row (with its `keras_accuracy` and
  `examples`).
  """
  failing = [f"{v} {r['accuracy']:.4f} vs Keras {r['keras_accuracy']:.4f}"
             for v, r in rows.items() if too_far(r, max_drop)]
  if failing:
    fallback = rows.get("int8", {}).get("fallback")
    int8_hint = (
        f"int8 already keeps {len(fallback['float_layers'])} layer(s) in "
        "float (--int8_fallback=auto)" if fallback else
        "let int8 keep its worst layers in float (--int8_fallback=auto)")
    raise CheckFailed(
        f"TFLite accuracy fell more than --max_accuracy_drop={max_drop} below "
        f"the Keras model: {'; '.join(failing)}; the files are written for "
        "inspection: ship another variant (float16, dynamic), calibrate int8 "
        f"on more images (--calibration_samples), {int8_hint}, or accept "
        "the drop with a larger --max_accuracy_drop (-1: no check)")
