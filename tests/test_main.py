"""main.py as a user runs it: a subprocess, real flags, real artifacts."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from tests.conftest import REPO, write_image_folder
from tl_keras import artifacts
from tl_keras import export

TINY = ["--model=convnet_small", "--batch_size=16", "--head_epochs=1",
        "--finetune_epochs=1", "--unfreeze=all", "--log_every_steps=1"]


def run_main(*args, env=None, timeout=600):
  full_env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", **(env or {})}
  return subprocess.run([sys.executable, os.path.join(REPO, "main.py"), *args],
                        cwd=REPO, env=full_env, capture_output=True,
                        text=True, timeout=timeout, check=False)


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
               "run.json", "tensorboard"):
    assert (out / name).exists(), name
  assert not [p for p in os.listdir(out) if p.startswith(".staging")]
  assert "test accuracy" in result.stdout and "transfer gain" in result.stdout


def test_metrics_json_layout(quick_run):
  out, _, _ = quick_run
  metrics = json.loads((out / "metrics.json").read_text())
  test = metrics["test"]
  assert set(test) >= {"accuracy", "top5_accuracy", "macro_f1", "per_class",
                       "confusion_matrix"}
  labels = artifacts.read_labels(out / "labels.txt")
  assert labels == ["hexagon", "star4", "hollow_square", "hollow_triangle",
                    "semicircle", "flower3"]
  assert list(test["per_class"]) == labels
  assert np.sum(test["confusion_matrix"]) == 600
  assert np.trace(test["confusion_matrix"]) / 600 == pytest.approx(
      test["accuracy"])
  assert metrics["transfer_gain"] == pytest.approx(
      test["accuracy"] - metrics["scratch"]["test"]["accuracy"])


def test_run_json_records_the_run(quick_run):
  out, _, _ = quick_run
  run = json.loads((out / "run.json").read_text())
  assert run["config"]["model"] == "convnet_small"
  assert run["data"]["sizes"] == {"train": 72, "validation": 120, "test": 600}
  assert run["versions"]["tensorflow"] == tf.__version__
  assert {"head_seconds", "finetune_seconds", "scratch_seconds",
          "total_seconds"} <= set(run["timings"])
  assert [h["phase"] for h in run["history"]] == ["head", "finetune",
                                                  "scratch", "scratch"]


def test_keras_and_saved_model_predict_the_same(quick_run):
  out, _, _ = quick_run
  model = export.load_keras(str(out / "model.keras"))
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
  photos = write_image_folder(tmp_path / "photos", per_class=6, size=24,
                              modes=("RGB", "L", "RGBA"))
  out = tmp_path / "out"
  result = run_main("--flagfile=flags/base.flags", *TINY,
                    f"--weights={source}", "--dataset=folder",
                    f"--data_dir={photos}", "--validation_fraction=0.2",
                    "--test_fraction=0.2", f"--output_dir={out}", env=env)
  assert result.returncode == 0, result.stderr[-3000:]
  assert "transferred from" in result.stderr
  assert artifacts.read_labels(out / "labels.txt") == ["cats", "dogs"]


def _offline():
  # A proxy on a closed local port: every download fails at once.
  return {"HTTPS_PROXY": "http://127.0.0.1:9", "HTTP_PROXY":
          "http://127.0.0.1:9", "https_proxy": "http://127.0.0.1:9"}


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
    "unfreeze_too_deep": (["--weights=none", "--unfreeze=500"],
                          "--unfreeze=500 exceeds"),
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
  assert len(errors) == 1 and pytest.importorskip("re").search(
      message, errors[0]), result.stderr[-2000:]
  leftovers = [p for p in artifacts.RUN_ARTIFACTS if (out / p).exists()]
  assert not leftovers
