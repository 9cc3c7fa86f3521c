"""Source-task pretraining: the offline stand-in for downloading weights.

`resolved` is what modes call before building a model.

`--weights=synthetic` trains the backbone on the embedded `synthetic_source`
task once and caches the backbone weights, as keras.applications caches the
ImageNet weights it downloads. Later runs load the cached file.
"""

import dataclasses
import logging
import os
import shutil
import sys
import time

from tl_keras import artifacts
from tl_keras.data import datasets
from tl_keras.data import text_data
from tl_keras.models import applications
from tl_keras.models import text_models
from tl_keras import training

# The source task has thousands of labels: a bigger batch and learning rate
# than fine-tuning, and every layer (BatchNorm included) trains.
BATCH_SIZE = 64
LEARNING_RATE = 2e-3
# The source shapes are learnable almost exactly, and how far pretraining
# got decides how well the backbone transfers: it goes on (up to
# IMAGE_ROUNDS x --pretrain_epochs) until validation accuracy reaches this.
IMAGE_TARGET = 0.98
IMAGE_ROUNDS = 3


cache_dir = artifacts.cache_dir


def resolved(config, family, strategy):
  """`config` with --weights=synthetic turned into the cached source-task
  weights of `family`'s kind (pretrained first if the cache has none);
  any other `config` as it is.

  Families build from files and never train: a mode that builds a model
  resolves --weights here first.
  """
  if config.weights != "synthetic":
    return config
  path = family.source_weights(config, sys.modules[__name__], strategy)
  return dataclasses.replace(config, weights=path)


def synthetic_weights(model_name, image_size, *, epochs, seed, strategy):
  """Returns the path of backbone weights pretrained on `synthetic_source`.

  Trains them first if the cache has none for these settings.
  """
  path = os.path.join(
      cache_dir(), f"{model_name}_{image_size}px_synthetic_source_"
      f"e{epochs}_seed{seed}_target{IMAGE_TARGET}.weights.h5")
  if os.path.exists(path):
    logging.info("using cached source-task weights %s", path)
    return path
  logging.info("pretraining %s on the embedded source task (first use; "
               "cached in %s)", model_name, cache_dir())
  start = time.time()
  splits = datasets.load_synthetic("synthetic_source", seed=seed)
  with strategy.scope():
    model = applications.build_classifier(
        model_name, splits.num_classes, image_size=image_size, weights=None,
        dropout=0.0, frozen_base=False)
  _train(model, splits, training.PhaseSpec("pretrain", epochs, LEARNING_RATE),
         strategy=strategy, image_size=image_size, seed=seed, start=start,
         target=IMAGE_TARGET, rounds=IMAGE_ROUNDS)
  os.makedirs(cache_dir(), exist_ok=True)
  tmp = f"{path}.{os.getpid()}.weights.h5"
  applications.base_of(model).save_weights(tmp)
  os.replace(tmp, path)
  return path


def _train(model, splits, spec, *, strategy, image_size, seed, start,
           target=None, rounds=1):
  """Trains every layer on the source task; logs its test accuracy.

  With a `target`, a run whose last validation accuracy is below it trains
  another `spec.epochs` at half the learning rate, up to `rounds` rounds in
  all: training from random weights now and then lingers on a plateau, and
  a half-learned source model transfers little. The final weights are kept,
  not the first to reach the target: those are the least trained.
  """
  step = 0
  for round_ in range(rounds):
    history, step = training.train_phase(
        model, dataclasses.replace(
            spec, learning_rate=spec.learning_rate / 2 ** round_), splits,
        training.Context(strategy, image_size, BATCH_SIZE, seed=seed + round_,
                         augment=bool(image_size)),
        first_step=step)
    reached = history[-1]["val_accuracy"]
    if target is None or reached >= target:
      break
    if round_ + 1 < rounds:
      logging.info("source validation accuracy %.4f is below %.2f: %d more "
                   "epochs at half the learning rate", reached, target,
                   spec.epochs)
  test = training.evaluate(model, splits.test, splits.sizes["test"],
                           strategy=strategy, class_names=splits.class_names,
                           image_size=image_size, batch_size=BATCH_SIZE)
  logging.info("source task test accuracy %.4f after %.0fs", test["accuracy"],
               time.time() - start)


TEXT_SEQUENCE_LENGTH = text_models.OFFLINE_SEQUENCE_LENGTH
TEXT_LEARNING_RATE = 1e-3
# The source topics are learnable exactly: pretraining goes on (up to
# TEXT_ROUNDS x --pretrain_epochs) until validation accuracy reaches this.
TEXT_TARGET = 0.99
TEXT_ROUNDS = 3


def synthetic_text_preset(model_name, *, epochs, seed, strategy):
  """Returns a preset folder of `model_name` pretrained on the source task.

  The backbone and tokenizer are written with `save_to_preset`, so runs load
  them through `from_preset`, as they would a downloaded preset. Trains
  them first if the cache has none for these settings.
  """
  path = os.path.join(cache_dir(), f"{model_name}_synthetic_text_source_"
                      f"e{epochs}_seed{seed}_target{TEXT_TARGET}")
  if os.path.exists(os.path.join(path, "config.json")):
    logging.info("using cached source-task preset %s", path)
    return path
  logging.info("pretraining %s on the embedded source text task (first use;"
               " cached in %s)", model_name, cache_dir())
  start = time.time()
  splits = text_data.load_synthetic_text("synthetic_text_source", seed=seed)
  with strategy.scope():
    model = text_models.build_classifier(
        model_name, splits.num_classes, weights="none", dropout=0.0,
        sequence_length=TEXT_SEQUENCE_LENGTH, frozen_base=False)
  splits = text_data.tokenized_splits(splits, model.preprocessor)
  _train(model, splits, training.PhaseSpec(
      "pretrain", epochs, TEXT_LEARNING_RATE, warmup=0.1),
         strategy=strategy, image_size=None, seed=seed, start=start,
         target=TEXT_TARGET, rounds=TEXT_ROUNDS)
  tmp = f"{path}.{os.getpid()}.tmp"
  model.backbone.save_to_preset(tmp)
  model.preprocessor.tokenizer.save_to_preset(tmp)
  if os.path.exists(path):  # a partial folder from an interrupted write
    shutil.rmtree(path)
  os.replace(tmp, path)
  return path
