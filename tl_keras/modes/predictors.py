"""Any artifact of a run as one interface: predict and evaluate with it.

`load(path)` accepts a run directory, a `.keras` file, a SavedModel
directory or a `.tflite` file and returns a `Predictor`: labels,
`predict(examples) -> probabilities [N, C]`, and `input`, what the model
takes and how --inputs files and dataset splits become it: `ImageInput`
(uint8 [N, S, S, 3], resized by `inputs_lib.resize` as in training) or
`TextInput` (raw strings). The artifact says which (the model's serving
kind, the SavedModel's `metadata` signature, the .tflite file's metadata).
"""

import dataclasses
import json
import logging
import os
import re
from typing import Callable

import numpy as np
import tensorflow as tf

from tl_keras import artifacts
from tl_keras.data import folders
from tl_keras.data import input_files
from tl_keras.data import inputs as inputs_lib
from tl_keras.errors import UserError
from tl_keras import evaluation
from tl_keras.export import serving as serving_lib
from tl_keras.export import standard_metadata
from tl_keras.export import tflite
from tl_keras import families
from tl_keras.models import saving
from tl_keras.models import word_embedding


class ImageInput:
  """What an image model's artifacts take: uint8 [N, S, S, 3] at its size.

  Files and splits are resized to S by `inputs_lib.resize`, the resize training
  and evaluation use, so every artifact of a run sees identical pixels.
  """

  data = "image"
  vocabulary = None

  def __init__(self, image_size):
    self.image_size = int(image_size)

  @classmethod
  def of_keras(cls, serving, path):
    del path
    return cls(serving.image_size)

  @classmethod
  def of_saved_model(cls, described, path):
    del path
    return cls(described["image_size"])

  @classmethod
  def of_tflite(cls, runner):
    return cls(runner.image_size)

  def expand(self, items, image_column="path", text_column="text"):
    """--inputs as (names, items to `read`): a folder stands for the image
    files under it, a .csv for the files its `image_column` names
    (relative to the .csv)."""
    del text_column
    names = []
    for item in items:
      if os.path.isdir(item):
        found = sorted(
            os.path.join(root, f) for root, _, files in os.walk(item)
            for f in files if not f.startswith(".")
            and f.lower().endswith(folders.IMAGE_EXTENSIONS))
        if not found:
          raise UserError(f"--inputs: {item} holds no image files "
                          f"({', '.join(folders.IMAGE_EXTENSIONS)})")
        names += found
      elif item.lower().endswith(".csv"):
        base = os.path.dirname(item)
        names += [os.path.join(base, p)
                  for p in input_files.read_column(item, image_column)]
      else:
        names.append(item)
    return names, names

  def read(self, items):
    """Image files as uint8 images at the model's size."""
    return input_files.read_images(items, self.image_size)

  def batches(self, dataset, batch_size):
    """A split's (uint8 images at the model's size, labels) per batch."""
    return dataset.map(lambda x, y: (inputs_lib.resize(x, self.image_size), y)).batch(
        batch_size).as_numpy_iterator()

  def check(self, names, examples):
    del names, examples  # any image is fair input


class TextInput:
  """What a text model's artifacts take: raw strings.

  Each artifact tokenizes with the run's own tokenizer (the `.tflite` files
  with `vocab.txt` beside them, or the vocabulary packed inside them).
  `vocabulary`, the run's tokens where found, lets `check` warn about texts
  the model cannot read.
  """

  data = "text"
  image_size = 0

  def __init__(self, vocabulary=None):
    self.vocabulary = vocabulary

  @classmethod
  def of_keras(cls, serving, path):
    del serving
    return cls(_vocabulary_beside(path))

  @classmethod
  def of_saved_model(cls, described, path):
    del described
    return cls(_vocabulary_beside(path))

  @classmethod
  def of_tflite(cls, runner):
    # Fails early if the vocabulary is neither beside the file nor in it.
    return cls(frozenset(runner.preprocessor().tokenizer.get_vocabulary()))

  def expand(self, items, image_column="path", text_column="text"):
    """--inputs (.txt files, one text a line; .csv files, their
    `text_column`; or texts) as (names, texts)."""
    del image_column
    return input_files.read_texts(items, text_column)

  def read(self, texts):
    return list(texts)

  def batches(self, dataset, batch_size):
    """A split's (strings, labels) per batch."""
    return (([t.decode("utf-8") for t in texts], labels)
            for texts, labels in dataset.batch(batch_size).as_numpy_iterator())

  def check(self, names, texts):
    """Warns when texts are mostly words the vocabulary does not hold."""
    if not self.vocabulary:
      return
    unknown = [(name, share) for name, text in zip(names, texts)
               if (share := unknown_share(text, self.vocabulary))
               > UNKNOWN_SHARE]
    if unknown:
      logging.warning(
          "%d of %d texts are mostly words the model's vocabulary does not "
          "hold (%s: %.0f%% of its words): the model never learnt them, so "
          "its predictions on them mean little; check the language and "
          "domain of the input", len(unknown), len(texts), unknown[0][0],
          100 * unknown[0][1])


class WordsInput(TextInput):
  """What the word-embedding model's artifacts take: raw strings, split
  into words by its regex tokenizer (its vocab.txt: "token id" a line)."""

  @classmethod
  def of_keras(cls, serving, path):
    del path
    return cls(frozenset(serving.preprocessor.vocabulary))

  @classmethod
  def of_saved_model(cls, described, path):
    del described
    text = _vocabulary_text_beside(path)
    return cls(text and frozenset(word_embedding.vocabulary_from_file(text)))

  @classmethod
  def of_tflite(cls, runner):
    return cls(frozenset(runner.preprocessor().vocabulary))


# What each kind of model takes, by `serving` kind.
INPUTS = {"image": ImageInput, "text": TextInput, "words": WordsInput}
# The kind of a SavedModel by its serving input's name.
_KIND_OF_INPUT = {"images": "image", "texts": "text"}


@dataclasses.dataclass
class Predictor:
  kind: str  # keras, saved_model or tflite
  path: str
  labels: list
  predict: Callable  # what `input` takes -> float32 [N, C]
  input: object  # an `ImageInput` or `TextInput`

  @property
  def data(self):
    """What `predict` takes: "image" or "text"."""
    return self.input.data

  @property
  def image_size(self):
    return self.input.image_size  # 0 for text

  def read(self, items):
    """--inputs as (names, what `predict` takes)."""
    names, expanded = self.input.expand(items)
    return names, self.input.read(expanded)

  def batch_inputs(self, dataset, batch_size=64):
    """A split's (inputs as `predict` takes them, labels), per batch."""
    return self.input.batches(dataset, batch_size)


def load(path):
  """The artifact at `path` as a `Predictor`; UserError if it is none."""
  path = os.path.expanduser(path)
  if not os.path.exists(path):
    raise UserError(f"--artifact={path}: no such file or directory")
  if os.path.isdir(path):
    if os.path.exists(os.path.join(path, "saved_model.pb")):
      return _saved_model(path)
    if os.path.exists(os.path.join(path, "model.keras")):
      return _keras(os.path.join(path, "model.keras"))
    raise UserError(f"--artifact={path} is a directory without model.keras "
                    "or saved_model.pb; pass a run directory, a .keras file, "
                    "a SavedModel directory or a .tflite file")
  if path.endswith(".tflite"):
    return _tflite(path)
  if path.endswith(".keras"):
    return _keras(path)
  raise UserError(f"--artifact={path} is not a .keras or .tflite file, a "
                  "SavedModel directory or a run directory")


def _vocabulary_text_beside(path):
  """The text of the run's vocab.txt beside `path`, or None."""
  candidate = os.path.join(os.path.dirname(os.path.abspath(path)),
                           serving_lib.TextServing.VOCABULARY)
  if not os.path.isfile(candidate):
    return None
  with open(candidate, encoding="utf-8") as f:
    return f.read()


def _vocabulary_beside(path):
  """The tokens of the run's vocab.txt beside `path` (a token a line), or
  None."""
  text = _vocabulary_text_beside(path)
  return text and frozenset(text.rstrip("\n").split("\n"))


# A text of which more than this share of words are not whole tokens of the
# vocabulary is in a language or domain the model did not learn.
UNKNOWN_SHARE = 0.5


def unknown_share(text, vocabulary):
  """The share of `text`'s words that are not tokens of `vocabulary`."""
  words = re.findall(r"\w+", text)
  if not words:
    return 0.0
  return sum(w not in vocabulary and w.lower() not in vocabulary
             for w in words) / len(words)


def _labels_beside(path, num_classes):
  """labels.txt next to `path`, else class indices as names."""
  candidate = os.path.join(os.path.dirname(os.path.abspath(path)),
                           "labels.txt")
  if os.path.exists(candidate):
    labels = artifacts.read_labels(candidate)
    if len(labels) == num_classes:
      return labels
  return [str(i) for i in range(num_classes)]


def _keras(path):
  model = saving.load_keras(path)
  num_classes = int(model.output_shape[-1])
  serving = families.serving_of(model)
  return Predictor(
      "keras", path, _labels_beside(path, num_classes),
      lambda examples: serving.keras_probabilities(
          model, serving.inputs(examples)),
      INPUTS[serving.kind].of_keras(serving, path))


def _saved_model(path):
  import tensorflow_text  # noqa: F401  pylint: disable=g-import-not-at-top,unused-import  # text models' tokenizer ops
  try:
    loaded = tf.saved_model.load(path)
    serve = loaded.signatures["serving_default"]
    meta = loaded.signatures["metadata"]()
  except (KeyError, OSError, ValueError) as e:
    raise UserError(f"{path} is not a SavedModel written by tl_keras (needs "
                    "serving_default and metadata signatures)") from e
  labels = [b.decode("utf-8") for b in meta["labels"].numpy()]
  (name,) = serve.structured_input_signature[1]  # "images" or "texts"
  # SavedModels written before `kind` was recorded: their input names it.
  kind = (meta["kind"].numpy().decode("utf-8") if "kind" in meta
          else _KIND_OF_INPUT[name])
  described = {k: int(v.numpy()) for k, v in meta.items()
               if k not in ("labels", "kind")}

  def predict(examples, batch_size=64):
    return np.concatenate([
        serve(**{name: tf.constant(examples[i:i + batch_size])})[
            "probabilities"].numpy()
        for i in range(0, len(examples), batch_size)])

  return Predictor("saved_model", path, labels, predict,
                   INPUTS[kind].of_saved_model(described, path))


def _tflite(path):
  metadata = tflite.read_metadata(path) or {}
  kind = metadata.get("kind", "image")
  runner = serving_lib.KINDS[kind].runner(path)
  labels = (metadata.get("labels")
            or standard_metadata.read(path).get("labels")
            or _labels_beside(path, int(runner.output["shape"][-1])))
  return Predictor("tflite", path, labels, runner.predict_examples,
                   INPUTS[kind].of_tflite(runner))


def evaluate(artifact, splits, split="test", batch_size=64):
  """--mode=evaluate: the artifact's metrics on one split of a dataset.

  Returns:
    The metrics dict of `evaluation.metrics_from_counts`, plus `artifact`
    and `kind`.
  """
  predictor = load(artifact)
  generic = all(label.isdigit() for label in predictor.labels)
  if len(predictor.labels) != splits.num_classes or (
      not generic and list(predictor.labels) != list(splits.class_names)):
    raise UserError(
        f"{artifact} predicts {len(predictor.labels)} classes "
        f"({', '.join(predictor.labels[:4])}, ...) but the dataset has "
        f"{splits.num_classes} ({', '.join(splits.class_names[:4])}, ...); "
        "evaluate on the dataset the model was trained for")
  if splits.multi_label:
    return {"artifact": artifact, "kind": predictor.kind, "split": split,
            **_evaluate_multi_label(artifact, predictor, splits, split,
                                      batch_size)}
  num_classes = splits.num_classes
  confusion = np.zeros((num_classes, num_classes))
  loss = top_k = 0.0
  k = min(5, num_classes)
  for inputs, labels in predictor.batch_inputs(getattr(splits, split),
                                               batch_size):
    probs = predictor.predict(inputs)
    np.add.at(confusion, (labels, probs.argmax(-1)), 1)
    loss += float(-np.log(np.maximum(probs[np.arange(len(labels)), labels],
                                     1e-7)).sum())
    top_k += float(np.sum(np.argsort(-probs, -1)[:, :k] == labels[:, None]))
  metrics = evaluation.metrics_from_counts(
      confusion, top_k=top_k, loss=loss, class_names=splits.class_names)
  return {"artifact": artifact, "kind": predictor.kind, "split": split,
          **metrics}


def run_thresholds(artifact):
  """The per-label thresholds of the --multi_label run `artifact` belongs
  to ({label: threshold}, from its metrics.json), or None: a single-label
  run, or a file outside its run folder."""
  path = os.path.expanduser(artifact)
  for folder in (path, os.path.dirname(path)):
    found = os.path.join(folder, "metrics.json")
    if os.path.isfile(found):
      with open(found, encoding="utf-8") as f:
        test = json.load(f).get("test", {})
      if not test.get("multi_label"):
        return None
      return {name: m["threshold"] for name, m in test["per_class"].items()}
  return None


def _evaluate_multi_label(artifact, predictor, splits, split, batch_size):
  """`evaluate` for --multi_label data: `evaluation.multi_label_metrics`
  at the thresholds of the run `artifact` belongs to (0.5 for a file
  outside its run folder)."""
  probs, labels = [], []
  for inputs, batch_labels in predictor.batch_inputs(getattr(splits, split),
                                                     batch_size):
    probs.append(predictor.predict(inputs))
    labels.append(batch_labels)
  chosen = run_thresholds(artifact) or {}
  return evaluation.multi_label_metrics(
      np.concatenate(probs), np.concatenate(labels),
      class_names=splits.class_names,
      thresholds=[chosen.get(name, evaluation.DEFAULT_THRESHOLD)
                  for name in splits.class_names])
