"""Pruning with quantization: accuracy, size gzipped and latency per file.

    python benchmarks/compression.py [--sparsities=0,0.5,0.75] [--blocks=1,8]
        [--flagfile=flags/shapes.flags | --family=mobilenetv2
         --image_size=96 --source_epochs=15] [--workdir=DIR]

Runs main.py with the flagfile once per `--prune_sparsity` and
`--prune_block` (sparsity 0 is the unpruned model), or, with --family,
pretrains that network on the embedded source task here and transfers it
to the quickstart's task at each setting. Prints one JSON line per run and
TFLite variant:
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
  # Exit 3: a file fell more than --max_accuracy_drop below Keras; it and
  # metrics.json are written, and its row says so.
  if result.returncode not in (0, 3):
    sys.exit(f"error: the run at --prune_sparsity={sparsity} failed:\n"
             + result.stderr[-3000:])
  with open(os.path.join(out, "metrics.json"), encoding="utf-8") as f:
    return json.load(f)


def pretrain(family, size, epochs, workdir):
  """A `family` network trained on the embedded source task from random
  weights (the weights the pruned runs transfer from); its run directory."""
  out = os.path.join(workdir, f"source_{family}_{size}px")
  run(0.0, [f"--model={family}", "--weights=none",
            "--dataset=synthetic_source", f"--image_size={size}",
            f"--finetune_epochs={epochs}", "--finetune_lr=1e-3",
            "--export=saved_model"], out)
  return out


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--sparsities", default="0,0.5,0.75")
  parser.add_argument("--blocks", default="1,8",
                      help="--prune_block values of each pruned run")
  parser.add_argument("--flagfile",
                      default=os.path.join(REPO, "flags", "shapes.flags"))
  parser.add_argument("--family", default="",
                      help="instead of the flagfile: this model, pretrained "
                      "here on the embedded source task, then transferred "
                      "to the quickstart's task")
  parser.add_argument("--image_size", type=int, default=96)
  parser.add_argument("--source_epochs", type=int, default=15)
  parser.add_argument("--workdir", default="")
  parser.add_argument("--smoke", action="store_true")
  args = parser.parse_args()
  sparsities = [float(s) for s in args.sparsities.split(",")]
  blocks = [int(b) for b in args.blocks.split(",")]
  workdir = args.workdir or tempfile.mkdtemp(prefix="compression-")
  flags = [f"--flagfile={os.path.abspath(args.flagfile)}"]
  if args.family:
    source = pretrain(args.family, args.image_size, args.source_epochs,
                      workdir)
    flags = [f"--model={args.family}", f"--weights={source}",
             "--dataset=synthetic", f"--image_size={args.image_size}"]
  if args.smoke:
    sparsities, blocks, flags = [0.0, 0.5], [1], SMOKE
  gzipped = {}
  for sparsity in sparsities:
    for block in blocks if sparsity else [1]:
      pruned_flags = flags + [f"--prune_block={block}"]
      if args.smoke and sparsity:
        # Random weights prune gradually: start from the unpruned run, as
        # from pretrained weights, to prune one-shot.
        pruned_flags = [f for f in flags if not f.startswith("--weights")] + [
            f"--weights={os.path.join(workdir, 's0')}", "--head_epochs=1"]
      name = f"s{sparsity:g}" + (f"_b{block}" if block > 1 else "")
      metrics = run(sparsity, pruned_flags, os.path.join(workdir, name))
      measured = metrics.get("pruning", {}).get("sparsity", 0.0)
      for variant, row in metrics["tflite"].items():
        gzipped.setdefault(variant, {})[(sparsity, block)] = (
            row["compressed_bytes"])
        print(json.dumps({
            "benchmark": "compression", "prune_sparsity": sparsity,
            "prune_block": block, "measured_sparsity": round(measured, 4),
            "variant": variant, "accuracy": row["accuracy"],
            "keras_accuracy": row["keras_accuracy"],
            "agreement": row["agreement"], "size_bytes": row["size_bytes"],
            "compressed_bytes": row["compressed_bytes"],
            "latency_ms_1_thread": round(row["latency_ms_1_thread"], 4),
            "latency_ms_2_threads": round(row["latency_ms"], 4)}), flush=True)
  for variant, sizes in gzipped.items():
    if (0.0, 1) in sizes:
      print(json.dumps({
          "benchmark": "compression", "variant": variant,
          "gzipped_vs_unpruned": {
              f"{s:g}" + (f"/{b}" if b > 1 else ""): round(
                  n / sizes[(0.0, 1)], 3)
              for (s, b), n in sizes.items() if s}}))


if __name__ == "__main__":
  main()
