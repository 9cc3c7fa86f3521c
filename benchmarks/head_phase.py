"""Phase 1 with and without the feature cache: images/s and accuracy.

    python benchmarks/head_phase.py [--epochs=5,30]
    python benchmarks/head_phase.py --probe_table [--sizes=1000,5000,20000,50000]
    python benchmarks/head_phase.py --whole_process

`--probe_table`: `probe.fit` (scikit-learn's LogisticRegression, L-BFGS,
warm-started along the 13 L2 strengths, one BLAS thread) against plain
scikit-learn (a cold L-BFGS fit at each of the same 13 strengths, its
default settings and threads), on the same random Gaussian-cluster features
(N training examples x D features, C classes; validation 20% of N, at most
5,000): seconds and validation accuracy of the strength with the lowest
validation loss. The arms differ only in the solver's path and threads.
`--whole_process`: `main.py` head-only on the embedded 5,000-image source
task with the feature cache (default) and with `--feature_cache=off`, both
arms `--augment=none` (the same images every epoch), wall seconds of the
whole process and their ratio.

Without either: one JSON line per model, both arms unaugmented (the cached
arm trains on one unaugmented view, so the uncached arm reads the same
images): the head trained in the loop, its training
images per second (epochs x training images / wall seconds, the cache's
one-off feature pass included) without and with the feature cache, the
ratio, the ratio per epoch once the features exist, the best validation
accuracy each way, and the epochs the cached head needs to reach the
uncached head's best, for each number of head epochs in `--epochs`; and
what the recipe's phase 1 does instead, the linear probe on cached
features (`probe.fit`): its wall seconds and validation accuracy. Offline: convnet_small is pretrained on
the embedded source task (cached after the first run), resnet50 is
random-init.
"""

import argparse
import itertools
import json
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import keras  # pylint: disable=g-import-not-at-top
import numpy as np  # pylint: disable=g-import-not-at-top
import tensorflow as tf  # pylint: disable=g-import-not-at-top

from tl_keras.data import datasets  # pylint: disable=g-import-not-at-top
from tl_keras import families  # pylint: disable=g-import-not-at-top
from tl_keras.models import applications  # pylint: disable=g-import-not-at-top
from tl_keras import pretraining  # pylint: disable=g-import-not-at-top
from tl_keras import training  # pylint: disable=g-import-not-at-top
from tl_keras.training import probe  # pylint: disable=g-import-not-at-top

# (model, image size, training images, weights): convnet_small pretrained on
# the source task (as in the quickstart), so its features carry the classes
# and the two heads' accuracies mean something; resnet50 random-init, for
# timing only.
CASES = (("convnet_small", 32, 5000, "synthetic"), ("resnet50", 32, 1000, None))


def head_phase(name, size, splits, epochs, cached, weights):
  keras.utils.set_random_seed(0)
  model = applications.build_classifier(name, splits.num_classes, image_size=size,
                                  weights=weights)
  best = training.Best()
  start = time.perf_counter()
  features = (training.FeatureCache(model, splits,
                                    family=families.of(model),
                                    image_size=size, batch_size=64)
              if cached else None)
  feature_pass = time.perf_counter() - start
  history, _ = training.train_phase(
      model, training.PhaseSpec("head", epochs, 3e-3), splits,
      training.Context(tf.distribute.get_strategy(), size, 64,
                       augment=False), best=best, features=features)
  seconds = time.perf_counter() - start
  images = epochs * splits.sizes["train"]
  return {"rate": images / seconds, "seconds": seconds,
          "steady_rate": images / (seconds - feature_pass),
          "best": best.accuracy,
          "curve": [h["val_accuracy"] for h in history]}


def probe_fit(name, size, splits, weights):
  """What the recipe's phase 1 does: feature pass, then `probe.fit`."""
  keras.utils.set_random_seed(0)
  model = applications.build_classifier(name, splits.num_classes, image_size=size,
                                  weights=weights)
  start = time.perf_counter()
  cache = training.FeatureCache(model, splits, family=families.of(model),
                                image_size=size, batch_size=64)
  fit = probe.fit(cache.train, cache.validation, splits.num_classes)
  return {"seconds": time.perf_counter() - start,
          "best": fit.validation_accuracy}


def epochs_to_reach(curve, target):
  """The first epoch (1-based) whose validation accuracy reaches `target`."""
  return next((i + 1 for i, a in enumerate(curve) if a >= target - 1e-9),
              None)


def _clusters(n, dim, classes, seed):
  """Gaussian clusters, centers 2 standard deviations apart on average."""
  rng = np.random.default_rng(seed)
  centers = rng.normal(size=(classes, dim)) * 2 / np.sqrt(dim)
  labels = rng.integers(0, classes, n)
  x = centers[labels] + rng.normal(size=(n, dim))
  return np.maximum(x, 0).astype(np.float32), labels.astype(np.int32)


def probe_row(n, dim, classes, seed=0):
  """One row of the probe table: ours against plain scikit-learn."""
  import warnings  # pylint: disable=g-import-not-at-top
  from sklearn.exceptions import ConvergenceWarning  # pylint: disable=g-import-not-at-top
  from sklearn.linear_model import LogisticRegression  # pylint: disable=g-import-not-at-top
  validation = min(5000, n // 5)
  x, y = _clusters(n + validation, dim, classes, seed)
  x, y, xv, yv = x[:n], y[:n], x[n:], y[n:]
  start = time.perf_counter()
  fit = probe.fit(tf.data.Dataset.from_tensor_slices((x, y)),
                  tf.data.Dataset.from_tensor_slices((xv, yv)), classes)
  ours = time.perf_counter() - start
  start = time.perf_counter()
  mean, std = probe.standardization(x)
  xs, xvs = (x - mean) / std, (xv - mean) / std
  best = None
  with warnings.catch_warnings():
    warnings.simplefilter("ignore", ConvergenceWarning)
    for strength in probe.STRENGTHS:
      model = LogisticRegression(C=1 / (strength * n)).fit(xs, y)
      p = np.clip(model.predict_proba(xvs)[np.arange(len(yv)), yv], 1e-12, 1)
      loss = float(-np.mean(np.log(p)))
      if best is None or round(loss, 4) < round(best[0], 4):
        best = (loss, float(np.mean(model.predict(xvs) == yv)))
  theirs = time.perf_counter() - start
  return {"benchmark": "head_phase", "table": "probe", "n": n, "dim": dim,
          "classes": classes, "validation": validation,
          "seconds": {"probe": round(ours, 2), "sklearn": round(theirs, 2)},
          "ratio": round(ours / theirs, 3),
          "validation_accuracy": {"probe": round(fit.validation_accuracy, 4),
                                  "sklearn": round(best[1], 4)},
          "probe_iterations": fit.iterations, "cpu_count": os.cpu_count()}


def whole_process(smoke=False):
  """main.py head-only, cached against --feature_cache=off."""
  import subprocess  # pylint: disable=g-import-not-at-top
  import tempfile  # pylint: disable=g-import-not-at-top
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  args = ["--model=convnet_small", "--weights=synthetic",
          "--dataset=synthetic_source", "--head_epochs=10",
          "--finetune_epochs=0", "--batch_size=64", "--export=saved_model",
          "--augment=none"]
  if smoke:
    args += ["--max_train_samples=128", "--head_epochs=1", "--min_steps=0",
             "--weights=none", "--finetune_epochs=1"]
  seconds = {}
  for arm, flag in (("cached", "auto"), ("uncached", "off")):
    out = tempfile.mkdtemp(prefix="head_phase_")
    start = time.perf_counter()
    subprocess.run([sys.executable, os.path.join(repo, "main.py"), *args,
                    f"--feature_cache={flag}", f"--output_dir={out}",
                    "--overwrite"],
                   check=True, capture_output=True, cwd=repo)
    seconds[arm] = round(time.perf_counter() - start, 2)
  return {"benchmark": "head_phase", "table": "whole_process",
          "seconds": seconds,
          "speedup": round(seconds["uncached"] / seconds["cached"], 2),
          "cpu_count": os.cpu_count()}


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--probe_table", action="store_true")
  parser.add_argument("--sizes", default="1000,5000,20000,50000")
  parser.add_argument("--dims", default="128,1280,2048")
  parser.add_argument("--classes", default="10,100")
  parser.add_argument("--whole_process", action="store_true")
  parser.add_argument("--epochs", default="5,30",
                      help="comma list of head-phase lengths to measure")
  parser.add_argument("--smoke", action="store_true",
                      help="random-init convnet_small, 64 images, 1 epoch: "
                      "a check that the script runs")
  args = parser.parse_args()
  if args.probe_table:
    shape = ((200,), (16,), (3,)) if args.smoke else tuple(
        [int(v) for v in a.split(",")] for a in (args.sizes, args.dims,
                                                 args.classes))
    for n, dim, classes in itertools.product(*shape):
      print(json.dumps(probe_row(n, dim, classes)), flush=True)
    return
  if args.whole_process:
    print(json.dumps(whole_process(args.smoke)), flush=True)
    return
  cases = CASES
  if args.smoke:
    cases, args.epochs = (("convnet_small", 32, 64, None),), "1"
  for (name, size, train_images, weights), epochs in itertools.product(
      cases, [int(e) for e in args.epochs.split(",")]):
    if weights == "synthetic":
      weights = pretraining.synthetic_weights(
          name, size, epochs=10, seed=42,
          strategy=tf.distribute.get_strategy())
    splits = datasets.load("synthetic_source", max_train_samples=train_images)
    slow = head_phase(name, size, splits, epochs, False, weights)
    fast = head_phase(name, size, splits, epochs, True, weights)
    fitted = probe_fit(name, size, splits, weights)
    print(json.dumps({
        "benchmark": "head_phase", "model": name, "image_size": size,
        "backbone": "pretrained (source task)" if weights else "random init",
        "train_images": train_images, "epochs": epochs,
        "images_per_second": {"uncached": round(slow["rate"], 1),
                              "cached": round(fast["rate"], 1)},
        "seconds": {"uncached": round(slow["seconds"], 2),
                    "cached": round(fast["seconds"], 2)},
        "speedup": round(fast["rate"] / slow["rate"], 2),
        # After the one-off feature pass: what each further epoch gains.
        "speedup_per_epoch_after_feature_pass": round(
            fast["steady_rate"] / slow["steady_rate"], 2),
        "best_validation_accuracy": {"uncached": round(slow["best"], 4),
                                     "cached": round(fast["best"], 4),
                                     "probe": round(fitted["best"], 4)},
        # The recipe's phase 1: one feature pass and the linear probe.
        "probe_seconds": round(fitted["seconds"], 2),
        "cached_epochs_to_uncached_best": epochs_to_reach(
            fast["curve"], slow["best"]),
        "cpu_count": os.cpu_count()}), flush=True)


if __name__ == "__main__":
  main()
