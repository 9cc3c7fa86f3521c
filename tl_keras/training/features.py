"""The feature cache: the frozen base's outputs, computed once.

In memory, or in TFRecord files when they do not fit.
"""

import logging
import os
import time

import keras
import numpy as np
import tensorflow as tf

from tl_keras import console
from tl_keras.data import inputs as inputs_lib


class FeatureCache:
  """The frozen base's pooled features, computed once for the head phase.

  While the base is frozen (and runs in inference mode) it maps an image to
  the same features every epoch, so phase 1 runs it once per image (and per
  augmented view) and trains the head, the very same dropout and classifier
  layers, on the stored vectors.

  Attributes:
    head: features -> probabilities, sharing the classifier's weights.
    train: (feature, label) dataset, `views` views of each training image:
      view 0 unaugmented, the others drawn from the augmentation policy.
    validation: (feature, label) dataset of the validation split.
  """

  def __init__(self, model, splits, *, family, image_size, batch_size,
               views=1, seed=0, directory=None, augment="light"):
    """Runs the base over the splits.

    Args:
      model: the classifier, base frozen.
      splits: its `data.Splits`.
      family: its family (`families.of(model)`): where the head starts.
      image_size: the input size (None for token dicts).
      batch_size: batch size of the feature pass.
      views: views per training image.
      seed: seed of the augmented views.
      augment: the `inputs.augmentation` policy the views are drawn from.
      directory: None keeps the features in memory; a folder streams them
        into TFRecord files there, read back by tf.data each epoch (for
        feature sets larger than memory).
    """
    start = time.time()
    pooled, head = family.head_parts(model)
    extractor = keras.Model(model.input, pooled)
    dim = pooled.shape[-1]
    self.head = keras.Sequential([keras.Input((dim,)), *head])
    views = max(1, views)

    # One function for every split: the last, smaller batch of each is
    # traced once more, not once per split.
    predict = tf.function(lambda x: extractor(x, training=False),
                          reduce_retracing=True)

    def features(dataset, name, view_seed=None):
      path = directory and os.path.join(directory, f"{name}.tfrecord")
      return _features(predict, dataset, image_size, batch_size,
                       view_seed=view_seed, path=path, dim=dim,
                       augment=augment)

    if augment in ("none", False):
      views = 1  # unaugmented views would all be the same
    train = [features(splits.train, f"train-view{v}",
                      None if v == 0 else (seed, v)) for v in range(views)]
    self.validation = features(splits.validation, "validation")
    if directory:
      self.train = train[0]
      for more in train[1:]:
        self.train = self.train.concatenate(more)
    else:
      self.train = tf.data.Dataset.from_tensor_slices((
          np.concatenate([f for f, _ in train]),
          np.concatenate([l for _, l in train])))
      self.validation = tf.data.Dataset.from_tensor_slices(self.validation)
    logging.info("feature cache (%s): %d training views x %d images and %d "
                 "validation images through the frozen base once (%.1fs); "
                 "the head trains on %d-wide features",
                 directory or "memory", views, splits.sizes["train"],
                 splits.sizes["validation"], time.time() - start, dim)

  @staticmethod
  def fits(splits, model, family, views,
           limit=inputs_lib.CACHE_LIMIT_BYTES):
    """Whether the features of all views fit in memory."""
    dim = family.head_parts(model)[0].shape[-1]
    return 4 * dim * (views * splits.sizes["train"]
                      + splits.sizes["validation"]) < limit


def _features(predict, dataset, image_size, batch_size, view_seed=None,
              path=None, dim=None, augment="light"):
  """(features [N, C], labels [N]) of a split, in its order.

  `predict` maps a batch of inputs to a batch of features.
  Without an `image_size` the examples (token dicts) are used as they are. With a
  `path`, the features go to that TFRecord file and a (feature, label)
  dataset reading it is returned instead.
  """
  if not image_size:
    return _features_of_batches(predict, dataset.batch(batch_size), path,
                                dim)
  ds = dataset.map(lambda x, y: (tf.cast(inputs_lib.resize(x, image_size),
                                        tf.float32), y),
                   num_parallel_calls=tf.data.AUTOTUNE).batch(batch_size)
  if view_seed is not None:
    # The training input's policy; MixUp mixes labels, so its views are
    # the flip-and-shift part alone.
    policy = "light" if augment == "mixup" else augment
    augmenter, _ = inputs_lib.augmentation(
        policy, view_seed[0] * 1000 + view_seed[1])
    ds = ds.map(augmenter)
  return _features_of_batches(predict, ds, path, dim)


def _features_of_batches(predict, ds, path=None, dim=None):
  if path:
    return _features_to_file(predict, ds, path, dim)
  features, labels = [], []
  for x, y in _batches(ds):
    features.append(predict(x).numpy())
    labels.append(y.numpy())
  return (np.concatenate(features).astype(np.float32),
          np.concatenate(labels).astype(np.int32))


def _batches(ds):
  """`ds`'s batches, prefetched, with a progress line on long passes."""
  total = int(ds.cardinality())
  with console.Heartbeat("feature pass", total=max(total, 0),
                         unit="batches") as beat:
    beat.done = 0
    for batch in inputs_lib.prefetched(ds):
      yield batch
      beat.done += 1


def _features_to_file(predict, ds, path, dim):
  """Writes one TFRecord per batch (features and labels as tensors).

  Returns:
    The unbatched (float32 feature [dim], int32 label) dataset reading it.
  """
  with tf.io.TFRecordWriter(path) as writer:
    for x, y in _batches(ds):
      writer.write(tf.train.Example(features=tf.train.Features(feature={
          name: tf.train.Feature(bytes_list=tf.train.BytesList(value=[
              tf.io.serialize_tensor(value).numpy()]))
          for name, value in (("x", tf.cast(predict(x), tf.float32)),
                              ("y", tf.cast(y, tf.int32)))})).SerializeToString())
  spec = {k: tf.io.FixedLenFeature([], tf.string) for k in ("x", "y")}
  label_shape = ds.element_spec[1].shape  # [B], or [B, C] multi-hot

  def parse(record):
    parts = tf.io.parse_single_example(record, spec)
    x = tf.io.parse_tensor(parts["x"], tf.float32)
    x.set_shape([None, dim])
    y = tf.io.parse_tensor(parts["y"], tf.int32)
    y.set_shape(label_shape)
    return x, y

  return tf.data.TFRecordDataset(path).map(
      parse, num_parallel_calls=tf.data.AUTOTUNE).unbatch()


def use_feature_cache(mode, strategy, splits, model, family, views,
                      directory):
  """--feature_cache as None (off), "memory" or "disk".

  auto: memory if the features fit, else disk if there is a `directory`.
  The features are computed and the head fitted on this host, so not
  under several workers (each would fit its own) or on a TPU.
  """
  if mode == "off":
    return None
  if isinstance(strategy, (tf.distribute.MultiWorkerMirroredStrategy,
                           tf.distribute.TPUStrategy)):
    logging.info("feature cache off: it runs on one host, not under %s",
                 type(strategy).__name__)
    return None
  if mode == "auto":
    if FeatureCache.fits(splits, model, family, views):
      return "memory"
    if directory:
      logging.info("feature cache on disk: the features would not fit in "
                   "memory")
      return "disk"
    logging.info("feature cache off: the features would not fit in memory")
    return None
  if mode == "disk" and not directory:
    raise ValueError("--feature_cache=disk needs a directory")
  return mode
