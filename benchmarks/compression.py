"""Pruning with quantization: accuracy, size gzipped and latency per file.

    python benchmarks/compression.py [--sparsities=0,0.5,0.75]
        [--flagfile=flags/quickstart.flags] [--workdir=DIR]

Runs main.py with the flagfile once per `--prune_sparsity` (0 is the
unpruned model) and prints one JSON line per sparsity and TFLite variant:
test accuracy, agreement with Keras, size on disk and gzipped, median
single-example latency on 1 and 2 threads (the run's parity rows), and the
sparsity measured in the model. Then, for each variant, the gzipped size of
each pruned file relative to the unpruned one. --smoke: a tiny run from
random weights at sparsity 0, then one from its weights at 0.5 (one-shot
pruning), for the test suite.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMOKE = ["--model=convnet_small", "--weights=none", "--min_steps=0",
         "--finetune_epochs=2", "--finetune_lr=1e-3", "--batch_size=16",
         "--max_train_samples=64", "--export=tflite_float32,tflite_int8",
         "--parity_samples=50"]


def run(sparsity, flags, out):
  """metrics.json of a main.py run at `sparsity`."""
  result = subprocess.run(
      [sys.executable, os.path.join(REPO, "main.py"), *flags,
       f"--prune_sparsity={sparsity}", f"--output_dir={out}", "--overwrite"],
      cwd=REPO, capture_output=True, text=True, check=False,
      env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
  if result.returncode:
    sys.exit(f"error: the run at --prune_sparsity={sparsity} failed:\n"
             + result.stderr[-3000:])
  with open(os.path.join(out, "metrics.json"), encoding="utf-8") as f:
    return json.load(f)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--sparsities", default="0,0.5,0.75")
  parser.add_argument("--flagfile",
                      default=os.path.join(REPO, "flags", "quickstart.flags"))
  parser.add_argument("--workdir", default="")
  parser.add_argument("--smoke", action="store_true")
  args = parser.parse_args()
  sparsities = [float(s) for s in args.sparsities.split(",")]
  flags = [f"--flagfile={os.path.abspath(args.flagfile)}"]
  if args.smoke:
    sparsities, flags = [0.0, 0.5], SMOKE
  workdir = args.workdir or tempfile.mkdtemp(prefix="compression-")
  gzipped = {}
  for sparsity in sparsities:
    pruned_flags = flags
    if args.smoke and sparsity:
      # Random weights prune gradually: start from the unpruned run, as
      # from pretrained weights, to prune one-shot.
      pruned_flags = [f for f in flags if not f.startswith("--weights")] + [
          f"--weights={os.path.join(workdir, 's0')}", "--head_epochs=1"]
    metrics = run(sparsity, pruned_flags,
                  os.path.join(workdir, f"s{sparsity:g}"))
    measured = metrics.get("pruning", {}).get("sparsity", 0.0)
    for variant, row in metrics["tflite"].items():
      gzipped.setdefault(variant, {})[sparsity] = row["compressed_bytes"]
      print(json.dumps({
          "benchmark": "compression", "prune_sparsity": sparsity,
          "measured_sparsity": round(measured, 4), "variant": variant,
          "accuracy": row["accuracy"], "keras_accuracy": row["keras_accuracy"],
          "agreement": row["agreement"], "size_bytes": row["size_bytes"],
          "compressed_bytes": row["compressed_bytes"],
          "latency_ms_1_thread": round(row["latency_ms_1_thread"], 4),
          "latency_ms_2_threads": round(row["latency_ms"], 4)}), flush=True)
  for variant, sizes in gzipped.items():
    if 0.0 in sizes:
      print(json.dumps({
          "benchmark": "compression", "variant": variant,
          "gzipped_vs_unpruned": {f"{s:g}": round(b / sizes[0.0], 3)
                                  for s, b in sizes.items() if s}}))


if __name__ == "__main__":
  main()
