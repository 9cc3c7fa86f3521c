"""Phase 1 on cached features: the head fitted as a linear probe
(`probe.fit`), the first half of LP-FT."""

import os
import shutil
import time

from tl_keras.data import inputs as inputs_lib
import tl_keras.training.features as features_lib
import tl_keras.training.probe as probe
import tl_keras.training.steps as steps_lib
import tl_keras.training.summaries as summaries_lib
import tl_keras.training.transfer_check as transfer_check


def fit_head(model, splits, context, *, where, views, directory, step,
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
                    seed=seed, class_weights=context.class_weights)
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
  val = steps_lib.evaluate(
      model, splits.validation, splits.sizes["validation"], strategy=strategy,
      class_names=splits.class_names, image_size=image_size,
      batch_size=batch_size, class_weights=context.class_weights)
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
