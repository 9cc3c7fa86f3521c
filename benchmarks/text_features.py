"""What MiniLM's frozen features hold on the real text tasks, against word
counts.

    python benchmarks/text_features.py [--seeds=0,1,...,9]
        [--tasks=docstrings,rotten_tomatoes] [--smoke]

On the docstrings the default run trails TF-IDF + logistic regression
(docs/results.md). This separates what the pretrained network's features
hold from what the recipe does with them, and checks two settings of the
default run that could cost it there: the sequence length (128 tokens cut
about a tenth of the docstrings) and the class weights (the docstrings'
largest package has about 3x the docstrings of the smallest, so
`--class_weight=auto` weighs the loss).

Tasks: the real text tasks of `real_weights.py`, with the same data flags
and seeds, so a seed's splits are the ones its table reports. Nothing is
trained but linear models on features computed once per text. Per task
and seed ("arm": "task"), test accuracy and balanced accuracy of:
  probe_L    scikit-learn LogisticRegression on the standardized frozen
             (pooled) features of all_minilm_l6_v2 at --sequence_length=L,
             C picked on validation accuracy: the real-weights benchmark's
             probe, one arm per length (the docstrings: 128, the default,
             and 256; Rotten Tomatoes: 64, its runs' length, as its
             sentences are short).
  tfidf      TF-IDF (words, 1-2 grams) + LogisticRegression, C picked the
             same way: the same linear model on word counts (the runs'
             own --tfidf_baseline).
  head_none  the recipe's own phase-1 head fit (tl_keras.training.probe:
             L2 strength picked by validation loss) on the first length's
             features, unweighted,
  head_auto  and the same with the class weights `--class_weight=auto`
             gives the split (the same as head_none where it gives none).
Then "arm": "summary" per task: mean, min and max of each, and of
probe_L - tfidf, probe_256 - probe_128 and head_auto - head_none.
`--smoke`: short texts, 40 training texts, one seed, one task: a check
that the script runs, not a measurement.
"""

import argparse
import json
import os
import statistics
import sys

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from real_weights import TASKS, KEPT_ASIDE, _config  # pylint: disable=g-import-not-at-top,wrong-import-position

TEXT_TASKS = tuple(t for t, (kind, _, _) in TASKS.items() if kind == "text")
LENGTHS = {"docstrings": (128, 256), "rotten_tomatoes": (64,)}
SMOKE = ["--max_train_samples=40"]
SMOKE_LENGTHS = (16, 32)


def _scores(predicted, labels, class_names):
  """(accuracy, balanced accuracy)."""
  from tl_keras import evaluation  # pylint: disable=g-import-not-at-top
  out = evaluation.prediction_metrics(predicted, labels, class_names)
  return out["accuracy"], out["balanced_accuracy"]


class Features:
  """Pooled frozen features of one text network at one sequence length,
  each distinct text computed once over every seed's splits."""

  def __init__(self, model, sequence_length):
    import keras  # pylint: disable=g-import-not-at-top
    from tl_keras.models import text_models  # pylint: disable=g-import-not-at-top
    classifier = text_models.build_classifier(
        model, 2, sequence_length=sequence_length, weights="pretrained")
    pooled, _ = text_models.feature_parts(classifier)
    self._preprocessor = classifier.preprocessor
    self._network = keras.Model(classifier.inputs, pooled)
    self._known = {}

  def __call__(self, texts):
    new = sorted(set(texts) - set(self._known))
    for i in range(0, len(new), 256):
      chunk = new[i:i + 256]
      out = np.asarray(self._network.predict(
          self._preprocessor(chunk), verbose=0), np.float32)
      self._known.update(zip(chunk, out))
    return np.stack([self._known[t] for t in texts])


def run_seed(task, seed, features, smoke):
  """One "task" row (see the module docstring)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from sklearn.linear_model import LogisticRegression  # pylint: disable=g-import-not-at-top
  from sklearn.preprocessing import StandardScaler  # pylint: disable=g-import-not-at-top
  from tl_keras import families  # pylint: disable=g-import-not-at-top
  from tl_keras.data import text_data  # pylint: disable=g-import-not-at-top
  from tl_keras.modes import tfidf_baseline  # pylint: disable=g-import-not-at-top
  from tl_keras.training import imbalance, probe  # pylint: disable=g-import-not-at-top
  _, model, task_flags = TASKS[task]
  args = [f"--model={model}", f"--dataset={task}", f"--seed={seed}",
          *task_flags, *(SMOKE if smoke else [])]
  raw = families.find(model).load_splits(_config(args))
  texts = {s: text_data.texts_of(getattr(raw, s))
           for s in ("train", "validation", "test")}
  labels = {s: t[1] for s, t in texts.items()}
  row = {"benchmark": "text_features", "arm": "task", "task": task,
         "kept_aside": task in KEPT_ASIDE, "model": model, "seed": seed,
         "sizes": {s: len(t[1]) for s, t in texts.items()}}
  first = None
  for length, extract in features.items():
    x = {s: extract(t[0]) for s, t in texts.items()}
    first = first or x
    scaler = StandardScaler().fit(x["train"])
    x = {s: scaler.transform(v) for s, v in x.items()}
    fit, c, _ = tfidf_baseline.pick_c(
        lambda c: LogisticRegression(C=c, max_iter=5000), x["train"],
        labels["train"], x["validation"], labels["validation"])
    row[f"probe_{length}"], row[f"probe_{length}_balanced"] = _scores(
        fit.predict(x["test"]), labels["test"], raw.class_names)
    row[f"probe_{length}_c"] = c
  tfidf = tfidf_baseline.measure(raw)
  row["tfidf"], row["tfidf_c"] = tfidf["test"]["accuracy"], tfidf["c"]
  row["tfidf_balanced"] = tfidf["test"]["balanced_accuracy"]
  counts = imbalance.label_counts(raw.train, raw.num_classes)
  weights, record = imbalance.class_weights(counts, "auto")
  row["imbalance"], row["weighted"] = record["imbalance"], record["weighted"]
  cached = {s: tf.data.Dataset.from_tensor_slices((first[s], labels[s]))
            for s in ("train", "validation")}
  for arm, class_weights in (("head_none", None), ("head_auto", weights)):
    head = probe.fit(cached["train"], cached["validation"], raw.num_classes,
                     class_weights=class_weights)
    row[arm], row[f"{arm}_balanced"] = _scores(
        np.argmax(first["test"] @ head.kernel + head.bias, -1),
        labels["test"], raw.class_names)
    row[f"{arm}_strength"] = head.strength
  return row


def summary(rows):
  out = {"benchmark": "text_features", "arm": "summary", "tasks": {}}
  for task in sorted({r["task"] for r in rows}):
    mine = [r for r in rows if r["task"] == task]
    lengths = sorted(int(k.split("_")[1]) for k in mine[0]
                     if k.startswith("probe_") and k.count("_") == 1)
    figures = {k: [r[k] for r in mine] for k in mine[0]
               if k.startswith(("probe_", "head_", "tfidf"))
               and not k.endswith(("_c", "_strength"))}
    for length in lengths:
      figures[f"probe_{length}_minus_tfidf"] = [
          r[f"probe_{length}"] - r["tfidf"] for r in mine]
    if len(lengths) > 1:
      figures[f"probe_{lengths[-1]}_minus_probe_{lengths[0]}"] = [
          r[f"probe_{lengths[-1]}"] - r[f"probe_{lengths[0]}"] for r in mine]
    for suffix in ("", "_balanced"):
      figures[f"head_auto_minus_head_none{suffix}"] = [
          r[f"head_auto{suffix}"] - r[f"head_none{suffix}"] for r in mine]
    out["tasks"][task] = {
        k: {"mean": statistics.mean(v), "min": min(v), "max": max(v)}
        for k, v in figures.items()}
    out["tasks"][task]["seeds"] = len(mine)
  return out


def main():
  parser = argparse.ArgumentParser()
  # Linear fits on features computed once: ten draws of the splits take
  # minutes, and a test split of 97 docstrings moves a point a text.
  parser.add_argument("--seeds", default=",".join(map(str, range(10))))
  parser.add_argument("--tasks", default=",".join(TEXT_TASKS))
  parser.add_argument("--smoke", action="store_true")
  args = parser.parse_args()
  seeds = [0] if args.smoke else [int(s) for s in args.seeds.split(",")]
  tasks = TEXT_TASKS[:1] if args.smoke else args.tasks.split(",")
  unknown = [t for t in tasks if t not in TEXT_TASKS]
  if unknown:
    sys.exit(f"error: --tasks takes {', '.join(TEXT_TASKS)}, not "
             f"{', '.join(unknown)}")
  rows = []
  for task in tasks:
    model = TASKS[task][1]
    features = {length: Features(model, length) for length in (
        SMOKE_LENGTHS if args.smoke else LENGTHS[task])}
    for seed in seeds:
      rows.append(run_seed(task, seed, features, args.smoke))
      print(json.dumps(rows[-1]), flush=True)
  print(json.dumps(summary(rows)), flush=True)


if __name__ == "__main__":
  main()
