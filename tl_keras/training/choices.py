"""What the recipe chooses on the validation split, and how.

    choose_augmentation  whether mirror images keep their class (--augment=auto)
    choose_finetuning    phase 2's learning rate and BatchNorm mode, by trials
    keep_phase           phase 2's weights or phase 1's (--keep_phase)
    keep_simplest        phase 2's weights only if clearly better than phase 1's

Every choice compares per-example validation losses with the
one-standard-error rule (`evaluation.clearly_lower`).
"""

import dataclasses
import logging

import keras
import numpy as np
import tensorflow as tf

from tl_keras.data import inputs as inputs_lib
from tl_keras.evaluation import clearly_lower
from tl_keras.evaluation import hits
from tl_keras.evaluation import is_multi_label
import tl_keras.training.checkpoint as checkpoint_lib
import tl_keras.training.imbalance as imbalance
import tl_keras.training.loop as loop
import tl_keras.training.steps as steps_lib


# Accuracy the phase-1 head may lose on mirrored validation images before
# --augment=auto leaves the horizontal flip out.
MIRROR_DROP = 0.05


def choose_augmentation(model, splits, *, image_size, batch_size,
                        class_weights=None):
  """--augment=auto: "light", or "shift" if the classes are not mirror-symmetric.

  The phase-1 head is evaluated on the validation images and on their
  mirror images. Photos of objects keep their class when mirrored; digits,
  letters and arrows do not, and a head that learnt them loses accuracy on
  the mirrored ones. Training on flipped images would then teach the wrong
  labels, so the flip is left out. With `class_weights` the accuracies
  weigh each example by its class's weight (balanced accuracy).

  Returns:
    {"policy", "accuracy", "mirrored_accuracy"}.
  """
  accuracy = []
  for mirror in (False, True):
    probs, labels = validation_predictions(
        model, splits, image_size=image_size, batch_size=batch_size,
        mirror=mirror)
    accuracy.append(float(np.mean(hits(probs, labels) *
                                  imbalance.example_weights(class_weights,
                                                            labels))))
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
  return predictions(model, splits.validation, splits.sizes["validation"],
                     image_size=image_size, batch_size=batch_size,
                     mirror=mirror)


def predictions(model, dataset, size, *, image_size, batch_size,
                mirror=False):
  """`model`'s probabilities on a split of `size` examples, in order, and
  its labels (as `validation_predictions`)."""
  fn = inputs_lib.input_fn(dataset, size=size, image_size=image_size,
                           global_batch_size=batch_size, training=False)
  probs, labels = [], []
  for x, y in fn(tf.distribute.InputContext()):
    y = y.numpy()
    keep = y >= 0 if y.ndim == 1 else y[:, 0] >= 0  # not the padding
    if mirror:
      x = tf.reverse(x, axis=[2])
    probs.append(np.asarray(model(x, training=False))[keep])
    labels.append(y[keep])
  return np.concatenate(probs), np.concatenate(labels)


def validation_losses(model, splits, *, image_size, batch_size,
                      class_weights=None):
  """Per-example cross-entropy of `model` on the validation split, in order
  (binary cross-entropy for multi-hot labels); with `class_weights`, each
  weighed by its class's weight (`imbalance`)."""
  probs, labels = validation_predictions(model, splits, image_size=image_size,
                                         batch_size=batch_size)
  losses = (keras.losses.binary_crossentropy(
      labels.astype(np.float32), probs) if is_multi_label(labels) else
            keras.losses.sparse_categorical_crossentropy(labels, probs))
  losses = np.asarray(losses)
  if class_weights is None:
    return losses
  return losses * imbalance.example_weights(class_weights, labels)


def keep_phase(rule, model, head, best, *args, **kwargs):
  """--keep_phase: the weights to keep when phase 2's best (`best`) has a
  lower validation loss than the phase-1 head. "simplest": `keep_simplest`
  (its arguments after `rule`). "lowest_loss": phase 2's, `best` as it is.

  Returns:
    "finetune" or "head".
  """
  if rule == "lowest_loss":
    logging.info("--keep_phase=lowest_loss: phase 2's weights are kept, the "
                 "lowest validation loss (%.4f)", best.loss)
    return "finetune"
  return keep_simplest(model, head, best, *args, **kwargs)


def keep_simplest(model, head, best, history, splits, image_size,
                   batch_size, pruned=None, class_weights=None):
  """Phase 2's best weights, unless they are not clearly better than phase 1's.

  Phase 2 picks among many checkpoints of several trials, phase 1 among a
  few head strengths, so on a small validation split phase 2's best looks
  better than it is. It is kept only if its validation loss is `clearly_lower`
  than the phase-1 head's; otherwise the simpler model, the linear probe on
  the pretrained features, is kept. `best` is updated to what is kept.
  `pruned`: the validation figures of phase 1's network after one-shot
  pruning (`head` holds its weights), which replace phase 1's.
  `class_weights`: the losses compared are class-weighted.

  Returns:
    "finetune" or "head".
  """
  common = dict(image_size=image_size, batch_size=batch_size,
                class_weights=class_weights)
  best.restore(model)
  tuned = validation_losses(model, splits, **common)
  model.set_weights(head)
  lower, gain, error = clearly_lower(
      tuned, validation_losses(model, splits, **common))
  if lower:
    logging.info("phase 2 lowered the validation loss by %.4f (standard "
                 "error %.4f): its weights are kept", gain, error)
    return "finetune"
  row = {**next(h for h in history if h["phase"] == "head"),
         **(pruned or {})}
  logging.info("phase 2 lowered the validation loss by only %.4f (standard "
               "error %.4f): the phase-1 head on the %s features is kept, "
               "the simpler model", gain, error,
               "pruned" if pruned else "pretrained")
  best.weights, best.where, best.step = head, ("head", 1), row["step"]
  best.loss, best.accuracy = row["val_loss"], row["val_accuracy"]
  return "head"


class _Trials:
  """Phase 2's trials: each from the weights phase 1 ended with, for the
  first `recipe.trial_fraction` of the phase, with no summaries or
  checkpoints. One optimizer and one trace of the steps serve every trial
  that trains the same variables, and the phase that continues the winner.
  Only the best run so far is kept (`winner`), its optimizer's state
  copied, as the next trial reuses the optimizer."""

  def __init__(self, model, recipe, splits, context, first_step):
    spec = recipe.finetune
    self.model, self.recipe, self.splits = model, recipe, splits
    self.context = context.but(summaries=None, checkpointer=None)
    self.first_step = first_step
    self.spec = dataclasses.replace(spec, early_stopping=0.0,
                                    stop_at=recipe.trial_fraction)
    self.start = [np.copy(w) for w in model.get_weights()]
    self.cache = steps_lib.StepCache(prune=spec.prune_to > 0,
                                     block=spec.prune_block)
    self.records, self.winner = [], None

  def run(self, lr, mode):
    """One trial at learning rate `lr` with BatchNorm `mode`."""
    model, context = self.model, self.context
    logging.info("trial %d: phase 2 at lr %g with BatchNorm %s, its first "
                 "%.0f%%", len(self.records) + 1, lr, mode,
                 100 * self.recipe.trial_fraction)
    model.set_weights(self.start)
    context.family.unfreeze_top(model, *self.recipe.unfreeze,
                                train_batchnorm=mode == "train")
    best, carry = checkpoint_lib.Best(), {"steps": self.cache}
    rows, step = loop.train_phase(
        model, dataclasses.replace(self.spec, learning_rate=lr), self.splits,
        context, best=best, first_step=self.first_step, carry=carry)
    run = {"carry": carry, "weights": [np.copy(w) for w in model.get_weights()],
           "history": rows, "best": best, "lr": lr, "mode": mode}
    best.restore(model)
    run["losses"] = validation_losses(
        model, self.splits, image_size=context.image_size,
        batch_size=context.batch_size, class_weights=context.class_weights)
    self.records.append({"learning_rate": lr, "batchnorm": mode,
                         "steps": step - self.first_step,
                         "validation_loss": best.loss,
                         "validation_accuracy": best.accuracy})
    logging.info("trial: lr %g, BatchNorm %s: best validation loss %.4f, "
                 "accuracy %.4f", lr, mode, best.loss, best.accuracy)
    return run

  def offer(self, run):
    """Keeps `run` if it beats the winner so far. Ties (to 4 decimals) go
    to the earlier: the lower rate, the smaller change to the pretrained
    features, and frozen BatchNorm."""
    if self.winner is None or round(run["best"].loss, 4) < round(
        self.winner["best"].loss, 4):
      run["state"] = steps_lib.optimizer_state(run["carry"]["optimizer"])
      pruning = run["carry"].get("pruning")
      run["pruning"] = pruning and pruning.snapshot()
      self.winner = run


def choose_finetuning(model, recipe, splits, context, *, may_skip=True,
                      first_step=0):
  """Phase 2's learning rate and BatchNorm mode, and the run that continues.

  Given ones are used as they are. Otherwise each candidate runs the first
  `recipe.trial_fraction` of phase 2 from the weights phase 1 ended with,
  and the one with the lowest validation loss wins: first the learning
  rates of `recipe.finetune_lrs` (BatchNorm frozen under "auto"), then,
  under "auto", BatchNorm training at the winning rate. The winner is not
  run again: phase 2 continues it (its weights, optimizer and input), so
  the run that was measured is the run that is kept, and its trial steps
  are not spent twice. `model` is left with the weights it came with.

  If the best trial's validation loss is clearly higher (by more than one
  standard error, `clearly_lower`) than that of the weights `model` came
  with, phase 2 is not worth running: "skip" (only when `may_skip`: those
  weights hold a fitted head). A trial that is not clearly worse is
  continued: it has run at its peak rate, with the decay still to come,
  while the head it is compared with had its strength picked on these
  same examples; `keep_simplest` judges the finished phase. Trials train
  with `context`, writing no summaries and no checkpoints.

  Returns:
    (choice, winner): choice is {"learning_rate", "batchnorm",
    "trial_steps", "trials": [...], "skip"}, what run.json records;
    winner, None without trials or when skipped, is the winning trial:
    {"carry" (for `train_phase`), "weights" (at its end), "history",
    "best" (a `Best`)}.
  """
  image_size, batch_size = context.image_size, context.batch_size
  spec = recipe.finetune
  lrs = [spec.learning_rate] if spec.learning_rate else list(
      recipe.finetune_lrs)
  family = context.family
  batchnorm = (recipe.batchnorm if family.has_batchnorm(model)
               else "frozen")
  modes = {"frozen": ["frozen"], "train": ["train"],
           "auto": ["frozen", "train"]}[batchnorm]
  if len(lrs) == 1 and len(modes) == 1:
    return {"learning_rate": lrs[0], "batchnorm": modes[0], "trial_steps": 0,
            "trials": [], "skip": False}, None
  # With --prune_sparsity the trials prune too, on the phase's schedule: a
  # rate is judged on the network being pruned (a rate that only keeps
  # pretrained features in place cannot recover what pruning takes).
  trials = _Trials(model, recipe, splits, context, first_step)
  reference = validation_losses(model, splits, image_size=image_size,
                                batch_size=batch_size,
                                class_weights=context.class_weights)
  for lr in sorted(lrs):
    trials.offer(trials.run(lr, modes[0]))
  for mode in modes[1:]:
    trials.offer(trials.run(trials.winner["lr"], mode))
  winner = trials.winner
  steps_lib.load_state(winner["carry"]["optimizer"], winner.pop("state"))
  if winner["carry"].get("pruning"):
    winner["carry"]["pruning"].load(winner.pop("pruning"))
  trials.cache.keep_only(winner["carry"]["optimizer"])
  model.set_weights(trials.start)
  worse, raised, error = clearly_lower(reference, winner["losses"])
  chosen = {"learning_rate": winner["lr"], "batchnorm": winner["mode"],
            "trial_steps": sum(t["steps"] for t in trials.records),
            "trials": trials.records, "skip": may_skip and worse}
  if chosen["skip"]:
    logging.info("every trial raised the validation loss (the best, lr %g "
                 "with BatchNorm %s, by %.4f; standard error %.4f): phase 2 "
                 "is skipped and phase 1's head is the model", winner["lr"],
                 winner["mode"], raised, error)
    return chosen, None
  logging.info("phase 2 goes on from the trial at lr %g with BatchNorm %s "
               "(picked by %d trials)", winner["lr"], winner["mode"],
               len(trials.records))
  return chosen, winner
