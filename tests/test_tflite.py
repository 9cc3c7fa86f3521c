"""TFLite variants on a tiny model: conversion, integer-only int8, metadata."""

import keras
import numpy as np
import pytest

from tests.helpers import mediapipe_scores
from tl_keras.data import synthetic
from tl_keras.errors import CheckFailed, UserError
from tl_keras.export import litert
from tl_keras.export import serving
from tl_keras.export import tflite
from tl_keras.export import writers
from tl_keras import families
from tl_keras.models import applications
from tl_keras.models import precision
from tl_keras.modes import predict_mode
from tl_keras.modes import predictors

SIZE = 32
LABELS = ["hexagon", "star4", "hollow_square", "hollow_triangle",
          "semicircle", "flower3"]
# Largest |tflite - keras| probability per variant on the tiny model.
TOLERANCE = {"float32": 1e-5, "float16": 5e-3, "dynamic": 5e-2, "int8": 5e-2,
             "int16x8": 5e-3}
# The Keras model on uint8 images (also the hand-built ones below).
keras_probabilities = serving.ImageServing.keras_probabilities


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
  keras.utils.set_random_seed(0)
  model = applications.build_classifier("convnet_small", len(LABELS),
                                  image_size=SIZE)
  images, labels = synthetic.load("synthetic", "test", seed=0)
  order = np.random.default_rng(0).permutation(len(labels))[:60]
  images, labels = images[order], labels[order]
  train, train_labels = synthetic.load("synthetic", "train", seed=0)
  calibration = train[tflite.stratified_sample(train, train_labels, 24)]
  directory = tmp_path_factory.mktemp("tflite")
  writers.write_exports(
      model, str(directory), ["saved_model"] + [
          f"tflite_{v}" for v in tflite.VARIANTS],
      class_names=LABELS, serving=families.serving_of(model),
      calibration_images=calibration)
  return model, directory, images, labels


@pytest.mark.parametrize("variant", tflite.VARIANTS)
def test_each_variant_takes_uint8_pixels_and_matches_keras(exported, variant):
  model, directory, images, _ = exported
  runner = litert.ImageRunner(str(directory / tflite.filename(variant)))
  assert runner.input["dtype"] == np.uint8
  assert list(runner.input["shape"]) == [1, SIZE, SIZE, 3]
  got = runner.predict(images)
  expected = keras_probabilities(model, images)
  assert got.shape == expected.shape
  assert np.abs(got - expected).max() < TOLERANCE[variant]


def test_int8_is_integer_only_with_raw_pixel_input(exported):
  _, directory, _, _ = exported
  runner = litert.ImageRunner(str(directory / "model_int8.tflite"))
  assert runner.input["quantization"] == (1.0, 0)  # the raw pixel value
  assert runner.output["dtype"] == np.uint8
  float_ops = {op for op, dtypes in runner.op_dtypes().items()
               if dtypes & {"float32", "float16"}}
  assert not float_ops
  meta = tflite.read_metadata(str(directory / "model_int8.tflite"))
  assert meta["input"]["dtype"] == "uint8"
  assert meta["output"]["scale"] == pytest.approx(
      runner.output["quantization"][0])


def test_int16x8_keeps_int16_activations_and_int8_weights(exported):
  _, directory, _, _ = exported
  runner = litert.ImageRunner(str(directory / "model_int16x8.tflite"))
  assert runner.output["dtype"] == np.float32  # the float32 file's I/O
  ops = runner.op_dtypes()
  # Float only at the edges: the uint8 input's cast and its quantization,
  # and the output's dequantization.
  float_ops = {op for op, dtypes in ops.items()
               if dtypes & {"float32", "float16"}}
  assert float_ops == {"CAST", "QUANTIZE", "DEQUANTIZE"}, float_ops
  assert {"int16", "int8"} <= ops["CONV_2D"]
  assert {"int16", "int8"} <= ops["FULLY_CONNECTED"]


def test_quantized_files_are_smaller(exported):
  _, directory, _, _ = exported
  size = {v: (directory / tflite.filename(v)).stat().st_size
          for v in tflite.VARIANTS}
  assert size["float16"] < 0.6 * size["float32"]
  assert size["int8"] < 0.3 * size["float32"]
  assert size["dynamic"] < 0.3 * size["float32"]
  assert size["int16x8"] < 0.3 * size["float32"]


@pytest.mark.parametrize("variant", tflite.VARIANTS)
def test_labels_read_back_from_the_file(exported, variant):
  _, directory, _, _ = exported
  meta = tflite.read_metadata(str(directory / tflite.filename(variant)))
  assert meta["labels"] == LABELS
  assert meta["image_size"] == SIZE and meta["variant"] == variant
  predictor = predictors.load(str(directory / tflite.filename(variant)))
  assert predictor.labels == LABELS


def test_saved_model_describes_itself(exported):
  _, directory, _, _ = exported
  predictor = predictors.load(str(directory / "saved_model"))
  assert predictor.labels == LABELS and predictor.image_size == SIZE


def test_a_large_photo_is_resized_as_training_resized(exported, tmp_path):
  """SavedModel on a raw 1000x1000 photo == --mode=predict on its file."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  model, directory, _, _ = exported
  # Fine stripes: a plain bilinear resize aliases them, antialiasing averages.
  rows = np.indices((1000, 1000)).sum(0) % 3 == 0
  photo = np.stack([rows * 255, rows * 90, 255 - rows * 200], -1).astype(
      np.uint8)
  Image.fromarray(photo).save(tmp_path / "photo.png")
  serve = tf.saved_model.load(str(directory / "saved_model")).signatures[
      "serving_default"]
  served = serve(images=tf.constant(photo[None]))["probabilities"].numpy()[0]
  [(_, top)], _ = predict_mode.predict_files(str(directory / "saved_model"),
                                           [str(tmp_path / "photo.png")],
                                           top_k=len(LABELS))
  predicted = dict(top)
  assert max(abs(served[i] - predicted[l]) for i, l in enumerate(LABELS)) < 1e-3
  keras_big = model(photo[None].astype(np.float32)).numpy()[0]
  np.testing.assert_allclose(keras_big, served, atol=1e-5)
  aliased = model(tf.image.resize(photo[None].astype(np.float32), (SIZE, SIZE)))
  assert np.abs(aliased.numpy()[0] - served).max() > 1e-4  # the test can fail


def test_metadata_entry_is_replaced_not_duplicated(exported, tmp_path):
  _, directory, _, _ = exported
  content = (directory / "model_float32.tflite").read_bytes()
  path = tmp_path / "relabelled.tflite"
  path.write_bytes(tflite.add_metadata(content, {"labels": ["a", "b"]}))
  assert tflite.read_metadata(str(path)) == {"labels": ["a", "b"]}
  runner = litert.ImageRunner(str(path))  # still a valid model
  assert runner.image_size == SIZE


def test_parity_rows_and_accuracy_gate(exported):
  model, directory, images, labels = exported
  rows = writers.tflite_parity(model, str(directory), tflite.VARIANTS, images,
                              labels, serving=families.serving_of(model))
  assert set(rows) == set(tflite.VARIANTS)
  assert rows["float32"]["agreement"] == 1.0
  keras_accuracy = np.mean(keras_probabilities(
      model, images).argmax(-1) == labels)
  for row in rows.values():
    assert row["keras_accuracy"] == pytest.approx(keras_accuracy)
    assert row["examples"] == len(labels) and row["latency_ms"] > 0
    assert row["latency_ms_1_thread"] > 0
    assert 0 < row["compressed_bytes"] < row["size_bytes"]
  table = litert.format_parity(rows)
  assert "gzipped" in table and "1 thread" in table
  assert len(table.splitlines()) == 2 + len(tflite.VARIANTS)
  # A pruned run's rows carry their unpruned counterparts: printed after.
  pruned = {v: {**r, "unpruned": dict(r, compressed_bytes=2 * 1024)}
            for v, r in rows.items()}
  lines = litert.format_parity(pruned).splitlines()
  assert len(lines) == 3 + 2 * len(tflite.VARIANTS)
  assert lines[2 + len(tflite.VARIANTS)].startswith("unpruned")
  assert lines[-1].split()[0] == tflite.VARIANTS[-1]
  assert "2.0KB" in lines[-1]
  rows["dynamic"]["accuracy"] = rows["dynamic"]["keras_accuracy"] - 0.05
  with pytest.raises(CheckFailed, match=r"test split: dynamic .*vs Keras"
                     r".*within bounds \(float32, float16"):
    litert.check_accuracy_drop(rows, 0.01)  # 3 of 60 examples lost
  # Validation decides, when the row has it (as the int8 fallback does).
  rows["dynamic"]["validation"] = {"accuracy": 0.9, "keras_accuracy": 0.9,
                                   "examples": 60}
  litert.check_accuracy_drop(rows, 0.01)
  rows["dynamic"]["validation"]["accuracy"] = 0.8
  with pytest.raises(CheckFailed, match=r"validation split: dynamic 0.8000 "
                     r"vs Keras 0.9000"):
    litert.check_accuracy_drop(rows, 0.01)
  del rows["dynamic"]["validation"]
  rows["dynamic"]["accuracy"] = rows["dynamic"]["keras_accuracy"] - 1 / 60
  litert.check_accuracy_drop(rows, 0.01)  # one example is not a drop


def test_float32_copy_of_a_mixed_precision_model():
  keras.mixed_precision.set_dtype_policy("mixed_float16")
  try:
    keras.utils.set_random_seed(1)
    mixed = applications.build_classifier("convnet_small", 3, image_size=SIZE)
  finally:
    keras.mixed_precision.set_dtype_policy("float32")
  copy = precision.float32_copy(mixed)
  assert copy is not mixed
  assert all(l.dtype_policy.name == "float32"
             for l in copy._flatten_layers(include_self=False))  # pylint: disable=protected-access
  images = np.random.default_rng(0).integers(0, 256, (4, SIZE, SIZE, 3),
                                             np.uint8)
  np.testing.assert_allclose(keras_probabilities(copy, images),
                             keras_probabilities(mixed, images),
                             atol=2e-2)
  content = tflite.convert(mixed, "float32", families.serving_of(mixed))
  assert content[4:8] == b"TFL3"


def test_stratified_sample_takes_every_class():
  labels = np.repeat(np.arange(4), [50, 10, 5, 100])
  picked = tflite.stratified_sample(None, labels, 12, seed=0)
  assert len(picked) == 12 and len(set(picked)) == 12
  assert sorted(np.bincount(labels[picked])) == [3, 3, 3, 3]
  assert np.array_equal(picked, tflite.stratified_sample(None, labels, 12,
                                                         seed=0))


def test_a_file_that_is_not_tflite_is_refused(tmp_path):
  path = tmp_path / "fake.tflite"
  path.write_bytes(b"not a flatbuffer at all")
  with pytest.raises(UserError, match="not a TFLite model"):
    predictors.load(str(path))


def _int8_hostile_model(size):
  """A classifier whose decision full-integer int8 cannot represent.

  The first dense layer adds 1000 to a difference of about one unit, so its
  int8 output, with a step of about 4, loses the difference: fully
  quantized, the model guesses.
  """
  inputs = keras.Input((None, None, 3))
  pooled = keras.layers.GlobalAveragePooling2D()(inputs)
  offset = keras.layers.Dense(2, name="offset")
  logits = keras.layers.Dense(2, activation="softmax", name="logits")
  model = keras.Model(inputs, logits(offset(pooled)))
  red_minus_green = np.array([[1, -1], [-1, 1], [0, 0]], np.float32) / 255
  offset.set_weights([red_minus_green, np.full(2, 1000, np.float32)])
  logits.set_weights([20 * np.eye(2, dtype=np.float32),
                      np.full(2, -20000, np.float32)])
  return model


def test_the_noise_check_finds_a_model_that_faint_noise_overturns():
  from tl_keras.reporting import sentences  # pylint: disable=g-import-not-at-top
  # Red minus green, averaged over the image, decides the class.
  inputs = keras.Input((None, None, 3))
  logits = keras.layers.Dense(2, activation="softmax")
  model = keras.Model(inputs, logits(
      keras.layers.GlobalAveragePooling2D()(inputs)))
  logits.set_weights([np.array([[1, -1], [-1, 1], [0, 0]], np.float32),
                      np.zeros(2, np.float32)])
  served = serving.ImageServing(8, "none")
  signs = np.where(np.arange(60) % 2, 1, -1)[:, None, None]
  gray = np.full((60, 8, 8, 3), 128, np.float32)

  def with_red(offset):
    images = gray.copy()
    images[..., 0] += offset
    return images.astype(np.uint8)

  # Red apart from green by one level on one pixel of 64: ±1 level of noise
  # on every pixel overturns it. By 50 levels everywhere: nothing does.
  faint = gray.copy()
  faint[:, 0, 0, 0] += signs[:, 0, 0]
  fragile = writers.noise_check(model, faint.astype(np.uint8), serving=served)
  steady = writers.noise_check(model, with_red(50 * signs), serving=served)
  assert fragile["fragile"] and fragile["agreement"] < 0.8
  assert fragile["flipped"] == round((1 - fragile["agreement"]) * 60)
  assert not steady["fragile"] and steady["agreement"] == 1.0
  assert steady["levels"] == writers.NOISE_LEVELS == 1.0
  assert "real camera" in sentences.noise_sentence(fragile)
  assert "real camera" not in sentences.noise_sentence(steady)
  # When the run kept the head over phase 2's lower loss, it names the flag
  # that keeps phase 2's weights.
  assert "--keep_phase" not in sentences.noise_sentence(fragile)
  assert "--keep_phase=lowest_loss" in sentences.noise_sentence(
      {**fragile, "head_kept_over_phase_2": True})
  # Text models are not checked.
  assert writers.noise_check(model, faint, serving=type(
      "Text", (), {"kind": "text"})()) is None


def test_int8_fallback_keeps_the_worst_layers_in_float(tmp_path):
  from tl_keras.export import quantization  # pylint: disable=g-import-not-at-top
  from tl_keras.reporting import sentences  # pylint: disable=g-import-not-at-top
  size, names = 8, ["red", "green"]
  model = _int8_hostile_model(size)
  rng = np.random.default_rng(0)
  calibration, validation, test = (
      rng.integers(0, 256, (n, size, size, 3)).astype(np.uint8)
      for n in (48, 60, 60))

  def labelled(images):
    return images, keras_probabilities(model, images).argmax(-1)

  path = tmp_path / tflite.filename("int8")
  served = serving.ImageServing(size, "none")
  tflite.export(model, "int8", str(path), serving=served, class_names=names,
                calibration_images=calibration)
  plain = path.read_bytes()
  common = dict(calibration_images=calibration, validation=labelled(validation),
                test=labelled(test), class_names=names, serving=served)
  assert writers.int8_fallback(model, str(tmp_path), max_drop=1.0,
                              **common) is None
  assert path.read_bytes() == plain  # within bounds: untouched

  # Labels no model can learn: int8 and Keras are both at chance, so their
  # accuracies are level, but they disagree. Agreement alone starts the
  # fallback, and it stops when agreement is within bounds.
  noise = dict(common, validation=(validation, rng.integers(0, 2, 60)))
  assert writers.int8_fallback(model, str(tmp_path), max_drop=1.0,
                              **noise) is None
  record = writers.int8_fallback(model, str(tmp_path), max_drop=1.0,
                                min_agreement=0.98, **noise)
  val = record["validation"]
  assert val["agreement_before"] < 0.7 and record["within_bounds"]
  assert val["agreement"] >= 0.98 and val["min_agreement"] == 0.98
  assert litert.disagrees({"agreement": 0.9, "examples": 60}, 0.97)
  assert not litert.disagrees({"agreement": 59 / 60, "examples": 60}, 1.0)
  path.write_bytes(plain)

  record = writers.int8_fallback(model, str(tmp_path), max_drop=0.02, **common)
  val = record["validation"]
  assert val["keras_accuracy"] == 1.0 and val["accuracy_before"] < 0.7
  assert record["test_before"]["agreement"] < 0.7
  assert record["within_bounds"] and val["accuracy"] >= 0.98
  ranked = [r["rmse_steps"] for r in record["worst_layers"]]
  assert ranked == sorted(ranked, reverse=True) and ranked[0] > 0.7
  assert record["float_layers"][0] == record["worst_layers"][0]["layer"]
  assert record["size_bytes"] == path.stat().st_size != len(plain)
  # Same contract as a fully quantized file: raw uint8 pixels in, uint8 out,
  # with the layers kept in float named in the metadata.
  runner = litert.ImageRunner(str(path))
  assert runner.input["dtype"] == np.uint8
  assert runner.input["quantization"] == (1.0, 0)
  assert runner.output["dtype"] == np.uint8
  assert any("float32" in d for op, d in runner.op_dtypes().items()
             if op not in ("QUANTIZE", "DEQUANTIZE"))
  metadata = tflite.read_metadata(str(path))
  assert metadata["float_layers"] == record["float_layers"]
  assert metadata["labels"] == names
  assert f"{len(record['float_layers'])} of its" in sentences.fallback_sentence(
      record)
  # Every layer in float: the sentence says what to ship instead.
  for kept, says in ((["a"], False), (["a", "b"], True)):
    sentence = sentences.fallback_sentence(dict(record, float_layers=kept,
                                             layers=2))
    assert ("ship tflite_dynamic" in sentence) == says

  # The search on the debugger's ranking: 1, 2, 3, 4, 6, 8, ... layers, about
  # x1.4 a step.
  assert quantization.counts(63) == [1, 2, 3, 4, 6, 8, 11, 16, 23, 33, 47]
  assert quantization.counts(3) == [1, 2] and quantization.counts(1) == []
  calibrated, layers = quantization.layer_errors(model, served, calibration)
  tried = []
  content, kept, ok, kind = quantization.with_fallback(
      calibrated, layers, lambda c: tried.append(c) or len(tried) == 2)
  assert ok and kept == [r["layer"] for r in layers[:2]] and len(content)
  assert kind is None
  # Then one kind of Keras layer at a time: the two Dense layers' ops.
  kinds = quantization.layer_kinds(model, layers)
  assert dict(kinds)["Dense"] == [r["layer"] for r in layers
                                  if r["op"] == "FULLY_CONNECTED"]
  tried.clear()
  first_kind = len(quantization.counts(len(layers))) + 1
  _, kept, ok, kind = quantization.with_fallback(
      calibrated, layers,
      lambda c: tried.append(c) or len(tried) == first_kind, kinds=kinds)
  assert ok and (kind, kept) == kinds[0]

  rows = {"int8": {"accuracy": 0.5, "keras_accuracy": 1.0, "examples": 60,
                   "fallback": record}}
  with pytest.raises(CheckFailed, match="already keeps"):
    litert.check_accuracy_drop(rows, 0.02)


def test_int8_layer_normalization_is_integer_only(tmp_path):
  """Keras's LayerNormalization negates the mean, which TFLite's int8 has
  no kernel for; the int8 export rewrites it (ConvNeXt holds 19)."""
  inputs = keras.Input((None, None, 3))
  x = keras.layers.Conv2D(8, 3)(inputs)
  x = keras.layers.LayerNormalization(epsilon=1e-6)(x)
  x = keras.layers.GlobalAveragePooling2D()(x)
  model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(x))
  model.layers[2].set_weights([np.linspace(0.5, 2, 8, dtype=np.float32),
                               np.linspace(-1, 1, 8, dtype=np.float32)])
  images = np.random.default_rng(0).integers(0, 256, (16, 8, 8, 3)).astype(
      np.uint8)
  rewritten = tflite.integer_friendly(model)
  assert isinstance(rewritten.layers[2], tflite.SubtractingLayerNormalization)
  np.testing.assert_allclose(keras_probabilities(rewritten, images),
                             keras_probabilities(model, images),
                             atol=1e-5)
  path = tmp_path / "model_int8.tflite"
  served = serving.ImageServing(8, "none")
  path.write_bytes(tflite.convert(model, "int8", served, images))
  runner = litert.ImageRunner(str(path))
  assert not {op for op, dtypes in runner.op_dtypes().items()
              if dtypes & {"float32", "float16"}}
  # The fallback can keep the LayerNormalization's ops in float as a kind.
  from tl_keras.export import quantization  # pylint: disable=g-import-not-at-top
  _, layers = quantization.layer_errors(model, served, images)
  kinds = dict(quantization.layer_kinds(model, layers))
  norm = model.layers[2].name
  assert len(kinds["LayerNormalization"]) >= 4
  for name in kinds["LayerNormalization"]:
    assert f"/{norm}_" in name and "conv2d" not in name, name


def test_int16x8_layer_normalization_runs_in_int16(tmp_path):
  """Keras's variance converts to an int16 SQUARED_DIFFERENCE that LiteRT
  cannot run; the int16x8 export computes it from the centered values."""
  inputs = keras.Input((None, None, 3))
  x = keras.layers.Conv2D(8, 3)(inputs)
  x = keras.layers.LayerNormalization(epsilon=1e-6)(x)
  x = keras.layers.GlobalAveragePooling2D()(x)
  model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(x))
  images = np.random.default_rng(0).integers(0, 256, (16, 8, 8, 3)).astype(
      np.uint8)
  rewritten = tflite.integer_friendly(model, "int16x8")
  assert isinstance(rewritten.layers[2], tflite.CenteredLayerNormalization)
  np.testing.assert_allclose(keras_probabilities(rewritten, images),
                             keras_probabilities(model, images), atol=1e-5)
  path = tmp_path / "model_int16x8.tflite"
  path.write_bytes(tflite.convert(model, "int16x8",
                                  serving.ImageServing(8, "none"), images))
  runner = litert.ImageRunner(str(path))
  np.testing.assert_allclose(runner.predict(images),
                             keras_probabilities(model, images), atol=5e-3)
  ops = runner.op_dtypes()
  assert "SQUARED_DIFFERENCE" not in ops and "int16" in ops["RSQRT"]


@pytest.mark.parametrize("variant", tflite.VARIANTS)
def test_mediapipe_image_classifier_runs_every_variant(exported, variant):
  """The real client: MediaPipe Tasks loads the file as written, reads its
  labels and normalization from the standard metadata, and scores as the
  plain interpreter does."""
  _, directory, images, _ = exported
  path = str(directory / tflite.filename(variant))
  runner = litert.ImageRunner(path)
  expected = runner.predict(images[:12])
  got, names = mediapipe_scores(path, images[:12], len(LABELS))
  assert names == LABELS
  scale = runner.output["quantization"][0] if variant == "int8" else 0.0
  np.testing.assert_allclose(got, expected, atol=max(1e-3, scale + 1e-6))
  assert (got.argmax(-1) == expected.argmax(-1)).all()


def test_standard_metadata_reads_back_what_was_written(exported):
  from tl_keras.export import standard_metadata  # pylint: disable=g-import-not-at-top
  _, directory, _, _ = exported
  for variant in tflite.VARIANTS:
    path = str(directory / tflite.filename(variant))
    meta = standard_metadata.read(path)
    assert meta["labels"] == LABELS
    assert meta["mean"] == [0.0] and meta["std"] == [1.0]
    assert "image classifier" in meta["name"] and variant in meta[
        "description"]
    assert meta["min_parser_version"] == "1.0.0"  # what the C++ rules give
    assert tflite.read_metadata(path)["labels"] == LABELS  # ours kept too


def test_minimum_parser_version_follows_the_schema_rules():
  from mediapipe.tasks.metadata import metadata_schema_py_generated as fb  # pylint: disable=g-import-not-at-top
  import flatbuffers  # pylint: disable=g-import-not-at-top
  from tl_keras.export import standard_metadata  # pylint: disable=g-import-not-at-top

  def version(graph):
    model = fb.ModelMetadataT()
    model.subgraphMetadata = [graph]
    builder = flatbuffers.Builder(0)
    builder.Finish(model.Pack(builder), b"M001")
    return standard_metadata.minimum_parser_version(builder.Output())

  graph = fb.SubGraphMetadataT()
  assert version(graph) == "1.0.0"
  tensor = fb.TensorMetadataT()
  vocabulary = fb.AssociatedFileT()
  vocabulary.type = fb.AssociatedFileType.VOCABULARY
  tensor.associatedFiles = [vocabulary]
  graph.inputTensorMetadata = [tensor]
  assert version(graph) == "1.0.1"
  tokenizer = fb.ProcessUnitT()
  tokenizer.optionsType = fb.ProcessUnitOptions.BertTokenizerOptions
  tokenizer.options = fb.BertTokenizerOptionsT()
  graph.inputProcessUnits = [tokenizer]
  assert version(graph) == "1.1.0"
  graph.customMetadata = [fb.CustomMetadataT()]
  assert version(graph) == "1.5.0"


def test_author_and_license_go_into_the_standard_metadata(exported, tmp_path):
  from tl_keras.export import standard_metadata  # pylint: disable=g-import-not-at-top
  model = exported[0]
  path = str(tmp_path / "model_float32.tflite")
  tflite.export(model, "float32", path, class_names=LABELS, serving=families.serving_of(
      model, about={"author": "Ada Lovelace", "license": "Apache-2.0"}))
  meta = standard_metadata.read(path)
  assert (meta["author"], meta["license"]) == ("Ada Lovelace", "Apache-2.0")
  assert meta["version"] and meta["labels"] == LABELS
