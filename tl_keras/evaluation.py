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


def format_table(metrics):
  """The per-class table as aligned text, for the log."""
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
