"""Default flags on real pretrained networks, against the anchors a user has.

    python benchmarks/real_weights.py [--seeds=0,1,2]
        [--tasks=digits,lfw_faces,docstrings,rotten_tomatoes]
        [--image_size=0] [--sequence_length=0] [--smoke]
    python benchmarks/real_weights.py --exports_image_size=224
        [--exports_tasks=digits,lfw_faces] [--exports_finetune]
        [--exports_keep_phase=lowest_loss] [--exports_seeds=42,0,1] [--smoke]

Real networks, shipped by Python packages: ImageNet EfficientNet-Lite0
(`efficientnet_lite0`) and all-MiniLM-L6-v2 (`all_minilm_l6_v2`, a 6-layer
BERT). Real data, shipped by installed packages (`tl_keras.data.real_data`):
scikit-learn's handwritten digits and the docstrings of Python's standard
library by package, and two tasks kept aside from every recipe decision
("kept_aside": true): scikit-image's LFW faces-vs-not subset and the
Rotten Tomatoes sentence polarity data (500 labelled sentences).

Per task and seed (JSON line "arm": "task"), test accuracy of:
  default     main.py with --model, --dataset and --seed only, plus
              --compare_scratch (the model it exports; "kept" says which).
  transfer    the run's transfer model (when it exported scratch);
              "phase_kept": its phase-1 head or phase 2's weights.
  scratch     the same network from random weights, same recipe and step
              budget (the default run's --compare_scratch).
  probe       scikit-learn LogisticRegression on the standardized frozen
              features of the same pretrained network, C picked on the
              validation split (CLIP's protocol).
  tfidf       text: TF-IDF (words, 1-2 grams) + LogisticRegression, C picked
              on validation: the default run's own word-count baseline
              (--tfidf_baseline, tl_keras/modes/tfidf_baseline.py).
  modelmaker  images: MediaPipe Model Maker's image-classifier recipe in
              plain Keras on the same backbone and splits (its defaults,
              from mediapipe/model_maker/python/vision/image_classifier:
              frozen backbone, dropout 0.2, L2 1e-4 on the head, label
              smoothing 0.1, RMSprop(rho 0.9, momentum 0.9, eps 1e-3) at
              0.001 x batch 2 / 256 with 2 warmup epochs, 10 epochs,
              random crop and flip).
All arms of a seed see the same splits; they differ in how the model is
trained, as named. Then, for seed 0 of each task ("arm": "exports"), the
default run's TFLite files: accuracy and agreement with Keras on the test
split, size, gzipped size, 1- and 2-thread latency; and MediaPipe Tasks'
classifier on the float32 (and int8) file: agreement with Keras's top-1.
For images, "arm": "pruning": the same run with --prune_sparsity=0.5,
test accuracy and gzipped float32 size against the unpruned run.
`--exports_image_size=224` ("arm": "exports_head_only"): the same export
rows for a head-only run (the ImageNet network unchanged under a probe
head) at Lite0's own 224 px (minutes a task, where a default run takes
about half an hour on this CPU), of each of `--exports_tasks`: digits (8 px scans, scaled up 28 times)
and LFW faces (photographs), with the run's noise check (how often the
Keras model keeps its class when each pixel moves by up to one level) and
what the int8 fallback did. With `--exports_finetune` ("arm":
"exports_fine_tuned"), the same rows of default runs (phase 2 too,
"kept" names the phase the run kept); `--exports_keep_phase=lowest_loss`
adds that flag to them ("arm": "exports_fine_tuned_lowest_loss").
`--exports_seeds=42,0,1` runs each seed (each row says its "seed";
default: main.py's default seed only).
`--smoke`: tiny budgets and images, one seed
(and with `--exports_image_size`, the first task only): a check that the
script runs, not a measurement.
"""

import argparse
import dataclasses
import gzip
import json
import os
import sys
import tempfile
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from transfer_suite import main_py, probe_accuracy  # pylint: disable=g-import-not-at-top,wrong-import-position

# task: (kind, network, the task's own data flags). lfw_faces has 200
# images: 30% test (60) keeps its test figure from resting on 20 images.
# rotten_tomatoes has 6,826 training sentences: 500 of them labelled is
# the few-label case transfer is for, and a BERT fine-tunes on it in
# minutes on a CPU.
TASKS = {"digits": ("image", "efficientnet_lite0", []),
         "lfw_faces": ("image", "efficientnet_lite0",
                       ["--validation_fraction=0.2", "--test_fraction=0.3"]),
         "docstrings": ("text", "all_minilm_l6_v2", []),
         "rotten_tomatoes": ("text", "all_minilm_l6_v2",
                             ["--max_train_samples=500"])}
# Tasks measured after the recipe's defaults were settled, and reported
# apart from the tasks those defaults were looked at on.
KEPT_ASIDE = ("lfw_faces", "rotten_tomatoes")
IMAGE_EXPORTS = ("saved_model,tflite_float32,tflite_float16,tflite_dynamic,"
                 "tflite_int8,tflite_int16x8")
TEXT_EXPORTS = "saved_model,tflite_float32,tflite_float16,tflite_dynamic"
SMOKE = ["--max_train_samples=40", "--min_steps=0", "--head_epochs=1",
         "--finetune_epochs=1", "--finetune_lr=1e-3", "--batchnorm=frozen",
         "--parity_samples=20", "--calibration_samples=8"]
SMOKE_EXPORTS = {"image": "tflite_float32,tflite_int8",
                 "text": "tflite_float32"}


def _config(args):
  from tl_keras import config as config_lib  # pylint: disable=g-import-not-at-top
  flags = dict(a[2:].split("=", 1) for a in args if "=" in a)
  fields = {f.name: f.type for f in dataclasses.fields(config_lib.Config)}
  return config_lib.Config(**{k: fields[k](v) for k, v in flags.items()
                              if k in fields})


def run_tfidf(metrics):
  """The run's own TF-IDF baseline (--tfidf_baseline): test accuracy, C."""
  return metrics["tfidf"]["test"]["accuracy"], metrics["tfidf"]["c"]


def modelmaker_accuracy(args, smoke=False):
  """Model Maker's image-classifier recipe, in plain Keras (see the module
  docstring), on the run's backbone, size and splits."""
  import keras  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from tl_keras.data import inputs  # pylint: disable=g-import-not-at-top
  from tl_keras.models import applications  # pylint: disable=g-import-not-at-top
  from tl_keras import families  # pylint: disable=g-import-not-at-top
  config = _config(args)
  family = families.find(config.model)
  raw = family.load_splits(config)
  size = family.image_size(config)
  keras.utils.set_random_seed(config.seed)
  model = applications.build_classifier(config.model, raw.num_classes,
                                  image_size=size, weights=config.weights,
                                  dropout=0.2)
  dense = model.get_layer("classifier")
  dense.kernel_regularizer = keras.regularizers.L2(1e-4)
  batch, epochs, warmup = 2, 1 if smoke else 10, 2
  steps = raw.sizes["train"] // batch

  def augment(image, label):
    image = tf.image.resize(image, (size, size), antialias=True)
    box = tf.image.sample_distorted_bounding_box(
        tf.shape(image), tf.zeros([0, 0, 4]), area_range=(0.05, 1.0),
        aspect_ratio_range=(0.75, 1.33), min_object_covered=0.1,
        use_image_if_no_bounding_boxes=True)
    crop = tf.slice(image, box[0], box[1])
    crop = tf.image.random_flip_left_right(
        tf.image.resize(crop, (size, size)))
    return crop, tf.one_hot(label, raw.num_classes)

  train = raw.train.map(augment).shuffle(1000, seed=config.seed).batch(
      batch, drop_remainder=True)
  rate = 0.001 * batch / 256
  schedule = keras.optimizers.schedules.CosineDecay(
      0.0, max(steps * epochs, 10000 * 256 // batch), warmup_target=rate,
      warmup_steps=warmup * steps)
  model.compile(keras.optimizers.RMSprop(schedule, rho=0.9, momentum=0.9,
                                         epsilon=0.001),
                keras.losses.CategoricalCrossentropy(label_smoothing=0.1),
                metrics=["accuracy"])
  model.fit(train.repeat(), steps_per_epoch=steps, epochs=epochs, verbose=0)
  test = raw.test.map(lambda x, y: (tf.cast(inputs.resize(x, size),
                                            tf.float32), y)).batch(64)
  hits = total = 0
  for x, y in test:
    hits += int(np.sum(np.argmax(model(x, training=False), -1) == y.numpy()))
    total += len(y)
  return hits / total


def mediapipe_agreement(run_dir, variant, kind, limit=200):
  """Share of test examples where MediaPipe Tasks' classifier on the file
  picks Keras's top-1 class."""
  from tl_keras.modes import predictors  # pylint: disable=g-import-not-at-top
  from tl_keras import families  # pylint: disable=g-import-not-at-top
  from tl_keras.data import inputs  # pylint: disable=g-import-not-at-top
  from tl_keras.export import serving as serving_lib  # pylint: disable=g-import-not-at-top
  from mediapipe.tasks.python.core import base_options  # pylint: disable=g-import-not-at-top
  with open(os.path.join(run_dir, "run.json"), encoding="utf-8") as f:
    record = json.load(f)
  config = _config([f"--{k}={v}" for k, v in record["config"].items()
                    if v is not None])  # None: the model's default
  raw = families.find(config.model).load_splits(config)
  keras_model = predictors.load(run_dir)
  path = os.path.join(run_dir, f"model_{variant}.tflite")
  options = dict(base_options=base_options.BaseOptions(
      model_asset_path=path), max_results=1)
  if kind == "image":
    import mediapipe as mp  # pylint: disable=g-import-not-at-top
    from mediapipe.tasks.python import vision  # pylint: disable=g-import-not-at-top
    examples, _ = inputs.to_numpy(raw.test, record["model"]["image_size"],
                                  limit=limit)
    with vision.ImageClassifier.create_from_options(
        vision.ImageClassifierOptions(**options)) as classifier:
      got = [classifier.classify(mp.Image(
          image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(x)))
             .classifications[0].categories[0].index for x in examples]
  else:
    from mediapipe.tasks.python import text  # pylint: disable=g-import-not-at-top
    examples, _ = serving_lib.TextServing.examples(raw.test, limit=limit)
    with text.TextClassifier.create_from_options(
        text.TextClassifierOptions(**options)) as classifier:
      got = [classifier.classify(t).classifications[0].categories[0].index
             for t in examples]
  expected = keras_model.predict(examples).argmax(-1)
  return float(np.mean(np.asarray(got) == expected)), len(got)


def _gzipped(path):
  with open(path, "rb") as f:
    return len(gzip.compress(f.read()))


def run_seed(task, seed, workdir, image_size, sequence_length, smoke):
  kind, model, task_flags = TASKS[task]
  args = [f"--model={model}", f"--dataset={task}", f"--seed={seed}",
          *task_flags]
  if image_size and kind == "image":
    args.append(f"--image_size={image_size}")
  if sequence_length and kind == "text":
    args.append(f"--sequence_length={sequence_length}")
  if smoke:
    args += SMOKE + (["--image_size=32"] if kind == "image" else
                     ["--sequence_length=16"])
  exports = IMAGE_EXPORTS if kind == "image" else TEXT_EXPORTS
  if smoke:
    exports = SMOKE_EXPORTS[kind]
  out = os.path.join(workdir, f"{task}_seed{seed}")
  # --max_accuracy_drop=-1: the accuracy gate only sets main.py's exit
  # status; the benchmark records every export's accuracy instead.
  metrics, record, seconds = main_py(
      [*args, "--compare_scratch", "--max_accuracy_drop=-1",
       f"--export={exports if seed == 0 else ''}"], out)
  row = {"benchmark": "real_weights", "arm": "task", "task": task,
         "kept_aside": task in KEPT_ASIDE,
         "model": model, "seed": seed, "sizes": record["data"]["sizes"],
         "image_size": record["model"].get("image_size"),
         "sequence_length": record["model"].get("sequence_length"),
         "text_lengths": record["data"].get("text_lengths"),
         "default": metrics["test"]["accuracy"],
         "kept": metrics.get("kept", {}).get("model", "transfer"),
         # The transfer model's phase: the phase-1 head or phase 2's.
         "phase_kept": record["recipe"].get("kept"),
         "transfer": metrics.get("transfer", metrics)["test"]["accuracy"],
         "scratch": metrics["scratch"]["test"]["accuracy"],
         "default_seconds": round(seconds, 1),
         "timings": {k: round(v, 1) for k, v in record["timings"].items()}}
  row["probe"], row["probe_c"] = probe_accuracy(args)
  if kind == "text":
    row["tfidf"], row["tfidf_c"] = run_tfidf(metrics)
  else:
    start = time.time()
    row["modelmaker"] = modelmaker_accuracy(args, smoke)
    row["modelmaker_seconds"] = round(time.time() - start, 1)
  print(json.dumps(row), flush=True)
  if seed != 0:
    return
  exports = {"benchmark": "real_weights", "arm": "exports", "task": task,
             "keras_accuracy": metrics["test"]["accuracy"], "tflite": {
                 v: {k: r.get(k) for k in (
                     "accuracy", "agreement", "size_bytes",
                     "compressed_bytes", "latency_ms_1_thread", "latency_ms",
                     "examples")}
                 for v, r in metrics.get("tflite", {}).items()}}
  for variant in ("float32", "int8") if kind == "image" else ("float32",):
    if variant in exports["tflite"]:
      exports["tflite"][variant]["mediapipe_agreement"], _ = (
          mediapipe_agreement(out, variant, kind))
  print(json.dumps(exports), flush=True)
  if kind == "image":
    pruned_out = os.path.join(workdir, f"{task}_pruned")
    pruned, _, seconds = main_py(
        [*args, "--prune_sparsity=0.5", "--export=tflite_float32"],
        pruned_out)
    print(json.dumps({
        "benchmark": "real_weights", "arm": "pruning", "task": task,
        "sparsity": pruned.get("pruning", {}).get("sparsity"),
        "test": pruned["test"]["accuracy"],
        "unpruned_test": metrics.get("transfer", metrics)["test"]["accuracy"],
        "gzipped_float32": _gzipped(os.path.join(pruned_out,
                                                 "model_float32.tflite")),
        "unpruned_gzipped_float32": _gzipped(os.path.join(
            out, "model_float32.tflite")),
        "seconds": round(seconds, 1)}), flush=True)


def exports_at(task, image_size, workdir, smoke, finetune=False, seed=None,
               keep_phase=""):
  """Every TFLite variant of a head-only run (--finetune_epochs=0: the
  network's ImageNet weights unchanged under a probe head), or with
  `finetune` of a default run (phase 2 too), at `image_size`: accuracy,
  agreement with Keras, size and latency, and MediaPipe's agreement on
  float32 and int8. `seed`: --seed (None: main.py's default, 42).
  `keep_phase`: a --keep_phase other than the default, for `finetune`
  (the arm is then "exports_fine_tuned_{keep_phase}")."""
  kind, model, task_flags = TASKS[task]
  arm = "exports_fine_tuned" if finetune else "exports_head_only"
  if finetune and keep_phase:
    arm += f"_{keep_phase}"
  out = os.path.join(workdir, f"{task}_{image_size}px_{arm}"
                     + ("" if seed is None else f"_seed{seed}"))
  args = [f"--model={model}", f"--dataset={task}", *task_flags,
          f"--image_size={image_size}", "--max_accuracy_drop=-1",
          f"--export={SMOKE_EXPORTS[kind] if smoke else IMAGE_EXPORTS}"]
  if seed is not None:
    args.append(f"--seed={seed}")
  if not finetune:
    args.append("--finetune_epochs=0")
  elif keep_phase:
    args.append(f"--keep_phase={keep_phase}")
  if smoke:
    args += ["--max_train_samples=40", "--parity_samples=20",
             "--calibration_samples=8"]
    if finetune:
      args += SMOKE
  metrics, record, seconds = main_py(args, out)
  row = {"benchmark": "real_weights", "arm": arm,
         "task": task, "image_size": image_size,
         "seed": record["config"]["seed"],
         "kept": record["recipe"].get("kept"),
         "keep_phase": record["config"]["keep_phase"],
         "keras_accuracy": metrics["test"]["accuracy"],
         "seconds": round(seconds, 1),
         "timings": {k: round(v, 1) for k, v in record["timings"].items()},
         "tflite": {v: {k: r.get(k) for k in (
             "accuracy", "agreement", "size_bytes", "compressed_bytes",
             "latency_ms_1_thread", "latency_ms", "examples")}
                    for v, r in metrics.get("tflite", {}).items()},
         "noise_check": metrics.get("noise_check")}
  fallback = metrics.get("tflite", {}).get("int8", {}).get("fallback")
  if fallback:
    row["int8_fallback"] = {k: fallback[k] for k in (
        "validation", "test_before", "float_layers", "layers",
        "within_bounds")}
    row["int8_fallback"]["float_layers"] = len(fallback["float_layers"])
  for variant in ("float32", "int8"):
    if variant in row["tflite"]:
      row["tflite"][variant]["mediapipe_agreement"], _ = (
          mediapipe_agreement(out, variant, kind))
  print(json.dumps(row), flush=True)


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--seeds", default="0,1,2")
  parser.add_argument("--tasks", default=",".join(TASKS))
  parser.add_argument("--image_size", type=int, default=0,
                      help="images only; 0: the network's own (224 px)")
  parser.add_argument("--sequence_length", type=int, default=0,
                      help="text only; 0: the default (128 tokens)")
  parser.add_argument("--exports_image_size", type=int, default=0,
                      help="instead of the tasks: every TFLite variant of a "
                      "head-only run of each --exports_tasks at this size "
                      "(224: Lite0's own)")
  parser.add_argument("--exports_tasks", default="digits,lfw_faces",
                      help="image tasks of --exports_image_size")
  parser.add_argument("--exports_finetune", action="store_true",
                      help="with --exports_image_size: default runs (phase "
                      "2 too) instead of head-only ones")
  parser.add_argument("--exports_seeds", default="",
                      help="with --exports_image_size: run each of these "
                      "seeds (default: main.py's default seed only)")
  parser.add_argument("--exports_keep_phase", default="",
                      choices=("", "lowest_loss"),
                      help="with --exports_finetune: runs with this "
                      "--keep_phase (arm exports_fine_tuned_lowest_loss)")
  parser.add_argument("--workdir", default="")
  parser.add_argument("--smoke", action="store_true")
  args = parser.parse_args()
  seeds = [0] if args.smoke else [int(s) for s in args.seeds.split(",")]
  workdir = args.workdir or tempfile.mkdtemp(prefix="real_weights_")
  if args.exports_image_size:
    tasks = args.exports_tasks.split(",")
    images = [t for t, (kind, _, _) in TASKS.items() if kind == "image"]
    others = [t for t in tasks if t not in images]
    if others:
      sys.exit(f"error: --exports_tasks takes image tasks "
               f"({', '.join(images)}), not {', '.join(others)}")
    export_seeds = ([int(s) for s in args.exports_seeds.split(",")]
                    if args.exports_seeds else [None])
    for task in tasks[:1] if args.smoke else tasks:
      for seed in export_seeds:
        exports_at(task, 32 if args.smoke else args.exports_image_size,
                   workdir, args.smoke, args.exports_finetune, seed,
                   args.exports_keep_phase)
    return
  for task in args.tasks.split(","):
    for seed in seeds:
      run_seed(task, seed, workdir, args.image_size, args.sequence_length,
               args.smoke)


if __name__ == "__main__":
  main()
