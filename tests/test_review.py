"""The label review: suspect_labels.csv's rows line up with the examples."""

import os

import keras
import numpy as np

from tests.conftest import write_image_folder
from tl_keras import families
from tl_keras.data import folders
from tl_keras.models import applications
from tl_keras.modes import review


def test_each_suspect_names_its_own_file_and_label(tmp_path):
  root = write_image_folder(tmp_path / "photos", per_class=10,
                            classes=("ants", "bees", "cats"))
  splits = folders.load_folder(root, validation_fraction=0.3,
                               test_fraction=0.3, seed=2)
  keras.utils.set_random_seed(0)
  model = applications.build_classifier("convnet_small", 3, weights=None,
                                        image_size=32)
  family = families.of(model)
  rows = review.suspects(model, family, splits, splits, image_size=32,
                         batch_size=4)
  assert rows  # an untrained network gets most of them wrong
  for row in rows:
    # The file's folder is its class: the row's source and label agree.
    assert os.path.basename(os.path.dirname(row["example"])) == row["label"]
    assert row["predicted"] != row["label"]
  assert {r["split"] for r in rows} <= {"train", "validation", "test"}
  assert "train" in {r["split"] for r in rows}  # the training labels too
  pairs = review.confused_pairs(rows)
  assert sum(p["count"] for p in pairs) == len(rows)
  png = review.thumbnails_png(family, splits, rows, splits.class_names)
  assert png.startswith(b"\x89PNG")
  review.write_csv(str(tmp_path / "suspect_labels.csv"), rows)
  lines = (tmp_path / "suspect_labels.csv").read_text().splitlines()
  assert lines[0] == ",".join(review.COLUMNS) and len(lines) == len(rows) + 1
  assert np.all(np.diff([r["confidence"] for r in rows]) <= 0)
