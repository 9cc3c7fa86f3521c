"""Checkpoints, the best weights, and stop signals.

A run stopped by SIGTERM or SIGINT, or killed, resumes at its exact step.
"""

import contextlib
import errno
import json
import math
import os
import shutil
import signal
import threading

import numpy as np
import tensorflow as tf

from tl_keras import artifacts
from tl_keras.errors import UserError


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

  def forget(self):
    """Drops the best so far: the next offer is the best."""
    self.__init__()

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


class Stopped(UserError):
  """SIGTERM or SIGINT stopped training; progress was checkpointed."""

  def __init__(self, message, exit_code):
    super().__init__(message)
    self.exit_code = exit_code


class StopRequest:
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
    """The `Stopped` to raise at `where`.

    A worker of a cluster stops when any worker was signalled; one that
    was not names the cluster and exits as if it had received SIGTERM.
    """
    saved = (f"progress saved in {checkpointer.restore_from}; rerun the "
             "same command to resume" if checkpointer else "nothing was saved")
    if self.signal is None:
      return Stopped(f"stopped at {where} with the other workers of the "
                     f"cluster (one of them received a stop signal): {saved}",
                     128 + signal.SIGTERM)
    name = signal.Signals(self.signal).name
    return Stopped(f"stopped by {name} at {where}: {saved}",
                   128 + self.signal)


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
           best, extra=None):
    """Writes a checkpoint at this point of `phase`.

    `extra`: a trackable saved with the weights (the pruning state).

    Raises:
      UserError: the disk is full; the files of this checkpoint are
        removed, and the previous one, which progress.json still names,
        is intact.
    """
    try:
      self._save(model, optimizer, phase=phase, step_in_phase=step_in_phase,
                 step=step, history=history, best=best, extra=extra)
    except (OSError, tf.errors.OpError) as e:
      if not _no_space(e):
        raise
      for name in os.listdir(self.directory):  # this checkpoint's files
        path = os.path.join(self.directory, name)
        if name.startswith((f"ckpt-{step}.", f"ckpt-{step}_temp")) or (
            ".tmp" in name):
          if os.path.isdir(path):
            shutil.rmtree(path, ignore_errors=True)
          else:
            os.remove(path)
      size = sum(int(np.prod(v.shape)) * 4 for v in model.weights)
      raise UserError(
          f"no space left on the disk of {self.directory} for a checkpoint "
          f"(about {3 * size / 2**20:.0f} MB with the optimizer's state): "
          "free space there and rerun the same command, which resumes from "
          "the last complete checkpoint") from e

  def _save(self, model, optimizer, *, phase, step_in_phase, step, history,
            best, extra):
    os.makedirs(self.directory, exist_ok=True)
    manager = tf.train.CheckpointManager(
        _checkpoint(model, optimizer, extra), self.directory,
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

  def restore(self, model, optimizer, progress, best=None, extra=None):
    """Loads the checkpoint `progress` names into `model` (and optimizer,
    and `extra` as `save` was given it)."""
    path = os.path.join(self.restore_from, progress["checkpoint"])
    _checkpoint(model, optimizer, extra).read(
        path).assert_existing_objects_matched()
    weights = self.load_weights("best")
    if best is not None and progress["best"]["where"] and weights:
      best.weights = weights
      best.loss = progress["best"]["loss"]
      best.accuracy = progress["best"]["accuracy"]
      best.step = progress["best"]["step"]
      best.where = tuple(progress["best"]["where"])
      self._best_saved = best.where


def _no_space(error):
  """Whether `error` (OSError or TensorFlow's) says the disk is full."""
  return (getattr(error, "errno", None) == errno.ENOSPC
          or "No space left on device" in str(error))


def _checkpoint(model, optimizer, extra=None):
  """What a checkpoint holds: weights, optimizer, and the random state.

  Keras keeps dropout's random state in seed-generator variables that the
  model does not track for `tf.train.Checkpoint`; they are added by hand so
  a resumed run draws the same dropout masks as an uninterrupted one.
  """
  objects = {"model": model, "seeds": [
      v.value for v in model.variables if "seed_generator" in v.path]}
  if optimizer is not None:
    objects["optimizer"] = optimizer
  if extra is not None:
    objects["extra"] = extra
  return tf.train.Checkpoint(**objects)
