"""keras.applications image backbones (`applications.REGISTRY`), and convnet_small.

--weights: imagenet (Keras downloads them), none, a weights file, or an
earlier run; synthetic (pretrained on the embedded source task) arrives as
the cached weights file `pretraining.resolved` gives.
"""

import os

import keras

from tl_keras.errors import UserError
import tl_keras.families.base as base_lib
import tl_keras.families.images as images
from tl_keras.models import applications


class KerasApplications(images.ImageFamily):
  """The registry of keras.applications backbones."""

  name = "keras_applications"

  def owns(self, name):
    return name in applications.REGISTRY

  def owns_base(self, base):
    # keras.applications builds plain functional models; KerasHub's
    # backbones are their own classes.
    return type(base) is keras.Model or type(base).__name__ == "Functional"

  def check(self, config):
    applications.get_backbone(config.model)  # UserError with close matches

  def image_size(self, config):
    return applications.resolve_image_size(config.model, config.image_size)

  def listing(self):
    rows = []
    for name in applications.REGISTRY:
      row = applications.describe(name)
      rows.append((f"image: {row['family']}", name, f"{row['image_size']}px",
                   row["base_parameters"], ""))
    return rows

  def build(self, config, num_classes, strategy, raw_splits=None):
    del raw_splits  # the weights do not depend on the data
    size = self.image_size(config)
    weights, source = resolve_weights(config)
    keras.utils.set_random_seed(config.seed)
    with strategy.scope():
      model = applications.build_classifier(
          config.model, num_classes, image_size=size, weights=weights,
          dropout=config.dropout, activation=base_lib.activation(config))
      if source:
        images.transfer_backbone(model, source)
    return model

  def describe(self, config, model):
    return applications.describe(config.model)


def resolve_weights(config):
  """Turns --weights into (constructor weights, .keras to transfer from).

  Returns:
    (weights, source): `weights` goes to the backbone constructor ("imagenet",
    None or a weights file); `source`, if not None, is a `.keras` classifier
    whose backbone weights are copied over after building.
  """
  spec = config.weights
  if spec == "imagenet":
    return "imagenet", None
  if spec == "none":
    return None, None
  if spec == "synthetic":
    raise ValueError("--weights=synthetic reaches a family as the cached "
                     "weights file: resolve it with pretraining.resolved")
  run = images.earlier_run(spec)
  if run:
    return None, run
  path = os.path.expanduser(spec)
  if not os.path.exists(path):
    raise UserError(f"--weights={spec}: no such file; use imagenet, none, "
                    "synthetic, a .keras/.weights.h5/.h5 file, or a run "
                    "directory")
  if path.endswith(".h5"):
    return path, None
  raise UserError(f"--weights={spec} is not a .keras, .weights.h5 or .h5 "
                  "file")


FAMILY = KerasApplications()
