"""The documents' generated tables match the committed results."""

import os
import re
import sys

import pytest

from tests.conftest import REPO

sys.path.insert(0, os.path.join(REPO, "benchmarks"))
import tables  # pylint: disable=g-import-not-at-top,wrong-import-position


def _texts():
  out = {}
  for path in tables.documents():
    with open(path, encoding="utf-8") as f:
      out[os.path.relpath(path, REPO)] = f.read()
  return out


def test_every_table_is_rendered_from_results():
  texts = _texts()
  assert "README.md" in texts and "docs/results.md" in texts
  names = [name for text in texts.values()
           for _, name, _, _ in tables.BLOCK.findall(text)]
  assert sorted(names) == sorted(tables.TABLES)  # each table once
  for path, text in texts.items():
    assert tables.rendered(text) == text, (
        f"a table in {path} differs from results/: run "
        "python benchmarks/tables.py")


def test_a_changed_figure_is_caught():
  text = _texts()["docs/results.md"]
  block = tables.BLOCK.search(text)
  edited = text.replace(block.group(3), block.group(3).replace("%", "0%", 1))
  assert tables.rendered(edited) != edited


# What a measured figure looks like in running text: a percentage with
# decimals, a time in ms or seconds with decimals or three digits, a size,
# a speed-up, points with decimals. Settings (a 5-point bar, 15 s, 10%)
# are whole numbers and pass.
MEASURED = re.compile(
    r"\d+\.\d+\s?%|\d[\d,.]*\s?(?:ms|KB|MB|GB)\b|\d+\.\d+(?:\s?×|x)(?!\s?\d)"
    r"|\b\d+\.\d+\s?s\b|\b\d{1,3}(?:,\d{3})+\s?s\b|\b\d{3,}\s?s\b"
    r"|\d+\.\d+\s?(?:points?|minutes)\b")


def _prose(text):
  """`text` without its rendered blocks, figures, code and inline code."""
  text = tables.BLOCK.sub("", text)
  text = tables.VALUE.sub("", text)
  text = re.sub(r"```.*?```", "", text, flags=re.S)
  return re.sub(r"`[^`\n]*`", "", text)


def test_no_figure_is_typed_by_hand():
  typed = {path: MEASURED.findall(_prose(text))
           for path, text in _texts().items()}
  typed = {path: found for path, found in typed.items() if found}
  assert not typed, (
      "figures typed by hand (render them from results/ with a table block "
      f"or <!-- v QUERY -->): {typed}")


def test_the_scan_finds_a_typed_figure():
  assert len(MEASURED.findall(_prose(
      "it took 12.5 ms and 91.3% of 1,204 s, 2.4x faster"))) == 4
  assert not MEASURED.findall(_prose(
      "a 5-point bar, 1x1 convolutions, 320×240 photos, every 15 s, 10%, "
      "0.001 x 2 / 256"))


def test_a_figure_in_text_renders_from_results():
  query = "real_weights arm=task task=digits default spread pct"
  row = next(line for line in tables.real_weights_tasks(
      tables.read("real_weights")).splitlines() if line.startswith(
          "| digits"))
  assert tables.value(query) in row
  text = f"mean <!-- v {query} -->typed<!-- /v -->."
  assert "typed" not in tables.rendered(text)
  with pytest.raises(ValueError):
    tables.value("real_weights arm=task default pct")  # several rows
  with pytest.raises(ValueError):
    tables.value("real_weights arm=task task=digits default spread furlongs")


def test_the_demo_table_has_a_column_pair_per_kind_of_cpu():
  def run(seed, test, features, commit="aaaaaaa"):
    row = {"arm": "run", "seed": seed, "sizes": {"test": 179}, "test": test,
           "commit": commit,
           "probe_validation": 0.9, "scratch_test": 0.8, "kept": "head",
           "tflite": {"float32": {
               "accuracy": test, "agreement": 1.0, "size_bytes": 10**6,
               "compressed_bytes": 10**6, "latency_ms_1_thread": 1.0,
               "latency_ms": 0.5}}}
    if features is not None:
      row["cpu_features"] = features
    return row

  rows = [run(42, 0.90, None), run(0, 0.80, None, "bbbbbbb"),
          run(42, 0.98, ["avx2", "avx512_vnni"], "ccccccc")]
  header, _, accuracy, *_, code = tables.quickstart(rows).splitlines()
  assert header.count("CPU features not recorded") == 2
  assert header.count("AVX-512 VNNI") == 2
  assert "| 90.0% | 85.0% (80.0–90.0) | 98.0% |" in accuracy
  # each column names the code its runs measured
  assert code == ("| code (commit) | aaaaaaa | aaaaaaa, bbbbbbb | ccccccc | "
                  "ccccccc |")
  # the exports are the latest run of the demo's seed, named by its CPU
  assert tables.quickstart_exports(rows).startswith(
      "| variant (AVX-512 VNNI) |")
  assert "| Keras | 98.0% |" in tables.quickstart_exports(rows)


def test_the_224_px_seed_table_takes_a_row_without_seed_as_the_default():
  def row(int8, seed=None, fallback=None):
    r = {"arm": "exports_fine_tuned", "task": "digits", "image_size": 224,
         "kept": "finetune", "keras_accuracy": 0.99,
         "noise_check": {"agreement": 1.0},
         "tflite": {"float32": {"latency_ms_1_thread": 9.0},
                    "int8": {"accuracy": int8, "agreement": 0.98,
                             "mediapipe_agreement": 0.97,
                             "latency_ms_1_thread": 4.5}}}
    if seed is not None:
      r["seed"] = seed
    if fallback is not None:
      r["int8_fallback"] = {"float_layers": fallback}
    return r

  rows = [row(0.98), row(0.96, seed=0, fallback=3),
          {**row(0.5, seed=0), "arm": "exports_head_only"}]
  _, _, first, second, mean = tables.real_weights_exports_224_seeds(
      rows, "digits").splitlines()
  assert first.startswith("| 0 | finetune | 99.0% | 96.0% | -3.0 points")
  assert "| 3 | 4.50 / 9.00 ms |" in first
  assert second.startswith("| 42 | finetune | 99.0% | 98.0% | -1.0 points")
  assert "| 0 |" in second  # no fallback: no layer in float
  assert mean.startswith("| mean (2 seeds) | | 99.0% (99.0–99.0) | "
                         "97.0% (96.0–98.0) | -2.0 points (-3.0 to -1.0)")


def test_seeds_ahead_counts_only_seeds_both_arms_ran():
  rows = [{"arm": "auto", "seed": 0, "f": 0.9},
          {"arm": "none", "seed": 0, "f": 0.8},
          {"arm": "auto", "seed": 1, "f": 0.7},
          {"arm": "none", "seed": 1, "f": 0.7},  # a tie is not ahead
          {"arm": "auto", "seed": 2, "f": 0.9},  # none did not run seed 2
          {"arm": "summary"}]
  assert tables._seeds_ahead(rows, "auto", "none", "f") == "1 of 2"  # pylint: disable=protected-access


def test_the_text_features_table_puts_each_length_in_its_own_row():
  row = {"arm": "task", "task": "docstrings", "tfidf": 0.9,
         "head_none": 0.8, "head_auto": 0.85, "head_none_balanced": 0.7,
         "head_auto_balanced": 0.8}
  rows = [{**row, "seed": 0, "probe_128": 0.88, "probe_256": 0.86},
          {**row, "seed": 1, "probe_128": 0.92, "probe_256": 0.9},
          {**row, "task": "rotten_tomatoes", "kept_aside": True, "seed": 0,
           "probe_64": 0.7}]
  table = tables.text_features(rows).splitlines()
  assert table[0] == ("| test accuracy | docstrings, 2 seeds | "
                      "rotten_tomatoes (kept aside), 1 seeds |")
  assert table[2] == "| probe, 64 tokens | – | 70.0% |"
  assert table[3] == "| probe, 128 tokens | 90.0% (88.0–92.0) | – |"
  assert ("| probe at the run's length − TF-IDF | +0.0 points (-2.0 to "
          "+2.0) | -20.0 points |") in table
  assert table[7] == ("| probe, 256 − 128 tokens | -2.0 points (-2.0 to "
                      "-2.0) | – |")
  assert table[-1] == ("| auto − unweighted, balanced accuracy | +10.0 "
                       "points (+10.0 to +10.0) | +10.0 points |")
