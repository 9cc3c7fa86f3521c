"""int8 that holds: TensorFlow's quantization debugger and float fallback.

Full-integer quantization fails on some layers (swish and squeeze-excite,
hard-swish, wide activation ranges): the int8 model then falls well below
the Keras model. `layer_errors` runs `tf.lite.experimental.QuantizationDebugger`
on calibration images and ranks every quantized layer by its error in
quantization steps (RMSE / scale, from each layer's float op run on the same
quantized input; rounding alone gives about 0.29). `with_fallback`
requantizes the calibrated model with the worst layers kept in float
(`denylisted_nodes`), 1, 2, 4, ... of them, until the caller accepts the
result. The file keeps the int8 variant's contract: uint8 raw pixels in,
uint8 probabilities out.
"""

import csv
import io
import logging

import numpy as np
import tensorflow as tf
# The debugger quantizes with this function too; it is the only way to get
# its denylist with uint8 input and output (the debugger's own export keeps
# float input and output).
from tensorflow.lite.python import convert as tflite_convert

from tl_keras import console
from tl_keras import tflite

# Layers whose int8 output is off by more than this many quantization steps
# (RMS) are suspect: TensorFlow's debugger guide uses 0.7.
SUSPECT_STEPS = 0.7
# Calibration images the debugger runs, float and int8 side by side.
DEBUG_SAMPLES = 64


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


def with_fallback(calibrated, layers, acceptable):
  """Keeps the worst 1, 2, 4, ... layers in float until `acceptable`.

  Args:
    calibrated: from `layer_errors`.
    layers: `layer_errors`'s ranking, worst first.
    acceptable: content -> bool, whether a candidate file is good enough.

  Returns:
    (content, float_layers, accepted): the first accepted candidate, or the
    one with every layer in float when none is.
  """
  count = 1
  while True:
    count = min(count, len(layers))
    names = [r["layer"] for r in layers[:count]]
    content = requantize(calibrated, names)
    ok = acceptable(content)
    logging.info("int8 with the %d worst layer(s) in float: %s", count,
                 "within bounds" if ok else "still too far from Keras")
    if ok or count >= len(layers):
      return content, names, ok
    count *= 2
