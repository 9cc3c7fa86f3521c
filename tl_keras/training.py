"""The training loop and the two-phase transfer recipe.

One custom loop over `strategy.run` serves every `tf.distribute` strategy,
including `MultiWorkerMirroredStrategy`, under which Keras 3 `model.fit`
does not run (keras-team/keras#20585).
"""

import contextlib
import dataclasses
import hashlib
import json
import logging
import math
import os
import shutil
import signal
import sys
import threading
import time

import keras
import numpy as np
import tensorflow as tf

from tl_keras import artifacts
from tl_keras import data as data_lib
from tl_keras import evaluation
from tl_keras import freezing
from tl_keras import models
from tl_keras import probe
from tl_keras.errors import UserError


@dataclasses.dataclass(frozen=True)
class PhaseSpec:
  """One stretch of training with one optimizer and schedule."""
  name: str  # "head", "finetune", "scratch", "pretrain"
  epochs: int
  learning_rate: float
  # Linear warmup over this fraction of the phase's steps, then cosine decay.
  warmup: float = 0.0
  optimizer: str = "adamw"
  weight_decay: float = 1e-4
  label_smoothing: float = 0.0
  jit_compile: bool = False  # XLA-compile the per-replica step
  # The phase runs at least this many optimizer steps: on a small dataset
  # its epochs grow to reach them (5 epochs of 100 images are 20 steps).
  min_steps: int = 0
  # Stop the phase once this fraction of its steps has passed without a new
  # best validation loss (0 = run every step).
  early_stopping: float = 0.0
  # Stop at the first epoch end at or past this fraction of the phase's
  # steps, its schedule unchanged (1 = the whole phase): a trial.
  stop_at: float = 1.0
  # Validate (and checkpoint) at the first epoch end at least this many
  # steps after the last validation (0 = every epoch): 100 images make
  # 4-step epochs, and validating after each one costs more than training.
  eval_steps: int = 0
  # Variable names (substrings) that weight decay leaves alone.
  no_decay: tuple = ()

  def epochs_for(self, steps_per_epoch):
    """Epochs actually run: `epochs`, or more to reach `min_steps`."""
    return max(self.epochs, math.ceil(self.min_steps / steps_per_epoch))


class Best:
  """The weights with the lowest validation loss seen, and their metrics.

  Validation loss, not accuracy: on a small validation split accuracy moves
  in coarse steps and ties often, while the loss also sees how confident
  the right answers are, so it picks better weights.
  """

  def __init__(self):
    self.loss = math.inf
    self.accuracy = -1.0
    self.weights = None
    self.where = None  # (phase, epoch)
    self.step = None  # global step

  def offer(self, model, val, where, step):
    """Keeps `model`'s weights if `val["loss"]` is a new best."""
    if val["loss"] < self.loss:
      self.loss, self.accuracy = val["loss"], val["accuracy"]
      self.where, self.step = where, step
      self.weights = [np.copy(w) for w in model.get_weights()]
      return True
    return False

  def restore(self, model):
    if self.weights is not None:
      model.set_weights(self.weights)

  def take(self, other, phase):
    """Takes `other`'s best (from a run renamed `phase`) if it is better."""
    if other.where is not None and other.loss < self.loss:
      self.loss, self.accuracy, self.step = other.loss, other.accuracy, (
          other.step)
      self.where, self.weights = (phase, other.where[1]), other.weights

  def state(self):
    """What a checkpoint records besides the weights."""
    return {"loss": self.loss if self.where else None,
            "accuracy": self.accuracy, "step": self.step,
            "where": list(self.where) if self.where else None}


class Summaries:
  """TensorBoard writers for train and validation; no-ops when disabled."""

  def __init__(self, logdir=None, profile_steps=None, every_steps=10):
    self.logdir = f"{logdir}/train" if logdir else None
    self.every_steps = every_steps  # training scalars every N steps
    # (first, last) global steps to trace with the TF profiler, or None.
    self.profile_steps = profile_steps if logdir else None
    self._profiling = False
    self.train = tf.summary.create_file_writer(f"{logdir}/train") if logdir else None
    self.validation = (tf.summary.create_file_writer(f"{logdir}/validation")
                       if logdir else None)

  def scalars(self, which, step, values):
    writer = getattr(self, which)
    if writer is None:
      return
    with writer.as_default(step=step):
      for name, value in values.items():
        tf.summary.scalar(name, value)

  def profile(self, step):
    """Starts or stops the TF profiler around the --profile_steps range."""
    if not self.profile_steps:
      return
    first, last = self.profile_steps
    if step == first and not self._profiling:
      tf.profiler.experimental.start(os.path.dirname(self.logdir))
      self._profiling = True
    elif step >= last and self._profiling:
      tf.profiler.experimental.stop()
      self._profiling = False
      logging.info("profiled steps %d-%d: open TensorBoard's Profile tab",
                   first, last)

  @property
  def enabled(self):
    return self.train is not None

  def png(self, which, name, png, step):
    """A PNG image (bytes) on the `which` writer."""
    writer = getattr(self, which)
    if writer is None:
      return
    image = tf.io.decode_png(png, channels=3)[None]
    with writer.as_default(step=step):
      tf.summary.image(name, image)

  def hparams(self, values, metrics):
    """The HParams dashboard row: run settings and final metrics."""
    if self.train is None:
      return
    from tensorboard.plugins.hparams import api as hp  # pylint: disable=g-import-not-at-top
    writer = tf.summary.create_file_writer(
        os.path.join(os.path.dirname(self.logdir), "hparams"))
    with writer.as_default(step=0):
      hp.hparams(values)
      for name, value in metrics.items():
        tf.summary.scalar(name, value)
    writer.flush()

  def text(self, name, text, step=0):
    if self.train is not None:
      with self.train.as_default(step=step):
        tf.summary.text(name, text)

  def flush(self):
    for writer in (self.train, self.validation):
      if writer is not None:
        writer.flush()


def fingerprint(model):
  """A short hash of all of `model`'s weights: equal weights, equal hash."""
  digest = hashlib.sha256()
  for weight in model.get_weights():
    digest.update(np.ascontiguousarray(weight, dtype=np.float32).tobytes())
  return digest.hexdigest()[:16]


def make_optimizer(spec, steps):
  """Optimizer with linear warmup then cosine decay over `steps` steps."""
  warmup = min(int(spec.warmup * steps), steps - 1)
  schedule = keras.optimizers.schedules.CosineDecay(
      initial_learning_rate=0.0 if warmup else spec.learning_rate,
      decay_steps=max(steps - warmup, 1),
      warmup_target=spec.learning_rate if warmup else None,
      warmup_steps=warmup)
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


def _step_functions(model, optimizer, strategy, num_classes, global_batch,
                    label_smoothing, jit_compile=False):
  """tf.functions for one training step and one evaluation step."""
  loss_scale = None
  if keras.mixed_precision.dtype_policy().name == "mixed_float16":
    with strategy.scope():
      loss_scale = LossScale()

  def train_fn(images, labels):
    if labels.shape.rank == 2:  # MixUp: mixtures of one-hot labels
      targets, labels = labels, tf.argmax(labels, -1, output_type=tf.int32)
    else:
      targets = tf.one_hot(labels, num_classes)
    with tf.GradientTape() as tape:
      probs = model(images, training=True)
      per_example = keras.losses.categorical_crossentropy(
          targets, probs, label_smoothing=label_smoothing)
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
    correct = tf.reduce_sum(tf.cast(
        tf.equal(tf.argmax(probs, -1, output_type=tf.int32), labels),
        tf.float32))
    return tf.reduce_sum(per_example), correct

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
      loss += strategy.reduce("SUM", step_loss, axis=None)
      correct += strategy.reduce("SUM", step_correct, axis=None)
    return loss, correct

  return train_steps, make_eval_step(model, strategy, num_classes)


def make_eval_step(model, strategy, num_classes):
  """A tf.function: batch -> summed loss, top-5 hits and confusion matrix.

  Sums reduce across replicas and workers, so evaluation is distributed like
  training. Padding examples (label -1) are masked out.
  """

  def eval_fn(images, labels):
    probs = model(images, training=False)
    valid = labels >= 0
    labels = tf.where(valid, labels, 0)
    weights = tf.cast(valid, tf.float32)
    per_example = keras.losses.sparse_categorical_crossentropy(labels, probs)
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
  return strategy.distribute_datasets_from_function(data_lib.input_fn(
      dataset, size=size, image_size=image_size,
      global_batch_size=batch_size, training=False))


def evaluate(model, dataset, size, *, strategy, class_names, image_size,
             batch_size, eval_step=None, dist=None):
  """Evaluates `model` on a whole split under `strategy`.

  `dist`, from `eval_input`, reuses an evaluation input built before.

  Returns:
    The metrics dict of `evaluation.metrics_from_counts`.
  """
  num_classes = len(class_names)
  eval_step = eval_step or make_eval_step(model, strategy, num_classes)
  dist = dist or eval_input(dataset, size, strategy=strategy,
                            image_size=image_size, batch_size=batch_size)
  loss = top_k = 0.0
  confusion = np.zeros((num_classes, num_classes))
  for batch in dist:
    l, k, c = eval_step(batch)
    loss, top_k, confusion = loss + float(l), top_k + float(k), confusion + c
  return evaluation.metrics_from_counts(confusion, top_k=top_k, loss=loss,
                                        class_names=class_names)


class _Progress:
  """keras Progbar on a terminal, one line per epoch otherwise."""

  def __init__(self, steps):
    self.bar = (keras.utils.Progbar(steps, stateful_metrics=["loss", "acc"])
                if sys.stdout.isatty() else None)

  def update(self, step, values):
    if self.bar:
      self.bar.update(step, values=list(values.items()))


def train_phase(model, spec, splits, *, strategy, image_size, batch_size,
                seed, summaries=None, first_step=0, best=None, augment=True,
                checkpointer=None, resume=None, history=None, features=None,
                carry=None):
  """Trains `model`'s trainable weights for the phase's step budget.

  The phase runs `spec.epochs_for(steps per epoch)` epochs: `spec.epochs`,
  or more when that many epochs of this dataset fall short of
  `spec.min_steps` optimizer steps.

  Validates after every epoch; `best` (if given) keeps the weights with the
  lowest validation loss. With a `checkpointer`, progress is saved every
  `checkpointer.every_steps` steps, at every epoch end, and when SIGTERM or
  SIGINT arrives (then `Stopped` is raised). `resume` (a progress dict from
  `Checkpointer.progress`) continues this phase at the exact step: weights,
  optimizer state, schedule position, and the data order (the input
  pipeline is deterministic, so the batches already seen are skipped).

  With `features` (a `FeatureCache`, for a frozen base) the head trains on
  the cached backbone outputs instead of running the base every step.

  `carry` (a dict) continues a phase in memory: one that a call stopped
  (`spec.stop_at`) goes on from where it was, with its optimizer, schedule
  position and input, when `carry` is given again. Each call leaves them in
  it.

  Returns:
    (history, next global step): history is one dict per validation.
  """
  summaries = summaries or Summaries()
  stepped = features.head if features else model  # what the step runs
  steps_per_epoch = math.ceil(splits.sizes["train"] / batch_size)
  epochs = spec.epochs_for(steps_per_epoch)
  total = steps_per_epoch * epochs
  carry = {} if carry is None else carry
  if "optimizer" in carry:
    optimizer = carry["optimizer"]
  else:
    with strategy.scope():
      optimizer = make_optimizer(spec, total)
      # Build slots now, in cross-replica context, not lazily in the step.
      optimizer.build(stepped.trainable_variables)
  train_steps, eval_step = _step_functions(
      stepped, optimizer, strategy, splits.num_classes, batch_size,
      spec.label_smoothing, spec.jit_compile)
  train = features.train if features else splits.train
  if "iterator" in carry:
    iterator = carry["iterator"]
  else:
    iterator = iter(strategy.distribute_datasets_from_function(
        data_lib.input_fn(
            train, size=splits.sizes["train"],
            image_size=None if features else image_size,
            global_batch_size=batch_size, training=True, augment=augment,
            seed=seed, num_classes=splits.num_classes)))
  val_input = eval_input(
      features.validation if features else splits.validation,
      splits.sizes["validation"], strategy=strategy,
      image_size=None if features else image_size, batch_size=batch_size)
  history = list(history or [])
  done, step = carry.get("done", 0), carry.get("step", first_step)
  if resume:
    # At step 0 of a phase a checkpoint holds weights but no optimizer.
    checkpointer.restore(model, optimizer if resume["step_in_phase"] else None,
                         resume, best)
    done, step = resume["step_in_phase"], resume["step"]
    for _ in range(done):  # the same batches, in the same order, skipped
      next(iterator)
    if done:
      logging.info("resuming phase %s at epoch %d, step %d of %d (global "
                   "step %d)", spec.name, done // steps_per_epoch + 1,
                   done % steps_per_epoch, steps_per_epoch, step)
  phase_start = step - done
  trainable = sum(int(np.prod(v.shape)) for v in model.trainable_variables)
  grown = (f" (grown from {spec.epochs} to reach {spec.min_steps} steps)"
           if epochs > spec.epochs else "")
  trial = (f", of which it runs the first {spec.stop_at:.0%}"
           if spec.stop_at < 1 else "")
  logging.info("phase %s: %d epochs%s x %d steps = %d steps%s, peak lr %g, "
               "%s trainable parameters", spec.name, epochs, grown,
               steps_per_epoch, total, trial, spec.learning_rate,
               f"{trainable:,}")
  if not done:
    summaries.text("phases", f"phase **{spec.name}** starts at step {step}",
                   step)

  # A fixed handful of validation images, shown with predictions each epoch.
  sample = (data_lib.to_numpy(splits.validation, image_size, limit=16)
            if summaries.enabled and image_size else None)

  def save(step_in_phase):
    if checkpointer:
      checkpointer.save(model, optimizer, phase=spec.name,
                        step_in_phase=step_in_phase, step=step,
                        history=history, best=best)

  sync_statistics = _statistics_sync(stepped, strategy)
  chunks = _ChunkSize(fixed=isinstance(
      strategy, tf.distribute.MultiWorkerMirroredStrategy))
  patience = math.ceil(spec.early_stopping * total)
  # Tiny epochs are validated together: every `group` epochs.
  group = max(1, math.ceil(spec.eval_steps / steps_per_epoch))
  loss_sum = correct = seen = 0.0
  start = time.time()
  for epoch in range(done // steps_per_epoch, epochs):
    if done >= spec.stop_at * total:
      break
    idle = _steps_without_gain(best, spec.name, phase_start, step)
    if patience and idle >= patience:
      logging.info("%s: %d steps without a new best validation loss (%.4f, "
                   "%s epoch %d): the phase stops early, %d of %d epochs run",
                   spec.name, idle, best.loss, *best.where, epoch, epochs)
      break
    progress = _Progress(steps_per_epoch)
    i = done % steps_per_epoch
    while i < steps_per_epoch:
      n = chunks.next(step, steps_per_epoch - i, _chunk_ends(
          step, checkpointer, summaries))
      lr = float(keras.ops.convert_to_numpy(optimizer.learning_rate))
      summaries.profile(step)
      began = time.perf_counter()
      loss, hits = train_steps(iterator, tf.constant(n))
      loss, hits = float(loss), float(hits)
      chunks.took(n, time.perf_counter() - began)
      loss_sum, correct, seen = loss_sum + loss, correct + hits, (
          seen + n * batch_size)
      step, done, i = step + n, done + n, i + n
      progress.update(i, {"loss": loss_sum / seen, "acc": correct / seen})
      every = summaries.every_steps
      if step // every > (step - n) // every or i == steps_per_epoch:
        summaries.scalars("train", step, {
            "loss": loss / (n * batch_size),
            "accuracy": hits / (n * batch_size),
            "learning_rate": lr, "phase": _PHASE_IDS.get(spec.name, -1)})
      if STOP.requested and i < steps_per_epoch:
        save(done)
        raise STOP.error(f"{spec.name} epoch {epoch + 1}, step {i}",
                         checkpointer)
      if (checkpointer and checkpointer.every_steps and
          step % checkpointer.every_steps == 0 and i < steps_per_epoch):
        save(done)
    if (epoch + 1) % group == 0 or epoch + 1 == epochs or (
        done >= spec.stop_at * total):
      sync_statistics()
      val = evaluate(stepped,
                     features.validation if features else splits.validation,
                     splits.sizes["validation"], strategy=strategy,
                     class_names=splits.class_names,
                     image_size=None if features else image_size,
                     batch_size=batch_size, eval_step=eval_step, dist=val_input)
      record = {"phase": spec.name, "epoch": epoch + 1, "step": step,
                "loss": loss_sum / seen, "accuracy": correct / seen,
                "val_loss": val["loss"], "val_accuracy": val["accuracy"],
                "seconds": time.time() - start}
      history.append(record)
      summaries.scalars("validation", step, {"loss": val["loss"],
                                             "accuracy": val["accuracy"]})
      _image_summaries(summaries, model, val, sample, splits.class_names, step)
      improved = best.offer(model, val, (spec.name, epoch + 1), step) if (
          best is not None) else False
      logging.info("%s epoch %d/%d: loss %.4f acc %.4f | val loss %.4f acc "
                   "%.4f%s (%.1fs)", spec.name, epoch + 1, epochs,
                   record["loss"], record["accuracy"], val["loss"],
                   val["accuracy"], " *best*" if improved else "",
                   record["seconds"])
      save(done)
      loss_sum = correct = seen = 0.0
      start = time.time()
    elif STOP.requested:  # between validations only a stop saves
      save(done)
    if STOP.requested and epoch < epochs - 1:
      raise STOP.error(f"the end of {spec.name} epoch {epoch + 1}",
                       checkpointer)
  summaries.flush()
  carry.update(optimizer=optimizer, iterator=iterator, done=done, step=step)
  return history, step


def _statistics_sync(model, strategy):
  """A function averaging training BatchNorm's moving statistics.

  Each replica updates them from its own batches, and across workers
  nothing keeps them equal: without this the workers of a cluster end with
  different models. Called before every validation (a no-op on one
  replica or with no BatchNorm training).
  """
  norms = [l for l in model._flatten_layers()  # pylint: disable=protected-access
           if isinstance(l, keras.layers.BatchNormalization) and l.trainable]
  variables = [v for l in norms for v in (l.moving_mean, l.moving_variance)]
  if strategy.num_replicas_in_sync == 1 or not variables:
    return lambda: None

  @tf.function
  def sync():
    local = strategy.run(lambda: [tf.identity(v.value) for v in variables])
    for variable, value in zip(variables, local):
      variable.assign(strategy.reduce("MEAN", value, axis=None))

  return sync


def _steps_without_gain(best, phase, phase_start, step):
  """Steps of `phase` since the best weights last improved.

  Counted from the best step when it lies in this phase, else from the
  phase's start. Derived from what checkpoints hold, so a resumed run
  stops where an uninterrupted one would.
  """
  if best is None or best.where is None:
    return 0
  if best.where[0] == phase:
    return step - best.step
  return step - phase_start


class _ChunkSize:
  """How many steps each call of the training function runs.

  Starts at one step and doubles while a call takes under `target` seconds,
  so tiny steps (a head on cached features) run many to a call and big ones
  stay one to a call. A call never crosses an epoch end, a checkpoint or a
  profiler boundary, and SIGTERM is acted on within about `target` seconds.
  `fixed`: always one step (workers of a cluster must make the same calls,
  and their timings differ).
  """

  def __init__(self, target=0.5, limit=1000, fixed=False):
    self.size, self.target, self.limit, self.fixed = 1, target, limit, fixed
    self._calls = 0

  def next(self, step, left, ends):
    """Steps for the call starting at global `step`, `left` in the epoch."""
    to_end = min([e - step for e in ends if e > step], default=left)
    return max(1, min(self.size, left, to_end))

  def took(self, steps, seconds):
    self._calls += 1
    if self.fixed or self._calls == 1:  # the first call includes tracing
      return
    per_step = seconds / steps
    if steps == self.size and per_step * self.size * 2 <= self.target:
      self.size = min(self.size * 2, self.limit)


def _chunk_ends(step, checkpointer, summaries):
  """Global steps a call must stop at: checkpoints and profiler edges."""
  ends = list(summaries.profile_steps or ())
  every = checkpointer.every_steps if checkpointer else 0
  if every:
    ends.append((step // every + 1) * every)
  return ends


class FeatureCache:
  """The frozen base's pooled features, computed once for the head phase.

  While the base is frozen (and runs in inference mode) it maps an image to
  the same features every epoch, so phase 1 runs it once per image (and per
  augmented view) and trains the head, the very same dropout and classifier
  layers, on the stored vectors.

  Attributes:
    head: features -> probabilities, sharing the classifier's weights.
    train: (feature, label) dataset, `views` views of each training image:
      view 0 unaugmented, the others drawn from the augmentation policy.
    validation: (feature, label) dataset of the validation split.
  """

  def __init__(self, model, splits, *, image_size, batch_size, views=1,
               seed=0, directory=None, augment="light"):
    """Runs the base over the splits.

    Args:
      model: the classifier, base frozen.
      splits: its `data.Splits`.
      image_size: the input size (None for token dicts).
      batch_size: batch size of the feature pass.
      views: views per training image.
      seed: seed of the augmented views.
      augment: the `data.augmentation` policy the views are drawn from.
      directory: None keeps the features in memory; a folder streams them
        into TFRecord files there, read back by tf.data each epoch (for
        feature sets larger than memory).
    """
    start = time.time()
    pooled, head = models.head_parts(model)
    extractor = keras.Model(model.input, pooled)
    dim = pooled.shape[-1]
    self.head = keras.Sequential([keras.Input((dim,)), *head])
    views = max(1, views)

    # One function for every split: the last, smaller batch of each is
    # traced once more, not once per split.
    predict = tf.function(lambda x: extractor(x, training=False),
                          reduce_retracing=True)

    def features(dataset, name, view_seed=None):
      path = directory and os.path.join(directory, f"{name}.tfrecord")
      return _features(predict, dataset, image_size, batch_size,
                       view_seed=view_seed, path=path, dim=dim,
                       augment=augment)

    if augment in ("none", False):
      views = 1  # unaugmented views would all be the same
    train = [features(splits.train, f"train-view{v}",
                      None if v == 0 else (seed, v)) for v in range(views)]
    self.validation = features(splits.validation, "validation")
    if directory:
      self.train = train[0]
      for more in train[1:]:
        self.train = self.train.concatenate(more)
    else:
      self.train = tf.data.Dataset.from_tensor_slices((
          np.concatenate([f for f, _ in train]),
          np.concatenate([l for _, l in train])))
      self.validation = tf.data.Dataset.from_tensor_slices(self.validation)
    logging.info("feature cache (%s): %d training views x %d images and %d "
                 "validation images through the frozen base once (%.1fs); "
                 "the head trains on %d-wide features",
                 directory or "memory", views, splits.sizes["train"],
                 splits.sizes["validation"], time.time() - start, dim)

  @staticmethod
  def fits(splits, model, views, limit=data_lib.CACHE_LIMIT_BYTES):
    """Whether the features of all views fit in memory."""
    dim = models.head_parts(model)[0].shape[-1]
    return 4 * dim * (views * splits.sizes["train"]
                      + splits.sizes["validation"]) < limit


def _features(predict, dataset, image_size, batch_size, view_seed=None,
              path=None, dim=None, augment="light"):
  """(features [N, C], labels [N]) of a split, in its order.

  `predict` maps a batch of inputs to a batch of features.
  image_size None: the examples are token dicts, used as they are. With a
  `path`, the features go to that TFRecord file and a (feature, label)
  dataset reading it is returned instead.
  """
  if image_size is None:
    return _features_of_batches(predict, dataset.batch(batch_size), path,
                                dim)
  ds = dataset.map(lambda x, y: (tf.cast(data_lib.resize(x, image_size),
                                        tf.float32), y),
                   num_parallel_calls=tf.data.AUTOTUNE).batch(batch_size)
  if view_seed is not None:
    # The training input's policy; MixUp mixes labels, so its views are
    # the flip-and-shift part alone.
    policy = "light" if augment == "mixup" else augment
    augmenter, _ = data_lib.augmentation(
        policy, view_seed[0] * 1000 + view_seed[1])
    ds = ds.map(augmenter)
  return _features_of_batches(predict, ds, path, dim)


def _features_of_batches(predict, ds, path=None, dim=None):
  if path:
    return _features_to_file(predict, ds, path, dim)
  features, labels = [], []
  for x, y in ds.prefetch(tf.data.AUTOTUNE):
    features.append(predict(x).numpy())
    labels.append(y.numpy())
  return (np.concatenate(features).astype(np.float32),
          np.concatenate(labels).astype(np.int32))


def _features_to_file(predict, ds, path, dim):
  """Writes one TFRecord per batch (features and labels as tensors).

  Returns:
    The unbatched (float32 feature [dim], int32 label) dataset reading it.
  """
  with tf.io.TFRecordWriter(path) as writer:
    for x, y in ds.prefetch(tf.data.AUTOTUNE):
      writer.write(tf.train.Example(features=tf.train.Features(feature={
          name: tf.train.Feature(bytes_list=tf.train.BytesList(value=[
              tf.io.serialize_tensor(value).numpy()]))
          for name, value in (("x", tf.cast(predict(x), tf.float32)),
                              ("y", tf.cast(y, tf.int32)))})).SerializeToString())
  spec = {k: tf.io.FixedLenFeature([], tf.string) for k in ("x", "y")}

  def parse(record):
    parts = tf.io.parse_single_example(record, spec)
    x = tf.io.parse_tensor(parts["x"], tf.float32)
    x.set_shape([None, dim])
    y = tf.io.parse_tensor(parts["y"], tf.int32)
    y.set_shape([None])
    return x, y

  return tf.data.TFRecordDataset(path).map(
      parse, num_parallel_calls=tf.data.AUTOTUNE).unbatch()


def _image_summaries(summaries, model, val, sample, class_names, step):
  """Confusion matrix and captioned validation images, for TensorBoard."""
  if not summaries.enabled:
    return
  from tl_keras import report  # pylint: disable=g-import-not-at-top
  summaries.png("validation", "confusion_matrix",
                report.confusion_matrix_quick_png(val["confusion_matrix"],
                                                  class_names), step)
  images, labels = sample if sample is not None else ((), ())
  if len(images):
    predicted = model(tf.cast(images, tf.float32), training=False).numpy()
    summaries.png("validation", "predictions", report.prediction_grid_png(
        images, labels, predicted.argmax(-1), class_names), step)


def _use_feature_cache(mode, strategy, splits, model, views, directory):
  """--feature_cache as None (off), "memory" or "disk".

  auto: memory if the features fit, else disk if there is a `directory`.
  The features are computed and the head fitted on this host, so not
  under several workers (each would fit its own) or on a TPU.
  """
  if mode == "off":
    return None
  if isinstance(strategy, (tf.distribute.MultiWorkerMirroredStrategy,
                           tf.distribute.TPUStrategy)):
    logging.info("feature cache off: it runs on one host, not under %s",
                 type(strategy).__name__)
    return None
  if mode == "auto":
    if FeatureCache.fits(splits, model, views):
      return "memory"
    if directory:
      logging.info("feature cache on disk: the features would not fit in "
                   "memory")
      return "disk"
    logging.info("feature cache off: the features would not fit in memory")
    return None
  if mode == "disk" and not directory:
    raise ValueError("--feature_cache=disk needs a directory")
  return mode


class Stopped(UserError):
  """SIGTERM or SIGINT stopped training; progress was checkpointed."""

  def __init__(self, message, exit_code):
    super().__init__(message)
    self.exit_code = exit_code


class _StopRequest:
  """SIGTERM/SIGINT during training: finish the step, checkpoint, stop.

  Cloud schedulers send SIGTERM before preempting a machine; Ctrl-C sends
  SIGINT. Either one is noted by the handler and acted on at the next step
  boundary, where the state is consistent.
  """

  def __init__(self):
    self.signal = None

  @property
  def requested(self):
    return self.signal is not None

  @contextlib.contextmanager
  def handling(self):
    """Installs the handlers (main thread only) for the duration."""
    if threading.current_thread() is not threading.main_thread():
      yield
      return
    self.signal = None
    previous = {sig: signal.signal(sig, self._note)
                for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
      yield
    finally:
      for sig, handler in previous.items():
        signal.signal(sig, handler)

  def _note(self, signum, frame):
    del frame
    if signum == signal.SIGINT and self.signal == signal.SIGINT:
      raise KeyboardInterrupt  # a second Ctrl-C: stop now, unsaved
    self.signal = signum

  def error(self, where, checkpointer):
    name = signal.Signals(self.signal).name
    saved = (f"progress saved in {checkpointer.directory}; rerun the same "
             "command to resume" if checkpointer else "nothing was saved")
    return Stopped(f"stopped by {name} at {where}: {saved}",
                   128 + self.signal)


STOP = _StopRequest()


class Checkpointer:
  """Training progress on disk, so a killed or preempted run resumes.

  `directory` holds TF checkpoints of the model and the phase's optimizer
  (at most `keep`), `best.npz` (the best weights so far) and
  `progress.json`: the phase, step within it, global step, history, the
  best validation loss, the recipe's `choices`, and `settings`, what a
  resuming run must share. Files are replaced atomically, so a kill at any
  moment leaves the previous complete checkpoint.
  """

  def __init__(self, directory, *, every_steps=0, keep=2, settings=None,
               restore_from=None):
    self.directory = directory
    self.every_steps = every_steps
    self.keep = keep
    self.settings = settings or {}
    # Non-chief workers write to a private directory but resume from the
    # chief's (the tf.distribute multi-worker convention).
    self.restore_from = restore_from or directory
    # What the recipe chose on the way (head fit, fine-tuning learning
    # rate): saved with every checkpoint, so a resumed run does not choose
    # again.
    self.choices = {}
    self._best_saved = None

  def progress(self):
    """The saved progress dict, or None when there is none."""
    path = os.path.join(self.restore_from, "progress.json")
    if not os.path.exists(path):
      return None
    with open(path, encoding="utf-8") as f:
      return json.load(f)

  def save(self, model, optimizer, *, phase, step_in_phase, step, history,
           best):
    """Writes a checkpoint at this point of `phase`."""
    os.makedirs(self.directory, exist_ok=True)
    manager = tf.train.CheckpointManager(
        _checkpoint(model, optimizer), self.directory,
        max_to_keep=self.keep)
    path = manager.save(checkpoint_number=step)
    if best is not None and best.weights is not None and (
        self._best_saved != best.where):
      self.save_weights("best", best.weights)
      self._best_saved = best.where
    artifacts.write_json(os.path.join(self.directory, "progress.json"), {
        "phase": phase, "step_in_phase": step_in_phase, "step": step,
        "checkpoint": os.path.basename(path), "history": history,
        "best": best.state() if best else Best().state(),
        "choices": self.choices, "settings": self.settings})

  def save_weights(self, name, weights):
    """Keeps a list of arrays as `name`.npz, replaced atomically."""
    os.makedirs(self.directory, exist_ok=True)
    tmp = os.path.join(self.directory, f"{name}.tmp.npz")
    np.savez(tmp, *weights)
    os.replace(tmp, os.path.join(self.directory, f"{name}.npz"))

  def load_weights(self, name):
    """What `save_weights` kept as `name`, or None."""
    path = os.path.join(self.restore_from, f"{name}.npz")
    if not os.path.exists(path):
      return None
    with np.load(path) as saved:
      return [saved[f"arr_{i}"] for i in range(len(saved.files))]

  def restore(self, model, optimizer, progress, best=None):
    """Loads the checkpoint `progress` names into `model` (and optimizer)."""
    path = os.path.join(self.restore_from, progress["checkpoint"])
    _checkpoint(model, optimizer).read(path).assert_existing_objects_matched()
    weights = self.load_weights("best")
    if best is not None and progress["best"]["where"] and weights:
      best.weights = weights
      best.loss = progress["best"]["loss"]
      best.accuracy = progress["best"]["accuracy"]
      best.step = progress["best"]["step"]
      best.where = tuple(progress["best"]["where"])
      self._best_saved = best.where


def _checkpoint(model, optimizer):
  """What a checkpoint holds: weights, optimizer, and the random state.

  Keras keeps dropout's random state in seed-generator variables that the
  model does not track for `tf.train.Checkpoint`; they are added by hand so
  a resumed run draws the same dropout masks as an uninterrupted one.
  """
  objects = {"model": model, "seeds": [
      v.value for v in model.variables if "seed_generator" in v.path]}
  if optimizer is not None:
    objects["optimizer"] = optimizer
  return tf.train.Checkpoint(**objects)


_PHASE_IDS = {"pretrain": 0, "head": 1, "finetune": 2, "scratch": 3}


@dataclasses.dataclass(frozen=True)
class Recipe:
  """The two-phase transfer recipe's settings."""
  head: PhaseSpec
  # learning_rate 0: phase 2 picks it from `finetune_lrs` by short trials.
  finetune: PhaseSpec
  unfreeze: tuple  # from config.parse_unfreeze
  # BatchNorm in the unfrozen part: "frozen", "train", or "auto" (frozen,
  # unless a trial with it training reaches a lower validation loss).
  batchnorm: str = "frozen"
  # A decade apart: fine-tuning a small backbone pretrained on a related
  # task wants about 1e-3, an ImageNet CNN about 1e-4, BERT a few 1e-5.
  finetune_lrs: tuple = (1e-5, 1e-4, 1e-3)
  # Each trial runs this fraction of phase 2, on its full schedule: long
  # enough for a high rate to get past the first steps' disruption of the
  # pretrained features, which shorter trials mistake for failure.
  trial_fraction: float = 1 / 3


# Images whose batch statistics set BatchNorm's moving statistics.
CALIBRATION_IMAGES = 2048


def run_recipe(model, recipe, splits, *, strategy, image_size, batch_size,
               seed, summaries=None, augment=True, checkpointer=None,
               feature_cache="auto", cache_views=1, feature_dir=None):
  """Phase 1 (head, base frozen) then phase 2 (top of base unfrozen).

  Phase 1 fits the head as a linear probe on cached features
  (`probe.fit`): in memory or in TFRecord files in `feature_dir` (deleted
  after phase 1), per `_use_feature_cache`. Without the cache it trains
  the head with the training loop. Phase 2 starts from phase 1's best
  weights; its learning rate and BatchNorm mode, when not given, are picked
  by short trials (`choose_finetuning`). The weights with the lowest
  validation loss over both phases end up in `model`. With a
  `checkpointer` holding progress, finished phases are skipped and the
  interrupted one resumes where it stopped.

  Returns:
    (history, info): per-epoch history and a dict of what was done.
  """
  best = Best()
  saved = checkpointer.progress() if checkpointer else None
  order = ["head", "finetune", "done"]
  reached = order.index(saved["phase"]) if saved else 0
  history, step = (saved["history"], saved["step"]) if saved else ([], 0)
  choices = dict(saved.get("choices") or {}) if saved else {}
  auto = augment == "auto"
  if auto:  # until the head says whether mirror images are the same class
    augment = choices.get("augment", {}).get("policy", "shift")
    if not recipe.head.epochs and image_size and reached == 0:
      choices["augment"] = {"policy": augment}
      logging.info("--augment=auto: shift (no phase-1 head to tell whether "
                   "mirror images keep their class, so no flips)")
  common = dict(strategy=strategy, image_size=image_size,
                batch_size=batch_size, seed=seed, augment=augment)
  info = {}
  head = None  # the weights phase 1 ended with

  def save_between_phases():
    if checkpointer:
      checkpointer.choices = choices
      checkpointer.save(model, None, phase="finetune", step_in_phase=0,
                        step=step, history=history, best=best)

  with STOP.handling():
    if reached == 0 and recipe.batchnorm == "train" and image_size and (
        models.has_batchnorm(model)):
      images, _ = data_lib.to_numpy(splits.train, image_size,
                                    limit=CALIBRATION_IMAGES)
      freezing.recalibrate_batchnorm(model, images.astype(np.float32),
                                     batch_size)
      logging.info("BatchNorm will train: moving statistics set from %d "
                   "training images first, so phase 1 sees the features "
                   "phase 2 computes", len(images))
    if recipe.head.epochs and reached == 0:
      start = time.time()
      where = _use_feature_cache(feature_cache, strategy, splits, model,
                                 cache_views, feature_dir)
      if where:
        choices["head"] = _fit_head(
            model, splits, where=where, views=cache_views,
            directory=feature_dir, step=step, history=history, best=best,
            summaries=summaries, **common)
      else:
        history, step = train_phase(
            model, recipe.head, splits, first_step=step, resume=saved,
            history=history, summaries=summaries, best=best,
            checkpointer=checkpointer, **common)
      info["head_seconds"] = time.time() - start
      best.restore(model)
      if auto and image_size:
        choices["augment"] = choose_augmentation(
            model, splits, image_size=image_size, batch_size=batch_size)
        common["augment"] = choices["augment"]["policy"]
      head = [np.copy(w) for w in model.get_weights()]
      if checkpointer:
        checkpointer.save_weights("head", head)
      save_between_phases()
    if recipe.finetune.epochs and reached <= 1:
      start = time.time()
      carry = None
      if "finetune" not in choices:
        if reached == 1:  # the weights phase 1 ended with
          checkpointer.restore(model, None, saved, best)
        with strategy.scope():
          choices["finetune"], winner = choose_finetuning(
              model, recipe, splits, may_skip=bool(recipe.head.epochs),
              first_step=step, **common)
        saved, reached = None, 1
      chosen = choices["finetune"]
      with strategy.scope():
        info["unfrozen_layers"] = models.unfreeze_top(
            model, *recipe.unfreeze,
            train_batchnorm=chosen["batchnorm"] == "train")
      if saved is None:  # just chosen: continue the winning trial, if any
        if winner:
          model.set_weights(winner["weights"])
          history += winner["history"]
          best.take(winner["best"], "finetune")
          carry = winner["carry"]
        if checkpointer:  # a resumed run continues from here, not before
          checkpointer.choices = choices
          checkpointer.save(
              model, carry and carry["optimizer"], phase="finetune",
              step_in_phase=carry["done"] if carry else 0,
              step=carry["step"] if carry else step, history=history,
              best=best)
          saved = checkpointer.progress()
      if chosen.get("skip"):
        choices["kept"] = "head"
      else:
        if not info["unfrozen_layers"]:
          logging.warning("--unfreeze leaves no base layer with weights "
                          "trainable (the top layers are BatchNorm, "
                          "activations or pooling): phase 2 trains the head "
                          "only; unfreeze more layers")
        spec = dataclasses.replace(recipe.finetune,
                                   learning_rate=chosen["learning_rate"])
        history, step = train_phase(
            model, spec, splits, first_step=step, history=history,
            resume=saved if reached == 1 and not carry else None,
            summaries=summaries, best=best, checkpointer=checkpointer,
            carry=carry, **common)
      info["finetune_seconds"] = time.time() - start
    elif recipe.finetune.epochs:  # resumed after both phases
      with strategy.scope():
        info["unfrozen_layers"] = models.unfreeze_top(
            model, *recipe.unfreeze,
            train_batchnorm=choices["finetune"]["batchnorm"] == "train")
    if reached == 2:
      checkpointer.restore(model, None, saved, best)
      logging.info("resuming after training: both phases were done")
    head = head or (checkpointer and checkpointer.load_weights("head"))
    if reached < 2 and head and best.where and best.where[0] != "head":
      choices["kept"] = _keep_simplest(model, head, best, history, splits,
                                       image_size, batch_size)
    elif reached < 2 and head:
      choices["kept"] = "head"
    best.restore(model)
    if checkpointer and reached < 2:
      checkpointer.choices = choices
      checkpointer.save(model, None, phase="done", step_in_phase=0, step=step,
                        history=history, best=best)
  info["choices"] = choices
  info["best_validation_loss"] = best.loss
  info["best_validation_accuracy"] = best.accuracy
  info["best_epoch"] = list(best.where) if best.where else None
  logging.info("best validation loss %.4f, accuracy %.4f (%s epoch %s)",
               best.loss, best.accuracy, *(best.where or ("-", "-")))
  return history, info


# Accuracy the phase-1 head may lose on mirrored validation images before
# --augment=auto leaves the horizontal flip out.
MIRROR_DROP = 0.05


def choose_augmentation(model, splits, *, image_size, batch_size):
  """--augment=auto: "light", or "shift" if the classes are not mirror-symmetric.

  The phase-1 head is evaluated on the validation images and on their
  mirror images. Photos of objects keep their class when mirrored; digits,
  letters and arrows do not, and a head that learnt them loses accuracy on
  the mirrored ones. Training on flipped images would then teach the wrong
  labels, so the flip is left out.

  Returns:
    {"policy", "accuracy", "mirrored_accuracy"}.
  """
  accuracy = []
  for mirror in (False, True):
    probs, labels = validation_predictions(
        model, splits, image_size=image_size, batch_size=batch_size,
        mirror=mirror)
    accuracy.append(float(np.mean(probs.argmax(-1) == labels)))
  plain, mirrored = accuracy
  policy = "shift" if mirrored < plain - MIRROR_DROP else "light"
  logging.info("--augment=auto: %s (validation accuracy %.4f, %.4f on mirror "
               "images%s)", policy, plain, mirrored,
               ": mirror images are another class, no flips" if
               policy == "shift" else "")
  return {"policy": policy, "accuracy": plain, "mirrored_accuracy": mirrored}


def validation_predictions(model, splits, *, image_size, batch_size,
                           mirror=False):
  """`model`'s probabilities on the validation split, in order, and labels.

  Run on this host, outside the strategy: every worker computes the same.
  `mirror`: on the mirror images (images only).
  """
  fn = data_lib.input_fn(splits.validation, size=splits.sizes["validation"],
                         image_size=image_size, global_batch_size=batch_size,
                         training=False)
  probs, labels = [], []
  for x, y in fn(tf.distribute.InputContext()):
    keep = y.numpy() >= 0
    if mirror:
      x = tf.reverse(x, axis=[2])
    probs.append(np.asarray(model(x, training=False))[keep])
    labels.append(y.numpy()[keep])
  return np.concatenate(probs), np.concatenate(labels)


def validation_losses(model, splits, *, image_size, batch_size):
  """Per-example cross-entropy of `model` on the validation split, in order."""
  probs, labels = validation_predictions(model, splits, image_size=image_size,
                                         batch_size=batch_size)
  return keras.losses.sparse_categorical_crossentropy(labels, probs).numpy()


def clearly_lower(losses, reference):
  """Whether `losses` beat `reference` by more than one standard error.

  Both are per-example losses on the same examples; the standard error is
  that of the mean per-example difference (the one-standard-error rule:
  prefer the simpler model unless the data clearly say otherwise).

  Returns:
    (clearly lower, mean gain, standard error).
  """
  difference = np.asarray(losses) - np.asarray(reference)
  error = float(difference.std(ddof=1) / np.sqrt(len(difference))) if len(
      difference) > 1 else 0.0
  return bool(difference.mean() < -error), float(-difference.mean()), error


def _keep_simplest(model, head, best, history, splits, image_size,
                   batch_size):
  """Phase 2's best weights, unless they are not clearly better than phase 1's.

  Phase 2 picks among many checkpoints of several trials, phase 1 among a
  few head strengths, so on a small validation split phase 2's best looks
  better than it is. It is kept only if its validation loss is `clearly_lower`
  than the phase-1 head's; otherwise the simpler model, the linear probe on
  the pretrained features, is kept. `best` is updated to what is kept.

  Returns:
    "finetune" or "head".
  """
  common = dict(image_size=image_size, batch_size=batch_size)
  best.restore(model)
  tuned = validation_losses(model, splits, **common)
  model.set_weights(head)
  lower, gain, error = clearly_lower(
      tuned, validation_losses(model, splits, **common))
  if lower:
    logging.info("phase 2 lowered the validation loss by %.4f (standard "
                 "error %.4f): its weights are kept", gain, error)
    return "finetune"
  row = next(h for h in history if h["phase"] == "head")
  logging.info("phase 2 lowered the validation loss by only %.4f (standard "
               "error %.4f): the phase-1 head on the pretrained features is "
               "kept, the simpler model", gain, error)
  best.weights, best.where, best.step = head, ("head", 1), row["step"]
  best.loss, best.accuracy = row["val_loss"], row["val_accuracy"]
  return "head"


def _fit_head(model, splits, *, where, views, directory, step, history,
              best, summaries, strategy, image_size, batch_size, seed,
              augment):
  """Phase 1 on cached features: the head fitted as a linear probe.

  Sets the classification layer's weights, appends the phase's one history
  row and offers the result to `best`.

  Returns:
    What `run.json` records about the fit (`probe.Fit.summary`).
  """
  start = time.time()
  if where == "disk":
    shutil.rmtree(directory, ignore_errors=True)
    os.makedirs(directory)
  try:
    cache = FeatureCache(model, splits, image_size=image_size,
                         batch_size=batch_size, views=views, seed=seed,
                         directory=directory if where == "disk" else None,
                         augment=augment)
    fit = probe.fit(cache.train, cache.validation, splits.num_classes,
                    seed=seed)
  finally:
    if where == "disk":
      shutil.rmtree(directory, ignore_errors=True)
  models.head_parts(model)[1][-1].set_weights([fit.kernel, fit.bias])
  chosen = fit.grid[[g["strength"] for g in fit.grid].index(fit.strength)]
  # The whole model on the validation split: the fit's own figures up to
  # rounding, and a confusion matrix for TensorBoard.
  val = evaluate(model, splits.validation, splits.sizes["validation"],
                 strategy=strategy, class_names=splits.class_names,
                 image_size=image_size, batch_size=batch_size)
  history.append({"phase": "head", "epoch": 1, "step": step,
                  "loss": chosen["train_loss"],
                  "accuracy": chosen["train_accuracy"],
                  "val_loss": val["loss"], "val_accuracy": val["accuracy"],
                  "seconds": time.time() - start})
  summaries = summaries or Summaries()
  summaries.scalars("validation", step, {"loss": val["loss"],
                                         "accuracy": val["accuracy"]})
  sample = (data_lib.to_numpy(splits.validation, image_size, limit=16)
            if summaries.enabled and image_size else None)
  _image_summaries(summaries, model, val, sample, splits.class_names, step)
  best.offer(model, val, ("head", 1), step)
  return fit.summary()


def choose_finetuning(model, recipe, splits, *, strategy, image_size,
                      batch_size, seed, augment, may_skip=True, first_step=0):
  """Phase 2's learning rate and BatchNorm mode, and the run that continues.

  Given ones are used as they are. Otherwise each candidate runs the first
  `recipe.trial_fraction` of phase 2 from the weights phase 1 ended with,
  and the one with the lowest validation loss wins: first the learning
  rates of `recipe.finetune_lrs` (BatchNorm frozen under "auto"), then,
  under "auto", BatchNorm training at the winning rate. The winner is not
  run again: phase 2 continues it (its weights, optimizer and input), so
  the run that was measured is the run that is kept, and its trial steps
  are not spent twice. `model` is left with the weights it came with.

  If no trial's best weights have a lower mean validation loss than the
  weights `model` came with, phase 2 is not worth running: "skip" (only
  when `may_skip`: those weights hold a fitted head). A trial that gains a
  little is continued: it has run at its peak rate, with the decay still
  to come, and `_keep_simplest` judges the finished phase.

  Returns:
    (choice, winner): choice is {"learning_rate", "batchnorm",
    "trial_steps", "trials": [...], "skip"}, what run.json records;
    winner, None without trials or when skipped, is the winning trial:
    {"carry" (for `train_phase`), "weights" (at its end), "history",
    "best" (a `Best`)}.
  """
  spec = recipe.finetune
  lrs = [spec.learning_rate] if spec.learning_rate else list(
      recipe.finetune_lrs)
  batchnorm = recipe.batchnorm if models.has_batchnorm(model) else "frozen"
  modes = {"frozen": ["frozen"], "train": ["train"],
           "auto": ["frozen", "train"]}[batchnorm]
  if len(lrs) == 1 and len(modes) == 1:
    return {"learning_rate": lrs[0], "batchnorm": modes[0], "trial_steps": 0,
            "trials": [], "skip": False}, None
  trial_spec = dataclasses.replace(spec, early_stopping=0.0,
                                   stop_at=recipe.trial_fraction)
  start = [np.copy(w) for w in model.get_weights()]
  reference = validation_losses(model, splits, image_size=image_size,
                                batch_size=batch_size)
  common = dict(strategy=strategy, image_size=image_size,
                batch_size=batch_size, seed=seed, augment=augment)
  trials = []

  def trial(lr, mode):
    logging.info("trial %d: phase 2 at lr %g with BatchNorm %s, its first "
                 "%.0f%%", len(trials) + 1, lr, mode,
                 100 * recipe.trial_fraction)
    model.set_weights(start)
    models.unfreeze_top(model, *recipe.unfreeze,
                        train_batchnorm=mode == "train")
    best, carry = Best(), {}
    rows, step = train_phase(
        model, dataclasses.replace(trial_spec, learning_rate=lr), splits,
        best=best, first_step=first_step, carry=carry, **common)
    run = {"carry": carry, "weights": [np.copy(w) for w in model.get_weights()],
           "history": rows, "best": best, "lr": lr, "mode": mode}
    best.restore(model)
    run["losses"] = validation_losses(model, splits, image_size=image_size,
                                      batch_size=batch_size)
    trials.append({"learning_rate": lr, "batchnorm": mode,
                   "steps": step - first_step, "validation_loss": best.loss,
                   "validation_accuracy": best.accuracy})
    logging.info("trial: lr %g, BatchNorm %s: best validation loss %.4f, "
                 "accuracy %.4f", lr, mode, best.loss, best.accuracy)
    return run

  # Only the best run so far is kept (its optimizer can be large). Ties (to
  # 4 decimals) go to the lower rate, the smaller change to the pretrained
  # features, and to frozen BatchNorm.
  winner = None
  for lr, mode in [(lr, modes[0]) for lr in sorted(lrs)]:
    run = trial(lr, mode)
    if winner is None or round(run["best"].loss, 4) < round(
        winner["best"].loss, 4):
      winner = run
  for mode in modes[1:]:
    run = trial(winner["lr"], mode)
    if round(run["best"].loss, 4) < round(winner["best"].loss, 4):
      winner = run
  model.set_weights(start)
  _, gain, _ = clearly_lower(winner["losses"], reference)
  chosen = {"learning_rate": winner["lr"], "batchnorm": winner["mode"],
            "trial_steps": sum(t["steps"] for t in trials), "trials": trials,
            "skip": may_skip and gain <= 0}
  if chosen["skip"]:
    logging.info("no trial lowered the validation loss (the best, lr %g "
                 "with BatchNorm %s, by %.4f): phase 2 is skipped and phase "
                 "1's head is the model", winner["lr"], winner["mode"], gain)
    return chosen, None
  logging.info("phase 2 goes on from the trial at lr %g with BatchNorm %s "
               "(picked by %d trials)", winner["lr"], winner["mode"],
               len(trials))
  return chosen, winner
