"""Class weights for imbalanced training data (--class_weight).

A class's weight is inverse to its share of the training examples,
N / (C * count): every class then carries the same total weight, and the
weights average 1 over the training examples, so the loss keeps its scale
and the learning rates theirs. The same weights make every choice the
recipe takes on the validation split (the best weights, the phase-1 L2
strength, the fine-tuning trials, which phase to keep, the transfer
check, the augmentation) judge a weighted loss or a balanced accuracy, not
one that the largest class dominates.

--class_weight=logit_adjust trains as `none` does, then shifts each class's
logit by minus the log of its share of the training examples (post-hoc
logit adjustment, Menon et al. 2021, "Long-tail learning via logit
adjustment"). For a classifier with a bias per class this is the model that
training with the logit-adjusted cross-entropy gives, a loss whose minimum
is the lowest balanced error; the recipe's validation choices, made on the
unshifted model's cross-entropy, are that loss's choices. It weighs no
example, so no choice leans on the few validation examples of a rare class
multiplied by a large weight.
"""

import logging

import numpy as np

from tl_keras.errors import UserError

# --class_weight=auto weights the loss when the largest class has at least
# this many times the training examples of the smallest.
AUTO_RATIO = 3.0
MODES = ("auto", "balanced", "logit_adjust", "none")


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
  `AUTO_RATIO` times the smallest or more; "none" and "logit_adjust":
  never (the record of "logit_adjust" holds the shift of each class's
  logit, `logit_offsets`, which `adjust_logits` applies after training). A
  class with no training example gets weight 1 (it has no loss to weigh).
  """
  if mode not in MODES:
    raise UserError(f"--class_weight={mode} is not one of {', '.join(MODES)}")
  counts = np.asarray(counts, np.float64)
  present = counts[counts > 0]
  ratio = float(present.max() / present.min()) if len(present) else 1.0
  weighted = mode == "balanced" or (mode == "auto" and ratio >= AUTO_RATIO)
  record = {"mode": mode, "weighted": weighted, "imbalance": ratio,
            "counts": counts.astype(int).tolist()}
  if mode == "logit_adjust":
    record["logit_offsets"] = [round(float(o), 6)
                               for o in logit_offsets(counts)]
  if not weighted:
    return None, record
  weights = np.ones_like(counts)
  weights[counts > 0] = counts.sum() / (len(present) * present)
  record["weights"] = [round(float(w), 4) for w in weights]
  return weights.astype(np.float32), record


def logit_offsets(counts):
  """[C]: minus the log of each class's share of the training examples,
  centred on 0 over the classes present (a shift common to every logit
  changes no probability); 0 for a class without training examples."""
  counts = np.asarray(counts, np.float64)
  present = counts > 0
  offsets = np.zeros_like(counts)
  offsets[present] = -np.log(counts[present] / counts.sum())
  offsets[present] -= offsets[present].mean()
  return offsets


def adjust_logits(classifier, record):
  """Adds `record`'s logit offsets to the bias of `classifier`, the Dense
  layer that gives the logits (--class_weight=logit_adjust); a no-op for
  any other record. Every export then carries the shift."""
  if "logit_offsets" not in record:
    return
  kernel, bias = classifier.get_weights()
  classifier.set_weights([kernel, (bias + np.asarray(
      record["logit_offsets"])).astype(bias.dtype)])
  logging.info("--class_weight=logit_adjust: each class's logit shifted by "
               "minus the log of its share of the training examples (%s), "
               "for the lowest balanced error", ", ".join(
                   f"{o:+.2f}" for o in record["logit_offsets"]))


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
  elif record["mode"] == "logit_adjust":
    logging.info("--class_weight=logit_adjust: the loss is not weighted; "
                 "after training, each class's logit is shifted by minus the "
                 "log of its share of the training examples (the largest "
                 "class has %.1fx the smallest)", ratio)
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
