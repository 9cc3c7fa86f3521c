"""KerasHub text classifiers: BERT and its relatives, from presets.

`--model` names a KerasHub text-classifier preset (BERT, DistilBERT,
RoBERTa, DeBERTaV3, ALBERT, XLM-RoBERTa, ELECTRA, F-Net; downloaded on
first use), a local preset directory (written by `save_to_preset`: works
offline), a Hugging Face BERT folder or a packaged pretrained model
(`hf_folders`: all_minilm_l6_v2), or `bert_micro`, a small BERT over the
embedded task's vocabulary that `--weights=synthetic` pretrains on the
embedded source task.

The classifier is the backbone's own `keras_hub.models.TextClassifier`
subclass (`BertTextClassifier`, `DistilBertTextClassifier`, ...) with its
preprocessor (tokenizer) attached, ending in a softmax, so it takes raw
strings through `predict` and token dicts through `__call__`.
"""

import logging
import os

import keras
import numpy as np
import tensorflow as tf

from tl_keras.data import text_data
from tl_keras.errors import unknown_name
from tl_keras.errors import UserError
from tl_keras.models import freezing
from tl_keras.models import hf_folders
from tl_keras.models import precision

# Tokens per text for the `OFFLINE` models when --sequence_length is 0: the
# embedded source sentences are short, and this many hold them all.
OFFLINE_SEQUENCE_LENGTH = 32
# Offline architectures: name -> BertBackbone arguments (the vocabulary is
# the embedded task's, see `micro_vocabulary`).
OFFLINE = {
    "bert_micro": dict(num_layers=2, num_heads=2, hidden_dim=64,
                       intermediate_dim=256, max_sequence_length=128),
}
SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


def _hub():
  import keras_hub  # pylint: disable=g-import-not-at-top
  return keras_hub


def presets():
  """KerasHub's text-classifier presets (a built-in table, no network)."""
  return sorted(_hub().models.TextClassifier.presets)


def listing():
  """(name, parameters, description) of each text model, for --list_models."""
  rows = [(name, None, "offline: --weights=synthetic or none")
          for name in OFFLINE]
  rows += [(name, None, f"pretrained, from the {package} package")
           for name, (package, *_) in hf_folders.PACKAGED.items()]
  for name, preset in sorted(_hub().models.TextClassifier.presets.items()):
    meta = preset.get("metadata", {})
    rows.append((name, meta.get("params"), meta.get("description", "")))
  return rows


def is_preset_dir(name):
  return os.path.isdir(os.path.expanduser(name)) and os.path.exists(
      os.path.join(os.path.expanduser(name), "config.json"))


def is_text_model(name):
  """Whether --model names a text model (else it is an image backbone)."""
  if name in OFFLINE or name in hf_folders.PACKAGED or is_preset_dir(name):
    return True
  if os.path.isdir(os.path.expanduser(name)):
    return True  # a folder that is not a preset: `check_model` says why
  return name.startswith(("bert", "hf://", "kaggle://")) or name in presets()


def check_model(name):
  """Raises UserError for an unknown preset or a folder that is no preset."""
  path = os.path.expanduser(name)
  if os.path.isdir(path):
    if not is_preset_dir(name):
      raise UserError(f"--model={name} is a folder without config.json, not a "
                      "KerasHub preset; write one with save_to_preset, or "
                      "pass the preset folder of an earlier text run")
    return
  if name in OFFLINE or name in hf_folders.PACKAGED or "://" in name:
    return
  if name not in presets():
    raise unknown_name("text model", name,
                       presets() + list(OFFLINE) + list(hf_folders.PACKAGED), "model")


def micro_vocabulary():
  """bert_micro's WordPiece vocabulary: the embedded words, then letters.

  Letters and ##letters let any other lowercase word tokenize to pieces.
  """
  content, fillers = text_data.words()
  letters = [chr(c) for c in range(ord("a"), ord("z") + 1)] + list(
      "0123456789")
  return (list(SPECIAL_TOKENS) + list(content.ravel()) + list(fillers)
          + letters + [f"##{c}" for c in letters])


def build_micro(name, sequence_length, dropout=0.1):
  """A randomly initialized offline BERT (backbone, preprocessor)."""
  hub = _hub()
  args = OFFLINE[name]
  if sequence_length > args["max_sequence_length"]:
    raise UserError(f"--sequence_length={sequence_length} exceeds {name}'s "
                    f"{args['max_sequence_length']} positions")
  tokenizer = hub.models.BertTokenizer(vocabulary=micro_vocabulary(),
                                       lowercase=True)
  backbone = hub.models.BertBackbone(
      vocabulary_size=tokenizer.vocabulary_size(), dropout=dropout, **args)
  return backbone, hub.models.BertTextClassifierPreprocessor(
      tokenizer, sequence_length=sequence_length)


def _from_preset(cls, name, **kwargs):
  """`cls.from_preset` with offline and damage errors made one line."""
  try:
    return cls.from_preset(name, **kwargs)
  except Exception as e:  # Hub, HTTP, and file errors come in many types.
    text = " ".join(str(e).split())[:160]
    if os.path.isdir(os.path.expanduser(name)):
      raise UserError(f"cannot load the preset folder --model={name} "
                      f"({type(e).__name__}: {text}); write it again with "
                      "save_to_preset") from e
    raise UserError(
        f"could not fetch the KerasHub preset {name!r} ({type(e).__name__}: "
        f"{text}); if this machine is offline, run save_to_preset on a "
        "machine that has it and pass that folder as --model") from e


def build_classifier(name, num_classes, *, sequence_length, weights,
                     dropout=0.1, frozen_base=True, activation="softmax"):
  """A `BertTextClassifier` (softmax output) with its preprocessor.

  Args:
    name: a preset name, a preset folder, or an `OFFLINE` architecture.
    num_classes: the size of the new classification layer.
    sequence_length: tokens per text, [CLS] and [SEP] included.
    weights: "pretrained" (the preset's), "none" (random init of the same
      architecture), or a preset folder whose backbone to start from.
    dropout: dropout before the classification layer.
    frozen_base: the backbone starts frozen (phase 1 of the recipe).
    activation: "softmax", or "sigmoid" for several labels per text.
  """
  hub = _hub()
  check_model(name)
  if name in OFFLINE:
    if weights == "pretrained":
      raise UserError(f"--model={name} has no published weights; use "
                      "--weights=synthetic (pretrained on the embedded "
                      "source task) or --weights=none")
    if weights == "none":
      backbone, preprocessor = build_micro(name, sequence_length)
      return _classifier(backbone, preprocessor, num_classes, dropout,
                         frozen_base, activation=activation)
  # A preset folder given as weights (an earlier run's, or a pretrained
  # folder of this architecture) is where the backbone starts from.
  source = hf_folders.resolve_source(name) if weights in ("pretrained", "none") else (
      weights)
  pooling = hf_folders.pooling_of(source)
  backbone = _from_preset(hub.models.Backbone, source,
                          load_weights=weights != "none")
  limit = backbone.max_sequence_length
  if sequence_length > limit:
    raise UserError(f"--sequence_length={sequence_length} exceeds the "
                    f"{limit} positions of --model={name}; use at most {limit}")
  preprocessor = _from_preset(hub.models.TextClassifierPreprocessor,
                              source, sequence_length=sequence_length)
  logging.info("text model %s (%s): %d transformer layers, hidden size %d, "
               "vocabulary %d, %s pooling", name, type(backbone).__name__,
               backbone.num_layers, backbone.hidden_dim,
               backbone.vocabulary_size, pooling)
  return _classifier(backbone, preprocessor, num_classes, dropout,
                     frozen_base, pooling, activation)


def positions(preprocessor, texts, batch_size=1000):
  """The positions each text takes whole: its tokens and the special
  tokens (e.g. [CLS] and [SEP]) the preprocessor adds around them."""
  specials = int(np.asarray(preprocessor([""])["padding_mask"]).sum())
  out = []
  for i in range(0, len(texts), batch_size):
    ids = preprocessor.tokenizer(tf.constant(texts[i:i + batch_size]))
    out += (list(ids.row_lengths().numpy()) if hasattr(ids, "row_lengths")
            else [len(row) for row in ids])
  return np.asarray(out, np.int64) + specials


def task_class(backbone):
  """The `TextClassifier` subclass KerasHub pairs with `backbone`'s class."""
  found, stack = None, [_hub().models.TextClassifier]
  while stack and not found:
    cls = stack.pop()
    # Its own pairing, not one inherited (`PooledBertClassifier`).
    if vars(cls).get("backbone_cls") is type(backbone):
      found = cls
    stack += cls.__subclasses__()
  if found is None:
    raise UserError(f"KerasHub has no text classifier for "
                    f"{type(backbone).__name__}; use a BERT, DistilBERT, "
                    "RoBERTa, DeBERTaV3, ALBERT, XLM-RoBERTa, ELECTRA or F-Net "
                    "preset")
  return found


def _classifier(backbone, preprocessor, num_classes, dropout, frozen_base,
                pooling="pooler", activation="softmax"):
  if pooling == "pooler":
    model = task_class(backbone)(
        backbone, num_classes, preprocessor=preprocessor,
        activation=activation, dropout=dropout)
  else:
    if not isinstance(backbone, _hub().models.BertBackbone):
      raise UserError(f"{pooling} pooling is offered for BERT checkpoints; "
                      f"this one is a {type(backbone).__name__}")
    model = pooled_classifier_class()(
        backbone, num_classes, preprocessor=preprocessor,
        activation=activation, dropout=dropout, pooling=pooling)
  backbone.trainable = not frozen_base
  if frozen_base:
    freezing.inference_when_frozen(backbone)
  return model


_POOLED = []


def pooled_classifier_class():
  """`PooledBertClassifier`, defined (and registered) on first use: KerasHub
  is imported only when a text model is."""
  if _POOLED:
    return _POOLED[0]
  hub = _hub()

  @keras.saving.register_keras_serializable(package="tl_keras")
  class PooledBertClassifier(hub.models.BertTextClassifier):
    """A BERT classifier over the mean (or [CLS]) of the token outputs.

    Sentence-transformers checkpoints (all-MiniLM-L6-v2) are trained to
    pool this way; their [CLS] pooler is an untrained leftover. Padding
    is left out of the mean. Otherwise `BertTextClassifier`: the same
    preprocessor, dropout and "logits" Dense layer.
    """

    def __init__(self, backbone, num_classes, preprocessor=None,
                 activation=None, dropout=0.1, pooling="mean", **kwargs):
      self.backbone = backbone
      self.preprocessor = preprocessor
      self.output_dropout = keras.layers.Dropout(
          dropout, dtype=backbone.dtype_policy, name="classifier_dropout")
      self.output_dense = keras.layers.Dense(
          num_classes, activation=activation, dtype=backbone.dtype_policy,
          name="logits")
      inputs = backbone.input
      tokens = backbone(inputs)["sequence_output"]
      if pooling == "mean":
        pooled = keras.layers.GlobalAveragePooling1D(
            dtype=backbone.dtype_policy, name="mean_pooling")(
                tokens, mask=keras.ops.cast(inputs["padding_mask"], "bool"))
      else:
        pooled = tokens[:, 0, :]
      outputs = self.output_dense(self.output_dropout(pooled))
      hub.models.TextClassifier.__init__(self, inputs=inputs,
                                         outputs=outputs, **kwargs)
      self.num_classes = num_classes
      self.activation = keras.activations.get(activation)
      self.dropout = dropout
      self.pooling = pooling

    def get_config(self):
      return {**super().get_config(), "pooling": self.pooling}

  _POOLED.append(PooledBertClassifier)
  return PooledBertClassifier


def is_text_classifier(model):
  return hasattr(model, "backbone") and hasattr(model, "preprocessor")


def float32_copy(model):
  """The classifier with a float32 copy of its backbone (same weights).

  Models trained under a mixed-precision policy are exported from it. The
  preprocessor (an int32 tokenizer) is shared as it is.
  """
  if "mixed" not in model.backbone.dtype_policy.name:
    return model
  backbone = model.backbone.__class__.from_config(
      precision.with_float32_policy(model.backbone.get_config()))
  pooling = {"pooling": model.pooling} if hasattr(model, "pooling") else {}
  clone = model.__class__(backbone, model.num_classes,
                          preprocessor=model.preprocessor,
                          activation=model.activation, dropout=model.dropout,
                          **pooling)
  clone.set_weights(model.get_weights())
  return clone


def feature_parts(model):
  """(pooled-feature tensor, head layers) for the feature cache.

  The head is the task's output Dense and the Dropout just before it; the
  features are what that Dropout reads: BERT's pooled output, or the output
  of the task's own hidden layer (DistilBERT's and RoBERTa's pooled_dense,
  which phase 1 leaves as initialized and phase 2 trains).
  """
  output = model.layers[-1]
  head = [output]
  feeding = output.input._keras_history.operation  # pylint: disable=protected-access
  if isinstance(feeding, keras.layers.Dropout):
    head.insert(0, feeding)
  return head[0].input, head


def unfreeze_top(model, mode, count):
  """Makes the top `count` transformer layers and the pooler trainable.

  Embeddings (and their LayerNorm) stay frozen unless `mode` is "all".

  Returns:
    The number of backbone layers with weights now trainable.
  """
  backbone = model.backbone
  backbone.trainable = True
  blocks = list(backbone.transformer_layers)
  top = set(id(l) for l in blocks[len(blocks) - count:])
  trainable = 0
  for layer in backbone.layers:
    if isinstance(layer, keras.layers.InputLayer):
      continue
    if layer in blocks:
      layer.trainable = id(layer) in top
    else:  # embeddings below the blocks, the pooler above them
      layer.trainable = mode == "all" or layer.name == "pooled_dense"
    trainable += bool(layer.trainable and layer.weights)
  return trainable


def describe(name, model):
  """What run.json says about a text model."""
  backbone = model.backbone
  out = {"name": name, "family": type(backbone).__name__, "kind": "text",
         "num_layers": backbone.num_layers, "hidden_dim": backbone.hidden_dim,
         "vocabulary_size": backbone.vocabulary_size,
         "sequence_length": model.preprocessor.sequence_length,
         "pooling": getattr(model, "pooling", "pooler"),
         "base_parameters": backbone.count_params()}
  if name in hf_folders.PACKAGED:
    out["weights_package"] = hf_folders.PACKAGED[name][0]
    out["weights_license"] = hf_folders.license_note(name)
  return out
