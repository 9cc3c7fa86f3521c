"""Shared fixtures: tiny image folders and isolated caches.

The suite runs the same on any machine: on the CPU (a GPU host would
change float precision and what XLA compiles), with Keras's and TFDS's
caches in a folder of its own (weights or datasets that a machine cached
in ~/.keras or ~/tensorflow_datasets would turn offline cases online).
These are set before anything imports TensorFlow, Keras or TFDS, and
the subprocesses the tests start inherit them.
"""

import atexit
import os
import shutil
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ["CUDA_VISIBLE_DEVICES"] = "-1"
_CACHES = tempfile.mkdtemp(prefix="tl_keras-test-caches-")
atexit.register(shutil.rmtree, _CACHES, ignore_errors=True)
os.environ["KERAS_HOME"] = os.path.join(_CACHES, "keras")
os.environ["TFDS_DATA_DIR"] = os.path.join(_CACHES, "tensorflow_datasets")

import numpy as np  # pylint: disable=g-import-not-at-top
import pytest  # pylint: disable=g-import-not-at-top
from PIL import Image  # pylint: disable=g-import-not-at-top

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
  """Pretrained-weights cache per test session, never ~/.keras."""
  monkeypatch.setenv("TL_KERAS_CACHE",
                     str(tmp_path_factory.getbasetemp() / "weights_cache"))


def write_image_folder(root, per_class=6, size=20, classes=("cats", "dogs"),
                       modes=("RGB",), fmt="png"):
  """Writes class subfolders of small images; class i is brighter than i-1.

  Returns:
    root as a str.
  """
  rng = np.random.default_rng(0)
  for label, name in enumerate(classes):
    folder = os.path.join(root, name)
    os.makedirs(folder, exist_ok=True)
    for i in range(per_class):
      mode = modes[i % len(modes)]
      value = 40 + 150 * label + rng.integers(0, 40)
      pixels = np.full((size, size + i, 3), value, dtype=np.uint8)
      image = Image.fromarray(pixels).convert(mode)
      ext = fmt if mode != "RGBA" or fmt in ("png", "gif") else "png"
      image.save(os.path.join(folder, f"{i}.{ext}"))
  return str(root)
