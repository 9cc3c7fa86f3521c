"""--mode=predict: the top labels of --inputs, printed and written to a CSV.

Inputs are image files or folders of them, .txt files (one text a line),
.csv files (a column of image paths or texts), or texts; they are read
and predicted `PREDICT_BATCH` at a time, with a progress bar on a
terminal.
"""

import os

import numpy as np

from tl_keras import artifacts
from tl_keras import console
from tl_keras import evaluation
from tl_keras.errors import UserError
from tl_keras.modes import predictors


def run(config):
  """The top labels printed, and written to --predictions (by default
  predictions.csv for a folder, .txt or .csv of inputs)."""
  paths = [_expanded(p.strip()) for p in config.inputs.split(",")
           if p.strip()]
  target = os.path.expanduser(config.predictions) or (
      "predictions.csv" if is_batch(paths) else "")
  if target and os.path.exists(target) and not config.overwrite:
    raise UserError(f"--predictions={target} exists; pass --overwrite to "
                    "replace it, or name another file with --predictions")
  results, text = predict_files(
      config.artifact, paths, config.top_k, image_column=config.image_column,
      text_column=config.text_column,
      thresholds=predictors.run_thresholds(config.artifact))
  if target:
    write_predictions(results, target, overwrite=True)
    text += f"\nwrote {len(results):,} predictions to {target}"
  return text


def _expanded(item):
  """~ expanded where that names a file or folder (a text stays as it is)."""
  path = os.path.expanduser(item)
  return path if os.path.exists(path) else item


def is_batch(items):
  """Whether --inputs holds a folder, .txt or .csv file: predictions go to
  a CSV file then."""
  return any(os.path.isdir(i) or (os.path.isfile(i) and i.lower().endswith(
      (".txt", ".csv"))) for i in items)


# Inputs predicted per call (and read into memory at once), and the most
# results printed to the console.
PREDICT_BATCH = 64
PRINTED = 20


def predict_files(artifact, paths, top_k=5, *, image_column="path",
                  text_column="text", thresholds=None):
  """--mode=predict: [(name, [(label, probability), ...]), ...] and text.

  `paths`: image files or folders of them, .txt files (one text per line),
  .csv files (`image_column` or `text_column`), or texts. Inputs are read
  and predicted `PREDICT_BATCH` at a time, with a progress line.
  `thresholds` ({label: threshold}, a --multi_label run's): each result
  gets a third item, the labels whose probability reaches theirs.
  """
  predictor = predictors.load(artifact)
  names, items = predictor.input.expand(paths, image_column=image_column,
                                        text_column=text_column)
  k = min(top_k, len(predictor.labels))
  results = []
  with console.Progress("predicting", total=len(items)) as progress:
    for start in range(0, len(items), PREDICT_BATCH):
      chunk = names[start:start + PREDICT_BATCH]
      inputs = predictor.input.read(items[start:start + PREDICT_BATCH])
      predictor.input.check(chunk, inputs)
      for name, p in zip(chunk, predictor.predict(inputs)):
        # Stable: a tie goes to the lower class index, as argmax does.
        top = [(predictor.labels[i], float(p[i]))
               for i in np.argsort(-p, kind="stable")[:k]]
        results.append((name, top) if thresholds is None else (
            name, top, [label for label, score in zip(predictor.labels, p)
                        if score >= thresholds.get(
                            label, evaluation.DEFAULT_THRESHOLD)]))
      progress.update(len(results))
  lines = [result[0] + ("" if len(result) < 3 else
                        f"  labels: {'|'.join(result[2]) or '(none)'}") +
           "\n" + "\n".join(f"  {label:<24} {prob:.4f}"
                             for label, prob in result[1])
           for result in results[:PRINTED]]
  if len(results) > PRINTED:
    lines.append(f"... and {len(results) - PRINTED:,} more")
  return results, "\n".join(lines)


def write_predictions(results, path, overwrite=False):
  """`predict_files`'s results as a CSV file: input, (multi-label: the
  labels predicted, '|'-separated), then label_1, score_1, ... label_k,
  score_k. Written whole or not at all."""
  if os.path.exists(path) and not overwrite:
    raise UserError(f"--predictions={path} exists; pass --overwrite to "
                    "replace it, or name another file")
  k = max(len(result[1]) for result in results)
  chosen = all(len(result) == 3 for result in results)
  header = ["input"] + (["labels"] if chosen else []) + [
      f"{what}_{i + 1}" for i in range(k) for what in ("label", "score")]
  rows = [[result[0]] + (["|".join(result[2])] if chosen else []) +
          [v for label, score in result[1] for v in (label, f"{score:.6f}")]
          for result in results]
  artifacts.write_csv(path, header, rows)
