"""Do the pretrained weights help this data at all? A check before phase 2.

Pretrained features are not always better than none. A backbone trained on
a narrow source task (five digits, six software packages) can specialize
its features until a linear probe on them does worse than one on the same
network at random initialization; fine-tuning from such weights then ends
below training from scratch at the same budget (negative transfer). Real
pretrained backbones pass this check by a wide margin (ImageNet
EfficientNet-Lite0 on scikit-learn's digits: held-out loss 0.17 against
1.82, 61 standard errors).

The check costs one pass of the randomly initialized network over a capped
sample of the training and validation examples, and two cross-validated
probes, which is far less than one fine-tuning trial. When the random
network's features are clearly better (lower held-out loss by more than one
standard error, the rule the recipe uses for every choice), the run trains
from random initialization instead, and says so.
"""

import dataclasses
import logging
import time

import numpy as np

from tl_keras import console
from tl_keras import evaluation
from tl_keras.models import freezing
import tl_keras.training.features as features_lib
import tl_keras.training.probe as probe

# At most this many training and validation examples take part: enough for
# a standard error of a few hundredths on the mean loss, at a cost that
# does not grow with the dataset.
TRAIN_EXAMPLES = 2048
VALIDATION_EXAMPLES = 1024


def sample(cache):
  """The examples the check compares on, from phase 1's `FeatureCache`.

  Returns:
    (features [N, D], labels [N]): the first training images' unaugmented
    features, then the first validation images'.
  """
  parts = [list(zip(*ds.take(n).as_numpy_iterator()))
           for ds, n in ((cache.train, TRAIN_EXAMPLES),
                         (cache.validation, VALIDATION_EXAMPLES))]
  return (np.concatenate([np.stack(x) for x, _ in parts]),
          np.concatenate([np.asarray(y) for _, y in parts]))


def check(model, splits, pretrained, random_weights, *, family, image_size,
          batch_size, seed, class_weights=None):
  """Compares probes on the pretrained and on random-initialization features.

  Args:
    model: the classifier, base frozen, holding the pretrained weights.
    splits: its `data.Splits`.
    pretrained: `sample` of phase 1's feature cache.
    random_weights: the same classifier's weights at random initialization
      (as `--weights=none` builds it).
    family: its family (`families.of(model)`).
    image_size: the input size (None for text).
    batch_size: batch size of the feature pass and of BatchNorm
      calibration.
    seed: the folds.
    class_weights: [C] or None: the probes' fits and held-out losses weigh
      each example by its class's weight (`imbalance`).

  Returns:
    What run.json records: {"weights": "pretrained" or "random", the two
    probes' held-out "pretrained" and "random" loss and accuracy, "gain"
    (pretrained loss - random loss), "standard_error", "examples",
    "seconds"}. With "random", `model` is left holding `random_weights`
    (its BatchNorm statistics set from training images); otherwise it is
    unchanged.
  """
  start = time.time()
  kept = [np.copy(w) for w in model.get_weights()]
  model.set_weights(random_weights)
  if image_size and family.has_batchnorm(model):
    # At initialization the moving statistics are 0 and 1: features of an
    # unnormalized network, unlike the ones training from scratch computes.
    freezing.calibrate_from(model, splits.train, image_size, batch_size)
  counts = {"train": min(TRAIN_EXAMPLES, splits.sizes["train"]),
            "validation": min(VALIDATION_EXAMPLES,
                              splits.sizes["validation"])}
  capped = dataclasses.replace(
      splits, train=splits.train.take(counts["train"]),
      validation=splits.validation.take(counts["validation"]),
      sizes={**splits.sizes, **counts})
  random = sample(features_lib.FeatureCache(
      model, capped, family=family, image_size=image_size,
      batch_size=batch_size, augment="none"))
  if not np.array_equal(random[1], pretrained[1]):
    raise AssertionError("the transfer check's two samples hold different "
                         "examples")
  with console.Heartbeat("transfer check: linear probes"):
    scores = {name: probe.cross_validate(x, y, splits.num_classes, seed=seed,
                                         class_weights=class_weights)
              for name, (x, y) in (("pretrained", pretrained),
                                   ("random", random))}
  lower, gain, error = evaluation.clearly_lower(scores["random"].losses,
                                                scores["pretrained"].losses)
  weights = "random" if lower else "pretrained"
  if weights == "pretrained":
    model.set_weights(kept)
  result = {"weights": weights, "gain": gain, "standard_error": error,
            "examples": len(pretrained[1]), "folds": probe.FOLDS,
            "seconds": time.time() - start,
            **{name: {"loss": s.loss, "accuracy": s.accuracy,
                      "strength": s.strength}
               for name, s in scores.items()}}
  logging.info(
      "transfer check: a linear probe reaches held-out loss %.4f (accuracy "
      "%.4f) on the pretrained features and %.4f (%.4f) on the same network "
      "at random initialization (%d examples, %d-fold): %s",
      scores["pretrained"].loss, scores["pretrained"].accuracy,
      scores["random"].loss, scores["random"].accuracy, len(pretrained[1]),
      probe.FOLDS, "the pretrained weights are kept" if weights ==
      "pretrained" else "the pretrained features are worse than random "
      "ones, so the network trains from random initialization")
  return result


def warning(result):
  """A plain sentence for the log, report and model card, or None."""
  if result.get("weights") != "random":
    return None
  pretrained, random = result["pretrained"], result["random"]
  return (f"negative transfer: a linear probe on the pretrained features "
          f"reached {pretrained['accuracy']:.1%} held-out accuracy against "
          f"{random['accuracy']:.1%} on the same network at random "
          "initialization, so the pretrained weights were set aside and "
          "the network was trained from random initialization (as "
          "--weights=none). Try a backbone pretrained on data closer to "
          "yours; --notransfer_check keeps the pretrained weights")
