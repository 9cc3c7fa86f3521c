"""Text classification: KerasHub BERT from a local preset, data, exports."""

import csv
import json
import re

import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from tests.helpers import run_main, suspect_labels
from tl_keras import config as config_lib
from tl_keras.data import datasets
from tl_keras.data import downloads
from tl_keras.data import text_data
from tl_keras.errors import UserError
from tl_keras.export import litert
from tl_keras.export import tflite
from tl_keras import families
from tl_keras.models import text_models
from tl_keras.modes import predict_mode
from tl_keras.modes import predictors
from tl_keras import training

SEQUENCE_LENGTH = 24


@pytest.fixture(scope="module")
def tiny_preset(tmp_path_factory):
  """A 2-layer BERT over the embedded vocabulary, saved as a local preset."""
  import keras_hub  # pylint: disable=g-import-not-at-top
  path = tmp_path_factory.mktemp("preset") / "tiny_bert"
  tokenizer = keras_hub.models.BertTokenizer(
      vocabulary=text_models.micro_vocabulary(), lowercase=True)
  # Seeded: the runs below then start from the same weights every time.
  keras.utils.set_random_seed(0)
  backbone = keras_hub.models.BertBackbone(
      vocabulary_size=tokenizer.vocabulary_size(), num_layers=2, num_heads=2,
      hidden_dim=16, intermediate_dim=32, max_sequence_length=64)
  backbone.save_to_preset(str(path))
  tokenizer.save_to_preset(str(path))
  return str(path), [w.numpy() for w in backbone.weights]


def _classifier(preset, num_classes=5, **kwargs):
  return text_models.build_classifier(
      preset, num_classes, sequence_length=SEQUENCE_LENGTH,
      weights="pretrained", dropout=0.1, **kwargs)


def test_local_preset_loads_through_from_preset(tiny_preset):
  path, saved = tiny_preset
  model = _classifier(path)
  assert [w.shape for w in model.backbone.weights] == [w.shape for w in saved]
  for loaded, original in zip(model.backbone.weights, saved):
    np.testing.assert_array_equal(loaded.numpy(), original)
  assert not model.backbone.trainable
  probs = model.predict(["a text", "another one"], verbose=0)
  assert probs.shape == (2, 5)
  np.testing.assert_allclose(probs.sum(-1), 1.0, rtol=1e-5)
  assert model.preprocessor.sequence_length == SEQUENCE_LENGTH


def test_random_init_of_the_preset_architecture(tiny_preset):
  path, saved = tiny_preset
  model = text_models.build_classifier(path, 3, sequence_length=16,
                                       weights="none", frozen_base=False)
  assert model.backbone.trainable
  assert not all(np.array_equal(w.numpy(), s)
                 for w, s in zip(model.backbone.weights, saved))


def _splits(preset_model, train=60):
  splits = text_data.load_synthetic_text("synthetic_text", seed=0)
  splits = datasets.limited(splits, "synthetic_text", train)
  return text_data.tokenized_splits(splits, preset_model.preprocessor)


def _text_splits(texts):
  ds = tf.data.Dataset.from_tensor_slices(
      (tf.constant(texts), tf.zeros(len(texts), tf.int32)))
  return datasets.Splits(train=ds, validation=ds, test=ds,
                         sizes={s: len(texts) for s in ("train", "validation",
                                                        "test")},
                         class_names=["a"])


def test_the_run_counts_the_training_texts_it_cuts(tiny_preset, caplog):
  """A text is cut exactly when it needs more positions than the
  preprocessor packs: the count agrees with the packed padding masks."""
  model = _classifier(tiny_preset[0])
  length = SEQUENCE_LENGTH
  # A word of the vocabulary is one piece; [CLS] and [SEP] take the other
  # two positions.
  word = str(text_models.micro_vocabulary()[5])
  words = [1, length - 3, length - 2, length - 1, 3 * length, 5]
  texts = [" ".join([word] * n) for n in words]
  splits = _text_splits(texts)
  family = families.of(model)
  np.testing.assert_array_equal(family.positions(model, texts),
                                np.asarray(words) + 2)
  with caplog.at_level("INFO"):
    text_data.measure_lengths(
        splits, lambda t: family.positions(model, t), length)
  mask = model.preprocessor(texts)["padding_mask"].numpy().sum(-1)
  whole = [n + 2 <= length for n in words]
  np.testing.assert_array_equal(mask[whole], np.asarray(words)[whole] + 2)
  assert (mask[np.logical_not(whole)] == length).all()
  stats = splits.text_lengths
  assert stats["cut"] == 2 and stats["texts"] == 6
  assert stats["cut_share"] == round(2 / 6, 4)
  assert stats["longest"] == 3 * length + 2
  assert splits.notes == [
      f"2 of the training texts (33.3%) are longer than --sequence_length="
      f"{length} tokens and are cut; 95% fit whole in {stats['p95']} "
      "tokens"]
  assert [r.levelname for r in caplog.records
          if "are cut" in r.getMessage()] == ["WARNING"]
  # A length past the model's own limit (here, one of 30 positions) is not
  # suggested as if it could be given.
  assert length < 30 < stats["p95"]
  capped = _text_splits(texts)
  text_data.measure_lengths(capped, lambda t: family.positions(model, t),
                            length, limit=30)
  assert capped.notes[0].endswith(
      f"95% fit whole in {stats['p95']} tokens, more than the 30 positions "
      "the model takes at most")
  assert capped.text_lengths["limit"] == 30
  # Nothing cut: the figures, and no note.
  short = _text_splits(texts[:3])
  text_data.measure_lengths(short, lambda t: family.positions(model, t),
                            length)
  assert short.text_lengths["cut"] == 0 and not short.notes


@pytest.mark.parametrize("feature_cache", ["off", "memory"])
def test_head_phase_leaves_the_backbone_unchanged(tiny_preset, feature_cache):
  path, _ = tiny_preset
  model = _classifier(path)
  splits = _splits(model)
  backbone_before = [w.numpy().copy() for w in model.backbone.weights]
  head_before = [w.numpy().copy() for w in model.get_layer("logits").weights]
  recipe = training.Recipe(
      head=training.PhaseSpec("head", 1, 1e-2),
      finetune=training.PhaseSpec("finetune", 0, 1e-4), unfreeze=("all", None))
  training.run_recipe(
      model, recipe, splits,
      training.Context(tf.distribute.get_strategy(), None, 16, augment=False,
                       family=families.of(model)),
      feature_cache=feature_cache)
  for before, after in zip(backbone_before, model.backbone.weights):
    np.testing.assert_array_equal(before, after.numpy())
  assert not all(np.array_equal(b, a.numpy()) for b, a in zip(
      head_before, model.get_layer("logits").weights))


def test_unfreeze_top_layers_keeps_embeddings_frozen(tiny_preset):
  model = _classifier(tiny_preset[0])
  # The top block and the pooler.
  assert families.of(model).unfreeze_top(model, "layers", 1) == 2
  backbone = model.backbone
  assert not backbone.transformer_layers[0].trainable
  assert backbone.transformer_layers[1].trainable
  assert not backbone.get_layer("token_embedding").trainable
  assert backbone.get_layer("pooled_dense").trainable
  families.of(model).unfreeze_top(model, "all", None)
  assert backbone.get_layer("token_embedding").trainable
  with pytest.raises(UserError, match="exceeds the 2 transformer layers"):
    families.of(model).unfreeze_count(model, "layers", 3)


def test_weight_decay_skips_biases_and_layer_norm(tiny_preset):
  model = _classifier(tiny_preset[0], frozen_base=False)
  optimizer = training.make_optimizer(training.PhaseSpec(
      "finetune", 1, 1e-3, weight_decay=0.01,
      no_decay=("bias", "gamma", "beta")), 10)
  optimizer.build(model.trainable_variables)
  decayed = {v.path.split("/")[-1] for v in model.trainable_variables
             if optimizer._use_weight_decay(v)}  # pylint: disable=protected-access
  assert "kernel" in decayed and "embeddings" in decayed
  assert not decayed & {"bias", "gamma", "beta"}


def test_preset_errors():
  with pytest.raises(UserError, match="did you mean bert_base_en_uncased"):
    text_models.check_model("bert_base_en_uncase")
  with pytest.raises(UserError, match="no published weights"):
    text_models.build_classifier("bert_micro", 2, sequence_length=16,
                                 weights="pretrained")


def test_folder_that_is_not_a_preset(tmp_path):
  with pytest.raises(UserError, match="without config.json"):
    text_models.check_model(str(tmp_path))


def test_sequence_length_beyond_the_position_table(tiny_preset):
  with pytest.raises(UserError, match="exceeds the 64 positions"):
    text_models.build_classifier(tiny_preset[0], 2, sequence_length=65,
                                 weights="pretrained")


# --- data -------------------------------------------------------------------


def test_embedded_text_tasks_are_deterministic_and_in_vocabulary():
  first = text_data.synthetic_texts("synthetic_text", "train", seed=3)
  assert first == text_data.synthetic_texts("synthetic_text", "train", seed=3)
  texts, labels, names = first
  assert len(texts) == 300 and names == list(text_data.TARGET_CLASSES)
  assert np.bincount(labels).tolist() == [60] * 5
  vocabulary = set(text_models.micro_vocabulary())
  assert all(w in vocabulary for t in texts for w in t.split())
  source = text_data.synthetic_texts("synthetic_text_source", "test")
  assert len(set(source[1])) == text_data.TOPICS


def _write(path, fmt, rows):
  if fmt == "jsonl":
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return
  sep = "\t" if fmt == "tsv" else ","
  lines = [sep.join(rows[0])] + [
      sep.join(f'"{r[k]}"' if fmt == "csv" else str(r[k]) for k in rows[0])
      for r in rows]
  path.write_text("\n".join(lines) + "\n")


ROWS = [{"review": f"text number {i}, with a comma" if i % 3 else f"plain {i}",
         "sentiment": ("good", "bad", "meh")[i % 3]} for i in range(30)]


@pytest.mark.parametrize("fmt", text_data.FILE_FORMATS)
def test_file_loaders_with_string_labels(tmp_path, fmt):
  path = tmp_path / f"data.{fmt}"
  _write(path, fmt, ROWS)
  splits = text_data.load(fmt, data_dir=str(path), text_column="review",
                          label_column="sentiment")
  assert splits.class_names == ["bad", "good", "meh"]
  assert sum(splits.sizes.values()) == 30 and splits.sizes["test"] == 3
  texts, labels = text_data.texts_of(splits.train)
  for text, label in zip(texts, labels):
    index = int(text.split()[-1]) if text.startswith("plain") else int(
        text.split()[2].rstrip(","))
    assert splits.class_names[label] == ROWS[index]["sentiment"]
  assert any("comma" in t for t in texts)


def test_folder_of_split_files(tmp_path):
  for name, rows in (("train", ROWS), ("dev", ROWS[:6]), ("test", ROWS[:9])):
    _write(tmp_path / f"{name}.csv", "csv",
           [{"text": r["review"], "label": r["sentiment"]} for r in rows])
  splits = text_data.load("csv", data_dir=str(tmp_path))
  assert splits.sizes == {"train": 30, "validation": 6, "test": 9}
  assert not splits.notes


def test_integer_labels_sort_as_numbers(tmp_path):
  _write(tmp_path / "d.csv", "csv",
         [{"text": f"t{i}", "label": str(i % 11)} for i in range(44)])
  splits = text_data.load("csv", data_dir=str(tmp_path / "d.csv"))
  assert splits.class_names == [str(i) for i in range(11)]


@pytest.mark.parametrize("rows, match", [
    ([{"text": "a", "y": "x"}], "no column 'label' .*--label_column"),
    ([{"text": "a", "label": "x"}, {"text": "  ", "label": "x"}],
     r"d\.csv:3 has an empty 'text'"),
    ([{"text": "a", "label": ""}], "empty 'label'"),
])
def test_file_errors(tmp_path, rows, match):
  _write(tmp_path / "d.csv", "csv", rows)
  with pytest.raises(UserError, match=match):
    text_data.load("csv", data_dir=str(tmp_path / "d.csv"))


def test_unseen_test_labels(tmp_path):
  _write(tmp_path / "train.jsonl", "jsonl",
         [{"text": "a", "label": "x"}] * 5 + [{"text": "b", "label": "y"}] * 5)
  _write(tmp_path / "test.jsonl", "jsonl", [{"text": "c", "label": "z"}])
  with pytest.raises(UserError, match="test split has labels never seen in "
                     "train: z"):
    text_data.load("jsonl", data_dir=str(tmp_path))


def test_bad_json_line(tmp_path):
  (tmp_path / "d.jsonl").write_text('{"text": "a", "label": "x"}\n{oops\n')
  with pytest.raises(UserError, match=r"d\.jsonl:2 is not a JSON object"):
    text_data.load("jsonl", data_dir=str(tmp_path / "d.jsonl"))


def test_tfds_text_dataset_through_mock_data(monkeypatch):
  # mock_data fakes the download; the network probe would find none.
  monkeypatch.setattr(downloads, "check_online", lambda what, fix: None)
  with tfds.testing.mock_data(num_examples=12):
    splits = text_data.load("imdb_reviews")
  assert splits.class_names == ["neg", "pos"]
  text, label = next(iter(splits.train))
  assert text.dtype == tf.string and 0 <= int(label) < 2


def test_tfds_image_dataset_is_not_text(monkeypatch):
  monkeypatch.setattr(downloads, "check_online", lambda what, fix: None)
  with tfds.testing.mock_data(num_examples=4):
    with pytest.raises(UserError, match="not single-text classification"):
      text_data.load("mnist")


# --- a whole run through main.py ----------------------------------------------


@pytest.fixture(scope="module")
def text_run(tiny_preset, tmp_path_factory):
  """main.py on a CSV with string labels, from the local preset."""
  folder = tmp_path_factory.mktemp("csv")
  texts, labels, names = text_data.synthetic_texts("synthetic_text", "test")
  _write(folder / "reviews.csv", "csv",
         [{"body": t, "topic": names[y]} for t, y in zip(texts, labels)])
  out = tmp_path_factory.mktemp("text_run") / "out"
  result = run_main(
      "--flagfile=flags/base.flags", f"--model={tiny_preset[0]}",
      "--weights=pretrained", "--dataset=csv",
      f"--data_dir={folder / 'reviews.csv'}", "--text_column=body",
      "--label_column=topic", f"--sequence_length={SEQUENCE_LENGTH}",
      "--batch_size=16", "--min_steps=0", "--head_epochs=1",
      "--finetune_epochs=1", "--finetune_lr=1e-3",
      # The head in the training loop: a linear probe fitted on this random
      # BERT's features picks almost no L2, and its huge weights amplify
      # float32 rounding between inference paths past the tolerances below.
      "--feature_cache=off",
      "--unfreeze=1", "--compare_scratch", "--parity_samples=40",
      "--export=saved_model,tflite_float32,tflite_dynamic",
      f"--output_dir={out}")
  assert result.returncode == 0, result.stderr[-3000:]
  return out, result


def test_text_run_writes_its_artifacts(text_run):
  out, result = text_run
  for name in ("model.keras", "preset", "saved_model", "labels.txt",
               "vocab.txt", "metrics.json", "run.json", "report.html",
               "README.md", "model_float32.tflite", "model_dynamic.tflite"):
    assert (out / name).exists(), name
  metrics = json.loads((out / "metrics.json").read_text())
  assert set(metrics["tflite"]) == {"float32", "dynamic"}
  assert metrics["tflite"]["float32"]["agreement"] == 1.0
  assert metrics["tflite"]["float32"]["examples"] == 40
  assert set(metrics["test"]) >= {"accuracy", "macro_f1", "per_class",
                                  "confusion_matrix"}
  assert "scratch" in metrics
  record = json.loads((out / "run.json").read_text())
  assert record["model"]["kind"] == "text"
  # Scratch is the same recipe from random weights: no head phase.
  assert [h["phase"] for h in record["history"]] == ["head", "finetune",
                                                     "scratch"]
  assert "text classifier" in (out / "README.md").read_text()
  lengths = record["data"]["text_lengths"]
  assert lengths["texts"] == record["data"]["sizes"]["train"]
  assert lengths["sequence_length"] == SEQUENCE_LENGTH
  assert lengths["longest"] >= lengths["p95"] > 2
  assert "transfer gain" in result.stdout
  # The word-count baseline, beside the model in every artifact.
  tfidf = metrics["tfidf"]
  assert tfidf["train_texts"] == record["data"]["sizes"]["train"]
  assert 0 <= tfidf["test"]["accuracy"] <= 1 and tfidf["c"] > 0
  assert "tfidf baseline: TF-IDF" in result.stderr + result.stdout
  assert "Against word counts" in (out / "report.html").read_text()
  assert "TF-IDF + logistic regression on the same texts scores" in (
      out / "README.md").read_text()
  rows, _ = suspect_labels(out)
  texts = set(text_data.synthetic_texts("synthetic_text", "test")[0])
  assert all(r["example"] in texts for r in rows)  # the texts themselves


def test_every_text_artifact_agrees_with_keras(text_run):
  import keras_hub  # pylint: disable=g-import-not-at-top
  out, _ = text_run
  texts = text_data.synthetic_texts("synthetic_text", "validation")[0][:12]
  keras_probs = predictors.load(str(out)).predict(texts)
  reloaded = keras_hub.models.BertTextClassifier.from_preset(
      str(out / "preset"))
  np.testing.assert_allclose(reloaded.predict(texts, verbose=0), keras_probs,
                             atol=1e-5)
  saved = predictors.load(str(out / "saved_model"))
  assert saved.data == "text" and saved.labels == list(text_data.TARGET_CLASSES)
  np.testing.assert_allclose(saved.predict(texts), keras_probs, atol=1e-5)
  lite = predictors.load(str(out / "model_float32.tflite"))
  np.testing.assert_allclose(lite.predict(texts), keras_probs, atol=1e-4)


def test_saved_model_signature_takes_strings(text_run):
  import tensorflow_text  # noqa: F401  pylint: disable=g-import-not-at-top,unused-import
  out, _ = text_run
  serve = tf.saved_model.load(str(out / "saved_model")).signatures[
      "serving_default"]
  spec = serve.structured_input_signature[1]["texts"]
  assert spec.dtype == tf.string and spec.shape.as_list() == [None]
  probs = serve(texts=tf.constant(["one text", "two"]))["probabilities"]
  assert probs.shape == (2, 5)


def test_text_tflite_metadata_says_how_to_tokenize(text_run):
  out, _ = text_run
  meta = tflite.read_metadata(str(out / "model_dynamic.tflite"))
  assert meta["kind"] == "text" and meta["tokenizer"]["vocabulary"] == (
      "vocab.txt")
  assert meta["tokenizer"]["sequence_length"] == SEQUENCE_LENGTH
  runner = litert.TextRunner(str(out / "model_dynamic.tflite"))
  assert sorted(runner.signature.get_input_details()) == sorted(
      litert.TEXT_INPUTS)


@pytest.mark.parametrize("variant", ["float32", "dynamic"])
def test_mediapipe_text_classifier_takes_raw_strings(text_run, variant):
  """The real client: MediaPipe Tasks tokenizes with the vocabulary and
  tokenizer settings inside the file and scores as our runner does."""
  from mediapipe.tasks.python import text  # pylint: disable=g-import-not-at-top
  from mediapipe.tasks.python.core import base_options  # pylint: disable=g-import-not-at-top
  from tl_keras.export import standard_metadata  # pylint: disable=g-import-not-at-top
  out, _ = text_run
  path = str(out / f"model_{variant}.tflite")
  labels = list(text_data.TARGET_CLASSES)
  meta = standard_metadata.read(path)
  assert meta["labels"] == labels and meta["tokenizer"] == "BertTokenizer"
  assert meta["min_parser_version"] == "1.1.0"  # tokenizer process units
  assert standard_metadata.packed_file(path, meta["vocabulary"]) == (
      out / "vocab.txt").read_bytes()
  texts = text_data.synthetic_texts("synthetic_text", "validation")[0][:12]
  expected = litert.TextRunner(path).predict_examples(texts)
  options = text.TextClassifierOptions(
      base_options=base_options.BaseOptions(model_asset_path=path),
      max_results=len(labels))
  got = np.zeros_like(expected)
  with text.TextClassifier.create_from_options(options) as classifier:
    for i, one in enumerate(texts):
      for category in classifier.classify(one).classifications[0].categories:
        assert category.category_name == labels[category.index]
        got[i, category.index] = category.score
  np.testing.assert_allclose(got, expected, atol=1e-4)
  if variant == "float32":  # exact parity: Keras's own top-1
    keras_top1 = predictors.load(str(out)).predict(texts).argmax(-1)
    assert (got.argmax(-1) == keras_top1).all()


def test_predict_and_evaluate_modes_on_texts(text_run, tmp_path, caplog):
  out, _ = text_run
  inputs = tmp_path / "texts.txt"
  inputs.write_text("\n".join(
      text_data.synthetic_texts("synthetic_text", "validation")[0][:3]) + "\n")
  written = tmp_path / "predictions.csv"
  result = run_main("--mode=predict", f"--artifact={out}",
                    f"--inputs={inputs}", "--top_k=2",
                    f"--predictions={written}")
  assert result.returncode == 0, result.stderr[-2000:]
  assert result.stdout.count("texts.txt:") == 3
  rows = list(csv.reader(written.open(encoding="utf-8")))
  assert rows[0] == ["input", "label_1", "score_1", "label_2", "score_2"]
  assert [r[0] for r in rows[1:]] == [f"{inputs}:{i}" for i in (1, 2, 3)]
  assert "vocabulary does not hold" not in result.stderr
  tops = [[l.split()[0] for l in result.stdout.splitlines()
           if l.startswith("  ")][::2]]
  # float32: exact parity, so even near-tied top labels agree. (In this
  # process: --mode=predict is the same call.)
  for artifact in (out / "saved_model", out / "model_float32.tflite"):
    results, text = predict_mode.predict_files(str(artifact), [str(inputs)],
                                             top_k=2)
    assert text.count("texts.txt:") == 3
    tops.append([top[0][0] for _, top in results])
  assert "vocabulary does not hold" not in caplog.text
  assert tops[0] == tops[1] == tops[2]
  # English, to a model of the embedded made-up language: a warning.
  english = run_main("--mode=predict", f"--artifact={out / 'saved_model'}",
                     "--inputs=the stock market fell sharply this morning")
  assert english.returncode == 0, english.stderr[-2000:]
  assert re.search(r"1 of 1 texts are mostly words the model's vocabulary "
                   r"does not hold .*100% of its words", english.stderr)
  folder = tmp_path / "csv"
  folder.mkdir()
  texts, labels, names = text_data.synthetic_texts("synthetic_text", "test")
  _write(folder / "test.csv", "csv",
         [{"text": t, "label": names[y]} for t, y in zip(texts, labels)][:40])
  _write(folder / "train.csv", "csv",
         [{"text": t, "label": names[y]} for t, y in zip(texts, labels)][40:])
  result = run_main("--mode=evaluate", f"--artifact={out}", "--dataset=csv",
                    f"--data_dir={folder}", "--split=test")
  assert result.returncode == 0, result.stderr[-2000:]
  assert "test accuracy" in result.stdout


def test_a_lone_text_tflite_uses_the_vocabulary_inside_it(text_run,
                                                          tmp_path):
  out, _ = text_run
  lone = tmp_path / "model.tflite"
  lone.write_bytes((out / "model_dynamic.tflite").read_bytes())
  texts = text_data.synthetic_texts("synthetic_text", "validation")[0][:6]
  np.testing.assert_array_equal(
      predictors.load(str(lone)).predict(texts),
      predictors.load(str(out / "model_dynamic.tflite")).predict(texts))


@pytest.mark.parametrize("args, message", [
    (["--model=bert_base_en_uncase"], "did you mean bert_base_en_uncased"),
    (["--model=bert_micro", "--weights=pretrained"], "no published weights"),
    (["--model=bert_micro", "--weights=none", "--dataset=csv"],
     "--dataset=csv needs --data_dir"),
])
def test_text_errors_are_one_line(args, message, tmp_path):
  result = run_main(*args, "--min_steps=0", "--head_epochs=1",
                    "--finetune_epochs=1",
                    f"--output_dir={tmp_path / 'out'}")
  errors = [l for l in result.stderr.splitlines() if l.startswith("error:")]
  assert result.returncode == 2 and len(errors) == 1, result.stderr[-2000:]
  assert message in errors[0]
  assert not (tmp_path / "out" / "model.keras").exists()


def test_mixed_precision_model_exports_float32(tiny_preset, tmp_path):
  import keras  # pylint: disable=g-import-not-at-top
  previous = keras.mixed_precision.dtype_policy()
  keras.mixed_precision.set_dtype_policy("mixed_bfloat16")
  try:
    model = _classifier(tiny_preset[0], num_classes=3)
  finally:
    keras.mixed_precision.set_dtype_policy(previous)
  assert model.backbone.dtype_policy.name == "mixed_bfloat16"
  copy = text_models.float32_copy(model)
  assert copy.backbone.dtype_policy.name == "float32"
  inputs = litert.tokens(model.preprocessor, ["some words", "more"])
  np.testing.assert_allclose(
      families.serving_of(copy).keras_probabilities(copy, inputs),
      families.serving_of(model).keras_probabilities(model, inputs), atol=0.05)
  path = str(tmp_path / "model_float32.tflite")
  tflite.export(model, "float32", path, serving=families.serving_of(model),
                class_names=list("abc"))
  runner = litert.TextRunner(path)
  assert "bfloat16" not in {d for ds in runner.op_dtypes().values() for d in ds}
  np.testing.assert_allclose(
      runner.predict(inputs), families.serving_of(copy).keras_probabilities(copy, inputs),
      atol=1e-4)


class _UnlabelledTestBuilder:
  """Stands in for glue/sst2: labelled train and validation, test all -1."""

  def __init__(self):
    import types  # pylint: disable=g-import-not-at-top
    self.info = types.SimpleNamespace(
        full_name="glue/sst2/2.0.0", supervised_keys=None,
        splits={"train": None, "validation": None, "test": None},
        features=tfds.features.FeaturesDict({
            "sentence": tfds.features.Text(),
            "label": tfds.features.ClassLabel(names=["negative", "positive"]),
            "idx": tf.int32}))

  def is_prepared(self):
    return True

  def download_and_prepare(self):
    pass

  def as_dataset(self, split, shuffle_files=False):
    del shuffle_files
    n = {"train": 40, "validation": 8, "test": 10}[split.split("[")[0]]
    if split == "train[:90%]":
      n = 36
    elif split == "train[90%:]":
      n = 4
    labels = [-1] * n if split == "test" else [i % 2 for i in range(n)]
    return tf.data.Dataset.from_tensor_slices({
        "sentence": [f"{split} sentence {i}" for i in range(n)],
        "label": labels, "idx": list(range(n))})


def test_unlabelled_test_split_is_replaced_by_validation(monkeypatch):
  monkeypatch.setattr(downloads, "check_online", lambda what, fix: None)
  monkeypatch.setattr(tfds, "builder",
                      lambda name, data_dir=None: _UnlabelledTestBuilder())
  splits = text_data.load("glue/sst2")
  assert splits.sizes == {"train": 36, "validation": 4, "test": 8}
  assert splits.class_names == ["negative", "positive"]
  assert any("unlabelled" in note and "'validation'" in note
             for note in splits.notes)
  texts, labels = text_data.texts_of(splits.test)
  assert texts[0].startswith("validation sentence") and (labels >= 0).all()


def test_unreachable_preset_says_offline_and_how_to_fix(monkeypatch):
  import keras_hub  # pylint: disable=g-import-not-at-top

  def offline(*args, **kwargs):
    raise ConnectionError("Max retries exceeded (NameResolutionError)")

  monkeypatch.setattr(keras_hub.models.BertBackbone, "from_preset", offline)
  with pytest.raises(UserError, match="could not fetch the KerasHub preset "
                     "'bert_tiny_en_uncased' .*offline.*save_to_preset"):
    text_models.build_classifier("bert_tiny_en_uncased", 2,
                                 sequence_length=16, weights="pretrained")


def test_bert_micro_source_pretraining_writes_a_loadable_preset(monkeypatch):
  from tl_keras import pretraining  # pylint: disable=g-import-not-at-top
  monkeypatch.setattr(pretraining, "TEXT_ROUNDS", 1)  # one epoch is enough
  strategy = tf.distribute.get_strategy()
  path = pretraining.synthetic_text_preset("bert_micro", epochs=1, seed=0,
                                           strategy=strategy)
  assert text_models.is_preset_dir(path)
  assert pretraining.synthetic_text_preset(
      "bert_micro", epochs=1, seed=0, strategy=strategy) == path  # cached
  # --weights=synthetic resolves to it through the text family.
  config = config_lib.Config(model="bert_micro", weights="synthetic",
                             pretrain_epochs=1, seed=0)
  assert pretraining.resolved(config, families.find("bert_micro"),
                              strategy).weights == path
  model = text_models.build_classifier("bert_micro", 5, sequence_length=32,
                                       weights=path)
  assert model.backbone.num_layers == 2
  tokens = model.preprocessor(tf.constant(["zebra"]))["token_ids"].numpy()
  assert 1 not in tokens  # [UNK]: unknown words fall back to letters


def test_text_model_checkpoints_and_restores(tiny_preset, tmp_path):
  model = _classifier(tiny_preset[0])
  splits = _splits(model, train=32)
  checkpointer = training.Checkpointer(str(tmp_path), every_steps=1)
  recipe = training.Recipe(
      head=training.PhaseSpec("head", 1, 1e-2),
      finetune=training.PhaseSpec("finetune", 1, 1e-3), unfreeze=("all", None))
  training.run_recipe(
      model, recipe, splits,
      training.Context(tf.distribute.get_strategy(), None, 16, augment=False,
                       checkpointer=checkpointer, family=families.of(model)))
  progress = checkpointer.progress()
  assert progress["phase"] == "done"
  fresh = _classifier(tiny_preset[0])
  assert not all(np.array_equal(a, b) for a, b in zip(
      fresh.get_weights(), model.get_weights()))
  checkpointer.restore(fresh, None, progress)
  for a, b in zip(fresh.get_weights(), model.get_weights()):
    np.testing.assert_array_equal(a, b)


def test_tfidf_baseline_fits_word_counts_and_says_how_it_compares():
  """The word-count baseline on texts that one word tells apart, and its
  sentence when it scores above and below the model."""
  from tl_keras.data.splits import Splits  # pylint: disable=g-import-not-at-top
  from tl_keras.modes import tfidf_baseline  # pylint: disable=g-import-not-at-top
  from tl_keras.reporting import sentences  # pylint: disable=g-import-not-at-top
  words = ["socket", "parser", "thread"]
  rng = np.random.default_rng(0)
  filler = ["the", "a", "value", "returns", "given", "object"]

  def split(n, ordered=False):
    labels = rng.integers(0, 3, n)
    if ordered:  # a file sorted by label
      labels = np.sort(labels)
    texts = [" ".join(list(rng.choice(filler, 5)) + [words[y]])
             for y in labels]
    return tf.data.Dataset.from_tensor_slices((texts, labels.astype(np.int32)))

  splits = Splits(
      train=split(60, ordered=True), validation=split(30), test=split(30),
      sizes={"train": 60, "validation": 30, "test": 30},
      class_names=words)
  # 40 of 60 training texts sorted by label: a random draw holds every
  # class (the first 40 would miss the last).
  row = tfidf_baseline.measure(splits, max_train=40)
  assert row["train_texts"] == 40
  assert row["test"]["accuracy"] == 1.0 and row["validation_accuracy"] == 1.0
  assert row["c"] in tfidf_baseline.C_GRID
  one_class = tf.data.Dataset.from_tensor_slices(
      (["socket a", "socket b"], np.zeros(2, np.int32)))
  assert tfidf_baseline.measure(Splits(
      train=one_class, validation=one_class, test=one_class,
      sizes={"train": 2, "validation": 2, "test": 2},
      class_names=words)) is None
  behind = {"tfidf": row, "test": {"accuracy": 0.9}}
  assert "(-10.0 points): word counts score higher" in (
      sentences.tfidf_sentence(behind))
  ahead = {"tfidf": {"test": {"accuracy": 0.8}}, "test": {"accuracy": 0.9}}
  assert sentences.tfidf_sentence(ahead).endswith("90.0% (+10.0 points)")
