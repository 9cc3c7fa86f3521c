"""Does the default recipe work on real data? Four tasks, three seeds.

    python benchmarks/transfer_suite.py [--seeds=0,1,2] [--tasks=...]

Tasks (everything offline):
  image_demo  the embedded image task (`--weights=synthetic`).
  text_demo   the embedded text task (`bert_micro --weights=synthetic`).
  digits      scikit-learn's handwritten digits, 8x8 upscaled to 32x32 and
              written as PNG class folders. Source: digits 0-4, trained with
              tl_keras from `--weights=none` for 20 epochs; target: digits
              5-9 with about 20 training labels per class.
  docstrings  English text: docstrings of Python's standard library,
              labelled by top-level package. A 2-layer BERT with a
              WordPiece vocabulary computed from the source docstrings
              (`compute_word_piece_vocabulary`), saved as a preset folder,
              is trained with tl_keras on 6 packages from `--weights=none`
              for 20 epochs; target: 5 other packages, about 30 training
              labels each.

For each task and seed, four test accuracies:
  default  tl_keras with default flags: model, data and weights only.
  probe    the linear-probe anchor: scikit-learn LogisticRegression on the
           standardized frozen features of the same pretrained backbone,
           C chosen on the validation split (CLIP's protocol).
  scratch  the same architecture from random weights at the same step
           budget (the default run's --compare_scratch). When the default
           run's transfer check set the pretrained weights aside, the run
           trained from random weights itself and is its own baseline
           ("start": "random" in its row).
  tuned    the flags the quickstarts were tuned with before the defaults
           worked (head in the training loop, fixed learning rates).
Prints one JSON line per run and a summary line per task (mean, min, max,
wall seconds). `--smoke` runs one seed of `digits` with tiny budgets: a
check that the script works, not a measurement.
"""

import argparse
import csv
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# The flags the quickstarts carried before the defaults worked, in today's
# flag names: the head trains in the loop (no feature cache) at a fixed
# rate, phase 2 at a fixed rate, BatchNorm frozen, no step budget.
TUNED = {
    "image": ["--feature_cache=off", "--head_epochs=30", "--head_lr=3e-3",
              "--finetune_epochs=20", "--finetune_lr=3e-4", "--min_steps=0",
              "--batchnorm=frozen", "--label_smoothing=0.1",
              "--early_stopping=0", "--warmup=0.05"],
    "text": ["--feature_cache=off", "--head_epochs=30", "--head_lr=3e-3",
             "--finetune_epochs=15", "--finetune_lr=5e-4", "--min_steps=0",
             "--weight_decay=0.01", "--label_smoothing=0.1",
             "--early_stopping=0", "--warmup=0.07"],
}

# Source backbones are trained to convergence, as a published checkpoint
# would be: 20 epochs from random weights (the rate picked by the trials).
SOURCE = ["--finetune_epochs=20", "--export="]

SOURCE_PACKAGES = ("tkinter", "idlelib", "asyncio", "importlib",
                   "multiprocessing", "unittest")
TARGET_PACKAGES = ("email", "logging", "xml", "http", "urllib")
DOCSTRINGS_PER_TARGET_CLASS = 150


def main_py(args, out, env=None):
  """Runs main.py as a user would; returns (metrics, run record, seconds)."""
  start = time.time()
  result = subprocess.run(
      [sys.executable, os.path.join(REPO, "main.py"), *args,
       f"--output_dir={out}", "--overwrite"], cwd=REPO, capture_output=True,
      text=True, env={**os.environ, **(env or {})}, check=False)
  seconds = time.time() - start
  if result.returncode:
    raise RuntimeError(f"main.py {' '.join(args)} failed:\n"
                       f"{result.stderr[-3000:]}")
  with open(os.path.join(out, "metrics.json"), encoding="utf-8") as f:
    metrics = json.load(f)
  with open(os.path.join(out, "run.json"), encoding="utf-8") as f:
    record = json.load(f)
  return metrics, record, seconds


# ---------------------------------------------------------------------------
# Data.


def write_csv(path, header, rows):
  """A CSV table at `path`: `header`, then `rows`. Returns `path`."""
  with open(path, "w", encoding="utf-8", newline="") as f:
    writer = csv.writer(f)
    writer.writerow(header)
    writer.writerows(rows)
  return path


def write_digits(root):
  """scikit-learn's digits as PNG folders: source/digit0-4, target/5-9."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  from tl_keras.data import real_data  # pylint: disable=g-import-not-at-top
  images, labels = real_data.digit_images()
  for name, classes in (("source", range(0, 5)), ("target", range(5, 10))):
    for c in classes:
      folder = os.path.join(root, name, f"digit{c}")
      os.makedirs(folder, exist_ok=True)
      for i, image in enumerate(images[labels == c]):
        Image.fromarray(image[..., 0]).save(
            os.path.join(folder, f"{i}.png"))
  return os.path.join(root, "source"), os.path.join(root, "target")


def docstrings():
  """{top-level package: [docstring, ...]} of the standard library
  (`real_data.docstrings`)."""
  from tl_keras.data import real_data  # pylint: disable=g-import-not-at-top
  return real_data.docstrings(SOURCE_PACKAGES + TARGET_PACKAGES)


def write_docstrings(root, smoke=False):
  """source.csv, target.csv and a random-init 2-layer BERT preset folder."""
  import keras_hub  # pylint: disable=g-import-not-at-top
  os.makedirs(root, exist_ok=True)
  texts = docstrings()
  rng = np.random.default_rng(0)
  paths = {}
  for name, packages, cap in (("source", SOURCE_PACKAGES, None),
                              ("target", TARGET_PACKAGES,
                               DOCSTRINGS_PER_TARGET_CLASS)):
    rows = []
    for package in packages:
      chosen = list(texts[package])
      rng.shuffle(chosen)
      rows += [(t, package) for t in chosen[:cap if not smoke else 40]]
    paths[name] = write_csv(os.path.join(root, f"{name}.csv"),
                            ["text", "label"], rows)
  source_texts = [t for p in SOURCE_PACKAGES for t in texts[p]]
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  vocabulary = keras_hub.tokenizers.compute_word_piece_vocabulary(
      tf.data.Dataset.from_tensor_slices(source_texts).batch(256),
      vocabulary_size=4000, lowercase=True,
      reserved_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"])
  tokenizer = keras_hub.models.BertTokenizer(vocabulary=vocabulary,
                                             lowercase=True)
  backbone = keras_hub.models.BertBackbone(
      vocabulary_size=tokenizer.vocabulary_size(), num_layers=2, num_heads=2,
      hidden_dim=128, intermediate_dim=512, max_sequence_length=128)
  preset = os.path.join(root, "bert_docstrings")
  backbone.save_to_preset(preset)
  tokenizer.save_to_preset(preset)
  return paths["source"], paths["target"], preset


# ---------------------------------------------------------------------------
# The linear-probe anchor.


def probe_accuracy(args):
  """Test accuracy of LogisticRegression on the run's frozen features.

  `args` are the run's model, weights and data flags; the backbone and
  splits are built the way the run built them.
  """
  from sklearn.linear_model import LogisticRegression  # pylint: disable=g-import-not-at-top
  from sklearn.preprocessing import StandardScaler  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from tl_keras import config as config_lib  # pylint: disable=g-import-not-at-top
  from tl_keras import families  # pylint: disable=g-import-not-at-top
  from tl_keras import pretraining  # pylint: disable=g-import-not-at-top
  from tl_keras import training  # pylint: disable=g-import-not-at-top
  from tl_keras.modes import tfidf_baseline  # pylint: disable=g-import-not-at-top
  flags = dict(a[2:].split("=", 1) for a in args)
  fields = {f.name: f.type for f in dataclasses.fields(config_lib.Config)}
  config = config_lib.Config(**{k: fields[k](v) for k, v in flags.items()})
  strategy = tf.distribute.get_strategy()
  family = families.find(config.model)
  splits = family.load_splits(config)
  image_size = family.image_size(config)
  model = family.build(pretraining.resolved(config, family, strategy),
                       splits.num_classes, strategy)
  splits = family.prepare_splits(splits, model)
  features = {}
  for split in ("train", "validation", "test"):
    view = dataclasses.replace(
        splits, validation=getattr(splits, split),
        sizes={**splits.sizes, "validation": splits.sizes[split]})
    cache = training.FeatureCache(model, view, family=family,
                                  image_size=image_size, batch_size=64)
    x, y = zip(*cache.validation.as_numpy_iterator())
    features[split] = np.stack(x), np.array(y)
  scaler = StandardScaler().fit(features["train"][0])
  x = {k: scaler.transform(v[0]) for k, v in features.items()}
  fit, c, _ = tfidf_baseline.pick_c(
      lambda c: LogisticRegression(C=c, max_iter=5000), x["train"],
      features["train"][1], x["validation"], features["validation"][1])
  return float(fit.score(x["test"], features["test"][1])), c


# ---------------------------------------------------------------------------
# The tasks.


@dataclasses.dataclass
class Task:
  name: str
  kind: str  # "image" or "text"
  prepare: callable  # (workdir, seed, smoke) -> target run's flags


def _image_demo(workdir, seed, smoke):
  del workdir, smoke
  return ["--model=convnet_small", "--weights=synthetic",
          "--dataset=synthetic", f"--seed={seed}"]


def _text_demo(workdir, seed, smoke):
  del workdir, smoke
  return ["--model=bert_micro", "--weights=synthetic",
          "--dataset=synthetic_text", f"--seed={seed}"]


def _report_source(task, source_run, record, seconds):
  with open(os.path.join(source_run, "metrics.json"), encoding="utf-8") as f:
    accuracy = json.load(f)["test"]["accuracy"]
  print(json.dumps({"task": task, "source_sizes": record["data"]["sizes"],
                    "source_test_accuracy": round(accuracy, 4),
                    "seconds": round(seconds, 1)}), flush=True)


def _digits(workdir, seed, smoke):
  folders = os.path.join(workdir, "digits")
  source_run = os.path.join(workdir, "digits_source_run")
  if not os.path.exists(os.path.join(source_run, "model.keras")):
    source, _ = write_digits(folders)
    tiny = ["--min_steps=10", "--finetune_epochs=1"] if smoke else []
    _, record, seconds = main_py(
        ["--model=convnet_small", "--weights=none", "--dataset=folder",
         f"--data_dir={source}", *SOURCE, *tiny], source_run)
    _report_source("digits", source_run, record, seconds)
  return ["--model=convnet_small", f"--weights={source_run}",
          "--dataset=folder", f"--data_dir={folders}/target",
          "--test_fraction=0.4", "--max_train_samples=100", f"--seed={seed}"]


def _docstrings(workdir, seed, smoke):
  root = os.path.join(workdir, "docstrings")
  source_run = os.path.join(workdir, "docstrings_source_run")
  if not os.path.exists(os.path.join(source_run, "preset")):
    source, _, preset = write_docstrings(root, smoke)
    tiny = ["--min_steps=10", "--finetune_epochs=1"] if smoke else []
    _, record, seconds = main_py(
        [f"--model={preset}", "--weights=none", "--dataset=csv",
         f"--data_dir={source}", *SOURCE, *tiny], source_run)
    _report_source("docstrings", source_run, record, seconds)
  return [f"--model={source_run}/preset", "--weights=pretrained",
          "--dataset=csv", f"--data_dir={root}/target.csv",
          "--test_fraction=0.4", "--max_train_samples=150", f"--seed={seed}"]


TASKS = {t.name: t for t in (
    Task("image_demo", "image", _image_demo),
    Task("text_demo", "text", _text_demo),
    Task("digits", "image", _digits),
    Task("docstrings", "text", _docstrings))}


def run_task(task, seed, workdir, smoke=False):
  """The four accuracies of one task and seed, as a dict."""
  args = task.prepare(workdir, seed, smoke)
  out = os.path.join(workdir, f"{task.name}_seed{seed}")
  tiny = ["--min_steps=10", "--finetune_epochs=1",
          "--pretrain_epochs=1"] if smoke else []
  metrics, record, seconds = main_py(
      [*args, *tiny, "--compare_scratch", "--export="], out + "_default")
  scratch_seconds = record["timings"].get("scratch_seconds", 0.0)
  row = {"task": task.name, "seed": seed,
         "default": metrics["test"]["accuracy"],
         "scratch": metrics["scratch"]["test"]["accuracy"],
         "default_seconds": round(seconds - scratch_seconds, 1),
         "scratch_seconds": round(scratch_seconds, 1),
         "recipe": {k: v for k, v in record["recipe"].get(
             "finetune", {}).items() if k != "trials"},
         # "random": the transfer check set the pretrained weights aside,
         # and the run is its own scratch baseline.
         "start": record["recipe"].get("start", {}).get("weights")}
  tuned = [a for a in TUNED[task.kind]
           if not (smoke and "epochs" in a)]
  metrics, _, seconds = main_py(
      [*args, *tiny, *tuned, "--export="], out + "_tuned")
  row.update(tuned=metrics["test"]["accuracy"],
             tuned_seconds=round(seconds, 1))
  start = time.time()
  row["probe"], row["probe_c"] = probe_accuracy(args + tiny)
  row["probe_seconds"] = round(time.time() - start, 1)
  return row


def summarize(rows):
  """Per task: mean, min and max of each accuracy, mean wall seconds."""
  out = []
  for task in dict.fromkeys(r["task"] for r in rows):
    mine = [r for r in rows if r["task"] == task]
    line = {"task": task, "seeds": len(mine)}
    for arm in ("default", "probe", "scratch", "tuned"):
      values = [r[arm] for r in mine]
      line[arm] = {"mean": round(float(np.mean(values)), 4),
                   "min": round(min(values), 4), "max": round(max(values), 4)}
    for arm in ("default", "scratch", "tuned"):
      line[f"{arm}_seconds"] = round(float(np.mean(
          [r[f"{arm}_seconds"] for r in mine])), 1)
    line["started_random"] = sum(r.get("start") == "random" for r in mine)
    line["default_wins"] = line["default"]["mean"] >= max(
        line["probe"]["mean"], line["scratch"]["mean"], line["tuned"]["mean"])
    out.append(line)
  return out


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--seeds", default="0,1,2")
  parser.add_argument("--tasks", default=",".join(TASKS))
  parser.add_argument("--workdir", default="",
                      help="Where data and runs go (default: a temp dir).")
  parser.add_argument("--smoke", action="store_true",
                      help="One seed of digits, tiny budgets: a check that "
                      "the script runs.")
  args = parser.parse_args()
  seeds = [int(s) for s in args.seeds.split(",")]
  tasks = [TASKS[t] for t in args.tasks.split(",")]
  if args.smoke:
    seeds, tasks = seeds[:1], [TASKS["digits"]]
  workdir = args.workdir or tempfile.mkdtemp(prefix="transfer_suite-")
  # Source weights pretrained per run of this script, never ~/.keras.
  os.environ.setdefault("TL_KERAS_CACHE", os.path.join(workdir, "cache"))
  rows = []
  for task in tasks:
    for seed in seeds:
      rows.append(run_task(task, seed, workdir, smoke=args.smoke))
      print(json.dumps(rows[-1]), flush=True)
  for line in summarize(rows):
    print(json.dumps({"summary": line}), flush=True)


if __name__ == "__main__":
  main()
