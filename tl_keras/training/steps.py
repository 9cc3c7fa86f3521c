"""The optimizer, loss scaling, and the compiled train and evaluation steps."""

import keras
import numpy as np
import tensorflow as tf

from tl_keras import console
from tl_keras.data import inputs as inputs_lib
from tl_keras import evaluation
import tl_keras.training.pruning as pruning_lib


class WarmupCosine(keras.optimizers.schedules.LearningRateSchedule):
  """Linear warmup from 0 to the peak rate, then cosine decay to 0.

  Keras's `CosineDecay` with `warmup_target`, with the peak and the step
  counts held in variables: `set` points an optimizer at another phase (a
  trial at another rate) without tracing the steps that use it again.
  """

  def __init__(self, peak, warmup_steps, total_steps):
    self.peak = tf.Variable(0.0, trainable=False, name="peak_lr")
    self.warmup = tf.Variable(0.0, trainable=False, name="warmup_steps")
    self.decay = tf.Variable(1.0, trainable=False, name="decay_steps")
    self.set(peak, warmup_steps, total_steps)

  def set(self, peak, warmup_steps, total_steps):
    self.peak.assign(float(peak))
    self.warmup.assign(float(warmup_steps))
    self.decay.assign(float(max(total_steps - warmup_steps, 1)))

  def __call__(self, step):
    step = tf.cast(step, tf.float32)
    warm = self.peak * step / tf.maximum(self.warmup, 1.0)
    progress = tf.minimum(step - self.warmup, self.decay) / self.decay
    decayed = self.peak * 0.5 * (1.0 + tf.cos(np.pi * progress))
    return tf.where(step < self.warmup, warm, decayed)

  def get_config(self):
    return {"peak": float(self.peak.numpy()),
            "warmup_steps": float(self.warmup.numpy()),
            "total_steps": float((self.warmup + self.decay).numpy())}


def _warmup_steps(spec, steps):
  return min(int(spec.warmup * steps), steps - 1)


def make_optimizer(spec, steps, schedule=None):
  """Optimizer with linear warmup then cosine decay over `steps` steps.

  `schedule`: a `WarmupCosine` of the caller's, used as it is.
  """
  schedule = schedule or WarmupCosine(
      spec.learning_rate, _warmup_steps(spec, steps), steps)
  table = {
      "adam": lambda: keras.optimizers.Adam(schedule),
      "adamw": lambda: keras.optimizers.AdamW(
          schedule, weight_decay=spec.weight_decay),
      "sgd": lambda: keras.optimizers.SGD(
          schedule, momentum=0.9, weight_decay=spec.weight_decay or None),
  }
  optimizer = table[spec.optimizer]()
  if spec.no_decay and spec.weight_decay:
    optimizer.exclude_from_weight_decay(var_names=list(spec.no_decay))
  return optimizer


def optimizer_state(optimizer):
  """A copy of `optimizer`'s state (step count, moments), for `load_state`."""
  return [np.copy(keras.ops.convert_to_numpy(v)) for v in optimizer.variables]


def load_state(optimizer, state):
  for variable, value in zip(optimizer.variables, state, strict=True):
    variable.assign(value)


class StepCache:
  """Optimizers and traced steps, kept for the next phase that trains the same.

  Tracing the training and evaluation steps takes about a second for a
  small convnet and 2-3 s for a small BERT on a 2-core CPU, every phase.
  Phase 2's trials and the phase that continues the winner train the same
  variables with the same kind of optimizer at different rates: with one
  `StepCache` they share one optimizer (its state zeroed and its schedule
  set for each) and one trace of each step.

  `prune`: each entry has a `pruning.Pruning` of the variables it trains
  (in blocks of `block`), applied after every step once a phase plans it.
  """

  def __init__(self, prune=False, block=1):
    self._entries = {}
    self.prune = prune
    self.block = block

  def get(self, model, spec, total, *, strategy, num_classes, global_batch,
          fresh=True, class_weights=None):
    """(optimizer, train_steps, eval_step, pruning) for `total` steps.

    The optimizer's schedule is set for `spec` and `total`. `fresh`: its
    state starts from zero (a new phase); otherwise it is kept (a phase that
    goes on, whose optimizer this cache made). `class_weights`: [C] loss
    weights per class, or None.
    """
    key = (id(model), tuple(id(v) for v in model.trainable_variables),
           id(strategy), num_classes, global_batch, spec.optimizer,
           spec.weight_decay, spec.no_decay, spec.label_smoothing,
           spec.jit_compile,
           None if class_weights is None else tuple(map(float, class_weights)))
    if key not in self._entries:
      if not fresh:
        raise ValueError("a phase that goes on needs the StepCache that "
                         "made its optimizer, for the same variables")
      with strategy.scope():
        schedule = WarmupCosine(0.0, 0, total)
        optimizer = make_optimizer(spec, total, schedule)
        # Build slots now, in cross-replica context, not lazily in the step.
        optimizer.build(model.trainable_variables)
        pruning = pruning_lib.Pruning(
            pruning_lib.trained_kernels(model), block=self.block) if self.prune else None
      self._entries[key] = (schedule, optimizer, *step_functions(
          model, optimizer, strategy, num_classes, global_batch,
          spec.label_smoothing, spec.jit_compile, pruning=pruning,
          class_weights=class_weights), pruning)
    elif fresh:
      for variable in self._entries[key][1].variables:
        variable.assign(tf.zeros_like(variable))
    schedule, *entry = self._entries[key]
    schedule.set(spec.learning_rate, _warmup_steps(spec, total), total)
    return tuple(entry)

  def keep_only(self, optimizer):
    """Forgets the other optimizers (each holds state the size of a model)."""
    self._entries = {key: entry for key, entry in self._entries.items()
                     if entry[1] is optimizer}


class LossScale:
  """Dynamic loss scaling for float16 training inside `strategy.run`.

  float16 gradients underflow unless the loss is scaled up first. The scale
  doubles after `growth_steps` finite steps and halves on an overflow, whose
  gradients are zeroed (all replicas agree, so they stay in sync). Keras's
  `LossScaleOptimizer` fails inside a custom tf.function loop here, so the
  standard algorithm is done by hand.
  """

  def __init__(self, initial=2.0 ** 15, growth_steps=2000):
    agg = tf.VariableAggregation.ONLY_FIRST_REPLICA
    self.scale = tf.Variable(initial, trainable=False, aggregation=agg)
    self.good_steps = tf.Variable(0, trainable=False, aggregation=agg)
    self.growth_steps = growth_steps

  def scale_loss(self, loss):
    """The loss to differentiate (inside the tape)."""
    return loss * self.scale

  def unscale(self, scaled):
    """Gradients of `scale_loss(loss)`, unscaled and zeroed on overflow."""
    grads = [g / self.scale for g in scaled]
    finite = tf.reduce_all([tf.reduce_all(tf.math.is_finite(g))
                            for g in grads])
    context = tf.distribute.get_replica_context()
    if context is not None:  # every replica must take the same branch
      finite = context.all_reduce("SUM", 1.0 - tf.cast(finite, tf.float32)) < 0.5
    grads = [tf.where(finite, g, tf.zeros_like(g)) for g in grads]
    grow = tf.logical_and(finite, self.good_steps + 1 >= self.growth_steps)
    self.scale.assign(tf.where(
        finite, tf.where(grow, self.scale * 2.0, self.scale),
        tf.maximum(self.scale / 2.0, 1.0)))
    self.good_steps.assign(tf.where(
        tf.logical_and(finite, tf.logical_not(grow)), self.good_steps + 1, 0))
    return grads


def step_functions(model, optimizer, strategy, num_classes, global_batch,
                    label_smoothing, jit_compile=False, pruning=None,
                    class_weights=None):
  """tf.functions for one training step and one evaluation step.

  `pruning` (a `pruning.Pruning`) runs after every optimizer step.
  `class_weights` ([C] or None) weighs each example's loss by its class's
  weight (a MixUp example's by its mixture of them).
  """
  weights = (None if class_weights is None else
             tf.constant(class_weights, tf.float32))
  loss_scale = None
  if keras.mixed_precision.dtype_policy().name == "mixed_float16":
    with strategy.scope():
      loss_scale = LossScale()

  def train_fn(images, labels):
    multi_label = is_multi_hot(labels)
    if multi_label:
      targets = tf.cast(labels, tf.float32)
    elif labels.shape.rank == 2:  # MixUp: mixtures of one-hot labels
      targets, labels = labels, tf.argmax(labels, -1, output_type=tf.int32)
    else:
      targets = tf.one_hot(labels, num_classes)
    with tf.GradientTape() as tape:
      probs = model(images, training=True)
      per_example = (keras.losses.binary_crossentropy(
          targets, probs, label_smoothing=label_smoothing) if multi_label
                     else keras.losses.categorical_crossentropy(
                         targets, probs, label_smoothing=label_smoothing))
      if weights is not None and not multi_label:
        per_example *= tf.reduce_sum(targets * weights, -1)
      # Divide by the global batch: gradients are summed across replicas.
      loss = tf.nn.compute_average_loss(per_example,
                                        global_batch_size=global_batch)
      if model.losses:
        loss += tf.nn.scale_regularization_loss(tf.add_n(model.losses))
      scaled_loss = loss_scale.scale_loss(loss) if loss_scale else loss
    variables = model.trainable_variables
    grads = tape.gradient(scaled_loss, variables)
    if loss_scale:
      grads = loss_scale.unscale(grads)
    optimizer.apply_gradients(zip(grads, variables))
    return tf.reduce_sum(per_example), tf.reduce_sum(hits(probs, labels))

  replica_fn = (tf.function(train_fn, jit_compile=True) if jit_compile
                else train_fn)

  @tf.function
  def train_steps(iterator, steps):
    """`steps` (a scalar tensor) steps in one call; summed loss and hits.

    One call per chunk of steps, not per step: a step on cached features
    takes less time than a Python round trip, and `steps` being a tensor,
    chunks of any length share one trace.
    """
    loss = correct = tf.constant(0.0)
    for _ in tf.range(steps):
      step_loss, step_correct = strategy.run(replica_fn, args=next(iterator))
      if pruning is not None:
        pruning.after_step()
      loss += strategy.reduce("SUM", step_loss, axis=None)
      correct += strategy.reduce("SUM", step_correct, axis=None)
    return loss, correct

  return train_steps, make_eval_step(model, strategy, num_classes,
                                     class_weights)


def is_multi_hot(labels):
  """Whether a batch's labels are multi-hot rows (--multi_label), not class
  ids, nor MixUp's float mixtures."""
  return labels.dtype.is_integer and labels.shape.rank == 2


def hits(probs, labels):
  """[B] float32: 1 where the prediction is right (`evaluation.hits`)."""
  if is_multi_hot(labels):
    right = tf.equal(probs >= evaluation.DEFAULT_THRESHOLD, labels > 0)
    return tf.cast(tf.reduce_all(right, -1), tf.float32)
  return tf.cast(tf.equal(tf.argmax(probs, -1, output_type=tf.int32),
                          labels), tf.float32)


def _multi_label_eval(probs, labels):
  """eval_fn's sums for multi-hot labels: binary cross-entropy, exact
  matches, and [C, 3] true positives, false positives and false negatives
  at `evaluation.DEFAULT_THRESHOLD` (padding rows, all -1, left out)."""
  valid = tf.cast(labels[:, 0] >= 0, tf.float32)
  labels = tf.maximum(labels, 0)
  truth = tf.cast(labels, tf.float32)
  per_example = keras.losses.binary_crossentropy(truth, probs)
  predicted = tf.cast(probs >= evaluation.DEFAULT_THRESHOLD, tf.float32)
  predicted *= valid[:, None]
  truth *= valid[:, None]
  counts = tf.stack([tf.reduce_sum(predicted * truth, 0),
                     tf.reduce_sum(predicted * (1 - truth), 0),
                     tf.reduce_sum((1 - predicted) * truth, 0)], -1)
  return (tf.reduce_sum(per_example * valid),
          tf.reduce_sum(hits(probs, labels) * valid), counts)


def make_eval_step(model, strategy, num_classes, class_weights=None):
  """A tf.function: batch -> summed loss, top-5 hits and confusion matrix.

  Sums reduce across replicas and workers, so evaluation is distributed like
  training. Padding examples (label -1) are masked out. With
  `class_weights` the summed loss weighs each example by its class's weight.
  """
  loss_weights = (None if class_weights is None else
                  tf.constant(class_weights, tf.float32))

  def eval_fn(images, labels):
    probs = model(images, training=False)
    if is_multi_hot(labels):
      return _multi_label_eval(probs, labels)
    valid = labels >= 0
    labels = tf.where(valid, labels, 0)
    weights = tf.cast(valid, tf.float32)
    per_example = keras.losses.sparse_categorical_crossentropy(labels, probs)
    if loss_weights is not None:
      per_example *= tf.gather(loss_weights, labels)
    k = min(5, num_classes)
    top_k = tf.cast(tf.math.in_top_k(labels, probs, k), tf.float32)
    confusion = tf.math.confusion_matrix(
        labels, tf.argmax(probs, -1), num_classes=num_classes,
        weights=weights, dtype=tf.float32)
    return (tf.reduce_sum(per_example * weights), tf.reduce_sum(top_k * weights),
            confusion)

  @tf.function
  def eval_step(batch):
    loss, top_k, confusion = strategy.run(eval_fn, args=batch)
    return tuple(strategy.reduce("SUM", v, axis=None)
                 for v in (loss, top_k, confusion))

  return eval_step


def eval_input(dataset, size, *, strategy, image_size, batch_size):
  """The distributed evaluation input of a split.

  Build it once and pass it to every `evaluate` of the same split: its
  resized images stay cached between passes.
  """
  return strategy.distribute_datasets_from_function(inputs_lib.input_fn(
      dataset, size=size, image_size=image_size,
      global_batch_size=batch_size, training=False))


def evaluate(model, dataset, size, *, strategy, class_names, image_size,
             batch_size, eval_step=None, dist=None, class_weights=None):
  """Evaluates `model` on a whole split under `strategy`.

  `dist`, from `eval_input`, reuses an evaluation input built before. With
  `class_weights` (which `eval_step`, if given, must weigh by too) the loss
  is the class-weighted mean cross-entropy ("loss_weighting": "class").

  Returns:
    The metrics dict of `evaluation.metrics_from_counts`.
  """
  num_classes = len(class_names)
  eval_step = eval_step or make_eval_step(model, strategy, num_classes,
                                          class_weights)
  dist = dist or eval_input(dataset, size, strategy=strategy,
                            image_size=image_size, batch_size=batch_size)
  loss = top_k = 0.0
  confusion = 0.0  # [C, C]; multi-label: [C, 3] counts, and top_k exact hits
  with console.Heartbeat("evaluation", total=-(-size // batch_size),
                         unit="batches") as beat:
    beat.done = 0
    for batch in dist:
      l, k, c = eval_step(batch)
      loss, top_k, confusion = (loss + float(l), top_k + float(k),
                                confusion + c)
      beat.done += 1
  if dataset.element_spec[1].shape.rank == 1:  # multi-hot labels
    return evaluation.multi_label_metrics_from_counts(
        confusion, exact=top_k, examples=size, loss=loss,
        class_names=class_names)
  if class_weights is not None:  # the weighted mean, times the examples
    counts = np.asarray(confusion, np.float64).sum(1)
    weight = float(counts @ np.asarray(class_weights, np.float64))
    loss *= counts.sum() / max(weight, 1e-12)
  metrics = evaluation.metrics_from_counts(confusion, top_k=top_k, loss=loss,
                                           class_names=class_names)
  if class_weights is not None:
    metrics["loss_weighting"] = "class"
  return metrics
