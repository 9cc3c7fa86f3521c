"""One-shot pruning with layer-wise reconstruction (`--prune_method=oneshot`).

The trained network is pruned once, before phase 2, layer after layer in
the order of the forward pass, the way Optimal Brain Compression (Frantar &
Alistarh, 2022) and SparseGPT (2023) prune. Each layer's inputs on a few
training examples (`X`, the unfolded patches of a convolution) give
H = XᵀX, and the layer is rebuilt in three steps: (1) least squares, so
that on the inputs it gets now (the layers below it pruned) it gives the
outputs it gave in the unpruned network (X₀, through XᵀX₀); (2) the
weights of smallest w² / [H⁻¹]ⱼⱼ² are zeroed while the weights left in the
same output row absorb the error (the optimal brain surgeon update); (3)
the weights kept are refitted by least squares with the zeros fixed. A
convolution's patches make many rows per image, which is why a hundred
training images are enough. On the quickstart at 50% in blocks of 8, with
nothing trained after: magnitude pruning leaves 23.5% test accuracy
(chance 16.7%), step 2 alone 89.2%, all three 93.5% (unpruned 95.2%).

How much each layer loses is the layer-adaptive magnitude score of Lee et
al. (LAMP, 2021): the units of all kernels are ranked together by their
squared magnitude over that of the units above them in their own layer.

Pruned: the kernels of Conv2D (not grouped), Dense and EinsumDense layers
whose contraction is the input's last axes (the transformer projections),
in blocks of `block` neighbours along the input channels (the last of the
contracted axes), the same blocks as `pruning.block_size`. Other layers
(depthwise and 1-D convolutions, embeddings) keep their weights.
"""

import contextlib
import functools
import math
import time

from absl import logging
import keras
import numpy as np
import tensorflow as tf

from tl_keras import console
import tl_keras.training.pruning as pruning_lib

# Training examples whose layer inputs guide the pruning.
EXAMPLES = 128
BATCH = 32
# Conjugate-gradient steps of the least-squares refit after the pruning.
REFIT_STEPS = 30
# Columns of a layer pruned together (the weights of a row within them
# share the sparsity, so no row loses all its weights), and the damping of
# H, relative to its mean diagonal.
COLUMNS = 128
DAMPING = 0.01


def layers_of(model):
  """The layers whose kernels `prune` prunes, each once."""
  found, seen = [], set()
  for layer in model._flatten_layers(include_self=False):  # pylint: disable=protected-access
    if id(layer) in seen or _rows(layer) is None:
      continue
    seen.add(id(layer))
    found.append(layer)
  return found


def kernels(model):
  """The kernels `prune` prunes."""
  return [layer.kernel for layer in layers_of(model)]


def in_call_order(layers, forward):
  """`layers` in the order a forward pass (`forward()`) calls them first."""
  order = []
  with _hooks(layers, lambda layer, x: layer in order or order.append(layer)):
    forward()
  return order + [l for l in layers if l not in order]


def _rows(layer):
  """A function: the layer's input -> rows of X (2-D), or None if not pruned."""
  if type(layer) is keras.layers.Conv2D and layer.groups == 1 and (  # pylint: disable=unidiomatic-typecheck
      layer.data_format == "channels_last"):
    kh, kw = layer.kernel_size
    sh, sw = layer.strides
    dh, dw = layer.dilation_rate
    padding = layer.padding.upper()

    def patches(x):
      p = tf.image.extract_patches(tf.cast(x, tf.float32), [1, kh, kw, 1],
                                   [1, sh, sw, 1], [1, dh, dw, 1], padding)
      return tf.reshape(p, [-1, p.shape[-1]])
    return patches
  if type(layer) is keras.layers.Dense:  # pylint: disable=unidiomatic-typecheck
    return lambda x: tf.reshape(tf.cast(x, tf.float32), [-1, x.shape[-1]])
  if isinstance(layer, keras.layers.EinsumDense):
    depth = _contracted(layer)
    if depth:
      def flat(x):
        size = math.prod(x.shape[-depth:])
        return tf.reshape(tf.cast(x, tf.float32), [-1, size])
      return flat
  return None


def _contracted(layer):
  """How many of the input's last axes an EinsumDense contracts with the
  kernel's first ones, in the same order; 0 if its equation is another."""
  equation = layer.equation.replace(" ", "")
  inputs, rest = equation.split(",")
  kernel, output = rest.split("->")
  summed = [c for c in kernel if c in inputs and c not in output]
  depth = len(summed)
  if (not depth or "." in inputs or inputs[-depth:] != "".join(summed)
      or kernel[:depth] != "".join(summed)):
    return 0
  return depth


def _matrix(layer):
  """The layer's kernel as (input columns d, output rows) and its inputs'
  channel count (the block axis)."""
  kernel = np.asarray(layer.kernel, np.float64)
  if isinstance(layer, keras.layers.EinsumDense):
    depth = _contracted(layer)
    d = math.prod(kernel.shape[:depth])
    channels = kernel.shape[depth - 1]
  else:
    d = math.prod(kernel.shape[:-1])
    channels = kernel.shape[-2]
  return kernel.reshape(d, -1), channels


def lamp_rates(layers, sparsity, block):
  """{layer name: share of its weights to prune}, by LAMP over all layers."""
  scores, sizes = [], []
  for layer in layers:
    w, channels = _matrix(layer)
    b = pruning_lib.block_size(channels, block)
    units = np.sum(np.square(w.T.reshape(w.shape[1], -1, b)), -1).ravel()
    ordered = np.sort(units)
    suffix = np.cumsum(ordered[::-1])[::-1]
    scores.append(ordered / np.maximum(suffix, 1e-300))
    sizes.append(b)
  weights = np.concatenate([np.full(len(s), b) for s, b in zip(scores, sizes)])
  everything = np.concatenate(scores)
  order = np.argsort(everything, kind="stable")
  # The smallest units until `sparsity` of all weights are taken.
  taken = np.zeros(len(everything), bool)
  taken[order[:np.searchsorted(np.cumsum(weights[order]),
                               sparsity * weights.sum(), side="right")]] = True
  rates, start = {}, 0
  for layer, s in zip(layers, scores):
    rates[layer.path] = float(np.mean(taken[start:start + len(s)]))
    start += len(s)
  return rates


def _damped(h):
  """H with unused inputs (zero diagonal) set aside and the damping added;
  and the mask of those inputs."""
  h = np.array(h, np.float64)
  dead = np.diag(h) == 0
  h[dead, dead] = 1.0
  h[np.diag_indices(len(h))] += DAMPING * np.mean(np.diag(h))
  return h, dead


def reconstruct(w, h, rate, block):
  """Prunes `rate` of each row's weights of w (d x rows), OBS-updating.

  Blocks of `block` consecutive columns are pruned whole; within every
  `COLUMNS` columns each row loses the same share, picked after the
  updates of the columns before. Returns the new w.
  """
  target = w
  w = w.T.copy()  # rows x d
  rows, d = w.shape
  plain = np.array(h, np.float64)
  h, dead = _damped(h)
  w[:, dead] = 0.0
  try:
    hinv = np.linalg.cholesky(np.linalg.inv(h)).T  # upper
  except np.linalg.LinAlgError:  # not positive definite: damp it more
    h[np.diag_indices(d)] += np.mean(np.diag(h))
    hinv = np.linalg.cholesky(np.linalg.inv(h)).T
  span = max(block, COLUMNS // block * block)
  for i in range(0, d, span):
    j = min(i + span, d)
    part, local = w[:, i:j].copy(), hinv[i:j, i:j]
    errors = np.zeros_like(part)
    score = (np.square(part) / np.square(np.diag(local))[None]).reshape(
        rows, -1, block).sum(-1)
    # Counts rounded cumulatively: each row loses round(rate * units).
    count = (round(rate * j / block) - round(rate * i / block))
    mask = np.zeros(score.shape, bool)
    if count:
      np.put_along_axis(mask, np.argsort(score, axis=1)[:, :count], True, 1)
    mask = np.repeat(mask, block, axis=1)
    for c in range(j - i):
      column = part[:, c]
      kept = np.where(mask[:, c], 0.0, column)
      error = (column - kept) / local[c, c]
      part[:, c:] -= error[:, None] * local[c, c:][None]
      part[:, c] = kept
      errors[:, c] = error
    w[:, i:j] = part
    w[:, j:] -= errors @ hinv[i:j, j:]
  return _refit(w.T, target, plain, w.T != 0)


def _refit(w, target, h, kept, iterations=REFIT_STEPS):
  """w (d x rows) refitted, its zeros kept, towards `target`'s outputs.

  The weights a row keeps are those of the least squares problem
  min (w - target)ᵀ H (w - target) over w zero where not `kept`, damped
  like `reconstruct` (the optimal brain surgeon updates leave each weight
  as it was once its column is passed): conjugate gradients from w, all
  rows at once.
  """
  damping = DAMPING * np.mean(np.diag(h))
  b = h @ target + damping * target
  x = w * kept
  r = kept * (b - h @ x - damping * x)
  p = r
  rs = np.sum(r * r, 0)
  for _ in range(iterations):
    ap = kept * (h @ p + damping * p)
    alpha = rs / np.maximum(np.sum(p * ap, 0), 1e-300)
    x = x + alpha * p
    r = r - alpha * ap
    new = np.sum(r * r, 0)
    p = r + (new / np.maximum(rs, 1e-300)) * p
    rs = new
  return x


def prune(model, call, batches, sparsity, block):
  """Prunes `model`'s kernels to `sparsity` (one share for all of them).

  Each layer is first fitted, by least squares, to give on the inputs it
  gets now (the layers below it pruned) the outputs it gave on the
  unpruned network's, then pruned to keep those outputs (`reconstruct`).

  Args:
    model: the Keras model.
    call: call(batch) runs `model` on one batch (inference mode).
    batches: the calibration examples, a list of batches.
    sparsity: the share of zeros over all pruned kernels.
    block: block size along the input channels (1 = single weights).

  Returns:
    {"layers", "seconds", "rates" {layer path: share of zeros}}.
  """
  start = time.time()
  layers = in_call_order(layers_of(model), lambda: call(batches[0]))
  rates = lamp_rates(layers, sparsity, block)
  unpruned = [np.copy(layer.kernel.numpy()) for layer in layers]
  pruned = []  # the kernels of the layers done, as pruned
  with console.Heartbeat("one-shot pruning", total=len(layers),
                         unit="layers") as beat:
    beat.done = 0
    for n, layer in enumerate(layers):
      w, channels = _matrix(layer)
      h, cross = _statistics(layers[:n], unpruned[:n], pruned, layer, call,
                             batches)
      if np.ndim(h) == 0:  # not called on these inputs: left as it is
        pruned.append(unpruned[n])
        beat.done += 1
        continue
      # Least squares, damped towards the unpruned weights.
      w = w + np.linalg.solve(_damped(h)[0], (cross - h) @ w)
      kept = reconstruct(w, h, rates[layer.path],
                           pruning_lib.block_size(channels, block))
      kernel = kept.reshape(layer.kernel.shape).astype(layer.kernel.dtype)
      layer.kernel.assign(kernel)
      pruned.append(kernel)
      beat.done += 1
  seconds = time.time() - start
  logging.info("one-shot pruning: %d kernels to %.0f%% zeros, each layer "
               "rebuilt to keep its outputs on %d training examples (%.1fs)",
               len(layers), 100 * sparsity,
               sum(_length(b) for b in batches), seconds)
  return {"layers": len(layers), "seconds": seconds,
          "rates": {k: round(v, 4) for k, v in rates.items()}}


def _length(batch):
  return len(next(iter(batch.values())) if isinstance(batch, dict) else batch)


def _statistics(done, unpruned, pruned, layer, call, batches):
  """XᵀX / n and XᵀX₀ / n, X the rows of `layer`'s inputs with the `done`
  layers `pruned`, X₀ with them `unpruned` (their kernels put back for it)."""
  rows_of = _rows(layer)
  seen = []  # the layer's inputs in this batch (several if it is shared)
  h = cross = 0.0
  count = 0
  with _hooks([layer], lambda unused, x: seen.append(rows_of(x))):
    for batch in batches:
      if done:
        _assign(done, unpruned)
        call(batch)
        before = list(seen)
        seen.clear()
        _assign(done, pruned)
      call(batch)
      for x, x0 in zip(seen, before if done else seen):
        square = tf.matmul(x, x, transpose_a=True).numpy()
        h += square
        cross += tf.matmul(x, x0, transpose_a=True).numpy() if done else square
        count += int(x.shape[0])
      seen.clear()
  return h / max(count, 1), cross / max(count, 1)


def _assign(layers, kernels):
  for layer, kernel in zip(layers, kernels):
    layer.kernel.assign(kernel)


@contextlib.contextmanager
def _hooks(layers, seen):
  """Calls `seen(layer, inputs)` before each call of each of `layers`."""
  owned = {}
  for layer in layers:
    owned[id(layer)] = layer.__dict__.get("call")
    layer.call = functools.partial(_hooked, layer, layer.call, seen)
  try:
    yield
  finally:
    for layer in layers:
      if owned[id(layer)] is None:
        del layer.call  # back to the class's method
      else:
        layer.call = owned[id(layer)]


def _hooked(layer, call, seen, inputs, *args, **kwargs):
  seen(layer, inputs)
  return call(inputs, *args, **kwargs)
