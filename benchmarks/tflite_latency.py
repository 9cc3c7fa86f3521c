"""Size and latency of each TFLite variant of a finished run.

    python benchmarks/tflite_latency.py runs/quickstart [--threads=1,2]
    python benchmarks/tflite_latency.py runs/quickstart_text

Prints one JSON line per variant and thread count: file size, and the median
single-example latency under the LiteRT interpreter after warm-up. Image
runs: a fixed random uint8 image of the model's input size. Text runs: a
fixed sentence, tokenized with the run's vocab.txt and padded to the file's
sequence length (the latency does not depend on the words).
"""

import argparse
import glob
import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # pylint: disable=g-import-not-at-top

from tl_keras.export import litert  # pylint: disable=g-import-not-at-top
from tl_keras.export import serving  # pylint: disable=g-import-not-at-top
from tl_keras.export import tflite  # pylint: disable=g-import-not-at-top

SENTENCE = "a short sentence to classify"


def example(path, threads):
  """(runner, one input, its description) for the file at `path`."""
  metadata = tflite.read_metadata(path) or {}
  if metadata.get("tokenizer"):
    runner = serving.KINDS[metadata["kind"]].runner(path, threads)
    inputs = litert.tokens(runner.preprocessor(), [SENTENCE],
                           metadata.get("inputs", litert.TEXT_INPUTS))
    return runner, inputs, "int32 tokens 1x%d" % inputs["token_ids"].shape[1]
  runner = litert.ImageRunner(path, num_threads=threads)
  size = runner.image_size
  image = np.random.default_rng(0).integers(0, 256, (size, size, 3), np.uint8)
  return runner, image, f"{runner.input['dtype'].__name__} {size}x{size}x3"


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("run_dir")
  parser.add_argument("--threads", default="1,2")
  parser.add_argument("--runs", type=int, default=200)
  args = parser.parse_args()
  paths = sorted(glob.glob(os.path.join(args.run_dir, "model_*.tflite")))
  if not paths:
    sys.exit(f"error: no model_*.tflite in {args.run_dir}; export them with "
             "--mode=export")
  for threads in (int(t) for t in args.threads.split(",")):
    for path in paths:
      runner, one, described = example(path, threads)
      print(json.dumps({
          "benchmark": "tflite_latency", "file": os.path.basename(path),
          "size_bytes": os.path.getsize(path), "threads": threads,
          "median_ms": round(runner.latency_ms(one, runs=args.runs), 4),
          "input": described}), flush=True)


if __name__ == "__main__":
  main()
