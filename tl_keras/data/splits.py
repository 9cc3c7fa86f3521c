"""`Splits`: what every dataset loader returns."""

import dataclasses

import tensorflow as tf


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
  # split name -> where each example came from, in the split's order (an
  # image file's path); empty when the examples have no file of their own.
  sources: dict = dataclasses.field(default_factory=dict)
  # Text: how the training texts fit the model's sequence length
  # (`text_data.measure_lengths`); empty for images.
  text_lengths: dict = dataclasses.field(default_factory=dict)

  @property
  def num_classes(self):
    return len(self.class_names)

  @property
  def multi_label(self):
    """Whether each label is a multi-hot int32 [C] row (--multi_label)
    rather than a class id."""
    return self.train.element_spec[1].shape.rank == 1
