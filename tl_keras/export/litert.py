"""Running .tflite files under the LiteRT interpreter, and the parity table.

`ImageRunner` takes uint8 images, `TextRunner` token arrays (or raw
strings, tokenized as the file's metadata says, with `vocab.txt` beside it
or the vocabulary packed inside it); both return float32
probabilities and time single-example latency. `parity` compares a file
with the Keras model on the same examples; `check_accuracy_drop` applies
--max_accuracy_drop to the table.
"""

import gzip
import logging
import os
import statistics
import time

import numpy as np

from tl_keras import console
from tl_keras import evaluation
from tl_keras.errors import CheckFailed, UserError
from tl_keras.export import standard_metadata
from tl_keras.export import tflite

LATENCY_THREADS = 2
LATENCY_RUNS = 50
LATENCY_WARMUP = 5
# The inputs of a text .tflite file, each int32 [1, sequence_length].
TEXT_INPUTS = ("token_ids", "padding_mask", "segment_ids")


class _Runner:
  """A .tflite file loaded in LiteRT's interpreter."""

  def __init__(self, path, num_threads=LATENCY_THREADS):
    from ai_edge_litert import interpreter as litert  # pylint: disable=g-import-not-at-top
    self.path = path
    try:
      with console.filtered_stderr():  # LiteRT's note on its CPU delegate
        self.interpreter = litert.Interpreter(model_path=path,
                                              num_threads=num_threads)
        self.interpreter.allocate_tensors()
    except (ValueError, RuntimeError) as e:
      raise UserError(f"cannot load {path} as a TFLite model: "
                      f"{str(e).splitlines()[0][:200]}") from e
    self.output = self.interpreter.get_output_details()[0]

  def predict(self, inputs):
    """A batch of examples -> float32 [N, num_classes], one at a time."""
    return np.stack([self._invoke(self._feed(one))
                     for one in self._examples(inputs)])

  def latency_ms(self, one, runs=LATENCY_RUNS, warmup=LATENCY_WARMUP):
    """Median single-example latency after warm-up, in milliseconds.

    `one`: an example as `first` returns it.
    """
    fed = self._feed(one)
    times = []
    for i in range(warmup + runs):
      start = time.perf_counter()
      self._invoke(fed)
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


class ImageRunner(_Runner):
  """uint8 images in, probabilities out.

  Quantized outputs are dequantized with the file's own scale and zero point;
  a quantized input is quantized from pixels the same way.
  """

  def __init__(self, path, num_threads=LATENCY_THREADS):
    super().__init__(path, num_threads)
    self.input = self.interpreter.get_input_details()[0]
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

  @staticmethod
  def _examples(images):
    return images

  def _feed(self, image):
    return self._quantize(np.asarray(image)[None])

  def _invoke(self, fed):
    self.interpreter.set_tensor(self.input["index"], fed)
    self.interpreter.invoke()
    return self._dequantize(self.interpreter.get_tensor(
        self.output["index"]))[0]

  def predict_one(self, image):
    """uint8 [S, S, 3] -> float32 [num_classes]."""
    return self._invoke(self._feed(image))

  @staticmethod
  def first(images):
    """The example latency is measured on."""
    return images[0]

  def predict_examples(self, images):
    """Raw examples (uint8 images at the file's size) -> probabilities."""
    return self.predict(images)


class TextRunner(_Runner):
  """Token arrays {name: int32 [N, L]} in, probabilities out."""

  def __init__(self, path, num_threads=LATENCY_THREADS):
    super().__init__(path, num_threads)
    self.signature = self.interpreter.get_signature_runner()
    self.metadata = tflite.read_metadata(path) or {}

  @staticmethod
  def _examples(inputs):
    n = len(inputs["token_ids"])
    return [{k: v[i:i + 1] for k, v in inputs.items()} for i in range(n)]

  @staticmethod
  def _feed(one):
    return one

  def _invoke(self, one):
    return self.signature(**one)["probabilities"].astype(np.float32)[0]

  @staticmethod
  def first(inputs):
    return {k: v[:1] for k, v in inputs.items()}

  def _vocabulary(self):
    """(the file's tokenizer settings, the text of its vocabulary file:
    the one beside it, else the copy packed inside it)."""
    settings = self.metadata.get("tokenizer")
    if not settings:
      raise UserError(f"{self.path} has no tokenizer settings in its "
                      "metadata; it was not written by a tl_keras text run")
    path = os.path.join(os.path.dirname(self.path), settings["vocabulary"])
    if os.path.exists(path):
      with open(path, encoding="utf-8") as f:
        return settings, f.read()
    packed = standard_metadata.packed_file(self.path, settings["vocabulary"])
    if packed is None:
      raise UserError(f"{path} is missing and {self.path} holds no "
                      "vocabulary: put the vocab.txt its run wrote beside it")
    return settings, packed.decode("utf-8")

  def preprocessor(self):
    """The KerasHub preprocessor that makes this file's inputs from text."""
    import keras_hub  # pylint: disable=g-import-not-at-top
    settings, text = self._vocabulary()
    tokenizer = keras_hub.models.BertTokenizer(
        vocabulary=text.rstrip("\n").split("\n"),  # a token a line
        lowercase=settings["lowercase"],
        strip_accents=settings["strip_accents"])
    return keras_hub.models.BertTextClassifierPreprocessor(
        tokenizer, sequence_length=settings["sequence_length"])

  def predict_examples(self, texts):
    """Raw examples (strings), tokenized as the run did -> probabilities."""
    return self.predict(tokens(self.preprocessor(), list(texts),
                              self.metadata.get("inputs", TEXT_INPUTS)))


class WordRunner(TextRunner):
  """The word-embedding model's file: word ids {"token_ids": int32 [N, L]}
  in, probabilities out."""

  def preprocessor(self):
    """The regex tokenizer that makes this file's input from text."""
    from tl_keras.models import word_embedding  # pylint: disable=g-import-not-at-top
    settings, text = self._vocabulary()
    return word_embedding.RegexTokenizer(
        word_embedding.vocabulary_from_file(text), settings["sequence_length"])


def tokens(preprocessor, texts, names=TEXT_INPUTS, batch_size=256):
  """Raw strings -> {input name: int32 [N, sequence_length]} for `names`."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  parts = [preprocessor(tf.constant(texts[i:i + batch_size]))
           for i in range(0, len(texts), batch_size)]
  return {k: np.concatenate([np.asarray(p[k]) for p in parts]).astype(np.int32)
          for k in names}


def parity(path, inputs, labels, keras_probs, runner=None):
  """One row of the parity table for the .tflite at `path`.

  Args:
    path: the .tflite file.
    inputs: uint8 [N, S, S, 3] test images (or what `runner` takes).
    labels: int [N] (multi-label: multi-hot [N, C]; accuracy is then the
      exact match at 0.5, and agreement every label decided alike).
    keras_probs: float [N, C], the Keras model on the same examples.
    runner: the file's runner (default: an `ImageRunner`).

  Returns:
    {accuracy, agreement, max_abs_diff, size_bytes, compressed_bytes (the
    file gzipped: what an app download or a store package carries),
    latency_ms (at `threads`), latency_ms_1_thread, threads, examples}.
  """
  runner = runner or ImageRunner(path)
  probs = runner.predict(inputs)
  one = runner.first(inputs)
  return {
      "accuracy": float(np.mean(evaluation.hits(probs, labels))),
      "agreement": evaluation.agreement(probs, keras_probs,
                                        evaluation.is_multi_label(labels)),
      "max_abs_diff": float(np.abs(probs - keras_probs).max()),
      "size_bytes": os.path.getsize(path),
      "compressed_bytes": compressed_size(path),
      "latency_ms": runner.latency_ms(one),
      "latency_ms_1_thread": type(runner)(path, num_threads=1).latency_ms(one),
      "threads": LATENCY_THREADS,
      "examples": int(len(labels)),
  }


def compressed_size(path):
  """Bytes of the file at `path` gzipped at the highest level."""
  with open(path, "rb") as f:
    return len(gzip.compress(f.read(), compresslevel=9, mtime=0))


def format_parity(rows):
  """The parity table as aligned text: Keras first, then each variant.

  Size on disk and gzipped, and the median single-example latency on one
  thread and on `threads`.
  """
  first = next(iter(rows.values()))
  threads = first["threads"]
  lines = [f"{'variant':<10} {'accuracy':>9} {'agreement':>10} "
           f"{'size':>10} {'gzipped':>10} {'1 thread':>10} "
           f"{f'{threads} threads':>10}   ({first['examples']} test examples; "
           "median latency)",
           f"{'keras':<10} {first['keras_accuracy']:>9.4f}"]
  for variant, row in rows.items():
    lines.append(_parity_line(variant, row))
  unpruned = {v: r["unpruned"] for v, r in rows.items() if "unpruned" in r}
  if unpruned:
    lines.append(f"unpruned   {next(iter(unpruned.values()))['keras_accuracy']:>9.4f}"
                 "   (the network before pruning: phase 1's)")
    lines += [_parity_line(f"  {v}", r) for v, r in unpruned.items()]
  return "\n".join(lines)


def _parity_line(name, row):
  compressed = row.get("compressed_bytes")
  one = row.get("latency_ms_1_thread")
  return (f"{name:<10} {row['accuracy']:>9.4f} {row['agreement']:>10.4f} "
          f"{row['size_bytes'] / 1024:>8.1f}KB "
          + (f"{compressed / 1024:>8.1f}KB " if compressed else f"{'':>10} ")
          + (f"{one:>8.3f}ms " if one is not None else f"{'':>10} ")
          + f"{row['latency_ms']:>8.3f}ms")


def too_far(row, max_drop):
  """Whether a parity row is more than `max_drop` below Keras.

  A drop of a single example never counts: on a small test split one
  flipped image is more than a point.
  """
  drop = row["keras_accuracy"] - row["accuracy"]
  return drop > max_drop + 1e-9 and drop * row["examples"] > 1.5


def disagrees(row, min_agreement):
  """Whether a parity row agrees with Keras on less than `min_agreement` of
  its examples. A single disagreement never counts."""
  missed = 1.0 - row["agreement"]
  return (missed > 1.0 - min_agreement + 1e-9
          and missed * row["examples"] > 1.5)


def judged(row):
  """The figures of a parity row that the accuracy gate judges: its
  validation figures when it has them (the int8 fallback decides on
  validation too), else its own."""
  return row.get("validation") or row


def check_accuracy_drop(rows, max_drop):
  """Raises CheckFailed naming each variant `too_far` below Keras.

  `rows` maps variant -> parity row (with its `keras_accuracy` and
  `examples`, and a "validation" row that is judged instead when present).
  A variant beyond bounds on test alone is logged, not failed: the test
  split reports, it does not decide.
  """
  for variant, row in rows.items():
    if not too_far(judged(row), max_drop) and too_far(row, max_drop):
      logging.warning(
          "tflite_%s is %.1f points below Keras on the test split (%.4f vs "
          "%.4f), within --max_accuracy_drop=%s on validation, which "
          "decides", variant, 100 * (row["keras_accuracy"] - row["accuracy"]),
          row["accuracy"], row["keras_accuracy"], max_drop)
  failing = {v: judged(r) for v, r in rows.items()
             if too_far(judged(r), max_drop)}
  if not failing:
    return
  split = ("validation" if all("validation" in rows[v] for v in failing)
           else "test")
  advice = []
  within = [v for v in rows if v not in failing]
  if within:
    advice.append(f"ship a variant within bounds ({', '.join(within)})")
  if {"int8", "int16x8"} & set(failing):
    advice.append("calibrate on more images (--calibration_samples)")
  if "int8" in failing:
    fallback = rows["int8"].get("fallback")
    advice.append(
        f"int8 already keeps {len(fallback['float_layers'])} layer(s) in "
        "float (--int8_fallback=auto); try tflite_int16x8" if fallback else
        "let int8 keep its worst layers in float (--int8_fallback=auto)")
  advice.append("accept the drop with a larger --max_accuracy_drop (-1: no "
                "check)")
  raise CheckFailed(
      f"TFLite accuracy fell more than --max_accuracy_drop={max_drop} below "
      f"the Keras model on the {split} split: "
      + "; ".join(f"{v} {r['accuracy']:.4f} vs Keras "
                  f"{r['keras_accuracy']:.4f}" for v, r in failing.items())
      + "; the files are written for inspection: " + ", ".join(advice))
