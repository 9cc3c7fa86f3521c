"""A whole run: data, model, recipe, evaluation, artifacts."""

import dataclasses
import logging
import os
import platform
import shutil
import sys
import tempfile
import time
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from tl_keras import artifacts
from tl_keras import config as config_lib
from tl_keras import distribution
from tl_keras.errors import UserError
from tl_keras import evaluation
from tl_keras.export import litert
from tl_keras.export import writers
from tl_keras import families
from tl_keras import flag_values
from tl_keras.modes import export_mode
from tl_keras.modes import predict_mode
from tl_keras.modes import recipe_config
from tl_keras.modes import review
from tl_keras.modes import scratch
from tl_keras.modes import tfidf_baseline
from tl_keras import pretraining
from tl_keras.reporting import report
from tl_keras import training
from tl_keras.training import choices


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
  family = families.find(config.model)
  family.check(config)
  config = family.configured(config)
  recipe = recipe_config.recipe_from_config(config, speed["jit_compile"])
  recipe_config.log_plan(config, recipe)
  raw_splits = _load_splits(config, family)
  trained = _train(config, family, recipe, raw_splits, strategy, chief,
                   checkpointer, started)
  metrics = _evaluate(config, trained, strategy)
  if config.compare_scratch:
    scratch.compare(config, trained, metrics, strategy, speed["jit_compile"],
                    lambda model: _test_metrics(config, trained, strategy,
                                                model))
  if chief and config.tfidf_baseline and family.kind in ("text", "words"):
    tfidf_baseline.compare(raw_splits, metrics)
  if chief:
    with artifacts.staged(config.output_dir) as stage:
      _write_artifacts(stage, config, trained, metrics, raw_splits, strategy,
                       speed, started)
    settings = {k: v for k, v in dataclasses.asdict(config).items()
                if k in HPARAMS}
    # The smoothing trained with (None in the config: the model's).
    settings["label_smoothing"] = trained.info["recipe"].finetune.label_smoothing
    trained.summaries.hparams(
        settings, {
             "test_accuracy": metrics["test"]["accuracy"],
             "test_macro_f1": metrics["test"]["macro_f1"],
             "best_validation_accuracy":
                 trained.info["best_validation_accuracy"]})
    shutil.rmtree(checkpointer.directory, ignore_errors=True)  # finished
    logging.info("wrote %s (%.0fs in all)", config.output_dir,
                 time.time() - started)
    export_mode.check_exports(metrics.get("tflite", {}),
                              config.max_accuracy_drop)
  return metrics


def _load_splits(config, family):
  """The --dataset splits, raw (untokenized), logged and checked."""
  splits = family.load_splits(config)
  for note in splits.notes:
    logging.info("data: %s", note)
  logging.info("data: %d classes; %s", splits.num_classes, ", ".join(
      f"{k} {v}" for k, v in splits.sizes.items()))
  if config.batch_size > splits.sizes["train"]:
    raise UserError(f"--batch_size={config.batch_size} is larger than the "
                    f"{splits.sizes['train']} training examples; lower "
                    "--batch_size")
  return splits


@dataclasses.dataclass
class Trained:
  """What training leaves for evaluation and the artifacts: the model and
  the splits it trained on (tokenized for text), its family and input
  size, the history, `run_recipe`'s info, the phase timings, pruning's
  measurement (or None), the final weights' fingerprint and the
  TensorBoard writer. The scratch comparison may swap in its model."""
  model: Any
  splits: Any
  family: Any
  image_size: Any
  recipe: Any
  history: list
  info: dict
  timings: dict
  pruned: Any
  fingerprint: str
  summaries: Any


def _train(config, family, recipe, raw_splits, strategy, chief, checkpointer,
           started):
  """Builds the model and runs the recipe on it."""
  model = family.build(pretraining.resolved(config, family, strategy),
                       raw_splits.num_classes, strategy, raw_splits=raw_splits)
  # Text: tokenized once, with the model's own preprocessor.
  splits = family.prepare_splits(raw_splits, model)
  if config.finetune_epochs:  # fails before training if too many
    count = family.unfreeze_count(model, *recipe.unfreeze)
    logging.info("phase 2 unfreezes the top %d %s of the base, from %s up",
                 count, family.block_word,
                 family.first_unfrozen_block(model, *recipe.unfreeze))
  timings = {"setup_seconds": time.time() - started}
  summaries = training.Summaries(
      os.path.join(config.output_dir, "tensorboard") if chief else None,
      profile_steps=flag_values.parse_profile_steps(config.profile_steps),
      every_steps=config.log_every_steps)
  summaries.text("config", "\n".join(
      f"    --{k}={v}" for k, v in dataclasses.asdict(config).items()))

  def random_start():  # the scratch baseline's starting weights
    return family.build(dataclasses.replace(config, weights="none"),
                        splits.num_classes, strategy,
                        raw_splits=raw_splits).get_weights()

  image_size = family.image_size(config)
  class_weights, weighting = training.imbalance.class_weights(
      training.imbalance.label_counts(raw_splits.train,
                                      raw_splits.num_classes),
      "none" if raw_splits.multi_label else config.class_weight)
  if raw_splits.multi_label:  # the labels are not classes that compete
    weighting["mode"] = config.class_weight
    logging.info("--multi_label: a sigmoid per label and binary "
                 "cross-entropy; the loss is not weighted by class")
  else:
    training.imbalance.log(weighting)
  history, info = training.run_recipe(
      model, recipe, splits,
      training.Context(strategy, image_size, config.batch_size,
                       seed=config.seed, augment=family.augment(config),
                       family=family, class_weights=class_weights,
                       summaries=summaries, checkpointer=checkpointer),
      feature_cache=config.feature_cache, cache_views=config.cache_views,
      feature_dir=(os.path.join(config.output_dir, FEATURE_CACHE) if chief
                   else None),
      # Without phase 2 there is nothing to train from random weights.
      random_start=random_start if (config.transfer_check
                                    and config.finetune_epochs) else None)
  training.imbalance.adjust_logits(family.head_parts(model)[1][-1],
                                   weighting)
  pruned = None
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
  info["choices"]["class_weight"] = weighting
  info["class_weights"] = class_weights
  timings.update({k: v for k, v in info.items() if k.endswith("_seconds")})
  fingerprint = training.fingerprint(model)
  logging.info("final weights fingerprint %s (equal on every worker)",
               fingerprint)
  return Trained(model, splits, family, image_size, recipe, history, info,
                 timings, pruned, fingerprint, summaries)


def _evaluation_args(config, trained, strategy):
  return dict(strategy=strategy, class_names=trained.splits.class_names,
              image_size=trained.image_size, batch_size=config.batch_size)


def _evaluate(config, trained, strategy):
  """metrics.json's test and validation figures (and pruning's, and the
  transfer check's warning)."""
  splits, info = trained.splits, trained.info
  metrics = {"test": _test_metrics(config, trained, strategy),
             "validation": {"best_loss": info["best_validation_loss"],
                            "best_accuracy": info["best_validation_accuracy"],
                            "best_epoch": info["best_epoch"]}}
  if trained.pruned:
    metrics["pruning"] = trained.pruned
  logging.info("test %s %.4f, macro-F1 %.4f\n%s", "exact-match accuracy"
               if splits.multi_label else "accuracy",
               metrics["test"]["accuracy"], metrics["test"]["macro_f1"],
               evaluation.format_table(metrics["test"]))
  warning = training.transfer_warning(info["choices"].get("start", {}))
  if warning:
    metrics["negative_transfer"] = warning
    logging.warning("%s", warning)
  return metrics


def _test_metrics(config, trained, strategy, model=None):
  """metrics.json's "test" of `model` (default: the trained one): under the
  strategy, or, for multi-label data, at per-label thresholds chosen on
  validation (`evaluation.choose_thresholds`), which every worker computes
  alike outside the strategy."""
  model = model or trained.model
  splits = trained.splits
  if not splits.multi_label:
    return training.evaluate(model, splits.test, splits.sizes["test"],
                             **_evaluation_args(config, trained, strategy))

  def predict(split):
    return choices.predictions(
        model, getattr(splits, split), splits.sizes[split],
        image_size=trained.image_size, batch_size=config.batch_size)
  thresholds = evaluation.choose_thresholds(*predict("validation"))
  probs, labels = predict("test")
  metrics = evaluation.multi_label_metrics(
      probs, labels, class_names=splits.class_names, thresholds=thresholds)
  at_half = evaluation.multi_label_metrics(
      probs, labels, class_names=splits.class_names,
      thresholds=np.full(len(thresholds), evaluation.DEFAULT_THRESHOLD),
      ranking=False)
  metrics["at_0.5"] = {k: at_half[k] for k in ("accuracy", "micro_f1",
                                                "macro_f1")}
  logging.info("--multi_label: per-label thresholds chosen on validation "
               "(F1): %s", ", ".join(f"{n} {t:.3f}" for n, t in zip(
                   splits.class_names, thresholds)))
  return metrics


def _write_artifacts(stage, config, trained, metrics, raw_splits, strategy,
                     speed, started):
  """model.keras, labels, the exports, metrics.json, run.json and the
  report into the staging directory."""
  model, info, timings = trained.model, trained.info, trained.timings
  writers.save_keras(model, os.path.join(stage, "model.keras"))
  artifacts.write_labels(os.path.join(stage, "labels.txt"),
                         trained.splits.class_names)
  start = time.time()
  rows, skipped, noise = export_mode.export_artifacts(
      model, stage, config, raw_splits,
      unpruned=info.get("unpruned_weights"), timings=timings,
      # The recipe's choices describe the transfer model, not scratch's.
      choices=None if metrics.get("kept", {}).get("model") == "scratch"
      else info["choices"])
  if skipped:
    metrics["exports_skipped"] = skipped
  if noise:
    metrics["noise_check"] = noise
  # Writing the files alone: the fallback and the parity check apart.
  timings["export_seconds"] = time.time() - start - timings.get(
      "parity_seconds", 0.0) - timings.get("int8_fallback_seconds", 0.0)
  if rows:
    metrics["tflite"] = rows
  start = time.time()
  metrics["review"] = review.write(
      stage, model, trained.family, trained.splits, raw_splits,
      image_size=trained.image_size, batch_size=config.batch_size)
  timings["review_seconds"] = time.time() - start
  logging.info("review: %d training, validation and test examples "
               "predicted wrong, the most confident first, in "
               "suspect_labels.csv",
               metrics["review"]["wrong"])
  artifacts.write_json(os.path.join(stage, "metrics.json"), metrics)
  timings["total_seconds"] = time.time() - started
  record = _run_record(config, trained, strategy, speed)
  artifacts.write_json(os.path.join(stage, "run.json"), record)
  report.write_all(stage, record, metrics)


def _run_record(config, trained, strategy, speed):
  """run.json: the settings, model, recipe, data, versions and history."""
  model, info, splits = trained.model, trained.info, trained.splits
  return {
      "config": dataclasses.asdict(config),
      "model": {**trained.family.describe(config, model),
                "image_size": trained.image_size,
                "parameters": model.count_params(),
                "unfrozen_layers": info.get("unfrozen_layers", 0),
                "first_unfrozen_block": (
                    trained.family.first_unfrozen_block(
                        model, *info["recipe"].unfreeze)
                    if config.finetune_epochs else None),
                "weights_fingerprint": trained.fingerprint},
      # The smoothing trained with: --label_smoothing, or the model's.
      "recipe": {**info["choices"], "label_smoothing":
                 info["recipe"].finetune.label_smoothing},
      "learning_rates": recipe_config.effective_rates(
          config, trained.recipe, info["choices"]),
      "data": {"sizes": splits.sizes, "classes": splits.class_names,
               "notes": splits.notes,
               "skipped_images": {"count": len(splits.skipped),
                                  "files": splits.skipped[:100]},
               **({"text_lengths": splits.text_lengths}
                  if splits.text_lengths else {})},
      "precision": speed,
      "strategy": {"flag": config.strategy,
                   "name": type(strategy).__name__,
                   "replicas": strategy.num_replicas_in_sync},
      "versions": _versions(),
      "timings": trained.timings,
      "history": trained.history,
  }


def execute(config):
  """Runs `config.mode` and returns the text to print at the end.

  train builds the strategy and runs the recipe; export, predict and
  evaluate work on artifacts of earlier runs.
  """
  from tl_keras.modes import predictors  # pylint: disable=g-import-not-at-top
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
    return predict_mode.run(config)
  kind = predictors.load(config.artifact).data
  metrics = predictors.evaluate(
      config.artifact, families.for_data(kind).load_splits(config),
      split=config.split)
  summary = format_summary({"test": metrics}).replace(
      "test accuracy", f"{config.split} accuracy")
  return summary + "\n" + evaluation.format_table(metrics)


def format_summary(metrics):
  """A few lines for the end of the console output."""
  test = metrics["test"]
  if test.get("multi_label"):
    lines = [f"test micro-F1 {test['micro_f1']:.4f}  macro-F1 "
             f"{test['macro_f1']:.4f}  mAP "
             f"{test['mean_average_precision']:.4f}  exact match "
             f"{test['accuracy']:.4f}"]
  else:
    lines = [f"test accuracy {test['accuracy']:.4f}  "
             f"macro-F1 {test['macro_f1']:.4f}"]
  if "top5_accuracy" in metrics["test"]:
    lines[0] += f"  top-5 {metrics['test']['top5_accuracy']:.4f}"
  if "scratch" in metrics:
    lines.append(f"from scratch  {metrics['scratch']['test']['accuracy']:.4f}"
                 f"  (transfer gain {100 * metrics['transfer_gain']:+.1f} "
                 "points)")
  if metrics.get("tflite"):
    lines.append(litert.format_parity(metrics["tflite"]))
  return "\n".join(lines)
