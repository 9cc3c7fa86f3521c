"""main.py as a user runs it: a subprocess, real flags, real artifacts."""

import csv
import gzip
import json
import logging
import os
import re
import shlex
import shutil
import subprocess
import sys
import time

import numpy as np
from PIL import Image
import pytest
import tensorflow as tf

from tests.conftest import REPO
from tests.conftest import write_image_folder
from tests.helpers import mediapipe_scores, run_main, suspect_labels
from tl_keras import artifacts
from tl_keras.data import input_files
from tl_keras.data import synthetic
from tl_keras.export import litert
from tl_keras.export import writers
from tl_keras import families
from tl_keras.models import saving
from tl_keras.modes import predict_mode
from tl_keras.modes import predictors

# A given rate and BatchNorm mode: no trials, so phase 2 always runs (the
# trials run end to end in test_benchmarks' transfer_suite smoke test).
TINY = ["--model=convnet_small", "--batch_size=16", "--min_steps=0",
        "--finetune_lr=1e-3", "--batchnorm=frozen", "--head_epochs=1",
        "--finetune_epochs=1", "--unfreeze=all", "--log_every_steps=1"]


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
  """A transfer run from source-task weights, with the scratch baseline."""
  out = tmp_path_factory.mktemp("run") / "out"
  flagfile = tmp_path_factory.mktemp("flags") / "tiny.flags"
  flagfile.write_text("\n".join(
      ["--flagfile=flags/base.flags", *TINY, "--weights=synthetic",
       "--pretrain_epochs=1", "--dataset=synthetic", "--compare_scratch"]))
  env = {"TL_KERAS_CACHE": str(tmp_path_factory.mktemp("cache"))}
  result = run_main(f"--flagfile={flagfile}", f"--output_dir={out}", env=env)
  assert result.returncode == 0, result.stderr[-3000:]
  return out, result, env


def test_run_writes_every_artifact(quick_run):
  out, result, _ = quick_run
  for name in ("model.keras", "saved_model", "labels.txt", "metrics.json",
               "run.json", "tensorboard", "model_float32.tflite",
               "model_float16.tflite", "model_dynamic.tflite",
               "model_int8.tflite"):
    assert (out / name).exists(), name
  assert not [p for p in os.listdir(out) if p.startswith(".staging")]
  rows, review = suspect_labels(out)
  # Embedded images have no files: no source, but thumbnails.
  assert all(r["example"] == "" for r in rows)
  if rows:
    assert (out / "top_losses.png").exists()
    assert "The most confident mistakes" in (out / "report.html").read_text()
    assert review["confused_pairs"][0]["count"] >= 1
  assert "test accuracy" in result.stdout and "transfer gain" in result.stdout
  assert "int8" in result.stdout and "agreement" in result.stdout


def test_mediapipe_reads_the_run_files_as_predict_does(quick_run):
  """The quickstart-style run's files in MediaPipe Tasks' ImageClassifier:
  the labels of labels.txt, the top-1 of --mode=predict's predictor, scores
  within 1e-3 (int8: one quantization step)."""
  out, _, _ = quick_run
  labels = artifacts.read_labels(out / "labels.txt")
  images, _ = synthetic.load("synthetic", "test", seed=0)
  for variant in ("float32", "float16", "dynamic", "int8"):
    path = str(out / f"model_{variant}.tflite")
    predictor = predictors.load(path)
    expected = predictor.predict(images[:8])
    got, names = mediapipe_scores(path, images[:8], len(labels))
    assert names == labels == predictor.labels, variant
    scale = litert.ImageRunner(path).output["quantization"][0]
    np.testing.assert_allclose(got, expected, atol=max(1e-3, scale + 1e-6),
                               err_msg=variant)
    assert (got.argmax(-1) == expected.argmax(-1)).all(), variant


def test_parity_rows_for_every_tflite_variant(quick_run):
  out, _, _ = quick_run
  metrics = json.loads((out / "metrics.json").read_text())
  assert set(metrics["tflite"]) == {"float32", "float16", "dynamic", "int8"}
  for variant, row in metrics["tflite"].items():
    assert row["examples"] == 600
    assert row["keras_accuracy"] == pytest.approx(metrics["test"]["accuracy"])
    path = out / f"model_{variant}.tflite"
    assert row["size_bytes"] == path.stat().st_size
    assert row["compressed_bytes"] == len(
        gzip.compress(path.read_bytes(), compresslevel=9, mtime=0))
  assert metrics["tflite"]["float32"]["agreement"] >= 0.999
  assert metrics["tflite"]["float16"]["agreement"] >= 0.99


def test_metrics_json_layout(quick_run):
  out, _, _ = quick_run
  metrics = json.loads((out / "metrics.json").read_text())
  test = metrics["test"]
  assert set(test) >= {"accuracy", "balanced_accuracy", "top5_accuracy",
                       "macro_f1", "per_class", "confusion_matrix"}
  assert test["balanced_accuracy"] == pytest.approx(np.mean(
      [c["recall"] for c in test["per_class"].values()]))
  labels = artifacts.read_labels(out / "labels.txt")
  assert labels == ["hexagon", "star4", "hollow_square", "hollow_triangle",
                    "semicircle", "flower3"]
  assert list(test["per_class"]) == labels
  assert np.sum(test["confusion_matrix"]) == 600
  assert np.trace(test["confusion_matrix"]) / 600 == pytest.approx(
      test["accuracy"])
  transfer = metrics.get("transfer", metrics)["test"]
  assert metrics["transfer_gain"] == pytest.approx(
      transfer["accuracy"] - metrics["scratch"]["test"]["accuracy"])
  # The run exports the model with the lower validation loss, and says so.
  kept = metrics["kept"]["model"]
  assert ("transfer" in metrics) == (kept == "scratch")
  losses = {"transfer": metrics.get("transfer", metrics)["validation"],
            "scratch": metrics["scratch"]["validation"]}
  assert losses[kept]["best_loss"] == min(
      v["best_loss"] for v in losses.values())
  assert metrics["kept"]["reason"] in (out / "README.md").read_text()
  # The noise check names --keep_phase only for a transfer model that kept
  # its head over phase 2's lower validation loss.
  recipe = json.loads((out / "run.json").read_text())["recipe"]
  assert metrics["noise_check"].get("head_kept_over_phase_2", False) == (
      kept == "transfer" and recipe["kept"] == "head"
      and recipe.get("phase_2_lower_loss", False))


def test_run_json_records_the_run(quick_run):
  out, _, _ = quick_run
  run = json.loads((out / "run.json").read_text())
  assert run["config"]["model"] == "convnet_small"
  assert run["data"]["sizes"] == {"train": 72, "validation": 120, "test": 600}
  assert run["versions"]["tensorflow"] == tf.__version__
  assert {"head_seconds", "finetune_seconds", "scratch_seconds",
          "features_seconds", "probe_seconds", "transfer_check_seconds",
          "trials_seconds", "export_seconds", "parity_seconds",
          "total_seconds"} <= set(run["timings"])
  assert "Where the time went" in (out / "report.html").read_text()
  recipe = run["recipe"]
  # Scratch is the same recipe from random weights: no head phase.
  assert [h["phase"] for h in run["history"]] == ["head", "finetune",
                                                  "scratch"]
  assert recipe["head"]["strength"] > 0 and len(recipe["head"]["grid"]) == 13
  # Given: 1e-3 for batch 32; AdamW at batch 16: x sqrt(1/2); no trials.
  assert recipe["finetune"] == {"learning_rate": pytest.approx(1e-3 * 0.5**0.5),
                                "batchnorm": "frozen", "trial_steps": 0,
                                "trials": [], "skip": False}
  assert run["learning_rates"] == {
      "rule": "square root", "scale": pytest.approx(0.5**0.5),
      "reference_batch": 32, "global_batch": 16, "head": None,
      "finetune_trials": [], "finetune": pytest.approx(1e-3 * 0.5**0.5)}
  assert recipe["kept"] in ("head", "finetune")
  # Phase 2 is kept only where its best had the lower validation loss.
  assert recipe["kept"] == "head" or recipe["phase_2_lower_loss"]
  assert recipe["label_smoothing"] == 0.0  # convnet_small's default


def test_keras_and_saved_model_predict_the_same(quick_run):
  out, _, _ = quick_run
  model = saving.load_keras(str(out / "model.keras"))
  serving = tf.saved_model.load(str(out / "saved_model")).signatures[
      "serving_default"]
  images = np.random.default_rng(0).integers(0, 256, (5, 48, 40, 3), np.uint8)
  expected = model.predict(images.astype("float32"), verbose=0)
  got = serving(images=tf.constant(images))["probabilities"].numpy()
  np.testing.assert_allclose(got, expected, atol=1e-5)


def test_existing_run_is_refused_and_left_intact(quick_run):
  out, _, env = quick_run
  before = (out / "metrics.json").read_bytes()
  result = run_main("--flagfile=flags/base.flags", *TINY, "--weights=none",
                    f"--output_dir={out}", env=env)
  assert result.returncode == 2
  assert "already holds a run" in result.stderr and "--overwrite" in result.stderr
  assert (out / "metrics.json").read_bytes() == before


def test_transfer_from_an_earlier_run_to_an_image_folder(quick_run, tmp_path):
  source, _, env = quick_run
  photos = write_image_folder(tmp_path / "photos", per_class=15, size=24,
                              modes=("RGB", "L", "RGBA"))
  for extra in sorted((tmp_path / "photos" / "dogs").iterdir())[4:]:
    extra.unlink()  # 15 cats, 4 dogs: --class_weight=auto weighs the loss
  (tmp_path / "photos" / "dogs" / "broken.jpg").write_text("not a jpeg")
  out = tmp_path / "out"
  result = run_main("--flagfile=flags/base.flags", *TINY, "--batch_size=4",
                    f"--weights={source}", "--dataset=folder",
                    f"--data_dir={photos}", "--validation_fraction=0.2",
                    "--test_fraction=0.2", "--skip_bad_images",
                    "--export=tflite_int8", f"--output_dir={out}", env=env)
  assert result.returncode == 0, result.stderr[-3000:]
  assert "transferred from" in result.stderr
  assert artifacts.read_labels(out / "labels.txt") == ["cats", "dogs"]
  record = json.loads((out / "run.json").read_text())
  skipped = record["data"]["skipped_images"]
  assert skipped["count"] == 1 and skipped["files"][0].endswith("broken.jpg")
  weighting = record["recipe"]["class_weight"]
  cats, dogs = weighting["counts"]
  assert weighting["weighted"] and cats / dogs >= 3, weighting
  assert weighting["weights"] == pytest.approx(
      [(cats + dogs) / (2 * cats), (cats + dogs) / (2 * dogs)], abs=1e-3)
  assert "--class_weight=auto: the largest class has" in result.stderr
  rows, _ = suspect_labels(out)
  assert all(os.path.isfile(r["example"]) for r in rows)  # the image files
  assert "loss weighted by the inverse of its share" in (
      out / "README.md").read_text()


def test_logit_adjust_shifts_the_trained_head_and_its_exports(quick_run,
                                                              tmp_path):
  """Head-only runs with and without --class_weight=logit_adjust, same
  seed: the adjusted model's classifier bias is the other's plus the
  recorded offsets, its scratch baseline is adjusted too, and its TFLite
  file predicts what it predicts."""
  source, _, env = quick_run
  photos = write_image_folder(tmp_path / "photos", per_class=15, size=24)
  for extra in sorted((tmp_path / "photos" / "dogs").iterdir())[5:]:
    extra.unlink()  # 15 cats, 5 dogs
  biases = {}
  for mode in ("none", "logit_adjust"):
    out = tmp_path / mode
    result = run_main(
        "--flagfile=flags/base.flags", *TINY, "--batch_size=4",
        "--finetune_epochs=0",
        f"--weights={source}", "--dataset=folder", f"--data_dir={photos}",
        "--validation_fraction=0.2", "--test_fraction=0.2",
        f"--class_weight={mode}", "--export=tflite_float32",
        "--compare_scratch", f"--output_dir={out}", env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    model = saving.load_keras(str(out / "model.keras"))
    biases[mode] = model.get_layer("classifier").get_weights()[1]
  record = json.loads((out / "run.json").read_text())["recipe"]
  offsets = record["class_weight"]["logit_offsets"]
  assert offsets[1] > offsets[0]  # dogs, the smaller class, gain
  assert biases["logit_adjust"] - biases["none"] == pytest.approx(
      offsets, abs=1e-4)
  # The scratch baseline's logits are shifted too: the two compare alike.
  assert result.stderr.count(
      "--class_weight=logit_adjust: each class's logit shifted") == 2
  metrics = json.loads((out / "metrics.json").read_text())
  assert metrics["tflite"]["float32"]["agreement"] == 1.0
  assert "logit adjustment" in (out / "README.md").read_text()


def _copy_run(source, target):
  shutil.copytree(source, target, ignore=shutil.ignore_patterns("tensorboard"))
  return target


def test_export_mode_adds_a_variant_and_touches_nothing_else(quick_run,
                                                            tmp_path):
  run = _copy_run(quick_run[0], tmp_path / "run")
  (run / "model_int8.tflite").unlink()
  metrics = json.loads((run / "metrics.json").read_text())
  del metrics["tflite"]["int8"]
  (run / "metrics.json").write_text(json.dumps(metrics))
  for stale in ("README.md", "report.html"):
    (run / stale).write_text("written before the int8 file")
  before = {p: (run / p).read_bytes() for p in (
      "model.keras", "model_float32.tflite", "model_dynamic.tflite",
      "labels.txt", "run.json")}
  result = run_main("--mode=export", f"--run_dir={run}",
                    "--export=tflite_int8", "--calibration_samples=60")
  assert result.returncode == 0, result.stderr[-3000:]
  assert (run / "model_int8.tflite").exists()
  assert {p: (run / p).read_bytes() for p in before} == before
  after = json.loads((run / "metrics.json").read_text())
  assert after["tflite"]["float32"] == metrics["tflite"]["float32"]
  assert after["tflite"]["int8"]["examples"] == 600
  # The report and the model card are written again, int8 included.
  assert "model_int8.tflite" in (run / "README.md").read_text()
  assert "model_int8.tflite" in (run / "report.html").read_text()
  assert not [p for p in os.listdir(run) if p.startswith(".staging")]
  again = run_main("--mode=export", f"--run_dir={run}", "--export=tflite_int8")
  assert again.returncode == 2 and "--overwrite" in again.stderr


def test_accuracy_gate_fails_the_run_and_names_the_variant(
    quick_run, tmp_path, monkeypatch, capsys):
  """A variant made to disagree: its predictions shifted by one class.

  The tiny run's model is near chance, so the test and validation images
  are labelled with the Keras model's own predictions: Keras is then right
  on all of them and the broken variant on almost none.
  """
  import main  # pylint: disable=g-import-not-at-top
  run = _copy_run(quick_run[0], tmp_path / "run")
  predict, parity = litert.ImageRunner.predict, writers.tflite_parity

  def broken(self, images):
    probs = predict(self, images)
    return np.roll(probs, 1, axis=-1) if "dynamic" in self.path else probs

  def parity_on_keras_labels(model, directory, variants, images, labels,
                             **kwargs):
    del labels
    keras_top1 = families.serving_of(model).keras_probabilities(model, images).argmax(-1)
    return parity(model, directory, variants, images, keras_top1, **kwargs)

  validation_accuracy = writers.validation_accuracy

  def validation_on_keras_labels(model, directory, variants, examples, labels,
                                 *, serving):
    del labels  # the gate's split, labelled the same way
    keras_top1 = serving.keras_probabilities(
        model, serving.inputs(examples)).argmax(-1)
    return validation_accuracy(model, directory, variants, examples,
                               keras_top1, serving=serving)

  monkeypatch.setattr(litert.ImageRunner, "predict", broken)
  monkeypatch.setattr(writers, "tflite_parity", parity_on_keras_labels)
  monkeypatch.setattr(writers, "validation_accuracy",
                      validation_on_keras_labels)
  main.FLAGS.unparse_flags()
  main.FLAGS(["main.py", "--mode=export", f"--run_dir={run}",
              "--export=tflite_float32,tflite_dynamic", "--overwrite",
              "--max_accuracy_drop=0.01"])
  with pytest.raises(SystemExit) as exit_info:
    main.main(["main.py"])
  assert exit_info.value.code == 3
  errors = [l for l in capsys.readouterr().err.splitlines()
            if l.startswith("error:")]
  assert len(errors) == 1 and "dynamic" in errors[0], errors
  failing, _, advice = errors[0].partition("inspection:")
  assert "float32" not in failing and "--max_accuracy_drop=0.01" in failing
  assert "validation split" in failing and "within bounds (float32)" in advice
  rows = json.loads((run / "metrics.json").read_text())["tflite"]
  # Recorded for inspection. Not exactly zero: where the quantized model's
  # own top-1 is one class below the Keras one, the shift lands on it.
  assert rows["dynamic"]["agreement"] < 0.05
  assert rows["float32"]["accuracy"] > 0.99


def test_batch_predictions_of_a_folder_and_a_csv(quick_run, tmp_path):
  """A folder (read in chunks: more images than one batch) and a CSV of
  relative paths: predictions.csv in the working directory, in the
  folder's sorted order, the same top-1 as the images one by one; an
  existing predictions.csv is refused before any work."""
  out = quick_run[0]
  images, _ = synthetic.load("synthetic", "test", seed=1)
  count = predict_mode.PREDICT_BATCH + 6
  folder = tmp_path / "photos"
  (folder / "more").mkdir(parents=True)
  names = []
  for i, image in enumerate(images[:count]):
    name = f"{i:03d}.png" if i % 2 else f"more/{i:03d}.png"
    Image.fromarray(image).save(folder / name)
    names.append(name)
  (folder / "list.csv").write_text("path,note\n" + "".join(
      f"{n},x\n" for n in names[:3]))
  work = tmp_path / "work"
  work.mkdir()
  result = run_main("--mode=predict", f"--artifact={out}",
                    f"--inputs={folder}", "--top_k=2", cwd=work)
  assert result.returncode == 0, result.stderr[-2000:]
  rows = list(csv.reader((work / "predictions.csv").open(encoding="utf-8")))
  assert rows[0] == ["input", "label_1", "score_1", "label_2", "score_2"]
  assert [r[0] for r in rows[1:]] == sorted(
      str(folder / n) for n in names)
  assert f"wrote {count} predictions" in result.stdout
  assert "more" in result.stdout.splitlines()[-2]  # the rest not printed
  single = predictors.load(str(out))
  top1 = {str(folder / n): single.labels[single.predict(input_files.read_images(
      [str(folder / n)], single.image_size)).argmax()] for n in names}
  assert all(top1[r[0]] == r[1] for r in rows[1:])
  # Again: refused, the file untouched, one error line.
  before = (work / "predictions.csv").read_bytes()
  again = run_main("--mode=predict", f"--artifact={out}",
                   f"--inputs={folder / 'list.csv'}", cwd=work)
  assert again.returncode != 0 and "Traceback" not in again.stderr
  assert [l for l in again.stderr.splitlines() if l.startswith("error:")]
  assert (work / "predictions.csv").read_bytes() == before
  listed = run_main("--mode=predict", f"--artifact={out}",
                    f"--inputs={folder / 'list.csv'}", "--overwrite",
                    cwd=work)
  assert listed.returncode == 0, listed.stderr[-2000:]
  rows = list(csv.reader((work / "predictions.csv").open(encoding="utf-8")))
  assert [r[0] for r in rows[1:]] == [
      os.path.join(str(folder), n) for n in names[:3]]


def test_predict_gives_one_top1_across_artifact_kinds(quick_run, tmp_path):
  out = quick_run[0]
  images, _ = synthetic.load("synthetic", "test", seed=0)
  reference = predictors.load(str(out)).predict(images)
  ranked = np.sort(reference, -1)
  margin = ranked[:, -1] - ranked[:, -2]
  picks = np.argsort(-margin)[:8]  # the clearest decisions of a tiny model
  paths = []
  for i in picks:
    paths.append(str(tmp_path / f"{i}.png"))  # lossless: the same pixels
    Image.fromarray(images[i]).save(paths[-1])
  names = np.array(artifacts.read_labels(out / "labels.txt"))
  expected = names[reference[picks].argmax(-1)]
  # Quantized variants may flip a close call of a barely trained model (or
  # tie two classes in int8's uint8 output): they must give what the parity
  # check measured for them, on the same pixels. The others must agree with
  # Keras.
  quantized = {
      v: names[litert.ImageRunner(str(out / f"model_{v}.tflite")).predict(
          images[picks]).argmax(-1)] for v in ("dynamic", "int8")}
  for artifact, want in (("", expected), ("model.keras", expected),
                         ("saved_model", expected),
                         ("model_float32.tflite", expected),
                         ("model_float16.tflite", expected),
                         ("model_dynamic.tflite", quantized["dynamic"]),
                         ("model_int8.tflite", quantized["int8"])):
    results, text = predict_mode.predict_files(str(out / artifact), paths,
                                             top_k=3)
    top1 = np.array([r[0][0] for _, r in results])
    assert (top1 == want).all(), (artifact, text)
    assert all(len(r) == 3 for _, r in results)
  result = run_main("--mode=predict", f"--artifact={out}/model_int8.tflite",
                    f"--inputs={paths[0]},{paths[1]}", "--top_k=2")
  assert result.returncode == 0, result.stderr[-2000:]
  assert result.stdout.count(".png") == 2
  assert len(result.stdout.strip().splitlines()) == 6


def test_evaluate_mode_scores_an_artifact(quick_run):
  out = quick_run[0]
  metrics = json.loads((out / "metrics.json").read_text())
  result = run_main("--mode=evaluate", f"--artifact={out}/model_float32.tflite",
                    "--dataset=synthetic")
  assert result.returncode == 0, result.stderr[-2000:]
  line = result.stdout.splitlines()[0]
  assert line.startswith("test accuracy ")
  # The tiny model is near chance: near-ties may fall either way between
  # two interpreter runs, so a few of 600 images may differ.
  assert float(line.split()[2]) == pytest.approx(
      metrics["tflite"]["float32"]["accuracy"], abs=0.01)


def _artifact_error_args(tmp_path, quick_run):
  (tmp_path / "bad.png").write_bytes(b"\x89PNG but not really")
  (tmp_path / "fake.tflite").write_bytes(b"not a model")
  (tmp_path / "emptyrun").mkdir()
  good = tmp_path / "good.png"
  Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(good)
  out = quick_run[0]
  return {
      "unreadable_image": (["--mode=predict", f"--artifact={out}",
                            f"--inputs={tmp_path}/bad.png"],
                           "cannot decode .*bad.png"),
      "not_tflite": (["--mode=predict", f"--artifact={tmp_path}/fake.tflite",
                      f"--inputs={good}"], "is not a TFLite model"),
      "run_dir_without_model": (["--mode=export",
                                 f"--run_dir={tmp_path}/emptyrun"],
                                "missing model.keras"),
      "artifact_dir_without_model": (["--mode=predict",
                                      f"--artifact={tmp_path}/emptyrun",
                                      f"--inputs={good}"],
                                     "without model.keras"),
      "unknown_export": (["--export=tflite_int4"], "unknown format"),
  }


@pytest.mark.parametrize("case", ["unreadable_image", "not_tflite",
                                  "run_dir_without_model",
                                  "artifact_dir_without_model",
                                  "unknown_export"])
def test_artifact_errors_are_one_line_exit_2(case, tmp_path, quick_run):
  args, message = _artifact_error_args(tmp_path, quick_run)[case]
  result = run_main(*args)
  assert result.returncode == 2, result.stderr[-2000:]
  assert "Traceback" not in result.stderr
  errors = [l for l in result.stderr.splitlines() if l.startswith("error:")]
  assert len(errors) == 1 and re.search(message, errors[0]), errors
  assert os.listdir(tmp_path / "emptyrun") == []


def _offline():
  # A proxy on a closed local port: every download fails at once.
  return {"HTTPS_PROXY": "http://127.0.0.1:9", "HTTP_PROXY":
          "http://127.0.0.1:9", "https_proxy": "http://127.0.0.1:9"}


TEXT = ["--model=bert_micro", "--dataset=synthetic_text", "--weights=none"]
ERROR_CASES = {
    "unknown_model": (["--model=resnet05"], "did you mean resnet50"),
    "unknown_dataset": (["--dataset=cifar01", "--weights=none"],
                        "did you mean .*cifar10"),
    "offline_imagenet": (["--model=mobilenetv2", "--image_size=32",
                          "--weights=imagenet"], "seems offline"),
    "missing_folder": (["--dataset=folder", "--data_dir={tmp}/nope",
                        "--weights=none"], "is not a folder"),
    "empty_folder": (["--dataset=folder", "--data_dir={tmp}/empty",
                      "--weights=none"], "no class subfolders"),
    "class_without_images": (["--dataset=folder", "--data_dir={tmp}/photos",
                              "--weights=none"], "has no images"),
    "unwritable_output": (["--weights=none", "--output_dir={tmp}/file.txt/run"],
                          "cannot write to --output_dir"),
    "missing_weights_file": (["--weights={tmp}/nope.weights.h5"],
                             "no such file"),
    "bad_flag_value": (["--batch_size=0"], "--batch_size must be positive"),
    "unparsable_flag": (["--head_epochs=two"], "flag --head_epochs=two"),
    "unknown_flag": (["--learning_rate=0.1"], "Unknown command line flag"),
    "batch_larger_than_data": (["--weights=none", "--batch_size=500"],
                               "--batch_size=500 is larger than the 72"),
    "tpu_without_address": (["--strategy=tpu"], "--strategy=tpu needs --tpu"),
    "bad_profile_steps": (["--profile_steps=5"], "--profile_steps='5'"),
    "unfreeze_too_deep": (["--weights=none", "--unfreeze=500"],
                          "--unfreeze=500 exceeds"),
    "prune_without_phase_2": (["--prune_sparsity=0.5", "--finetune_epochs=0"],
                              "--prune_sparsity prunes during phase 2"),
    "prune_block_zero": (["--prune_sparsity=0.5", "--prune_block=0"],
                         "--prune_block must be 1 or more"),
    "agreement_above_one": (["--min_int8_agreement=97"],
                            r"--min_int8_agreement is a share .* in \[0, 1\]"),
    # Image-only flags for a text model.
    "text_augment": (TEXT + ["--augment=randaugment"],
                     "--augment=randaugment transforms images"),
    "text_cache_views": (TEXT + ["--cache_views=2"],
                         "--cache_views=2 adds augmented image views"),
    "text_int8": (TEXT + ["--export=saved_model,tflite_int8"],
                  "tflite_int8 .* use tflite_dynamic"),
}


@pytest.mark.parametrize("case", sorted(ERROR_CASES))
def test_user_errors_are_one_line_exit_2_and_write_nothing(case, tmp_path):
  args, message = ERROR_CASES[case]
  (tmp_path / "empty").mkdir()
  write_image_folder(tmp_path / "photos")
  (tmp_path / "photos" / "birds").mkdir()
  (tmp_path / "file.txt").write_text("a file, not a folder")
  out = tmp_path / "out"
  args = [a.replace("{tmp}", str(tmp_path)) for a in args]
  if not any(a.startswith("--output_dir") for a in args):
    args.append(f"--output_dir={out}")
  result = run_main("--model=convnet_small", "--dataset=synthetic", *args,
                    env=_offline())
  assert result.returncode == 2, result.stderr[-2000:]
  assert "Traceback" not in result.stderr
  errors = [l for l in result.stderr.splitlines() if l.startswith("error:")]
  assert len(errors) == 1 and re.search(message, errors[0]), (
      result.stderr[-2000:])
  leftovers = [p for p in artifacts.RUN_ARTIFACTS if (out / p).exists()]
  assert not leftovers


def test_a_bad_flag_value_is_reported_before_tensorflow_is_imported(tmp_path):
  """Values `Config.validate` refuses fail at once: main.py checks them
  before importing TensorFlow (several seconds on a CPU)."""
  probe = (
      "import runpy, sys\n"
      f"sys.argv = ['main.py', '--batch_size=0', '--output_dir={tmp_path}/o']\n"
      "try:\n"
      f"  runpy.run_path({os.path.join(REPO, 'main.py')!r}, "
      "run_name='__main__')\n"
      "except SystemExit as e:\n"
      "  print('exit', e.code, 'tensorflow' in sys.modules)\n")
  result = subprocess.run([sys.executable, "-c", probe], cwd=REPO,
                          capture_output=True, text=True, timeout=120,
                          check=False)
  assert result.stdout.split() == ["exit", "2", "False"], result.stderr
  assert result.stderr.strip() == "error: --batch_size must be positive, got 0"
  assert not (tmp_path / "o").exists()


def test_report_model_card_and_plots(quick_run):
  out = quick_run[0]
  metrics = json.loads((out / "metrics.json").read_text())
  report = (out / "report.html").read_text()
  # Self-contained: the plots, and the top losses' thumbnails if any.
  assert report.count("data:image/png;base64,") == 2 + (
      out / "top_losses.png").exists()
  assert f"{100 * metrics['test']['accuracy']:.1f}%" in report
  assert "Transfer versus from scratch" in report
  assert "model_int8.tflite" in report and "agreement with Keras" in report
  assert "python main.py \\\n    --model=convnet_small" in report
  # The card's Reproduce command, one flag a line: the run's settings, to a
  # new directory beside the run.
  card = (out / "README.md").read_text()
  command = card.split("## Reproduce")[1].split("```")[1].strip()
  words = shlex.split(command.replace(" \\\n", " "))
  assert words[:2] == ["python", "main.py"]
  given = dict(w[2:].split("=", 1) if "=" in w else (w[2:], "True")
               for w in words[2:])
  recorded = json.loads((out / "run.json").read_text())["config"]
  assert given.pop("output_dir") == f"{out}_rerun"
  assert not os.path.exists(f"{out}_rerun")
  for name, value in given.items():
    assert str(recorded[name]) == value, name
  for name in ("learning_curves.png", "confusion_matrix.png"):
    with Image.open(out / name) as image:
      assert image.format == "PNG" and image.size[0] > 300
  card = (out / "README.md").read_text()
  assert "hexagon" in card and "model_int8.tflite" in card
  assert "## Limitations" in card
  assert "Transfer check: pretrained against random features" in report
  noise = metrics["noise_check"]
  assert noise["examples"] == metrics["tflite"]["int8"]["examples"]
  assert "Noise check: the Keras model keeps its class on" in report
  assert ("Fragile to pixel noise" in card) == noise["fragile"]


def test_report_and_card_warn_of_a_model_faint_noise_overturns(quick_run):
  from tl_keras.reporting import model_card  # pylint: disable=g-import-not-at-top
  from tl_keras.reporting import report  # pylint: disable=g-import-not-at-top
  out = quick_run[0]
  record = json.loads((out / "run.json").read_text())
  metrics = json.loads((out / "metrics.json").read_text())
  metrics["noise_check"] = {"levels": 1.0, "agreement": 0.8, "examples": 50,
                            "flipped": 10, "fragile": True}
  images = {"learning_curves.png": b"", "confusion_matrix.png": b""}
  page = report.html_report(record, metrics, images)
  assert "<strong>Warning:</strong> Noise check: the Keras model keeps its " \
      "class on 80.0% of 50 test images" in page
  card = model_card.model_card(record, metrics)
  assert "- Fragile to pixel noise: the Keras model keeps its class on " \
      "80.0%" in card


def test_card_describes_the_scratch_model_when_it_is_exported(quick_run):
  """--compare_scratch exported the baseline: the card says how that model
  was trained, not the transfer recipe's choices."""
  from tl_keras.reporting import model_card  # pylint: disable=g-import-not-at-top
  out = quick_run[0]
  record = json.loads((out / "run.json").read_text())
  metrics = json.loads((out / "metrics.json").read_text())
  metrics["kept"] = {"model": "scratch", "reason": "the model trained from "
                     "scratch is exported: validation loss ..."}
  card = model_card.model_card(record, metrics)
  assert "trained by tl_keras from random initialization" in card
  assert "two-phase transfer recipe" not in card
  metrics["kept"]["model"] = "transfer"
  assert "two-phase transfer recipe" in model_card.model_card(record, metrics)


def test_report_and_card_say_when_the_transfer_check_set_weights_aside(
    quick_run):
  """The run's own record, as the check leaves it when it fires."""
  from tl_keras.reporting import model_card  # pylint: disable=g-import-not-at-top
  from tl_keras.reporting import report  # pylint: disable=g-import-not-at-top
  from tl_keras.training import transfer_check  # pylint: disable=g-import-not-at-top
  out = quick_run[0]
  record = json.loads((out / "run.json").read_text())
  metrics = json.loads((out / "metrics.json").read_text())
  start = record["recipe"]["start"]  # the check ran in the real run
  assert {"pretrained", "random", "gain", "standard_error"} <= set(start)
  start.update(weights="random", head=record["recipe"].pop("head"))
  metrics["negative_transfer"] = transfer_check.warning(start)
  metrics["scratch"] = {"test": metrics["test"],
                        "validation": metrics["validation"],
                        "same_as_run": True}
  metrics.pop("kept", None)  # the run is its own baseline: nothing to pick
  images = {"learning_curves.png": b"", "confusion_matrix.png": b""}
  page = report.html_report(record, metrics, images)
  assert "Warning: negative transfer: a linear probe" in page
  assert "its own from-scratch baseline" in page
  assert "trained from random initialization." in page
  card = model_card.model_card(record, metrics)
  assert "balanced accuracy" in card and "balanced accuracy" in page
  assert "the pretrained weights set aside" in card
  assert "own from-scratch baseline" in card
  assert "**Warning: negative transfer" in card


def test_tensorboard_tells_the_story(quick_run):
  from tensorboard.backend.event_processing import event_accumulator as ea  # pylint: disable=g-import-not-at-top
  out = quick_run[0]

  def tags(sub):
    acc = ea.EventAccumulator(str(out / "tensorboard" / sub),
                              size_guidance={ea.TENSORS: 0})
    acc.Reload()
    return acc

  validation = tags("validation")
  run = json.loads((out / "run.json").read_text())
  evaluated = [h for h in run["history"] if h["phase"] != "scratch"]
  for name in ("confusion_matrix", "predictions"):
    events = validation.Tensors(name)
    assert len(events) == len(evaluated)  # one per validation: head, ...
    png = events[-1].tensor_proto.string_val[2]
    assert png.startswith(b"\x89PNG")
  train = tags("train")
  assert {"loss", "accuracy", "learning_rate", "phase"} <= set(
      train.Tags()["tensors"])
  steps = [e.step for e in train.Tensors("phase")]
  assert steps == sorted(steps)  # one step axis across phases
  hparams = tags("hparams")
  assert "_hparams_/session_start_info" in hparams.Tags()["tensors"]
  assert "test_accuracy" in hparams.Tags()["tensors"]


def test_output_holds_no_tensorflow_internals_and_each_table_once(quick_run):
  _, result, _ = quick_run
  both = result.stdout + result.stderr
  for noise in ("cuInit", "InitializeLog", "Sharding callback",
                "Assets written", "fully_quantize", "XNNPACK delegate"):
    assert noise not in both, noise
  assert both.count("agreement       size") == 1  # the parity table
  assert both.count("precision    recall") == 1  # the per-class table


def test_console_filter_drops_known_notes_and_keeps_the_rest():
  from tl_keras import console  # pylint: disable=g-import-not-at-top
  lines = [
      "WARNING: All log messages before absl::InitializeLog() is called are "
      "written to STDERR",
      "I0000 00:00:1.2 1 cpu_feature_guard.cc:210] This TensorFlow binary is "
      "optimized to use available CPU instructions.",
      "To enable the following instructions: AVX2 FMA, rebuild TensorFlow.",
      "E0000 00:00:1.3 1 cuda_platform.cc:52] failed call to cuInit: ...",
      "E1202 10:00:00.1 1 some_op.cc:12] a real error",
      "fully_quantize: 0, inference_type: 6",
      "Traceback (most recent call last):",
      "  File \"x.py\", line 1",
  ]
  assert console.without_noise(lines) == lines[4:5] + lines[6:]


def test_console_passes_native_stderr_live_without_the_noise(capfd):
  from tl_keras import console  # pylint: disable=g-import-not-at-top
  capfd.readouterr()
  with console.filtered_stderr():
    os.write(2, b"I0000 00:00:1.2 1 port.cc:153] oneDNN custom operations\n")
    os.write(2, b"E1202 10:00:00.1 1 some_op.cc:12] a real error\n")
    seen = ""
    for _ in range(100):  # it comes out while the block still runs
      seen += capfd.readouterr().err
      if seen:
        break
      time.sleep(0.02)
  seen += capfd.readouterr().err
  assert seen == "E1202 10:00:00.1 1 some_op.cc:12] a real error\n"


def test_console_heartbeat_logs_long_steps_only(caplog):
  from tl_keras import console  # pylint: disable=g-import-not-at-top
  caplog.set_level(logging.INFO)
  with console.Heartbeat("quick step", first=5.0):
    pass
  with console.Heartbeat("long step", total=10, unit="batches", first=0.05,
                         every=0.05) as beat:
    beat.done = 3
    time.sleep(0.3)
  messages = [r.getMessage() for r in caplog.records]
  assert not any("quick step" in m for m in messages)
  assert any(re.fullmatch(r"long step: \d+ s so far, 3 of 10 batches", m)
             for m in messages), messages
  count = len(messages)
  time.sleep(0.15)
  assert len(caplog.records) == count  # it stopped with the step


def test_list_models_and_line_based_progress(quick_run):
  from tl_keras.models import applications  # pylint: disable=g-import-not-at-top
  result = run_main("--list_models")
  assert result.returncode == 0
  lines = result.stdout.splitlines()
  listed = [line.split()[0] for line in lines if line.startswith("  ")]
  assert listed[:len(applications.REGISTRY)] == list(applications.REGISTRY)
  assert {"bert_micro", "bert_base_en_uncased", "bert_tiny_en_uncased"} <= set(
      listed[len(applications.REGISTRY):])
  # Grouped by family, one header each, and the size column aligned.
  assert "image: efficientnet" in lines and "image: convnext" in lines
  columns = {line.index("px") for line in lines if line.endswith("M")
             and "px" in line}
  assert len(columns) == 1
  short = run_main("--help")
  assert short.returncode == 0 and short.stderr == ""
  for group in ("model", "data", "recipe", "export", "run"):
    assert f"\n{group} flags:\n" in short.stdout, group
  assert "  --model " in short.stdout and "  --unfreeze " in short.stdout
  # The installed command is main.py, from any directory.
  command = os.path.join(os.path.dirname(sys.executable), "tl-keras")
  installed = subprocess.run([command, "--help"], cwd="/", capture_output=True,
                             text=True, timeout=120, check=False)
  assert installed.returncode == 0 and installed.stdout == short.stdout
  helpfull = run_main("--helpfull").stdout
  for group in ("model", "data", "recipe", "export", "run"):
    assert f"\n{group} flags:\n" in helpfull, group
  log = quick_run[1].stderr
  assert "\r" not in log and "\b" not in log  # not a TTY: whole lines
  assert "head: linear probe on 128-wide standardized features" in log
  assert "finetune epoch 1/1" in log


@pytest.mark.skipif(not shutil.which("chromium"),
                    reason="Debian's chromium is not installed")
def test_report_renders_in_headless_chromium(quick_run, tmp_path):
  shot = tmp_path / "report.png"
  result = subprocess.run(
      ["chromium", "--headless", "--no-sandbox", "--disable-gpu",
       "--disable-background-networking", "--disable-component-update",
       "--disable-sync", "--no-first-run", f"--user-data-dir={tmp_path}",
       "--hide-scrollbars", "--window-size=1100,2400",
       f"--screenshot={shot}", f"file://{quick_run[0]}/report.html"],
      capture_output=True, text=True, timeout=120, check=False)
  assert result.returncode == 0, result.stderr[-2000:]
  with Image.open(shot) as image:
    pixels = np.asarray(image.convert("L"))
  # Text, tables and the two plots: many rows hold dark pixels.
  inked_rows = (pixels < 128).any(axis=1).mean()
  assert 0.2 < inked_rows < 0.95
