"""The recipe: what each phase may and may not change; metrics; export."""

import dataclasses
import errno
import os
import signal

import keras
import numpy as np
import pytest
import tensorflow as tf

from tl_keras import artifacts
from tl_keras.data import datasets
from tl_keras.errors import UserError
from tl_keras import evaluation
from tl_keras.export import writers
from tl_keras import families
from tl_keras.models import applications
from tl_keras.models import saving
from tl_keras import training
from tl_keras.training import probe

STRATEGY = tf.distribute.get_strategy()
# 32-pixel images, batches of 8.
CONTEXT = training.Context(STRATEGY, image_size=32, batch_size=8,
                           family=families.find("convnet_small"))


def _splits(n=24, classes=3, size=32):
  rng = np.random.default_rng(0)
  labels = np.arange(n, dtype=np.int32) % classes
  images = (rng.integers(0, 60, (n, size, size, 3)) + 60 * labels[:, None, None,
                                                                  None])
  ds = tf.data.Dataset.from_tensor_slices((images.astype(np.uint8), labels))
  return datasets.Splits(train=ds, validation=ds, test=ds,
                     sizes={"train": n, "validation": n, "test": n},
                     class_names=[f"c{i}" for i in range(classes)])


def _weights(layer):
  return {w.path: np.copy(w.numpy()) for w in layer.weights}


def _changed(before, after):
  return {p for p in before if not np.array_equal(before[p], after[p])}


def _train(model, spec, splits):
  return training.train_phase(model, spec, splits, CONTEXT)


def test_head_phase_leaves_base_and_batchnorm_statistics_untouched():
  splits = _splits()
  model = applications.build_classifier("convnet_small", 3, weights=None)
  base = applications.base_of(model)
  before_base = _weights(base)
  before_head = _weights(model.get_layer("classifier"))
  history, step = _train(model, training.PhaseSpec("head", 2, 1e-2), splits)
  assert step == 2 * 3 and len(history) == 2
  assert not _changed(before_base, _weights(base))  # BN moving stats included
  assert _changed(before_head, _weights(model.get_layer("classifier")))


def test_finetune_changes_only_the_unfrozen_layers():
  splits = _splits()
  model = applications.build_classifier("convnet_small", 3, weights=None)
  base = applications.base_of(model)
  # The top block, stage2: its two convs (its BatchNorm stays frozen).
  assert families.of(model).unfreeze_top(model, "layers", 1) == 2
  before = _weights(base)
  _train(model, training.PhaseSpec("finetune", 1, 1e-2), splits)
  changed = _changed(before, _weights(base))
  assert changed == {p for p in before
                     if "stage2_conv0" in p or "stage2_conv1" in p}


def test_recipe_restores_best_weights_and_logs_both_phases(tmp_path):
  splits = _splits()
  model = applications.build_classifier("convnet_small", 3, weights=None)
  recipe = training.Recipe(head=training.PhaseSpec("head", 2, 1e-2),
                           finetune=training.PhaseSpec("finetune", 2, 1e-3,
                                                       warmup=0.5),
                           unfreeze=("all", None))
  summaries = training.Summaries(str(tmp_path / "tb"))
  history, info = training.run_recipe(
      model, recipe, splits, CONTEXT.but(summaries=summaries))
  # The head is fitted on cached features in one go: one row, at step 0.
  assert [h["phase"] for h in history] == ["head"] + ["finetune"] * 2
  assert [h["step"] for h in history] == [0, 3, 6]  # one step counter
  best = min(history, key=lambda h: h["val_loss"])
  assert info["best_validation_loss"] == best["val_loss"]
  assert info["choices"]["head"]["strength"] in probe.STRENGTHS
  final = training.evaluate(model, splits.validation, 24, strategy=STRATEGY,
                            class_names=splits.class_names, image_size=32,
                            batch_size=8)
  assert final["loss"] == pytest.approx(best["val_loss"], rel=1e-4)
  assert list((tmp_path / "tb").glob("train/events.*"))
  assert list((tmp_path / "tb").glob("validation/events.*"))


@pytest.mark.parametrize("warmup", [0.25, 0.0])
def test_warmup_then_cosine_schedule_is_keras_cosine_decay(warmup):
  spec = training.PhaseSpec("finetune", 4, 1e-3, warmup=warmup)
  optimizer = training.make_optimizer(spec, 40)
  keras_schedule = keras.optimizers.schedules.CosineDecay(
      0.0 if warmup else 1e-3, decay_steps=40 - int(40 * warmup),
      warmup_target=1e-3 if warmup else None, warmup_steps=int(40 * warmup))
  steps = range(0, 45, 3)
  np.testing.assert_allclose(
      [float(optimizer._learning_rate(s)) for s in steps],  # pylint: disable=protected-access
      [float(keras_schedule(s)) for s in steps], rtol=1e-5, atol=1e-10)


def test_phases_sharing_a_step_cache_train_as_fresh_ones_on_one_trace():
  """Trials reuse one optimizer and trace: state zeroed, schedule reset."""
  splits = _splits()
  # Deterministic on CPU (convolutions are not), so weights compare exactly.
  model = keras.Sequential([
      keras.Input((32, 32, 3)), keras.layers.Rescaling(1 / 255),
      keras.layers.Flatten(), keras.layers.Dense(3, activation="softmax")])
  start = model.get_weights()
  spec = training.PhaseSpec("finetune", 3, 1e-2, warmup=0.3)

  def phase(lr, carry=None):
    model.set_weights(start)
    training.train_phase(model, dataclasses.replace(spec, learning_rate=lr),
                         splits, CONTEXT, carry=carry)
    return model.get_weights()

  alone = phase(1e-2)
  cache = training.StepCache()
  first = phase(3e-2, {"steps": cache})
  carry = {"steps": cache}
  second = phase(1e-2, carry)
  for a, b in zip(alone, second):
    np.testing.assert_array_equal(a, b)
  assert not np.array_equal(first[0], second[0])
  optimizer, train_steps, _, _ = cache.get(
      model, spec, 9, strategy=STRATEGY, num_classes=3, global_batch=8)
  assert optimizer is carry["optimizer"]  # one optimizer, one trace
  assert train_steps.experimental_get_tracing_count() == 1


@pytest.mark.parametrize("examples, epochs, min_steps, expected", [
    (100, 5, 300, 75),  # 4 steps an epoch: grown to reach 300 steps
    (100, 5, 0, 5),  # no budget: the epochs as given
    (50_000, 5, 300, 5),  # 1,563 steps an epoch: already past the budget
    (32, 2, 3, 3),
])
def test_step_budget_grows_epochs_on_small_data(examples, epochs, min_steps,
                                                expected):
  spec = training.PhaseSpec("finetune", epochs, 1e-3, min_steps=min_steps)
  steps_per_epoch = -(-examples // 32)
  assert spec.epochs_for(steps_per_epoch) == expected
  assert expected * steps_per_epoch >= min(min_steps, expected *
                                           steps_per_epoch)


def test_a_phase_runs_its_step_budget():
  splits = _splits(n=16)  # 2 steps an epoch at batch 8
  model = applications.build_classifier("convnet_small", 3, weights=None)
  families.of(model).unfreeze_top(model, "all", None)
  history, step = _train(model, training.PhaseSpec("finetune", 1, 1e-3,
                                                   min_steps=7), splits)
  assert step == 8 and len(history) == 4


def test_metrics_from_counts():
  confusion = np.array([[3, 1, 0], [0, 2, 2], [0, 0, 4]])
  m = evaluation.metrics_from_counts(confusion, top_k=12, loss=6.0,
                                     class_names=["a", "b", "c"])
  assert m["accuracy"] == pytest.approx(9 / 12)
  assert m["per_class"]["a"] == pytest.approx(
      {"precision": 1.0, "recall": 0.75, "f1": 2 * 0.75 / 1.75, "support": 4})
  assert m["per_class"]["c"]["precision"] == pytest.approx(4 / 6)
  f1s = [m["per_class"][c]["f1"] for c in "abc"]
  assert m["macro_f1"] == pytest.approx(np.mean(f1s))
  assert m["loss"] == pytest.approx(0.5)
  assert "top5_accuracy" not in m  # fewer than 5 classes
  from sklearn.metrics import balanced_accuracy_score  # pylint: disable=g-import-not-at-top
  truth = np.repeat(np.arange(3), confusion.sum(1))
  predicted = np.concatenate([np.repeat(np.arange(3), row) for row in confusion])
  assert m["balanced_accuracy"] == pytest.approx(
      balanced_accuracy_score(truth, predicted))
  assert m["balanced_accuracy"] == pytest.approx((0.75 + 0.5 + 1.0) / 3)


def test_evaluate_matches_numpy_on_a_model():
  splits = _splits(n=20, classes=5)
  model = applications.build_classifier("convnet_small", 5, weights=None)
  m = training.evaluate(model, splits.test, 20, strategy=STRATEGY,
                        class_names=splits.class_names, image_size=32,
                        batch_size=8)
  images = np.stack([x for x, _ in splits.test.as_numpy_iterator()])
  labels = np.array([y for _, y in splits.test.as_numpy_iterator()])
  probs = model.predict(images.astype("float32"), verbose=0)
  assert m["examples"] == 20
  assert m["accuracy"] == pytest.approx(np.mean(probs.argmax(-1) == labels))
  assert m["top5_accuracy"] == pytest.approx(1.0)
  assert np.sum(m["confusion_matrix"]) == 20


def test_keras_and_saved_model_agree_on_raw_uint8_of_any_size(tmp_path):
  model = applications.build_classifier("convnet_small", 3, weights=None)
  writers.save_keras(model, str(tmp_path / "model.keras"))
  writers.save_saved_model(model, str(tmp_path / "saved_model"),
                          class_names=["a", "b", "c"],
                          serving=families.serving_of(model))
  reloaded = saving.load_keras(str(tmp_path / "model.keras"))
  serving = tf.saved_model.load(str(tmp_path / "saved_model")).signatures[
      "serving_default"]
  for shape in ((2, 32, 32, 3), (1, 57, 41, 3)):
    images = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    expected = model.predict(images.astype("float32"), verbose=0)
    np.testing.assert_allclose(reloaded.predict(images.astype("float32"),
                                                verbose=0), expected, atol=1e-6)
    got = serving(images=tf.constant(images))["probabilities"].numpy()
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_cached_features_train_the_same_head_as_the_slow_path(tmp_path):
  """Same data order, no dropout, no augmentation: the same head weights."""
  splits = _splits(n=32)
  results = {}
  for mode in ("off", "memory", "disk"):
    keras.utils.set_random_seed(3)
    model = applications.build_classifier("convnet_small", 3, weights=None,
                                    dropout=0.0)
    features = (training.FeatureCache(
        model, splits, family=CONTEXT.family, image_size=32, batch_size=8,
        directory=str(tmp_path) if mode == "disk" else None)
                if mode != "off" else None)
    history, _ = training.train_phase(
        model, training.PhaseSpec("head", 3, 1e-2), splits,
        CONTEXT.but(augment=False), features=features)
    results[mode] = (model.get_layer("classifier").get_weights(), history,
                     _weights(applications.base_of(model)))
  assert sorted(os.listdir(tmp_path)) == ["train-view0.tfrecord",
                                          "validation.tfrecord"]
  slow, slow_history, slow_base = results["off"]
  for mode in ("memory", "disk"):
    fast, fast_history, fast_base = results[mode]
    for a, b in zip(slow, fast):
      np.testing.assert_allclose(a, b, atol=1e-5)
    assert [h["val_accuracy"] for h in slow_history] == pytest.approx(
        [h["val_accuracy"] for h in fast_history])
    assert not _changed(slow_base, fast_base)  # same init, base untouched


def test_auto_feature_cache_goes_to_disk_when_memory_is_short(monkeypatch):
  splits = _splits(n=8)
  model = applications.build_classifier("convnet_small", 3, weights=None)
  family = CONTEXT.family

  def pick(mode, directory):
    return training.features.use_feature_cache(mode, STRATEGY, splits, model,
                                               family, 1, directory)

  assert pick("auto", "/d") == "memory"
  monkeypatch.setattr(training.FeatureCache, "fits",
                      staticmethod(lambda *a, **k: False))
  assert pick("auto", "/d") == "disk"
  assert pick("auto", None) is None
  assert pick("off", "/d") is None


def test_feature_cache_views_are_distinct_augmentations():
  splits = _splits(n=16)
  model = applications.build_classifier("convnet_small", 3, weights=None)
  cache = training.FeatureCache(model, splits, family=CONTEXT.family,
                                image_size=32, batch_size=8, views=3, seed=1)
  features = np.stack([f for f, _ in cache.train.as_numpy_iterator()])
  assert features.shape == (48, 128)
  views = features.reshape(3, 16, 128)
  assert not np.allclose(views[0], views[1])
  assert not np.allclose(views[1], views[2])
  again = training.FeatureCache(model, splits, family=CONTEXT.family,
                                image_size=32, batch_size=8, views=3, seed=1)
  np.testing.assert_array_equal(
      features, np.stack([f for f, _ in again.train.as_numpy_iterator()]))


def test_disk_feature_cache_is_removed_after_the_head_phase(tmp_path,
                                                            monkeypatch):
  splits = _splits(n=16)
  model = applications.build_classifier("convnet_small", 3, weights=None)
  recipe = training.Recipe(
      head=training.PhaseSpec("head", 1, 1e-2),
      finetune=training.PhaseSpec("finetune", 0, 1e-4), unfreeze=("all", None))
  seen = []
  real = probe.fit

  def spy(*args, **kwargs):
    seen.append(sorted(os.listdir(tmp_path / "features")))
    return real(*args, **kwargs)

  monkeypatch.setattr(probe, "fit", spy)
  training.run_recipe(model, recipe, splits, CONTEXT, feature_cache="disk",
                      feature_dir=str(tmp_path / "features"))
  assert seen == [["train-view0.tfrecord", "validation.tfrecord"]]
  assert not (tmp_path / "features").exists()


class _FixedChunks(training.cadence.ChunkSize):
  """Every call asks for `SIZE` steps: calls cross 10-step marks, and the
  epoch end and checkpoints cut them short."""
  SIZE = 1

  def __init__(self, **kwargs):
    super().__init__(**kwargs)
    self.size, self.fixed = self.SIZE, True
    self.calls = []

  def next(self, step, left, ends):
    n = super().next(step, left, ends)
    self.calls.append(n)
    return n


def test_steps_chunked_into_calls_train_the_same_weights(monkeypatch,
                                                          tmp_path):
  splits = _splits(n=40)
  results, calls = {}, {}
  for size in (1, 4):
    _FixedChunks.SIZE = size
    keras.utils.set_random_seed(0)
    model = applications.build_classifier("convnet_small", 3, weights=None)
    families.of(model).unfreeze_top(model, "all", None)
    seen = []
    monkeypatch.setattr(training.cadence, "ChunkSize",
                        lambda seen=seen, **kw: seen.append(_FixedChunks(**kw))
                        or seen[-1])
    checkpointer = training.Checkpointer(str(tmp_path / f"ckpt{size}"),
                                         every_steps=3)
    history, step = training.train_phase(
        model, training.PhaseSpec("finetune", 2, 1e-3), splits,
        CONTEXT.but(checkpointer=checkpointer))
    assert step == 10 and len(history) == 2
    results[size] = (model.get_weights(), [h["loss"] for h in history])
    calls[size] = seen[0].calls
  # 5 steps an epoch, a checkpoint every 3 global steps: 3 | 2 | 1 3 | 1.
  assert calls[1] == [1] * 10
  assert calls[4] == [3, 2, 1, 3, 1]
  np.testing.assert_allclose(results[1][1], results[4][1], rtol=1e-5)
  for a, b in zip(results[1][0], results[4][0]):
    np.testing.assert_allclose(a, b, atol=1e-6)


def test_chunk_size_grows_only_while_calls_stay_short():
  chunks = training.cadence.ChunkSize(target=0.5)
  chunks.took(1, 5.0)  # the first call traces: not counted
  assert chunks.size == 1
  for _ in range(4):
    chunks.took(chunks.size, 0.01 * chunks.size)
  assert chunks.size == 16
  chunks.took(16, 0.4)  # 0.8 s at 32 steps would overshoot
  assert chunks.size == 16
  assert chunks.next(step=95, left=50, ends=[100]) == 5
  assert chunks.next(step=100, left=3, ends=[100]) == 3
  fixed = training.cadence.ChunkSize(fixed=True)
  for _ in range(3):
    fixed.took(1, 0.001)
  assert fixed.size == 1


def test_early_stopping_stops_a_phase_that_stops_improving_and_resume_agrees(
    tmp_path):
  splits = _splits()
  model = applications.build_classifier("convnet_small", 3, weights=None)
  best = training.Best()
  checkpointer = training.Checkpointer(str(tmp_path / "ckpt"))
  # A zero learning rate: validation loss never moves after epoch 1. 6
  # epochs of 3 steps; a third of 18 steps is 6 steps, 2 epochs.
  spec = training.PhaseSpec("head", 6, 0.0, early_stopping=1 / 3)
  history, step = training.train_phase(
      model, spec, splits, CONTEXT.but(checkpointer=checkpointer), best=best)
  assert [h["epoch"] for h in history] == [1, 2, 3]
  assert best.where == ("head", 1) and best.step == 3 and step == 3 * 3
  # Resuming from the last checkpoint runs no further epoch.
  saved = checkpointer.progress()
  assert saved["best"]["step"] == 3
  again, again_step = training.train_phase(
      model, spec, splits, CONTEXT.but(checkpointer=checkpointer),
      best=training.Best(), resume=saved, history=saved["history"],
      first_step=saved["step"])
  assert len(again) == 3 and again_step == step


def test_steps_without_gain_count_from_the_phase_own_lowest_loss():
  count = training.cadence.steps_without_gain
  history = [{"phase": "head", "step": 20, "val_loss": 0.1}]
  assert count(history, "finetune", 40) == 0  # phase 2 not validated yet
  assert count(history, "head", 40) == 20
  # Phase 2's own lows count, though none beats the head's 0.1: it is not
  # stopped for failing to beat phase 1 before its rate has decayed.
  history += [{"phase": "finetune", "step": 50, "val_loss": 0.4},
              {"phase": "finetune", "step": 60, "val_loss": 0.3},
              {"phase": "finetune", "step": 70, "val_loss": 0.3}]
  assert count(history, "finetune", 70) == 10  # a tie is no new low
  assert count(history, "finetune", 95) == 35


def test_best_is_the_lowest_validation_loss_not_the_highest_accuracy():
  model = applications.build_classifier("convnet_small", 3, weights=None)
  best = training.Best()
  assert best.offer(model, {"loss": 0.9, "accuracy": 0.5}, ("head", 1), 3)
  assert not best.offer(model, {"loss": 1.2, "accuracy": 0.7}, ("head", 2), 6)
  assert best.offer(model, {"loss": 0.4, "accuracy": 0.6}, ("head", 3), 9)
  assert (best.loss, best.accuracy, best.where, best.step) == (
      0.4, 0.6, ("head", 3), 9)


@pytest.mark.parametrize("target, rounds_run", [(0.0, 1), (1.01, 2)])
def test_pretraining_trains_more_rounds_until_the_target(target, rounds_run,
                                                         monkeypatch):
  from tl_keras import pretraining  # pylint: disable=g-import-not-at-top
  calls = []
  real = training.train_phase

  def counted(model, spec, *args, **kwargs):
    calls.append(spec.learning_rate)
    return real(model, spec, *args, **kwargs)

  monkeypatch.setattr(training, "train_phase", counted)
  model = applications.build_classifier("convnet_small", 3, weights=None,
                                  frozen_base=False)
  pretraining._train(  # pylint: disable=protected-access
      model, _splits(), training.PhaseSpec("pretrain", 1, 1e-3),
      strategy=STRATEGY, image_size=32, seed=0, start=0.0, target=target,
      rounds=2)
  assert calls == [1e-3, 5e-4][:rounds_run]


def test_a_full_disk_is_one_error_and_keeps_the_last_checkpoint(
    tmp_path, monkeypatch):
  model = applications.build_classifier("convnet_small", 3, weights=None)
  checkpointer = training.Checkpointer(str(tmp_path))
  state = dict(phase="finetune", history=[], best=training.Best())
  checkpointer.save(model, None, step_in_phase=1, step=1, **state)
  saved = [np.copy(w) for w in model.get_weights()]
  files = sorted(os.listdir(tmp_path))

  def full(path, obj):
    del path, obj
    raise OSError(errno.ENOSPC, "No space left on device")

  # The model checkpoint is written, then progress.json finds no room.
  monkeypatch.setattr(artifacts, "write_json", full)
  model.set_weights([w + 1 for w in saved])
  with pytest.raises(UserError, match=f"no space left on the disk of "
                     f"{tmp_path} .* MB.*rerun the same command"):
    checkpointer.save(model, None, step_in_phase=2, step=2, **state)
  assert sorted(os.listdir(tmp_path)) == files  # step 2's files removed
  progress = checkpointer.progress()
  assert progress["step"] == 1
  checkpointer.restore(model, None, progress)
  for a, b in zip(saved, model.get_weights()):
    np.testing.assert_array_equal(a, b)


def test_pruning_schedule_is_cubic_over_two_thirds_of_the_phase():
  kernel = tf.Variable(tf.ones([4, 4]))
  pruning = training.pruning.Pruning([kernel])
  assert not pruning.planned
  pruning.plan(0.5, begin=6, total=36)  # ramps from step 6 to 26
  assert pruning.planned and pruning.end_step == 26
  assert int(pruning.every.numpy()) == 1
  expected = {6: 0.0, 16: 0.5 * (1 - 0.5 ** 3), 26: 0.5, 36: 0.5}
  for step, sparsity in expected.items():
    assert float(pruning.sparsity_at(step)) == pytest.approx(sparsity)


def _dense_model():
  # Deterministic on CPU (convolutions are not), so weights compare exactly.
  keras.utils.set_random_seed(0)
  return keras.Sequential([
      keras.Input((32, 32, 3)), keras.layers.Rescaling(1 / 255),
      keras.layers.Flatten(), keras.layers.Dense(8, activation="relu"),
      keras.layers.Dense(3, activation="softmax")])


PRUNED = training.PhaseSpec("finetune", 8, 1e-2, prune_to=0.5)


def test_pruning_holds_its_masks_and_resumes_exactly(tmp_path):
  splits = _splits()
  # 3 steps an epoch, 24 steps: masks ramp to step 16, then stay.
  model = _dense_model()
  carry = {}
  training.train_phase(model, PRUNED, splits, CONTEXT, carry=carry)
  pruning = carry["pruning"]
  assert pruning.finished() and len(pruning.kernels) == 2
  # Exactly the scheduled count pruned, across the kernels together, and
  # every pruned weight still 0 after the 8 steps with the final masks.
  masks = [m.numpy() for m in pruning.masks]
  assert sum((m == 0).sum() for m in masks) == int(
      0.5 * sum(m.size for m in masks))
  for kernel, mask in zip(pruning.kernels, masks):
    assert np.all(np.asarray(kernel)[mask == 0] == 0)
  measured = training.pruning.measure(
      training.pruning.trained_kernels(model), 0.5, "gradual")
  assert measured["sparsity"] == pytest.approx(0.5, abs=1e-3)
  assert measured["kernels"] == 2

  # Stopped by SIGTERM after its first step, while pruning, then resumed:
  # the same weights and masks as the uninterrupted phase.
  resumed = _dense_model()
  checkpointer = training.Checkpointer(str(tmp_path / "ckpt"))
  context = CONTEXT.but(checkpointer=checkpointer)
  context.stop.signal = signal.SIGTERM  # acted on after the first call
  with pytest.raises(training.Stopped):
    training.train_phase(resumed, PRUNED, splits, context)
  saved = checkpointer.progress()
  assert 0 < saved["step_in_phase"] < 16  # stopped while pruning
  again = _dense_model()
  carry = {}
  context.stop.signal = None
  training.train_phase(again, PRUNED, splits, context, resume=saved,
                       first_step=saved["step"], carry=carry)
  for a, b in zip(model.get_weights(), again.get_weights()):
    np.testing.assert_array_equal(a, b)
  for a, b in zip(pruning.masks, carry["pruning"].masks):
    np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_a_phase_after_one_shot_pruning_keeps_the_zeros():
  splits = _splits()
  model = _dense_model()
  kernel = model.layers[-2].kernel
  zeros = np.zeros(kernel.shape, bool)
  zeros[::2] = True
  kernel.assign(np.where(zeros, 0.0, kernel.numpy()))
  carry = {}
  spec = dataclasses.replace(PRUNED, prune_method="oneshot")
  training.train_phase(model, spec, splits, CONTEXT, carry=carry)
  after = kernel.numpy()
  assert np.all(after[zeros] == 0) and np.all(after[~zeros] != 0)
  # The other kernel had no zeros: it trains unmasked.
  assert np.all(model.layers[-1].kernel.numpy() != 0)


def test_blocks_rank_together_along_the_input_axis():
  kernel = np.abs(np.random.default_rng(0).normal(size=(3, 3, 16, 4)))
  magnitude = training.pruning.block_magnitude(tf.constant(kernel), 8).numpy()
  blocks = magnitude.reshape(3, 3, 2, 8, 4)
  assert np.all(blocks == blocks[:, :, :, :1])  # one score per block
  np.testing.assert_allclose(
      blocks[:, :, :, 0], kernel.reshape(3, 3, 2, 8, 4).mean(3), rtol=1e-6)
  # 3 input channels: blocks of 3; 12: blocks of 6 (the largest divisor).
  assert training.pruning.block_size(3, 8) == 3
  assert training.pruning.block_size(12, 8) == 6
  assert training.pruning.block_size(128, 1) == 1
