"""The exports a run ends with, and --mode=export on a finished run.

`export_artifacts` writes the --export formats and checks each TFLite file
against the Keras model; `export_run` adds formats to a run directory
without retraining, and rewrites its report and model card.
"""

import dataclasses
import json
import logging
import os
import tempfile
import time

from tl_keras import artifacts
from tl_keras import config as config_lib
from tl_keras.errors import UserError
from tl_keras.export import litert
from tl_keras.export import tflite
from tl_keras.export import writers
from tl_keras import families
from tl_keras import flag_values
from tl_keras.models import saving
from tl_keras.reporting import report
from tl_keras.reporting import sentences


def export_artifacts(model, directory, config, splits, unpruned=None,
                     timings=None, choices=None):
  """Writes the --export formats into `directory` and checks TFLite parity.

  `splits` hold raw examples (images, or untokenized texts). `unpruned`:
  the weights of the network before one-shot pruning; each TFLite variant
  is converted from them too (not kept), and its parity row goes in the
  pruned variant's row as "unpruned". `timings`, a dict, gets the seconds
  of the int8 fallback ("int8_fallback_seconds") and of the parity check
  ("parity_seconds"). `choices`: the recipe's (run.json's "recipe"), so the
  noise check's row says when the run kept the phase-1 head over phase 2's
  weights of lower validation loss ("head_kept_over_phase_2").

  Returns:
    (parity rows {variant: row} of the TFLite variants written, {format:
    why it was skipped}, the Keras model's `writers.noise_check` on the
    parity examples or None).
  """
  formats = flag_values.parse_exports(config.export)
  serving = families.serving_of(model, about={"author": config.author,
                                         "license": config.license})
  variants = [v for v in writers.tflite_variants(formats)
              if v in serving.variants]
  calibration = None
  calibrated = [v for v in variants if v in tflite.CALIBRATED]
  if calibrated:
    pool, pool_labels = serving.examples(
        splits.train, limit=10 * config.calibration_samples)
    calibration = pool[tflite.stratified_sample(
        pool, pool_labels, config.calibration_samples, seed=config.seed)]
    logging.info("%s: calibrating on %d training images",
                 " and ".join(f"tflite_{v}" for v in calibrated),
                 len(calibration))
  skipped = writers.write_exports(model, directory, formats,
                                 class_names=splits.class_names,
                                 calibration_images=calibration,
                                 serving=serving)
  if not variants:
    return {}, skipped, None
  examples, labels = serving.examples(splits.test,
                                      limit=config.parity_samples)
  timings = {} if timings is None else timings
  fallback = None
  start = time.time()
  if "int8" in variants and config.int8_fallback == "auto":
    # With the check off, the fallback still aims at the default bound:
    # "no check" does not ask for a worse int8 file.
    fallback = writers.int8_fallback(
        model, directory, calibration_images=calibration,
        validation=serving.examples(splits.validation,
                                    limit=config.parity_samples),
        test=(examples, labels), max_drop=config.max_accuracy_drop
        if config.max_accuracy_drop >= 0 else config_lib.MAX_ACCURACY_DROP,
        min_agreement=config.min_int8_agreement,
        class_names=splits.class_names, serving=serving)
  if fallback:
    timings["int8_fallback_seconds"] = time.time() - start
  start = time.time()
  # One Keras pass over the test examples, for the parity table and the
  # noise check alike.
  keras_probs = serving.keras_probabilities(model, serving.inputs(examples))
  rows = writers.tflite_parity(model, directory, variants, examples, labels,
                              serving=serving, keras_probs=keras_probs)
  # The gate (--max_accuracy_drop) judges validation, as the int8 fallback
  # does: the two decide on the same examples, and the test split only
  # reports.
  for variant, row in writers.validation_accuracy(
      model, directory, variants, *serving.examples(
          splits.validation, limit=config.parity_samples),
      serving=serving).items():
    rows[variant]["validation"] = row
  noise = writers.noise_check(model, examples, serving=serving,
                              keras_probs=keras_probs)
  if noise and choices and choices.get("kept") == "head" and choices.get(
      "phase_2_lower_loss"):
    noise["head_kept_over_phase_2"] = True
  if noise:
    (logging.warning if noise["fragile"] else logging.info)(
        "noise check: %s", sentences.noise_sentence(noise))
  timings["parity_seconds"] = time.time() - start
  if fallback:
    rows["int8"]["fallback"] = fallback
  if unpruned is not None:
    for variant, row in _unpruned_rows(
        model, unpruned, [f for f in formats if writers.tflite_variants([f])],
        variants, calibration, examples, labels, splits.class_names,
        serving).items():
      rows[variant]["unpruned"] = row
  return rows, skipped, noise


def _unpruned_rows(model, weights, formats, variants, calibration, examples,
                   labels, class_names, serving):
  """Parity rows of the TFLite variants of `model` with `weights`."""
  pruned = model.get_weights()
  model.set_weights(weights)
  try:
    with tempfile.TemporaryDirectory() as directory:
      writers.write_exports(model, directory, formats, class_names=class_names,
                           calibration_images=calibration, serving=serving)
      return writers.tflite_parity(model, directory, variants, examples,
                                  labels, serving=serving)
  finally:
    model.set_weights(pruned)


def check_exports(rows, max_accuracy_drop):
  """Applies --max_accuracy_drop (negative: no check) to the parity rows."""
  if max_accuracy_drop >= 0 and rows:
    litert.check_accuracy_drop(rows, max_accuracy_drop)


def export_run(config):
  """--mode=export: adds --export formats to an existing run directory.

  The run's model, data and settings come from its model.keras and run.json;
  files already there are kept unless --overwrite; metrics.json gains the
  new parity rows.

  Returns:
    The run's updated metrics.
  """
  run_dir = config.run_dir
  record = read_run(run_dir)
  formats = flag_values.parse_exports(config.export)
  if not formats:
    raise UserError("--mode=export with an empty --export: nothing to do; "
                    "name formats, e.g. --export=tflite_int8")
  existing = [writers.filename(f) for f in formats
              if os.path.exists(os.path.join(run_dir, writers.filename(f)))]
  if existing and not config.overwrite:
    raise UserError(f"{run_dir} already has {', '.join(existing)}; pass "
                    "--overwrite to replace them")
  with artifacts.locked(run_dir, flag="run_dir"):
    return _export_run(config, run_dir, record, formats)


def _export_run(config, run_dir, record, formats):
  """`export_run` once the run directory is locked."""
  model = saving.load_keras(os.path.join(run_dir, "model.keras"))
  serving = families.serving_of(model)
  refused = [f for f in formats if f.startswith("tflite_")
             and f[len("tflite_"):] not in serving.variants]
  if refused:
    raise UserError(f"--export={','.join(refused)}: {serving.skipped}")
  run_config = dataclasses.replace(
      config_lib.Config(**{k: v for k, v in record["config"].items()
                           if k in _CONFIG_FIELDS}),
      export=config.export, calibration_samples=config.calibration_samples,
      parity_samples=config.parity_samples,
      max_accuracy_drop=config.max_accuracy_drop,
      min_int8_agreement=config.min_int8_agreement,
      int8_fallback=config.int8_fallback,
      author=config.author or record["config"].get("author", ""),
      license=config.license or record["config"].get("license", ""),
      data_dir=config.data_dir or record["config"]["data_dir"])
  splits = families.of(model).load_splits(run_config)
  if splits.class_names != artifacts.read_labels(
      os.path.join(run_dir, "labels.txt")):
    raise UserError(f"the classes of --dataset={run_config.dataset} no longer "
                    f"match {run_dir}/labels.txt; point --data_dir at the "
                    "data the run was trained on")
  metrics_path = os.path.join(run_dir, "metrics.json")
  with open(metrics_path, encoding="utf-8") as f:
    metrics = json.load(f)
  with artifacts.staged(run_dir) as stage:
    rows, _, noise = export_artifacts(model, stage, run_config, splits,
                                      choices=record.get("recipe"))
    if rows:
      metrics.setdefault("tflite", {}).update(rows)
      if noise:
        metrics["noise_check"] = noise
      artifacts.write_json(os.path.join(stage, "metrics.json"), metrics)
    # The report and the model card describe the files now there.
    report.write_all(stage, record, metrics)
  logging.info("added %s to %s", ", ".join(formats), run_dir)
  check_exports(rows, config.max_accuracy_drop)
  return metrics


_CONFIG_FIELDS = {f.name for f in dataclasses.fields(config_lib.Config)}


def read_run(run_dir):
  """The run.json of a finished run, checking the run's files are there."""
  if not os.path.isdir(run_dir):
    raise UserError(f"--run_dir={run_dir} is not a directory; pass the "
                    "--output_dir of an earlier run")
  missing = [n for n in ("model.keras", "run.json", "labels.txt",
                         "metrics.json")
             if not os.path.exists(os.path.join(run_dir, n))]
  if missing:
    raise UserError(f"--run_dir={run_dir} is not a finished run (missing "
                    f"{', '.join(missing)}); pass the --output_dir of a "
                    "completed training run")
  with open(os.path.join(run_dir, "run.json"), encoding="utf-8") as f:
    return json.load(f)
