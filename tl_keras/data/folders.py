"""Image folders: one subfolder per class, scanned, checked and split.

Grayscale, RGBA, CMYK and 16-bit images become RGB; photos are turned upright
by their EXIF orientation; hidden files, other file types and nested folders
are ignored. Every image is decoded once, before training, so a bad file
stops the run with a list of the bad files (or is skipped with
`skip_bad_images`).
"""

import concurrent.futures
import os
import re

import numpy as np
from PIL import Image
import tensorflow as tf

from tl_keras.data.splits import Splits
from tl_keras.errors import UserError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif")


def scan_folder(path):
  """Lists a class-per-subfolder image tree.

  Returns:
    (class_names, files) with files[i] the sorted image paths of class i.
  """
  if not path or not os.path.isdir(path):
    raise UserError(f"--data_dir={path!r} is not a folder; point it at a "
                    "folder with one subfolder of images per class")
  class_names = sorted(
      d for d in os.listdir(path)
      if not d.startswith(".") and os.path.isdir(os.path.join(path, d)))
  if not class_names:
    raise UserError(f"{path} has no class subfolders; put each class's "
                    "images in a subfolder named after the class")
  if len(class_names) < 2:
    raise UserError(f"{path} has only one class ({class_names[0]!r}); a "
                    "classifier needs at least two class subfolders")
  files = []
  for name in class_names:
    folder = os.path.join(path, name)
    images = sorted(
        os.path.join(folder, f) for f in os.listdir(folder)
        if not f.startswith(".") and f.lower().endswith(IMAGE_EXTENSIONS)
        and os.path.isfile(os.path.join(folder, f)))
    if not images:
      raise UserError(f"class folder {folder} has no images "
                      f"({', '.join(IMAGE_EXTENSIONS)}); add some or remove it")
    files.append(images)
  return class_names, files


# When --data_dir is already split: the folders that hold each split.
SPLIT_FOLDERS = {"train": ("train",), "validation": ("validation", "val"),
                 "test": ("test",)}


def split_folders(path):
  """{split: folder} when `path` holds train/ (and validation/ or val/, and
  test/) folders of class subfolders; None when it holds the classes."""
  if not path or not os.path.isdir(path):
    return None
  names = {d for d in os.listdir(path)
           if not d.startswith(".") and os.path.isdir(os.path.join(path, d))}
  known = {n for aliases in SPLIT_FOLDERS.values() for n in aliases}
  if "train" not in names or not names <= known:
    return None
  out = {}
  for split, aliases in SPLIT_FOLDERS.items():
    found = [a for a in aliases if a in names]
    if len(found) > 1:
      raise UserError(f"{path} has both {found[0]}/ and {found[1]}/ for the "
                      f"{split} split; keep one")
    if found:
      out[split] = os.path.join(path, found[0])
  return out


def _given_splits(path, folders, class_names):
  """{split: [(file, label)]} of the split folders besides train/."""
  given = {}
  for split in ("validation", "test"):
    if split not in folders:
      continue
    names, files = scan_folder(folders[split])
    unknown = sorted(set(names) - set(class_names))
    if unknown:
      raise UserError(
          f"{folders[split]} has class folder(s) {', '.join(unknown)} that "
          f"{folders['train']} has not; every class of a split must be a "
          "class of train/")
    given[split] = [(f, class_names.index(name))
                    for name, images in zip(names, files) for f in images]
  return given


def load_folder(path, *, validation_fraction=0.1, test_fraction=0.1, seed=0,
                skip_bad_images=False):
  """Class-per-subfolder images, split per class (stratified, seeded).

  `path` holds one subfolder per class, or train/ (and validation/ or val/,
  and test/) folders that each hold one: those splits are used as they are,
  and a missing validation or test split is cut from train/ per class.
  Images are checked as `from_files` says.
  """
  folders = split_folders(path)
  class_names, files = scan_folder(folders["train"] if folders else path)
  given = _given_splits(path, folders, class_names) if folders else {}
  fractions = {"validation": None if "validation" in given
               else validation_fraction,
               "test": None if "test" in given else test_fraction}
  return from_files(class_names, files, given, fractions, where=path,
                    note=_split_note(path, folders, given, fractions),
                    seed=seed, skip_bad_images=skip_bad_images)


def from_files(class_names, files, given, fractions, *, where, note, seed=0,
               skip_bad_images=False):
  """`Splits` of image files.

  Args:
    class_names: C names.
    files: per class, its training image paths (validation and test are cut
      from them per class by `fractions`, seeded).
    given: {split: [(path, label)]} of the splits given as they are.
    fractions: {"validation", "test"}: the share of each class cut from
      `files` for that split (at least one example), or None when it is
      given.
    where: the folder or file named in errors.
    note: what the log says about the split.
    seed: the cut and the order.
    skip_bad_images: undecodable (or missing) files are left out and
      counted in `Splits.skipped`, instead of stopping the run.

  Every file is decoded once up front (`check_images`): a bad one stops
  the run with the list of bad files. EXIF orientation is applied.
  """
  checked = check_images([f for images in files for f in images] +
                         [f for pairs in given.values() for f, _ in pairs])
  bad = {f: reason for f, (reason, _) in checked.items() if reason}
  if bad and not skip_bad_images:
    listing = "; ".join(f"{f} ({bad[f]})" for f in sorted(bad)[:10])
    more = f" and {len(bad) - 10} more" if len(bad) > 10 else ""
    raise UserError(f"{len(bad)} image(s) in {where} cannot be decoded: "
                    f"{listing}{more}; fix or remove them, or pass "
                    "--skip_bad_images")
  notes = [note]
  if bad:
    notes.append(f"skipped {len(bad)} image(s) that cannot be decoded "
                 "(--skip_bad_images)")
    files = [[f for f in images if f not in bad] for images in files]
    given = {k: [(f, l) for f, l in v if f not in bad]
             for k, v in given.items()}
  parts = _cut(files, class_names, fractions, seed)
  parts.update(given)
  out, sizes, sources = {}, {}, {}
  for split, pairs in parts.items():
    # Mix classes so shuffle buffers and --max_train_samples see all.
    pairs = [pairs[i] for i in np.random.default_rng(seed).permutation(
        len(pairs))]
    sources[split] = [p for p, _ in pairs]
    paths = tf.constant([p for p, _ in pairs], tf.string)
    labels = tf.constant([l for _, l in pairs], tf.int32)
    orientations = tf.constant([checked[p][1] for p, _ in pairs], tf.int32)
    out[split] = tf.data.Dataset.from_tensor_slices(
        (paths, orientations, labels)).map(
            lambda p, o, l: (apply_orientation(
                decode_image(tf.io.read_file(p)), o), l),
            num_parallel_calls=tf.data.AUTOTUNE)
    sizes[split] = len(pairs)
  return Splits(**out, sizes=sizes, class_names=class_names, notes=notes,
                skipped=sorted(bad), sources=sources)


def _split_note(path, folders, given, fractions):
  if not folders:
    return (f"folder {path}: split per class "
            f"{1 - fractions['validation'] - fractions['test']:.0%}"
            f"/{fractions['validation']:.0%}/{fractions['test']:.0%} "
            "(train/validation/test)")
  cut = [f"{split} {fraction:.0%} of train/ per class"
         for split, fraction in fractions.items() if fraction is not None]
  return (f"folder {path}: the splits of its "
          f"{', '.join(os.path.basename(folders[k]) + '/' for k in folders)}"
          f" folders{'; ' + ', '.join(cut) if cut else ''}")


def _cut(files, class_names, fractions, seed):
  """{split: [(file, label)]}: each class's files cut into train and the
  splits with a fraction (at least one file each), in a seeded order."""
  parts = {"train": [], "validation": [], "test": []}
  needed = 1 + sum(1 for f in fractions.values() if f is not None)
  for label, images in enumerate(files):
    if len(images) < needed:
      raise UserError(
          f"class {class_names[label]!r} has {len(images)} usable training "
          f"image(s); each class needs at least {needed} (one for train and "
          "one for each split cut from it)")
    order = np.random.default_rng([seed, label]).permutation(len(images))
    shuffled = [images[i] for i in order]
    n_test, n_val = (0 if fractions[k] is None else
                     max(1, round(len(images) * fractions[k]))
                     for k in ("test", "validation"))
    parts["test"] += [(f, label) for f in shuffled[:n_test]]
    parts["validation"] += [(f, label) for f in shuffled[n_test:n_test + n_val]]
    parts["train"] += [(f, label) for f in shuffled[n_test + n_val:]]
  return parts


def check_images(paths, workers=8):
  """Decodes every file once, in parallel, with the decoder training uses.

  Returns:
    {path: (reason, orientation)}: reason is "" for a good image, else why
    it failed; orientation is its EXIF orientation tag (1 = upright).
  """
  def check(path):
    try:
      contents = tf.io.read_file(path)
      if int(tf.strings.length(contents)) == 0:
        return path, ("empty file", 1)
      decode_image(contents)
    except tf.errors.OpError as e:
      reason = (e.message or type(e).__name__).strip().splitlines()[0]
      return path, (re.sub(r"\{\{.*?\}\}|\[Op:.*", "", reason).strip()[:80]
                    or "cannot decode", 1)
    return path, ("", exif_orientation(path))

  with concurrent.futures.ThreadPoolExecutor(workers) as pool:
    return dict(pool.map(check, paths))


def exif_orientation(path):
  """The EXIF orientation tag (1..8) of an image file; 1 when absent."""
  try:
    with Image.open(path) as image:
      value = int(image.getexif().get(_EXIF_ORIENTATION, 1))
  except (OSError, ValueError, SyntaxError):
    return 1
  return value if 1 <= value <= 8 else 1


_EXIF_ORIENTATION = 0x0112


def apply_orientation(image, orientation):
  """Turns a decoded image upright by its EXIF orientation tag (1..8)."""
  def rot(k):
    return lambda: tf.image.rot90(image, k)
  branches = [
      lambda: image,  # 1: upright
      lambda: tf.image.flip_left_right(image),  # 2: mirrored
      rot(2),  # 3: upside down
      lambda: tf.image.flip_up_down(image),  # 4: mirrored vertically
      lambda: tf.image.transpose(image),  # 5: mirrored, turned 90 left
      rot(3),  # 6: turned 90 right to be upright
      lambda: tf.image.rot90(tf.image.transpose(image), 2),  # 7: transverse
      rot(1),  # 8: turned 90 left to be upright
  ]
  index = tf.clip_by_value(orientation, 1, 8) - 1
  return tf.ensure_shape(tf.switch_case(index, branches), [None, None, 3])


def decode_image(contents):
  """JPEG/PNG/BMP/GIF bytes -> uint8 RGB [H, W, 3].

  Grayscale is expanded and alpha dropped (channels=3); 16-bit PNG is scaled
  to 8 bits; a GIF gives its first frame.
  """
  image = tf.io.decode_image(contents, channels=3, dtype=tf.uint8,
                             expand_animations=False)
  image.set_shape([None, None, 3])
  return image
