"""KerasHub text classifiers: presets, local preset folders, bert_micro.

Raw strings in; the preprocessor (tokenizer) is part of the classifier, and
the data are tokenized with it once, before training. --unfreeze counts
transformer layers. See `text_models` for the models themselves.
"""

import dataclasses
import os

import keras

from tl_keras.data import datasets
from tl_keras.data import text_data
from tl_keras.errors import UserError
from tl_keras.export import serving as serving_lib
import tl_keras.families.base as base_lib
from tl_keras import flag_values
from tl_keras.models import text_models

# Tokens per text when --sequence_length is 0: enough for a paragraph.
SEQUENCE_LENGTH = 128


class HubText(base_lib.Family):
  """Text classification with a KerasHub backbone and its tokenizer."""

  name = "keras_hub_text"
  kind = "text"
  block_word = "transformer layers"
  # Biases and LayerNorm weights are not decayed (BERT's recipe).
  no_decay = ("bias", "gamma", "beta")

  def owns(self, name):
    return text_models.is_text_model(name)

  def built(self, model):
    return text_models.is_text_classifier(model)

  def source_weights(self, config, sources, strategy):
    return sources.synthetic_text_preset(
        config.model, epochs=config.pretrain_epochs, seed=config.seed,
        strategy=strategy)

  def check(self, config):
    text_models.check_model(config.model)
    if config.weights == "synthetic" and config.model not in text_models.OFFLINE:
      raise UserError(f"--weights=synthetic needs an offline text model "
                      f"({', '.join(text_models.OFFLINE)}); "
                      f"--model={config.model} brings its own weights: use "
                      "--weights=pretrained")
    self.check_text_flags(config)

  def check_text_flags(self, config):
    """Image-only flags, given for a text model: an error, not a silent
    skip."""
    given = {f.name for f in dataclasses.fields(config)
             if getattr(config, f.name) != f.default}
    model = f"--model={config.model} is a text model"
    if "augment" in given and config.augment != "none":
      raise UserError(f"--augment={config.augment} transforms images and "
                      f"{model}: leave --augment out")
    if "cache_views" in given:
      raise UserError(f"--cache_views={config.cache_views} adds augmented "
                      f"image views and {model}: leave --cache_views out")
    calibrated = [f for f in flag_values.parse_exports(config.export)
                  if f in flag_values.CALIBRATED_EXPORTS]
    if "export" in given and calibrated:
      raise UserError(f"--export={config.export}: {calibrated[0]} (integer "
                      f"activations) is for images and {model}: use "
                      "tflite_dynamic, the small one")

  def listing(self):
    return [("text: KerasHub text classifiers", name, "text", params, about)
            for name, params, about in text_models.listing()]

  def augment(self, config):
    return "none"  # the image policies do not apply to token ids

  def load_splits(self, config):
    return datasets.limited(text_data.load(
        config.dataset, data_dir=config.data_dir,
        text_column=config.text_column, label_column=config.label_column,
        validation_fraction=config.validation_fraction,
        test_fraction=config.test_fraction, seed=config.seed,
        multi_label=config.multi_label),
        config.dataset, config.max_train_samples)

  def prepare_splits(self, splits, model):
    text_data.measure_lengths(
        splits, lambda texts: self.positions(model, texts),
        model.preprocessor.sequence_length,
        # The word-embedding model (this family's subclass) has no
        # backbone and no position limit.
        limit=getattr(getattr(model, "backbone", None),
                      "max_sequence_length", None))
    return text_data.tokenized_splits(splits, model.preprocessor)

  def positions(self, model, texts):
    """The positions each text takes whole in the model's input."""
    return text_models.positions(model.preprocessor, texts)

  def example_sources(self, raw_splits, split):
    return text_data.texts_of(getattr(raw_splits, split))[0]

  def build(self, config, num_classes, strategy, raw_splits=None):
    del raw_splits  # the weights do not depend on the data
    weights = resolve_weights(config)
    keras.utils.set_random_seed(config.seed)
    with strategy.scope():
      return text_models.build_classifier(
          config.model, num_classes, sequence_length=sequence_length(config),
          weights=weights, dropout=config.dropout,
          activation=base_lib.activation(config))

  def describe(self, config, model):
    return text_models.describe(config.model, model)

  def head_parts(self, model):
    return text_models.feature_parts(model)

  def unfreeze_count(self, model, mode, value):
    return base_lib.block_count(len(model.backbone.transformer_layers), mode,
                                value, model.name, self.block_word)

  def unfreeze_top(self, model, mode, value, train_batchnorm=False):
    del train_batchnorm  # transformers normalize with LayerNorm
    return text_models.unfreeze_top(model, mode,
                                    self.unfreeze_count(model, mode, value))

  def first_unfrozen_block(self, model, mode, value):
    depth = len(model.backbone.transformer_layers)
    return f"transformer_layer_{depth - self.unfreeze_count(model, mode, value)}"

  def serving(self, model, about=None):
    return serving_lib.TextServing(model.preprocessor, about=about)


def sequence_length(config):
  """--sequence_length, or the text model's default."""
  return config.sequence_length or (
      text_models.OFFLINE_SEQUENCE_LENGTH
      if config.model in text_models.OFFLINE else SEQUENCE_LENGTH)


def resolve_weights(config):
  """--weights for a text model as `text_models.build_classifier` takes it."""
  spec = config.weights
  if spec in ("imagenet", "pretrained"):
    return "pretrained"
  if spec == "none":
    return "none"
  if spec == "synthetic":
    raise ValueError("--weights=synthetic reaches a family as the cached "
                     "preset folder: resolve it with pretraining.resolved")
  path = os.path.expanduser(spec)
  for candidate in (path, os.path.join(path, serving_lib.TextServing.PRESET)):
    if text_models.is_preset_dir(candidate):
      return candidate
  raise UserError(f"--weights={spec} is not a KerasHub preset folder or an "
                  "earlier text run's output directory; for text models use "
                  "pretrained, none, synthetic, or a preset folder")


FAMILY = HubText()
