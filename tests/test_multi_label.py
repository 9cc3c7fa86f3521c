"""--multi_label: labels parsed from '|'-separated cells, the one-vs-rest
probe, thresholds and metrics (against scikit-learn), a whole text run and
its files in MediaPipe, an image table, and the flags it refuses."""

import csv
import json

import numpy as np
import pytest
import tensorflow as tf

from tests.helpers import mediapipe_scores
from tests.helpers import run_main
from tl_keras import config as config_lib
from tl_keras import evaluation
from tl_keras.data import image_tables
from tl_keras.data import text_data
from tl_keras.errors import UserError
from tl_keras.modes import predictors
from tl_keras.training import probe

TOPICS = {"sport": "match goal team player score league coach season",
          "money": "bank price market stock profit tax loan budget",
          "science": "atom cell planet energy theory lab gene physics",
          "food": "bread cheese soup recipe salad dinner spice oven"}
FILLER = "the a of and to in is was for on that with as it at by".split()


def write_texts(path, count, seed):
  """A table of texts about 0-3 topics each, labelled with those topics."""
  rng = np.random.default_rng(seed)
  names = sorted(TOPICS)
  with open(path, "w", newline="", encoding="utf-8") as f:
    writer = csv.writer(f)
    writer.writerow(["text", "topics"])
    for _ in range(count):
      chosen = sorted(rng.choice(names, size=rng.integers(0, 4),
                                 replace=False))
      words = list(rng.choice(FILLER, size=8))
      for topic in chosen:
        words += list(rng.choice(TOPICS[topic].split(), size=3,
                                 replace=False))
      rng.shuffle(words)
      writer.writerow([" ".join(words), "|".join(chosen)])


def test_label_cells_become_multi_hot_rows(tmp_path):
  assert text_data.label_sets(["a|b", " b |", "", "c"]) == [
      ["a", "b"], ["b"], [], ["c"]]
  names, labels = text_data.encode_labels(
      {"train": ["b|a", "", "c|a"], "test": ["c"]}, multi_label=True)
  assert names == ["a", "b", "c"]
  np.testing.assert_array_equal(labels["train"],
                                [[1, 1, 0], [0, 0, 0], [1, 0, 1]])
  with pytest.raises(UserError, match="never seen in train: d"):
    text_data.encode_labels({"train": ["a|b"], "test": ["a|d"]}, True)
  with pytest.raises(UserError, match="at least 2"):
    text_data.encode_labels({"train": ["a", "a|"]}, True)
  # Single-label tables still refuse an empty cell; multi-label ones not.
  (tmp_path / "t.csv").write_text("text,label\nhello,\nworld,x\n")
  with pytest.raises(UserError, match="every row needs a label"):
    text_data.read_table(str(tmp_path / "t.csv"), "csv", "text", "label")
  assert text_data.read_table(str(tmp_path / "t.csv"), "csv", "text",
                              "label", multi_label=True)[1] == ["", "x"]


def test_metrics_and_thresholds_match_scikit_learn():
  from sklearn import metrics as sk  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  labels = (rng.random((200, 4)) < 0.3).astype(np.int32)
  probs = np.clip(labels * 0.4 + rng.random((200, 4)) * 0.6, 0, 1)
  thresholds = evaluation.choose_thresholds(probs, labels)
  for c in range(4):  # no threshold does better on F1
    best = max(sk.f1_score(labels[:, c], probs[:, c] >= t)
               for t in np.unique(probs[:, c]))
    assert sk.f1_score(labels[:, c], probs[:, c] >= thresholds[c]) == (
        pytest.approx(best))
  got = evaluation.multi_label_metrics(probs, labels, class_names=list("abcd"),
                                       thresholds=thresholds)
  predicted = probs >= thresholds
  assert got["micro_f1"] == pytest.approx(
      sk.f1_score(labels, predicted, average="micro"))
  assert got["macro_f1"] == pytest.approx(
      sk.f1_score(labels, predicted, average="macro"))
  assert got["mean_average_precision"] == pytest.approx(
      sk.average_precision_score(labels, probs, average="macro"))
  assert got["accuracy"] == pytest.approx(sk.accuracy_score(labels,
                                                            predicted))
  assert got["loss"] == pytest.approx(sk.log_loss(
      labels.ravel(), probs.ravel()), rel=1e-4)
  # A label with no positive example keeps 0.5 and stays out of macro-F1.
  labels[:, 3] = 0
  assert evaluation.choose_thresholds(probs, labels)[3] == 0.5


def test_the_probe_fits_one_logistic_regression_per_label():
  rng = np.random.default_rng(1)
  x = rng.normal(size=(300, 6)).astype(np.float32)
  y = np.stack([x[:, 0] > 0, x[:, 1] + x[:, 2] > 0.5,
                np.zeros(300, bool)], -1).astype(np.int32)

  def dataset(a, b):
    return tf.data.Dataset.from_tensor_slices((a, b))
  fit = probe.fit(dataset(x[:200], y[:200]), dataset(x[200:], y[200:]), 3)
  logits = x[200:] @ fit.kernel + fit.bias
  assert np.all((logits >= 0) == (y[200:] > 0), -1).mean() > 0.9
  assert np.all(logits[:, 2] < -10)  # never present: never predicted
  assert fit.validation_accuracy > 0.9  # exact match
  cv = probe.cross_validate(x, y, 3)
  assert cv.accuracy > 0.85 and cv.losses.shape == (300,)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  folder = tmp_path_factory.mktemp("multi")
  for split, count, seed in (("train", 400, 0), ("validation", 60, 1),
                             ("test", 60, 2)):
    write_texts(folder / f"{split}.csv", count, seed)
  out = folder / "out"
  result = run_main(
      "--model=average_word_embedding", "--dataset=csv", "--multi_label",
      f"--data_dir={folder}", "--label_column=topics", "--min_steps=0",
      "--finetune_epochs=10", "--export=saved_model,tflite_float32",
      f"--output_dir={out}")
  assert result.returncode == 0, result.stderr[-3000:]
  return out, result


def test_a_run_reports_multi_label_figures(run):
  out, result = run
  metrics = json.loads((out / "metrics.json").read_text())
  test = metrics["test"]
  assert test["multi_label"] and test["macro_f1"] > 0.8
  assert test["mean_average_precision"] > 0.8
  assert set(test["per_class"]) == set(TOPICS)
  assert all(0 < m["threshold"] < 1 for m in test["per_class"].values())
  assert metrics["tflite"]["float32"]["agreement"] == 1.0
  assert "mAP" in result.stdout and "micro-F1" in result.stdout
  report = (out / "report.html").read_text()
  assert "Per label (test)" in report and "max_results=-1" in report
  assert not (out / "confusion_matrix.png").exists()
  assert "mean average precision" in (out / "README.md").read_text()
  with open(out / "suspect_labels.csv", encoding="utf-8") as f:
    for row in csv.DictReader(f):  # label sets, joined as in the table
      assert set(row["label"].split("|")) <= set(TOPICS) | {""}


def test_every_file_gives_per_label_probabilities_mediapipe_too(run):
  out, _ = run
  texts = ["the goal of the team and the bank profit", "soup", "",
           "atom energy with bread and cheese on the oven"]
  keras_probs = predictors.load(str(out)).predict(texts)
  # Independent sigmoids: rows need not sum to 1, several labels pass.
  assert (keras_probs >= 0.5).sum(-1).max() >= 2
  for artifact in ("saved_model", "model_float32.tflite"):
    np.testing.assert_allclose(predictors.load(str(out / artifact)).predict(
        texts), keras_probs, atol=1e-5)
  from mediapipe.tasks.python import text  # pylint: disable=g-import-not-at-top
  from mediapipe.tasks.python.core import base_options  # pylint: disable=g-import-not-at-top
  options = text.TextClassifierOptions(
      base_options=base_options.BaseOptions(
          model_asset_path=str(out / "model_float32.tflite")),
      max_results=-1, score_threshold=0.5)
  with text.TextClassifier.create_from_options(options) as classifier:
    for one, expected in zip(texts, keras_probs):
      categories = classifier.classify(one).classifications[0].categories
      assert sorted(c.index for c in categories) == list(
          np.flatnonzero(expected >= 0.5))
      for c in categories:
        assert c.score == pytest.approx(expected[c.index], abs=1e-5)


def test_evaluate_mode_gives_multi_label_figures(run):
  out, _ = run
  result = run_main("--mode=evaluate", f"--artifact={out / 'model_float32.tflite'}",
                    "--dataset=csv", f"--data_dir={out.parent}",
                    "--label_column=topics", "--multi_label")
  assert result.returncode == 0, result.stderr[-2000:]
  assert "macro-F1" in result.stdout and "mAP" in result.stdout
  assert "thresh" in result.stdout  # the per-label table


def test_predict_mode_names_the_labels_past_their_thresholds(run, tmp_path):
  out, _ = run
  inputs = tmp_path / "texts.txt"
  inputs.write_text("the goal of the team and the bank profit\nsoup\n")
  result = run_main("--mode=predict",
                    f"--artifact={out / 'model_float32.tflite'}",
                    f"--inputs={inputs}", f"--predictions={tmp_path / 'p.csv'}")
  assert result.returncode == 0, result.stderr[-2000:]
  rows = list(csv.DictReader(open(tmp_path / "p.csv", encoding="utf-8")))
  thresholds = {n: m["threshold"] for n, m in json.loads(
      (out / "metrics.json").read_text())["test"]["per_class"].items()}
  probs = predictors.load(str(out)).predict(
      inputs.read_text().splitlines())
  for row, p in zip(rows, probs):
    names = sorted(thresholds)
    assert row["labels"] == "|".join(
        n for n, q in zip(names, p) if q >= thresholds[n])
  assert rows[0]["labels"] == "money|sport"


def test_an_image_table_with_several_labels_per_image(tmp_path):
  from PIL import Image  # pylint: disable=g-import-not-at-top
  rows = []
  for i in range(24):
    # Red, green: each present or not, as the labels say.
    red, green = i % 2, (i // 2) % 2
    pixels = np.zeros((8, 8, 3), np.uint8)
    pixels[..., 0], pixels[..., 1] = 255 * red, 255 * green
    Image.fromarray(pixels).save(tmp_path / f"{i}.png")
    rows.append(f"{i}.png,{'|'.join(n for n, on in (('red', red), ('green', green)) if on)}")
  (tmp_path / "images.csv").write_text("path,colours\n" + "\n".join(rows))
  splits = image_tables.load(str(tmp_path / "images.csv"), "csv",
                             label_column="colours", multi_label=True,
                             validation_fraction=0.25, test_fraction=0.25)
  assert splits.multi_label and splits.class_names == ["green", "red"]
  # Test is cut first, then validation from what is left (as for texts).
  assert splits.sizes == {"train": 14, "validation": 4, "test": 6}
  for image, label in splits.train:
    mean = tf.reduce_mean(tf.cast(image, tf.float32), [0, 1]).numpy()
    assert list(label.numpy()) == [int(mean[1] > 100), int(mean[0] > 100)]
  result = run_main(
      "--model=convnet_small", "--weights=none", "--dataset=csv",
      f"--data_dir={tmp_path / 'images.csv'}", "--label_column=colours",
      "--multi_label", "--image_size=32", "--batch_size=4", "--min_steps=0",
      "--finetune_epochs=2", "--finetune_lr=1e-3", "--export=tflite_float32",
      "--validation_fraction=0.25", "--test_fraction=0.25",
      f"--output_dir={tmp_path / 'out'}")
  assert result.returncode == 0, result.stderr[-3000:]
  metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
  assert metrics["test"]["multi_label"]
  assert metrics["tflite"]["float32"]["agreement"] == 1.0
  # MediaPipe's ImageClassifier gives every label's own sigmoid score.
  images = np.stack([np.asarray(Image.open(tmp_path / f"{i}.png"))
                     for i in range(4)])
  scores, names = mediapipe_scores(
      str(tmp_path / "out" / "model_float32.tflite"), images, 2)
  assert names == ["green", "red"]
  np.testing.assert_allclose(
      scores, predictors.load(str(tmp_path / "out")).predict(images),
      atol=1e-5)


@pytest.mark.parametrize("changes, message", [
    ({"dataset": "synthetic"}, "--multi_label reads several labels"),
    ({"augment": "mixup"}, "--augment=mixup"),
    ({"class_weight": "balanced"}, "--class_weight=balanced"),
    ({"class_weight": "logit_adjust"}, "--class_weight=logit_adjust"),
])
def test_settings_it_cannot_take_are_refused(changes, message):
  config = config_lib.Config(**{"dataset": "csv", "data_dir": "x.csv",
                                "multi_label": True, **changes})
  with pytest.raises(UserError, match=message):
    config.validate()


def test_a_refused_flag_is_one_error_line_and_writes_nothing(tmp_path):
  result = run_main("--model=convnet_small", "--multi_label",
                    "--dataset=synthetic", f"--output_dir={tmp_path / 'out'}")
  errors = [l for l in result.stderr.splitlines() if l.startswith("error:")]
  assert result.returncode != 0 and len(errors) == 1, result.stderr[-2000:]
  assert "--dataset=csv" in errors[0] and "Traceback" not in result.stderr
  assert not (tmp_path / "out").exists()


def test_features_on_disk_keep_multi_hot_labels(tmp_path):
  from tl_keras.training import features  # pylint: disable=g-import-not-at-top
  x = np.arange(12, dtype=np.float32).reshape(6, 2)
  y = np.array([[1, 0, 1], [0, 0, 0], [0, 1, 0]] * 2, np.int32)
  ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(4)
  read = features._features_to_file(lambda b: b * 2, ds,  # pylint: disable=protected-access
                                    str(tmp_path / "f.tfrecord"), 2)
  assert read.element_spec[1].shape == [3]
  got_x, got_y = probe.arrays(read)
  np.testing.assert_array_equal(got_x, 2 * x)
  np.testing.assert_array_equal(got_y, y)
