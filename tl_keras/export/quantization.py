"""int8 that holds: TensorFlow's quantization debugger and float fallback.

Full-integer quantization fails on some layers (swish and squeeze-excite,
hard-swish, wide activation ranges): the int8 model then falls well below
the Keras model. `layer_errors` runs `tf.lite.experimental.QuantizationDebugger`
on calibration images and ranks every quantized layer by its error in
quantization steps (RMSE / scale, from each layer's float op run on the same
quantized input; rounding alone gives about 0.29). `with_fallback`
requantizes the calibrated model with the worst layers kept in float
(`denylisted_nodes`), 1, 2, 3, 4, 6, 8, ... of them, until the caller
accepts the result. When a few layers are not enough, the error is either
spread over the network (EfficientNet-B0: nothing short of every layer
helps; the scaled-up digits under a probe head, whose Keras model itself
flips under faint pixel noise: `writers.noise_check`) or held
by one kind of layer (ConvNeXt's LayerNormalization, whose ops rank low one
by one): `layer_kinds` groups the quantized ops by the class of the Keras
layer they come from, and `with_fallback` tries each kind in float before
keeping every layer in float. The file keeps the int8 variant's contract:
uint8 raw pixels in, uint8 probabilities out.
"""

import csv
import io
import logging
import re

import numpy as np
import tensorflow as tf
# The debugger quantizes with this function too; it is the only way to get
# its denylist with uint8 input and output (the debugger's own export keeps
# float input and output).
from tensorflow.lite.python import convert as tflite_convert

from tl_keras import console
from tl_keras.export import tflite

# Layers whose int8 output is off by more than this many quantization steps
# (RMS) are suspect: TensorFlow's debugger guide uses 0.7.
SUSPECT_STEPS = 0.7
# Calibration images the debugger runs, float and int8 side by side.
DEBUG_SAMPLES = 64
# What to do instead when the fallback keeps every layer in float.
EVERY_LAYER_ADVICE = ("with every layer in float it is a float model with "
                      "uint8 input and output, no smaller than float32: ship "
                      "tflite_dynamic (int8 weights), tflite_float16, or "
                      "tflite_int16x8 (int8 weights, int16 activations) "
                      "instead")


def layer_errors(model, serving, calibration_images,
                 samples=DEBUG_SAMPLES):
  """Each quantized layer's int8 error, worst first.

  Args:
    model: the classifier (raw float pixels in).
    serving: the model's `serving` object (an image one).
    calibration_images: uint8 [N, S, S, 3], the int8 variant's calibration
      set; the first `samples` are run through the debugger.
    samples: how many images the debugger runs.

  Returns:
    (calibrated, layers): the calibrated model bytes `requantize` takes,
    and [{"layer", "op", "rmse_steps", "max_abs_error", "scale"}] sorted by
    rmse_steps, highest first.
  """
  with tflite.converters(model, serving) as make:
    with console.quiet_native_output():
      debugger = tf.lite.experimental.QuantizationDebugger(
          converter=make("int8", calibration_images),
          debug_dataset=tflite.representative(calibration_images[:samples]))
      debugger.run()
  dump = io.StringIO()
  debugger.layer_statistics_dump(dump)
  layers = []
  for row in csv.DictReader(io.StringIO(dump.getvalue())):
    scale = float(row["scale"])
    layers.append({
        "layer": row["tensor_name"], "op": row["op_name"],
        "rmse_steps": (float(np.sqrt(float(row["mean_squared_error"])))
                       / scale if scale else 0.0),
        "max_abs_error": float(row["max_abs_error"]), "scale": scale})
  layers.sort(key=lambda r: -r["rmse_steps"])
  return debugger.calibrated_model, layers


def requantize(calibrated, float_layers=()):
  """The int8 variant from `calibrated`, with `float_layers` left in float.

  `float_layers` are layer names from `layer_errors`. Input and output stay
  uint8 with the plain int8 file's scales.
  """
  with console.quiet_native_output():
    return tflite_convert.mlir_quantize(
        calibrated, input_data_type=tf.uint8, output_data_type=tf.uint8,
        denylisted_nodes=list(float_layers) or None)


def layer_kinds(model, layers):
  """The quantized ops of each Keras layer class, worst kind first.

  An op belongs to a class when every part of its (possibly fused) name
  that names a layer names a layer of that class: a LayerNormalization's
  Rsqrt does, its last add fused into the next Dense does not.

  Args:
    model: the Keras model the debugger converted (nested models walked).
    layers: `layer_errors`'s ranking.

  Returns:
    [(class name, [layer names])], ranked by the kind's worst op; kinds
    holding every layer are left out (that is "every layer in float").
  """
  classes = {}
  for layer in model._flatten_layers(include_self=True):  # pylint: disable=protected-access
    classes.setdefault(layer.name, type(layer).__name__)
  kinds = {}
  for row in layers:
    found = set()
    for part in row["layer"].split(";"):
      named = [classes.get(segment, classes.get(re.sub(r"_\d+$", "", segment)))
               for segment in part.split("/")]
      named = [c for c in named if c]
      if named:
        found.add(named[-1])  # the innermost layer of this part
    if len(found) == 1:
      kinds.setdefault(found.pop(), []).append(row["layer"])
  return [(kind, names) for kind, names in kinds.items()
          if len(names) < len(layers)]


def counts(total):
  """How many of the worst layers each candidate keeps in float: 1, 2, 3,
  4, 6, 8, 12, ... (about x1.4 a step, so the one chosen keeps at most about
  40% more layers in float than it needed), fewer than `total`."""
  out, count = [], 1
  while count < total:
    out.append(count)
    count = max(count + 1, int(round(count * 2 ** 0.5)))
  return out


def with_fallback(calibrated, layers, acceptable, kinds=()):
  """Keeps layers in float until `acceptable`.

  The worst 1, 2, 3, 4, 6, 8, ... (`counts`) first; then every op of one
  Keras layer class (`kinds`, in their order); then every layer.

  Args:
    calibrated: from `layer_errors`.
    layers: `layer_errors`'s ranking, worst first.
    acceptable: content -> bool, whether a candidate file is good enough.
    kinds: `layer_kinds`'s groups.

  Returns:
    (content, float_layers, accepted, kind): the first accepted candidate
    (kind: the layer class kept in float, or None), or the one with every
    layer in float when none is.
  """
  everything = [r["layer"] for r in layers]
  candidates = [(f"the {count} worst layer(s)", everything[:count], None)
                for count in counts(len(layers))]
  candidates += [(f"every {kind} layer's {len(names)} op(s)", names, kind)
                 for kind, names in kinds]
  candidates.append(("every layer", everything, None))
  for what, names, kind in candidates:
    content = requantize(calibrated, names)
    ok = acceptable(content)
    logging.info("int8 with %s in float: %s", what,
                 "within bounds" if ok else "still too far from Keras")
    if ok:
      break
  return content, names, ok, kind
