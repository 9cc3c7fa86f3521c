"""How each kind of classifier is fed and served, in one object per kind.

Every exporter (`export`: SavedModel, TFLite, parity, fallback) and every
reader (`predictors`) takes one of these instead of asking which kind of
model it has; `of(model)` is the one place that asks.

    ImageServing  raw RGB uint8 images in: the SavedModel takes any size
                  [N, H, W, 3] (the model resizes), the .tflite files the
                  model's size [1, S, S, 3]; normalization is inside.
    TextServing   the SavedModel takes raw strings (the tokenizer is inside
                  the graph); the .tflite files take token ids
                  (`token_ids`, `padding_mask` and, where the model has
                  them, `segment_ids`: int32 [1, sequence_length]), since
                  the TFLite converter cannot take the tokenizer. TFLite is
                  offered for WordPiece tokenizers (BERT, DistilBERT,
                  ELECTRA): the files' metadata packs the vocabulary (also
                  written beside them as `vocab.txt`), and for models with
                  BERT's three inputs declares the BERT tokenizer MediaPipe
                  reads.
    WordServing   the average word-embedding model: raw strings in the
                  SavedModel; one int32 `token_ids` input in the .tflite
                  files, which declare MediaPipe's regex tokenizer.

Each has:
    kind, variants            "image"/"text"/"words"; the TFLite variants.
    float32(model)            the model rebuilt under float32 if mixed.
    tracked(model)            what the SavedModel tracks (text: the
                              preprocessor too).
    serving(model)            (fn, input specs) of the SavedModel's
                              `serving_default` (outputs `probabilities`).
    described()               what the SavedModel's `metadata` signature
                              returns besides `labels`.
    tflite_input(variant)     a key: variants with the same key convert from
                              the same SavedModel.
    tflite_serving(model, key)  (model served, fn, input specs) that key's
                              SavedModel is written from.
    tflite_metadata(variant, content, class_names)  the files' own entry.
    standard_metadata(variant, content, class_names)  the file with the
                              standard TFLite metadata apps read.
    examples(dataset, limit)  (raw examples, labels) of a split: uint8
                              images at the model's size, or strings.
    inputs(examples)          raw examples -> what the Keras model and the
                              .tflite runner take.
    keras_probabilities(model, inputs)
    runner(path, num_threads) the .tflite file under LiteRT.
    write_extras(model, directory, wrote_tflite)  files beside the exports.
"""

import logging
import os

import keras
import numpy as np
import tensorflow as tf

from tl_keras.data import inputs
from tl_keras.data import text_data
from tl_keras.export import litert
from tl_keras.export import standard_metadata
from tl_keras.export import tflite
from tl_keras.models import precision
from tl_keras.models import text_models
from tl_keras.models import word_embedding


class ImageServing:
  """Raw RGB uint8 images in, class probabilities out."""

  kind = "image"
  variants = tflite.VARIANTS

  def __init__(self, image_size, preprocessing, name="classifier",
               about=None):
    self.image_size = int(image_size)
    self.preprocessing = preprocessing
    self.name = name
    self.about = about or {}

  float32 = staticmethod(precision.float32_copy)

  @staticmethod
  def tracked(model):
    return [model]

  @staticmethod
  def serving(model):
    def serve(images):
      return {"probabilities": model(tf.cast(images, tf.float32),
                                     training=False)}
    return serve, [tf.TensorSpec([None, None, None, 3], tf.uint8,
                                 name="images")]

  def described(self):
    return {"image_size": self.image_size}

  @staticmethod
  def tflite_input(variant):
    # int8 takes float pixels, so the converter can quantize the input (see
    # `tflite.representative`); the others take uint8 pixels and cast them,
    # int16x8 into its own integer-friendly graph.
    return {"int8": "float32", "int16x8": "int16x8"}.get(variant, "uint8")

  def tflite_serving(self, model, key):
    shape = [1, self.image_size, self.image_size, 3]
    if key == "float32":
      served = tflite.integer_friendly(model)
      return served, lambda images: served(images, training=False), [
          tf.TensorSpec(shape, tf.float32, name="images")]
    served = tflite.integer_friendly(model, key) if key == "int16x8" else model
    return served, lambda images: served(tf.cast(images, tf.float32),
                                         training=False), [
                                             tf.TensorSpec(shape, tf.uint8,
                                                           name="images")]

  def tflite_metadata(self, variant, content, class_names):
    return tflite.metadata_for(variant, content, class_names, self.image_size,
                               self.preprocessing)

  def standard_metadata(self, variant, content, class_names):
    """`content` with the metadata MediaPipe Tasks and LiteRT apps read."""
    size = self.image_size
    return standard_metadata.image_classifier(
        content, labels=class_names, name=f"{self.name} image classifier",
        version=_version(), **self.about,
        description=(
            f"{len(class_names)} classes, TFLite {variant}, by tl_keras. "
            f"Input: raw RGB uint8 {size}x{size}; the normalization is inside "
            f"the model; {tflite.RESIZE_NOTE}. Output: class probabilities "
            "in label order."))

  def examples(self, dataset, limit=0):
    """(uint8 images [N, S, S, 3], labels) of a split's first `limit`."""
    return inputs.to_numpy(dataset, self.image_size, limit=limit)

  @staticmethod
  def inputs(images):
    return np.asarray(images)

  @staticmethod
  def keras_probabilities(model, images, batch_size=64):
    """The Keras model on uint8 images, in inference mode."""
    out = [model(tf.cast(images[i:i + batch_size], tf.float32),
                 training=False).numpy()
           for i in range(0, len(images), batch_size)]
    return np.concatenate(out).astype(np.float32)

  @staticmethod
  def runner(path, num_threads=litert.LATENCY_THREADS):
    return litert.ImageRunner(path, num_threads)

  @staticmethod
  def write_extras(model, directory, wrote_tflite):
    del model, directory, wrote_tflite  # everything is inside the files


class TextServing:
  """Raw strings in (token ids for TFLite), class probabilities out."""

  kind = "text"
  PRESET = "preset"
  VOCABULARY = "vocab.txt"

  def __init__(self, preprocessor, about=None):
    self.preprocessor = preprocessor
    self.about = about or {}
    self.sequence_length = int(preprocessor.sequence_length)
    made = preprocessor(tf.constant(["a"]))
    self.input_names = tuple(n for n in litert.TEXT_INPUTS if n in made)
    import keras_hub  # pylint: disable=g-import-not-at-top
    wordpiece = isinstance(preprocessor.tokenizer,
                           keras_hub.tokenizers.WordPieceTokenizer)
    # Integer activations (int8, int16x8) are not offered: the inputs are
    # token ids, not values to quantize, and BERT's softmax and LayerNorm
    # lose too much in int8. Other tokenizers (byte-pair, SentencePiece)
    # have no runner here.
    self.variants = ("float32", "float16", "dynamic") if wordpiece else ()
    self.skipped = (
        "integer-activation TFLite (int8, int16x8) is not offered for text "
        "models; tflite_dynamic is the small one" if wordpiece else
        f"TFLite is offered for WordPiece tokenizers (BERT, DistilBERT, "
        f"ELECTRA); {type(preprocessor.tokenizer).__name__} models export "
        "the SavedModel and model.keras")

  float32 = staticmethod(text_models.float32_copy)

  @staticmethod
  def tracked(model):
    return [model, model.preprocessor]

  @staticmethod
  def serving(model):
    preprocessor = model.preprocessor

    def serve(texts):
      return {"probabilities": model(preprocessor(texts), training=False)}
    return serve, [tf.TensorSpec([None], tf.string, name="texts")]

  def described(self):
    return {"sequence_length": self.sequence_length}

  @staticmethod
  def tflite_input(variant):
    del variant  # every variant takes the same token arrays
    return "int32"

  def tflite_serving(self, model, key):
    del key
    specs = [tf.TensorSpec([1, self.sequence_length], tf.int32, name=n)
             for n in self.input_names]

    def serve(*tensors):
      inputs = dict(zip(self.input_names, tensors))
      inputs["padding_mask"] = tf.cast(inputs["padding_mask"], tf.bool)
      return {"probabilities": model(inputs, training=False)}
    return model, serve, specs

  def tokenizer_settings(self):
    """How to tokenize for the .tflite files, recorded in their metadata."""
    tokenizer = self.preprocessor.tokenizer
    return {"vocabulary": self.VOCABULARY,
            "lowercase": bool(getattr(tokenizer, "lowercase", True)),
            "strip_accents": bool(getattr(tokenizer, "strip_accents", False)),
            "sequence_length": self.sequence_length}

  def standard_metadata(self, variant, content, class_names):
    """`content` with the BERT metadata MediaPipe's TextClassifier reads.

    MediaPipe's BERT input takes token ids, mask and segment ids; a model
    without segment ids (DistilBERT) keeps tl_keras's own metadata only.
    """
    if "segment_ids" not in self.input_names:
      logging.info("no MediaPipe metadata: MediaPipe's BERT input needs "
                   "segment ids, which %s has none of",
                   type(self.preprocessor).__name__)
      return content
    return standard_metadata.bert_text_classifier(
        content, labels=class_names,
        vocabulary=self.preprocessor.tokenizer.get_vocabulary(),
        inputs=self.input_names, name="BERT text classifier",
        version=_version(), **self.about,
        description=(
            f"{len(class_names)} classes, TFLite {variant}, by tl_keras. "
            "Input: WordPiece token ids, padding mask and segment ids, int32 "
            f"[1, {self.sequence_length}] (the vocabulary is inside the "
            "file). Output: class probabilities in label order."))

  def tflite_metadata(self, variant, content, class_names):
    del content
    return {"labels": list(class_names), "variant": variant, "kind": "text",
            "inputs": list(self.input_names),
            "tokenizer": self.tokenizer_settings(),
            "output": {"meaning": "class probabilities, in label order"}}

  @staticmethod
  def examples(dataset, limit=0):
    """(raw strings, labels) of a split's first `limit` (0 = all)."""
    return text_data.texts_of(dataset, limit=limit)

  def inputs(self, texts):
    return litert.tokens(self.preprocessor, list(texts), self.input_names)

  @staticmethod
  def keras_probabilities(model, inputs, batch_size=64):
    """The Keras model on token arrays, in inference mode."""
    out = []
    for i in range(0, len(inputs["token_ids"]), batch_size):
      batch = {k: v[i:i + batch_size] for k, v in inputs.items()}
      batch["padding_mask"] = batch["padding_mask"].astype(bool)
      out.append(np.asarray(model(batch, training=False)))
    return np.concatenate(out).astype(np.float32)

  @staticmethod
  def runner(path, num_threads=litert.LATENCY_THREADS):
    return litert.TextRunner(path, num_threads)

  def write_extras(self, model, directory, wrote_tflite):
    """The KerasHub preset always; the vocabulary beside .tflite files."""
    model.save_to_preset(os.path.join(directory, self.PRESET))
    if wrote_tflite:
      vocabulary = self.preprocessor.tokenizer.get_vocabulary()
      with open(os.path.join(directory, self.VOCABULARY), "w",
                encoding="utf-8") as f:
        f.write("\n".join(vocabulary) + "\n")
      logging.info("wrote %s (the .tflite files' vocabulary)",
                   self.VOCABULARY)


class WordServing:
  """Raw strings in (word ids for TFLite), class probabilities out: the
  average word-embedding classifier (`word_embedding`).

  The SavedModel tokenizes inside its graph. The .tflite files take one
  int32 [1, L] `token_ids` input and declare MediaPipe's RegexTokenizer
  (the split pattern and the vocabulary, packed inside), so MediaPipe's
  TextClassifier takes raw strings. `vocab.txt` beside them holds the same
  vocabulary ("token id" a line).
  """

  kind = "words"
  VOCABULARY = "vocab.txt"
  # Integer activations are not offered: the input is word ids, and the
  # float file is already well under 1 MB.
  variants = ("float32", "float16", "dynamic")
  skipped = ("integer-activation TFLite (int8, int16x8) is not offered for "
             "the word-embedding model; tflite_dynamic is the small one")
  input_names = ("token_ids",)

  def __init__(self, preprocessor, about=None):
    self.preprocessor = preprocessor
    self.about = about or {}
    self.sequence_length = int(preprocessor.sequence_length)

  float32 = staticmethod(precision.float32_copy)
  tracked = staticmethod(TextServing.tracked)
  serving = staticmethod(TextServing.serving)
  described = TextServing.described
  examples = staticmethod(TextServing.examples)

  @staticmethod
  def tflite_input(variant):
    del variant
    return "int32"

  def tflite_serving(self, model, key):
    del key
    # The network alone: the preprocessor's lookup table has no TFLite op.
    model = keras.Model(model.inputs, model.outputs)
    return model, lambda ids: {"probabilities": model(
        {"token_ids": ids}, training=False)}, [
            tf.TensorSpec([1, self.sequence_length], tf.int32,
                          name="token_ids")]

  def tflite_metadata(self, variant, content, class_names):
    del content
    return {"labels": list(class_names), "variant": variant,
            "kind": self.kind, "inputs": list(self.input_names),
            "tokenizer": {"vocabulary": self.VOCABULARY,
                          "delimiter": word_embedding.DELIMITER,
                          "sequence_length": self.sequence_length},
            "output": {"meaning": "class probabilities, in label order"}}

  def standard_metadata(self, variant, content, class_names):
    """`content` with the regex-tokenizer metadata MediaPipe's
    TextClassifier reads."""
    return standard_metadata.regex_text_classifier(
        content, labels=class_names,
        vocabulary_file=word_embedding.vocabulary_file(self.preprocessor),
        delimiter=word_embedding.DELIMITER,
        name="Average word-embedding text classifier", version=_version(),
        **self.about,
        description=(
            f"{len(class_names)} classes, TFLite {variant}, by tl_keras. "
            f"Input: word ids, int32 [1, {self.sequence_length}] (the "
            "regex tokenizer and its vocabulary are inside the file). "
            "Output: class probabilities in label order."))

  def inputs(self, texts):
    return litert.tokens(self.preprocessor, list(texts), self.input_names)

  @staticmethod
  def keras_probabilities(model, inputs, batch_size=64):
    ids = inputs["token_ids"]
    return np.concatenate([
        np.asarray(model({"token_ids": ids[i:i + batch_size]},
                         training=False))
        for i in range(0, len(ids), batch_size)]).astype(np.float32)

  @staticmethod
  def runner(path, num_threads=litert.LATENCY_THREADS):
    return litert.WordRunner(path, num_threads)

  def write_extras(self, model, directory, wrote_tflite):
    """The vocabulary beside .tflite files ("token id" a line)."""
    if wrote_tflite:
      with open(os.path.join(directory, self.VOCABULARY), "w",
                encoding="utf-8") as f:
        f.write(word_embedding.vocabulary_file(model.preprocessor))
      logging.info("wrote %s (the .tflite files' vocabulary)",
                   self.VOCABULARY)


# Each serving class by its kind, as artifacts record it.
KINDS = {cls.kind: cls for cls in (ImageServing, TextServing, WordServing)}


def _version():
  """tl_keras's version, the files' version."""
  from importlib import metadata  # pylint: disable=g-import-not-at-top
  try:
    return metadata.version("tl_keras")
  except metadata.PackageNotFoundError:
    return "unknown"
