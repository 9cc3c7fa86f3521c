"""The recipe a `Config` asks for: phases, rates, BatchNorm policy."""

import logging

from tl_keras import config as config_lib
from tl_keras import families
from tl_keras import flag_values
from tl_keras import training


# Validation at least this many steps apart: on 100 images an epoch is 4
# steps, and validating after every one would cost more than the training.
EVAL_STEPS = 10


def recipe_from_config(config, jit_compile=False):
  """The two phases as `training.Recipe`, learning rates scaled."""
  family = families.find(config.model)
  common = dict(optimizer=config.optimizer, weight_decay=config.weight_decay,
                label_smoothing=label_smoothing(config, family),
                jit_compile=jit_compile, min_steps=config.min_steps,
                warmup=config.warmup, early_stopping=config.early_stopping,
                eval_steps=EVAL_STEPS,
                no_decay=family.no_decay)
  scale = config.lr_scale()
  # Random weights hold no features to fit a head on: phase 2 trains it all.
  head_epochs = 0 if config.weights == "none" else config.head_epochs
  recipe = training.Recipe(
      head=training.PhaseSpec("head", head_epochs,
                              config.head_lr * scale, **common),
      finetune=training.PhaseSpec("finetune", config.finetune_epochs,
                                  config.finetune_lr * scale,
                                  prune_to=config.prune_sparsity,
                                  prune_block=config.prune_block,
                                  prune_method=prune_method(config), **common),
      unfreeze=flag_values.parse_unfreeze(config.unfreeze),
      batchnorm=batchnorm_policy(config), keep=config.keep_phase)
  if config.weights == "none":
    recipe = recipe.with_random_trials(family.random_lrs)
  return recipe


def label_smoothing(config, family):
  """--label_smoothing, or the model's default; none under
  --class_weight=logit_adjust, whose shift by the log of each class's
  share assumes logits trained without smoothing (smoothing squeezes them
  and the shift overshoots: on two unreported docstring sets, the
  word-embedding model's test accuracy fell from 89% to 70% on one)."""
  if config.label_smoothing is not None:
    return config.label_smoothing
  if config.class_weight == "logit_adjust":
    return 0.0
  return family.label_smoothing


def prune_method(config):
  """--prune_method, or "gradual" where phase 1 trains no head first
  (one-shot pruning reconstructs a trained network's outputs)."""
  if config.prune_sparsity and config.prune_method == "oneshot" and (
      config.head_epochs == 0 or config.weights == "none"):
    logging.info("--prune_method=oneshot rebuilds a trained network; with "
                 "%s phase 2 prunes gradually instead",
                 "--weights=none" if config.weights == "none"
                 else "--head_epochs=0")
    return "gradual"
  return config.prune_method


def effective_rates(config, recipe, choices):
  """The learning rates the run trained at, for run.json.

  Given rates are scaled by the batch-size rule; phase 2's trial rates are
  used as they are (the validation split picks among them).
  """
  finetune = choices.get("finetune", {})
  return {"rule": config.lr_rule(), "scale": config.lr_scale(),
          "reference_batch": config_lib.REFERENCE_BATCH,
          "global_batch": config.batch_size,
          "head": (recipe.head.learning_rate if recipe.head.epochs and
                   "head" not in choices else None),  # None: a fitted probe
          "finetune_trials": ([] if recipe.finetune.learning_rate
                              else list(recipe.finetune_lrs)),
          "finetune": finetune.get("learning_rate",
                                   recipe.finetune.learning_rate or None)}


def batchnorm_policy(config):
  """--batchnorm, with auto resolved for random weights.

  A randomly initialized backbone has no statistics worth keeping, so its
  BatchNorm trains; a pretrained one keeps its own unless a trial says
  otherwise ("auto" in `training.Recipe`).
  """
  if config.batchnorm == "auto" and config.weights == "none":
    return "train"
  return config.batchnorm


def log_plan(config, recipe):
  """Says what the recipe will do, before it starts."""
  if config.weights == "none" and config.head_epochs:
    logging.info("--weights=none: no pretrained features to fit a head on, "
                 "so phase 1 is skipped and phase 2 trains every layer")
  if recipe.batchnorm != config.batchnorm:
    logging.info("--batchnorm=auto: BatchNorm trains (random weights have "
                 "no statistics worth keeping)")
  default = families.find(config.model).label_smoothing
  if (config.label_smoothing is None and config.class_weight == "logit_adjust"
      and default):
    logging.info("--class_weight=logit_adjust: no label smoothing (this "
                 "model's default %g squeezes the logits, and the shift "
                 "would overshoot)", default)
  if config.label_smoothing is None and recipe.finetune.label_smoothing:
    logging.info("label smoothing %g, this model's default (--label_smoothing "
                 "sets another)", recipe.finetune.label_smoothing)
