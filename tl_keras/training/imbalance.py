"""Class weights for imbalanced training data (--class_weight).

A class's weight is inverse to its share of the training examples,
N / (C * count): every class then carries the same total weight, and the
weights average 1 over the training examples, so the loss keeps its scale
and the learning rates theirs. The same weights make every choice the
recipe takes on the validation split (the best weights, the phase-1 L2
strength, the fine-tuning trials, which phase to keep, the transfer
check, the augmentation) judge a weighted loss or a balanced accuracy, not
one that the largest class dominates.
"""

import logging

import numpy as np

from tl_keras.errors import UserError

# --class_weight=auto weights the loss when the largest class has at least
# this many times the training examples of the smallest.
AUTO_RATIO = 3.0
MODES = ("auto", "balanced", "none")


def label_counts(dataset, num_classes):
  """Examples per class of a (example, label) dataset: [C] int64 (per
  label, its positive examples, for multi-hot labels)."""
  labels = np.asarray(list(dataset.map(lambda x, y: y).as_numpy_iterator()),
                      np.int64)
  if labels.ndim == 2:
    return labels.sum(0)
  return np.bincount(labels.reshape(-1),
                     minlength=num_classes)[:num_classes]


def class_weights(counts, mode):
  """(weights [C] float32 or None, what run.json records) for `counts`.

  "balanced": always weighted; "auto": weighted when the largest class is
  `AUTO_RATIO` times the smallest or more; "none": never. A class with no
  training example gets weight 1 (it has no loss to weigh).
  """
  if mode not in MODES:
    raise UserError(f"--class_weight={mode} is not one of {', '.join(MODES)}")
  counts = np.asarray(counts, np.float64)
  present = counts[counts > 0]
  ratio = float(present.max() / present.min()) if len(present) else 1.0
  weighted = mode == "balanced" or (mode == "auto" and ratio >= AUTO_RATIO)
  record = {"mode": mode, "weighted": weighted, "imbalance": ratio,
            "counts": counts.astype(int).tolist()}
  if not weighted:
    return None, record
  weights = np.ones_like(counts)
  weights[counts > 0] = counts.sum() / (len(present) * present)
  record["weights"] = [round(float(w), 4) for w in weights]
  return weights.astype(np.float32), record


def log(record):
  """One log line saying whether and why the loss is weighted."""
  ratio = record["imbalance"]
  if record["weighted"]:
    why = ("--class_weight=balanced" if record["mode"] == "balanced" else
           f"--class_weight=auto: the largest class has {ratio:.1f}x the "
           f"training examples of the smallest (>= {AUTO_RATIO:g}x)")
    logging.info("%s: the loss weighs each class by the inverse of its "
                 "frequency (weights %s), and the recipe's validation "
                 "choices use the weighted loss and balanced accuracy", why,
                 ", ".join(f"{w:.2f}" for w in record["weights"]))
  elif record["mode"] == "auto":
    logging.info("--class_weight=auto: classes within %.1fx of each other "
                 "(< %gx): the loss is not weighted", ratio, AUTO_RATIO)


def example_weights(class_weights, labels):
  """Per-example weights w[label], scaled to average 1 over `labels`
  (ones when `class_weights` is None)."""
  labels = np.asarray(labels)
  if class_weights is None:
    return np.ones(len(labels), np.float64)
  weights = np.asarray(class_weights, np.float64)[labels]
  return weights / max(weights.mean(), 1e-12)
