"""Writing and reading the trained model's artifacts.

`model.keras` is always written; `write_exports` adds the `--export` formats
(a SavedModel and the TFLite variants) and `tflite_parity` checks every
TFLite file against the Keras model on the same examples; `int8_fallback`
keeps the int8 file's worst layers in float when it falls too far below.
Every kind of model goes through the same code: what differs (inputs,
signatures, metadata, runner) is its `serving` object's.
"""

import logging
import os
import tempfile
import time

import keras
import numpy as np
import tensorflow as tf

from tl_keras import console
from tl_keras import evaluation
from tl_keras.export import litert
from tl_keras.export import quantization
from tl_keras.export import tflite

SAVED_MODEL = "saved_model"


def save_keras(model, path):
  """The native Keras format: reloads with `keras.saving.load_model`."""
  model.save(path)


def save_saved_model(model, path, *, class_names, serving):
  """A SavedModel that takes raw examples and describes itself.

  `serving_default`: for images, input `images` uint8 [N, H, W, 3], any H
  and W (the model resizes); for text, input `texts` string [N] (the
  tokenizer is inside: `import tensorflow_text` before loading it). Output
  `probabilities` float32 [N, num_classes].
  `metadata`: no input; outputs `labels` (string [num_classes]), `kind`
  ("image" or "text") and `image_size` (the size the backbone sees) or
  `sequence_length`.
  """
  model = serving.float32(model)
  archive = keras.export.ExportArchive()
  for tracked in serving.tracked(model):
    archive.track(tracked)
  serve, specs = serving.serving(model)
  archive.add_endpoint(name="serving_default", fn=serve,
                       input_signature=specs)
  labels = list(class_names)
  described = serving.described()
  archive.add_endpoint(
      name="metadata", input_signature=[],
      fn=lambda: {"labels": tf.constant(labels, tf.string),
                  "kind": tf.constant(serving.kind, tf.string),
                  **{k: tf.constant(int(v), tf.int32)
                     for k, v in described.items()}})
  with console.Heartbeat(f"writing the SavedModel {path}"):
    archive.write_out(path, verbose=False)


def _variant(fmt):
  """"tflite_int8" -> "int8"; None for a format that is not TFLite."""
  return fmt[len("tflite_"):] if fmt.startswith("tflite_") else None


def tflite_variants(formats):
  """The TFLite variants among --export formats, e.g. ("float32", "int8")."""
  return tuple(_variant(f) for f in formats if _variant(f))


def filename(fmt):
  """The file or directory name an export format writes."""
  return SAVED_MODEL if fmt == SAVED_MODEL else tflite.filename(_variant(fmt))


def write_exports(model, directory, formats, *, class_names,
                  serving, calibration_images=None):
  """Writes each of `formats` (config.EXPORT_FORMATS names) into `directory`.

  Args:
    model: the trained classifier.
    directory: where the files go (a staging directory).
    formats: export format names.
    class_names: labels, in class order.
    calibration_images: uint8 [N, S, S, 3] training images for tflite_int8
      and tflite_int16x8.
    serving: the model's `serving` object (`families.serving_of`).

  Returns:
    {format: why it was skipped} for the TFLite variants the model's kind
    does not offer (int8 and int16x8 for text).
  """
  skipped, wrote_tflite = {}, False
  with tflite.converters(model, serving) as make:
    for fmt in formats:
      path = os.path.join(directory, filename(fmt))
      if fmt == SAVED_MODEL:
        save_saved_model(model, path, class_names=class_names,
                         serving=serving)
      elif _variant(fmt) not in serving.variants:
        skipped[fmt] = serving.skipped
        logging.info("%s skipped: %s", fmt, skipped[fmt])
      else:
        tflite.export(model, _variant(fmt), path, serving=serving,
                      class_names=class_names,
                      calibration_images=calibration_images, make=make)
        wrote_tflite = True
  serving.write_extras(model, directory, wrote_tflite)
  return skipped


def tflite_parity(model, directory, variants, examples, labels, *,
                  serving, keras_probs=None):
  """The parity table: each variant's file in `directory` against Keras.

  Args:
    examples: raw test examples (uint8 images, or strings).
    serving: the model's `serving` object (`families.serving_of`).
    keras_probs: the Keras model's probabilities on `examples`, when the
      caller has them (else computed here).

  Returns:
    {variant: row} as in `litert.parity`, each row with `keras_accuracy`
    (the Keras model on the same examples).
  """
  inputs = serving.inputs(examples)
  if keras_probs is None:
    keras_probs = serving.keras_probabilities(model, inputs)
  keras_accuracy = float(np.mean(evaluation.hits(keras_probs, labels)))
  rows = {}
  for variant in variants:
    path = os.path.join(directory, tflite.filename(variant))
    with console.Heartbeat(f"parity check of {os.path.basename(path)} on "
                           f"{len(labels):,} test examples"):
      rows[variant] = {**litert.parity(path, inputs, labels, keras_probs,
                                       runner=serving.runner(path)),
                       "keras_accuracy": keras_accuracy}
  if rows:  # the table itself ends the run's output
    worst = min(rows, key=lambda v: rows[v]["agreement"])
    logging.info("TFLite parity: %d file%s on %d test examples, lowest "
                 "agreement with Keras %.4f (%s)", len(rows),
                 "s" if len(rows) > 1 else "", rows[worst]["examples"],
                 rows[worst]["agreement"], worst)
  return rows


# The noise check moves each pixel by a uniform random amount of up to this
# many levels of 255: about a sensor's or a JPEG's noise, and the size of the
# error quantization puts into the network's first layers.
NOISE_LEVELS = 1.0
# Below this agreement with itself under that noise, the run warns (a single
# flipped example never counts).
NOISE_AGREEMENT = 0.97


def noise_check(model, examples, *, serving, keras_probs=None, seed=0):
  """How often an image model keeps its class when its pixels move by up
  to `NOISE_LEVELS` levels.

  A quantized file can only agree with the Keras model as far as the model
  tolerates errors of about that size. Images far smoother than a camera's
  (scaled-up scans, renders) can train a head on features that the faintest
  noise overturns; then every quantized variant, and every real camera,
  disagrees with the model that was evaluated, and this says why.

  Args:
    model: the Keras model.
    examples: uint8 images [N, S, S, 3] (the parity check's).
    serving: the model's `serving` object; text models are not checked.
    keras_probs: the model's probabilities on `examples` as they are, when
      the caller has them (the parity check's); else computed here.
    seed: the noise's.

  Returns:
    {"levels", "agreement", "examples", "flipped", "fragile"} or None (text,
    or no examples).
  """
  if serving.kind != "image" or not len(examples):
    return None
  images = np.asarray(examples, np.float32)
  noise = np.random.default_rng(seed).uniform(-NOISE_LEVELS, NOISE_LEVELS,
                                              images.shape)
  if keras_probs is None:
    keras_probs = serving.keras_probabilities(model, images)
  same = evaluation.agreement(
      serving.keras_probabilities(model, np.clip(images + noise, 0, 255)),
      keras_probs, False)
  row = {"levels": NOISE_LEVELS, "agreement": same,
         "examples": int(len(images)),
         "flipped": int(round((1 - same) * len(images)))}
  row["fragile"] = litert.disagrees(row, NOISE_AGREEMENT)
  return row


def validation_accuracy(model, directory, variants, examples, labels, *,
                        serving):
  """{variant: {accuracy, keras_accuracy, examples}} on validation: what
  the accuracy gate (`litert.check_accuracy_drop`) judges."""
  if not len(labels):
    return {}
  inputs = serving.inputs(examples)
  keras_accuracy = float(np.mean(
      evaluation.hits(serving.keras_probabilities(model, inputs), labels)))
  rows = {}
  for variant in variants:
    path = os.path.join(directory, tflite.filename(variant))
    with console.Heartbeat(f"accuracy of {os.path.basename(path)} on "
                           f"{len(labels):,} validation examples"):
      probs = serving.runner(path).predict(inputs)
    rows[variant] = {"accuracy": float(np.mean(evaluation.hits(probs, labels))),
                     "keras_accuracy": keras_accuracy,
                     "examples": int(len(labels))}
  return rows


# Layers of the debugger's ranking recorded in metrics.json and the report.
WORST_LAYERS_REPORTED = 10


def int8_fallback(model, directory, *, calibration_images, validation, test,
                  max_drop, class_names, serving, min_agreement=0.0):
  """Rewrites `model_int8.tflite` with its worst layers in float, if needed.

  When the int8 file in `directory` is `litert.too_far` below the Keras
  model on the validation images, or `litert.disagrees` with it there,
  TensorFlow's quantization debugger ranks its layers
  (`quantization.layer_errors`) and the worst 1, 2, 3, 4, 6, 8, ... are
  kept in float, then the ops of one kind of Keras layer
  (`quantization.layer_kinds`), then every layer, until validation is
  within `max_drop` and agrees on `min_agreement`. Agreement matters
  beside accuracy: on images far from the network's source, int8 can keep
  the accuracy while flipping other examples both ways, and a file that
  picks another class than Keras on one image in ten is not the model
  that was evaluated. Validation decides, so the test split stays a fair
  judge of the result.

  Args:
    model: the Keras model.
    directory: holds model_int8.tflite.
    calibration_images: the int8 file's calibration images.
    validation: (uint8 images, labels) that decide.
    test: (uint8 images, labels): the plain int8 file's test figures are
      recorded, to compare with the result's.
    max_drop: --max_accuracy_drop.
    class_names: as in `write_exports`.
    serving: the model's `serving` object (`families.serving_of`).
    min_agreement: --min_int8_agreement (0: accuracy alone).

  Returns:
    None when the int8 file is within bounds as it is, else what was done:
    {"validation": {...}, "test_before": {...}, "worst_layers": [...],
    "float_layers": [...], "float_kind" (the Keras layer class kept in
    float, or None), "layers", "within_bounds", "size_bytes_before",
    "size_bytes", "seconds"}.
  """
  path = os.path.join(directory, tflite.filename("int8"))
  images, labels = validation
  keras_probabilities = serving.keras_probabilities(model, images)
  keras_accuracy = float(np.mean(evaluation.hits(keras_probabilities, labels)))

  def out_of_bounds(row):
    return (litert.too_far(row, max_drop)
            or litert.disagrees(row, min_agreement))

  before = _int8_row(path, validation, keras_accuracy, keras_probabilities)
  if not len(labels) or not out_of_bounds(before):
    return None
  started = time.time()
  logging.info("tflite_int8 on validation: %.4f against Keras's %.4f, the "
               "same class on %.4f of it (bounds: --max_accuracy_drop=%g, "
               "--min_int8_agreement=%g): TensorFlow's quantization debugger "
               "ranks its layers", before["accuracy"], keras_accuracy,
               before["agreement"], max_drop, min_agreement)
  with console.Heartbeat("quantization debugger"):
    calibrated, layers = quantization.layer_errors(model, serving,
                                                   calibration_images)
  test_before = litert.parity(
      path, *test, serving.keras_probabilities(model, test[0]))
  size_before = os.path.getsize(path)
  after = {}

  def acceptable(content):
    after.update(_int8_row(content, validation, keras_accuracy,
                           keras_probabilities))
    logging.info("  validation %.4f, agreement %.4f", after["accuracy"],
                 after["agreement"])
    return not out_of_bounds(after)

  content, float_layers, ok, kind = quantization.with_fallback(
      calibrated, layers, acceptable,
      kinds=quantization.layer_kinds(model, layers))
  metadata = serving.tflite_metadata("int8", content, class_names)
  metadata["float_layers"] = float_layers
  tflite.write(path, content, metadata, standard=lambda c: (
      serving.standard_metadata("int8", c, class_names)))
  record = {
      "validation": {"keras_accuracy": keras_accuracy, "examples":
                     int(len(labels)), "accuracy_before": before["accuracy"],
                     "accuracy": after["accuracy"],
                     "agreement_before": before["agreement"],
                     "agreement": after["agreement"],
                     "min_agreement": min_agreement},
      "test_before": {k: test_before[k] for k in ("accuracy", "agreement")},
      "worst_layers": layers[:WORST_LAYERS_REPORTED],
      "float_layers": float_layers, "float_kind": kind,
      "layers": len(layers),
      "within_bounds": ok, "size_bytes_before": size_before,
      "size_bytes": os.path.getsize(path),
      "seconds": time.time() - started}
  _log_fallback(record)
  return record


def _int8_row(file_or_content, examples, keras_accuracy, keras_probabilities):
  """An int8 file's (a path, or its bytes) accuracy on (images, labels),
  and its agreement with Keras's decisions."""
  images, labels = examples
  with tempfile.TemporaryDirectory() as tmp:
    path = file_or_content
    if isinstance(file_or_content, bytes):
      path = os.path.join(tmp, "candidate.tflite")
      with open(path, "wb") as f:
        f.write(file_or_content)
    probabilities = litert.ImageRunner(path).predict(images)
  return {"accuracy": float(np.mean(evaluation.hits(probabilities, labels))),
          "agreement": evaluation.agreement(
              probabilities, keras_probabilities,
              evaluation.is_multi_label(np.asarray(labels))),
          "keras_accuracy": keras_accuracy, "examples": int(len(labels))}


def _log_fallback(record):
  float_layers, layers = record["float_layers"], record["layers"]
  validation = record["validation"]
  logging.info("tflite_int8 keeps %d of %d layers in float (%s): validation "
               "%.4f (was %.4f), agreement %.4f (was %.4f), %d KB (was %d KB)",
               len(float_layers), layers,
               "within bounds" if record["within_bounds"] else
               "still out of bounds", validation["accuracy"],
               validation["accuracy_before"], validation["agreement"],
               validation["agreement_before"],
               record["size_bytes"] // 1024, record["size_bytes_before"] // 1024)
  if len(float_layers) >= layers:
    logging.warning("tflite_int8: neither its worst layers nor any one kind "
                    "of layer was enough; %s", quantization.EVERY_LAYER_ADVICE)
