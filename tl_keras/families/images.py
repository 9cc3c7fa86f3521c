"""What every image family shares: raw pixels in, a backbone named "base".

An image classifier is raw RGB pixels -> `ImageResize` ("resize") ->
the backbone's normalization ("preprocess") -> the backbone ("base",
frozen and called in inference mode) -> pooling ("pool") -> dropout ->
the Dense classifier ("classifier"). The families differ in where the
backbone and its normalization come from; training, unfreezing by blocks,
the feature cache and serving are the same for all of them.
"""

import logging
import os

from keras import layers
import numpy as np

from tl_keras.data import datasets
from tl_keras.data import image_tables
from tl_keras.data import inputs
from tl_keras.errors import UserError
from tl_keras.export import serving as serving_lib
import tl_keras.families.base as base_lib
from tl_keras.models import applications
from tl_keras.models import blocks
from tl_keras.models import saving


# --dataset values naming a table of image paths and labels.
TABLES = ("csv", "tsv", "jsonl")


class ImageFamily(base_lib.Family):
  """The image half of the interface; subclasses say how to get a backbone."""

  kind = "image"

  def built(self, model):
    try:
      return self.owns_base(applications.base_of(model))
    except ValueError:  # no layer "base": not an image classifier
      return False

  def owns_base(self, base):
    """Whether a classifier's "base" layer is this family's backbone."""
    raise NotImplementedError

  def source_weights(self, config, sources, strategy):
    return sources.synthetic_weights(
        config.model, self.image_size(config), epochs=config.pretrain_epochs,
        seed=config.seed, strategy=strategy)

  def load_splits(self, config):
    common = dict(validation_fraction=config.validation_fraction,
                  test_fraction=config.test_fraction, seed=config.seed,
                  skip_bad_images=config.skip_bad_images)
    if config.dataset in TABLES:  # images listed in a table
      return datasets.limited(image_tables.load(
          config.data_dir, config.dataset, image_column=config.image_column,
          label_column=config.label_column, multi_label=config.multi_label,
          **common), config.dataset,
                              config.max_train_samples)
    return datasets.load(config.dataset, data_dir=config.data_dir,
                         max_train_samples=config.max_train_samples, **common)

  def example_thumbnails(self, raw_splits, split, indices, size=64):
    wanted, found = set(int(i) for i in indices), {}
    dataset = getattr(raw_splits, split).map(
        lambda x, y: inputs.resize(x, size))
    for i, image in enumerate(dataset.as_numpy_iterator()):
      if i in wanted:
        found[i] = np.asarray(image, np.uint8)
        if len(found) == len(wanted):
          break
    return found

  def head_parts(self, model):
    return model.get_layer("pool").output, [model.get_layer("dropout"),
                                            model.get_layer("classifier")]

  def has_batchnorm(self, model):
    return any(isinstance(l, layers.BatchNormalization)
               for l in applications.base_of(model)._flatten_layers())  # pylint: disable=protected-access

  def unfreeze_count(self, model, mode, value):
    return base_lib.block_count(len(blocks.blocks(applications.base_of(model))),
                                mode, value, model.name)

  def unfreeze_top(self, model, mode, value, train_batchnorm=False):
    return blocks.unfreeze_blocks(
        model, self.unfreeze_count(model, mode, value), train_batchnorm)

  def first_unfrozen_block(self, model, mode, value):
    grouped = blocks.blocks(applications.base_of(model))
    return grouped[-self.unfreeze_count(model, mode, value)][0]

  def serving(self, model, about=None):
    return serving_lib.ImageServing(
        int(model.get_layer("resize").get_config()["height"]),
        model.get_layer("preprocess").describe(), name=model.name,
        about=about)


def transfer_backbone(model, source_path):
  """Copies the backbone weights of an earlier run's classifier into `model`."""
  source = saving.load_keras(source_path)
  try:
    source_base = applications.base_of(source)
  except ValueError as e:
    raise UserError(f"--weights={source_path} is not a tl_keras classifier "
                    "(it has no 'base' layer)") from e
  target_base = applications.base_of(model)
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


def earlier_run(spec):
  """--weights naming an earlier run (its folder or model.keras), or None.

  UserError when it names a folder that holds no run.
  """
  path = os.path.expanduser(spec)
  if os.path.isdir(path):
    if not os.path.exists(os.path.join(path, "model.keras")):
      raise UserError(f"--weights={spec} is a folder without model.keras; "
                      "pass an earlier run's output directory or a file")
    return os.path.join(path, "model.keras")
  return path if path.endswith(".keras") and os.path.exists(path) else None
