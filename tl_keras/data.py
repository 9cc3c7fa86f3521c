"""Datasets: TFDS by name, a folder of images, or an embedded synthetic task.

Every loader returns `Splits`: unbatched `tf.data` datasets of
(uint8 image [H, W, 3], int32 label) with their sizes and class names. The
images keep their own sizes; `input_fn` resizes, caches, augments and batches
them for whichever distribution strategy runs the loop.
"""

import dataclasses
import logging

import numpy as np
import tensorflow as tf

from tl_keras import downloads
from tl_keras import folders
from tl_keras import synthetic
from tl_keras.errors import UserError, unknown_name

# Decoded, resized uint8 images are cached in memory below this size.
CACHE_LIMIT_BYTES = 2 << 30


@dataclasses.dataclass
class Splits:
  """A dataset ready for training: three splits and what they hold."""
  train: tf.data.Dataset
  validation: tf.data.Dataset
  test: tf.data.Dataset
  sizes: dict  # split name -> number of examples
  class_names: list
  notes: list = dataclasses.field(default_factory=list)  # said in the log
  skipped: list = dataclasses.field(default_factory=list)  # bad image files

  @property
  def num_classes(self):
    return len(self.class_names)


def load(dataset, *, data_dir="", validation_fraction=0.1, test_fraction=0.1,
         max_train_samples=0, seed=0, skip_bad_images=False):
  """Loads a dataset by the name given to --dataset.

  Args:
    dataset: "folder", a key of `synthetic.TASKS`, or a TFDS name.
    data_dir: the image folder, or TFDS's data directory.
    validation_fraction: share of train held out when there is no
      validation split.
    test_fraction: share of a folder held out for testing.
    max_train_samples: keep only this many training examples (0 = all).
    seed: seed for splits and ordering.
    skip_bad_images: a folder's undecodable images are skipped (and
      counted) instead of stopping the run.

  Returns:
    `Splits`.
  """
  if dataset == "folder":
    splits = folders.load_folder(data_dir, validation_fraction=validation_fraction,
                         test_fraction=test_fraction, seed=seed,
                         skip_bad_images=skip_bad_images)
  elif dataset in synthetic.TASKS:
    splits = load_synthetic(dataset, seed=seed)
  else:
    splits = load_tfds(dataset, data_dir=data_dir,
                       validation_fraction=validation_fraction)
  return limited(splits, dataset, max_train_samples)


def limited(splits, dataset, max_train_samples=0):
  """Applies --max_train_samples and refuses empty splits."""
  if max_train_samples and max_train_samples < splits.sizes["train"]:
    splits.train = splits.train.take(max_train_samples)
    splits.sizes["train"] = max_train_samples
    splits.notes.append(f"training on the first {max_train_samples} examples "
                        "(--max_train_samples)")
  for name, size in splits.sizes.items():
    if size == 0:
      raise UserError(f"the {name} split of --dataset={dataset} is empty")
  return splits


def load_synthetic(task_name, seed=0):
  """An embedded task from `synthetic`, generated in memory."""
  task = synthetic.TASKS[task_name]
  out, sizes = {}, {}
  for split in ("train", "validation", "test"):
    images, labels = synthetic.load(task_name, split, seed=seed)
    # Generated class by class; shuffle once so --max_train_samples and
    # small shuffle buffers see every class.
    order = np.random.default_rng([seed, 7]).permutation(len(labels))
    out[split] = tf.data.Dataset.from_tensor_slices(
        (images[order], labels[order]))
    sizes[split] = len(labels)
  return Splits(**out, sizes=sizes, class_names=list(task.classes),
                notes=[f"embedded task {task_name!r}, seed {seed}"])


def tfds_module():
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  return tfds


def classification_features(info, feature_type):
  """The input keys (of `feature_type`) and the label key of a TFDS dataset.

  The supervised keys win when they fit; the label key is None when there
  is no ClassLabel feature.
  """
  tfds = tfds_module()
  features = info.features
  if info.supervised_keys and len(info.supervised_keys) == 2:
    input_key, label_key = info.supervised_keys
    if isinstance(features[input_key], feature_type) and isinstance(
        features[label_key], tfds.features.ClassLabel):
      return [input_key], label_key
  inputs = [k for k, f in features.items() if isinstance(f, feature_type)]
  labels = [k for k, f in features.items()
            if isinstance(f, tfds.features.ClassLabel)]
  return inputs, ("label" if "label" in labels else
                  labels[0] if labels else None)


def _find_features(info):
  """(image key, label key) of a TFDS image-classification dataset."""
  images, label = classification_features(info, tfds_module().features.Image)
  if not images or not label:
    raise UserError(f"--dataset={info.name} is not an image-classification "
                    "dataset (needs an Image and a ClassLabel feature)")
  return images[0], label


def open_tfds(name, data_dir, find_features, other_names):
  """A prepared TFDS builder, and `find_features(info)` checked before that.

  Raises:
    UserError: an unknown name (with close matches among the local TFDS
      names and `other_names`), the wrong kind of dataset, or a failed
      download.
  """
  tfds = tfds_module()
  try:
    builder = tfds.builder(name, data_dir=data_dir or None)
  except tfds.core.registered.DatasetNotFoundError as e:
    # Local names only: the community index is fetched over the network.
    known = tfds.list_builders(with_community_datasets=False)
    raise unknown_name("dataset", name, known + list(other_names),
                       "dataset") from e
  keys = find_features(builder.info)
  if not builder.is_prepared():
    downloads.check_online(
        f"TFDS dataset {name!r}", "prepare it on a machine that has a "
        "network and pass its TFDS directory as --data_dir")
  try:
    builder.download_and_prepare()
  except Exception as e:  # Network errors come in many types from many libs.
    raise UserError(
        f"could not download or prepare TFDS dataset {name!r} "
        f"({type(e).__name__}: {str(e).splitlines()[0][:120] if str(e) else ''}"
        "); if this machine is offline, prepare it elsewhere and pass its "
        "directory as --data_dir") from e
  return builder, keys


def load_tfds(name, *, data_dir="", validation_fraction=0.1):
  """Any TFDS image-classification dataset by name.

  Uses its train/validation/test splits (see `choose_splits`); each
  substitution is in `notes`.
  """
  builder, (image_key, label_key) = open_tfds(
      name, data_dir, _find_features, ["folder", *synthetic.TASKS])
  info = builder.info
  specs, notes = choose_splits(name, set(info.splits.keys()),
                                validation_fraction)
  out, sizes = {}, {}
  for split, spec in specs.items():
    ds = builder.as_dataset(split=spec, shuffle_files=False)
    out[split] = ds.map(
        lambda ex: (_as_rgb(ex[image_key]), tf.cast(ex[label_key], tf.int32)),
        num_parallel_calls=tf.data.AUTOTUNE)
    cardinality = int(ds.cardinality())
    sizes[split] = (cardinality if cardinality >= 0
                    else int(info.splits[spec].num_examples))
  logging.info("TFDS %s: image feature %r, label feature %r", name, image_key,
               label_key)
  return Splits(**out, sizes=sizes,
                class_names=list(info.features[label_key].names), notes=notes)


def choose_splits(name, available, validation_fraction):
  """Maps train/validation/test to TFDS split specs, with notes.

  A missing validation split is cut from the end of train; a missing test
  split is replaced by validation (and validation is then cut from train).
  """
  notes = []
  if not available:
    # Metadata without split names (e.g. under tfds.testing.mock_data).
    available = {"train", "test"}
    notes.append(f"{name}: no split names in its metadata; assuming train "
                 "and test")
  if "train" not in available:
    raise UserError(f"--dataset={name} has no train split "
                    f"(it has: {', '.join(sorted(available))})")
  keep = round(100 * (1 - validation_fraction))
  specs = {"train": "train"}
  val_name = next((s for s in ("validation", "val") if s in available), None)
  if "test" in available:
    specs["test"] = "test"
  elif val_name:
    specs["test"] = val_name
    notes.append(f"{name} has no test split: testing on {val_name!r}")
    val_name = None
  if val_name:
    specs["validation"] = val_name
  else:
    specs["train"] = f"train[:{keep}%]"
    specs["validation"] = f"train[{keep}%:]"
    notes.append(f"{name} has no validation split: using the last "
                 f"{100 - keep}% of train")
  return specs, notes


def _as_rgb(image):
  """TFDS images may be grayscale [H, W, 1]: expand to 3 channels."""
  image = tf.convert_to_tensor(image)
  if image.shape.rank == 3 and image.shape[-1] == 1:
    image = tf.image.grayscale_to_rgb(image)
  elif image.shape.rank == 3 and image.shape[-1] == 4:
    image = image[..., :3]
  return tf.ensure_shape(tf.cast(image, tf.uint8), [None, None, 3])


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
      same number of steps, and callers mask label -1 out.
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
      filler = dataset.map(lambda x, y: (x, tf.constant(-1, tf.int32)))
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
