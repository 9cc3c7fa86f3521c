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
from tl_keras.data import inputs as inputs_lib
import tl_keras.training.cadence as cadence
import tl_keras.training.steps as steps_lib
import tl_keras.training.summaries as summaries_lib


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
  phase = _Phase(model, spec, splits, context, best=best, features=features,
                 carry={} if carry is None else carry, history=history,
                 first_step=first_step)
  phase.start(resume)
  phase.run()
  return phase.finish()


class _Phase:
  """`train_phase`'s state: its steps, input, counters and validations."""

  def __init__(self, model, spec, splits, context, *, best, features, carry,
               history, first_step):
    self.model, self.spec, self.splits, self.context = (model, spec, splits,
                                                        context)
    self.best, self.features, self.carry = best, features, carry
    self.summaries = context.summaries or summaries_lib.Summaries()
    self.stepped = features.head if features else model  # what a step runs
    self.steps_per_epoch = math.ceil(splits.sizes["train"] /
                                     context.batch_size)
    self.epochs = spec.epochs_for(self.steps_per_epoch)
    self.total = self.steps_per_epoch * self.epochs
    self.optimizer, self.train_steps, self.eval_step, self.pruning = (
        carry.setdefault("steps", steps_lib.StepCache(
            prune=spec.prune_to > 0, block=spec.prune_block)).get(
                self.stepped, spec, self.total, strategy=context.strategy,
                num_classes=splits.num_classes,
                global_batch=context.batch_size,
                fresh="optimizer" not in carry,
                class_weights=context.class_weights))
    self.prunes = self.pruning is not None and spec.prune_to > 0
    self.ramps = self.prunes and spec.prune_method == "gradual"
    self.history = list(history or [])
    self.done = carry.get("done", 0)  # steps of this phase taken
    self.step = carry.get("step", first_step)  # the global step
    # Cached features have no image size: they are the base's outputs.
    self.input_size = None if features else context.image_size
    self.phase_start = self.step - self.done

  def _split(self, name):
    return getattr(self.features if self.features else self.splits, name)

  def start(self, resume):
    """Restores a resumed phase, builds the input, plans the pruning."""
    spec, context = self.spec, self.context
    resumed_within = bool(resume and resume["step_in_phase"])
    if resume:
      # At step 0 of a phase a checkpoint holds weights but no optimizer.
      context.checkpointer.restore(
          self.model, self.optimizer if resumed_within else None, resume,
          self.best, extra=(self.pruning.state if self.prunes and
                            resumed_within else None))
      self.done, self.step = resume["step_in_phase"], resume["step"]
      self.phase_start = self.step - self.done
    if "iterator" in self.carry:
      self.iterator = self.carry["iterator"]
    else:  # a resumed phase's input starts after the steps already taken
      self.iterator = iter(context.strategy.distribute_datasets_from_function(
          inputs_lib.input_fn(
              self._split("train"), size=self.splits.sizes["train"],
              image_size=self.input_size,
              global_batch_size=context.batch_size, training=True,
              augment=context.augment, seed=context.seed,
              num_classes=self.splits.num_classes, skip=self.done)))
    self.val_input = steps_lib.eval_input(
        self._split("validation"), self.splits.sizes["validation"],
        strategy=context.strategy, image_size=self.input_size,
        batch_size=context.batch_size)
    if self.pruning is not None and not ("optimizer" in self.carry or
                                         resumed_within):
      self._plan_pruning()
    if resume and self.done:
      logging.info("resuming phase %s at epoch %d, step %d of %d (global "
                   "step %d)", spec.name, self.done // self.steps_per_epoch + 1,
                   self.done % self.steps_per_epoch, self.steps_per_epoch,
                   self.step)
    self._announce()
    # A fixed handful of validation images, shown with predictions each epoch.
    self.sample = (inputs_lib.to_numpy(self.splits.validation,
                                       context.image_size, limit=16)
                   if self.summaries.enabled and context.image_size else None)

  def _plan_pruning(self):
    """A phase that starts (not one that goes on or resumes) plans anew."""
    spec, pruning = self.spec, self.pruning
    pruning.plan(spec.prune_to, begin=self.done, total=self.total,
                 keep_zeros=self.prunes and not self.ramps)
    if self.ramps:
      logging.info("pruning to %.0f%% zeros in %d kernels from step %d to "
                   "%d of the phase", 100 * spec.prune_to,
                   len(pruning.kernels), self.done, pruning.end_step)
    elif self.prunes:
      logging.info("phase %s keeps the zeros of the %d pruned kernels it "
                   "trains", spec.name, len(pruning.kernels))

  def _announce(self):
    spec = self.spec
    trainable = sum(int(np.prod(v.shape))
                    for v in self.model.trainable_variables)
    grown = (f" (grown from {spec.epochs} to reach {spec.min_steps} steps)"
             if self.epochs > spec.epochs else "")
    trial = (f", of which it runs the first {spec.stop_at:.0%}"
             if spec.stop_at < 1 else "")
    logging.info("phase %s: %d epochs%s x %d steps = %d steps%s, peak lr %g, "
                 "%s trainable parameters", spec.name, self.epochs, grown,
                 self.steps_per_epoch, self.total, trial, spec.learning_rate,
                 f"{trainable:,}")
    if not self.done:
      self.summaries.text("phases", f"phase **{spec.name}** starts at step "
                          f"{self.step}", self.step)

  def save(self):
    if self.context.checkpointer:
      self.context.checkpointer.save(
          self.model, self.optimizer, phase=self.spec.name,
          step_in_phase=self.done, step=self.step, history=self.history,
          best=self.best, extra=self.pruning.state if self.prunes else None)

  def run(self):
    """The epochs, each trained, validated when due and saved."""
    spec, strategy = self.spec, self.context.strategy
    self.sync_statistics = cadence.statistics_sync(self.stepped, strategy)
    cluster = isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
    self.chunks = cadence.ChunkSize(fixed=cluster)
    self.agree = cadence.stop_agreement(strategy) if cluster else None
    # Tiny epochs are validated together: every `group` epochs.
    group = max(1, math.ceil(spec.eval_steps / self.steps_per_epoch))
    self.loss_sum = self.correct = self.seen = 0.0
    self.started = time.time()
    # Off a terminal (no progress bar) a long phase logs where it is.
    with console.Heartbeat(f"phase {spec.name}", total=self.total,
                           unit="steps",
                           enabled=not sys.stdout.isatty()) as self.beat:
      for epoch in range(self.done // self.steps_per_epoch, self.epochs):
        if self.done >= spec.stop_at * self.total or self._patience_out(
            epoch):
          break
        stopping = self._train_epoch(epoch)
        validate = ((epoch + 1) % group == 0 or epoch + 1 == self.epochs or
                    self.done >= spec.stop_at * self.total)
        if validate:
          self._validate(epoch)
        if not self.agree:  # a request that came during validation counts
          stopping = self.context.stop.requested
        if stopping and not validate:  # between validations only a stop saves
          self.save()
        if stopping and epoch < self.epochs - 1:
          raise self.context.stop.error(
              f"the end of {spec.name} epoch {epoch + 1}",
              self.context.checkpointer)

  def _patience_out(self, epoch):
    """Whether the phase has gone long enough without a new low of its own
    validation loss."""
    spec = self.spec
    patience = math.ceil(spec.early_stopping * self.total)
    if not patience or self.ramps or self.best is None:
      return False
    idle = cadence.steps_without_gain(self.history, spec.name, self.step)
    if idle < patience:
      return False
    logging.info("%s: %d steps without a new low of its validation loss: "
                 "the phase stops early, %d of %d epochs run", spec.name,
                 idle, epoch, self.epochs)
    return True

  def _train_epoch(self, epoch):
    """Trains one epoch (or its rest); returns whether a stop was asked."""
    spec, context = self.spec, self.context
    batch_size, checkpointer = context.batch_size, context.checkpointer
    progress = cadence.Progress(self.steps_per_epoch)
    stopping = False
    i = self.done % self.steps_per_epoch
    while i < self.steps_per_epoch:
      n = self.chunks.next(self.step, self.steps_per_epoch - i,
                           cadence.chunk_ends(self.step, checkpointer,
                                              self.summaries))
      lr = float(keras.ops.convert_to_numpy(self.optimizer.learning_rate))
      self.summaries.profile(self.step)
      began = time.perf_counter()
      loss, hits = self.train_steps(self.iterator, tf.constant(n))
      loss, hits = float(loss), float(hits)
      self.chunks.took(n, time.perf_counter() - began)
      self.loss_sum += loss
      self.correct += hits
      self.seen += n * batch_size
      self.step, self.done, i = self.step + n, self.done + n, i + n
      progress.update(i, {"loss": self.loss_sum / self.seen,
                          "acc": self.correct / self.seen})
      self.beat.done = self.done
      # In a cluster every worker stops at the same step, whichever one was
      # signalled: a lone worker that stopped would leave the others
      # waiting at their next collective.
      stopping = (self.agree(context.stop.requested) if self.agree
                  else context.stop.requested)
      every = self.summaries.every_steps
      if (self.step // every > (self.step - n) // every or
          i == self.steps_per_epoch):
        self.summaries.scalars("train", self.step, {
            "loss": loss / (n * batch_size),
            "accuracy": hits / (n * batch_size), "learning_rate": lr,
            "phase": cadence.PHASE_IDS.get(spec.name, -1)})
      if stopping and i < self.steps_per_epoch:
        self.save()
        raise context.stop.error(f"{spec.name} epoch {epoch + 1}, step {i}",
                                 checkpointer)
      if (checkpointer and checkpointer.every_steps and
          self.step % checkpointer.every_steps == 0 and
          i < self.steps_per_epoch):
        self.save()
    return stopping

  def _validate(self, epoch):
    """Validates, records, offers the weights as the best, and saves."""
    spec, splits, best = self.spec, self.splits, self.best
    self.sync_statistics()
    val = steps_lib.evaluate(
        self.stepped, self._split("validation"), splits.sizes["validation"],
        strategy=self.context.strategy, class_names=splits.class_names,
        image_size=self.input_size, batch_size=self.context.batch_size,
        eval_step=self.eval_step, dist=self.val_input,
        class_weights=self.context.class_weights)
    record = {"phase": spec.name, "epoch": epoch + 1, "step": self.step,
              "loss": self.loss_sum / self.seen,
              "accuracy": self.correct / self.seen,
              "val_loss": val["loss"], "val_accuracy": val["accuracy"],
              "seconds": time.time() - self.started}
    self.history.append(record)
    self.summaries.scalars("validation", self.step, {
        "loss": val["loss"], "accuracy": val["accuracy"]})
    summaries_lib.image_summaries(self.summaries, self.model, val,
                                  self.sample, splits.class_names, self.step)
    improved = False
    # While pruning, only weights with the final masks can be the best (a
    # trial, which stops before, compares rates on what it reached).
    if best is not None and (not self.ramps or self.pruning.finished()
                             or spec.stop_at < 1):
      if self.ramps and best.step is not None and (
          best.step < self.phase_start + self.pruning.end_step):
        best.forget()  # weights from before the final masks
      improved = best.offer(self.model, val, (spec.name, epoch + 1),
                            self.step)
    logging.info("%s epoch %d/%d: loss %.4f acc %.4f | val loss %.4f acc "
                 "%.4f%s (%.1fs)", spec.name, epoch + 1, self.epochs,
                 record["loss"], record["accuracy"], val["loss"],
                 val["accuracy"], " *best*" if improved else "",
                 record["seconds"])
    self.save()
    self.loss_sum = self.correct = self.seen = 0.0
    self.started = time.time()

  def finish(self):
    self.summaries.flush()
    self.carry.update(optimizer=self.optimizer, iterator=self.iterator,
                      done=self.done, step=self.step, pruning=self.pruning)
    return self.history, self.step
