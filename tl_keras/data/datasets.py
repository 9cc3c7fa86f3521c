"""Datasets: TFDS by name, a folder of images, or an embedded synthetic task.

Every loader returns `Splits`: unbatched `tf.data` datasets of
(uint8 image [H, W, 3], int32 label) with their sizes and class names. The
images keep their own sizes; `inputs.input_fn` resizes, caches, augments and
batches them for whichever distribution strategy runs the loop.
"""

import logging
import os

import numpy as np
import tensorflow as tf

from tl_keras.data import downloads
from tl_keras.data import folders
from tl_keras.data import real_data
from tl_keras.data import synthetic
from tl_keras.errors import UserError, unknown_name
from tl_keras.data.splits import Splits  # noqa: F401  (also as data.Splits)


def load(dataset, *, data_dir="", validation_fraction=0.1, test_fraction=0.1,
         max_train_samples=0, seed=0, skip_bad_images=False):
  """Loads a dataset by the name given to --dataset.

  Args:
    dataset: "folder", a key of `synthetic.TASKS`, one of
      `real_data.IMAGE_TASKS`, or a TFDS name.
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
  elif dataset in real_data.IMAGE_TASKS:
    splits = real_data.load_image_task(
        dataset, validation_fraction=validation_fraction,
        test_fraction=test_fraction, seed=seed)
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
  # Local names only: the community index is fetched over the network.
  known = tfds.list_builders(with_community_datasets=False)
  base = name.split(":")[0].split("/")[0]
  if base not in known:
    raise unknown_name("dataset", name, known + list(other_names), "dataset")
  folder = os.path.join(os.path.expanduser(data_dir or tfds.core.constants
                                           .DATA_DIR), name.split(":")[0])
  if not os.path.isdir(folder):
    # Never prepared here: building the builder would reach for TFDS's
    # bucket, so whether there is a network is asked first.
    downloads.check_online(
        f"TFDS dataset {name!r}", "prepare it on a machine that has a "
        "network and pass its TFDS directory as --data_dir")
  try:
    builder = tfds.builder(name, data_dir=data_dir or None)
  except tfds.core.registered.DatasetNotFoundError as e:
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
      name, data_dir, _find_features,
      ["folder", *synthetic.TASKS, *real_data.IMAGE_TASKS])
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
