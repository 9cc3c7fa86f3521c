"""Phase 1 with and without the feature cache: images/s and accuracy.

    python benchmarks/head_phase.py [--epochs=5,30]

Prints one JSON line per model: the head trained in the loop, its training
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
import tensorflow as tf  # pylint: disable=g-import-not-at-top

from tl_keras import data  # pylint: disable=g-import-not-at-top
from tl_keras import models  # pylint: disable=g-import-not-at-top
from tl_keras import pretraining  # pylint: disable=g-import-not-at-top
from tl_keras import probe  # pylint: disable=g-import-not-at-top
from tl_keras import training  # pylint: disable=g-import-not-at-top

# (model, image size, training images, weights): convnet_small pretrained on
# the source task (as in the quickstart), so its features carry the classes
# and the two heads' accuracies mean something; resnet50 random-init, for
# timing only.
CASES = (("convnet_small", 32, 5000, "synthetic"), ("resnet50", 32, 1000, None))


def head_phase(name, size, splits, epochs, cached, weights):
  keras.utils.set_random_seed(0)
  model = models.build_classifier(name, splits.num_classes, image_size=size,
                                  weights=weights)
  best = training.Best()
  start = time.perf_counter()
  features = (training.FeatureCache(model, splits, image_size=size,
                                    batch_size=64) if cached else None)
  feature_pass = time.perf_counter() - start
  history, _ = training.train_phase(
      model, training.PhaseSpec("head", epochs, 3e-3), splits,
      training.Context(tf.distribute.get_strategy(), size, 64,
                       augment=not cached), best=best, features=features)
  seconds = time.perf_counter() - start
  images = epochs * splits.sizes["train"]
  return {"rate": images / seconds, "seconds": seconds,
          "steady_rate": images / (seconds - feature_pass),
          "best": best.accuracy,
          "curve": [h["val_accuracy"] for h in history]}


def probe_fit(name, size, splits, weights):
  """What the recipe's phase 1 does: feature pass, then `probe.fit`."""
  keras.utils.set_random_seed(0)
  model = models.build_classifier(name, splits.num_classes, image_size=size,
                                  weights=weights)
  start = time.perf_counter()
  cache = training.FeatureCache(model, splits, image_size=size,
                                batch_size=64)
  fit = probe.fit(cache.train, cache.validation, splits.num_classes)
  return {"seconds": time.perf_counter() - start,
          "best": fit.validation_accuracy}


def epochs_to_reach(curve, target):
  """The first epoch (1-based) whose validation accuracy reaches `target`."""
  return next((i + 1 for i, a in enumerate(curve) if a >= target - 1e-9),
              None)


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--epochs", default="5,30",
                      help="comma list of head-phase lengths to measure")
  parser.add_argument("--smoke", action="store_true",
                      help="random-init convnet_small, 64 images, 1 epoch: "
                      "a check that the script runs")
  args = parser.parse_args()
  cases = CASES
  if args.smoke:
    cases, args.epochs = (("convnet_small", 32, 64, None),), "1"
  for (name, size, train_images, weights), epochs in itertools.product(
      cases, [int(e) for e in args.epochs.split(",")]):
    if weights == "synthetic":
      weights = pretraining.synthetic_weights(
          name, size, epochs=10, seed=42,
          strategy=tf.distribute.get_strategy())
    splits = data.load("synthetic_source", max_train_samples=train_images)
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
