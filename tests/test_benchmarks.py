"""Every benchmark script runs: each in its smallest setting, as a user would.

These check that the scripts work and print what they promise, not their
figures (those live in the README, from full runs).
"""

import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import REPO
from tl_keras.export import tflite
from tl_keras import families
from tl_keras.models import applications


def _run(script, *args, env=None):
  """Runs benchmarks/`script`; returns its JSON lines."""
  result = subprocess.run(
      [sys.executable, os.path.join(REPO, "benchmarks", script), *args],
      cwd=REPO, capture_output=True, text=True, timeout=600, check=False,
      env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", **(env or {})})
  assert result.returncode == 0, result.stderr[-3000:]
  return [json.loads(line) for line in result.stdout.splitlines()
          if line.startswith("{")]


def test_head_phase():
  (row,) = _run("head_phase.py", "--smoke")
  assert row["benchmark"] == "head_phase" and row["epochs"] == 1
  assert row["speedup"] > 0 and row["probe_seconds"] > 0
  assert 0 <= row["best_validation_accuracy"]["probe"] <= 1


def test_head_phase_probe_table():
  (row,) = _run("head_phase.py", "--probe_table", "--smoke")
  assert row["table"] == "probe" and row["n"] == 200
  assert row["seconds"]["probe"] > 0 and row["seconds"]["sklearn"] > 0
  assert 0 <= row["validation_accuracy"]["probe"] <= 1


@pytest.mark.slow
def test_head_phase_whole_process():
  (row,) = _run("head_phase.py", "--whole_process", "--smoke")
  assert row["seconds"]["cached"] > 0 and row["speedup"] > 0


def test_pipeline():
  (row,) = _run("pipeline.py", "--smoke")
  assert row["pipeline_images_per_second"] > 0
  assert row["step_images_per_second"] > 0
  assert row["files"] > 40  # the JPEGs it wrote, read as a folder
  assert row["files_cold_images_per_second"] > 0
  assert row["files_cached_images_per_second"] > 0


@pytest.mark.slow
def test_recipe_vs_baseline():
  """30 s: slow (`make bench-quick` runs every benchmark's smoke version)."""
  (row,) = _run("recipe_vs_baseline.py", "--smoke")
  assert set(row["seconds"]) == {"baseline", "fit_recipe_optimizer",
                                 "recipe", "recipe_every_epoch"}
  assert all(0 <= a <= 1 for a in row["test_accuracy"].values())


def test_tflite_latency(tmp_path):
  model = applications.build_classifier("convnet_small", 2, weights=None)
  tflite.export(model, "float32", str(tmp_path / "model_float32.tflite"),
                serving=families.serving_of(model), class_names=["a", "b"])
  (row,) = _run("tflite_latency.py", str(tmp_path), "--threads=1",
                "--runs=3")
  assert row["file"] == "model_float32.tflite" and row["median_ms"] > 0


def test_gpu_throughput_says_when_there_is_no_gpu():
  rows = _run("gpu_throughput.py", "--steps=1", "--batch_size=2")
  assert rows and all(r["benchmark"] == "gpu_throughput" for r in rows)


@pytest.mark.slow
def test_transfer_suite(tmp_path):
  """100 s: slow."""
  rows = _run("transfer_suite.py", "--smoke", f"--workdir={tmp_path}")
  results = [r for r in rows if "seed" in r]
  (summary,) = [r["summary"] for r in rows if "summary" in r]
  assert len(results) == 1 and summary["task"] == "digits"
  for arm in ("default", "probe", "scratch", "tuned"):
    assert 0 <= results[0][arm] <= 1
  assert results[0]["default_seconds"] > 0


@pytest.mark.slow
def test_int8_families(tmp_path):
  """35 s: slow."""
  (row,) = _run("int8_families.py", "--smoke", f"--workdir={tmp_path}")
  assert row["family"] == "convnet_small" and row["exit_code"] in (0, 3)
  assert 0 <= row["int8_before"] <= 1 and 0 <= row["int8_after"] <= 1
  assert row["float_kind"] is None or row["float_layers"] > 0
  assert row["size_bytes"]["int8"] < row["size_bytes"]["float32"]
  for latency in (row["latency_ms"], row["latency_ms_untrained"]):
    assert all(ms > 0 for v in ("float32", "int8") for ms in
               latency[v].values())


def _zeros_in_weights(path):
  """Zero values in a .tflite file's constant tensors of rank 2 or more."""
  from ai_edge_litert import interpreter as litert_interpreter  # pylint: disable=g-import-not-at-top
  interpreter = litert_interpreter.Interpreter(model_path=str(path))
  interpreter.allocate_tensors()
  zeros = 0
  for tensor in interpreter.get_tensor_details():
    if len(tensor["shape"]) < 2:
      continue
    try:
      zeros += int(np.sum(interpreter.get_tensor(tensor["index"]) == 0))
    except ValueError:  # not a constant: no data before invoke
      pass
  return zeros


def test_compression_and_pruned_zeros_in_every_export(tmp_path):
  rows = _run("compression.py", "--smoke", f"--workdir={tmp_path}")
  files = [r for r in rows if "prune_sparsity" in r]
  assert {(r["prune_sparsity"], r["variant"]) for r in files} == {
      (s, v) for s in (0.0, 0.5) for v in ("float32", "int8")}
  for row in files:
    assert row["measured_sparsity"] == pytest.approx(row["prune_sparsity"],
                                                     abs=1e-3)
    assert 0 < row["compressed_bytes"] < row["size_bytes"]
  (ratio,) = [r for r in rows if r.get("variant") == "float32"
              and "gzipped_vs_unpruned" in r]
  assert ratio["gzipped_vs_unpruned"]["0.5"] < 1  # zeros compress
  # The pruned run: the sparsity measured in the model, and its zeros kept
  # in every file (int8 may round more small weights to 0).
  pruned = json.loads((tmp_path / "s0.5" / "metrics.json").read_text())[
      "pruning"]
  assert pruned["target"] == 0.5 and pruned["kernels"] == 5
  assert pruned["method"] == "oneshot"
  # Each file's row holds its unpruned counterpart's (the network before
  # pruning, converted alike), whose zeros are only the weights' own.
  rows = json.loads((tmp_path / "s0.5" / "metrics.json").read_text())[
      "tflite"]
  for variant in ("float32", "int8"):
    before = rows[variant]["unpruned"]
    assert before["size_bytes"] == rows[variant]["size_bytes"]
    assert before["compressed_bytes"] > rows[variant]["compressed_bytes"]
  assert sorted(p.name for p in (tmp_path / "s0.5").glob("*.tflite")) == [
      "model_float32.tflite", "model_int8.tflite"]  # the unpruned not kept
  for variant in ("float32", "int8"):
    assert _zeros_in_weights(tmp_path / "s0.5" / f"model_{variant}.tflite") >= (
        pruned["zeros"]), variant


def _real_weights(task):
  rows = _run("real_weights.py", "--smoke", f"--tasks={task}")
  return {r["arm"]: r for r in rows}


@pytest.mark.slow
def test_real_weights_on_images():
  """Lite0 through every arm on tiny budgets: the run, the probe, Model
  Maker's recipe, the exports in MediaPipe, pruning (3 minutes: slow)."""
  arms = _real_weights("digits")
  assert set(arms) == {"task", "exports", "pruning"}
  row = arms["task"]
  assert row["model"] == "efficientnet_lite0" and not row["kept_aside"]
  for arm in ("default", "transfer", "scratch", "probe", "modelmaker"):
    assert 0 <= row[arm] <= 1, arm
  assert row["kept"] in ("transfer", "scratch")
  assert row["phase_kept"] in ("head", "finetune")
  lite = arms["exports"]["tflite"]
  assert set(lite) == {"float32", "int8"}
  assert 0 <= lite["int8"]["mediapipe_agreement"] <= 1
  assert arms["pruning"]["sparsity"] > 0.4
  assert arms["pruning"]["gzipped_float32"] < arms["pruning"][
      "unpruned_gzipped_float32"]


@pytest.mark.slow
def test_real_weights_on_text():
  arms = _real_weights("docstrings")
  assert set(arms) == {"task", "exports"}
  row = arms["task"]
  assert row["model"] == "all_minilm_l6_v2"
  assert row["phase_kept"] in ("head", "finetune")
  for arm in ("default", "transfer", "scratch", "probe", "tfidf"):
    assert 0 <= row[arm] <= 1, arm
  assert 0 <= arms["exports"]["tflite"]["float32"]["mediapipe_agreement"] <= 1


def test_real_weights_head_only_exports_take_image_tasks():
  result = subprocess.run(
      [sys.executable, os.path.join(REPO, "benchmarks", "real_weights.py"),
       "--exports_image_size=224", "--exports_tasks=digits,docstrings"],
      cwd=REPO, capture_output=True, text=True, timeout=600, check=False)
  assert result.returncode != 0
  assert result.stderr.strip().splitlines()[-1] == (
      "error: --exports_tasks takes image tasks (digits, lfw_faces), not "
      "docstrings")


@pytest.mark.slow
def test_real_weights_fine_tuned_exports_with_keep_phase():
  """A default run's export rows with --keep_phase=lowest_loss (1 min)."""
  (row,) = _run("real_weights.py", "--smoke", "--exports_image_size=224",
                "--exports_finetune", "--exports_keep_phase=lowest_loss")
  assert row["arm"] == "exports_fine_tuned_lowest_loss"
  assert row["keep_phase"] == "lowest_loss"
  assert row["kept"] in ("head", "finetune")
  assert set(row["tflite"]) == {"float32", "int8"}


@pytest.mark.slow
def test_real_weights_head_only_exports():
  """The head-only export rows (224 px in the README; 32 px here)."""
  (row,) = _run("real_weights.py", "--smoke", "--exports_image_size=224",
                "--exports_seeds=7")
  assert row["arm"] == "exports_head_only" and row["image_size"] == 32
  assert row["seed"] == 7
  assert set(row["tflite"]) == {"float32", "int8"}
  noise = row["noise_check"]
  assert noise["levels"] == 1.0 and 0 <= noise["agreement"] <= 1
  assert noise["examples"] == row["tflite"]["float32"]["examples"]
  for variant in ("float32", "int8"):
    assert 0 <= row["tflite"][variant]["mediapipe_agreement"] <= 1
    assert row["tflite"][variant]["latency_ms_1_thread"] > 0


@pytest.mark.slow
def test_imbalance_benchmark(tmp_path):
  """auto, logit_adjust and none on a long-tailed folder (2 digits, 20 and
  4 training images here), and the balanced reference on as many images
  (3 min: slow)."""
  rows = _run("imbalance.py", "--smoke", f"--workdir={tmp_path}")
  auto, adjust, none, balanced, summary = rows
  assert [r["arm"] for r in rows] == ["auto", "logit_adjust", "none",
                                      "balanced_data", "summary"]
  assert auto["weighting"]["weighted"] and not none["weighting"]["weighted"]
  assert not adjust["weighting"]["weighted"]
  assert adjust["weighting"]["logit_offsets"][1] > 0
  for row in (auto, adjust, none):
    assert row["weighting"]["counts"] == [20, 4]
  assert balanced["weighting"]["counts"] == [12, 12]
  assert not balanced["weighting"]["weighted"]
  for row in (auto, adjust, none, balanced):
    assert row["sizes"] == {"train": 24, "validation": 6, "test": 8}
    assert row["balanced_accuracy"] == pytest.approx(
        sum(row["recall"]) / len(row["recall"]))
  assert summary["macro_f1_gain_auto"]["mean"] == pytest.approx(
      auto["macro_f1"] - none["macro_f1"])
  assert summary["macro_f1_gain_logit_adjust"]["mean"] == pytest.approx(
      adjust["macro_f1"] - none["macro_f1"])
  assert summary["macro_f1_gain_balanced_data"]["mean"] == pytest.approx(
      balanced["macro_f1"] - none["macro_f1"])


def _csv_counts(folder):
  """{(split, label): rows} of folder/{train,validation,test}.csv, and the
  test rows."""
  counts, test = {}, []
  for split in ("train", "validation", "test"):
    with open(os.path.join(folder, f"{split}.csv"), encoding="utf-8",
              newline="") as f:
      for row in csv.DictReader(f):
        counts[split, row["label"]] = counts.get((split, row["label"]), 0) + 1
        if split == "test":
          test.append((row["text"], row["label"]))
  return counts, test


def test_imbalance_text_tables_cut_a_long_tail(tmp_path):
  """The docstrings task's tables: a long tail cut per class with its
  validation share, a balanced test split, and the balanced reference on
  the same test rows."""
  sys.path.insert(0, os.path.join(REPO, "benchmarks"))
  import imbalance  # pylint: disable=g-import-not-at-top
  counts, test = _csv_counts(imbalance.write_tables(
      str(tmp_path / "tail"), 0, (20, 4), 4))
  assert counts == {("train", "turtle"): 20, ("train", "mailbox"): 4,
                    ("validation", "turtle"): 5, ("validation", "mailbox"): 1,
                    ("test", "turtle"): 4, ("test", "mailbox"): 4}
  even, even_test = _csv_counts(imbalance.write_tables(
      str(tmp_path / "even"), 0, (20, 4), 4, balanced=True))
  assert even_test == test
  assert even[("train", "turtle")] == even[("train", "mailbox")] == 12


@pytest.mark.slow
def test_imbalance_benchmark_text(tmp_path):
  """The docstrings task run by the word-embedding model (auto and none
  here, 2 modules with 20 and 4 training docstrings; 25 s: slow)."""
  rows = _run("imbalance.py", "--task=docstrings", "--smoke",
              "--arms=auto,none", f"--workdir={tmp_path}")
  auto, none, summary = rows
  assert [r["task"] for r in rows] == ["docstrings"] * 3
  assert auto["weighting"]["weighted"] and not none["weighting"]["weighted"]
  # Classes in the run's (sorted) order: mailbox is the rarer module.
  assert auto["weighting"]["counts"] == [4, 20]
  assert auto["smallest_class"] == "mailbox"
  assert auto["smallest_recall"] == auto["recall"][0]
  assert summary["macro_f1_gain_auto"]["mean"] == pytest.approx(
      auto["macro_f1"] - none["macro_f1"])


def test_record_stamps_rows_and_keeps_results_when_a_run_fails(tmp_path):
  record = os.path.join(REPO, "benchmarks", "record.py")
  out = tmp_path / "r.jsonl"
  ok = subprocess.run(
      [sys.executable, record, str(out), "--", sys.executable, "-c",
       "print('{\"x\": 1}'); print('a note')"],
      capture_output=True, text=True, check=False)
  assert ok.returncode == 0 and "a note" in ok.stdout
  (row,) = [json.loads(l) for l in out.read_text().splitlines()]
  assert row["x"] == 1 and {"commit", "date", "cpu", "cpu_features",
                            "cores"} <= set(row)
  failed = subprocess.run(
      [sys.executable, record, str(out), "--", sys.executable, "-c",
       "print('{\"x\": 2}'); raise SystemExit(3)"],
      capture_output=True, text=True, check=False)
  assert failed.returncode == 1 and "unchanged" in failed.stderr
  assert json.loads(out.read_text())["x"] == 1
  # --append after the results file, as the Makefile writes it.
  appended = subprocess.run(
      [sys.executable, record, str(out), "--append", "--", sys.executable,
       "-c", "print('{\"x\": 3}')"], capture_output=True, text=True,
      check=False)
  assert appended.returncode == 0, appended.stderr
  assert [json.loads(l)["x"] for l in out.read_text().splitlines()] == [1, 3]


@pytest.mark.slow
def test_label_errors_benchmark(tmp_path):
  """Flipped labels on a tiny digits folder, found in suspect_labels.csv
  (one seed, tiny budgets; 60 s: slow)."""
  rows = _run("label_errors.py", "--smoke", f"--workdir={tmp_path}")
  review, summary = rows
  assert (review["arm"], summary["arm"]) == ("review", "summary")
  assert review["flipped"] == 12 and review["reviewed"] == 150
  for key in ("found_in_top", "found_at_all", "precision_first"):
    assert 0 <= review[key] <= 1 and summary[key]["mean"] == review[key]
  assert review["found_in_top"] <= review["found_at_all"]
  rows = list(csv.DictReader(open(tmp_path / "seed0" / "suspect_labels.csv",
                                  encoding="utf-8")))
  assert len(rows) == review["listed"]


def test_text_features():
  """MiniLM's frozen features at two lengths, TF-IDF and the recipe's head
  fit with and without class weights, on 40 docstrings (15 s)."""
  task, summary = _run("text_features.py", "--smoke")
  assert (task["arm"], summary["arm"]) == ("task", "summary")
  assert task["model"] == "all_minilm_l6_v2" and task["sizes"]["train"] == 40
  for arm in ("probe_16", "probe_32", "tfidf", "head_none", "head_auto"):
    assert 0 <= task[arm] <= 1, arm
  # 40 docstrings are not 3x imbalanced: auto gives no weights.
  assert not task["weighted"] and task["head_auto"] == task["head_none"]
  figures = summary["tasks"]["docstrings"]
  assert figures["probe_32_minus_probe_16"]["mean"] == pytest.approx(
      task["probe_32"] - task["probe_16"])
  assert figures["probe_16_minus_tfidf"]["mean"] == pytest.approx(
      task["probe_16"] - task["tfidf"])


@pytest.mark.slow
def test_word_embedding_benchmark(tmp_path):
  """The word-embedding model and TF-IDF on docstrings (60 training texts,
  2 epochs; 35 s: slow)."""
  rows = _run("word_embedding.py", "--smoke", f"--workdir={tmp_path}")
  task, summary = rows
  assert (task["arm"], summary["arm"]) == ("task", "summary")
  assert task["sizes"]["train"] == 60 and task["vocabulary"] > 0
  assert 0 <= task["accuracy"] <= 1 and 0 <= task["tfidf"] <= 1
  assert task["float32"]["agreement"] == 1.0
  assert task["float32"]["mediapipe_agreement"] == 1.0
  assert summary["tasks"]["docstrings"]["gain"]["mean"] == pytest.approx(
      task["accuracy"] - task["tfidf"])


@pytest.mark.slow
def test_quickstart_benchmark(tmp_path):
  """The quickstart flags with the scratch baseline (60 training images,
  one epoch a phase; 90 s: slow)."""
  (row,) = _run("quickstart.py", "--smoke", f"--workdir={tmp_path}")
  assert row["seed"] == 42 and row["sizes"]["train"] == 60
  assert 0 <= row["test"] <= 1 and 0 <= row["scratch_test"] <= 1
  assert set(row["tflite"]) == {"float32", "int8"}
  assert row["tflite"]["float32"]["agreement"] == 1.0
  assert row["seconds"] > row["scratch_seconds"] > 0


def test_multi_label_tables_hold_composed_digits(tmp_path):
  sys.path.insert(0, os.path.join(REPO, "benchmarks"))
  import multi_label  # pylint: disable=g-import-not-at-top
  from PIL import Image  # pylint: disable=g-import-not-at-top
  root = multi_label.write_tables(str(tmp_path / "d"), seed=0,
                                  sizes={"train": 6, "validation": 3,
                                         "test": 3})
  for split, count in (("train", 6), ("validation", 3), ("test", 3)):
    with open(os.path.join(root, f"{split}.csv"), encoding="utf-8") as f:
      rows = list(csv.DictReader(f))
    assert len(rows) == count
    for row in rows:
      labels = row["labels"].split("|")
      assert 1 <= len(labels) <= 3 and len(set(labels)) == len(labels)
      image = np.asarray(Image.open(os.path.join(root, row["path"])))
      assert image.shape == (64, 64, 3)
      # A drawn cell per label at least; blank cells stay black.
      cells = [image[r:r + 32, c:c + 32].max() > 0 for r in (0, 32)
               for c in (0, 32)]
      assert len(labels) <= sum(cells) <= 3


@pytest.mark.slow
def test_multi_label_benchmark():
  """The run against one-vs-rest logistic regression, tiny (50 s: slow)."""
  run, ovr, summary = _run("multi_label.py", "--smoke")
  assert (run["arm"], ovr["arm"], summary["arm"]) == ("run", "ovr",
                                                      "summary")
  for row in (run, ovr):
    assert 0 <= row["macro_f1"] <= 1 and 0 <= row["micro_f1"] <= 1
  assert summary["gain_macro_f1"]["mean"] == pytest.approx(
      run["macro_f1"] - ovr["macro_f1"])
