"""The whole recipe vs a plain keras.io-style `model.fit` implementation.

    python benchmarks/recipe_vs_baseline.py [--head_epochs=30 --finetune_epochs=20]

Both start from the same pretrained backbone (`convnet_small` pretrained on
the embedded source task, as in the quickstart) and train on the same data
for the same epochs at the same learning rates:

* recipe: `training.run_recipe`, the tl_keras two-phase recipe (feature cache
  in phase 1, warmup and cosine decay, best-epoch restore).
* baseline: the keras.io transfer-learning guide: freeze the base,
  `compile` + `fit` the head, unfreeze, `compile` at a low learning rate,
  `fit` again; a `cache().shuffle().map(augment).batch().prefetch()` input.

Prints one JSON line per case: wall seconds of training for each (the
fastest of `--repeats`, run alternately), their ratio, and the test accuracy
of each. The second case trains on 2,000 images of the source task from a
random-init backbone: more steps per epoch, so less of the time is per-epoch
overhead.
"""

import argparse
import json
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import keras  # pylint: disable=g-import-not-at-top
import numpy as np  # pylint: disable=g-import-not-at-top
import tensorflow as tf  # pylint: disable=g-import-not-at-top

from tl_keras import data  # pylint: disable=g-import-not-at-top
from tl_keras import models  # pylint: disable=g-import-not-at-top
from tl_keras import pretraining  # pylint: disable=g-import-not-at-top
from tl_keras import training  # pylint: disable=g-import-not-at-top

MODEL, SIZE, BATCH = "convnet_small", 32, 32


def build(weights, num_classes):
  keras.utils.set_random_seed(0)
  return models.build_classifier(MODEL, num_classes, image_size=SIZE,
                                 weights=weights)


def test_accuracy(model, splits):
  images, labels = data.to_numpy(splits.test, SIZE)
  probs = model.predict(images.astype(np.float32), batch_size=256, verbose=0)
  return float(np.mean(probs.argmax(-1) == labels))


def recipe(weights, splits, args):
  model = build(weights, splits.num_classes)
  plan = training.Recipe(
      head=training.PhaseSpec("head", args.head_epochs, args.head_lr,
                              label_smoothing=0.1),
      finetune=training.PhaseSpec("finetune", args.finetune_epochs,
                                  args.finetune_lr, warmup_epochs=1.0,
                                  label_smoothing=0.1),
      unfreeze=("all", None))
  start = time.perf_counter()
  training.run_recipe(model, plan, splits,
                      strategy=tf.distribute.get_strategy(), image_size=SIZE,
                      batch_size=BATCH, seed=0)
  return time.perf_counter() - start, test_accuracy(model, splits)


def baseline(weights, splits, args):
  """The keras.io guide's two `fit` calls on the same model and data."""
  model = build(weights, splits.num_classes)
  base = models.base_of(model)

  def prepare(ds, train):
    ds = ds.map(lambda x, y: (tf.cast(data.resize(x, SIZE), tf.float32), y),
                num_parallel_calls=tf.data.AUTOTUNE).cache()
    if train:
      seeds = tf.data.Dataset.random(seed=0).batch(2)
      ds = tf.data.Dataset.zip((ds.shuffle(1000, seed=0), seeds)).map(
          lambda xy, s: (data.augment_image(xy[0], s), xy[1]),
          num_parallel_calls=tf.data.AUTOTUNE)
    return ds.batch(BATCH).prefetch(tf.data.AUTOTUNE)

  train, val = prepare(splits.train, True), prepare(splits.validation, False)
  loss = keras.losses.SparseCategoricalCrossentropy()
  start = time.perf_counter()
  base.trainable = False
  model.compile(optimizer=keras.optimizers.Adam(args.head_lr), loss=loss,
                metrics=["accuracy"])
  model.fit(train, epochs=args.head_epochs, validation_data=val, verbose=0)
  base.trainable = True
  model.compile(optimizer=keras.optimizers.Adam(args.finetune_lr), loss=loss,
                metrics=["accuracy"])
  model.fit(train, epochs=args.finetune_epochs, validation_data=val,
            verbose=0)
  return time.perf_counter() - start, test_accuracy(model, splits)


def compare(name, weights, splits, args):
  """Runs both `args.repeats` times, alternating; prints the fastest of each.

  Alternating and taking the minimum keeps one-off costs (TF start-up,
  first tracing) from landing on whichever runs first.
  """
  runs = {"recipe": [], "baseline": []}
  for i in range(args.repeats):
    order = ("baseline", "recipe") if i % 2 == 0 else ("recipe", "baseline")
    for which in order:
      runs[which].append((recipe if which == "recipe" else baseline)(
          weights, splits, args))
  ours, theirs = min(runs["recipe"]), min(runs["baseline"])
  print(json.dumps({
      "benchmark": "recipe_vs_baseline", "case": name, "model": MODEL,
      "image_size": SIZE, "train_images": splits.sizes["train"],
      "head_epochs": args.head_epochs,
      "finetune_epochs": args.finetune_epochs, "repeats": args.repeats,
      "seconds": {"recipe": round(ours[0], 1), "baseline": round(theirs[0], 1)},
      "time_ratio": round(ours[0] / theirs[0], 3),
      "test_accuracy": {"recipe": round(ours[1], 4),
                        "baseline": round(theirs[1], 4)},
      "cpu_count": os.cpu_count()}), flush=True)


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--head_epochs", type=int, default=30)
  parser.add_argument("--finetune_epochs", type=int, default=20)
  parser.add_argument("--head_lr", type=float, default=3e-3)
  parser.add_argument("--finetune_lr", type=float, default=3e-4)
  parser.add_argument("--repeats", type=int, default=2)
  parser.add_argument("--larger_train_images", type=int, default=2000,
                      help="second case: this many source-task images, "
                      "random-init backbone (0 skips it)")
  args = parser.parse_args()
  weights = pretraining.synthetic_weights(
      MODEL, SIZE, epochs=10, seed=42, strategy=tf.distribute.get_strategy())
  compare("quickstart data, pretrained backbone", weights,
          data.load("synthetic", seed=42), args)
  if args.larger_train_images:
    compare("source-task data, random-init backbone", None,
            data.load("synthetic_source", seed=42,
                      max_train_samples=args.larger_train_images), args)


if __name__ == "__main__":
  main()
