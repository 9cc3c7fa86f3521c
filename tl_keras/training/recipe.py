"""The two-phase transfer recipe: a head on the frozen base, then fine-tuning.
"""

import dataclasses
import logging
import time

import numpy as np
import tensorflow as tf

from tl_keras.data import inputs as inputs_lib
from tl_keras.models import freezing
import tl_keras.training.checkpoint as checkpoint_lib
import tl_keras.training.choices as choices_lib
import tl_keras.training.features as features_lib
import tl_keras.training.head as head_lib
import tl_keras.training.loop as loop
import tl_keras.training.oneshot as oneshot
import tl_keras.training.steps as steps_lib
import tl_keras.training.transfer_check as transfer_check


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
  # Phase 2's best weights against the phase-1 head (`choices.keep_phase`):
  # "simplest" or "lowest_loss".
  keep: str = "simplest"
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

  def with_random_trials(self, rates=None):
    """Phase 2's trials as a start from random weights runs them; `rates`:
    a family's own rates instead of `random_lrs`."""
    return dataclasses.replace(self, finetune_lrs=rates or self.random_lrs,
                               random_lrs=rates or self.random_lrs,
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
  after phase 1), per `features.use_feature_cache`. Without the cache it
  trains the head with the training loop. Phase 2 starts from phase 1's
  best weights; its learning rate and BatchNorm mode, when not given, are
  picked by short trials (`choose_finetuning`). The weights with the lowest
  validation loss over both phases end up in `model`. `context` (a
  `Context`, its `family` that of `model`) says how the phases train; with
  its checkpointer holding progress, finished phases are skipped and the
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
  run = _RecipeRun(model, recipe, splits, context, random_start)
  with run.context.stop.handling():
    run.calibrate_batchnorm()
    if run.recipe.head.epochs and run.reached == 0:
      run.head_phase(feature_cache, cache_views, feature_dir)
    if run.recipe.finetune.epochs and run.reached <= 1:
      run.finetune_phase()
    elif run.recipe.finetune.epochs:  # resumed after both phases
      run.unfreeze(run.choices["finetune"])
    run.keep()
  return run.history, run.summary()


class _RecipeRun:
  """`run_recipe`'s state: the recipe as it turned out, the best weights,
  the history and step, the choices made, and where a resumed run was."""

  def __init__(self, model, recipe, splits, context, random_start):
    self.model, self.splits, self.random_start = model, splits, random_start
    checkpointer = context.checkpointer
    self.best = checkpoint_lib.Best()
    self.saved = saved = checkpointer.progress() if checkpointer else None
    self.reached = (["head", "finetune", "done"].index(saved["phase"])
                    if saved else 0)
    self.history, self.step = ((saved["history"], saved["step"]) if saved
                               else ([], 0))
    self.choices = dict(saved.get("choices") or {}) if saved else {}
    if self.choices.get("start", {}).get("weights") == "random":  # resumed
      recipe = recipe.from_random()
    self.recipe = recipe
    self.auto = context.augment == "auto"
    augment = context.augment
    if self.auto:  # until the head says whether mirror images are the same
      augment = self.choices.get("augment", {}).get("policy", "shift")
      if not recipe.head.epochs and context.image_size and self.reached == 0:
        self.choices["augment"] = {"policy": augment}
        logging.info("--augment=auto: shift (no phase-1 head to tell whether "
                     "mirror images keep their class, so no flips)")
    self.context = context.but(augment=augment)
    self.info = {}
    self.head = None  # the weights phase 1 ended with
    self.unpruned = None  # and before one-shot pruning
    # Gradual pruning (`--prune_sparsity`) happens in phase 2: it always
    # runs, and is the model. One-shot pruning happens before it.
    self.gradual = (recipe.finetune.prune_to > 0
                    and recipe.finetune.prune_method == "gradual")

  def calibrate_batchnorm(self):
    context = self.context
    if self.reached == 0 and self.recipe.batchnorm == "train" and (
        context.image_size and context.family.has_batchnorm(self.model)):
      count = freezing.calibrate_from(self.model, self.splits.train,
                                      context.image_size, context.batch_size)
      logging.info("BatchNorm will train: moving statistics set from %d "
                   "training images first, so phase 1 sees the features "
                   "phase 2 computes", count)

  def head_phase(self, feature_cache, cache_views, feature_dir):
    """Phase 1, then the augmentation, the transfer check and pruning."""
    model, splits, context = self.model, self.splits, self.context
    start = time.time()
    where = features_lib.use_feature_cache(
        feature_cache, context.strategy, splits, model, context.family,
        cache_views, feature_dir)
    compared = None
    if where:
      self.choices["head"], compared, seconds = head_lib.fit_head(
          model, splits, context, where=where, views=cache_views,
          directory=feature_dir, step=self.step, history=self.history,
          best=self.best)
      self.info.update(seconds)
    else:
      self.history, self.step = loop.train_phase(
          model, self.recipe.head, splits, context, first_step=self.step,
          resume=self.saved, history=self.history, best=self.best)
      if self.random_start:
        logging.info("transfer check skipped: it compares cached "
                     "features, and the feature cache is off")
    self.info["head_seconds"] = time.time() - start
    self.best.restore(model)
    if self.auto and context.image_size:
      self.choices["augment"] = choices_lib.choose_augmentation(
          model, splits, image_size=context.image_size,
          batch_size=context.batch_size,
          class_weights=context.class_weights)
      self.context = context.but(augment=self.choices["augment"]["policy"])
    if compared is not None and self.random_start:
      checked = time.time()
      self.choices["start"] = transfer_check.check(
          model, splits, compared, self.random_start(),
          family=context.family, image_size=context.image_size,
          batch_size=context.batch_size, seed=context.seed,
          class_weights=context.class_weights)
      self.info["transfer_check_seconds"] = time.time() - checked
    if self.choices.get("start", {}).get("weights") == "random":
      # The pretrained head is set aside with the weights under it.
      self.choices["start"]["head"] = self.choices.pop("head")
      self.recipe, self.history = self.recipe.from_random(), []
      self.best = checkpoint_lib.Best()
    else:
      self._keep_head()
    self._save("finetune")

  def _keep_head(self):
    """Keeps phase 1's weights (and prunes once, when asked)."""
    model, checkpointer = self.model, self.context.checkpointer
    finetune = self.recipe.finetune
    if finetune.prune_to > 0 and finetune.epochs:
      self.unpruned = [np.copy(w) for w in model.get_weights()]
      if checkpointer:
        checkpointer.save_weights("unpruned", self.unpruned)
      self.best, self.choices["pruned"] = _prune_once(
          model, finetune, self.splits, self.context, self.step)
    self.head = [np.copy(w) for w in model.get_weights()]
    if checkpointer:
      checkpointer.save_weights("head", self.head)

  def _save(self, phase):
    """Saves progress between phases (no optimizer state)."""
    checkpointer = self.context.checkpointer
    if checkpointer:
      checkpointer.choices = self.choices
      checkpointer.save(self.model, None, phase=phase, step_in_phase=0,
                        step=self.step, history=self.history, best=self.best)

  def unfreeze(self, chosen):
    with self.context.strategy.scope():
      self.info["unfrozen_layers"] = self.context.family.unfreeze_top(
          self.model, *self.recipe.unfreeze,
          train_batchnorm=chosen["batchnorm"] == "train")

  def finetune_phase(self):
    """Phase 2: its rate and BatchNorm mode chosen by trials (unless a
    resumed run chose them), then the rest of the winning trial."""
    start = time.time()
    carry = winner = None
    if "finetune" not in self.choices:
      winner = self._choose()
    chosen = self.choices["finetune"]
    self.unfreeze(chosen)
    if self.saved is None:  # just chosen: continue the winning trial, if any
      carry = self._take(winner)
    if chosen.get("skip"):
      self.choices["kept"] = "head"
    else:
      if not self.info["unfrozen_layers"]:
        logging.warning("--unfreeze leaves no base layer with weights "
                        "trainable (the top layers are BatchNorm, "
                        "activations or pooling): phase 2 trains the head "
                        "only; unfreeze more layers")
      spec = dataclasses.replace(self.recipe.finetune,
                                 learning_rate=chosen["learning_rate"])
      self.history, self.step = loop.train_phase(
          self.model, spec, self.splits, self.context, first_step=self.step,
          history=self.history, best=self.best, carry=carry,
          resume=self.saved if self.reached == 1 and not carry else None)
    self.info["finetune_seconds"] = time.time() - start

  def _choose(self):
    """Phase 2's trials; returns the winning trial (or None)."""
    if self.reached == 1:  # the weights phase 1 ended with
      self.context.checkpointer.restore(self.model, None, self.saved,
                                        self.best)
    tried = time.time()
    with self.context.strategy.scope():
      self.choices["finetune"], winner = choices_lib.choose_finetuning(
          self.model, self.recipe, self.splits, self.context,
          may_skip=bool(self.recipe.head.epochs) and not self.gradual,
          first_step=self.step)
    self.info["trials_seconds"] = time.time() - tried
    self.saved, self.reached = None, 1
    return winner

  def _take(self, winner):
    """Goes on from the winning trial; returns its carry (or None)."""
    carry = None
    if winner:
      self.model.set_weights(winner["weights"])
      self.history += winner["history"]
      self.best.take(winner["best"], "finetune")
      carry = winner["carry"]
    checkpointer = self.context.checkpointer
    if checkpointer:  # a resumed run continues from here, not before
      checkpointer.choices = self.choices
      checkpointer.save(
          self.model, carry and carry["optimizer"], phase="finetune",
          step_in_phase=carry["done"] if carry else 0,
          step=carry["step"] if carry else self.step, history=self.history,
          best=self.best, extra=carry["pruning"].state if (
              carry and self.recipe.finetune.prune_to > 0) else None)
      self.saved = checkpointer.progress()
    return carry

  def keep(self):
    """Puts the weights to keep in the model and records which they are."""
    model, best, checkpointer = self.model, self.best, self.context.checkpointer
    if self.reached == 2:
      checkpointer.restore(model, None, self.saved, best)
      logging.info("resuming after training: both phases were done")
    head = self.head or (checkpointer and checkpointer.load_weights("head"))
    self.info["unpruned_weights"] = self.unpruned or (
        checkpointer and checkpointer.load_weights("unpruned"))
    if self.reached < 2 and self.gradual:
      self.choices["kept"] = "finetune"  # the pruned network was asked for
    elif self.reached < 2 and head and best.where and best.where[0] != "head":
      # Phase 2's best has the lower validation loss.
      self.choices["kept"] = choices_lib.keep_phase(
          self.recipe.keep, model, head, best, self.history, self.splits,
          self.context.image_size, self.context.batch_size,
          pruned=self.choices.get("pruned", {}).get("validation"),
          class_weights=self.context.class_weights)
      self.choices["phase_2_lower_loss"] = True
    elif self.reached < 2 and head:
      self.choices["kept"] = "head"
    best.restore(model)
    if self.reached < 2:
      self._save("done")

  def summary(self):
    """`run_recipe`'s info dict."""
    best, info = self.best, self.info
    info["choices"] = self.choices
    info["recipe"] = self.recipe
    info["best_validation_loss"] = best.loss
    info["best_validation_accuracy"] = best.accuracy
    info["best_epoch"] = list(best.where) if best.where else None
    logging.info("best validation loss %.4f, accuracy %.4f (%s epoch %s)",
                 best.loss, best.accuracy, *(best.where or ("-", "-")))
    return info


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
