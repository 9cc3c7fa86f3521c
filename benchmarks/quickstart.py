"""The quickstart run (`make demo`), as the README reports it.

    python benchmarks/quickstart.py [--seeds=42,0,1] [--smoke]

Runs main.py with `flags/quickstart.flags` (ImageNet EfficientNet-Lite0 to
scikit-learn's digits at 64 px, every recipe setting at its default) plus
`--compare_scratch`, once per seed; 42 is the demo's own seed. One JSON
line per seed ("arm": "run"): test accuracy of the model the run exports,
the phase-1 probe head's validation accuracy, the scratch baseline's test
accuracy (the same network, recipe and step budget from random weights),
which phase the run kept, the wall time with and without the baseline,
and per TFLite file its test accuracy, agreement with Keras, size, gzipped
size and median latency on 1 and 2 threads. `--smoke`: tiny budgets, one
seed: a check that the script runs, not a measurement.
"""

import argparse
import json
import os
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from transfer_suite import main_py  # pylint: disable=g-import-not-at-top,wrong-import-position

SMOKE = ["--image_size=32", "--max_train_samples=60", "--min_steps=0",
         "--head_epochs=1", "--finetune_epochs=1", "--finetune_lr=1e-3",
         "--batchnorm=frozen", "--calibration_samples=8",
         "--parity_samples=20", "--export=tflite_float32,tflite_int8"]


def run(seed, workdir, smoke):
  out = os.path.join(workdir, f"seed{seed}")
  metrics, record, seconds = main_py(
      ["--flagfile=flags/quickstart.flags", "--compare_scratch",
       f"--seed={seed}", *(SMOKE if smoke else [])], out)
  head = next(h for h in record["history"] if h["phase"] == "head")
  return {"benchmark": "quickstart", "arm": "run", "seed": seed,
          "sizes": record["data"]["sizes"],
          "test": metrics["test"]["accuracy"],
          "probe_validation": head["val_accuracy"],
          "scratch_test": metrics["scratch"]["test"]["accuracy"],
          "kept": record["recipe"].get("kept"),
          "exported": metrics.get("kept", {}).get("model", "transfer"),
          "seconds": round(seconds, 1),
          "scratch_seconds": round(record["timings"]["scratch_seconds"], 1),
          "tflite": {v: {k: r.get(k) for k in (
              "accuracy", "agreement", "size_bytes", "compressed_bytes",
              "latency_ms_1_thread", "latency_ms", "examples")}
                     for v, r in metrics.get("tflite", {}).items()}}


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--seeds", default="42,0,1")
  parser.add_argument("--workdir", default="")
  parser.add_argument("--smoke", action="store_true")
  args = parser.parse_args()
  seeds = [42] if args.smoke else [int(s) for s in args.seeds.split(",")]
  workdir = args.workdir or tempfile.mkdtemp(prefix="quickstart_")
  for seed in seeds:
    print(json.dumps(run(seed, workdir, args.smoke)), flush=True)


if __name__ == "__main__":
  main()
