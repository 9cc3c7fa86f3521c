"""The two-phase transfer recipe: a head on the frozen base, then fine-tuning.
"""

import dataclasses
import logging
import os
import shutil
import time

import keras
import numpy as np
import tensorflow as tf

from tl_keras import data as data_lib
from tl_keras import families
from tl_keras import freezing
from tl_keras import probe
from tl_keras.evaluation import clearly_lower
from tl_keras.training import checkpoint as checkpoint_lib
from tl_keras.training import features as features_lib
from tl_keras.training import loop
from tl_keras.training import steps as steps_lib
from tl_keras.training import summaries as summaries_lib
from tl_keras.training import transfer_check


@dataclasses.dataclass(frozen=True)
class Recipe:
  """The two-phase transfer recipe's settings."""
  head: loop.PhaseSpec
  # learning_rate 0: phase 2 picks it from `finetune_lrs` by short trials.
  finetune: loop.PhaseSpec
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

  def from_random(self):
    """The recipe for the same network starting from random weights.

    There are no features to fit a head on, so phase 1 is skipped and phase
    2 trains every block; BatchNorm trains too (there are no statistics to
    keep), unless "frozen" was asked for.
    """
    return dataclasses.replace(
        self, head=dataclasses.replace(self.head, epochs=0),
        unfreeze=("all", None),
        batchnorm="train" if self.batchnorm == "auto" else self.batchnorm)


def run_recipe(model, recipe, splits, *, strategy, image_size, batch_size,
               seed, summaries=None, augment=True, checkpointer=None,
               feature_cache="auto", cache_views=1, feature_dir=None,
               random_start=None):
  """Phase 1 (head, base frozen) then phase 2 (top of base unfrozen).

  Phase 1 fits the head as a linear probe on cached features
  (`probe.fit`): in memory or in TFRecord files in `feature_dir` (deleted
  after phase 1), per `features.use_feature_cache`. Without the cache it trains
  the head with the training loop. Phase 2 starts from phase 1's best
  weights; its learning rate and BatchNorm mode, when not given, are picked
  by short trials (`choose_finetuning`). The weights with the lowest
  validation loss over both phases end up in `model`. With a
  `checkpointer` holding progress, finished phases are skipped and the
  interrupted one resumes where it stopped.

  `random_start` (a function returning the classifier's weights at random
  initialization) turns on the transfer check after phase 1
  (`transfer_check.check`): when a probe on the pretrained features does
  clearly worse than one on random-initialization features, the run goes
  on from random weights with `recipe.from_random()`.

  Returns:
    (history, info): per-epoch history and a dict of what was done;
    info["recipe"] is the recipe that ran.
  """
  best = checkpoint_lib.Best()
  saved = checkpointer.progress() if checkpointer else None
  order = ["head", "finetune", "done"]
  reached = order.index(saved["phase"]) if saved else 0
  history, step = (saved["history"], saved["step"]) if saved else ([], 0)
  choices = dict(saved.get("choices") or {}) if saved else {}
  if choices.get("start", {}).get("weights") == "random":  # resumed
    recipe = recipe.from_random()
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

  with checkpoint_lib.STOP.handling():
    if reached == 0 and recipe.batchnorm == "train" and image_size and (
        families.of(model).has_batchnorm(model)):
      count = freezing.calibrate_from(model, splits.train, image_size,
                                      batch_size)
      logging.info("BatchNorm will train: moving statistics set from %d "
                   "training images first, so phase 1 sees the features "
                   "phase 2 computes", count)
    if recipe.head.epochs and reached == 0:
      start = time.time()
      where = features_lib.use_feature_cache(
          feature_cache, strategy, splits, model, cache_views, feature_dir)
      compared = None
      if where:
        choices["head"], compared = _fit_head(
            model, splits, where=where, views=cache_views,
            directory=feature_dir, step=step, history=history, best=best,
            summaries=summaries, **common)
      else:
        history, step = loop.train_phase(
            model, recipe.head, splits, first_step=step, resume=saved,
            history=history, summaries=summaries, best=best,
            checkpointer=checkpointer, **common)
        if random_start:
          logging.info("transfer check skipped: it compares cached "
                       "features, and the feature cache is off")
      info["head_seconds"] = time.time() - start
      best.restore(model)
      if auto and image_size:
        choices["augment"] = choose_augmentation(
            model, splits, image_size=image_size, batch_size=batch_size)
        common["augment"] = choices["augment"]["policy"]
      if compared is not None and random_start:
        choices["start"] = transfer_check.check(
            model, splits, compared, random_start(), image_size=image_size,
            batch_size=batch_size, seed=seed)
      if choices.get("start", {}).get("weights") == "random":
        # The pretrained head is set aside with the weights under it.
        choices["start"]["head"] = choices.pop("head")
        recipe, history, best = recipe.from_random(), [], checkpoint_lib.Best()
      else:
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
        info["unfrozen_layers"] = families.of(model).unfreeze_top(
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
        history, step = loop.train_phase(
            model, spec, splits, first_step=step, history=history,
            resume=saved if reached == 1 and not carry else None,
            summaries=summaries, best=best, checkpointer=checkpointer,
            carry=carry, **common)
      info["finetune_seconds"] = time.time() - start
    elif recipe.finetune.epochs:  # resumed after both phases
      with strategy.scope():
        info["unfrozen_layers"] = families.of(model).unfreeze_top(
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
  info["recipe"] = recipe
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
    (what `run.json` records about the fit (`probe.Fit.summary`), the
    features `transfer_check.check` compares on).
  """
  start = time.time()
  if where == "disk":
    shutil.rmtree(directory, ignore_errors=True)
    os.makedirs(directory)
  try:
    cache = features_lib.FeatureCache(model, splits, image_size=image_size,
                         batch_size=batch_size, views=views, seed=seed,
                         directory=directory if where == "disk" else None,
                         augment=augment)
    fit = probe.fit(cache.train, cache.validation, splits.num_classes,
                    seed=seed)
    compared = transfer_check.sample(cache)
  finally:
    if where == "disk":
      shutil.rmtree(directory, ignore_errors=True)
  families.of(model).head_parts(model)[1][-1].set_weights([fit.kernel, fit.bias])
  chosen = fit.grid[[g["strength"] for g in fit.grid].index(fit.strength)]
  # The whole model on the validation split: the fit's own figures up to
  # rounding, and a confusion matrix for TensorBoard.
  val = steps_lib.evaluate(model, splits.validation, splits.sizes["validation"],
                 strategy=strategy, class_names=splits.class_names,
                 image_size=image_size, batch_size=batch_size)
  history.append({"phase": "head", "epoch": 1, "step": step,
                  "loss": chosen["train_loss"],
                  "accuracy": chosen["train_accuracy"],
                  "val_loss": val["loss"], "val_accuracy": val["accuracy"],
                  "seconds": time.time() - start})
  summaries = summaries or summaries_lib.Summaries()
  summaries.scalars("validation", step, {"loss": val["loss"],
                                         "accuracy": val["accuracy"]})
  sample = (data_lib.to_numpy(splits.validation, image_size, limit=16)
            if summaries.enabled and image_size else None)
  summaries_lib.image_summaries(summaries, model, val, sample,
                                splits.class_names, step)
  best.offer(model, val, ("head", 1), step)
  return fit.summary(), compared


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
  batchnorm = recipe.batchnorm if families.of(model).has_batchnorm(model) else "frozen"
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
    families.of(model).unfreeze_top(model, *recipe.unfreeze,
                        train_batchnorm=mode == "train")
    best, carry = checkpoint_lib.Best(), {}
    rows, step = loop.train_phase(
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
