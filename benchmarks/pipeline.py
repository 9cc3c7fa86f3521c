"""Does the input pipeline outpace the training step?

    python benchmarks/pipeline.py [--steps=60] [--files=2000]

For each case prints one JSON line: the images/s the training input
pipeline delivers alone, and the images/s the training step consumes when
its input is free (one batch held in memory). The pipeline must be the
faster of the two. Two inputs:

  files   `--files` JPEG photos (320x240, quality 90) the script writes as
          class folders and reads as `--dataset=folder` does: the first
          epoch decodes and resizes every file ("cold"), later epochs read
          the resized images from the in-memory cache ("cached").
  memory  the embedded source task, already decoded in memory (the
          quickstart's case), its cache filled first.
"""

import argparse
import json
import os
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import keras  # pylint: disable=g-import-not-at-top
import numpy as np  # pylint: disable=g-import-not-at-top
from PIL import Image  # pylint: disable=g-import-not-at-top
import tensorflow as tf  # pylint: disable=g-import-not-at-top

from tl_keras.data import datasets  # pylint: disable=g-import-not-at-top
from tl_keras.data import inputs  # pylint: disable=g-import-not-at-top
from tl_keras.models import applications  # pylint: disable=g-import-not-at-top
from tl_keras import training  # pylint: disable=g-import-not-at-top

CASES = (("convnet_small", 32, 64), ("mobilenetv2", 96, 32))


def rate(iterator_fn, steps, batch_size):
  iterator_fn()  # warm-up: tracing, first fill of caches
  start = time.perf_counter()
  for _ in range(steps):
    iterator_fn()
  return steps * batch_size / (time.perf_counter() - start)


def write_photos(root, splits, count):
  """`count` JPEGs of the source task's images, 320x240, as class folders."""
  images, labels = next(iter(splits.train.batch(count)))
  for i, (image, label) in enumerate(zip(images.numpy(), labels.numpy())):
    folder = os.path.join(root, splits.class_names[label])
    os.makedirs(folder, exist_ok=True)
    noise = np.random.default_rng(i).integers(0, 24, (240, 320, 3))
    photo = np.asarray(Image.fromarray(image).resize((320, 240)))
    Image.fromarray(np.clip(photo + noise, 0, 255).astype(np.uint8)).save(
        os.path.join(folder, f"{i}.jpg"), quality=90)


def epoch_rate(make_input, size, batch):
  """Images/s over one full epoch of a fresh iterator, then of the next."""
  steps = -(-size // batch)
  iterator = iter(make_input(tf.distribute.InputContext()))
  rates = []
  for _ in range(2):
    start = time.perf_counter()
    for _ in range(steps):
      next(iterator)
    rates.append(steps * batch / (time.perf_counter() - start))
  return rates


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--steps", type=int, default=60)
  parser.add_argument("--files", type=int, default=2000)
  parser.add_argument("--smoke", action="store_true",
                      help="convnet_small only, 2 steps, 64 files: a check "
                      "that the script runs")
  args = parser.parse_args()
  strategy = tf.distribute.get_strategy()
  splits = datasets.load("synthetic_source")
  cases = CASES[:1] if args.smoke else CASES
  if args.smoke:
    args.steps, args.files = 2, 64
  with tempfile.TemporaryDirectory() as root:
    write_photos(root, splits, args.files)
    photos = datasets.load("folder", data_dir=root, validation_fraction=0.0,
                       test_fraction=0.0)
    for name, size, batch in cases:
      make_photos = inputs.input_fn(
          photos.train, size=photos.sizes["train"], image_size=size,
          global_batch_size=batch, training=True, augment="light", seed=0)
      cold, cached = epoch_rate(make_photos, photos.sizes["train"], batch)

      make_input = inputs.input_fn(
          splits.train, size=splits.sizes["train"], image_size=size,
          global_batch_size=batch, training=True, augment="light", seed=0)
      pipeline = iter(make_input(tf.distribute.InputContext()))
      # Fill the in-memory cache first, as the first epoch of a run does.
      for _ in range(-(-splits.sizes["train"] // batch)):
        next(pipeline)
      pipeline_rate = rate(lambda: next(pipeline), args.steps, batch)

      keras.utils.set_random_seed(0)
      model = applications.build_classifier(name, splits.num_classes,
                                      image_size=size, frozen_base=False)
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
          "batch_size": batch,
          "files": photos.sizes["train"], "file_size": "320x240 jpeg",
          "files_cold_images_per_second": round(cold),
          "files_cached_images_per_second": round(cached),
          "pipeline_images_per_second": round(pipeline_rate),
          "step_images_per_second": round(step_rate),
          "files_cold_over_step": round(cold / step_rate, 1),
          "pipeline_over_step": round(pipeline_rate / step_rate, 1),
          "cpu_count": os.cpu_count()}), flush=True)


if __name__ == "__main__":
  main()
