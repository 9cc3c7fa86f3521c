"""Pruning masks in the training step, and gradual magnitude pruning.

The masks keep the zeros of a network pruned before phase 2
(`--prune_method=oneshot`, `oneshot.py`) while it trains, or, with
`--prune_method=gradual`, set them during phase 2:

Zhu & Gupta (2017), the schedule tensorflow-model-optimization uses: the
share of zeros in the pruned kernels rises from 0 to the target on a cubic
curve over the first two thirds of the phase, in 16 steps; at each of them
the weights of smallest magnitude (those already zero among them) are
masked, ranked across all the kernels together (global magnitude pruning:
large layers give up more, small sensitive ones such as the first
convolution and the head less; on the quickstart at 50% it kept 91.3%
test accuracy where pruning each kernel alike kept 79.5%). The last third
trains with the final masks. Masks are applied after every optimizer step,
inside the compiled training step and in cross-replica context, so every
replica and worker holds the same zeros; they are variables, saved with
each checkpoint, so a resumed run prunes exactly as an uninterrupted one.

Pruned: the trainable kernels of the dense and convolution layers (the
unfrozen part of the base and the head), not biases, normalization or
embeddings.
"""

import math

import numpy as np
import tensorflow as tf

# The share of a phase's steps the sparsity ramps over, and the number of
# mask updates on the way.
RAMP = 2 / 3
UPDATES = 16


def prunable(variable):
  """Whether `variable` is a dense or convolution kernel."""
  return len(variable.shape) >= 2 and variable.path.rsplit("/", 1)[-1] in (
      "kernel", "depthwise_kernel", "pointwise_kernel")


class Pruning:
  """Masks for `kernels` and the schedule that sets them.

  Create it under the strategy's scope. `plan` starts a phase's schedule;
  `after_step` (traced into the training step) applies it. `state` is what
  a checkpoint holds: the masks and the schedule.
  """

  def __init__(self, kernels, block=1):
    self.kernels = tuple(kernels)
    self.block = block
    self.masks = [tf.Variable(tf.ones(k.shape, tf.float32), trainable=False,
                              name="mask") for k in self.kernels]
    self.target = tf.Variable(0.0, trainable=False, name="target")
    # Steps of the phase: now, the schedule's first and last, and between
    # mask updates.
    self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
    self.begin = tf.Variable(0, dtype=tf.int64, trainable=False)
    self.end = tf.Variable(0, dtype=tf.int64, trainable=False)
    self.every = tf.Variable(1, dtype=tf.int64, trainable=False)
    self.state = tf.train.Checkpoint(
        masks=self.masks, target=self.target, step=self.step,
        begin=self.begin, end=self.end, every=self.every)

  @property
  def planned(self):
    """Whether a schedule is set (by `plan` or a restored checkpoint)."""
    return float(self.target.numpy()) > 0

  def plan(self, target, *, begin, total, keep_zeros=False):
    """Prunes to `target` between step `begin` and 2/3 of the way to `total`.

    `target` 0: no pruning. `keep_zeros`: no schedule; the masks are the
    kernels' zeros now (a network pruned before the phase keeps them).
    """
    end = begin if keep_zeros else begin + max(
        1, math.ceil(RAMP * (total - begin)))
    self.target.assign(float(target))
    self.step.assign(begin)
    self.begin.assign(begin)
    self.end.assign(end)
    self.every.assign(max(1, (end - begin) // UPDATES))
    for kernel, mask in zip(self.kernels, self.masks):
      mask.assign(tf.cast(tf.not_equal(kernel, 0), tf.float32) if keep_zeros
                  else tf.ones_like(mask))

  def snapshot(self):
    """A copy of the masks and the schedule's position, for `load`."""
    return [np.copy(v.numpy()) for v in self._variables()]

  def load(self, snapshot):
    for variable, value in zip(self._variables(), snapshot, strict=True):
      variable.assign(value)

  def _variables(self):
    return [*self.masks, self.target, self.step, self.begin, self.end,
            self.every]

  def finished(self):
    """Whether the masks are final (the sparsity reached its target)."""
    return self.planned and int(self.step.numpy()) >= int(self.end.numpy())

  @property
  def end_step(self):
    return int(self.end.numpy())

  def sparsity_at(self, step):
    """The scheduled share of zeros at phase step `step` (a tensor)."""
    begin = tf.cast(self.begin, tf.float32)
    span = tf.cast(self.end - self.begin, tf.float32)
    progress = tf.clip_by_value(
        (tf.cast(step, tf.float32) - begin) / span, 0.0, 1.0)
    return self.target * (1.0 - (1.0 - progress) ** 3)

  def after_step(self):
    """Counts a step, updates the masks when due, applies them (graph)."""

    def prune():
      self.step.assign_add(1)
      since = self.step - self.begin
      due = tf.logical_and(
          self.step <= self.end,
          tf.logical_or(since % self.every == 0, self.step == self.end))
      # When due, the step's updates to pruned weights are undone before
      # the ranking, so they stay among the smallest.
      tf.cond(due, self._reset_masks, lambda: tf.constant(0))
      self._apply()
      return tf.constant(0)

    tf.cond(self.target > 0, prune, lambda: tf.constant(0))

  def _apply(self):
    for kernel, mask in zip(self.kernels, self.masks):
      kernel.assign(kernel * tf.cast(mask, kernel.dtype))

  def _reset_masks(self):
    self._apply()
    return self._update()

  def _update(self):
    """Masks the smallest weights of all kernels together (one threshold)."""
    sizes = [int(np.prod(k.shape)) for k in self.kernels]
    total = sum(sizes)
    count = tf.cast(tf.math.floor(self.sparsity_at(self.step) * total),
                    tf.int32)
    magnitude = tf.concat([tf.reshape(block_magnitude(k, self.block), [-1])
                           for k in self.kernels], 0)
    smallest = tf.argsort(magnitude, stable=True)[:count]
    flat = tf.tensor_scatter_nd_update(
        tf.ones([total]), smallest[:, None], tf.zeros([count]))
    for mask, part in zip(self.masks, tf.split(flat, sizes)):
      mask.assign(tf.reshape(part, mask.shape))
    return tf.constant(0)


def block_size(inputs, block):
  """The largest divisor of `inputs` (a kernel's input axis) up to `block`."""
  return max(d for d in range(1, min(block, inputs) + 1) if inputs % d == 0)


def block_magnitude(kernel, block):
  """|kernel|, each weight replaced by the mean over its block.

  A block is `block` neighbours along the input axis (-2) with the other
  indices fixed: consecutive bytes of the TFLite tensor (convolutions are
  stored output, height, width, input; fully connected output, input), so
  a pruned block is a run of zeros that compression takes for almost
  nothing. An input axis that `block` does not divide takes the largest
  divisor below it (3 input channels: blocks of 3). Within a block all
  weights rank together: the smallest blocks are masked whole.
  """
  magnitude = tf.abs(tf.cast(kernel, tf.float32))
  size = block_size(kernel.shape[-2], block)
  if size == 1:
    return magnitude
  shape = magnitude.shape
  grouped = tf.reshape(magnitude, [*shape[:-2], shape[-2] // size, size,
                                   shape[-1]])
  mean = tf.reduce_mean(grouped, axis=-2, keepdims=True)
  return tf.reshape(tf.broadcast_to(mean, grouped.shape), shape)


def trained_kernels(model):
  """The kernels gradual pruning prunes: the trainable prunable ones."""
  return [v for v in model.trainable_variables if prunable(v)]


def measure(kernels, target, method):
  """The share of zeros in `kernels`, measured.

  Returns:
    {"target", "method", "sparsity", "zeros", "weights", "kernels"}.
  """
  zeros = sum(int(np.sum(np.asarray(k) == 0)) for k in kernels)
  weights = sum(int(np.prod(k.shape)) for k in kernels)
  return {"target": float(target), "method": method,
          "sparsity": zeros / max(weights, 1),
          "zeros": zeros, "weights": weights, "kernels": len(kernels)}
