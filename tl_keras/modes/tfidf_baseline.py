"""The word-count baseline of text runs (--tfidf_baseline): TF-IDF and
logistic regression on the same texts, reported beside the model.

A text network has to beat word counts to be worth its size: on technical
texts (code docstrings, logs) the words themselves often tell the classes
apart, and a pretrained sentence encoder can score below them. The
baseline costs seconds and is never exported; the report, the model card
and metrics.json give its test accuracy beside the model's.
"""

import logging
import time

import numpy as np

from tl_keras import evaluation
from tl_keras.data import text_data
from tl_keras.reporting import sentences

# Inverse L2 strengths tried; the one best on validation accuracy wins.
C_GRID = tuple(float(c) for c in 10.0 ** np.arange(-4, 4.01, 0.5))
# Training texts the baseline fits on at most (drawn at random, as a
# file's rows may be sorted by label): 17 fits stay within seconds to a
# minute on 2 cores.
MAX_TRAIN = 10_000


def fit(train, validation, max_train=MAX_TRAIN):
  """TF-IDF (word 1-2-grams, sublinear term frequency) fitted on the
  training texts, and a multinomial LogisticRegression at each of
  `C_GRID`, the one with the best validation accuracy kept (the stronger
  regularization on a tie).

  Args:
    train, validation: (texts, labels) lists of a split.
    max_train: fit on this many training texts at most, drawn at random
      (seeded) when there are more.

  Returns:
    (vectorizer, classifier, C, validation accuracy).
  """
  from sklearn.feature_extraction.text import TfidfVectorizer  # pylint: disable=g-import-not-at-top
  from sklearn.linear_model import LogisticRegression  # pylint: disable=g-import-not-at-top
  texts, labels = train
  if len(labels) > max_train:
    keep = np.sort(np.random.default_rng(0).choice(len(labels), max_train,
                                                   replace=False))
    texts, labels = [texts[i] for i in keep], np.asarray(labels)[keep]
  vectorizer = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True,
                               min_df=1).fit(texts)
  x, xv = vectorizer.transform(texts), vectorizer.transform(validation[0])
  classifier, c, score = pick_c(
      lambda c: LogisticRegression(C=c, max_iter=3000), x, labels, xv,
      validation[1])
  return vectorizer, classifier, c, score


def pick_c(make, x, y, xv, yv):
  """(classifier, C, validation accuracy): `make(C)` fitted on (x, y) at
  each of `C_GRID`, the one best on (xv, yv) kept (the stronger
  regularization on a tie)."""
  best = None
  for c in C_GRID:
    classifier = make(c).fit(x, y)
    score = classifier.score(xv, yv)
    if best is None or score > best[2]:
      best = (classifier, c, score)
  return best


def measure(raw_splits, max_train=MAX_TRAIN):
  """metrics.json's "tfidf": the baseline fitted on `raw_splits` (raw
  texts) and scored on its test split; None when the training texts hold
  a single class."""
  start = time.time()
  texts = {s: text_data.texts_of(getattr(raw_splits, s))
           for s in ("train", "validation", "test")}
  if len(np.unique(texts["train"][1])) < 2:
    return None
  vectorizer, classifier, c, validation = fit(texts["train"],
                                              texts["validation"], max_train)
  predicted = classifier.predict(vectorizer.transform(texts["test"][0]))
  test = evaluation.prediction_metrics(predicted, texts["test"][1],
                                       raw_splits.class_names)
  return {"test": {k: test[k] for k in ("accuracy", "balanced_accuracy",
                                        "macro_f1")},
          "validation_accuracy": float(validation), "c": c,
          "train_texts": min(len(texts["train"][1]), max_train),
          "vocabulary": len(vectorizer.vocabulary_),
          "seconds": round(time.time() - start, 1)}


def compare(raw_splits, metrics):
  """Adds the baseline to `metrics` (single-label texts), and logs it
  beside the model's test accuracy."""
  if raw_splits.multi_label:
    logging.info("tfidf baseline: not fitted for several labels per text")
    return
  row = measure(raw_splits)
  if row is None:
    logging.info("tfidf baseline: not fitted, the training texts hold one "
                 "class")
    return
  metrics["tfidf"] = row
  logging.info(
      "tfidf baseline: TF-IDF (word 1-2-grams, %d terms) + logistic "
      "regression on %d training texts (C=%.3g, validation accuracy %.4f): "
      "test accuracy %.4f, macro-F1 %.4f, against this model's %.4f (%.1fs)",
      row["vocabulary"], row["train_texts"], row["c"],
      row["validation_accuracy"], row["test"]["accuracy"],
      row["test"]["macro_f1"], metrics["test"]["accuracy"], row["seconds"])
  if row["test"]["accuracy"] > metrics["test"]["accuracy"]:
    logging.warning("tfidf baseline: %s", sentences.tfidf_sentence(metrics))
