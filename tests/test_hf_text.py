"""Hugging Face BERT folders and the packaged all-MiniLM-L6-v2, offline."""

import json
import os

import keras
import numpy as np
import pytest

from tests.helpers import run_main
from tl_keras.export import litert
from tl_keras.export import writers
from tl_keras import families
from tl_keras.models import saving
from tl_keras.models import text_models
from tl_keras.modes import predictors

WORDS = ("the", "cat", "sat", "on", "mat", "dog", "ran", "far", "a", "red")


def write_hf_folder(path, seed=0, pooling="mean"):
  """A 1-layer BERT in Hugging Face's layout (config.json,
  model.safetensors, tokenizer.json; no vocab.txt), random weights."""
  from safetensors.numpy import save_file  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(seed)
  vocabulary = list(text_models.SPECIAL_TOKENS) + list(WORDS)
  hidden, inner, positions = 8, 16, 16
  shapes = {
      "embeddings.word_embeddings.weight": (len(vocabulary), hidden),
      "embeddings.position_embeddings.weight": (positions, hidden),
      "embeddings.token_type_embeddings.weight": (2, hidden),
      "pooler.dense.weight": (hidden, hidden), "pooler.dense.bias": (hidden,)}
  layer = "encoder.layer.0."
  for name in ("attention.self.query", "attention.self.key",
               "attention.self.value", "attention.output.dense"):
    shapes[f"{layer}{name}.weight"] = (hidden, hidden)
    shapes[f"{layer}{name}.bias"] = (hidden,)
  shapes.update({f"{layer}intermediate.dense.weight": (inner, hidden),
                 f"{layer}intermediate.dense.bias": (inner,),
                 f"{layer}output.dense.weight": (hidden, inner),
                 f"{layer}output.dense.bias": (hidden,)})
  tensors = {k: rng.normal(0, 0.5, v).astype(np.float32)
             for k, v in shapes.items()}
  for norm in ("embeddings.LayerNorm", f"{layer}attention.output.LayerNorm",
               f"{layer}output.LayerNorm"):
    tensors[f"{norm}.weight"] = np.ones(hidden, np.float32)
    tensors[f"{norm}.bias"] = np.zeros(hidden, np.float32)
  os.makedirs(path, exist_ok=True)
  save_file(tensors, os.path.join(path, "model.safetensors"))
  with open(os.path.join(path, "config.json"), "w", encoding="utf-8") as f:
    json.dump({"model_type": "bert", "hidden_size": hidden,
               "num_hidden_layers": 1, "num_attention_heads": 2,
               "intermediate_size": inner, "vocab_size": len(vocabulary),
               "max_position_embeddings": positions, "type_vocab_size": 2,
               "hidden_act": "gelu", "hidden_dropout_prob": 0.1,
               "attention_probs_dropout_prob": 0.1,
               "layer_norm_eps": 1e-12}, f)
  with open(os.path.join(path, "tokenizer.json"), "w", encoding="utf-8") as f:
    json.dump({"model": {"type": "WordPiece", "vocab": {
        w: i for i, w in enumerate(vocabulary)}}}, f)
  with open(os.path.join(path, "tokenizer_config.json"), "w",
            encoding="utf-8") as f:
    json.dump({"do_lower_case": True}, f)
  if pooling:
    os.makedirs(os.path.join(path, "1_Pooling"), exist_ok=True)
    with open(os.path.join(path, "1_Pooling", "config.json"), "w",
              encoding="utf-8") as f:
      json.dump({"pooling_mode_mean_tokens": pooling == "mean",
                 "pooling_mode_cls_token": pooling == "first"}, f)
  return str(path)


@pytest.fixture
def cache(tmp_path, monkeypatch):
  monkeypatch.setenv("TL_KERAS_CACHE", str(tmp_path / "cache"))
  return tmp_path / "cache"


def _build(name, classes=3, length=8):
  return text_models.build_classifier(name, classes, sequence_length=length,
                                      weights="pretrained")


def test_a_hugging_face_folder_loads_mean_pooled_and_untouched(tmp_path,
                                                               cache):
  folder = write_hf_folder(tmp_path / "hf")
  before = sorted(os.listdir(folder))
  model = _build(folder)
  assert sorted(os.listdir(folder)) == before  # no vocab.txt written there
  assert type(model).__name__ == "PooledBertClassifier"
  assert model.pooling == "mean" and model.preprocessor.tokenizer.lowercase
  inputs = model.preprocessor(["The CAT sat", "a red dog ran far on the mat"])
  pooled, _ = text_models.feature_parts(model)
  features = np.asarray(keras.Model(model.input, pooled)(inputs))
  tokens = np.asarray(model.backbone(inputs)["sequence_output"])
  mask = np.asarray(inputs["padding_mask"], np.float32)[..., None]
  np.testing.assert_allclose(features, (tokens * mask).sum(1) / mask.sum(1),
                             atol=1e-5)
  # The words tokenize to themselves, lower-cased: no [UNK].
  ids = np.asarray(inputs["token_ids"])
  assert 1 not in ids and ids[0, 1] == text_models.SPECIAL_TOKENS.__len__()


def test_cls_and_pooler_checkpoints(tmp_path, cache):
  first = _build(write_hf_folder(tmp_path / "first", pooling="first"))
  assert first.pooling == "first"
  plain = _build(write_hf_folder(tmp_path / "plain", pooling=None))
  assert type(plain).__name__ == "BertTextClassifier"


def test_a_pooled_classifier_saves_reloads_and_exports(tmp_path, cache):
  model = _build(write_hf_folder(tmp_path / "hf"))
  texts = ["the cat sat on the mat", "a dog ran", "red red red"]
  expected = model.predict(texts, verbose=0)
  model.save(str(tmp_path / "model.keras"))
  reloaded = saving.load_keras(str(tmp_path / "model.keras"))
  np.testing.assert_allclose(reloaded.predict(texts, verbose=0), expected,
                             atol=1e-6)
  serving = families.serving_of(model)
  writers.write_exports(model, str(tmp_path), ["tflite_float32"],
                       class_names=["a", "b", "c"], serving=serving)
  path = str(tmp_path / "model_float32.tflite")
  lite = litert.TextRunner(path).predict_examples(texts)
  np.testing.assert_allclose(lite, expected, atol=1e-5)
  from mediapipe.tasks.python import text  # pylint: disable=g-import-not-at-top
  from mediapipe.tasks.python.core import base_options  # pylint: disable=g-import-not-at-top
  options = text.TextClassifierOptions(
      base_options=base_options.BaseOptions(model_asset_path=path),
      max_results=3)
  with text.TextClassifier.create_from_options(options) as classifier:
    for i, one in enumerate(["The Cat sat on the MAT", "a dog ran",
                             "Red red RED"]):
      got = np.zeros(3)
      for category in classifier.classify(one).classifications[0].categories:
        got[category.index] = category.score
      np.testing.assert_allclose(got, expected[i], atol=1e-4)


def test_a_folder_without_a_vocabulary_is_refused(tmp_path, cache):
  from tl_keras.errors import UserError  # pylint: disable=g-import-not-at-top
  folder = write_hf_folder(tmp_path / "hf")
  os.remove(os.path.join(folder, "tokenizer.json"))
  with pytest.raises(UserError, match="neither vocab.txt nor tokenizer.json"):
    _build(folder)


def test_the_packaged_minilm_gives_sentence_transformers_embeddings(cache):
  """all-MiniLM-L6-v2 from its package: mean pooling, lower-casing; the
  similarities sentence-transformers gives (0.755 for the first pair)."""
  model = _build("all_minilm_l6_v2", length=32)
  assert (model.backbone.num_layers, model.backbone.hidden_dim) == (6, 384)
  inputs = model.preprocessor(["A man is eating food.",
                               "A MAN IS EATING A PIECE OF BREAD.",
                               "The new movie is awesome."])
  pooled, _ = text_models.feature_parts(model)
  emb = np.array(keras.Model(model.input, pooled)(inputs))
  emb /= np.linalg.norm(emb, axis=1, keepdims=True)
  similarity = emb @ emb.T
  assert similarity[0, 1] == pytest.approx(0.755, abs=0.01)
  assert abs(similarity[0, 2]) < 0.1
  description = text_models.describe("all_minilm_l6_v2", model)
  assert "Apache License 2.0" in description["weights_license"]


def test_the_default_minilm_run_exports_what_keras_predicts(tmp_path):
  """The packaged MiniLM on real text with default flags: the probe head
  folded over the feature cache (the default), exported. Every artifact
  gives Keras's probabilities at the usual tolerances."""
  out = tmp_path / "out"
  result = run_main(
      "--model=all_minilm_l6_v2", "--dataset=docstrings",
      "--max_train_samples=60", "--sequence_length=16", "--finetune_epochs=0",
      "--export=saved_model,tflite_float32", "--parity_samples=30",
      f"--output_dir={out}", env={"TL_KERAS_CACHE": str(tmp_path / "cache")})
  assert result.returncode == 0, result.stderr[-3000:]
  record = json.loads((out / "run.json").read_text())
  assert "strength" in record["recipe"]["head"]  # the probe, folded
  # 16 tokens cut most docstrings, and the run says so.
  lengths = record["data"]["text_lengths"]
  assert lengths["texts"] == 60 and lengths["cut_share"] > 0.5
  assert any("are longer than --sequence_length=16" in n
             for n in record["data"]["notes"])
  assert "of the training texts were" in (out / "README.md").read_text()
  metrics = json.loads((out / "metrics.json").read_text())
  assert metrics["tflite"]["float32"]["agreement"] == 1.0
  texts = ["Return the number of items in a container.",
           "Open a socket connection to the given host and port.",
           "Parse an email message from a string."]
  keras_probs = predictors.load(str(out)).predict(texts)
  np.testing.assert_allclose(
      predictors.load(str(out / "saved_model")).predict(texts), keras_probs,
      atol=1e-5)
  np.testing.assert_allclose(
      predictors.load(str(out / "model_float32.tflite")).predict(texts),
      keras_probs, atol=1e-4)
