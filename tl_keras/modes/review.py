"""Likely label errors: the examples a finished model is most sure are
labelled wrong, and the class pairs it confuses most.

After training, the kept model predicts every split: training,
validation and test (a wrong label is as likely in the training data,
where it does the most harm). Every example it gets wrong becomes a row
of `suspect_labels.csv`: where it came from (an image's file, a text
itself, else its split and position), its given label, the predicted
label and the model's confidence in it, the most confident first
(fastai's `plot_top_losses` and `most_confused`, as files). A wrong prediction made with high
confidence is where a label error is most likely; the report shows the
first of them (thumbnails for images) and the most confused pairs.
"""

import collections
import os

import numpy as np

from tl_keras import artifacts
from tl_keras import evaluation
from tl_keras.reporting import plots
from tl_keras.training import choices

SPLITS = ("train", "validation", "test")
# What the report shows: the most confident mistakes, and class pairs.
SHOWN = 16
PAIRS = 10
COLUMNS = ("split", "index", "example", "label", "predicted", "confidence",
           "label_probability")


def suspects(model, family, splits, raw_splits, *, image_size, batch_size):
  """Every wrong prediction on every split, most confident first.

  Returns:
    [{COLUMNS...}]: `example` is the file, the text, or "" when the
    examples have neither (`family.example_sources`).
  """
  names, rows = splits.class_names, []
  for split in SPLITS:
    probs, labels = choices.predictions(
        model, getattr(splits, split), splits.sizes[split],
        image_size=image_size, batch_size=batch_size)
    sources = family.example_sources(raw_splits, split)
    if labels.ndim == 2:
      rows += _multi_label_rows(split, probs, labels, names, sources)
      continue
    predicted = probs.argmax(-1)
    for i in np.flatnonzero(predicted != labels):
      rows.append({"split": split, "index": int(i),
                   "example": sources[i] if sources else "",
                   "label": names[labels[i]], "predicted": names[predicted[i]],
                   "confidence": round(float(probs[i, predicted[i]]), 4),
                   "label_probability": round(float(probs[i, labels[i]]), 4)})
  return sorted(rows, key=lambda r: (-r["confidence"], r["split"],
                                     r["index"]))


def _multi_label_rows(split, probs, labels, names, sources):
  """`suspects`' rows of multi-hot labels: every example with a label the
  model decides otherwise (at `evaluation.DEFAULT_THRESHOLD`). Its labels and the predicted ones are
  joined by '|'; the confidence is the model's surest disagreement with a
  given label (p for a label it adds, 1 - p for one it drops)."""
  rows = []
  truth = labels > 0
  predicted = evaluation.decisions(probs, multi_label=True)
  disagreement = np.where(truth, 1 - probs, probs)
  for i in np.flatnonzero((predicted != truth).any(-1)):
    surest = float(disagreement[i].max())
    rows.append({"split": split, "index": int(i),
                 "example": sources[i] if sources else "",
                 "label": "|".join(names[c] for c in np.flatnonzero(truth[i])),
                 "predicted": "|".join(
                     names[c] for c in np.flatnonzero(predicted[i])),
                 "confidence": round(surest, 4),
                 "label_probability": round(1 - surest, 4)})
  return rows


def confused_pairs(rows, limit=PAIRS):
  """[{"label", "predicted", "count"}]: the most frequent mistakes."""
  counts = collections.Counter((r["label"], r["predicted"]) for r in rows)
  return [{"label": a, "predicted": b, "count": n}
          for (a, b), n in sorted(counts.items(),
                                  key=lambda kv: (-kv[1], kv[0]))[:limit]]


def summary(rows):
  """What metrics.json keeps (the report reads it): the pairs and the
  first `SHOWN` rows."""
  return {"wrong": len(rows), "confused_pairs": confused_pairs(rows),
          "top": rows[:SHOWN]}


def write_csv(path, rows):
  artifacts.write_csv(path, COLUMNS, [[r[c] for c in COLUMNS] for r in rows])


def thumbnails_png(family, raw_splits, rows, class_names):
  """A grid of the first `SHOWN` rows' images, captioned "predicted /
  label" (None for texts)."""
  shown = rows[:SHOWN]
  images = {}
  for split in SPLITS:
    wanted = [r["index"] for r in shown if r["split"] == split]
    if wanted:
      found = family.example_thumbnails(raw_splits, split, wanted)
      images.update({(split, i): image for i, image in found.items()})
  if not shown or len(images) < len(shown):
    return None
  index = {name: i for i, name in enumerate(class_names)}
  return plots.prediction_grid_png(
      [images[(r["split"], r["index"])] for r in shown],
      [index[r["label"]] for r in shown],
      [index[r["predicted"]] for r in shown], class_names)


def write(directory, model, family, splits, raw_splits, *, image_size,
          batch_size):
  """suspect_labels.csv (and top_losses.png for images) into `directory`;
  returns `summary`."""
  rows = suspects(model, family, splits, raw_splits, image_size=image_size,
                  batch_size=batch_size)
  write_csv(os.path.join(directory, "suspect_labels.csv"), rows)
  # Multi-label rows name sets of labels, which a caption cannot.
  png = (None if splits.multi_label else
         thumbnails_png(family, raw_splits, rows, splits.class_names))
  if png:
    with open(os.path.join(directory, "top_losses.png"), "wb") as f:
      f.write(png)
  return summary(rows)
