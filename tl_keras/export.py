"""Writing and reading the trained model's artifacts."""

import keras
import tensorflow as tf


def save_keras(model, path):
  """The native Keras format: reloads with `keras.saving.load_model`."""
  model.save(path)


def save_saved_model(model, path):
  """A SavedModel whose `serving_default` takes raw uint8 RGB batches.

  Input `images`: uint8 [N, H, W, 3], any H and W (the model resizes).
  Output `probabilities`: float32 [N, num_classes].
  """
  archive = keras.export.ExportArchive()
  archive.track(model)

  def serve(images):
    return {"probabilities": model(tf.cast(images, tf.float32),
                                   training=False)}

  archive.add_endpoint(
      name="serving_default", fn=serve,
      input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8,
                                     name="images")])
  archive.write_out(path, verbose=False)


def load_keras(path):
  """Loads a `.keras` file in safe mode: no arbitrary code is deserialized."""
  import tl_keras.models  # noqa: F401  pylint: disable=g-import-not-at-top,unused-import
  return keras.saving.load_model(path, safe_mode=True)
