"""A whole run: data, model, recipe, evaluation, artifacts."""

import dataclasses
import logging
import os
import platform
import shutil
import sys
import tempfile
import time

import keras
import numpy as np
import tensorflow as tf

from tl_keras import artifacts
from tl_keras import config as config_lib
from tl_keras import distribution
from tl_keras import evaluation
from tl_keras import export
from tl_keras import export_mode
from tl_keras import families
from tl_keras import litert
from tl_keras import pretraining
from tl_keras import recipe_config
from tl_keras import report
from tl_keras import training
from tl_keras.errors import UserError


def train_scratch(config, splits, image_size, strategy, jit_compile=False,
                  augment=None):
  """The baseline: the same recipe from random weights.

  Same architecture, data, step budget and choices made on validation as
  the transfer run, only the starting weights differ: `--weights=none`,
  so every layer trains (BatchNorm too) and the learning rate is picked by
  the same trials. What the transfer run gains over it is what the
  pretrained weights bought. `augment`: the policy the transfer run
  trained with (what --augment=auto settled on); default --augment.

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
                       augment=augment or family.augment(config)))
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


def _versions():
  import absl  # pylint: disable=g-import-not-at-top
  out = {"python": platform.python_version(), "tensorflow": tf.__version__,
         "keras": keras.__version__, "numpy": np.__version__}
  for name in ("tensorflow_datasets", "keras_hub", "ai_edge_litert"):
    module = sys.modules.get(name)
    if module is not None:
      out[name] = getattr(module, "__version__", "unknown")
  out["absl"] = getattr(absl, "__version__", "unknown")
  return out


def train_and_evaluate(config, strategy):
  """Runs the transfer recipe end to end and writes the artifacts.

  Args:
    config: a `Config`.
    strategy: the `tf.distribute.Strategy` to run under.

  Returns:
    The metrics dict also written to metrics.json.
  """
  config = config.resolved()
  config.validate()
  if not distribution.is_chief(strategy):
    return _train_and_evaluate(config, strategy, chief=False)
  with artifacts.locked(config.output_dir):
    return _train_and_evaluate(config, strategy, chief=True)


def _train_and_evaluate(config, strategy, chief):
  """`train_and_evaluate` once the output directory is locked."""
  started = time.time()
  out = config.output_dir
  if chief:
    artifacts.prepare(out, overwrite=config.overwrite)
  checkpointer = make_checkpointer(config, chief)
  speed = {"policy": distribution.resolve_mixed_precision(
               config.mixed_precision),
           "jit_compile": distribution.resolve_jit_compile(config.jit_compile),
           "lr_scale": config.lr_scale()}
  logging.info("precision %s, XLA %s; given learning rates x%.3g for "
               "global batch %d (%s rule from batch %d%s)", speed["policy"],
               "on" if speed["jit_compile"] else "off", speed["lr_scale"],
               config.batch_size, config.lr_rule(),
               config_lib.REFERENCE_BATCH,
               "; off by --no_lr_scaling" if config.no_lr_scaling else "")
  previous = keras.mixed_precision.dtype_policy()
  keras.mixed_precision.set_dtype_policy(speed["policy"])
  try:
    return _train_evaluate_export(config, strategy, chief, checkpointer,
                                  started, speed)
  finally:
    keras.mixed_precision.set_dtype_policy(previous)
    if not chief:  # a worker's private checkpoints
      shutil.rmtree(checkpointer.directory, ignore_errors=True)


# --feature_cache=disk writes phase 1's features here, inside --output_dir.
FEATURE_CACHE = ".feature_cache"


# The settings shown in TensorBoard's HParams dashboard.
HPARAMS = ("model", "weights", "dataset", "image_size", "batch_size",
           "head_epochs", "head_lr", "finetune_epochs", "finetune_lr",
           "unfreeze", "optimizer", "weight_decay", "label_smoothing",
           "dropout", "seed")


def make_checkpointer(config, chief):
  """The run's `training.Checkpointer`; checks a resume uses the same flags.

  The chief checkpoints to output_dir/checkpoints; other workers write to a
  private temporary directory and resume from the chief's.
  """
  shared = os.path.join(config.output_dir, artifacts.CHECKPOINTS)
  settings = {k: getattr(config, k) for k in config_lib.RESUME_SETTINGS}
  checkpointer = training.Checkpointer(
      shared if chief else tempfile.mkdtemp(prefix="tl_keras-worker-"),
      every_steps=config.checkpoint_every, settings=settings,
      restore_from=shared)
  saved = checkpointer.progress()
  if saved:
    changed = [f"--{k}={saved['settings'].get(k)!r} then, {v!r} now"
               for k, v in settings.items() if saved["settings"].get(k) != v]
    if changed:
      raise UserError(
          f"{config.output_dir} holds an unfinished run made with other "
          f"settings ({'; '.join(changed[:3])}); rerun with the same flags "
          "to resume it, or pass --overwrite to start afresh")
    logging.info("found an unfinished run in %s: resuming at phase %s, "
                 "global step %d", config.output_dir, saved["phase"],
                 saved["step"])
  return checkpointer


def _train_evaluate_export(config, strategy, chief, checkpointer, started,
                           speed):
  """The run itself, after the output directory is prepared."""
  out = config.output_dir
  family = families.find(config.model)
  family.check(config)
  image_size = family.image_size(config)
  recipe = recipe_config.recipe_from_config(config, speed["jit_compile"])
  recipe_config.log_plan(config, recipe)

  splits = raw_splits = family.load_splits(config)
  for note in splits.notes:
    logging.info("data: %s", note)
  logging.info("data: %d classes; %s", splits.num_classes, ", ".join(
      f"{k} {v}" for k, v in splits.sizes.items()))
  if config.batch_size > splits.sizes["train"]:
    raise UserError(f"--batch_size={config.batch_size} is larger than the "
                    f"{splits.sizes['train']} training examples; lower "
                    "--batch_size")

  timings = {}
  model = family.build(pretraining.resolved(config, family, strategy),
                       splits.num_classes, strategy)
  # Text: tokenized once, with the model's own preprocessor.
  splits = family.prepare_splits(splits, model)
  if config.finetune_epochs:  # fails before training if too many
    count = family.unfreeze_count(model, *recipe.unfreeze)
    logging.info("phase 2 unfreezes the top %d %s of the base, from %s up",
                 count, family.block_word,
                 family.first_unfrozen_block(model, *recipe.unfreeze))
  timings["setup_seconds"] = time.time() - started
  summaries = training.Summaries(
      os.path.join(out, "tensorboard") if chief else None,
      profile_steps=config_lib.parse_profile_steps(config.profile_steps),
      every_steps=config.log_every_steps)
  summaries.text("config", "\n".join(
      f"    --{k}={v}" for k, v in dataclasses.asdict(config).items()))
  def random_start():  # the scratch baseline's starting weights
    return family.build(dataclasses.replace(config, weights="none"),
                        splits.num_classes, strategy).get_weights()

  history, info = training.run_recipe(
      model, recipe, splits,
      training.Context(strategy, image_size, config.batch_size,
                       seed=config.seed, augment=family.augment(config),
                       family=family, summaries=summaries,
                       checkpointer=checkpointer),
      feature_cache=config.feature_cache, cache_views=config.cache_views,
      feature_dir=os.path.join(out, FEATURE_CACHE) if chief else None,
      # Without phase 2 there is nothing to train from random weights.
      random_start=random_start if (config.transfer_check
                                    and config.finetune_epochs) else None)
  start_check = info["choices"].get("start", {})
  if config.prune_sparsity:
    method = info["recipe"].finetune.prune_method
    pruned = training.pruning.measure(
        training.oneshot.kernels(model) if method == "oneshot" else
        training.pruning.trained_kernels(model), config.prune_sparsity,
        method)
    logging.info("pruned: %.1f%% of the %s weights of %d kernels are zero "
                 "(target %.0f%%, %s)", 100 * pruned["sparsity"],
                 f"{pruned['weights']:,}", pruned["kernels"],
                 100 * config.prune_sparsity, pruned["method"])
  timings.update({k: v for k, v in info.items() if k.endswith("_seconds")})
  fingerprint = training.fingerprint(model)
  logging.info("final weights fingerprint %s (equal on every worker)",
               fingerprint)

  eval_args = dict(strategy=strategy, class_names=splits.class_names,
                   image_size=image_size, batch_size=config.batch_size)
  metrics = {"test": training.evaluate(model, splits.test,
                                       splits.sizes["test"], **eval_args),
             "validation": {"best_loss": info["best_validation_loss"],
                            "best_accuracy": info["best_validation_accuracy"],
                            "best_epoch": info["best_epoch"]}}
  if config.prune_sparsity:
    metrics["pruning"] = pruned
  logging.info("test accuracy %.4f, macro-F1 %.4f\n%s",
               metrics["test"]["accuracy"], metrics["test"]["macro_f1"],
               evaluation.format_table(metrics["test"]))

  warning = training.transfer_warning(start_check)
  if warning:
    metrics["negative_transfer"] = warning
    logging.warning("%s", warning)
  if config.compare_scratch and warning:
    # The run itself trained from random weights: it is its own baseline.
    metrics["scratch"] = {"test": metrics["test"],
                          "validation": metrics["validation"],
                          "same_as_run": True}
    metrics["transfer_gain"] = 0.0
    logging.info("from scratch: the run itself trained from random "
                 "initialization, so it is its own baseline")
  elif config.compare_scratch:
    start = time.time()
    scratch, scratch_history, scratch_info = train_scratch(
        config, splits, image_size, strategy, speed["jit_compile"],
        augment=info["choices"].get("augment", {}).get("policy"))
    history += scratch_history
    metrics["scratch"] = {
        "test": training.evaluate(scratch, splits.test, splits.sizes["test"],
                                  **eval_args),
        "validation": {"best_loss": scratch_info["best_validation_loss"],
                       "best_accuracy":
                           scratch_info["best_validation_accuracy"]}}
    metrics["transfer_gain"] = (metrics["test"]["accuracy"]
                                - metrics["scratch"]["test"]["accuracy"])
    timings["scratch_seconds"] = time.time() - start
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
      model, info = scratch, {**info, "unpruned_weights": None}
      metrics["transfer"] = {"test": metrics["test"],
                             "validation": metrics["validation"]}
      metrics["test"] = metrics["scratch"]["test"]
      metrics["validation"] = {
          **metrics["scratch"]["validation"],
          "best_epoch": scratch_info["best_epoch"]}
      fingerprint = training.fingerprint(model)

  if chief:
    with artifacts.staged(out) as stage:
      export.save_keras(model, os.path.join(stage, "model.keras"))
      artifacts.write_labels(os.path.join(stage, "labels.txt"),
                             splits.class_names)
      start = time.time()
      rows, skipped = export_mode.export_artifacts(
          model, stage, config, raw_splits,
          unpruned=info.get("unpruned_weights"), timings=timings)
      if skipped:
        metrics["exports_skipped"] = skipped
      # Writing the files alone: the fallback and the parity check apart.
      timings["export_seconds"] = time.time() - start - timings.get(
          "parity_seconds", 0.0) - timings.get("int8_fallback_seconds", 0.0)
      if rows:
        metrics["tflite"] = rows
      artifacts.write_json(os.path.join(stage, "metrics.json"), metrics)
      timings["total_seconds"] = time.time() - started
      record = {
          "config": dataclasses.asdict(config),
          "model": {**family.describe(config, model),
                    "image_size": image_size,
                    "parameters": model.count_params(),
                    "unfrozen_layers": info.get("unfrozen_layers", 0),
                    "first_unfrozen_block": (
                        family.first_unfrozen_block(
                            model, *info["recipe"].unfreeze)
                        if config.finetune_epochs else None),
                    "weights_fingerprint": fingerprint},
          "recipe": info["choices"],
          "learning_rates": recipe_config.effective_rates(config, recipe, info["choices"]),
          "data": {"sizes": splits.sizes, "classes": splits.class_names,
                   "notes": splits.notes,
                   "skipped_images": {"count": len(splits.skipped),
                                      "files": splits.skipped[:100]}},
          "precision": speed,
          "strategy": {"flag": config.strategy,
                       "name": type(strategy).__name__,
                       "replicas": strategy.num_replicas_in_sync},
          "versions": _versions(),
          "timings": timings,
          "history": history,
      }
      artifacts.write_json(os.path.join(stage, "run.json"), record)
      report.write_all(stage, record, metrics)
    summaries.hparams(
        {k: v for k, v in dataclasses.asdict(config).items()
         if k in HPARAMS}, {
             "test_accuracy": metrics["test"]["accuracy"],
             "test_macro_f1": metrics["test"]["macro_f1"],
             "best_validation_accuracy": info["best_validation_accuracy"]})
    shutil.rmtree(checkpointer.directory, ignore_errors=True)  # finished
    logging.info("wrote %s (%.0fs in all)", out, time.time() - started)
    export_mode.check_exports(metrics.get("tflite", {}),
                              config.max_accuracy_drop)
  return metrics


def execute(config):
  """Runs `config.mode` and returns the text to print at the end.

  train builds the strategy and runs the recipe; export, predict and
  evaluate work on artifacts of earlier runs.
  """
  from tl_keras import predictors  # pylint: disable=g-import-not-at-top
  config = config.resolved()
  config.validate()
  if config.mode == "train":
    strategy = distribution.build_strategy(config.strategy, config.tpu)
    return format_summary(train_and_evaluate(config, strategy))
  if config.mode == "export":
    metrics = export_mode.export_run(config)
    return (litert.format_parity(metrics["tflite"])
            if metrics.get("tflite") else f"exported to {config.run_dir}")
  if config.mode == "predict":
    paths = [p.strip() for p in config.inputs.split(",") if p.strip()]
    return predictors.predict_files(config.artifact, paths, config.top_k)[1]
  kind = predictors.load(config.artifact).data
  metrics = predictors.evaluate(
      config.artifact, families.for_data(kind).load_splits(config),
      split=config.split)
  summary = format_summary({"test": metrics}).replace(
      "test accuracy", f"{config.split} accuracy")
  return summary + "\n" + evaluation.format_table(metrics)


def format_summary(metrics):
  """A few lines for the end of the console output."""
  lines = [f"test accuracy {metrics['test']['accuracy']:.4f}  "
           f"macro-F1 {metrics['test']['macro_f1']:.4f}"]
  if "top5_accuracy" in metrics["test"]:
    lines[0] += f"  top-5 {metrics['test']['top5_accuracy']:.4f}"
  if "scratch" in metrics:
    lines.append(f"from scratch  {metrics['scratch']['test']['accuracy']:.4f}"
                 f"  (transfer gain {100 * metrics['transfer_gain']:+.1f} "
                 "points)")
  if metrics.get("tflite"):
    lines.append(litert.format_parity(metrics["tflite"]))
  return "\n".join(lines)
