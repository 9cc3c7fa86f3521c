"""Model families: what differs between kinds of backbone, behind one interface.

A family knows how to name, build, train and serve one kind of model:

    keras_apps  keras.applications image backbones (and convnet_small)
    hub_image   KerasHub image backbones from presets (ResNet-18, ...)
    hub_text    KerasHub text classifiers (BERT and its relatives)
    word_embedding  the average word-embedding text classifier (no
                pretrained weights)

Each is one module holding one `base.Family` subclass. The run, the recipe,
the export code and the predictors call the interface and never ask which
kind of model they hold: `find(name)` is the family of a --model name,
`of(model)` that of a classifier tl_keras built, and `serving_of(model)`
how its exports serve it. Adding a family is one
module and a row in `FAMILIES`.
"""

import os

from tl_keras.errors import UserError
from tl_keras.families import hub_image
from tl_keras.families import hub_text
from tl_keras.families import keras_apps
from tl_keras.families import word_embedding

# Asked in this order: the first that owns a name or a model is its family.
FAMILIES = (keras_apps.FAMILY, hub_image.FAMILY, word_embedding.FAMILY,
            hub_text.FAMILY)


def find(name):
  """The family of a --model name; UserError with close matches if none."""
  for family in FAMILIES:
    if family.owns(name):
      return family
  if os.sep in name or name.startswith(("~", ".")):
    raise UserError(f"--model={name}: no such preset folder; pass a folder "
                    "written by save_to_preset, or a model name from "
                    "--list_models")
  return keras_apps.FAMILY  # its check lists the names close to `name`


def for_data(kind):
  """A family that reads --dataset as `kind` ("image" or "text") data.

  For artifacts (a .tflite or SavedModel) whose family is not known, only
  what they take.
  """
  return next(f for f in FAMILIES if f.kind == kind)


def of(model):
  """The family of a classifier built by one of the families."""
  for family in FAMILIES:
    if family.built(model):
      return family
  raise ValueError(f"{model.name} was not built by a tl_keras family")


def serving_of(model, about=None):
  """The serving object of a classifier built by one of the families: what
  its exports take and give (`serving`).

  `about`: {"author", "license"} for the files' standard metadata.
  """
  return of(model).serving(model, about=about)
