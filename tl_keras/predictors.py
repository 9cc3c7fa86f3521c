"""Any artifact of a run as one interface: predict and evaluate with it.

`load(path)` accepts a run directory, a `.keras` file, a SavedModel
directory or a `.tflite` file and returns a `Predictor`: labels, the input
size, and `predict(uint8 [N, S, S, 3]) -> probabilities [N, C]`. Images are
resized to S by `data.resize`, the same resize training and evaluation use,
so every artifact of a run sees identical pixels.

A text model's `Predictor` serves "text": `predict(list of strings)`; each
artifact tokenizes with the run's own tokenizer (the `.tflite` files with
`vocab.txt` beside them, or the vocabulary packed inside them).
"""

import dataclasses
import logging
import os
import re
from typing import Callable

import numpy as np
import tensorflow as tf

from tl_keras import artifacts
from tl_keras import data
from tl_keras import folders
from tl_keras import evaluation
from tl_keras import export
from tl_keras import litert
from tl_keras import serving as serving_lib
from tl_keras import standard_metadata
from tl_keras import tflite
from tl_keras.errors import UserError


@dataclasses.dataclass
class Predictor:
  kind: str  # keras, saved_model or tflite
  path: str
  labels: list
  image_size: int  # 0 for text
  predict: Callable  # uint8 [N, S, S, 3] (or strings) -> float32 [N, C]
  data: str = "image"  # what `predict` takes: "image" or "text"
  # Text: the run's vocabulary (vocab.txt beside the artifact), if found.
  vocabulary: frozenset = None

  def read(self, items):
    """--inputs as (names, what `predict` takes)."""
    return READERS[self.data](self, items)

  def batch_inputs(self, dataset, batch_size=64):
    """A split's (inputs as `predict` takes them, labels), per batch."""
    return BATCHES[self.data](self, dataset, batch_size)


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


def _vocabulary_beside(path):
  """The tokens of the run's vocab.txt beside `path`, or None."""
  candidate = os.path.join(os.path.dirname(os.path.abspath(path)),
                           serving_lib.TextServing.VOCABULARY)
  if not os.path.isfile(candidate):
    return None
  with open(candidate, encoding="utf-8") as f:
    return frozenset(line.rstrip("\n") for line in f)


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
  model = export.load_keras(path)
  num_classes = int(model.output_shape[-1])
  labels = _labels_beside(path, num_classes)
  serving = serving_lib.of(model)
  return Predictor(
      "keras", path, labels, getattr(serving, "image_size", 0),
      lambda examples: serving.keras_probabilities(
          model, serving.inputs(examples)), data=serving.kind,
      vocabulary=_vocabulary_beside(path) if serving.kind == "text" else None)


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
  if "sequence_length" in meta:
    def predict_texts(texts, batch_size=64):
      texts = list(texts)
      return np.concatenate([
          serve(texts=tf.constant(texts[i:i + batch_size]))[
              "probabilities"].numpy()
          for i in range(0, len(texts), batch_size)])
    return Predictor("saved_model", path, labels, 0, predict_texts,
                     data="text", vocabulary=_vocabulary_beside(path))

  def predict(images, batch_size=64):
    return np.concatenate([
        serve(images=tf.constant(images[i:i + batch_size]))[
            "probabilities"].numpy()
        for i in range(0, len(images), batch_size)])

  return Predictor("saved_model", path, labels,
                   int(meta["image_size"].numpy()), predict)


def _tflite(path):
  metadata = tflite.read_metadata(path) or {}
  if metadata.get("kind") == "text":
    runner = litert.TextRunner(path)
    # Fails early if the vocabulary is neither beside the file nor in it.
    vocabulary = runner.preprocessor().tokenizer.get_vocabulary()
    return Predictor("tflite", path, metadata["labels"], 0,
                     runner.predict_texts, data="text",
                     vocabulary=frozenset(vocabulary))
  runner = litert.ImageRunner(path)
  num_classes = int(runner.output["shape"][-1])
  labels = (metadata.get("labels")
            or standard_metadata.read(path).get("labels")
            or _labels_beside(path, num_classes))
  return Predictor("tflite", path, labels, runner.image_size, runner.predict)


def read_images(paths, image_size):
  """Image files -> uint8 [N, S, S, 3]; UserError naming an unreadable one."""
  out = []
  for path in paths:
    if not os.path.isfile(path):
      raise UserError(f"--inputs: {path} is not a file")
    try:
      image = folders.decode_image(tf.io.read_file(path))
    except tf.errors.InvalidArgumentError as e:
      reason = re.sub(r"\{\{.*?\}\}", "", e.message or "").strip()
      raise UserError(f"--inputs: cannot decode {path} as an image "
                      f"({reason.splitlines()[0][:100] if reason else 'bad data'}"
                      "); pass JPEG, PNG, BMP or GIF files") from e
    image = folders.apply_orientation(image, folders.exif_orientation(path))
    out.append(data.resize(image, image_size).numpy())
  return np.stack(out)


def _read_images(predictor, paths):
  return list(paths), read_images(paths, predictor.image_size)


def _read_texts(predictor, inputs):
  del predictor
  return read_texts(inputs)


READERS = {"image": _read_images, "text": _read_texts}
# A split's (example, label) batches -> (what predict takes, labels).
BATCHES = {
    "image": lambda predictor, dataset, batch_size: dataset.map(
        lambda x, y: (data.resize(x, predictor.image_size), y)).batch(
            batch_size).as_numpy_iterator(),
    "text": lambda predictor, dataset, batch_size: (
        ([t.decode("utf-8") for t in texts], labels)
        for texts, labels in dataset.batch(batch_size).as_numpy_iterator()),
}


def read_texts(inputs):
  """--inputs for a text model: each a .txt file (one text per line) or a text.

  Returns:
    (names, texts): what each result is printed under, and the texts.
  """
  names, texts = [], []
  for item in inputs:
    if os.path.isfile(item):
      with open(item, encoding="utf-8") as f:
        lines = [l.strip() for l in f if l.strip()]
      if not lines:
        raise UserError(f"--inputs: {item} has no text; put one text per "
                        "line")
      names += [f"{item}:{i + 1}" for i in range(len(lines))]
      texts += lines
    else:
      names.append(repr(item[:60]))
      texts.append(item)
  return names, texts


def predict_files(artifact, paths, top_k=5):
  """--mode=predict: [(path, [(label, probability), ...]), ...] and text.

  For a text model, `paths` are .txt files (one text per line) or texts.
  """
  predictor = load(artifact)
  paths, inputs = predictor.read(paths)
  if predictor.vocabulary:
    unknown = [(path, share) for path, text in zip(paths, inputs)
               if (share := unknown_share(text, predictor.vocabulary))
               > UNKNOWN_SHARE]
    if unknown:
      logging.warning(
          "%d of %d texts are mostly words the model's vocabulary does not "
          "hold (%s: %.0f%% of its words): the model never learnt them, so "
          "its predictions on them mean little; check the language and "
          "domain of the input", len(unknown), len(inputs), unknown[0][0],
          100 * unknown[0][1])
  probs = predictor.predict(inputs)
  k = min(top_k, len(predictor.labels))
  results, lines = [], []
  for path, p in zip(paths, probs):
    # Stable: a tie goes to the lower class index, as argmax does.
    top = [(predictor.labels[i], float(p[i]))
           for i in np.argsort(-p, kind="stable")[:k]]
    results.append((path, top))
    lines.append(path + "\n" + "\n".join(
        f"  {label:<24} {prob:.4f}" for label, prob in top))
  return results, "\n".join(lines)


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
