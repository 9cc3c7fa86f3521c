"""Label review on real data with deliberately wrong labels.

    python benchmarks/label_errors.py [--seeds=0,1,2] [--smoke]

Data: scikit-learn's handwritten digits (real, offline), written as an
image folder that is already split: train/ holds 80 images per digit
(the run cuts 20% of them for validation), test/ 45 per digit. Then 5% of
train/'s images (per seed, drawn at random) are moved to the folder of
another digit, drawn at random: their labels are now wrong, as a user's
might be.

One run per seed: main.py with default flags but the input size
(EfficientNet-Lite0 with its packaged ImageNet weights, at 64 px as the
quickstart), no exports. The run knows nothing of the flips. Its
`suspect_labels.csv` lists every example of every split it predicts
wrong, the most confident mistake first. Measured: of the flipped images,
the share ranked in the first 10% of the examples reviewed (training,
validation and test together; the list is read in its order, and an
image it does not list is not found). A ranking that knows nothing
finds 10% there. Also: the share listed at all, the share of the first
rows (as many as there are flips) that are flips, and the run's test
accuracy (on correct labels). JSON lines ("arm": "review"), then
"arm": "summary" (mean, min and max over seeds). `--smoke`: a tiny
folder, tiny budgets, one seed: a check that the script runs, not a
measurement.
"""

import argparse
import csv
import json
import math
import os
import shutil
import statistics
import sys
import tempfile

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from transfer_suite import main_py  # pylint: disable=g-import-not-at-top,wrong-import-position

MODEL = "efficientnet_lite0"
IMAGE_SIZE = 64
TRAIN_PER_CLASS = 80
TEST_PER_CLASS = 45
FLIPPED = 0.05
TOP = 0.10
SMOKE_SIZES = (12, 3)
SMOKE = ["--image_size=32", "--batch_size=8", "--min_steps=0",
         "--head_epochs=1", "--finetune_epochs=1", "--finetune_lr=1e-3",
         "--batchnorm=frozen"]


def write_folder(root, seed, train_per_class=TRAIN_PER_CLASS,
                 test_per_class=TEST_PER_CLASS, flipped=FLIPPED):
  """train/ and test/ folders of digit PNGs with a share of train/'s
  images in another digit's folder.

  Returns:
    (root, the flipped images' paths as the run will list them).
  """
  from PIL import Image  # pylint: disable=g-import-not-at-top
  from tl_keras.data import real_data  # pylint: disable=g-import-not-at-top
  images, labels = real_data.digit_images(size=32)
  rng = np.random.default_rng(seed)
  shutil.rmtree(root, ignore_errors=True)
  train = []
  for digit in range(10):
    members = rng.permutation(np.flatnonzero(labels == digit))
    train += [(i, digit) for i in members[:train_per_class]]
    for i in members[train_per_class:train_per_class + test_per_class]:
      _save(Image, images[i], os.path.join(root, "test", f"digit{digit}"), i)
  flips = set(rng.choice(len(train), int(round(flipped * len(train))),
                         replace=False).tolist())
  paths = []
  for k, (i, digit) in enumerate(train):
    given = digit
    if k in flips:
      given = (digit + int(rng.integers(1, 10))) % 10
    path = _save(Image, images[i], os.path.join(root, "train",
                                                f"digit{given}"), i)
    if k in flips:
      paths.append(path)
  return root, paths


def _save(image_module, pixels, folder, index):
  os.makedirs(folder, exist_ok=True)
  path = os.path.join(folder, f"{index}.png")
  image_module.fromarray(pixels).save(path)
  return path


def found(rows, flipped, reviewed, top=TOP):
  """The review's figures from suspect_labels.csv's rows, in order."""
  flipped = {os.path.realpath(p) for p in flipped}
  listed = [os.path.realpath(r["example"]) for r in rows]
  first = listed[:math.ceil(top * reviewed)]
  return {"flipped": len(flipped), "reviewed": reviewed,
          "listed": len(listed),
          "found_in_top": sum(p in flipped for p in first) / len(flipped),
          "found_at_all": sum(p in flipped for p in listed) / len(flipped),
          "precision_first": sum(p in flipped
                                 for p in listed[:len(flipped)]) /
                             len(flipped)}


def run(seed, data_dir, flipped, workdir, smoke):
  args = [f"--model={MODEL}", "--dataset=folder", f"--data_dir={data_dir}",
          "--validation_fraction=0.2", f"--seed={seed}", "--export="] + (
              SMOKE if smoke else [f"--image_size={IMAGE_SIZE}"])
  out = os.path.join(workdir, f"seed{seed}")
  metrics, record, seconds = main_py(args, out)
  with open(os.path.join(out, "suspect_labels.csv"), encoding="utf-8") as f:
    rows = list(csv.DictReader(f))
  sizes = record["data"]["sizes"]
  return {"benchmark": "label_errors", "arm": "review", "seed": seed,
          "sizes": sizes, "image_size": record["model"].get("image_size"),
          **found(rows, flipped, sum(sizes.values())),
          "test_accuracy": metrics["test"]["accuracy"],
          "kept": record["recipe"].get("kept"),
          "seconds": round(seconds, 1)}


def summary(rows):
  out = {"benchmark": "label_errors", "arm": "summary",
         "seeds": [r["seed"] for r in rows], "top": TOP}
  for key in ("found_in_top", "found_at_all", "precision_first",
              "test_accuracy"):
    values = [r[key] for r in rows]
    out[key] = {"mean": statistics.mean(values), "min": min(values),
                "max": max(values)}
  return out


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--seeds", default="0,1,2")
  parser.add_argument("--workdir", default="")
  parser.add_argument("--smoke", action="store_true")
  args = parser.parse_args()
  seeds = [0] if args.smoke else [int(s) for s in args.seeds.split(",")]
  workdir = args.workdir or tempfile.mkdtemp(prefix="label_errors_")
  rows = []
  for seed in seeds:
    data_dir, flipped = write_folder(
        os.path.join(workdir, f"digits_seed{seed}"), seed,
        *(SMOKE_SIZES if args.smoke else ()), flipped=0.1 if args.smoke
        else FLIPPED)
    rows.append(run(seed, data_dir, flipped, workdir, args.smoke))
    print(json.dumps(rows[-1]), flush=True)
  print(json.dumps(summary(rows)), flush=True)


if __name__ == "__main__":
  main()
