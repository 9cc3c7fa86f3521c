"""Reading a trained `model.keras` back, safely."""

import warnings

import keras

from tl_keras.errors import UserError
from tl_keras.models import applications  # noqa: F401  pylint: disable=unused-import  # registers the gated layers
from tl_keras.models import text_models


def load_keras(path):
  """Loads a `.keras` file in safe mode: no arbitrary code is deserialized.

  Raises:
    UserError: the file holds code (a Lambda layer, an unknown custom
      object) or is not a readable Keras file.
  """
  import keras_hub  # noqa: F401  pylint: disable=g-import-not-at-top,unused-import  # registers BertTextClassifier
  text_models.pooled_classifier_class()  # registers PooledBertClassifier
  try:
    with warnings.catch_warnings():
      # KerasHub's task models compile themselves; Keras says it did not.
      warnings.filterwarnings("ignore", message=r"`compile\(\)` was not "
                              "called as part of model loading")
      return keras.saving.load_model(path, safe_mode=True)
  except Exception as e:  # A damaged or foreign file fails in many ways.
    text = " ".join(str(e).split())
    if "safe_mode" in text or "Lambda" in text or "Could not locate" in text:
      raise UserError(
          f"refusing to load {path}: it holds a Lambda layer or a custom "
          "object, and deserializing it could run arbitrary code (tl_keras "
          "loads models in safe mode only); rebuild the model from "
          "keras.applications layers, or load only its weights") from e
    raise UserError(f"cannot load {path} as a Keras model: {text[:200]}; "
                    "pass a .keras file saved by Keras 3") from e
