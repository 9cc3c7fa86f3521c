"""Real data that installed packages ship: offline tasks no one here wrote.

    digits      images: scikit-learn's handwritten digits (1,797 scans from
                UCI's Optical Recognition of Handwritten Digits, 8x8, 17
                grey levels), upscaled to 32x32 RGB; 10 classes.
    docstrings  text: the docstrings of Python's own standard library,
                labelled by the top-level package they document (email,
                logging, xml, http, urllib); read with `ast`, nothing is
                imported.

Both are split per class, seeded, like a folder (`--validation_fraction`,
`--test_fraction`), so `--max_train_samples` gives the few-label regime
where transfer pays off.
"""

import ast
import collections
import os
import sysconfig

import numpy as np
import tensorflow as tf

from tl_keras.splits import Splits

IMAGE_TASKS = ("digits",)
TEXT_TASKS = ("docstrings",)
# The packages `docstrings` classifies, and the docstrings' minimum length.
DOCSTRING_PACKAGES = ("email", "logging", "xml", "http", "urllib")
MIN_WORDS = 5


def stratified_split(labels, validation_fraction, test_fraction, seed):
  """{split: indices} cut per class, in a seeded order."""
  rng = np.random.default_rng(seed)
  parts = {"train": [], "validation": [], "test": []}
  for c in np.unique(labels):
    members = rng.permutation(np.flatnonzero(labels == c))
    test = int(round(test_fraction * len(members)))
    validation = int(round(validation_fraction * len(members)))
    parts["test"] += list(members[:test])
    parts["validation"] += list(members[test:test + validation])
    parts["train"] += list(members[test + validation:])
  # Mixed across classes, so --max_train_samples keeps every class.
  return {k: rng.permutation(np.asarray(v, np.int64)) for k, v in
          parts.items()}


def _splits(examples, labels, class_names, name, validation_fraction,
            test_fraction, seed):
  labels = np.asarray(labels, np.int32)
  index = stratified_split(labels, validation_fraction, test_fraction, seed)
  out = {split: tf.data.Dataset.from_tensor_slices(
      (examples[i], labels[i])) for split, i in index.items()}
  return Splits(
      **out, sizes={k: len(v) for k, v in index.items()},
      class_names=list(class_names),
      notes=[f"{name}: {len(labels)} real examples shipped with an installed "
             f"package, split per class (seed {seed})"])


def digit_images(size=32):
  """(uint8 [1797, size, size, 3], labels [1797]) of scikit-learn's digits."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  from sklearn.datasets import load_digits  # pylint: disable=g-import-not-at-top
  digits = load_digits()
  images = np.stack([
      np.asarray(Image.fromarray((image * (255 / 16)).astype(np.uint8))
                 .resize((size, size), Image.BILINEAR))
      for image in digits.images])
  return np.repeat(images[..., None], 3, axis=-1), digits.target


def load_digits(validation_fraction=0.1, test_fraction=0.1, seed=0):
  images, labels = digit_images()
  return _splits(images, labels, [f"digit{c}" for c in range(10)], "digits",
                 validation_fraction, test_fraction, seed)


def docstrings(packages=DOCSTRING_PACKAGES):
  """{package: [docstring, ...]} of the standard library, whitespace
  collapsed; test folders and docstrings under `MIN_WORDS` words left out."""
  root = sysconfig.get_paths()["stdlib"]
  out = collections.defaultdict(list)
  for package in packages:
    for dirpath, dirs, files in os.walk(os.path.join(root, package)):
      dirs[:] = sorted(d for d in dirs if "test" not in d)
      for name in sorted(files):
        if not name.endswith(".py"):
          continue
        try:
          with open(os.path.join(dirpath, name), encoding="utf-8") as f:
            tree = ast.parse(f.read())
        except (SyntaxError, UnicodeDecodeError):
          continue
        for node in ast.walk(tree):
          if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef,
                               ast.ClassDef, ast.Module)):
            text = ast.get_docstring(node)
            if text and len(text.split()) >= MIN_WORDS:
              out[package].append(" ".join(text.split()))
  return out


def load_docstrings(validation_fraction=0.1, test_fraction=0.1, seed=0):
  texts = docstrings()
  examples = [t for p in DOCSTRING_PACKAGES for t in texts[p]]
  labels = [i for i, p in enumerate(DOCSTRING_PACKAGES) for _ in texts[p]]
  return _splits(np.asarray(examples, object), labels, DOCSTRING_PACKAGES,
                 "docstrings", validation_fraction, test_fraction, seed)
