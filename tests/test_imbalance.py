"""Class weights (--class_weight): the weights, the probe, the loss."""

import dataclasses

import keras
import numpy as np
import pytest
import tensorflow as tf

from tl_keras.errors import UserError
from tl_keras.models import applications
from tl_keras.training import imbalance
from tl_keras.training import probe
from tl_keras.training import steps


def test_auto_weighs_only_from_three_to_one_and_weights_average_one():
  weights, record = imbalance.class_weights([100, 50, 10], "auto")
  assert record["weighted"] and record["imbalance"] == 10
  assert weights == pytest.approx([160 / 300, 160 / 150, 160 / 30])
  assert np.dot([100, 50, 10], weights) / 160 == pytest.approx(1.0)
  assert imbalance.class_weights([100, 50, 34], "auto")[0] is None
  assert imbalance.class_weights([90, 30], "auto")[1]["weighted"]  # 3x
  assert imbalance.class_weights([10, 10], "balanced")[0] == pytest.approx(
      [1.0, 1.0])
  assert imbalance.class_weights([100, 10], "none")[0] is None
  # A class without training examples keeps weight 1.
  assert imbalance.class_weights([40, 0, 10], "balanced")[0] == pytest.approx(
      [50 / 80, 1.0, 50 / 20])
  with pytest.raises(UserError, match="--class_weight=some"):
    imbalance.class_weights([1, 2], "some")


def test_label_counts_read_a_dataset():
  ds = tf.data.Dataset.from_tensor_slices((np.zeros((7, 2)), [0, 2, 2, 1, 2,
                                                              0, 2]))
  assert imbalance.label_counts(ds, 4).tolist() == [2, 1, 4, 0]


def _gaussians(counts, seed):
  rng = np.random.default_rng(seed)
  x = np.concatenate([rng.normal(0.6 * c, 1.0, (n, 8))
                      for c, n in enumerate(counts)]).astype(np.float32)
  y = np.concatenate([np.full(n, c) for c, n in enumerate(counts)])
  return tf.data.Dataset.from_tensor_slices((x, y.astype(np.int32)))


def _balanced_accuracy(fit, dataset):
  x, y = probe.arrays(dataset)
  predicted = (x @ fit.kernel + fit.bias).argmax(-1)
  return np.mean([np.mean(predicted[y == c] == c) for c in np.unique(y)])


def test_a_weighted_probe_recalls_the_small_class():
  train, validation = _gaussians([400, 20], 0), _gaussians([400, 20], 1)
  test = _gaussians([500, 500], 2)
  plain = probe.fit(train, validation, 2)
  weights, _ = imbalance.class_weights([400, 20], "auto")
  weighted = probe.fit(train, validation, 2, class_weights=weights)
  assert (_balanced_accuracy(weighted, test) >
          _balanced_accuracy(plain, test) + 0.05)


def test_evaluate_gives_the_class_weighted_mean_loss():
  model = applications.build_classifier("convnet_small", 3, weights=None,
                                        image_size=32)
  rng = np.random.default_rng(0)
  images = rng.integers(0, 255, (12, 32, 32, 3)).astype(np.uint8)
  labels = np.array([0] * 8 + [1] * 3 + [2], np.int32)
  dataset = tf.data.Dataset.from_tensor_slices((images, labels))
  weights = np.array([0.5, 1.3, 4.0], np.float32)
  common = dict(strategy=tf.distribute.get_strategy(),
                class_names=["a", "b", "c"], image_size=32, batch_size=5)
  plain = steps.evaluate(model, dataset, 12, **common)
  weighted = steps.evaluate(model, dataset, 12, class_weights=weights,
                            **common)
  probs = model.predict(images.astype(np.float32), verbose=0)
  losses = -np.log(probs[np.arange(12), labels])
  assert plain["loss"] == pytest.approx(losses.mean(), rel=1e-4)
  assert weighted["loss"] == pytest.approx(
      np.average(losses, weights=weights[labels]), rel=1e-4)
  assert weighted["loss_weighting"] == "class"
  assert weighted["accuracy"] == plain["accuracy"]


def test_cross_validation_weighs_like_the_fit():
  x, y = probe.arrays(_gaussians([300, 15], 3))
  plain = probe.cross_validate(x, y, 2)
  even = probe.cross_validate(x, y, 2, class_weights=np.ones(2, np.float32))
  assert even.losses == pytest.approx(plain.losses)
  weights, _ = imbalance.class_weights(np.bincount(y), "balanced")
  weighted = probe.cross_validate(x, y, 2, class_weights=weights)
  # Weighted, the accuracy is the balanced one: the small class counts half.
  assert weighted.accuracy < plain.accuracy
  assert weighted.losses[y == 1].mean() > weighted.losses[y == 0].mean()


def test_logit_adjust_weighs_nothing_and_offsets_minus_the_log_share():
  weights, record = imbalance.class_weights([100, 50, 10], "logit_adjust")
  assert weights is None and not record["weighted"]
  offsets = -np.log(np.array([100, 50, 10]) / 160)
  assert record["logit_offsets"] == pytest.approx(offsets - offsets.mean(),
                                                  abs=1e-6)
  # The rarest class gains the most: log(100 / 10) over the largest.
  assert (record["logit_offsets"][2] - record["logit_offsets"][0] ==
          pytest.approx(np.log(10), abs=1e-6))
  # A class without training examples is left where the fit put it.
  assert imbalance.logit_offsets([40, 0, 10])[1] == 0
  assert "logit_offsets" not in imbalance.class_weights([100, 10], "auto")[1]


def test_adjust_logits_shifts_the_classifier_bias_only_when_asked():
  dense = keras.layers.Dense(3, activation="softmax")
  dense.build((None, 4))
  kernel, bias = [np.copy(w) for w in dense.get_weights()]
  imbalance.adjust_logits(dense, imbalance.class_weights([9, 3, 3], "auto")[1])
  assert dense.get_weights()[1] == pytest.approx(bias)
  _, record = imbalance.class_weights([9, 3, 3], "logit_adjust")
  imbalance.adjust_logits(dense, record)
  got_kernel, got_bias = dense.get_weights()
  assert got_kernel == pytest.approx(kernel)
  assert got_bias - bias == pytest.approx(record["logit_offsets"], abs=1e-6)


def test_an_adjusted_probe_recalls_the_small_class():
  train, validation = _gaussians([400, 20], 0), _gaussians([400, 20], 1)
  test = _gaussians([500, 500], 2)
  plain = probe.fit(train, validation, 2)
  _, record = imbalance.class_weights([400, 20], "logit_adjust")
  adjusted = dataclasses.replace(
      plain, bias=plain.bias + np.float32(record["logit_offsets"]))
  assert (_balanced_accuracy(adjusted, test) >
          _balanced_accuracy(plain, test) + 0.05)
