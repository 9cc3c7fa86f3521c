"""Classification metrics from a confusion matrix, and comparing two models.

The training loop reduces a confusion matrix across replicas and workers, so
every metric here is computed from counts, identically on any strategy.
"""

import numpy as np


def metrics_from_counts(confusion, *, top_k, loss, class_names):
  """Accuracy, balanced accuracy, top-5, per-class precision/recall/F1,
  macro-F1.

  Args:
    confusion: [C, C] counts, rows are true classes, columns predictions.
    top_k: number of examples whose label is in the top min(5, C)
      predictions.
    loss: summed cross-entropy over the examples.
    class_names: C names, in label order.

  Returns:
    A JSON-ready dict.
  """
  confusion = np.asarray(confusion, dtype=np.float64)
  total = confusion.sum()
  hits = np.diag(confusion)
  predicted = confusion.sum(axis=0)
  actual = confusion.sum(axis=1)
  # A class never predicted has precision 0 (and never seen, recall 0):
  # the sklearn "zero_division=0" convention, so macro-F1 punishes collapse.
  precision = np.divide(hits, predicted, out=np.zeros_like(hits),
                        where=predicted > 0)
  recall = np.divide(hits, actual, out=np.zeros_like(hits), where=actual > 0)
  denom = precision + recall
  f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(hits),
                 where=denom > 0)
  out = {
      "examples": int(total),
      "accuracy": float(hits.sum() / total) if total else 0.0,
      "loss": float(loss / total) if total else 0.0,
      # The mean recall over the classes present: accuracy as if every
      # class were equally frequent (scikit-learn's balanced_accuracy_score).
      "balanced_accuracy": float(recall[actual > 0].mean()) if total else 0.0,
      "macro_f1": float(f1.mean()),
      "per_class": {
          name: {"precision": float(p), "recall": float(r), "f1": float(f),
                 "support": int(n)}
          for name, p, r, f, n in zip(class_names, precision, recall, f1,
                                      actual)},
      "confusion_matrix": confusion.astype(int).tolist(),
  }
  if len(class_names) >= 5:
    out["top5_accuracy"] = float(top_k / total) if total else 0.0
  return out


def prediction_metrics(predicted, labels, class_names):
  """`metrics_from_counts`'s figures of hard class predictions (a model
  without probabilities): no loss or top-5."""
  confusion = np.zeros((len(class_names),) * 2)
  np.add.at(confusion, (np.asarray(labels), np.asarray(predicted)), 1)
  out = metrics_from_counts(confusion, top_k=0, loss=0.0,
                            class_names=class_names)
  out.pop("top5_accuracy", None)
  del out["loss"]
  return out


def format_table(metrics):
  """The per-class table as aligned text, for the log."""
  if metrics.get("multi_label"):
    return format_multi_label_table(metrics)
  rows = [f"{'class':<24} {'precision':>9} {'recall':>9} {'f1':>9} "
          f"{'support':>8}"]
  for name, m in metrics["per_class"].items():
    rows.append(f"{name[:24]:<24} {m['precision']:>9.4f} {m['recall']:>9.4f} "
                f"{m['f1']:>9.4f} {m['support']:>8d}")
  return "\n".join(rows)


def clearly_lower(losses, reference):
  """Whether `losses` beat `reference` by more than one standard error.

  Both are per-example losses on the same examples; the standard error is
  that of the mean per-example difference (the one-standard-error rule:
  prefer the simpler model unless the data clearly say otherwise).

  Returns:
    (clearly lower, mean gain, standard error).
  """
  difference = np.asarray(losses) - np.asarray(reference)
  error = float(difference.std(ddof=1) / np.sqrt(len(difference))) if len(
      difference) > 1 else 0.0
  return bool(difference.mean() < -error), float(-difference.mean()), error


# --- Several labels per example (--multi_label) ------------------------------
#
# Labels are then multi-hot int32 [N, C]: the data say which objective a run
# has, so the steps, the probe and the checks ask the labels' rank, not a
# flag. A label is predicted when its sigmoid probability reaches its
# threshold: 0.5 while training, per-label thresholds chosen on validation
# for the final figures (`choose_thresholds`).

DEFAULT_THRESHOLD = 0.5


def is_multi_label(labels):
  """Whether `labels` are multi-hot rows ([N, C]) rather than class ids."""
  return np.ndim(labels) == 2


def decisions(probs, multi_label, thresholds=DEFAULT_THRESHOLD):
  """What a model predicts: the top class [N], or each label's yes/no
  [N, C] at `thresholds`."""
  probs = np.asarray(probs)
  return probs >= thresholds if multi_label else probs.argmax(-1)


def hits(probs, labels, thresholds=DEFAULT_THRESHOLD):
  """Per example, whether the prediction is right: the top class is the
  label, or (multi-label) every label's decision is (exact match)."""
  labels = np.asarray(labels)
  if is_multi_label(labels):
    return np.all(decisions(probs, True, thresholds) == (labels > 0), -1)
  return decisions(probs, False) == labels


def agreement(probs, reference, multi_label):
  """The share of examples on which two models decide alike (every label
  alike, for multi-label)."""
  a, b = decisions(probs, multi_label), decisions(reference, multi_label)
  same = np.all(a == b, -1) if multi_label else a == b
  return float(np.mean(same))


def label_counts(predicted, labels):
  """[C, 3] true positives, false positives, false negatives per label of
  [N, C] yes/no predictions against multi-hot labels."""
  predicted, labels = np.asarray(predicted, bool), np.asarray(labels) > 0
  return np.stack([(predicted & labels).sum(0), (predicted & ~labels).sum(0),
                   (~predicted & labels).sum(0)], -1).astype(np.float64)


def multi_label_metrics_from_counts(counts, *, exact, examples, loss,
                                    class_names):
  """Exact-match accuracy, micro- and macro-F1 and per-label precision,
  recall and F1 from [C, 3] (tp, fp, fn) counts; summed binary
  cross-entropy `loss` and exact-match hits `exact` over `examples`."""
  counts = np.asarray(counts, np.float64)
  tp, fp, fn = counts[:, 0], counts[:, 1], counts[:, 2]

  def ratio(a, b):
    return np.divide(a, b, out=np.zeros_like(a, dtype=np.float64),
                     where=b > 0)
  precision, recall = ratio(tp, tp + fp), ratio(tp, tp + fn)
  f1 = ratio(2 * tp, 2 * tp + fp + fn)
  pooled = 2 * tp.sum() + fp.sum() + fn.sum()
  micro = float(2 * tp.sum() / pooled) if pooled else 0.0
  present = (tp + fn) > 0
  return {
      "examples": int(examples),
      "multi_label": True,
      # Exact match: every label of the example right.
      "accuracy": float(exact / examples) if examples else 0.0,
      "loss": float(loss / examples) if examples else 0.0,
      "micro_f1": micro,
      # Over the labels with a positive example in the split (a label
      # never present has no recall to speak of).
      "macro_f1": float(f1[present].mean()) if present.any() else 0.0,
      "per_class": {
          name: {"precision": float(p), "recall": float(r), "f1": float(f),
                 "support": int(n)}
          for name, p, r, f, n in zip(class_names, precision, recall, f1,
                                      tp + fn)},
  }


def multi_label_metrics(probs, labels, *, class_names, thresholds,
                        ranking=True):
  """`multi_label_metrics_from_counts` of [N, C] probabilities at
  per-label `thresholds`, and the thresholds themselves; with `ranking`,
  mean average precision too (over the labels with a positive example;
  scikit-learn's average precision, which needs no threshold)."""
  probs = np.asarray(probs, np.float64)
  labels = np.asarray(labels) > 0
  thresholds = np.asarray(thresholds, np.float64)
  clipped = np.clip(probs, 1e-7, 1 - 1e-7)
  loss = -(labels * np.log(clipped) + ~labels * np.log(1 - clipped)).mean(-1)
  predicted = probs >= thresholds
  out = multi_label_metrics_from_counts(
      label_counts(predicted, labels),
      exact=np.all(predicted == labels, -1).sum(), examples=len(labels),
      loss=loss.sum(), class_names=class_names)
  for name, threshold in zip(class_names, thresholds):
    out["per_class"][name]["threshold"] = float(threshold)
  if not ranking:
    return out
  from sklearn.metrics import average_precision_score  # pylint: disable=g-import-not-at-top
  precision = {c: float(average_precision_score(labels[:, c], probs[:, c]))
               for c in np.flatnonzero(labels.any(0))}
  out["mean_average_precision"] = (float(np.mean(list(precision.values())))
                                   if precision else 0.0)
  for c, value in precision.items():
    out["per_class"][class_names[c]]["average_precision"] = value
  return out


def choose_thresholds(probs, labels):
  """Per label, the decision threshold with the highest F1 on (validation)
  `probs` [N, C] and multi-hot `labels`: the midpoint between the two
  scores it falls between, so it does not sit on an example. A label with
  no positive example keeps `DEFAULT_THRESHOLD`; among thresholds of equal
  F1, the one nearest it."""
  probs = np.asarray(probs, np.float64)
  labels = np.asarray(labels) > 0
  out = np.full(probs.shape[1], DEFAULT_THRESHOLD)
  for c in range(probs.shape[1]):
    positives = labels[:, c].sum()
    if not positives:
      continue
    order = np.argsort(-probs[:, c], kind="stable")
    scores, truth = probs[order, c], labels[order, c]
    tp = np.cumsum(truth)  # predicting the top k+1 as positive
    predicted = np.arange(1, len(scores) + 1)
    f1 = 2 * tp / (predicted + positives)
    # Only cut between different scores.
    cut = np.append(scores[1:] < scores[:-1], True)
    below = np.append(scores[1:], 0.0)
    candidates = (scores + below) / 2
    best = f1[cut].max()
    near = np.flatnonzero(cut & np.isclose(f1, best))
    out[c] = candidates[near[np.argmin(np.abs(candidates[near] -
                                              DEFAULT_THRESHOLD))]]
  return out


def format_multi_label_table(metrics):
  """The per-label table as aligned text, for the log."""
  rows = [f"{'label':<24} {'precision':>9} {'recall':>9} {'f1':>9} "
          f"{'AP':>7} {'thresh':>7} {'support':>8}"]
  for name, m in metrics["per_class"].items():
    ap = m.get("average_precision")
    rows.append(f"{name[:24]:<24} {m['precision']:>9.4f} {m['recall']:>9.4f} "
                f"{m['f1']:>9.4f} "
                f"{'-' if ap is None else f'{ap:.4f}':>7} "
                f"{m.get('threshold', DEFAULT_THRESHOLD):>7.3f} "
                f"{m['support']:>8d}")
  return "\n".join(rows)
