"""--multi_label on real images: the run against a one-vs-rest logistic
regression on the same frozen features.

    python benchmarks/multi_label.py [--seeds=0,1,2] [--smoke]

Data: scikit-learn's handwritten digits (real scans, offline), composed
into 64 px images of a 2 x 2 grid: each image holds 1 to 3 digits in
random cells (the others black), and its labels are the digits it shows
(a digit may appear twice; it is one label). Written as train.csv,
validation.csv and test.csv of image paths with '|'-separated labels, so
both arms see the same splits. Which scans go where is drawn per seed;
the scans of the test images are never in train or validation.

Arms, per seed, on the same tables:
- "run": main.py with default flags but --multi_label and the input size
  (EfficientNet-Lite0 with its packaged ImageNet weights at 64 px, as the
  quickstart; --export= as nothing here measures the files).
- "ovr": scikit-learn's one-vs-rest LogisticRegression on the frozen
  network's pooled features (the same network, weights and input size:
  what the run's phase 1 starts from), standardized, C picked on
  validation macro-F1 from a grid, then per-label thresholds chosen on
  validation exactly as the run chooses them
  (`evaluation.choose_thresholds`).
What differs is only what is trained on the features: the run's recipe
(its probe, then fine-tuning if it is clearly better) against a linear
one-vs-rest model. JSON lines: test macro-F1, micro-F1, mean average
precision and exact match per arm and seed; then "arm": "summary", the
mean and range of each, and of run - ovr. `--smoke`: tiny budgets, one
seed: a check that the script runs, not a measurement.
"""

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from transfer_suite import main_py, write_csv  # pylint: disable=g-import-not-at-top,wrong-import-position

MODEL = "efficientnet_lite0"
IMAGE_SIZE = 64
CELL = 32
SIZES = {"train": 800, "validation": 200, "test": 400}
SMOKE_SIZES = {"train": 40, "validation": 20, "test": 20}
SMOKE = ["--image_size=32", "--batch_size=8", "--min_steps=0",
         "--head_epochs=1", "--finetune_epochs=1", "--finetune_lr=1e-3",
         "--batchnorm=frozen"]
# C tried for the baseline, picked on validation macro-F1 (as wide as the
# run's own L2 grid: 13 values, two a decade).
C_GRID = tuple(10.0 ** (e / 2) for e in range(-10, 3))
FIGURES = ("macro_f1", "micro_f1", "mean_average_precision", "accuracy")


def write_tables(root, seed, sizes=SIZES):
  """root/{train,validation,test}.csv and their PNGs (module docstring)."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  from tl_keras.data import real_data  # pylint: disable=g-import-not-at-top
  scans, digits = real_data.digit_images(size=CELL)
  rng = np.random.default_rng(seed)
  order = rng.permutation(len(digits))
  # Test scans apart from the others.
  pools = {"test": order[:len(order) // 3], "train": order[len(order) // 3:],
           "validation": order[len(order) // 3:]}
  shutil.rmtree(root, ignore_errors=True)
  os.makedirs(os.path.join(root, "images"))
  for split, count in sizes.items():
    rows = []
    for n in range(count):
      canvas = np.zeros((2 * CELL, 2 * CELL, 3), np.uint8)
      shown = set()
      for cell in rng.choice(4, size=rng.integers(1, 4), replace=False):
        scan = rng.choice(pools[split])
        row, col = divmod(int(cell), 2)
        canvas[row * CELL:(row + 1) * CELL,
               col * CELL:(col + 1) * CELL] = scans[scan]
        shown.add(int(digits[scan]))
      name = os.path.join("images", f"{split}{n}.png")
      Image.fromarray(canvas).save(os.path.join(root, name))
      rows.append((name, "|".join(f"digit{d}" for d in sorted(shown))))
    write_csv(os.path.join(root, f"{split}.csv"), ["path", "labels"], rows)
  return root


def flags(data_dir, seed, smoke):
  return [f"--model={MODEL}", "--dataset=csv", f"--data_dir={data_dir}",
          "--image_column=path", "--label_column=labels", "--multi_label=true",
          f"--seed={seed}", "--export="] + (
              SMOKE if smoke else [f"--image_size={IMAGE_SIZE}"])


def run_arm(seed, data_dir, workdir, smoke):
  metrics, record, seconds = main_py(flags(data_dir, seed, smoke),
                                     os.path.join(workdir, f"run{seed}"))
  test = metrics["test"]
  return {"benchmark": "multi_label", "arm": "run", "seed": seed,
          **{k: test[k] for k in FIGURES},
          "kept": record["recipe"].get("kept"), "seconds": round(seconds, 1)}


def ovr_arm(seed, data_dir, smoke):
  """The one-vs-rest logistic regression on the frozen features."""
  import keras  # pylint: disable=g-import-not-at-top
  from sklearn.linear_model import LogisticRegression  # pylint: disable=g-import-not-at-top
  from sklearn.multiclass import OneVsRestClassifier  # pylint: disable=g-import-not-at-top
  from tl_keras import evaluation  # pylint: disable=g-import-not-at-top
  from tl_keras import families  # pylint: disable=g-import-not-at-top
  from tl_keras.data import inputs  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from real_weights import _config  # pylint: disable=g-import-not-at-top
  config = _config(flags(data_dir, seed, smoke)).resolved()
  family = families.find(config.model)
  raw = family.load_splits(config)
  size = family.image_size(config)
  model = family.build(config, raw.num_classes,
                       tf.distribute.get_strategy(), raw_splits=raw)
  features = keras.Model(model.inputs, family.head_parts(model)[0])
  data = {}
  for split in ("train", "validation", "test"):
    images, labels = inputs.to_numpy(getattr(raw, split), size)
    data[split] = (features.predict(images.astype(np.float32), verbose=0,
                                    batch_size=64), labels)
  mean = data["train"][0].mean(0)
  std = data["train"][0].std(0) + 1e-6
  x = {s: (f - mean) / std for s, (f, _) in data.items()}
  best = None
  for c in C_GRID:
    ovr = OneVsRestClassifier(LogisticRegression(C=c, max_iter=2000))
    ovr.fit(x["train"], data["train"][1])
    val = ovr.predict_proba(x["validation"])
    thresholds = evaluation.choose_thresholds(val, data["validation"][1])
    score = evaluation.multi_label_metrics(
        val, data["validation"][1], class_names=raw.class_names,
        thresholds=thresholds)["macro_f1"]
    if best is None or score > best[0]:
      best = (score, c, ovr, thresholds)
  _, c, ovr, thresholds = best
  test = evaluation.multi_label_metrics(
      ovr.predict_proba(x["test"]), data["test"][1],
      class_names=raw.class_names, thresholds=thresholds)
  return {"benchmark": "multi_label", "arm": "ovr", "seed": seed,
          **{k: test[k] for k in FIGURES}, "C": c}


def summary(rows):
  out = {"benchmark": "multi_label", "arm": "summary",
         "seeds": sorted({r["seed"] for r in rows})}
  for arm in ("run", "ovr"):
    for k in FIGURES:
      values = [r[k] for r in rows if r["arm"] == arm]
      out[f"{arm}_{k}"] = {"mean": statistics.fmean(values),
                           "min": min(values), "max": max(values)}
  for k in FIGURES:
    gain = [a[k] - b[k] for a in rows if a["arm"] == "run"
            for b in rows if b["arm"] == "ovr" and b["seed"] == a["seed"]]
    out[f"gain_{k}"] = {"mean": statistics.fmean(gain), "min": min(gain),
                        "max": max(gain)}
  return out


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--seeds", default="0,1,2")
  parser.add_argument("--smoke", action="store_true")
  args = parser.parse_args()
  seeds = [0] if args.smoke else [int(s) for s in args.seeds.split(",")]
  rows = []
  with tempfile.TemporaryDirectory() as workdir:
    for seed in seeds:
      data_dir = write_tables(os.path.join(workdir, f"data{seed}"), seed,
                              SMOKE_SIZES if args.smoke else SIZES)
      for row in (run_arm(seed, data_dir, workdir, args.smoke),
                  ovr_arm(seed, data_dir, args.smoke)):
        rows.append(row)
        print(json.dumps(row), flush=True)
  print(json.dumps(summary(rows)), flush=True)


if __name__ == "__main__":
  main()
