"""TensorBoard summaries: scalars, images, text, hyperparameters, profiles."""

import logging
import os

import tensorflow as tf


class Summaries:
  """TensorBoard writers for train and validation; no-ops when disabled."""

  def __init__(self, logdir=None, profile_steps=None, every_steps=10):
    self.logdir = f"{logdir}/train" if logdir else None
    self.every_steps = every_steps  # training scalars every N steps
    # (first, last) global steps to trace with the TF profiler, or None.
    self.profile_steps = profile_steps if logdir else None
    self._profiling = False
    self.train = tf.summary.create_file_writer(f"{logdir}/train") if logdir else None
    self.validation = (tf.summary.create_file_writer(f"{logdir}/validation")
                       if logdir else None)

  def scalars(self, which, step, values):
    writer = getattr(self, which)
    if writer is None:
      return
    with writer.as_default(step=step):
      for name, value in values.items():
        tf.summary.scalar(name, value)

  def profile(self, step):
    """Starts or stops the TF profiler around the --profile_steps range."""
    if not self.profile_steps:
      return
    first, last = self.profile_steps
    if step == first and not self._profiling:
      tf.profiler.experimental.start(os.path.dirname(self.logdir))
      self._profiling = True
    elif step >= last and self._profiling:
      tf.profiler.experimental.stop()
      self._profiling = False
      logging.info("profiled steps %d-%d: open TensorBoard's Profile tab",
                   first, last)

  @property
  def enabled(self):
    return self.train is not None

  def png(self, which, name, png, step):
    """A PNG image (bytes) on the `which` writer."""
    writer = getattr(self, which)
    if writer is None:
      return
    image = tf.io.decode_png(png, channels=3)[None]
    with writer.as_default(step=step):
      tf.summary.image(name, image)

  def hparams(self, values, metrics):
    """The HParams dashboard row: run settings and final metrics."""
    if self.train is None:
      return
    from tensorboard.plugins.hparams import api as hp  # pylint: disable=g-import-not-at-top
    writer = tf.summary.create_file_writer(
        os.path.join(os.path.dirname(self.logdir), "hparams"))
    with writer.as_default(step=0):
      hp.hparams(values)
      for name, value in metrics.items():
        tf.summary.scalar(name, value)
    writer.flush()

  def text(self, name, text, step=0):
    if self.train is not None:
      with self.train.as_default(step=step):
        tf.summary.text(name, text)

  def flush(self):
    for writer in (self.train, self.validation):
      if writer is not None:
        writer.flush()


def image_summaries(summaries, model, val, sample, class_names, step):
  """Confusion matrix and captioned validation images, for TensorBoard
  (not for multi-label metrics, which have neither a confusion matrix nor
  one class to caption)."""
  if not summaries.enabled or val.get("multi_label"):
    return
  from tl_keras.reporting import plots  # pylint: disable=g-import-not-at-top
  summaries.png("validation", "confusion_matrix",
                plots.confusion_matrix_quick_png(val["confusion_matrix"],
                                                  class_names), step)
  images, labels = sample if sample is not None else ((), ())
  if len(images):
    predicted = model(tf.cast(images, tf.float32), training=False).numpy()
    summaries.png("validation", "predictions", plots.prediction_grid_png(
        images, labels, predicted.argmax(-1), class_names), step)
