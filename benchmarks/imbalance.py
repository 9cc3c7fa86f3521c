"""--class_weight on imbalanced real data: auto against none.

    python benchmarks/imbalance.py [--seeds=0,1,2] [--arms=auto,logit_adjust,none]
        [--smoke]

Data: scikit-learn's handwritten digits (real, offline), written as an
image folder that is already split. train/ holds a long tail: after the
20% validation cut (per class, from train/), digit 0 has 100 training
images, digit 1 90, ... digit 9 10. test/ holds 45 of each digit,
balanced, so accuracy on it weighs every class alike. Which images go
where is drawn per seed.

Arms, per seed, on the same folder: main.py with default flags but the
input size (network EfficientNet-Lite0 with its packaged ImageNet
weights, at 64 px as the quickstart: the scans are 8x8, and 224 px costs
about 10x the time on a CPU) and `--class_weight`: `auto` (the default:
the largest class has 10x the smallest, so the loss is weighted by
inverse class frequency), `logit_adjust` (trained as `none`, then each
class's logit shifted by minus the log of its training share) and `none`.
Nothing else differs. One reference arm differs in its data instead:
`balanced_data` trains on a folder with the same test images and as many
training images in all, spread evenly (55 per digit after the cut), with
default flags: what the same budget of images gives when nothing is rare,
so `balanced_data` minus `none` is the headroom a reweighting can hope to
recover. JSON lines ("arm": the `--class_weight` value or `balanced_data`): test
accuracy, balanced accuracy, macro-F1, the smallest class's recall, and
the weighting the run recorded; then "arm": "summary", the mean and spread
of each figure per arm and of each arm minus `none`. `--smoke`: tiny
budgets, one seed: a check that the script runs, not a measurement.
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

from transfer_suite import main_py  # pylint: disable=g-import-not-at-top,wrong-import-position

MODEL = "efficientnet_lite0"
IMAGE_SIZE = 64
# Training images per digit after the validation cut, and the cut.
TRAIN = tuple(range(100, 0, -10))
VALIDATION_FRACTION = 0.2
TEST_PER_CLASS = 45
SMOKE_TRAIN = (20, 4)
ARMS = ("auto", "logit_adjust", "none", "balanced_data")
SMOKE = ["--image_size=32", "--batch_size=8", "--min_steps=0", "--head_epochs=1",
         "--finetune_epochs=1", "--finetune_lr=1e-3", "--batchnorm=frozen"]


def write_folder(root, seed, train=TRAIN, test_per_class=TEST_PER_CLASS,
                 balanced=False):
  """train/ and test/ folders of digit PNGs (see the module docstring).

  `balanced`: the same test images, and as many training images in all,
  spread evenly over the digits (the `balanced_data` arm)."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  from tl_keras.data import real_data  # pylint: disable=g-import-not-at-top
  images, labels = real_data.digit_images(size=32)
  rng = np.random.default_rng(seed)
  shutil.rmtree(root, ignore_errors=True)
  even = int(round(sum(train) / len(train)))
  for digit, count in enumerate(train):
    # Before the cut: the cut takes round(20%) of train/, at least one.
    before = int(round(count / (1 - VALIDATION_FRACTION)))
    members = rng.permutation(np.flatnonzero(labels == digit))
    test = members[before:before + test_per_class]
    chosen = members[:before]
    if balanced:
      rest = members[~np.isin(members, test)]
      chosen = rest[:int(round(even / (1 - VALIDATION_FRACTION)))]
    for split, files in (("train", chosen), ("test", test)):
      folder = os.path.join(root, split, f"digit{digit}")
      os.makedirs(folder, exist_ok=True)
      for i in files:
        Image.fromarray(images[i]).save(os.path.join(folder, f"{i}.png"))
  return root


def run(arm, seed, data_dir, workdir, smoke):
  args = [f"--model={MODEL}", "--dataset=folder", f"--data_dir={data_dir}",
          f"--validation_fraction={VALIDATION_FRACTION}", f"--seed={seed}",
          f"--class_weight={'auto' if arm == 'balanced_data' else arm}",
          "--export="] + (
              SMOKE if smoke else [f"--image_size={IMAGE_SIZE}"])
  metrics, record, seconds = main_py(
      args, os.path.join(workdir, f"{arm}_seed{seed}"))
  test = metrics["test"]
  recall = [c["recall"] for c in test["per_class"].values()]
  return {"benchmark": "imbalance", "arm": arm, "seed": seed,
          "sizes": record["data"]["sizes"],
          "image_size": record["model"].get("image_size"),
          "accuracy": test["accuracy"],
          "balanced_accuracy": test["balanced_accuracy"],
          "macro_f1": test["macro_f1"],
          "smallest_recall": recall[-1], "recall": recall,
          "weighting": record["recipe"]["class_weight"],
          "kept": record["recipe"].get("kept"),
          "seconds": round(seconds, 1)}


def summary(rows):
  """Mean, min and max per arm, and of each arm minus none per seed
  ("{figure}_gain_{arm}")."""
  out = {"benchmark": "imbalance", "arm": "summary",
         "seeds": sorted({r["seed"] for r in rows})}
  arms = [a for a in ARMS if any(r["arm"] == a for r in rows)]
  for key in ("accuracy", "balanced_accuracy", "macro_f1"):
    by = {a: {r["seed"]: r[key] for r in rows if r["arm"] == a} for a in arms}
    figures = [(a, list(by[a].values())) for a in arms]
    figures += [(f"gain_{a}", [by[a][s] - by["none"][s] for s in by[a]
                               if s in by.get("none", {})])
                for a in arms if a != "none"]
    for name, values in figures:
      if values:
        out[f"{key}_{name}"] = {"mean": statistics.mean(values),
                                "min": min(values), "max": max(values)}
  return out


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--seeds", default="0,1,2")
  parser.add_argument("--workdir", default="")
  parser.add_argument("--arms", default=",".join(ARMS))
  parser.add_argument("--smoke", action="store_true")
  args = parser.parse_args()
  seeds = [0] if args.smoke else [int(s) for s in args.seeds.split(",")]
  workdir = args.workdir or tempfile.mkdtemp(prefix="imbalance_")
  rows = []
  for seed in seeds:
    folders = {}
    for arm in args.arms.split(","):
      balanced = arm == "balanced_data"
      if balanced not in folders:
        folders[balanced] = write_folder(
            os.path.join(workdir, f"digits_seed{seed}"
                         + ("_balanced" if balanced else "")), seed,
            *((SMOKE_TRAIN, 4) if args.smoke else ()), balanced=balanced)
      rows.append(run(arm, seed, folders[balanced], workdir, args.smoke))
      print(json.dumps(rows[-1]), flush=True)
  print(json.dumps(summary(rows)), flush=True)


if __name__ == "__main__":
  main()
