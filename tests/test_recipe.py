"""The recipe's parts: the linear-probe head, frozen layers, BatchNorm, trials.

Tiny models and data; each test checks one promise the recipe makes.
"""

import dataclasses

import keras
import numpy as np
import pytest
import tensorflow as tf

from tl_keras import config as config_lib
from tl_keras.data import datasets
from tl_keras.data import inputs
from tl_keras.export import litert
from tl_keras.export import tflite
from tl_keras.export import writers
from tl_keras import families
from tl_keras.models import applications
from tl_keras.models import freezing
from tl_keras.modes import recipe_config
from tl_keras.modes import scratch
from tl_keras import training
from tl_keras.training import probe

STRATEGY = tf.distribute.get_strategy()
# 32-pixel images, batches of 8.
CONTEXT = training.Context(STRATEGY, image_size=32, batch_size=8,
                           family=families.find("convnet_small"))


def _blobs(n, dim=12, classes=3, seed=0, scale=4.0, offset=7.0):
  """Gaussian clusters, features on a scale and offset far from 0 and 1."""
  rng = np.random.default_rng(seed)
  centers = rng.normal(size=(classes, dim))
  labels = np.arange(n) % classes
  x = centers[labels] + rng.normal(size=(n, dim))
  return (x * scale + offset).astype(np.float32), labels.astype(np.int32)


def _dataset(x, y):
  return tf.data.Dataset.from_tensor_slices((x, y))


def test_fold_is_exact():
  rng = np.random.default_rng(1)
  x = rng.normal(size=(5, 4)).astype(np.float32) * 3 + 2
  kernel, bias = rng.normal(size=(4, 3)), rng.normal(size=3)
  mean, std = x.mean(0), x.std(0) + 0.1
  raw_kernel, raw_bias = probe.fold(kernel, bias, mean, std)
  np.testing.assert_allclose(x @ raw_kernel + raw_bias,
                             ((x - mean) / std) @ kernel + bias, atol=1e-5)


def test_probe_matches_scikit_learn_at_the_same_strength():
  """The strength maps to scikit-learn's C, and folding keeps its answer."""
  from sklearn.linear_model import LogisticRegression  # pylint: disable=g-import-not-at-top
  x, y = _blobs(240, seed=2)
  xv, yv = _blobs(90, seed=3)
  strength = 1e-2
  fit = probe.fit(_dataset(x, y), _dataset(xv, yv), 3, strengths=(strength,))
  mean, std = probe.standardization(_dataset(x, y))
  reference = LogisticRegression(C=1 / (strength * len(y)), tol=1e-8,
                                 max_iter=10_000).fit((x - mean) / std, y)
  ours = (xv @ fit.kernel + fit.bias)
  theirs = reference.decision_function((xv - mean) / std)
  # Softmax is shift-invariant: compare probabilities.
  np.testing.assert_allclose(tf.nn.softmax(ours).numpy(),
                             tf.nn.softmax(theirs).numpy(), atol=0.02)


def test_probe_on_two_classes_and_a_class_without_examples():
  """Binary fits become a two-column softmax; an absent class is never
  predicted."""
  x, y = _blobs(180, classes=2, seed=7)
  x, y, xv, yv = x[:120], y[:120], x[120:], y[120:]
  fit = probe.fit(_dataset(x, y), _dataset(xv, yv), 3)
  assert fit.kernel.shape == (12, 3) and fit.bias.shape == (3,)
  logits = xv @ fit.kernel + fit.bias
  assert fit.validation_accuracy > 0.9
  assert np.mean(logits.argmax(-1) == yv) == pytest.approx(
      fit.validation_accuracy)
  assert (logits.argmax(-1) != 2).all()


def test_the_warm_started_path_matches_cold_fits():
  from sklearn.linear_model import LogisticRegression  # pylint: disable=g-import-not-at-top
  x, y = _blobs(300, classes=4, seed=9)
  x = (x - x.mean(0)) / x.std(0)
  strengths = (1e-3, 1e-1)
  heads, _ = probe.path(x, y, 4, strengths)
  for (kernel, bias), strength in zip(heads, strengths):
    cold = LogisticRegression(C=1 / (strength * len(y)), tol=1e-8,
                              max_iter=10_000).fit(x, y)
    np.testing.assert_allclose(
        tf.nn.softmax(x @ kernel + bias).numpy(),
        cold.predict_proba(x), atol=0.02)


def test_probe_picks_the_strength_with_the_lowest_validation_loss():
  x, y = _blobs(60, seed=4)
  xv, yv = _blobs(60, seed=5)
  fit = probe.fit(_dataset(x, y), _dataset(xv, yv), 3)
  losses = {g["strength"]: g["validation_loss"] for g in fit.grid}
  assert fit.validation_loss == pytest.approx(min(losses.values()))
  assert losses[fit.strength] == fit.validation_loss
  assert [g["strength"] for g in fit.grid] == list(probe.STRENGTHS)


def test_the_fitted_head_is_the_same_in_keras_saved_model_and_tflite(
    tmp_path):
  """Standardization is folded into the classifier: every artifact agrees."""
  rng = np.random.default_rng(0)
  labels = np.arange(24, dtype=np.int32) % 3
  images = (rng.integers(0, 80, (24, 32, 32, 3))
            + 60 * labels[:, None, None, None]).astype(np.uint8)
  ds = _dataset(images, labels)
  splits = datasets.Splits(train=ds, validation=ds, test=ds,
                       sizes={"train": 24, "validation": 24, "test": 24},
                       class_names=["a", "b", "c"])
  model = applications.build_classifier("convnet_small", 3, weights=None)
  recipe = training.Recipe(head=training.PhaseSpec("head", 1, 1e-3),
                           finetune=training.PhaseSpec("finetune", 0, 1e-4),
                           unfreeze=("all", None))
  _, info = training.run_recipe(model, recipe, splits, CONTEXT)
  head = info["choices"]["head"]
  probs = model.predict(images.astype(np.float32), verbose=0)
  assert np.mean(np.log(probs[np.arange(24), labels])) == pytest.approx(
      -head["validation_loss"], rel=1e-3, abs=1e-5)  # what was fitted
  writers.save_saved_model(model, str(tmp_path / "sm"), class_names="abc",
                          serving=families.serving_of(model))
  serve = tf.saved_model.load(str(tmp_path / "sm")).signatures[
      "serving_default"]
  np.testing.assert_allclose(
      serve(images=tf.constant(images))["probabilities"].numpy(), probs,
      atol=1e-5)
  path = tmp_path / "model.tflite"
  path.write_bytes(tflite.convert(model, "float32", families.serving_of(model)))
  runner = litert.ImageRunner(str(path))
  np.testing.assert_allclose(runner.predict(images), probs, atol=1e-4)


def test_a_frozen_efficientnet_drops_nothing_in_training_mode():
  model = applications.build_classifier("efficientnet_b0", 3, image_size=32,
                                  weights=None)
  extractor = keras.Model(model.input, families.of(model).head_parts(model)[0])
  x = np.random.default_rng(0).integers(0, 255, (4, 32, 32, 3)).astype(
      np.float32)
  np.testing.assert_array_equal(extractor(x, training=True).numpy(),
                                extractor(x, training=False).numpy())
  families.of(model).unfreeze_top(model, "all", None)  # unfrozen, Dropout drops again
  assert not np.allclose(extractor(x, training=True).numpy(),
                         extractor(x, training=False).numpy())


def test_a_frozen_bert_drops_nothing_in_training_mode():
  from tl_keras.models import text_models  # pylint: disable=g-import-not-at-top
  # bert_micro: 2 transformer layers with dropout 0.1 inside.
  model = text_models.build_classifier("bert_micro", 2, sequence_length=8,
                                       weights="none", dropout=0.0)
  tokens = model.preprocessor(tf.constant(["alpha beta", "gamma delta"]))
  extractor = keras.Model(model.input, families.of(model).head_parts(model)[0])
  np.testing.assert_array_equal(extractor(tokens, training=True).numpy(),
                                extractor(tokens, training=False).numpy())
  families.of(model).unfreeze_top(model, "all", None)
  assert not np.allclose(extractor(tokens, training=True).numpy(),
                         extractor(tokens, training=False).numpy())


def test_batchnorm_policy_resolution():
  def policy(**changes):
    return recipe_config.batchnorm_policy(config_lib.Config(**changes))
  assert policy(weights="none") == "train"  # no statistics to keep
  assert policy(weights="imagenet") == "auto"  # frozen unless a trial wins
  assert policy(weights="none", batchnorm="frozen") == "frozen"
  assert policy(weights="imagenet", batchnorm="train") == "train"


@pytest.mark.parametrize("train_batchnorm", [False, True])
def test_batchnorm_trains_only_when_asked(train_batchnorm):
  rng = np.random.default_rng(0)
  labels = np.arange(16, dtype=np.int32) % 2
  ds = _dataset(rng.integers(0, 255, (16, 32, 32, 3)).astype(np.uint8),
                labels)
  splits = datasets.Splits(train=ds, validation=ds, test=ds,
                       sizes={"train": 16, "validation": 16, "test": 16},
                       class_names=["a", "b"])
  model = applications.build_classifier("convnet_small", 2, weights=None)
  families.of(model).unfreeze_top(model, "all", None, train_batchnorm=train_batchnorm)
  bn = applications.base_of(model).get_layer("stage0_bn0")
  before = bn.moving_mean.numpy().copy()
  training.train_phase(model, training.PhaseSpec("finetune", 1, 1e-3), splits,
                       CONTEXT)
  moved = not np.array_equal(before, bn.moving_mean.numpy())
  assert moved == train_batchnorm
  assert bn.trainable == train_batchnorm


def test_recalibrated_batchnorm_holds_the_data_statistics():
  model = applications.build_classifier("convnet_small", 2, weights=None)
  flags = [l.trainable for l in model._flatten_layers()]  # pylint: disable=protected-access
  images = np.random.default_rng(0).uniform(0, 255, (64, 32, 32, 3)).astype(
      np.float32)
  freezing.recalibrate_batchnorm(model, images, batch_size=16)
  base = applications.base_of(model)
  # The first BatchNorm sees the first convolution's output directly.
  conv = keras.Model(base.input, base.get_layer("stage0_conv0").output)
  pre = conv(images / 127.5 - 1.0).numpy()  # the "tf" preprocessing
  bn = base.get_layer("stage0_bn0")
  np.testing.assert_allclose(bn.moving_mean.numpy(),
                             pre.mean(axis=(0, 1, 2)), atol=1e-4)
  # Batch variances averaged: close to, a little under, the whole set's.
  np.testing.assert_allclose(bn.moving_variance.numpy(),
                             pre.var(axis=(0, 1, 2)), rtol=0.1)
  assert bn.momentum == 0.9
  assert [l.trainable for l in model._flatten_layers()] == flags  # pylint: disable=protected-access


def _fake_trials(monkeypatch, losses):
  """train_phase replaced: each trial's best validation loss from `losses`."""
  calls = []

  def fake(model, spec, splits, context, *, best, carry, **kwargs):
    del model, splits, context, kwargs
    calls.append((spec.learning_rate, spec.stop_at))
    carry["optimizer"] = keras.optimizers.SGD()
    loss = losses.pop(0)
    best.loss, best.accuracy, best.where, best.step = loss, 0.5, ("trial", 1), 1
    return [], 4

  monkeypatch.setattr(training.loop, "train_phase", fake)
  return calls


def _tiny_splits():
  ds = _dataset(np.zeros((8, 32, 32, 3), np.uint8),
                np.arange(8, dtype=np.int32) % 2)
  return datasets.Splits(train=ds, validation=ds, test=ds,
                     sizes={"train": 8, "validation": 8, "test": 8},
                     class_names=["a", "b"])


def _choose(model, finetune_lr=0.0, batchnorm="auto"):
  recipe = training.Recipe(
      head=training.PhaseSpec("head", 1, 1e-3),
      finetune=training.PhaseSpec("finetune", 1, finetune_lr),
      unfreeze=("all", None), batchnorm=batchnorm)
  chosen, _ = training.choose_finetuning(
      model, recipe, _tiny_splits(), CONTEXT.but(augment="none"))
  return recipe, chosen


def test_trials_pick_the_lowest_validation_loss_then_batchnorm(monkeypatch):
  model = applications.build_classifier("convnet_small", 2, weights=None)
  start = [w.copy() for w in model.get_weights()]
  # lr 1e-5, 1e-4, 1e-3 with BatchNorm frozen; then 1e-4 with it training.
  calls = _fake_trials(monkeypatch, [0.50, 0.30, 0.40, 0.20])
  recipe, chosen = _choose(model)
  assert [c[0] for c in calls] == [1e-5, 1e-4, 1e-3, 1e-4]
  assert all(c[1] == recipe.trial_fraction for c in calls)
  assert (chosen["learning_rate"], chosen["batchnorm"]) == (1e-4, "train")
  assert chosen["trial_steps"] == 16 and len(chosen["trials"]) == 4
  # The fake trials changed no weight: no trial is clearly worse than the
  # starting point, so phase 2 goes on and `keep_simplest` judges it.
  assert not chosen["skip"]
  for a, b in zip(start, model.get_weights()):
    np.testing.assert_array_equal(a, b)  # left as it came


def test_phase_2_is_skipped_only_when_every_trial_is_clearly_worse(
    monkeypatch):
  model = applications.build_classifier("convnet_small", 2, weights=None)
  _fake_trials(monkeypatch, [0.5, 0.4, 0.6, 0.45])
  bias = model.layers[-1].bias
  start = bias.numpy()
  original = training.loop.train_phase

  def confident(model, *args, **kwargs):
    # Every trial leaves the head sure of class 0: half the validation
    # examples (class 1) get a loss near 10, far above the start's.
    model.layers[-1].bias.assign([10.0, -10.0])
    return original(model, *args, **kwargs)

  monkeypatch.setattr(training.loop, "train_phase", confident)
  _, chosen = _choose(model)
  assert chosen["skip"]
  np.testing.assert_array_equal(bias.numpy(), start)  # left as it came


def test_ties_go_to_the_lower_rate_and_frozen_batchnorm(monkeypatch):
  model = applications.build_classifier("convnet_small", 2, weights=None)
  _fake_trials(monkeypatch, [0.3, 0.3, 0.3, 0.3])
  _, chosen = _choose(model)
  assert (chosen["learning_rate"], chosen["batchnorm"]) == (1e-5, "frozen")


def test_a_given_rate_and_policy_need_no_trials(monkeypatch):
  model = applications.build_classifier("convnet_small", 2, weights=None)
  calls = _fake_trials(monkeypatch, [])
  _, chosen = _choose(model, finetune_lr=3e-4, batchnorm="frozen")
  assert not calls
  assert chosen == {"learning_rate": 3e-4, "batchnorm": "frozen",
                    "trial_steps": 0, "trials": [], "skip": False}


@pytest.mark.parametrize("policy", ["shift", "light", "randaugment", "mixup"])
def test_augmentation_is_the_same_eagerly_and_inside_tf_data(policy):
  rng = np.random.default_rng(0)
  images = rng.uniform(0, 255, (2, 8, 16, 16, 3)).astype(np.float32)
  labels = tf.one_hot(np.arange(16).reshape(2, 8) % 3, 3)
  fn, mixes = inputs.augmentation(policy, seed=7)
  eager = [fn(tf.constant(x), y) for x, y in zip(images, labels)]
  fn, _ = inputs.augmentation(policy, seed=7)  # fresh: the same random state
  inside = list(tf.data.Dataset.from_tensor_slices((images, labels)).map(fn))
  assert mixes == (policy == "mixup")
  for (x1, y1), (x2, y2) in zip(eager, inside):
    np.testing.assert_allclose(x1, x2, atol=1e-3)
    np.testing.assert_allclose(y1, y2, atol=1e-6)
  assert not np.allclose(eager[0][0], images[0])  # it did something
  assert float(tf.reduce_min(eager[0][0])) >= 0
  assert float(tf.reduce_max(eager[0][0])) <= 255.5


@pytest.mark.parametrize("mirror_symmetric", [True, False])
def test_auto_augmentation_flips_only_mirror_symmetric_classes(
    mirror_symmetric):
  # Class 1 is bright all over (symmetric), or bright on the right half
  # while class 0 is bright on the left (a mirror image is the other class).
  labels = np.arange(8, dtype=np.int32) % 2
  images = np.zeros((8, 8, 8, 3), np.uint8)
  kernel = np.zeros((8, 8, 3, 2), np.float32)
  if mirror_symmetric:
    images[labels == 1] = 255
    kernel[..., 1] = 1 / (8 * 8 * 3 * 255)
    bias = [0.5, 0.0]
  else:
    images[labels == 0, :, :4] = 255
    images[labels == 1, :, 4:] = 255
    kernel[:, :4, :, 0] = kernel[:, 4:, :, 1] = 1.0
    bias = [0.0, 0.0]
  inputs = keras.Input((8, 8, 3))
  head = keras.layers.Dense(2, activation="softmax")
  model = keras.Model(inputs, head(keras.layers.Flatten()(inputs)))
  head.set_weights([kernel.reshape(-1, 2), np.array(bias, np.float32)])
  ds = _dataset(images, labels)
  splits = datasets.Splits(train=ds, validation=ds, test=ds,
                       sizes={"train": 8, "validation": 8, "test": 8},
                       class_names=["a", "b"])
  chosen = training.choose_augmentation(model, splits, image_size=8,
                                        batch_size=3)
  assert chosen["accuracy"] == 1.0
  assert chosen["mirrored_accuracy"] == (1.0 if mirror_symmetric else 0.0)
  assert chosen["policy"] == ("light" if mirror_symmetric else "shift")


def test_mixup_labels_reach_the_training_step():
  splits = _tiny_splits()
  model = applications.build_classifier("convnet_small", 2, weights=None)
  history, _ = training.train_phase(
      model, training.PhaseSpec("head", 1, 1e-3), splits,
      CONTEXT.but(batch_size=4, augment="mixup"))
  assert 0.0 <= history[0]["accuracy"] <= 1.0
  assert np.isfinite(history[0]["loss"])


def test_negative_transfer_is_said_plainly():
  metrics = {"test": {"accuracy": 0.81},
             "validation": {"best_accuracy": 0.80},
             "scratch": {"test": {"accuracy": 0.90},
                         "validation": {"best_accuracy": 0.88}}}
  warning = scratch.negative_transfer(metrics)
  assert warning.startswith("negative transfer:")
  assert "88.0% validation accuracy against 80.0%" in warning
  assert "--weights=none" in warning
  metrics["scratch"]["validation"]["best_accuracy"] = 0.80
  assert scratch.negative_transfer(metrics) is None


def test_weights_none_skips_the_head_and_trains_batchnorm():
  config = config_lib.Config(weights="none")
  recipe = recipe_config.recipe_from_config(config)
  assert recipe.head.epochs == 0 and recipe.batchnorm == "train"
  assert recipe.finetune_lrs == (1e-4, 1e-3)  # nothing pretrained to spare
  assert recipe.trial_fraction == 1 / 6  # no disruption to get past
  pretrained = recipe_config.recipe_from_config(dataclasses.replace(config,
                                                          weights="imagenet"))
  assert pretrained.head.epochs == 5 and pretrained.batchnorm == "auto"
  assert pretrained.finetune.learning_rate == 0.0  # picked by trials
  assert pretrained.finetune_lrs == (1e-5, 1e-4, 1e-3)
  assert pretrained.trial_fraction == 1 / 3
  assert pretrained.from_random().finetune_lrs == recipe.finetune_lrs
  assert pretrained.from_random().trial_fraction == recipe.trial_fraction
  assert pretrained.keep == "simplest"
  assert recipe_config.recipe_from_config(dataclasses.replace(
      config, keep_phase="lowest_loss")).from_random().keep == "lowest_loss"


def _separable_splits():
  rng = np.random.default_rng(0)
  labels = np.arange(24, dtype=np.int32) % 3
  images = (rng.integers(0, 60, (24, 32, 32, 3))
            + 70 * labels[:, None, None, None]).astype(np.uint8)
  ds = _dataset(images, labels)
  return datasets.Splits(train=ds, validation=ds, test=ds,
                     sizes={"train": 24, "validation": 24, "test": 24},
                     class_names=["a", "b", "c"])


@pytest.mark.parametrize("phase_2_is_better", [True, False])
@pytest.mark.parametrize("rule", ["simplest", "lowest_loss"])
def test_phase_2_is_kept_only_when_clearly_better(phase_2_is_better, rule):
  """--keep_phase=simplest keeps phase 2's weights only when clearly
  better; lowest_loss keeps them whenever their loss is lower (`best`)."""
  splits = _separable_splits()
  model = applications.build_classifier("convnet_small", 3, weights=None)
  untrained = [w.copy() for w in model.get_weights()]
  training.train_phase(model, training.PhaseSpec("head", 4, 3e-2), splits,
                       CONTEXT.but(augment="none"))
  trained = [w.copy() for w in model.get_weights()]
  # Phase 2 that changed nothing: no gain, so the simpler model stays.
  nudged = [w.copy() for w in trained]
  head, tuned = (untrained, trained) if phase_2_is_better else (trained,
                                                                nudged)
  history = [{"phase": "head", "step": 0, "val_loss": 1.0,
              "val_accuracy": 0.5}]
  best = training.Best()
  best.weights, best.where, best.step = tuned, ("finetune", 3), 9
  best.loss, best.accuracy = 0.1, 1.0
  kept = training.choices.keep_phase(
      rule, model, head, best, history, splits, 32, 8)
  assert kept == ("finetune" if phase_2_is_better or rule == "lowest_loss"
                  else "head")
  assert best.where[0] == kept
  if kept == "head":
    assert (best.loss, best.accuracy) == (1.0, 0.5)


def test_clearly_lower_is_the_one_standard_error_rule():
  rng = np.random.default_rng(0)
  reference = rng.uniform(0.2, 1.0, 400)
  noise = rng.normal(0, 0.3, 400)
  assert not training.clearly_lower(reference + noise, reference)[0]
  lower, gain, error = training.clearly_lower(reference - 0.1 + noise * 0.1,
                                              reference)
  assert lower and gain == pytest.approx(0.1, abs=0.01) and error < 0.01
  assert not training.clearly_lower(reference, reference)[0]  # a tie


def test_a_feature_that_barely_moves_gets_no_huge_weight():
  """The standard deviation floor keeps the folded kernel well conditioned."""
  x, y = _blobs(90, dim=4, seed=6, scale=1.0, offset=0.0)
  x[:, 0] = 5.0 + 1e-4 * y  # separates the classes, but barely moves
  mean, std = probe.standardization(_dataset(x, y))
  rms = np.sqrt(np.mean(x ** 2))
  assert std[0] == pytest.approx(probe.STD_FLOOR * rms, rel=1e-5)
  np.testing.assert_allclose(std[1:], x[:, 1:].std(0), rtol=1e-4)
  fit = probe.fit(_dataset(x, y), _dataset(x, y), 3)
  # Raw-space weights stay within the standardized ones / the floor.
  assert np.abs(fit.kernel).max() < 100


def test_phase_2_continues_the_winning_trial():
  """Trials then continuation == a run at the winning rate from the start."""
  splits = _separable_splits()
  weights = {}
  for rate in (0.0, None):  # 0: trials pick; None: the picked rate, given
    keras.utils.set_random_seed(0)
    model = applications.build_classifier("convnet_small", 3, weights=None,
                                    dropout=0.0)
    start = [w.copy() for w in weights.get("start", model.get_weights())]
    model.set_weights(start)
    weights["start"] = start
    recipe = training.Recipe(
        head=training.PhaseSpec("head", 1, 1e-3),
        finetune=training.PhaseSpec(
            "finetune", 10, rate if rate is not None else weights["rate"]),
        unfreeze=("all", None), batchnorm="frozen",
        finetune_lrs=(1e-3, 1e-2))
    # The head trained one epoch in the loop, not fitted as a probe: the
    # probe all but solves these separable images, and phase 2 then has
    # nothing clearly better to offer.
    _, info = training.run_recipe(
        model, recipe, splits, CONTEXT.but(augment="none"),
        feature_cache="off")
    chosen = info["choices"]["finetune"]
    assert info["choices"]["kept"] == "finetune"  # else the test proves nothing
    if rate == 0.0:
      assert len(chosen["trials"]) == 2 and not chosen["skip"]
      weights["rate"] = chosen["learning_rate"]
      weights["trials"] = model.get_weights()
    else:
      assert chosen["trials"] == []
      for a, b in zip(weights["trials"], model.get_weights()):
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_the_run_exports_the_model_better_on_validation():
  transfer = {"best_validation_loss": 1.4, "best_validation_accuracy": 0.375}
  from_scratch = {"best_validation_loss": 1.1,
                  "best_validation_accuracy": 0.545}
  kept = scratch.keep_better({}, transfer, from_scratch)
  assert kept["model"] == "scratch" and "1.1000" in kept["reason"]
  assert scratch.keep_better({}, from_scratch, transfer)["model"] == (
      "transfer")
  assert scratch.keep_better({}, transfer, transfer)["model"] == "transfer"
