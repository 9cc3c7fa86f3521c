"""The from-scratch baseline (--compare_scratch): the same network and
recipe from random weights, and which of the two models a run exports."""

import dataclasses
import logging
import time

from tl_keras import families
from tl_keras.modes import recipe_config
from tl_keras import training


def train_scratch(config, splits, image_size, strategy, jit_compile=False,
                  augment=None, class_weights=None, weighting=None):
  """The baseline: the same recipe from random weights.

  Same architecture, data, step budget and choices made on validation as
  the transfer run, only the starting weights differ: `--weights=none`,
  so every layer trains (BatchNorm too) and the learning rate is picked by
  the same trials. What the transfer run gains over it is what the
  pretrained weights bought. `augment`: the policy the transfer run
  trained with (what --augment=auto settled on); default --augment.
  `class_weights`: the transfer run's (`imbalance.class_weights`);
  `weighting`: its record, whose logit offsets (--class_weight=
  logit_adjust) shift this model's logits too.

  Returns:
    (model, history, info): history rows are phase "scratch"; info is
    `training.run_recipe`'s.
  """
  config = dataclasses.replace(config, weights="none", unfreeze="all")
  family = families.find(config.model)
  model = family.build(config, splits.num_classes, strategy)
  history, info = training.run_recipe(
      model, recipe_config.recipe_from_config(config, jit_compile), splits,
      training.Context(strategy, image_size, config.batch_size,
                       seed=config.seed, family=family,
                       augment=augment or family.augment(config),
                       class_weights=class_weights))
  training.imbalance.adjust_logits(family.head_parts(model)[1][-1],
                                   weighting or {})
  return model, [{**h, "phase": "scratch"} for h in history], info


def negative_transfer(metrics):
  """A plain warning when scratch beat transfer on validation, else None.

  Validation, not test: it is what the run chose by, and a user acting on
  the warning should not be tuning on the test split.
  """
  transfer = metrics["validation"]["best_accuracy"]
  scratch = metrics["scratch"]["validation"]["best_accuracy"]
  if scratch <= transfer:
    return None
  return (f"negative transfer: trained from random weights, the same "
          f"network reached {scratch:.1%} validation accuracy against "
          f"{transfer:.1%} from the pretrained weights (test: "
          f"{metrics['scratch']['test']['accuracy']:.1%} against "
          f"{metrics['test']['accuracy']:.1%}). The pretrained features do "
          "not fit this data. Try a backbone pretrained on data closer to "
          "yours, more fine-tuning (--min_steps, --finetune_epochs), or, if "
          "you have enough labels, train from scratch (--weights=none)")


def keep_better(metrics, info, scratch_info):
  """Which of the two trained models the run exports: the lower validation
  loss (what every choice of the recipe goes by); transfer on a tie.

  Returns:
    {"model": "transfer" or "scratch", "reason": a sentence for the log,
    report and model card}.
  """
  transfer = (info["best_validation_loss"], info["best_validation_accuracy"])
  scratch = (scratch_info["best_validation_loss"],
             scratch_info["best_validation_accuracy"])
  kept = "scratch" if round(scratch[0], 4) < round(transfer[0], 4) else (
      "transfer")
  figures = (f"validation loss {transfer[0]:.4f} (accuracy "
             f"{transfer[1]:.1%}) from the pretrained weights against "
             f"{scratch[0]:.4f} ({scratch[1]:.1%}) from scratch")
  reason = (f"the model trained from scratch is exported: {figures}"
            if kept == "scratch" else
            f"the transfer model is exported: {figures}")
  return {"model": kept, "reason": reason}


def compare(config, trained, metrics, strategy, jit_compile, test_metrics):
  """--compare_scratch: trains the baseline and keeps the better model.

  `test_metrics(model)`: a model's test figures, as the run's own were
  measured (so both are measured alike: multi-label ones at thresholds
  chosen on validation).

  Adds metrics["scratch"] and "transfer_gain" (and "kept", and
  "negative_transfer" when scratch wins on validation). When scratch is
  kept, `trained` takes its model, and the transfer run's figures move to
  metrics["transfer"].
  """
  if trained.info["choices"].get("start", {}).get("weights") == "random":
    # The run itself trained from random weights: it is its own baseline.
    metrics["scratch"] = {"test": metrics["test"],
                          "validation": metrics["validation"],
                          "same_as_run": True}
    metrics["transfer_gain"] = 0.0
    logging.info("from scratch: the run itself trained from random "
                 "initialization, so it is its own baseline")
    return
  start = time.time()
  splits, info = trained.splits, trained.info
  model, history, scratch_info = train_scratch(
      config, splits, trained.image_size, strategy, jit_compile,
      augment=info["choices"].get("augment", {}).get("policy"),
      class_weights=info.get("class_weights"),
      weighting=info["choices"].get("class_weight"))
  trained.history += history
  metrics["scratch"] = {
      "test": test_metrics(model),
      "validation": {"best_loss": scratch_info["best_validation_loss"],
                     "best_accuracy":
                         scratch_info["best_validation_accuracy"]}}
  metrics["transfer_gain"] = (metrics["test"]["accuracy"]
                              - metrics["scratch"]["test"]["accuracy"])
  trained.timings["scratch_seconds"] = time.time() - start
  logging.info("from scratch: test accuracy %.4f; transfer gain %+.1f "
               "points", metrics["scratch"]["test"]["accuracy"],
               100 * metrics["transfer_gain"])
  warning = negative_transfer(metrics)
  if warning:
    metrics["negative_transfer"] = warning
    logging.warning("%s", warning)
  metrics["kept"] = keep_better(metrics, info, scratch_info)
  logging.info("kept: %s", metrics["kept"]["reason"])
  if metrics["kept"]["model"] == "scratch":
    trained.model = model
    trained.info = {**info, "unpruned_weights": None}
    metrics["transfer"] = {"test": metrics["test"],
                           "validation": metrics["validation"]}
    metrics["test"] = metrics["scratch"]["test"]
    metrics["validation"] = {**metrics["scratch"]["validation"],
                             "best_epoch": scratch_info["best_epoch"]}
    trained.fingerprint = training.fingerprint(model)
