"""--class_weight on imbalanced real data: auto against none.

    python benchmarks/imbalance.py [--task=digits|docstrings]
        [--seeds=...] [--arms=auto,logit_adjust,none,balanced_data] [--smoke]

Tasks (real, offline), each written as data that is already split, its
training split a long tail (10x from the most common class to the rarest)
and its test split balanced, so accuracy on it weighs every class alike.
Which examples go where is drawn per seed.

  digits      scikit-learn's handwritten digits as an image folder. After
              the 20% validation cut (per class, from train/), digit 0 has
              100 training images, digit 1 90, ... digit 9 10; test/ holds
              45 of each digit. Network: EfficientNet-Lite0 with its
              packaged ImageNet weights, at 64 px as the quickstart (the
              scans are 8x8, and 224 px costs about 10x the time on a CPU).
  docstrings  Python's standard library docstrings as CSV tables (text,
              label), labelled by the module they document: 8 modules
              that no other task or design check here uses (turtle, mailbox,
              tarfile, inspect, ipaddress, pydoc, typing, pathlib), 50
              training docstrings of the first down to 5 of the last
              (validation: 20% more per class, cut the same way), 15 of
              each in test. Network: the average word-embedding model
              (`--model=average_word_embedding`), trained from scratch.

Arms, per seed, on the same data: main.py with default flags but the
input size (digits) and `--class_weight`: `auto` (the default: the largest
class has 10x the smallest, so the loss is weighted by inverse class
frequency), `logit_adjust` (trained as `none`, then each class's logit
shifted by minus the log of its training share) and `none`. Nothing else
differs. One reference arm differs in its data instead: `balanced_data`
trains on data with the same test examples and as many training examples
in all, spread evenly over the classes, with default flags: what the same
budget of examples gives when nothing is rare, so `balanced_data` minus
`none` is the headroom a reweighting can hope to recover. JSON lines
("arm": the `--class_weight` value or `balanced_data`, "task"): test
accuracy, balanced accuracy, macro-F1, the rarest class's recall, and the
weighting the run recorded; then "arm": "summary", the mean and spread of
each figure per arm and of each arm minus `none`. Seeds: 0, 1 and 2 on
the digits (minutes a run), 0 to 9 on the docstrings (seconds a run, and
a test docstring moves accuracy by almost a point). `--smoke`: tiny budgets,
one seed: a check that the script runs, not a measurement.
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
# Training images per digit after the validation cut, and the cut.
TRAIN = tuple(range(100, 0, -10))
VALIDATION_FRACTION = 0.2
TEST_PER_CLASS = 45
SMOKE_TRAIN = (20, 4)
TEXT_MODEL = "average_word_embedding"
# The docstrings task's modules, most docstrings first; training
# docstrings per module after the validation cut (10x, geometric), and
# test docstrings per module.
MODULES = ("turtle", "mailbox", "tarfile", "inspect", "ipaddress", "pydoc",
           "typing", "pathlib")
TEXT_TRAIN = (50, 36, 26, 19, 13, 10, 7, 5)
TEXT_TEST_PER_CLASS = 15
SMOKE_TEST = 4
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
    chosen, test = _draw(np.flatnonzero(labels == digit), rng, count,
                         test_per_class, balanced, even)
    for split, files in (("train", chosen), ("test", test)):
      folder = os.path.join(root, split, f"digit{digit}")
      os.makedirs(folder, exist_ok=True)
      for i in files:
        Image.fromarray(images[i]).save(os.path.join(folder, f"{i}.png"))
  return root


def _draw(members, rng, count, test_per_class, balanced, even):
  """(training-and-validation members, test members) of one class, drawn
  by `rng`: `count` training members after the validation cut, or `even`
  with `balanced` (from the members the test split leaves)."""
  # Before the cut: the cut takes round(20%) of them, at least one.
  before = int(round(count / (1 - VALIDATION_FRACTION)))
  members = rng.permutation(members)
  test = members[before:before + test_per_class]
  chosen = members[:before]
  if balanced:
    rest = members[~np.isin(members, test)]
    chosen = rest[:int(round(even / (1 - VALIDATION_FRACTION)))]
  return chosen, test


def write_tables(root, seed, train=TEXT_TRAIN,
                 test_per_class=TEXT_TEST_PER_CLASS, balanced=False,
                 modules=MODULES):
  """train.csv, validation.csv and test.csv of module docstrings (see the
  module docstring); the validation cut is made here, per class, as a
  folder's is."""
  from tl_keras.data import real_data  # pylint: disable=g-import-not-at-top
  texts = real_data.docstrings(modules[:len(train)])
  rng = np.random.default_rng(seed)
  shutil.rmtree(root, ignore_errors=True)
  os.makedirs(root)
  even = int(round(sum(train) / len(train)))
  tables = {"train": [], "validation": [], "test": []}
  for module, count in zip(modules, train):
    chosen, test = _draw(np.arange(len(texts[module])), rng, count,
                         test_per_class, balanced, even)
    cut = max(1, int(round(VALIDATION_FRACTION * len(chosen))))
    for split, members in (("validation", chosen[:cut]),
                           ("train", chosen[cut:]), ("test", test)):
      tables[split] += [(texts[module][i], module) for i in members]
  for split, rows in tables.items():
    write_csv(os.path.join(root, f"{split}.csv"), ["text", "label"], rows)
  return root


def run(arm, seed, data_dir, workdir, smoke, task="digits", rarest="digit9"):
  """One main.py run; `rarest`: the class rarest in the long tail."""
  args = (
      [f"--model={MODEL}", "--dataset=folder",
       f"--validation_fraction={VALIDATION_FRACTION}"] + (
           SMOKE if smoke else [f"--image_size={IMAGE_SIZE}"])
      if task == "digits" else
      [f"--model={TEXT_MODEL}", "--dataset=csv"] + (
          ["--finetune_epochs=2", "--batch_size=8"] if smoke else []))
  args += [f"--data_dir={data_dir}", f"--seed={seed}",
           f"--class_weight={'auto' if arm == 'balanced_data' else arm}",
           "--export="]
  metrics, record, seconds = main_py(
      args, os.path.join(workdir, f"{task}_{arm}_seed{seed}"))
  test = metrics["test"]
  recall = [c["recall"] for c in test["per_class"].values()]
  return {"benchmark": "imbalance", "task": task, "arm": arm, "seed": seed,
          "sizes": record["data"]["sizes"],
          "image_size": record["model"].get("image_size"),
          "accuracy": test["accuracy"],
          "balanced_accuracy": test["balanced_accuracy"],
          "macro_f1": test["macro_f1"],
          "smallest_recall": recall[list(test["per_class"]).index(rarest)],
          "smallest_class": rarest, "recall": recall,
          "weighting": record["recipe"]["class_weight"],
          "kept": record["recipe"].get("kept"),
          "seconds": round(seconds, 1)}


def summary(rows, task="digits"):
  """Mean, min and max per arm, and of each arm minus none per seed
  ("{figure}_gain_{arm}")."""
  out = {"benchmark": "imbalance", "task": task, "arm": "summary",
         "seeds": sorted({r["seed"] for r in rows})}
  arms = [a for a in ARMS if any(r["arm"] == a for r in rows)]
  for key in ("accuracy", "balanced_accuracy", "macro_f1", "smallest_recall"):
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
  parser.add_argument("--task", default="digits",
                      choices=("digits", "docstrings"))
  parser.add_argument("--seeds", default="",
                      help="default: 0,1,2 (digits), 0,...,9 (docstrings)")
  parser.add_argument("--workdir", default="")
  parser.add_argument("--arms", default=",".join(ARMS))
  parser.add_argument("--smoke", action="store_true")
  args = parser.parse_args()
  digits = args.task == "digits"
  seeds = ([0] if args.smoke else
           [int(s) for s in args.seeds.split(",")] if args.seeds else
           list(range(3 if digits else 10)))
  workdir = args.workdir or tempfile.mkdtemp(prefix="imbalance_")
  write = write_folder if digits else write_tables
  train = SMOKE_TRAIN if args.smoke else TRAIN if digits else TEXT_TRAIN
  test = (SMOKE_TEST if args.smoke else TEST_PER_CLASS if digits else
          TEXT_TEST_PER_CLASS)
  rarest = f"digit{len(train) - 1}" if digits else MODULES[len(train) - 1]
  rows = []
  for seed in seeds:
    data = {}
    for arm in args.arms.split(","):
      balanced = arm == "balanced_data"
      if balanced not in data:
        data[balanced] = write(
            os.path.join(workdir, f"{args.task}_seed{seed}"
                         + ("_balanced" if balanced else "")), seed, train,
            test, balanced=balanced)
      rows.append(run(arm, seed, data[balanced], workdir, args.smoke,
                      args.task, rarest))
      print(json.dumps(rows[-1]), flush=True)
  print(json.dumps(summary(rows, args.task)), flush=True)


if __name__ == "__main__":
  main()
