"""One phase of training under any tf.distribute strategy: `train_phase`.

One custom loop over `strategy.run` serves every `tf.distribute` strategy,
including `MultiWorkerMirroredStrategy`, under which Keras 3 `model.fit`
does not run (keras-team/keras#20585).
"""

import dataclasses
import hashlib
import logging
import math
import sys
import time

import keras
import numpy as np
import tensorflow as tf

from tl_keras import console
from tl_keras import inputs as inputs_lib
from tl_keras.training import steps as steps_lib
from tl_keras.training import summaries as summaries_lib


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
  # The share of zeros of the pruned kernels (`pruning`); 0 = no pruning.
  # Pruning gradually, the phase runs every step, and only weights with
  # the final masks count as best.
  prune_to: float = 0.0
  # Pruned in blocks of this many neighbours along a kernel's input axis.
  prune_block: int = 1
  # "gradual": the phase prunes, on a schedule. "oneshot": the network was
  # pruned before the phase (`oneshot`), which keeps its zeros.
  prune_method: str = "gradual"

  def epochs_for(self, steps_per_epoch):
    """Epochs actually run: `epochs`, or more to reach `min_steps`."""
    return max(self.epochs, math.ceil(self.min_steps / steps_per_epoch))


def fingerprint(model):
  """A short hash of all of `model`'s weights: equal weights, equal hash."""
  digest = hashlib.sha256()
  for weight in model.get_weights():
    digest.update(np.ascontiguousarray(weight, dtype=np.float32).tobytes())
  return digest.hexdigest()[:16]


class _Progress:
  """keras Progbar on a terminal, one line per epoch otherwise."""

  def __init__(self, steps):
    self.bar = (keras.utils.Progbar(steps, stateful_metrics=["loss", "acc"])
                if sys.stdout.isatty() else None)

  def update(self, step, values):
    if self.bar:
      self.bar.update(step, values=list(values.items()))


def train_phase(model, spec, splits, context, *, first_step=0, best=None,
                resume=None, history=None, features=None, carry=None):
  """Trains `model`'s trainable weights for the phase's step budget.

  The phase runs `spec.epochs_for(steps per epoch)` epochs: `spec.epochs`,
  or more when that many epochs of this dataset fall short of
  `spec.min_steps` optimizer steps.

  `context` (a `Context`) says how: strategy, input size, batch size, seed,
  augmentation, summaries, checkpointer and the stop request.

  Validates after every epoch; `best` (if given) keeps the weights with the
  lowest validation loss. With a checkpointer, progress is saved every
  `checkpointer.every_steps` steps, at every epoch end, and when SIGTERM or
  SIGINT arrives (then `Stopped` is raised). `resume` (a progress dict from
  `Checkpointer.progress`) continues this phase at the exact step: weights,
  optimizer state, schedule position, and the data order (the input
  starts after the batches already seen, without reading earlier epochs).

  With `features` (a `FeatureCache`, for a frozen base) the head trains on
  the cached backbone outputs instead of running the base every step.

  `carry` (a dict) continues a phase in memory: one that a call stopped
  (`spec.stop_at`) goes on from where it was, with its optimizer, schedule
  position and input, when `carry` is given again. Each call leaves them in
  it. A `carry` that starts as {"steps": a `StepCache`} shares that cache's
  optimizer and traced steps with other phases given the same cache.

  Returns:
    (history, next global step): history is one dict per validation.
  """
  strategy, image_size = context.strategy, context.image_size
  batch_size, seed, augment = context.batch_size, context.seed, context.augment
  checkpointer, stop = context.checkpointer, context.stop
  summaries = context.summaries or summaries_lib.Summaries()
  stepped = features.head if features else model  # what the step runs
  steps_per_epoch = math.ceil(splits.sizes["train"] / batch_size)
  epochs = spec.epochs_for(steps_per_epoch)
  total = steps_per_epoch * epochs
  carry = {} if carry is None else carry
  optimizer, train_steps, eval_step, pruning = carry.setdefault(
      "steps", steps_lib.StepCache(
          prune=spec.prune_to > 0, block=spec.prune_block)).get(
          stepped, spec, total, strategy=strategy,
          num_classes=splits.num_classes, global_batch=batch_size,
          fresh="optimizer" not in carry)
  prunes = pruning is not None and spec.prune_to > 0
  ramps = prunes and spec.prune_method == "gradual"
  history = list(history or [])
  done, step = carry.get("done", 0), carry.get("step", first_step)
  if resume:
    # At step 0 of a phase a checkpoint holds weights but no optimizer.
    checkpointer.restore(
        model, optimizer if resume["step_in_phase"] else None, resume, best,
        extra=pruning.state if prunes and resume["step_in_phase"] else None)
    done, step = resume["step_in_phase"], resume["step"]
  train = features.train if features else splits.train
  if "iterator" in carry:
    iterator = carry["iterator"]
  else:  # a resumed phase's input starts after the steps already taken
    iterator = iter(strategy.distribute_datasets_from_function(
        inputs_lib.input_fn(
            train, size=splits.sizes["train"],
            image_size=None if features else image_size,
            global_batch_size=batch_size, training=True, augment=augment,
            seed=seed, num_classes=splits.num_classes, skip=done)))
  val_input = steps_lib.eval_input(
      features.validation if features else splits.validation,
      splits.sizes["validation"], strategy=strategy,
      image_size=None if features else image_size, batch_size=batch_size)
  if pruning is not None and not (
      "optimizer" in carry or (resume and resume["step_in_phase"])):
    # A phase that starts (not one that goes on or resumes) plans anew.
    pruning.plan(spec.prune_to, begin=done, total=total,
                 keep_zeros=prunes and not ramps)
    if ramps:
      logging.info("pruning to %.0f%% zeros in %d kernels from step %d to "
                   "%d of the phase", 100 * spec.prune_to,
                   len(pruning.kernels), done, pruning.end_step)
    elif prunes:
      logging.info("phase %s keeps the zeros of the %d pruned kernels it "
                   "trains", spec.name, len(pruning.kernels))
  if resume:
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
  sample = (inputs_lib.to_numpy(splits.validation, image_size, limit=16)
            if summaries.enabled and image_size else None)

  def save(step_in_phase):
    if checkpointer:
      checkpointer.save(model, optimizer, phase=spec.name,
                        step_in_phase=step_in_phase, step=step,
                        history=history, best=best,
                        extra=pruning.state if prunes else None)

  sync_statistics = _statistics_sync(stepped, strategy)
  cluster = isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
  chunks = _ChunkSize(fixed=cluster)
  agree = _stop_agreement(strategy) if cluster else None
  stopping = False
  patience = math.ceil(spec.early_stopping * total)
  # Tiny epochs are validated together: every `group` epochs.
  group = max(1, math.ceil(spec.eval_steps / steps_per_epoch))
  loss_sum = correct = seen = 0.0
  start = time.time()
  # Off a terminal (no progress bar) a long phase logs where it is.
  with console.Heartbeat(f"phase {spec.name}", total=total, unit="steps",
                         enabled=not sys.stdout.isatty()) as beat:
    for epoch in range(done // steps_per_epoch, epochs):
      if done >= spec.stop_at * total:
        break
      idle = _steps_without_gain(best, spec.name, phase_start, step)
      if patience and idle >= patience and not ramps:
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
        beat.done = done
        # In a cluster every worker stops at the same step, whichever one
        # was signalled: a lone worker that stopped would leave the others
        # waiting at their next collective.
        stopping = agree(stop.requested) if agree else stop.requested
        every = summaries.every_steps
        if step // every > (step - n) // every or i == steps_per_epoch:
          summaries.scalars("train", step, {
              "loss": loss / (n * batch_size),
              "accuracy": hits / (n * batch_size),
              "learning_rate": lr, "phase": _PHASE_IDS.get(spec.name, -1)})
        if stopping and i < steps_per_epoch:
          save(done)
          raise stop.error(
              f"{spec.name} epoch {epoch + 1}, step {i}", checkpointer)
        if (checkpointer and checkpointer.every_steps and
            step % checkpointer.every_steps == 0 and i < steps_per_epoch):
          save(done)
      validate = (epoch + 1) % group == 0 or epoch + 1 == epochs or (
          done >= spec.stop_at * total)
      if validate:
        sync_statistics()
        val = steps_lib.evaluate(
            stepped, features.validation if features else splits.validation,
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
        summaries_lib.image_summaries(summaries, model, val, sample,
                                      splits.class_names, step)
        improved = False
        # While pruning, only weights with the final masks can be the best
        # (a trial, which stops before, compares rates on what it reached).
        if best is not None and (not ramps or pruning.finished()
                                 or spec.stop_at < 1):
          if ramps and best.step is not None and (
              best.step < phase_start + pruning.end_step):
            best.forget()  # weights from before the final masks
          improved = best.offer(model, val, (spec.name, epoch + 1), step)
        logging.info("%s epoch %d/%d: loss %.4f acc %.4f | val loss %.4f acc "
                     "%.4f%s (%.1fs)", spec.name, epoch + 1, epochs,
                     record["loss"], record["accuracy"], val["loss"],
                     val["accuracy"], " *best*" if improved else "",
                     record["seconds"])
        save(done)
        loss_sum = correct = seen = 0.0
        start = time.time()
      if not agree:  # a request that came during validation counts too
        stopping = stop.requested
      if stopping and not validate:  # between validations only a stop saves
        save(done)
      if stopping and epoch < epochs - 1:
        raise stop.error(
            f"the end of {spec.name} epoch {epoch + 1}", checkpointer)
  summaries.flush()
  carry.update(optimizer=optimizer, iterator=iterator, done=done, step=step,
               pruning=pruning)
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


def _stop_agreement(strategy):
  """A function: this worker's stop request -> whether any worker's is.

  One small all-reduce, made by every worker after every call of the
  training steps (the signal handler only notes a request).
  """

  @tf.function
  def count(requested):
    per_replica = strategy.run(tf.identity, args=(requested,))
    return strategy.reduce("SUM", per_replica, axis=None)

  return lambda requested: float(count(tf.constant(float(requested)))) > 0


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


_PHASE_IDS = {"pretrain": 0, "head": 1, "finetune": 2, "scratch": 3}
