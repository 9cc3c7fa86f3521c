"""Helpers several test modules share: running main.py in a subprocess,
and MediaPipe Tasks' image classifier on a .tflite file."""

import os
import subprocess
import sys

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_main(*args, env=None, timeout=600, cwd=REPO):
  full_env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", **(env or {})}
  return subprocess.run([sys.executable, os.path.join(REPO, "main.py"), *args],
                        cwd=cwd, env=full_env, capture_output=True,
                        text=True, timeout=timeout, check=False)


def suspect_labels(out):
  """suspect_labels.csv's rows, checked against metrics.json's test split:
  every test mistake is a row, and the rows go from the most confident."""
  import csv  # pylint: disable=g-import-not-at-top
  import json  # pylint: disable=g-import-not-at-top
  with open(os.path.join(out, "suspect_labels.csv"), encoding="utf-8") as f:
    rows = list(csv.DictReader(f))
  metrics = json.loads(open(os.path.join(out, "metrics.json"),
                            encoding="utf-8").read())
  confusion = np.asarray(metrics["test"]["confusion_matrix"])
  assert sum(r["split"] == "test" for r in rows) == (
      confusion.sum() - np.trace(confusion))
  assert metrics["review"]["wrong"] == len(rows)
  confidence = [float(r["confidence"]) for r in rows]
  assert confidence == sorted(confidence, reverse=True)
  for r in rows:
    assert r["label"] != r["predicted"]
    assert float(r["label_probability"]) <= float(r["confidence"])
  return rows, metrics["review"]


def mediapipe_scores(path, images, num_classes):
  """MediaPipe Tasks' ImageClassifier on `images`: [N, C] scores, labels."""
  import mediapipe as mp  # pylint: disable=g-import-not-at-top
  from mediapipe.tasks.python import vision  # pylint: disable=g-import-not-at-top
  from mediapipe.tasks.python.core import base_options  # pylint: disable=g-import-not-at-top
  options = vision.ImageClassifierOptions(
      base_options=base_options.BaseOptions(model_asset_path=path),
      max_results=num_classes)
  scores, names = np.zeros((len(images), num_classes), np.float32), {}
  with vision.ImageClassifier.create_from_options(options) as classifier:
    for i, image in enumerate(images):
      result = classifier.classify(mp.Image(
          image_format=mp.ImageFormat.SRGB,
          data=np.ascontiguousarray(image)))
      for category in result.classifications[0].categories:
        scores[i, category.index] = category.score
        names[category.index] = category.category_name
  return scores, [names.get(i) for i in range(num_classes)]
