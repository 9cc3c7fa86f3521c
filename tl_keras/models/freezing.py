"""Frozen layers run in inference mode, whatever the outer call says."""

import functools
import inspect

from tl_keras.data import inputs


def _layer_classes():
  """The layer classes whose frozen instances are made to stay in inference
  mode in saved files too: Dropout (keras.applications' dropout and
  stochastic depth, EfficientNet-Lite's drop-connect) and ConvNeXt's
  StochasticDepth."""
  import keras  # pylint: disable=g-import-not-at-top
  from keras.src.applications import convnext  # pylint: disable=g-import-not-at-top
  return (keras.layers.Dropout, convnext.StochasticDepth)


_GATED = {}


def gated_class(cls):
  """`cls` whose `call` runs in inference mode while the layer is frozen.

  A registered Keras serializable ("tl_keras>InferenceWhenFrozen<cls>"), so
  a saved `model.keras` keeps the behaviour: loaded (after `import
  tl_keras.models.applications`) and called with `training=True`, its frozen Dropout
  stays off. The constructor and config are `cls`'s own.
  """
  if getattr(cls, "_tl_keras_gated", False):
    return cls
  if cls not in _GATED:
    import keras  # pylint: disable=g-import-not-at-top
    name = f"InferenceWhenFrozen{cls.__name__}"

    @functools.wraps(cls.call)
    def call(self, *args, training=None, **kwargs):
      return cls.call(self, *args,
                      training=training if self.trainable else False,
                      **kwargs)
    _GATED[cls] = keras.saving.register_keras_serializable(
        package="tl_keras", name=name)(type(name, (cls,), {
            "call": call, "_tl_keras_gated": True,
            "__module__": __name__, "__doc__": cls.__doc__}))
  return _GATED[cls]


def register_gated_layers():
  """Registers the gated classes, so files that hold them load."""
  for cls in _layer_classes():
    gated_class(cls)


def inference_when_frozen(model):
  """Makes every frozen layer inside `model` run in inference mode.

  Keras gives frozen BatchNorm this behaviour; this extends it to every
  layer with a `training` argument (Dropout, stochastic depth, whole
  transformer blocks). It is needed because in Keras 3 an outer
  `model(x, training=True)` overrides the `training=False` a functional
  graph was built with: without it, Dropout inside a "frozen" EfficientNet
  or BERT keeps dropping units while the head trains, so the head learns on
  noisier features than the feature cache (and inference) computes.

  Layers that are trainable (the unfrozen top, in phase 2) follow the
  outer `training` as usual. Dropout and stochastic depth become their
  `gated_class`, which a saved `model.keras` keeps; other layers (KerasHub
  transformer blocks) are gated on these Python objects only.

  Returns:
    `model`.
  """
  classes = _layer_classes()
  for layer in model._flatten_layers(include_self=True):  # pylint: disable=protected-access
    if type(layer) in classes:
      layer.__class__ = gated_class(type(layer))
      continue
    if getattr(layer, "_tl_keras_inference_when_frozen", False) or getattr(
        layer, "_tl_keras_gated", False) or (
            "training" not in inspect.signature(layer.call).parameters):
      continue
    layer.call = _gated_call(layer, layer.call)
    layer._tl_keras_inference_when_frozen = True  # pylint: disable=protected-access
  return model


def _gated_call(layer, call):
  @functools.wraps(call)
  def gated(*args, training=None, **kwargs):
    return call(*args, training=training if layer.trainable else False,
                **kwargs)
  return gated


# Images whose batch statistics set BatchNorm's moving statistics.
CALIBRATION_IMAGES = 2048


def calibrate_from(model, dataset, image_size, batch_size):
  """`recalibrate_batchnorm` on the first `CALIBRATION_IMAGES` of a split.

  Returns:
    How many images were used.
  """
  images, _ = inputs.to_numpy(dataset, image_size, limit=CALIBRATION_IMAGES)
  recalibrate_batchnorm(model, images.astype("float32"), batch_size)
  return len(images)


def recalibrate_batchnorm(model, images, batch_size):
  """Sets the backbone's BatchNorm moving statistics from `images`.

  Before phase 2 trains BatchNorm (batch statistics), the head must be
  fitted on the features phase 2 will see. A randomly initialized backbone
  has moving statistics 0 and 1, so its inference-mode features are those
  of an unnormalized network, unlike anything training mode computes. Each
  BatchNorm's statistics become the average over `images` of the batch
  statistics it sees in training mode (with the layers below it already
  normalizing), which is what they converge to in training.

  Args:
    model: the classifier; only its BatchNorm layers change.
    images: float32 [N, S, S, 3] training images.
    batch_size: the batch size statistics are computed on.
  """
  from keras import layers  # pylint: disable=g-import-not-at-top
  every = list(model._flatten_layers(include_self=False))  # pylint: disable=protected-access
  norms = [l for l in every if isinstance(l, layers.BatchNormalization)]
  # Parents come before their children: restored in this order, a
  # parent's flag does not overwrite its children's.
  saved = [(l, l.trainable) for l in every]
  momentum = [l.momentum for l in norms]
  # Only BatchNorm (and the layers holding it) in training mode: Dropout
  # stays off. Each layer is set: Keras skips `x.trainable = True` when it
  # is already True, without passing it on to sublayers.
  for layer in every:
    layer.trainable = isinstance(layer, layers.BatchNormalization) or bool(
        layer._flatten_layers(include_self=False))  # pylint: disable=protected-access
  try:
    for i, start in enumerate(range(0, len(images), batch_size)):
      for layer in norms:  # a cumulative average: batch i weighs 1 / (i + 1)
        layer.momentum = i / (i + 1)
      model(images[start:start + batch_size], training=True)
  finally:
    for layer, trainable in saved:
      layer.trainable = trainable
    for layer, value in zip(norms, momentum):
      layer.momentum = value
