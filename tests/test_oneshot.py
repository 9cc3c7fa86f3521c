"""One-shot pruning with layer-wise reconstruction (training/oneshot.py)."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tl_keras.training import oneshot


def _inputs(n, d, seed=0):
  """Correlated inputs, as a layer's usually are."""
  rng = np.random.default_rng(seed)
  return rng.normal(size=(n, d)) @ rng.normal(size=(d, d))


def _magnitude(w, rate, block=1):
  """w (d x rows) with each row's smallest `rate` of blocks zeroed."""
  d, rows = w.shape
  units = np.square(w.T).reshape(rows, d // block, block).sum(-1)
  count = int(round(rate * d / block))
  mask = np.zeros(units.shape, bool)
  np.put_along_axis(mask, np.argsort(units, 1)[:, :count], True, 1)
  return np.where(np.repeat(mask, block, 1).T, 0.0, w)


@pytest.mark.parametrize("block", [1, 4])
def test_reconstruct_prunes_each_row_and_keeps_the_outputs(block):
  x = _inputs(400, 32)
  w = np.random.default_rng(1).normal(size=(32, 6))
  h = x.T @ x / len(x)
  pruned = oneshot.reconstruct(w, h, 0.5, block)
  zeros = pruned == 0
  assert np.all(zeros.sum(0) == 16)  # half of every row (output)
  # Whole blocks of `block` consecutive inputs.
  assert np.all(zeros.T.reshape(6, -1, block).all(-1)
                == zeros.T.reshape(6, -1, block).any(-1))
  error = np.linalg.norm(x @ pruned - x @ w)
  assert error < 0.8 * np.linalg.norm(x @ _magnitude(w, 0.5, block) - x @ w)
  # The weights kept are refitted: least squares for the mask, up to the
  # damping.
  best = np.zeros_like(w)
  for row in range(6):
    kept = ~zeros[:, row]
    best[kept, row] = np.linalg.lstsq(x[:, kept], x @ w[:, row],
                                      rcond=None)[0]
  assert error < 1.02 * np.linalg.norm(x @ best - x @ w)


def test_patches_times_the_kernel_are_the_convolution():
  x = tf.random.normal([2, 9, 9, 4], seed=0)
  for kwargs in ({"strides": 2, "padding": "same"},
                 {"padding": "valid", "dilation_rate": 2}):
    layer = keras.layers.Conv2D(5, 3, use_bias=False, **kwargs)
    y = layer(x)
    w, channels = oneshot._matrix(layer)  # pylint: disable=protected-access
    assert channels == 4
    rows = oneshot._rows(layer)(x).numpy()  # pylint: disable=protected-access
    np.testing.assert_allclose(rows @ w, tf.reshape(y, [-1, 5]), atol=1e-4)


def test_einsum_contractions():
  def contracted(equation, shape):
    return oneshot._contracted(  # pylint: disable=protected-access
        keras.layers.EinsumDense(equation, output_shape=shape))
  assert contracted("abc,cde->abde", (None, 2, 4)) == 1  # attention q/k/v
  assert contracted("abcd,cde->abe", (None, 8)) == 2  # attention output
  assert contracted("ab,bc->ac", (8,)) == 1
  assert contracted("abc,bd->acd", (None, 4)) == 0  # not the last axis


def _model():
  keras.utils.set_random_seed(0)
  inputs = keras.Input((12, 12, 3))
  x = keras.layers.Conv2D(16, 3, padding="same", use_bias=False)(inputs)
  x = keras.layers.BatchNormalization()(x)
  x = keras.layers.ReLU()(x)
  x = keras.layers.DepthwiseConv2D(3, padding="same")(x)  # not pruned
  x = keras.layers.Conv2D(16, 3, strides=2, padding="same",
                          activation="relu")(x)
  x = keras.layers.Reshape((36, 16))(x)
  x = keras.layers.EinsumDense("abc,cd->abd", output_shape=(None, 8),
                               activation="relu")(x)
  x = keras.layers.GlobalAveragePooling1D()(x)
  outputs = keras.layers.Dense(4)(x)
  return keras.Model(inputs, outputs)


def test_prune_reaches_the_sparsity_and_keeps_the_outputs():
  model = _model()
  images = np.random.default_rng(0).uniform(size=(64, 12, 12, 3)).astype(
      np.float32)
  batches = [images[i:i + 32] for i in range(0, 64, 32)]
  before = model.predict(images, verbose=0)
  layers = oneshot.layers_of(model)
  assert sorted(type(l).__name__ for l in layers) == [
      "Conv2D", "Conv2D", "Dense", "EinsumDense"]
  magnitude = _model()
  summary = oneshot.prune(model, lambda b: model(b, training=False), batches,
                          0.5, block=1)
  assert list(summary["rates"]) == [
      l.path for l in oneshot.in_call_order(
          layers, lambda: model(images[:1], training=False))]
  kernels = oneshot.kernels(model)
  zeros = sum(int(np.sum(k.numpy() == 0)) for k in kernels)
  assert zeros / sum(int(np.prod(k.shape)) for k in kernels) == pytest.approx(
      0.5, abs=0.02)
  # Magnitude pruning, with each layer's zeros as many as here.
  for ours, theirs in zip(kernels, oneshot.kernels(magnitude)):
    value = theirs.numpy()
    cut = np.sort(np.abs(value).ravel())[int(np.sum(ours.numpy() == 0)) - 1]
    theirs.assign(np.where(np.abs(value) <= cut, 0.0, value))
  error = np.linalg.norm(model.predict(images, verbose=0) - before)
  assert error < 0.5 * np.linalg.norm(
      magnitude.predict(images, verbose=0) - before)
  # The hooks are gone: every layer calls its class's method again.
  assert not any("call" in vars(l) for l in layers)
