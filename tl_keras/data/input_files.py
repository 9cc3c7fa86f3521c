"""Reading --inputs: image files, .csv columns, texts and .txt files."""

import csv
import os
import re

import numpy as np
import tensorflow as tf

from tl_keras.data import folders
from tl_keras.data import inputs as inputs_lib
from tl_keras.errors import UserError


def read_images(paths, image_size):
  """Image files -> uint8 [N, S, S, 3]; UserError naming an unreadable one."""
  out = []
  for path in paths:
    if not os.path.isfile(path):
      raise UserError(f"--inputs: {path} is not a file")
    try:
      image = folders.decode_image(tf.io.read_file(path))
    except tf.errors.InvalidArgumentError as e:
      reason = re.sub(r"\{\{.*?\}\}", "", e.message or "").strip()
      raise UserError(f"--inputs: cannot decode {path} as an image "
                      f"({reason.splitlines()[0][:100] if reason else 'bad data'}"
                      "); pass JPEG, PNG, BMP or GIF files") from e
    image = folders.apply_orientation(image, folders.exif_orientation(path))
    out.append(inputs_lib.resize(image, image_size).numpy())
  return np.stack(out)


def read_column(path, column):
  """The non-empty values of one column of a .csv file."""
  if not os.path.isfile(path):
    raise UserError(f"--inputs: {path} is not a file")
  with open(path, encoding="utf-8", newline="") as f:
    reader = csv.DictReader(f)
    if column not in (reader.fieldnames or []):
      raise UserError(f"--inputs: {path} has no column {column!r} (its "
                      f"columns: {', '.join(reader.fieldnames or [])}); name "
                      "it with --image_column or --text_column")
    values = [row[column].strip() for row in reader if row[column].strip()]
  if not values:
    raise UserError(f"--inputs: the {column!r} column of {path} is empty")
  return values


def read_texts(inputs, text_column="text"):
  """--inputs for a text model: each a .txt file (one text per line), a
  .csv file (its `text_column`) or a text.

  Returns:
    (names, texts): what each result is printed under, and the texts.
  """
  names, texts = [], []
  for item in inputs:
    if item.lower().endswith(".csv") and os.path.isfile(item):
      lines = read_column(item, text_column)
      names += [f"{item}:{i + 2}" for i in range(len(lines))]
      texts += lines
    elif os.path.isfile(item):
      with open(item, encoding="utf-8") as f:
        lines = [l.strip() for l in f if l.strip()]
      if not lines:
        raise UserError(f"--inputs: {item} has no text; put one text per "
                        "line")
      names += [f"{item}:{i + 1}" for i in range(len(lines))]
      texts += lines
    else:
      names.append(repr(item[:60]))
      texts.append(item)
  return names, texts
