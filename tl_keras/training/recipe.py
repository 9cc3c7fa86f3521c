"""The two-phase transfer recipe: a head on the frozen base, then fine-tuning.
"""

import dataclasses
import logging
import os
import shutil
import time

import numpy as np
import tensorflow as tf

from tl_keras import freezing
from tl_keras import inputs as inputs_lib
from tl_keras import probe
from tl_keras.training import checkpoint as checkpoint_lib
from tl_keras.training import choices as choices_lib
from tl_keras.training import features as features_lib
from tl_keras.training import loop
from tl_keras.training import oneshot
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
  # From random weights there are no pretrained features to spare, and the
  # lowest rate only trains slower: from random initialization, 1e-5 ended
  # its trial with by far the highest validation loss on digits (1.59
  # against 0.10 at 1e-3) and docstrings (1.60 against 1.09).
  random_lrs: tuple = (1e-4, 1e-3)
  # From random weights there is no disruption to get past: the rate that
  # learns faster leads from the first steps, so shorter trials tell them
  # apart (docstrings, 50 steps: validation loss 1.16 at 1e-3 against 1.57
  # at 1e-4; the trial that wins goes on unchanged either way).
  random_trial_fraction: float = 1 / 6

  def with_random_trials(self):
    """Phase 2's trials as a start from random weights runs them."""
    return dataclasses.replace(self, finetune_lrs=self.random_lrs,
                               trial_fraction=self.random_trial_fraction)

  def from_random(self):
    """The recipe for the same network starting from random weights.

    There are no features to fit a head on, so phase 1 is skipped and phase
    2 trains every block, its rate picked among `random_lrs` by trials of
    `random_trial_fraction` of the phase; BatchNorm trains too (there are
    no statistics to keep), unless "frozen" was asked for.
    """
    return dataclasses.replace(
        self.with_random_trials(),
        head=dataclasses.replace(self.head, epochs=0), unfreeze=("all", None),
        # Random weights have no outputs worth reconstructing: prune
        # gradually while they train.
        finetune=dataclasses.replace(self.finetune, prune_method="gradual"),
        batchnorm="train" if self.batchnorm == "auto" else self.batchnorm)


def run_recipe(model, recipe, splits, context, *, feature_cache="auto",
               cache_views=1, feature_dir=None, random_start=None):
  """Phase 1 (head, base frozen) then phase 2 (top of base unfrozen).

  Phase 1 fits the head as a linear probe on cached features
  (`probe.fit`): in memory or in TFRecord files in `feature_dir` (deleted
  after phase 1), per `features.use_feature_cache`. Without the cache it trains
  the head with the training loop. Phase 2 starts from phase 1's best
  weights; its learning rate and BatchNorm mode, when not given, are picked
  by short trials (`choose_finetuning`). The weights with the lowest
  validation loss over both phases end up in `model`. `context` (a
  `Context`, its `family` that of `model`) says how the phases train; with its checkpointer holding
  progress, finished phases are skipped and the interrupted one resumes
  where it stopped.

  `random_start` (a function returning the classifier's weights at random
  initialization) turns on the transfer check after phase 1
  (`transfer_check.check`): when a probe on the pretrained features does
  clearly worse than one on random-initialization features, the run goes
  on from random weights with `recipe.from_random()`.

  Returns:
    (history, info): per-epoch history and a dict of what was done;
    info["recipe"] is the recipe that ran.
  """
  strategy, image_size = context.strategy, context.image_size
  batch_size, checkpointer = context.batch_size, context.checkpointer
  best = checkpoint_lib.Best()
  saved = checkpointer.progress() if checkpointer else None
  order = ["head", "finetune", "done"]
  reached = order.index(saved["phase"]) if saved else 0
  history, step = (saved["history"], saved["step"]) if saved else ([], 0)
  choices = dict(saved.get("choices") or {}) if saved else {}
  if choices.get("start", {}).get("weights") == "random":  # resumed
    recipe = recipe.from_random()
  augment = context.augment
  auto = augment == "auto"
  if auto:  # until the head says whether mirror images are the same class
    augment = choices.get("augment", {}).get("policy", "shift")
    if not recipe.head.epochs and image_size and reached == 0:
      choices["augment"] = {"policy": augment}
      logging.info("--augment=auto: shift (no phase-1 head to tell whether "
                   "mirror images keep their class, so no flips)")
  context = context.but(augment=augment)
  info = {}
  head = None  # the weights phase 1 ended with
  unpruned = None  # and before one-shot pruning
  # Gradual pruning (`--prune_sparsity`) happens in phase 2: it always
  # runs, and is the model. One-shot pruning happens before it.
  gradual = (recipe.finetune.prune_to > 0
             and recipe.finetune.prune_method == "gradual")

  def save_between_phases():
    if checkpointer:
      checkpointer.choices = choices
      checkpointer.save(model, None, phase="finetune", step_in_phase=0,
                        step=step, history=history, best=best)

  with context.stop.handling():
    if reached == 0 and recipe.batchnorm == "train" and image_size and (
        context.family.has_batchnorm(model)):
      count = freezing.calibrate_from(model, splits.train, image_size,
                                      batch_size)
      logging.info("BatchNorm will train: moving statistics set from %d "
                   "training images first, so phase 1 sees the features "
                   "phase 2 computes", count)
    if recipe.head.epochs and reached == 0:
      start = time.time()
      where = features_lib.use_feature_cache(
          feature_cache, strategy, splits, model, context.family, cache_views,
          feature_dir)
      compared = None
      if where:
        choices["head"], compared, seconds = _fit_head(
            model, splits, context, where=where, views=cache_views,
            directory=feature_dir, step=step, history=history, best=best)
        info.update(seconds)
      else:
        history, step = loop.train_phase(
            model, recipe.head, splits, context, first_step=step,
            resume=saved, history=history, best=best)
        if random_start:
          logging.info("transfer check skipped: it compares cached "
                       "features, and the feature cache is off")
      info["head_seconds"] = time.time() - start
      best.restore(model)
      if auto and image_size:
        choices["augment"] = choices_lib.choose_augmentation(
            model, splits, image_size=image_size, batch_size=batch_size)
        context = context.but(augment=choices["augment"]["policy"])
      if compared is not None and random_start:
        checked = time.time()
        choices["start"] = transfer_check.check(
            model, splits, compared, random_start(), family=context.family,
            image_size=image_size, batch_size=batch_size, seed=context.seed)
        info["transfer_check_seconds"] = time.time() - checked
      if choices.get("start", {}).get("weights") == "random":
        # The pretrained head is set aside with the weights under it.
        choices["start"]["head"] = choices.pop("head")
        recipe, history, best = recipe.from_random(), [], checkpoint_lib.Best()
      else:
        if recipe.finetune.prune_to > 0 and recipe.finetune.epochs:
          unpruned = [np.copy(w) for w in model.get_weights()]
          if checkpointer:
            checkpointer.save_weights("unpruned", unpruned)
          best, choices["pruned"] = _prune_once(model, recipe.finetune,
                                                splits, context, step)
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
        tried = time.time()
        with strategy.scope():
          choices["finetune"], winner = choices_lib.choose_finetuning(
              model, recipe, splits, context,
              may_skip=bool(recipe.head.epochs) and not gradual,
              first_step=step)
        info["trials_seconds"] = time.time() - tried
        saved, reached = None, 1
      chosen = choices["finetune"]
      with strategy.scope():
        info["unfrozen_layers"] = context.family.unfreeze_top(
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
              best=best, extra=carry["pruning"].state if (
                  carry and recipe.finetune.prune_to > 0) else None)
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
            model, spec, splits, context, first_step=step, history=history,
            resume=saved if reached == 1 and not carry else None, best=best,
            carry=carry)
      info["finetune_seconds"] = time.time() - start
    elif recipe.finetune.epochs:  # resumed after both phases
      with strategy.scope():
        info["unfrozen_layers"] = context.family.unfreeze_top(
            model, *recipe.unfreeze,
            train_batchnorm=choices["finetune"]["batchnorm"] == "train")
    if reached == 2:
      checkpointer.restore(model, None, saved, best)
      logging.info("resuming after training: both phases were done")
    head = head or (checkpointer and checkpointer.load_weights("head"))
    info["unpruned_weights"] = unpruned or (
        checkpointer and checkpointer.load_weights("unpruned"))
    if reached < 2 and gradual:
      choices["kept"] = "finetune"  # the pruned network is what was asked
    elif reached < 2 and head and best.where and best.where[0] != "head":
      choices["kept"] = choices_lib.keep_simplest(
          model, head, best, history, splits, image_size, batch_size,
          pruned=choices.get("pruned", {}).get("validation"))
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


def _prune_once(model, spec, splits, context, step):
  """One-shot pruning after phase 1 (`oneshot.prune`), on the first
  `oneshot.EXAMPLES` training examples; phase 2 then trains with its zeros.

  Returns:
    (a new `checkpoint_lib.Best` holding the pruned network, whose
    validation figures replace phase 1's; what run.json records).
  """
  examples = splits.train.take(oneshot.EXAMPLES)
  if context.image_size:  # token dicts are used as they are
    examples = examples.map(lambda x, y: (tf.cast(
        inputs_lib.resize(x, context.image_size), tf.float32), y))
  batches = [x for x, _ in examples.batch(oneshot.BATCH)]
  summary = oneshot.prune(model, lambda x: model(x, training=False), batches,
                          spec.prune_to, spec.prune_block)
  val = steps_lib.evaluate(
      model, splits.validation, splits.sizes["validation"],
      strategy=context.strategy, class_names=splits.class_names,
      image_size=context.image_size, batch_size=context.batch_size)
  logging.info("pruned network before phase 2: validation loss %.4f, "
               "accuracy %.4f", val["loss"], val["accuracy"])
  best = checkpoint_lib.Best()
  best.offer(model, val, ("head", 1), step)
  summary["validation"] = {"val_loss": val["loss"],
                           "val_accuracy": val["accuracy"]}
  return best, summary


def _fit_head(model, splits, context, *, where, views, directory, step,
              history, best):
  """Phase 1 on cached features: the head fitted as a linear probe.

  Sets the classification layer's weights, appends the phase's one history
  row and offers the result to `best`.

  Returns:
    (what `run.json` records about the fit (`probe.Fit.summary`), the
    features `transfer_check.check` compares on, {"features_seconds",
    "probe_seconds"}).
  """
  strategy, image_size = context.strategy, context.image_size
  batch_size, seed, augment = context.batch_size, context.seed, context.augment
  start = time.time()
  if where == "disk":
    shutil.rmtree(directory, ignore_errors=True)
    os.makedirs(directory)
  try:
    cache = features_lib.FeatureCache(
        model, splits, family=context.family, image_size=image_size,
        batch_size=batch_size, views=views, seed=seed,
        directory=directory if where == "disk" else None, augment=augment)
    seconds = {"features_seconds": time.time() - start}
    fit = probe.fit(cache.train, cache.validation, splits.num_classes,
                    seed=seed)
    seconds["probe_seconds"] = fit.seconds
    compared = transfer_check.sample(cache)
  finally:
    if where == "disk":
      shutil.rmtree(directory, ignore_errors=True)
  context.family.head_parts(model)[1][-1].set_weights(
      [fit.kernel, fit.bias])
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
  summaries = context.summaries or summaries_lib.Summaries()
  summaries.scalars("validation", step, {"loss": val["loss"],
                                         "accuracy": val["accuracy"]})
  sample = (inputs_lib.to_numpy(splits.validation, image_size, limit=16)
            if summaries.enabled and image_size else None)
  summaries_lib.image_summaries(summaries, model, val, sample,
                                splits.class_names, step)
  best.offer(model, val, ("head", 1), step)
  return fit.summary(), compared, seconds
