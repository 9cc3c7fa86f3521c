"""Text classifiers other than BERT: DistilBERT and RoBERTa preset folders.

Tiny random-init backbones saved with `save_to_preset`, as downloaded
presets would be. DistilBERT (WordPiece, no segment ids) goes through
main.py end to end; RoBERTa (byte-pair tokenizer) builds, trains a step
and writes its SavedModel, and says why it has no TFLite files.
"""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from tests.helpers import run_main
from tl_keras import config as config_lib
from tl_keras.data import text_data
from tl_keras.export import writers
from tl_keras import families
from tl_keras.models import text_models
from tl_keras.modes import predict_mode


def _save(path, backbone, tokenizer):
  backbone.save_to_preset(str(path))
  tokenizer.save_to_preset(str(path))
  return str(path)


@pytest.fixture(scope="module")
def distilbert(tmp_path_factory):
  import keras_hub  # pylint: disable=g-import-not-at-top
  tokenizer = keras_hub.models.DistilBertTokenizer(
      vocabulary=text_models.micro_vocabulary(), lowercase=True)
  keras.utils.set_random_seed(0)
  backbone = keras_hub.models.DistilBertBackbone(
      vocabulary_size=tokenizer.vocabulary_size(), num_layers=2, num_heads=2,
      hidden_dim=16, intermediate_dim=32, max_sequence_length=32)
  return _save(tmp_path_factory.mktemp("preset") / "tiny_distilbert",
               backbone, tokenizer)


@pytest.fixture(scope="module")
def distilbert_run(distilbert, tmp_path_factory):
  out = tmp_path_factory.mktemp("run") / "out"
  result = run_main(
      f"--model={distilbert}", "--weights=pretrained",
      "--dataset=synthetic_text", "--sequence_length=16", "--batch_size=16",
      "--min_steps=0", "--head_epochs=1", "--finetune_epochs=1",
      "--finetune_lr=1e-3",
      # The head in the training loop (see test_text's text_run).
      "--feature_cache=off", "--parity_samples=40", f"--output_dir={out}")
  assert result.returncode == 0, result.stderr[-3000:]
  return out


def test_distilbert_trains_exports_and_serves(distilbert_run):
  out = distilbert_run
  record = json.loads((out / "run.json").read_text())
  metrics = json.loads((out / "metrics.json").read_text())
  assert record["model"]["family"] == "DistilBertBackbone"
  assert [h["phase"] for h in record["history"]][:2] == ["head", "finetune"]
  assert set(metrics["tflite"]) == {"float32", "float16", "dynamic"}
  assert metrics["tflite"]["float32"]["agreement"] == 1.0
  texts, _, _ = text_data.synthetic_texts("synthetic_text", "test")
  inputs = out / "texts.txt"
  inputs.write_text("\n".join(texts[:6]) + "\n")
  tops = {a: [r[1][0][0] for r in predict_mode.predict_files(
      str(out / a), [str(inputs)])[0]]
          for a in ("model.keras", "saved_model", "model_float32.tflite")}
  assert tops["saved_model"] == tops["model.keras"]
  assert tops["model_float32.tflite"] == tops["model.keras"]
  # Two inputs, no segment ids: no MediaPipe BERT metadata, ours only.
  from tl_keras.export import tflite  # pylint: disable=g-import-not-at-top
  assert tflite.read_metadata(str(out / "model_float32.tflite"))[
      "inputs"] == ["token_ids", "padding_mask"]


def test_roberta_trains_and_writes_its_saved_model(tmp_path):
  import keras_hub  # pylint: disable=g-import-not-at-top
  vocabulary = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3, "<mask>": 4,
                "a": 5, "b": 6, "ab": 7, "Ġ": 8, "Ġa": 9, "Ġb": 10}
  tokenizer = keras_hub.models.RobertaTokenizer(
      vocabulary=vocabulary, merges=["a b", "Ġ a", "Ġ b"])
  backbone = keras_hub.models.RobertaBackbone(
      vocabulary_size=11, num_layers=2, num_heads=2, hidden_dim=16,
      intermediate_dim=32, max_sequence_length=32)
  preset = _save(tmp_path / "tiny_roberta", backbone, tokenizer)
  config = config_lib.Config(model=preset, weights="pretrained",
                             sequence_length=8)
  family = families.find(preset)
  assert family.name == "keras_hub_text"
  model = family.build(config, 2, tf.distribute.get_strategy())
  assert type(model).__name__ == "RobertaTextClassifier"
  assert family.unfreeze_count(model, "all", None) == 2
  features, head = family.head_parts(model)
  assert head[-1] is model.layers[-1] and features.shape[-1] == 16
  serving = family.serving(model)
  assert serving.variants == () and "WordPiece" in serving.skipped
  skipped = writers.write_exports(model, str(tmp_path / "out"),
                                 ("saved_model", "tflite_float32"),
                                 class_names=["x", "y"], serving=serving)
  assert "tflite_float32" in skipped
  loaded = tf.saved_model.load(str(tmp_path / "out" / "saved_model"))
  probs = loaded.signatures["serving_default"](
      texts=tf.constant(["ab a", "b"]))["probabilities"].numpy()
  np.testing.assert_allclose(probs, model.predict(["ab a", "b"], verbose=0),
                             atol=1e-5)
