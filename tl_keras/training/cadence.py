"""The pace of a training phase: how many steps a call runs, when it
stops, how workers agree, and what the progress bar shows (`loop`)."""

import sys

import keras
import tensorflow as tf


class Progress:
  """keras Progbar on a terminal, one line per epoch otherwise."""

  def __init__(self, steps):
    self.bar = (keras.utils.Progbar(steps, stateful_metrics=["loss", "acc"])
                if sys.stdout.isatty() else None)

  def update(self, step, values):
    if self.bar:
      self.bar.update(step, values=list(values.items()))


def statistics_sync(model, strategy):
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


def stop_agreement(strategy):
  """A function: this worker's stop request -> whether any worker's is.

  One small all-reduce, made by every worker after every call of the
  training steps (the signal handler only notes a request).
  """

  @tf.function
  def count(requested):
    per_replica = strategy.run(tf.identity, args=(requested,))
    return strategy.reduce("SUM", per_replica, axis=None)

  return lambda requested: float(count(tf.constant(float(requested)))) > 0


def steps_without_gain(history, phase, step):
  """Steps of `phase` since its own validation loss last reached a new low.

  A phase is judged against itself, not against an earlier phase's best:
  phase 2 goes on from a trial that ran at its peak rate with the decay
  still to come, and whether it ends up better than phase 1's head is
  `keep_simplest`'s question, asked when it is done. 0 before the phase's
  first validation. Derived from the history checkpoints hold, so a
  resumed run stops where an uninterrupted one would.
  """
  low, since = None, None
  for row in history:
    if row["phase"] == phase and (low is None or row["val_loss"] < low):
      low, since = row["val_loss"], row["step"]
  return 0 if since is None else step - since


class ChunkSize:
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


def chunk_ends(step, checkpointer, summaries):
  """Global steps a call must stop at: checkpoints and profiler edges."""
  ends = list(summaries.profile_steps or ())
  every = checkpointer.every_steps if checkpointer else 0
  if every:
    ends.append((step // every + 1) * every)
  return ends


PHASE_IDS = {"pretrain": 0, "head": 1, "finetune": 2, "scratch": 3}
