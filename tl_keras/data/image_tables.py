"""Images listed in a table: --dataset=csv (or tsv, jsonl) with
--image_column naming each row's image file and --label_column its class.

Paths are relative to the table's own folder (absolute ones and ~ work
too). The table is one file, split per class by the fractions, or a folder
with train.csv and optionally validation.csv (val, dev) and test.csv, as
for texts (`text_data.split_files`). The images then go through what an
image folder's do (`folders.from_files`): each decoded once up front, and
a missing or broken file stops the run with its name, or is skipped with
--skip_bad_images.
"""

import logging
import os

from tl_keras.data import folders
from tl_keras.data import text_data


def load(path, fmt, *, image_column="path", label_column="label",
         validation_fraction=0.1, test_fraction=0.1, seed=0,
         skip_bad_images=False, multi_label=False):
  """`Splits` of the images a CSV/TSV/JSONL table (or a folder of them)
  lists; see the module docstring. `multi_label`: each label cell holds
  any number of labels separated by '|' (`text_data.label_sets`), the
  labels are multi-hot rows, and missing splits are cut at random."""
  files = text_data.split_files(path, fmt)
  rows = {}
  for split, table in files.items():
    names, labels = text_data.read_table(table, fmt, image_column,
                                         label_column, "image_column",
                                         multi_label=multi_label)
    root = os.path.dirname(os.path.abspath(table))
    rows[split] = [(os.path.normpath(os.path.join(
        root, os.path.expanduser(name.strip()))), label)
                   for name, label in zip(names, labels)]
  if multi_label:
    return _multi_label(path, fmt, files, rows, image_column, label_column,
                        validation_fraction, test_fraction, seed,
                        skip_bad_images)
  class_names = text_data.class_names_of([l for _, l in rows["train"]])
  index = {name: i for i, name in enumerate(class_names)}
  for split, pairs in rows.items():
    text_data.check_seen([l for _, l in pairs], index, files[split])
  train = [[] for _ in class_names]
  for image, label in rows["train"]:
    train[index[label]].append(image)
  given = {split: [(image, index[label]) for image, label in pairs]
           for split, pairs in rows.items() if split != "train"}
  fractions = {"validation": None if "validation" in given
               else validation_fraction,
               "test": None if "test" in given else test_fraction}
  cut = ", ".join(f"{split} {fraction:.0%} of train per class"
                  for split, fraction in fractions.items()
                  if fraction is not None)
  logging.info("%s table: image column %r, label column %r, %d classes",
               fmt, image_column, label_column, len(class_names))
  return folders.from_files(
      class_names, train, given, fractions, where=path,
      note=(f"images listed in {', '.join(files.values())}"
            f"{'; ' + cut if cut else ''}"),
      seed=seed, skip_bad_images=skip_bad_images)


def _multi_label(path, fmt, files, rows, image_column, label_column,
                 validation_fraction, test_fraction, seed, skip_bad_images):
  """`load` for multi-hot labels: a class cannot be cut per class, so the
  splits a table lacks are cut from train at random (as for texts)."""
  tables = {split: ([p for p, _ in pairs], [l for _, l in pairs])
            for split, pairs in rows.items()}
  notes = text_data.hold_out(tables, {"test": test_fraction,
                                      "validation": validation_fraction},
                             seed)
  class_names, labels = text_data.encode_labels(
      {split: cells for split, (_, cells) in tables.items()}, True)
  given = {split: list(zip(images, labels[split].tolist()))
           for split, (images, _) in tables.items()}
  logging.info("%s table: image column %r, label column %r, %d labels "
               "(several per image)", fmt, image_column, label_column,
               len(class_names))
  return folders.from_files(
      class_names, [], given, {"validation": None, "test": None}, where=path,
      note="; ".join([f"images listed in {', '.join(files.values())}"] +
                     notes), seed=seed, skip_bad_images=skip_bad_images)
