"""What a run starts from: its data splits and its model with starting weights.

`load_splits` reads the dataset a config names; `build_model` builds the
classifier with the backbone weights --weights names (ImageNet, none, the
embedded source task, an earlier run, a weights file, a KerasHub preset).
"""

import logging
import os

import keras

from tl_keras import data
from tl_keras import export
from tl_keras import models
from tl_keras import pretraining
from tl_keras import serving as serving_lib
from tl_keras import text_data
from tl_keras import text_models
from tl_keras.errors import UserError


def resolve_weights(config, image_size, strategy):
  """Turns --weights into (constructor weights, .keras to transfer from).

  Returns:
    (weights, source): `weights` goes to the backbone constructor ("imagenet",
    None or a weights file); `source`, if not None, is a `.keras` classifier
    whose backbone weights are copied over after building.
  """
  spec = config.weights
  if spec == "imagenet":
    return "imagenet", None
  if spec == "none":
    return None, None
  if spec == "synthetic":
    return pretraining.synthetic_weights(
        config.model, image_size, epochs=config.pretrain_epochs,
        seed=config.seed, strategy=strategy), None
  path = os.path.expanduser(spec)
  if os.path.isdir(path):
    if not os.path.exists(os.path.join(path, "model.keras")):
      raise UserError(f"--weights={spec} is a folder without model.keras; "
                      "pass an earlier run's output directory or a file")
    path = os.path.join(path, "model.keras")
  if not os.path.exists(path):
    raise UserError(f"--weights={spec}: no such file; use imagenet, none, "
                    "synthetic, a .keras/.weights.h5/.h5 file, or a run "
                    "directory")
  if path.endswith(".keras"):
    return None, path
  if path.endswith(".h5"):
    return path, None
  raise UserError(f"--weights={spec} is not a .keras, .weights.h5 or .h5 "
                  "file")


def transfer_backbone(model, source_path):
  """Copies the backbone weights of an earlier run's classifier into `model`."""
  source = export.load_keras(source_path)
  try:
    source_base = models.base_of(source)
  except ValueError as e:
    raise UserError(f"--weights={source_path} is not a tl_keras classifier "
                    "(it has no 'base' layer)") from e
  target_base = models.base_of(model)
  src, dst = source_base.weights, target_base.weights
  mismatched = [f"{d.path} {tuple(d.shape)} vs {tuple(s.shape)}"
                for s, d in zip(src, dst) if tuple(s.shape) != tuple(d.shape)]
  if len(src) != len(dst) or mismatched:
    raise UserError(
        f"--weights={source_path} holds a {source.name} backbone "
        f"({len(src)} weights) that does not fit --model={model.name} "
        f"({len(dst)} weights)"
        + (f"; first mismatch: {mismatched[0]}" if mismatched else ""))
  target_base.set_weights(source_base.get_weights())
  logging.info("backbone weights transferred from %s", source_path)


def is_text(config):
  """Whether the run is text classification (a BERT --model)."""
  return text_models.is_text_model(config.model)


def sequence_length(config):
  """--sequence_length, or the text model's default."""
  return config.sequence_length or (
      pretraining.TEXT_SEQUENCE_LENGTH if config.model in text_models.OFFLINE
      else 128)


def resolve_text_weights(config, strategy):
  """--weights for a text model as `text_models.build_classifier` takes it."""
  spec = config.weights
  if spec in ("imagenet", "pretrained"):
    return "pretrained"
  if spec == "none":
    return "none"
  if spec == "synthetic":
    if config.model not in text_models.OFFLINE:
      raise UserError(f"--weights=synthetic needs an offline text model "
                      f"({', '.join(text_models.OFFLINE)}); "
                      f"--model={config.model} brings its own weights: use "
                      "--weights=pretrained")
    return pretraining.synthetic_text_preset(
        config.model, epochs=config.pretrain_epochs, seed=config.seed,
        strategy=strategy)
  path = os.path.expanduser(spec)
  for candidate in (path, os.path.join(path, serving_lib.TextServing.PRESET)):
    if text_models.is_preset_dir(candidate):
      return candidate
  raise UserError(f"--weights={spec} is not a KerasHub preset folder or an "
                  "earlier text run's output directory; for text models use "
                  "pretrained, none, synthetic, or a preset folder")


def build_model(config, num_classes, image_size, strategy):
  """The transfer classifier with its backbone's starting weights."""
  if is_text(config):
    weights = resolve_text_weights(config, strategy)
    keras.utils.set_random_seed(config.seed)
    with strategy.scope():
      return text_models.build_classifier(
          config.model, num_classes, sequence_length=sequence_length(config),
          weights=weights, dropout=config.dropout)
  weights, source = resolve_weights(config, image_size, strategy)
  keras.utils.set_random_seed(config.seed)
  with strategy.scope():
    model = models.build_classifier(
        config.model, num_classes, image_size=image_size, weights=weights,
        dropout=config.dropout)
    if source:
      transfer_backbone(model, source)
  return model


def load_splits(config, text=None):
  """The dataset named by `config`, its splits as `data.Splits`.

  Text runs (`text`, by default: a text --model) get (string, label)
  splits; tokenizing needs the model.
  """
  if is_text(config) if text is None else text:
    return data.limited(text_data.load(
        config.dataset, data_dir=config.data_dir,
        text_column=config.text_column, label_column=config.label_column,
        validation_fraction=config.validation_fraction,
        test_fraction=config.test_fraction, seed=config.seed),
        config.dataset, config.max_train_samples)
  return data.load(config.dataset, data_dir=config.data_dir,
                   validation_fraction=config.validation_fraction,
                   test_fraction=config.test_fraction,
                   max_train_samples=config.max_train_samples,
                   seed=config.seed, skip_bad_images=config.skip_bad_images)
