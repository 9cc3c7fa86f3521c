"""The average word-embedding text classifier: tokenizer, a whole run, its
files in MediaPipe's TextClassifier on raw strings."""

import csv
import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from tests.helpers import run_main
from tl_keras import families
from tl_keras.data import text_data
from tl_keras.errors import UserError
from tl_keras.models import word_embedding
from tl_keras.modes import predictors

ODD = ["Hello, World! it's an UNSEEN word", "", "   ", "café naïve 123 a_b",
       "text number 4, with a comma"]


def test_the_tokenizer_splits_as_mediapipe_and_keeps_case(tmp_path):
  texts = ["the cat sat on the mat", "The Cat, it's here!", "naïve café"]
  vocabulary = word_embedding.vocabulary_of(texts)
  # Most frequent first; "'" stays inside a word; non-ASCII letters split.
  assert vocabulary[:2] == ["the", "cat"]
  assert "it's" in vocabulary and "The" in vocabulary
  assert word_embedding.words("naïve café") == ["na", "ve", "caf"]
  assert word_embedding.vocabulary_of(texts, size=3) == ["the", "cat", "sat"]
  model = word_embedding.WordEmbeddingClassifier(vocabulary, 3,
                                                 sequence_length=6)
  ids = model.preprocessor(tf.constant(texts + ["", "unseen words only"]))[
      "token_ids"].numpy()
  index = word_embedding.vocabulary_ids(vocabulary)
  for text, row in zip(texts, ids):
    expected = [1] + [index[w] for w in word_embedding.words(text)][:5]
    assert list(row) == expected + [0] * (6 - len(expected))
  assert list(ids[3]) == [1, 0, 0, 0, 0, 0]  # <START>, then <PAD>
  assert list(ids[4]) == [1, 2, 2, 2, 0, 0]  # three <UNKNOWN> words
  # The positions a text takes whole: the ids it packs when not cut.
  needed = families.of(model).positions(model, texts + ["", "unseen words"])
  assert needed == [7, 5, 4, 1, 3]
  assert [int((r != 0).sum()) for r in ids[1:4]] == [5, 4, 1]
  # model.keras keeps the vocabulary and the weights.
  model.save(str(tmp_path / "model.keras"))
  loaded = keras.models.load_model(str(tmp_path / "model.keras"))
  assert loaded.vocabulary == vocabulary
  np.testing.assert_array_equal(
      loaded({"token_ids": ids}), model({"token_ids": ids}))
  assert families.of(loaded).name == "average_word_embedding"


def _write_csv(path, split):
  texts, labels, names = text_data.synthetic_texts("synthetic_text", split)
  with open(path, "w", newline="", encoding="utf-8") as f:
    writer = csv.writer(f)
    writer.writerow(["text", "label"])
    writer.writerows([t, names[y]] for t, y in zip(texts, labels))
  return names


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  folder = tmp_path_factory.mktemp("words")
  _write_csv(folder / "train.csv", "train")
  _write_csv(folder / "validation.csv", "validation")
  _write_csv(folder / "test.csv", "test")
  out = folder / "out"
  result = run_main(
      "--model=average_word_embedding", "--dataset=csv",
      f"--data_dir={folder}", "--min_steps=0", "--finetune_epochs=8",
      "--export=saved_model,tflite_float32,tflite_dynamic",
      f"--output_dir={out}")
  assert result.returncode == 0, result.stderr[-3000:]
  return out, result


def test_a_run_trains_from_scratch_and_writes_small_files(run):
  out, _ = run
  record = json.loads((out / "run.json").read_text())
  assert record["model"]["kind"] == "words"
  assert record["config"]["weights"] == "none"
  assert record["recipe"]["label_smoothing"] == 0.1  # the model's default
  assert [h["phase"] for h in record["history"]][0] == "finetune"
  metrics = json.loads((out / "metrics.json").read_text())
  assert metrics["test"]["accuracy"] > 0.4  # 5 classes: chance is 0.2
  assert metrics["tflite"]["float32"]["agreement"] == 1.0
  assert 0 <= metrics["tfidf"]["test"]["accuracy"] <= 1  # word counts too
  assert os.path.getsize(out / "model_float32.tflite") < 1_000_000
  lines = (out / "vocab.txt").read_text().splitlines()
  assert lines[:3] == ["<PAD> 0", "<START> 1", "<UNKNOWN> 2"]
  card = (out / "README.md").read_text()
  assert "regex tokenizer" in card and "TextClassifier" in card


def test_every_artifact_and_mediapipe_agree_on_raw_strings(run):
  out, _ = run
  texts = text_data.synthetic_texts("synthetic_text", "test")[0][:20] + ODD
  keras_probs = predictors.load(str(out)).predict(texts)
  for artifact in ("saved_model", "model_float32.tflite"):
    np.testing.assert_allclose(predictors.load(str(out / artifact)).predict(
        texts), keras_probs, atol=1e-5)
  from mediapipe.tasks.python import text  # pylint: disable=g-import-not-at-top
  from mediapipe.tasks.python.core import base_options  # pylint: disable=g-import-not-at-top
  options = text.TextClassifierOptions(
      base_options=base_options.BaseOptions(
          model_asset_path=str(out / "model_float32.tflite")),
      max_results=5)
  got = np.zeros_like(keras_probs)
  with text.TextClassifier.create_from_options(options) as classifier:
    for i, one in enumerate(texts):
      for category in classifier.classify(one).classifications[0].categories:
        got[i, category.index] = category.score
  np.testing.assert_allclose(got, keras_probs, atol=1e-5)


def test_predict_mode_reads_texts_for_the_tflite_file(run, tmp_path):
  out, _ = run
  inputs = tmp_path / "texts.txt"
  inputs.write_text("\n".join(ODD[:1] + ODD[3:]) + "\n")
  result = run_main("--mode=predict",
                    f"--artifact={out / 'model_dynamic.tflite'}",
                    f"--inputs={inputs}",
                    f"--predictions={tmp_path / 'p.csv'}")
  assert result.returncode == 0, result.stderr[-2000:]
  rows = list(csv.DictReader(open(tmp_path / "p.csv", encoding="utf-8")))
  assert len(rows) == 3


@pytest.mark.parametrize("flag, message", [
    ("--weights=pretrained", "has no pretrained weights"),
    ("--compare_scratch", "already trains from random weights"),
])
def test_flags_it_cannot_take_are_one_error_line(flag, message, tmp_path):
  result = run_main("--model=average_word_embedding",
                    "--dataset=synthetic_text", flag,
                    f"--output_dir={tmp_path / 'out'}")
  errors = [l for l in result.stderr.splitlines() if l.startswith("error:")]
  assert result.returncode != 0 and len(errors) == 1, result.stderr[-2000:]
  assert message in errors[0]
  assert "Traceback" not in result.stderr
  assert not list(tmp_path.glob("out/*"))  # nothing written


def test_a_mixed_precision_model_exports_from_a_float32_copy():
  from tl_keras.models import precision  # pylint: disable=g-import-not-at-top
  keras.config.set_dtype_policy("mixed_bfloat16")
  try:
    model = word_embedding.WordEmbeddingClassifier(["a", "b"], 2,
                                                   sequence_length=4)
  finally:
    keras.config.set_dtype_policy("float32")
  assert model.get_layer("embedding").dtype_policy.name == "mixed_bfloat16"
  assert model.get_layer("classifier").dtype_policy.name == "float32"
  copy = precision.float32_copy(model)
  assert {l.dtype_policy.name for l in precision.all_layers(copy)} == {
      "float32"}
  assert copy.preprocessor.built  # the SavedModel tracks it
  ids = copy.preprocessor(tf.constant(["a b", "b"]))
  np.testing.assert_allclose(copy(ids), model(ids), atol=2e-2)


def test_export_mode_refuses_a_variant_the_model_does_not_offer(run):
  out, _ = run
  before = sorted(os.listdir(out))
  result = run_main("--mode=export", f"--run_dir={out}",
                    "--export=tflite_int8")
  errors = [l for l in result.stderr.splitlines() if l.startswith("error:")]
  assert result.returncode == 2 and len(errors) == 1, result.stderr[-2000:]
  assert "tflite_int8" in errors[0] and "tflite_dynamic" in errors[0]
  assert sorted(os.listdir(out)) == before


def test_importance_pooling_starts_as_the_mean_and_learns_weights():
  pool = word_embedding.ImportancePooling(5)
  embeddings = tf.random.normal([2, 4, 3])
  ids = tf.constant([[1, 3, 4, 0], [1, 2, 0, 0]])
  mask = tf.cast(ids != 0, tf.float32)[..., None]
  mean = tf.reduce_sum(embeddings * mask, 1) / tf.reduce_sum(mask, 1)
  np.testing.assert_allclose(pool(embeddings, ids), mean, atol=1e-6)
  pool.importance.assign([0.0, 0.0, 0.0, 20.0, 0.0])  # word 3 dominates
  got = pool(embeddings, ids).numpy()
  np.testing.assert_allclose(got[0], embeddings[0, 1], atol=1e-6)
  np.testing.assert_allclose(got[1], mean[1], atol=1e-6)  # no word 3


def test_a_model_saved_with_the_plain_mean_loads_as_one():
  model = word_embedding.WordEmbeddingClassifier(["a", "b"], 2,
                                                 sequence_length=4,
                                                 pooling="mean")
  config = model.get_config()
  del config["pooling"]  # as files saved before the option existed
  again = word_embedding.WordEmbeddingClassifier.from_config(config)
  assert again.pooling == "mean"
  assert again.count_params() == model.count_params()


@pytest.mark.parametrize("model,given,class_weight,expected", [
    ("average_word_embedding", None, "auto", 0.1),
    ("average_word_embedding", 0.0, "auto", 0.0),
    # The logit shift assumes unsmoothed logits: the model's 0.1 is dropped.
    ("average_word_embedding", None, "logit_adjust", 0.0),
    ("convnet_small", None, "auto", 0.0),
    ("convnet_small", 0.2, "none", 0.2)])
def test_label_smoothing_is_the_models_unless_given(model, given,
                                                    class_weight, expected):
  from tl_keras import config as config_lib  # pylint: disable=g-import-not-at-top
  from tl_keras.modes import recipe_config  # pylint: disable=g-import-not-at-top
  config = config_lib.Config(model=model, label_smoothing=given,
                             class_weight=class_weight)
  config.validate()
  recipe = recipe_config.recipe_from_config(config)
  assert recipe.head.label_smoothing == expected
  assert recipe.finetune.label_smoothing == expected


def test_label_smoothing_with_logit_adjust_is_an_error():
  from tl_keras import config as config_lib  # pylint: disable=g-import-not-at-top
  config = config_lib.Config(model=word_embedding.NAME, label_smoothing=0.1,
                             class_weight="logit_adjust")
  with pytest.raises(UserError, match="--label_smoothing=0.1 with "
                     "--class_weight=logit_adjust.*leave --label_smoothing"):
    config.validate()
  config_lib.Config(model=word_embedding.NAME, label_smoothing=0.0,
                    class_weight="logit_adjust").validate()
