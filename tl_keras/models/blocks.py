"""The blocks of an image backbone, and unfreezing the top ones.

--unfreeze counts blocks: whole residual blocks, inception modules, stages.
A block boundary is where a single tensor flows (found from the graph), so
unfreezing never splits a residual block.
"""

import re

from keras import layers

from tl_keras.models.applications import base_of


# A layer name's block: "conv4_block1" (ResNet, DenseNet), "stack2_block1"
# (KerasHub ResNet), "block5a"
# (EfficientNet), "block_16" (MobileNetV2), "stage_2_block_3" (ConvNeXt),
# "expanded_conv_6" (MobileNetV3), "block3" (VGG, Xception), "stage2"
# (convnet_small), "mixed5" (Inception).
_BLOCK_NAME = re.compile(r"(stage_\d+_block_\d+|(?:conv|stack)\d+_block\d+|"
                         r"block_?\d+[a-z]?|stage_?\d+|"
                         r"expanded_conv(?:_\d+)?|mixed\d+)")


def _graph_segments(base):
  """The base's layers split where exactly one tensor crosses.

  In topological order, a cut before operation i is clean when everything the
  layers from i on read from below i is the output of layer i-1: no skip
  connection, branch or concatenation crosses it. A residual block, an
  inception module or a squeeze-excite branch is never cut.
  """
  # Operations, not only layers: `x + 3` in a backbone's code (MobileNetV3's
  # hard-swish, ConvNeXt's residual) is an operation between layers.
  body = [l for l in base.operations if not isinstance(l, layers.InputLayer)]
  position = {id(l): i for i, l in enumerate(body)}
  reads = []  # per layer: positions of the layers it reads (-1: the input)
  for layer in body:
    producers = set()
    for node in layer._inbound_nodes:  # pylint: disable=protected-access
      for tensor in node.input_tensors:
        producers.add(position.get(id(tensor._keras_history.operation), -1))  # pylint: disable=protected-access
    reads.append(producers)
  last_read = {}  # producer position -> the last position reading it
  for i, producers in enumerate(reads):
    for p in producers:
      last_read[p] = max(last_read.get(p, i), i)
  # reach: the furthest read of anything below i - 1 (the input included).
  segments, current, reach = [], [], last_read.get(-1, -1)
  for i, layer in enumerate(body):
    if i >= 2:
      reach = max(reach, last_read.get(i - 2, -1))
    if current and reach < i:
      segments.append(current)
      current = []
    current.append(layer)
  segments.append(current)
  return segments


def blocks(base):
  """The base's layers grouped into blocks --unfreeze counts from the top.

  A block is a run of clean graph segments (`_graph_segments`) merged by
  the block name in their layer names (`_BLOCK_NAME`); layers without
  weights (activations, padding) join the block before them, and unnamed
  layers with weights next to each other (a stem, a top conv) form one
  block. So every block boundary is a clean cut: unfreezing whole blocks
  never splits a residual block (keras.io: "each block needs to be all
  turned on or off").

  Returns:
    [(name, [layer, ...]), ...] bottom to top; a block's name is its block
    name or the name of its first layer.
  """
  out = []
  for segment in _graph_segments(base):
    names = [_BLOCK_NAME.search(l.name) for l in segment]
    key = next((m.group(1) for m in reversed(names) if m), None)
    if key is None and len(segment) > 1:
      key = segment[-1].name  # an unnamed module (an inception "mixed")
    weighted = any(getattr(l, "weights", None) for l in segment)
    if out and (key is not None and key == out[-1][0] or key is None and (
        not weighted or out[-1][2] is None)):
      out[-1][1].extend(segment)
    else:
      out.append([key, list(segment), key])
  return [(key or layers_[0].name, layers_) for key, layers_, _ in out]


# The momentum of BatchNorm's moving statistics while it trains. Keras
# applications build it with 0.99 or 0.999 (MobileNetV3): the statistics
# then average the last 100 or 1,000 steps, and while the weights move fast
# they describe an older network, so validation in inference mode (which
# picks the learning rate and the best weights) judges a model no one
# trained: MobileNetV3 from random weights reached validation loss 216 at
# lr 1e-3, the trials chose 1e-5, and it never learned. At 0.9 (PyTorch's
# default) they follow the last ~10 steps.
TRAINING_MOMENTUM = 0.9


def unfreeze_blocks(model, count, train_batchnorm=False):
  """Makes the top `count` blocks (`blocks`) of the base trainable.

  Args:
    model: an image classifier (`classifier_around`).
    count: how many blocks, from the top.
    train_batchnorm: BatchNorm layers in the unfrozen part train too: they
      normalize with batch statistics and update their moving statistics,
      with momentum at most `TRAINING_MOMENTUM`. False keeps them frozen,
      in inference mode, with the backbone's statistics (keras.io's advice
      for pretrained backbones).

  Returns:
    The number of base layers with weights now trainable.
  """
  grouped = blocks(base_of(model))
  top = {id(l) for _, members in grouped[len(grouped) - count:]
         for l in members}
  base_of(model).trainable = True
  trainable = 0
  for layer in _base_layers(model):
    layer.trainable = id(layer) in top and (
        train_batchnorm or not isinstance(layer, layers.BatchNormalization))
    trainable += bool(layer.trainable and layer.weights)
    if layer.trainable and isinstance(layer, layers.BatchNormalization):
      layer.momentum = min(layer.momentum, TRAINING_MOMENTUM)
  return trainable


def _base_layers(model):
  return [l for l in base_of(model).layers
          if not isinstance(l, layers.InputLayer)]
