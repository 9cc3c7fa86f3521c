"""The transfer check: pretrained features against random ones, after phase 1.

Tiny convnets on tiny images. A backbone whose convolutions are all zero
computes one constant feature vector, so its probe is at chance: the check
must set it aside. A backbone equal to the random one must be kept.
"""

import numpy as np
import pytest
import tensorflow as tf

from tl_keras.data import datasets
from tl_keras import families
from tl_keras.models import applications
from tl_keras.models import freezing
from tl_keras import training
from tl_keras.training import probe
from tl_keras.training import transfer_check

STRATEGY = tf.distribute.get_strategy()


def _splits(n=60):
  rng = np.random.default_rng(0)
  labels = np.arange(n, dtype=np.int32) % 3
  images = (rng.integers(0, 60, (n, 32, 32, 3))
            + 70 * labels[:, None, None, None]).astype(np.uint8)
  ds = tf.data.Dataset.from_tensor_slices((images, labels))
  return datasets.Splits(train=ds, validation=ds.take(30), test=ds,
                     sizes={"train": n, "validation": 30, "test": n},
                     class_names=["a", "b", "c"])


def _zeroed(model):
  """A 'pretrained' backbone whose features are the same for every image."""
  base = applications.base_of(model)
  base.set_weights([np.zeros_like(w) for w in base.get_weights()])
  return model


def _check(model, splits, random_weights):
  family = families.of(model)
  cache = training.FeatureCache(model, splits, family=family, image_size=32,
                                batch_size=16, augment="none")
  return transfer_check.check(model, splits, transfer_check.sample(cache),
                              random_weights, family=family, image_size=32,
                              batch_size=16, seed=0)


def test_cross_validation_scores_every_example_unseen():
  rng = np.random.default_rng(1)
  labels = np.arange(150, dtype=np.int32) % 3
  signal = rng.normal(size=(3, 8))[labels] + rng.normal(size=(150, 8))
  noise = rng.normal(size=(150, 8))
  good = probe.cross_validate(signal.astype(np.float32), labels, 3)
  bad = probe.cross_validate(noise.astype(np.float32), labels, 3)
  assert good.losses.shape == bad.losses.shape == (150,)
  assert good.accuracy > 0.8
  # Noise fitted well enough can be memorized; unseen, it is at chance.
  assert bad.accuracy < 0.5 and bad.loss > 0.9 * np.log(3)
  assert training.clearly_lower(good.losses, bad.losses)[0]


def test_weights_worse_than_random_ones_are_set_aside():
  splits = _splits()
  random_weights = applications.build_classifier(
      "convnet_small", 3, weights=None).get_weights()
  model = _zeroed(applications.build_classifier("convnet_small", 3, weights=None))
  result = _check(model, splits, random_weights)
  assert result["weights"] == "random"
  assert result["random"]["loss"] < result["pretrained"]["loss"]
  assert result["pretrained"]["accuracy"] < 0.5
  assert result["examples"] == 60 + 30
  # The model now holds the random weights, BatchNorm statistics set from
  # the training images (a convolution's kernel is untouched).
  kernel = applications.base_of(model).get_layer("stage1_conv0").kernel.numpy()
  np.testing.assert_array_equal(
      kernel, [w for w in random_weights if w.shape == kernel.shape][0])
  assert "negative transfer" in transfer_check.warning(result)
  assert "--notransfer_check" in transfer_check.warning(result)


def test_weights_as_good_as_random_ones_are_kept():
  splits = _splits()
  random_weights = applications.build_classifier(
      "convnet_small", 3, weights=None).get_weights()
  model = applications.build_classifier("convnet_small", 3, weights=None)
  model.set_weights(random_weights)
  freezing.calibrate_from(model, splits.train, 32, 16)
  kept = [w.copy() for w in model.get_weights()]
  result = _check(model, splits, random_weights)
  assert result["weights"] == "pretrained"
  assert result["gain"] == pytest.approx(0.0, abs=1e-4)
  for before, after in zip(kept, model.get_weights()):
    np.testing.assert_array_equal(before, after)
  assert transfer_check.warning(result) is None


def _recipe():
  return training.Recipe(
      head=training.PhaseSpec("head", 1, 1e-3),
      finetune=training.PhaseSpec("finetune", 1, 1e-3, min_steps=4),
      unfreeze=("layers", 1), batchnorm="auto")


def test_a_run_that_fails_the_check_trains_from_random_weights(
    tmp_path, monkeypatch):
  """Phase 2 from random weights, every block and BatchNorm training; a
  resumed run keeps that choice without checking again."""
  splits = _splits()

  def random_start():
    return applications.build_classifier("convnet_small", 3,
                                   weights=None).get_weights()

  def stop(*args, **kwargs):
    raise training.Stopped("stopped", 143)

  checkpointer = training.Checkpointer(str(tmp_path))
  context = training.Context(STRATEGY, 32, 16, augment="none",
                             checkpointer=checkpointer,
                             family=families.find("convnet_small"))
  model = _zeroed(applications.build_classifier("convnet_small", 3, weights=None))
  monkeypatch.setattr(training.choices, "choose_finetuning", stop)
  with pytest.raises(training.Stopped):
    training.run_recipe(model, _recipe(), splits, context,
                        random_start=random_start)
  monkeypatch.undo()
  saved = checkpointer.progress()
  assert saved["phase"] == "finetune"
  assert saved["choices"]["start"]["weights"] == "random"
  assert checkpointer.load_weights("head") is None

  def no_second_check(*args, **kwargs):
    raise AssertionError("the check ran again on resume")

  monkeypatch.setattr(transfer_check, "check", no_second_check)
  model = _zeroed(applications.build_classifier("convnet_small", 3, weights=None))
  history, info = training.run_recipe(model, _recipe(), splits, context,
                                      random_start=random_start)
  assert info["recipe"] == _recipe().from_random()
  assert info["recipe"].head.epochs == 0
  assert info["recipe"].unfreeze == ("all", None)
  assert info["choices"]["finetune"]["batchnorm"] == "train"
  assert "head" not in info["choices"]  # set aside, with the weights
  assert "head" in info["choices"]["start"]
  assert {h["phase"] for h in history} == {"finetune"}
  assert info["best_epoch"][0] == "finetune"
  # Trained from the random start: no convolution is zero any more.
  kernel = applications.base_of(model).get_layer("stage1_conv0").kernel.numpy()
  assert np.abs(kernel).sum() > 0
