"""Does the input pipeline outpace the training step?

    python benchmarks/pipeline.py [--steps=60]

For each case prints one JSON line: the images/s the training input pipeline
delivers alone (decode, resize, cache, shuffle, augment, batch), and the
images/s the training step consumes when its input is free (one batch held
in memory). The pipeline must be the faster of the two.
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

CASES = (("convnet_small", 32, 64), ("mobilenetv2", 96, 32))


def rate(iterator_fn, steps, batch_size):
  iterator_fn()  # warm-up: tracing, first fill of caches
  start = time.perf_counter()
  for _ in range(steps):
    iterator_fn()
  return steps * batch_size / (time.perf_counter() - start)


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--steps", type=int, default=60)
  parser.add_argument("--smoke", action="store_true",
                      help="convnet_small only, 2 steps: a check that the "
                      "script runs")
  args = parser.parse_args()
  strategy = tf.distribute.get_strategy()
  splits = data.load("synthetic_source")
  cases = CASES[:1] if args.smoke else CASES
  if args.smoke:
    args.steps = 2
  for name, size, batch in cases:
    make_input = data.input_fn(
        splits.train, size=splits.sizes["train"], image_size=size,
        global_batch_size=batch, training=True, augment="light", seed=0)
    pipeline = iter(make_input(tf.distribute.InputContext()))
    # Fill the in-memory cache first, as the first epoch of a run does.
    for _ in range(-(-splits.sizes["train"] // batch)):
      next(pipeline)
    pipeline_rate = rate(lambda: next(pipeline), args.steps, batch)

    keras.utils.set_random_seed(0)
    model = models.build_classifier(name, splits.num_classes, image_size=size,
                                    frozen_base=False)
    spec = training.PhaseSpec("bench", 1, 1e-3)
    optimizer = training.make_optimizer(spec, args.steps + 1)
    optimizer.build(model.trainable_variables)
    train_steps, _ = training.steps.step_functions(
        model, optimizer, strategy, splits.num_classes, batch, 0.0)
    one_batch = make_input(tf.distribute.InputContext()).take(1).cache()
    held = iter(one_batch.repeat())
    one = tf.constant(1)
    step_rate = rate(lambda: train_steps(held, one), args.steps, batch)
    print(json.dumps({
        "benchmark": "pipeline", "model": name, "image_size": size,
        "batch_size": batch, "pipeline_images_per_second": round(pipeline_rate),
        "step_images_per_second": round(step_rate),
        "pipeline_over_step": round(pipeline_rate / step_rate, 1),
        "cpu_count": os.cpu_count()}), flush=True)


if __name__ == "__main__":
  main()
