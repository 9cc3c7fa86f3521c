"""The whole recipe vs a plain keras.io-style `model.fit` implementation.

    python benchmarks/recipe_vs_baseline.py [--head_epochs=30 --finetune_epochs=20]

Both start from the same pretrained backbone (`convnet_small` pretrained on
the embedded source task, as in the quickstart) and train on the same data:

* recipe: `training.run_recipe` as the default flags build it: the head
  fitted as a linear probe on cached features, phase 2's learning rate
  picked by trials, at least `--min_steps` steps, early stopping.
* recipe, every epoch: the same without early stopping.
* baseline: the keras.io transfer-learning guide: freeze the base,
  `compile` + `fit` the head for `--head_epochs` with Adam at `--head_lr`
  (the guide's 1e-3), unfreeze the base with its BatchNorm layers kept in
  inference mode (the guide calls the base with `training=False`),
  `compile` at `--finetune_lr` (the guide's 1e-5), `fit`
  `--finetune_epochs` more; a `cache().shuffle().batch().map(flip and
  shift).prefetch()` input.
* fit, recipe's optimizer: the same two `fit` calls with the recipe's
  optimizer and schedule (AdamW, weight decay 1e-4, 10% linear warmup then
  cosine decay over each phase), at the same rates: what the optimizer
  alone changes.

Prints one JSON line per case: wall seconds of training for each (the
fastest of `--repeats`, run in rotating order), the ratios to the baseline,
the history rows each recipe wrote, and the test accuracy of each. The
second case trains on 2,000 images of the source task from a random-init
backbone: more steps per epoch, so less of the time is per-epoch overhead.
"""

import argparse
import dataclasses
import json
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import keras  # pylint: disable=g-import-not-at-top
import numpy as np  # pylint: disable=g-import-not-at-top
import tensorflow as tf  # pylint: disable=g-import-not-at-top

from tl_keras import config as config_lib  # pylint: disable=g-import-not-at-top
from tl_keras.data import datasets  # pylint: disable=g-import-not-at-top
from tl_keras.data import inputs  # pylint: disable=g-import-not-at-top
from tl_keras import families  # pylint: disable=g-import-not-at-top
from tl_keras.models import applications  # pylint: disable=g-import-not-at-top
from tl_keras.modes import recipe_config  # pylint: disable=g-import-not-at-top
from tl_keras import pretraining  # pylint: disable=g-import-not-at-top
from tl_keras import training  # pylint: disable=g-import-not-at-top

MODEL, SIZE, BATCH = "convnet_small", 32, 32


def build(weights, num_classes):
  keras.utils.set_random_seed(0)
  return applications.build_classifier(MODEL, num_classes, image_size=SIZE,
                                 weights=weights)


def test_accuracy(model, splits):
  images, labels = inputs.to_numpy(splits.test, SIZE)
  probs = model.predict(images.astype(np.float32), batch_size=256, verbose=0)
  return float(np.mean(probs.argmax(-1) == labels))


def recipe(weights, splits, args, early_stopping):
  """`training.run_recipe` as the default flags build it."""
  model = build(weights, splits.num_classes)
  config = dataclasses.replace(
      config_lib.Config(), weights="none" if weights is None else "local",
      head_epochs=args.head_epochs, finetune_epochs=args.finetune_epochs,
      min_steps=args.min_steps, early_stopping=early_stopping)
  start = time.perf_counter()
  history, _ = training.run_recipe(
      model, recipe_config.recipe_from_config(config), splits,
      training.Context(tf.distribute.get_strategy(), SIZE, BATCH,
                       augment=config.augment, family=families.of(model)))
  return time.perf_counter() - start, test_accuracy(model, splits), len(
      history)


def baseline(weights, splits, args, recipe_optimizer=False):
  """The keras.io guide's two `fit` calls on the same model and data.

  `recipe_optimizer`: AdamW with the recipe's warmup and cosine decay
  instead of Adam at a constant rate.
  """
  model = build(weights, splits.num_classes)
  base = applications.base_of(model)

  def prepare(ds, train):
    ds = ds.map(lambda x, y: (tf.cast(inputs.resize(x, SIZE), tf.float32), y),
                num_parallel_calls=tf.data.AUTOTUNE).cache()
    if train:
      ds = ds.shuffle(1000, seed=0)
    ds = ds.batch(BATCH)
    if train:  # flip and shift: what --augment=auto picks for shapes
      augment = keras.Sequential([
          keras.layers.RandomFlip("horizontal", seed=0),
          keras.layers.RandomTranslation(0.125, 0.125, fill_mode="reflect",
                                         seed=1)])
      ds = ds.map(lambda x, y: (augment(x, training=True), y))
    return ds.prefetch(tf.data.AUTOTUNE)

  train, val = prepare(splits.train, True), prepare(splits.validation, False)
  loss = keras.losses.SparseCategoricalCrossentropy()
  steps_per_epoch = -(-splits.sizes["train"] // BATCH)

  def optimizer(lr, epochs):
    if not recipe_optimizer:
      return keras.optimizers.Adam(lr)
    return training.make_optimizer(
        training.PhaseSpec("fit", epochs, lr, warmup=0.1),
        epochs * steps_per_epoch)

  start = time.perf_counter()
  base.trainable = False
  model.compile(optimizer=optimizer(args.head_lr, args.head_epochs),
                loss=loss, metrics=["accuracy"])
  model.fit(train, epochs=args.head_epochs, validation_data=val, verbose=0)
  base.trainable = True
  for layer in base._flatten_layers():  # pylint: disable=protected-access
    if isinstance(layer, keras.layers.BatchNormalization):
      layer.trainable = False  # inference mode, as the guide keeps it
  model.compile(optimizer=optimizer(args.finetune_lr, args.finetune_epochs),
                loss=loss, metrics=["accuracy"])
  model.fit(train, epochs=args.finetune_epochs, validation_data=val,
            verbose=0)
  return (time.perf_counter() - start, test_accuracy(model, splits),
          args.head_epochs + args.finetune_epochs)


def compare(name, weights, splits, args):
  """Runs each `args.repeats` times in rotating order; the fastest counts.

  Rotating the order and taking the minimum keeps one-off costs (TF
  start-up, first tracing) from landing on whichever runs first.
  """
  runners = {
      "baseline": lambda: baseline(weights, splits, args),
      "fit_recipe_optimizer": lambda: baseline(weights, splits, args, True),
      "recipe": lambda: recipe(weights, splits, args, 0.3),
      "recipe_every_epoch": lambda: recipe(weights, splits, args, 0.0)}
  names = list(runners)
  runs = {which: [] for which in names}
  for i in range(args.repeats):
    for which in names[i % len(names):] + names[:i % len(names)]:
      runs[which].append(runners[which]())
  fastest = {which: min(results) for which, results in runs.items()}
  base_seconds = fastest["baseline"][0]
  print(json.dumps({
      "benchmark": "recipe_vs_baseline", "case": name, "model": MODEL,
      "image_size": SIZE, "train_images": splits.sizes["train"],
      "head_epochs": args.head_epochs,
      "finetune_epochs": args.finetune_epochs, "min_steps": args.min_steps,
      "repeats": args.repeats,
      "seconds": {k: round(v[0], 1) for k, v in fastest.items()},
      "time_ratio": {k: round(v[0] / base_seconds, 3)
                     for k, v in fastest.items() if k != "baseline"},
      "epochs_run": {k: v[2] for k, v in fastest.items()},
      "test_accuracy": {k: round(v[1], 4) for k, v in fastest.items()},
      "cpu_count": os.cpu_count()}), flush=True)


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--head_epochs", type=int, default=30)
  parser.add_argument("--finetune_epochs", type=int, default=20)
  # The keras.io guide's rates: Adam's default, then "a very low rate".
  parser.add_argument("--head_lr", type=float, default=1e-3)
  parser.add_argument("--finetune_lr", type=float, default=1e-5)
  parser.add_argument("--min_steps", type=int, default=300,
                      help="the recipe's step budget (its default)")
  parser.add_argument("--repeats", type=int, default=2)
  parser.add_argument("--larger_train_images", type=int, default=2000,
                      help="second case: this many source-task images, "
                      "random-init backbone (0 skips it)")
  parser.add_argument("--smoke", action="store_true",
                      help="random-init backbone, 1 + 1 epochs, one run "
                      "each: a check that the script runs")
  args = parser.parse_args()
  if args.smoke:
    args.head_epochs = args.finetune_epochs = args.repeats = 1
    args.min_steps, args.larger_train_images = 0, 0
    weights = None
  else:
    weights = pretraining.synthetic_weights(
        MODEL, SIZE, epochs=10, seed=42,
        strategy=tf.distribute.get_strategy())
  compare("quickstart data, pretrained backbone", weights,
          datasets.load("synthetic", seed=42), args)
  if args.larger_train_images:
    compare("source-task data, random-init backbone", None,
            datasets.load("synthetic_source", seed=42,
                      max_train_samples=args.larger_train_images), args)


if __name__ == "__main__":
  main()
