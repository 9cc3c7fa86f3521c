"""int8 on every backbone family: accuracy before and after the fallback.

    python benchmarks/int8_families.py [--families=resnet50,mobilenetv2,...]
        [--image_size=64] [--latency_size=224] [--workdir=DIR]

For each family, one run of tl_keras from random weights on the embedded
source task (10 shapes, 5,000 training images) at `--image_size` (or the
family's smallest input), `--epochs` epochs at `--lr` (the rate the
trials pick for these networks from random weights; 0 runs the trials),
the rest of the recipe at its defaults. A network trained for 5 epochs is
too weak to say anything about int8: with small margins between classes,
agreement measures noise. Exporting float32 and int8 with
`--max_accuracy_drop=0.01` (the fallback's target: within one point of
Keras on validation). From its metrics.json: Keras's test accuracy, int8's
before the fallback (fully quantized) and after it, agreement with Keras,
the layers kept in float, sizes. Then LiteRT latency (median after warm-up,
1 and 2 threads) of float32 vs int8, on the trained files and, at
`--latency_size`, on the same architecture with random weights (int8
calibrated on random images: latency does not depend on the weights).

Prints one JSON line per family. `--smoke` runs convnet_small, the
smallest registry model (every family goes through the same code), at
32 px with a tiny budget: a check that the script works, not a
measurement.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # pylint: disable=g-import-not-at-top

from tl_keras.export import litert  # pylint: disable=g-import-not-at-top
from tl_keras.export import tflite  # pylint: disable=g-import-not-at-top
from tl_keras import families
from tl_keras.models import applications  # pylint: disable=g-import-not-at-top

SMOKE_FLAGS = ["--max_train_samples=40", "--min_steps=0", "--head_epochs=0",
               "--finetune_epochs=1", "--finetune_lr=1e-3",
               "--calibration_samples=8", "--parity_samples=40"]


def train(family, size, workdir, extra):
  """One tl_keras run on the source task; returns (metrics, seconds, rc)."""
  out = os.path.join(workdir, f"{family}_{size}px")
  command = [sys.executable, os.path.join(REPO, "main.py"),
             f"--model={family}", "--weights=none",
             "--dataset=synthetic_source", f"--image_size={size}",
             "--export=tflite_float32,tflite_int8",
             "--max_accuracy_drop=0.01", f"--output_dir={out}",
             "--overwrite", *extra]
  started = time.time()
  result = subprocess.run(command, capture_output=True, text=True,
                          check=False)
  seconds = time.time() - started
  # Exit 3: int8 is still out of bounds after the fallback; the files and
  # metrics are written for inspection.
  if result.returncode not in (0, 3):
    sys.exit(f"error: {family} run failed (exit {result.returncode}):\n"
             f"{result.stderr[-3000:]}")
  with open(os.path.join(out, "metrics.json"), encoding="utf-8") as f:
    return json.load(f), out, seconds, result.returncode


def latencies(paths, runs):
  """{variant: {threads: median ms}} for {variant: .tflite path}."""
  out = {}
  for variant, path in paths.items():
    out[variant] = {}
    for threads in (1, 2):
      runner = litert.ImageRunner(path, num_threads=threads)
      image = np.random.default_rng(0).integers(
          0, 256, (runner.image_size,) * 2 + (3,), np.uint8)
      out[variant][threads] = round(runner.latency_ms(image, runs=runs), 3)
  return out


def untrained_latencies(family, size, runs):
  """float32 vs int8 latency of the random-weights architecture at `size`."""
  model = applications.build_classifier(family, 10, image_size=size, weights=None)
  calibration = np.random.default_rng(0).integers(
      0, 256, (8, size, size, 3), np.uint8)
  with tempfile.TemporaryDirectory() as tmp:
    paths = {}
    for variant in ("float32", "int8"):
      paths[variant] = os.path.join(tmp, tflite.filename(variant))
      tflite.export(model, variant, paths[variant], serving=families.serving_of(model),
                    class_names=[str(i) for i in range(10)],
                    calibration_images=calibration)
    return latencies(paths, runs)


def row(family, size, metrics, out, seconds, rc, runs):
  """The JSON line of one family."""
  int8 = metrics["tflite"]["int8"]
  fallback = int8.get("fallback")
  before = fallback["test_before"] if fallback else int8
  return {
      "benchmark": "int8_families", "family": family,
      "architecture": applications.get_backbone(family).family, "image_size": size,
      "test_examples": int8["examples"],
      "keras_accuracy": round(int8["keras_accuracy"], 4),
      "int8_before": round(before["accuracy"], 4),
      "agreement_before": round(before["agreement"], 4),
      "int8_after": round(int8["accuracy"], 4),
      "agreement_after": round(int8["agreement"], 4),
      "float32_agreement": round(metrics["tflite"]["float32"]["agreement"], 4),
      "float_layers": len(fallback["float_layers"]) if fallback else 0,
      "float_kind": fallback.get("float_kind") if fallback else None,
      "quantized_layers": fallback["layers"] if fallback else None,
      "worst_layer": (fallback["worst_layers"][0] if fallback else None),
      "within_one_point": (int8["keras_accuracy"] - int8["accuracy"]) <= 0.01,
      "exit_code": rc,
      "size_bytes": {v: metrics["tflite"][v]["size_bytes"]
                     for v in ("float32", "int8")},
      "latency_ms": latencies({v: os.path.join(out, tflite.filename(v))
                               for v in ("float32", "int8")}, runs),
      "train_seconds": round(seconds, 1),
  }


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--families", default=",".join(applications.FAMILY_EXAMPLES))
  parser.add_argument("--image_size", type=int, default=64)
  parser.add_argument("--latency_size", type=int, default=224,
                      help="0: no latency at this size")
  parser.add_argument("--runs", type=int, default=50)
  parser.add_argument("--workdir", default="")
  parser.add_argument("--epochs", type=int, default=15)
  parser.add_argument("--lr", type=float, default=1e-3)
  parser.add_argument("--smoke", action="store_true")
  args = parser.parse_args()
  families = args.families.split(",")
  extra = [f"--finetune_epochs={args.epochs}"] + (
      [f"--finetune_lr={args.lr}"] if args.lr else [])
  if args.smoke:
    families, args.image_size, args.latency_size, args.runs = (
        ["convnet_small"], 32, 32, 3)
    extra = SMOKE_FLAGS
  unknown = [f for f in families if f not in applications.REGISTRY]
  if unknown:
    sys.exit(f"error: unknown --families {', '.join(unknown)}; see "
             "python main.py --list_models")
  workdir = args.workdir or tempfile.mkdtemp(prefix="int8_families_")
  for family in families:
    size = max(args.image_size, applications.get_backbone(family).min_size)
    metrics, out, seconds, rc = train(family, size, workdir, extra)
    line = row(family, size, metrics, out, seconds, rc, args.runs)
    line["training"] = "smoke" if args.smoke else {"epochs": args.epochs,
                                                   "lr": args.lr or "trials"}
    if args.latency_size:
      line["latency_ms_untrained"] = {
          "image_size": args.latency_size,
          **untrained_latencies(family, args.latency_size, args.runs)}
    print(json.dumps(line), flush=True)


if __name__ == "__main__":
  main()
