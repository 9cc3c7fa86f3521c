"""Phase 1 with and without the feature cache: images/s and accuracy.

    python benchmarks/head_phase.py [--epochs=5]

Prints one JSON line per model: the head phase's training images per second
(epochs x training images / wall seconds, the cache's one-off feature pass
included) without and with `--feature_cache`, the ratio, and the best
validation accuracy each way. Random-init backbones, so it runs offline.
"""

import argparse
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
from tl_keras import training  # pylint: disable=g-import-not-at-top

CASES = (("convnet_small", 32, 5000), ("resnet50", 32, 1000))


def head_phase(name, size, splits, epochs, cached):
  keras.utils.set_random_seed(0)
  model = models.build_classifier(name, splits.num_classes, image_size=size,
                                  weights=None)
  best = training.Best()
  start = time.perf_counter()
  features = (training.FeatureCache(model, splits, image_size=size,
                                    batch_size=64) if cached else None)
  training.train_phase(
      model, training.PhaseSpec("head", epochs, 3e-3), splits,
      strategy=tf.distribute.get_strategy(), image_size=size, batch_size=64,
      seed=0, best=best, augment=not cached, features=features)
  seconds = time.perf_counter() - start
  return epochs * splits.sizes["train"] / seconds, seconds, best.accuracy


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--epochs", type=int, default=5)
  args = parser.parse_args()
  for name, size, train_images in CASES:
    splits = data.load("synthetic_source", max_train_samples=train_images)
    slow = head_phase(name, size, splits, args.epochs, cached=False)
    fast = head_phase(name, size, splits, args.epochs, cached=True)
    print(json.dumps({
        "benchmark": "head_phase", "model": name, "image_size": size,
        "train_images": train_images, "epochs": args.epochs,
        "images_per_second": {"uncached": round(slow[0], 1),
                              "cached": round(fast[0], 1)},
        "seconds": {"uncached": round(slow[1], 2), "cached": round(fast[1], 2)},
        "speedup": round(fast[0] / slow[0], 2),
        "best_validation_accuracy": {"uncached": round(slow[2], 4),
                                     "cached": round(fast[2], 4)},
        "cpu_count": os.cpu_count()}), flush=True)


if __name__ == "__main__":
  main()
