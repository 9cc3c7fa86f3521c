"""The input pipeline: what a split becomes on its way to the model.

One resize everywhere (`resize`: training, evaluation, the feature cache,
the predictors and the model's own resize layer), the augmentation policies
built from Keras's preprocessing layers, and `input_fn`, which resizes,
caches, shuffles, augments and batches a split for whichever distribution
strategy runs the loop, with tf.data's autotuning model off (`prefetched`).
"""

import numpy as np
import tensorflow as tf

# Decoded, resized uint8 images are cached in memory below this size.
CACHE_LIMIT_BYTES = 2 << 30


def resize(image, size):
  """uint8 [H, W, 3] -> uint8 [size, size, 3] by `resize_pixels`."""
  return tf.cast(resize_pixels(tf.cast(image, tf.float32), (size, size)),
                 tf.uint8)


def resize_pixels(images, size):
  """The one resize: float pixels [..., H, W, C] -> [..., *size, C].

  Bilinear with antialiasing, rounded and clipped to whole values 0..255.
  The input pipeline (`resize`) and the model's own `models.ImageResize`
  both use it, so a model served photos of any size sees what training saw.
  """
  out = tf.image.resize(images, size, antialias=True)
  return tf.cast(tf.clip_by_value(tf.round(out), 0.0, 255.0), images.dtype)


AUGMENTATIONS = ("none", "shift", "light", "randaugment", "mixup")


def augmentation(policy, seed):
  """The --augment policy as a function of a float32 batch of 0..255 images.

  Built from Keras 3's own preprocessing layers, seeded; `input_fn` sets
  their random state from each batch's position in the stream, so a batch
  is augmented alike whatever came before it (a resumed run skips the
  batches it has seen and continues with the same ones):
    none: nothing.
    shift: a shift of up to 1/8 of the size (reflected borders).
    light: random horizontal flip and a shift of up to 1/8 of the size
      (reflected borders).
    randaugment: light, then RandAugment (2 random ops of magnitude 0.5).
    mixup: light, then MixUp (pairs of images and their labels blended);
      the labels become one-hot mixtures.

  Returns:
    (fn, mixes_labels): fn(images, labels) -> (images, labels); labels
    must be one-hot [B, C] float32 when `mixes_labels`. `fn.layers` are
    the Keras layers whose seed generators it draws from.
  """
  import keras  # pylint: disable=g-import-not-at-top
  policy = {True: "light", False: "none"}.get(policy, policy)
  if policy not in AUGMENTATIONS:
    raise ValueError(f"unknown augmentation {policy!r}")
  if policy == "none":
    return (lambda x, y: (x, y)), False
  layers = [keras.layers.RandomFlip("horizontal", seed=seed),
            keras.layers.RandomTranslation(0.125, 0.125, fill_mode="reflect",
                                           seed=seed + 1)]
  if policy == "shift":
    layers = layers[1:]
  if policy == "randaugment":
    layers.append(keras.layers.RandAugment(value_range=(0, 255),
                                           seed=seed + 2))
  pipeline = keras.layers.Pipeline(layers)
  if policy != "mixup":
    def augmented(images, labels):
      return pipeline(images, training=True), labels

    augmented.layers = [pipeline]
    return augmented, False
  mixup = keras.layers.MixUp(seed=seed + 3)

  def mixed(images, targets):
    out = mixup({"images": pipeline(images, training=True),
                 "labels": targets}, training=True)
    return out["images"], out["labels"]

  mixed.layers = [pipeline, mixup]
  return mixed, True


# Random draws one batch's augmentation may make, at most: the counter of
# each seed generator starts at batch index x this for every batch.
_DRAWS_PER_BATCH = 1 << 16


def _augment_at(augmenter, index, images, labels):
  """`augmenter` on the batch at position `index` of the stream.

  Keras's seed generators hold (seed, counter) and count up with every
  draw; setting the counter from the batch index makes each batch's draws
  depend on the seed and its position alone.
  """
  states = [v for layer in augmenter.layers for v in layer.variables
            if "seed_generator" in v.path]
  for state in states:
    state.assign(tf.stack([state[0], index * _DRAWS_PER_BATCH]))
  return augmenter(images, labels)


def _epochs(ds, size, seed, first):
  """`ds` (`size` examples) repeated from epoch `first` on, each shuffled.

  Epoch e's order depends only on `seed` and e, so a resumed stream starts
  at its epoch without reading the epochs before it. `ds` is the same
  dataset in every epoch: its cache is filled once.
  """
  buffer = min(size, 10_000)

  def shuffled(epoch):
    # A tensor seed (documented for `shuffle`) fails while the graph-level
    # seed is 0 (`tf.random.get_seed` compares the pair to (0, 0)); the
    # graph of this function gets a fixed non-zero one.
    tf.random.set_seed(1)
    return ds.shuffle(buffer, seed=seed * 1_000_003 + epoch)

  return tf.data.Dataset.range(first, 1 << 40).flat_map(shuffled)


def input_fn(dataset, *, size, image_size, global_batch_size, training,
             augment="none", seed=0, num_classes=None, skip=0):
  """Builds the function `strategy.distribute_datasets_from_function` calls.

  Args:
    dataset: unbatched (uint8 image, label) dataset.
    size: number of examples in `dataset`.
    image_size: images are resized to this square size. None: the examples
      are used as they are (cached float32 features, or token dicts).
    global_batch_size: batch size across all replicas.
    training: shuffle, repeat forever and drop the remainder. Otherwise
      every example is seen once: the dataset is padded with label -1
      examples to whole global batches, so all replicas and workers run the
      same number of steps, and callers mask label -1 out (multi-hot
      labels: rows of -1).
    augment: an `augmentation` policy (training images only).
    seed: shuffle and augmentation seed.
    num_classes: needed by "mixup", whose labels are one-hot mixtures.
    skip: training steps already taken from this stream: it starts after
      them, with the batches and augmentations an unbroken stream would
      give next. The epochs before are not read; of the current one, the
      examples before the step are (through the shuffle buffer).

  Returns:
    fn(input_context) -> per-replica batched dataset of
    (float32 images [B, image_size, image_size, 3] in 0..255, int32 labels
    [B], or float32 one-hot [B, C] under "mixup").
  """
  cache = image_size and size * image_size * image_size * 3 < CACHE_LIMIT_BYTES

  def fn(context):
    ds = dataset
    if not training:
      padded = -(-size // global_batch_size) * global_batch_size
      filler = dataset.map(lambda x, y: (x, -tf.ones_like(y, tf.int32)))
      ds = ds.concatenate(filler.repeat().take(padded - size))
    if context.num_input_pipelines > 1:
      ds = ds.shard(context.num_input_pipelines, context.input_pipeline_id)
    if image_size:
      ds = ds.map(lambda x, y: (resize(x, image_size), y),
                  num_parallel_calls=tf.data.AUTOTUNE)
    if cache:
      ds = ds.cache()
    per_replica = context.get_per_replica_batch_size(global_batch_size)
    # Batches this pipeline feeds each step (one per replica it serves).
    per_step = context.num_replicas_in_sync // context.num_input_pipelines
    if training:
      pipelines, index = (context.num_input_pipelines,
                          context.input_pipeline_id)
      shard = (size - index + pipelines - 1) // pipelines
      consumed = skip * per_step * per_replica
      ds = _epochs(ds, shard, seed, consumed // shard).skip(consumed % shard)
    if image_size:
      ds = ds.map(lambda x, y: (tf.cast(x, tf.float32), y),
                  num_parallel_calls=tf.data.AUTOTUNE)
    ds = ds.batch(per_replica, drop_remainder=True)
    if training and image_size and augment not in ("none", False):
      augmenter, mixes = augmentation(augment,
                                      seed + context.input_pipeline_id)
      if mixes:
        ds = ds.map(lambda x, y: (x, tf.one_hot(y, num_classes)))
      # One batch at a time, in order (the layers' random state is shared).
      ds = ds.enumerate(start=skip * per_step).map(
          lambda i, batch: _augment_at(augmenter, i, *batch))
    return prefetched(ds)

  return fn


def prefetched(ds):
  """`ds` prefetched, with tf.data's autotuning model off.

  The autotuner runs an optimization thread per iterator, and an iterator's
  destructor waits for that thread's current round: on a busy 2-core
  machine every learning-rate trial and many validation passes ended in a
  pause of up to 20 s (a default quickstart-sized run took 56 s with it,
  40 s without, the same weights). Without the model, AUTOTUNE map
  parallelism is the number of cores and prefetch sizes its own buffer.
  """
  options = tf.data.Options()
  options.autotune.enabled = False
  return ds.prefetch(tf.data.AUTOTUNE).with_options(options)


def to_numpy(dataset, image_size, limit=0):
  """The first `limit` examples (0 = all) as uint8 [N, S, S, 3] and labels.

  Images go through the same `resize` as the training and evaluation input.
  """
  if limit:
    dataset = dataset.take(limit)
  dataset = prefetched(dataset.map(
      lambda x, y: (resize(x, image_size), y),
      num_parallel_calls=tf.data.AUTOTUNE).batch(256))
  images, labels = [], []
  for x, y in dataset.as_numpy_iterator():
    images.append(x)
    labels.append(y)
  if not images:
    return (np.zeros((0, image_size, image_size, 3), np.uint8),
            np.zeros((0,), np.int32))
  return np.concatenate(images), np.concatenate(labels).astype(np.int32)
