"""Exports of a text classifier: preset, string SavedModel, TFLite.

* `preset/`: `save_to_preset`; reloads with
  `keras_hub.models.BertTextClassifier.from_preset(dir)`, tokenizer included.
* `saved_model/`: `serving_default` takes a batch of strings (`texts`,
  string [N]) and returns `probabilities`; tokenization is inside the graph
  (TensorFlow Text ops: `import tensorflow_text` before loading it).
* `model_<variant>.tflite` (float32, float16, dynamic): the TFLite converter
  cannot take the WordPiece tokenizer, so the files take token ids
  (`token_ids`, `padding_mask`, `segment_ids`: int32 [1, sequence_length])
  and `vocab.txt` beside them holds the vocabulary; the metadata says how to
  tokenize and `TextRunner.from_texts` does it with the same KerasHub
  tokenizer. Full-integer int8 is not offered: its inputs are token ids, not
  values to quantize, and BERT's softmax and LayerNorm lose too much.
"""

import logging
import os
import tempfile
import time

import keras
import numpy as np
import tensorflow as tf

from tl_keras import tflite
from tl_keras.errors import UserError

PRESET = "preset"
VOCABULARY = "vocab.txt"
INPUTS = ("token_ids", "padding_mask", "segment_ids")
VARIANTS = ("float32", "float16", "dynamic")


def float32_copy(model):
  """The classifier with a float32 copy of its backbone (same weights).

  Models trained under a mixed-precision policy are exported from it. The
  preprocessor (an int32 tokenizer) is shared as it is.
  """
  if "mixed" not in model.backbone.dtype_policy.name:
    return model
  backbone = model.backbone.__class__.from_config(
      tflite._with_float32_policy(  # pylint: disable=protected-access
          model.backbone.get_config()))
  clone = model.__class__(backbone, model.num_classes,
                          preprocessor=model.preprocessor,
                          activation="softmax", dropout=model.dropout)
  clone.set_weights(model.get_weights())
  return clone


def save_preset(model, path):
  model.save_to_preset(path)


def save_saved_model(model, path, *, class_names):
  """A SavedModel whose `serving_default` takes a batch of raw strings."""
  model = float32_copy(model)
  preprocessor = model.preprocessor
  archive = keras.export.ExportArchive()
  archive.track(model)
  archive.track(preprocessor)

  def serve(texts):
    return {"probabilities": model(preprocessor(texts), training=False)}

  archive.add_endpoint(
      name="serving_default", fn=serve,
      input_signature=[tf.TensorSpec([None], tf.string, name="texts")])
  labels = list(class_names)
  length = int(preprocessor.sequence_length)
  archive.add_endpoint(
      name="metadata", input_signature=[],
      fn=lambda: {"labels": tf.constant(labels, tf.string),
                  "sequence_length": tf.constant(length, tf.int32)})
  archive.write_out(path, verbose=False)


def tokens(preprocessor, texts, batch_size=256):
  """Raw strings -> {input name: int32 [N, sequence_length]}."""
  parts = [preprocessor(tf.constant(texts[i:i + batch_size]))
           for i in range(0, len(texts), batch_size)]
  return {k: np.concatenate([np.asarray(p[k]) for p in parts]).astype(np.int32)
          for k in INPUTS}


def keras_probabilities(model, token_arrays, batch_size=64):
  """The Keras model on token arrays, in inference mode."""
  n = len(token_arrays["token_ids"])
  out = []
  for i in range(0, n, batch_size):
    batch = {k: v[i:i + batch_size] for k, v in token_arrays.items()}
    batch["padding_mask"] = batch["padding_mask"].astype(bool)
    out.append(np.asarray(model(batch, training=False)))
  return np.concatenate(out).astype(np.float32)


def convert(model, variant, sequence_length):
  """TFLite bytes of `model` taking token arrays [1, sequence_length].

  A model trained under a mixed-precision policy is converted from a
  float32 copy.
  """
  model = float32_copy(model)
  specs = [tf.TensorSpec([1, sequence_length], tf.int32, name=n)
           for n in INPUTS]

  def serve(token_ids, padding_mask, segment_ids):
    return {"probabilities": model(
        {"token_ids": token_ids, "padding_mask": tf.cast(padding_mask, tf.bool),
         "segment_ids": segment_ids}, training=False)}

  with tempfile.TemporaryDirectory() as tmp:
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint("serving_default", serve, input_signature=specs)
    archive.write_out(tmp, verbose=False)
    converter = tf.lite.TFLiteConverter.from_saved_model(tmp)
    tflite._configure(converter, variant, None)  # pylint: disable=protected-access
    with tflite.native_stdout_silenced():
      return converter.convert()


def tokenizer_settings(model):
  """How to tokenize for the .tflite files, recorded in their metadata."""
  tokenizer = model.preprocessor.tokenizer
  return {"vocabulary": VOCABULARY,
          "lowercase": bool(getattr(tokenizer, "lowercase", True)),
          "strip_accents": bool(getattr(tokenizer, "strip_accents", False)),
          "sequence_length": int(model.preprocessor.sequence_length)}


def export_tflite(model, variant, path, *, class_names):
  """Converts, embeds metadata (labels, tokenizer settings), writes `path`."""
  started = time.time()
  settings = tokenizer_settings(model)
  try:
    content = convert(model, variant, settings["sequence_length"])
  except Exception as e:  # The converter raises many types.
    raise UserError(f"TFLite {variant} conversion failed: "
                    f"{str(e).strip().splitlines()[0][:300]}") from e
  metadata = {"labels": list(class_names), "variant": variant, "kind": "text",
              "inputs": list(INPUTS), "tokenizer": settings,
              "output": {"meaning": "class probabilities, in label order"}}
  with open(path, "wb") as f:
    f.write(tflite.add_metadata(content, metadata))
  logging.info("wrote %s (%d bytes, %.1fs)", os.path.basename(path),
               os.path.getsize(path), time.time() - started)


def write_vocabulary(model, path):
  vocabulary = model.preprocessor.tokenizer.get_vocabulary()
  with open(path, "w", encoding="utf-8") as f:
    f.write("\n".join(vocabulary) + "\n")


def write_exports(model, directory, formats, *, class_names):
  """Writes the preset and each of `formats` into `directory`.

  Returns:
    The formats skipped (tflite_int8), with the reason, for the record.
  """
  from tl_keras import export  # pylint: disable=g-import-not-at-top
  save_preset(model, os.path.join(directory, PRESET))
  skipped = {}
  wrote_tflite = False
  for fmt in formats:
    path = os.path.join(directory, export.filename(fmt))
    if fmt == export.SAVED_MODEL:
      save_saved_model(model, path, class_names=class_names)
      continue
    variant = export.tflite_variants([fmt])[0]
    if variant not in VARIANTS:
      skipped[fmt] = ("full-integer TFLite is not offered for text models; "
                      "tflite_dynamic is the small one")
      logging.info("%s skipped: %s", fmt, skipped[fmt])
      continue
    export_tflite(model, variant, path, class_names=class_names)
    wrote_tflite = True
  if wrote_tflite:
    write_vocabulary(model, os.path.join(directory, VOCABULARY))
  return skipped


class TextRunner(tflite.Runner):
  """A text .tflite under LiteRT: token arrays in, probabilities out."""

  def __init__(self, path, num_threads=tflite.LATENCY_THREADS):
    super().__init__(path, num_threads)
    self.signature = self.interpreter.get_signature_runner()
    self.metadata = tflite.read_metadata(path) or {}

  @staticmethod
  def first(inputs):
    return {k: v[:1] for k, v in inputs.items()}

  def _call(self, one):
    return self.signature(**one)["probabilities"].astype(np.float32)[0]

  def predict(self, inputs):
    """{name: int32 [N, L]} -> float32 [N, num_classes], one at a time."""
    n = len(inputs["token_ids"])
    return np.stack([self._call({k: v[i:i + 1] for k, v in inputs.items()})
                     for i in range(n)])

  def latency_ms(self, one, runs=tflite.LATENCY_RUNS,
                 warmup=tflite.LATENCY_WARMUP):
    times = []
    for i in range(warmup + runs):
      start = time.perf_counter()
      self.signature(**one)
      if i >= warmup:
        times.append(time.perf_counter() - start)
    return 1000 * float(np.median(times))

  def preprocessor(self):
    """The KerasHub preprocessor that makes this file's inputs from text."""
    import keras_hub  # pylint: disable=g-import-not-at-top
    settings = self.metadata.get("tokenizer")
    if not settings:
      raise UserError(f"{self.path} has no tokenizer settings in its "
                      "metadata; it was not written by a tl_keras text run")
    vocabulary = os.path.join(os.path.dirname(self.path),
                              settings["vocabulary"])
    if not os.path.exists(vocabulary):
      raise UserError(f"{vocabulary} is missing: the text .tflite needs the "
                      "vocab.txt written beside it")
    tokenizer = keras_hub.models.BertTokenizer(
        vocabulary=vocabulary, lowercase=settings["lowercase"],
        strip_accents=settings["strip_accents"])
    return keras_hub.models.BertTextClassifierPreprocessor(
        tokenizer, sequence_length=settings["sequence_length"])

  def predict_texts(self, texts):
    return self.predict(tokens(self.preprocessor(), list(texts)))


def tflite_parity(model, directory, variants, texts, labels):
  """The parity table for text: each .tflite against Keras on `texts`."""
  inputs = tokens(model.preprocessor, list(texts))
  keras_probs = keras_probabilities(model, inputs)
  keras_accuracy = float(np.mean(keras_probs.argmax(-1) == labels))
  rows = {}
  for variant in variants:
    path = os.path.join(directory, tflite.filename(variant))
    rows[variant] = {**tflite.parity(path, inputs, labels, keras_probs,
                                     runner=TextRunner(path)),
                     "keras_accuracy": keras_accuracy}
  if rows:
    logging.info("TFLite parity\n%s", tflite.format_parity(rows))
  return rows
