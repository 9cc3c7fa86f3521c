"""Size and latency of each TFLite variant of a finished run.

    python benchmarks/tflite_latency.py runs/quickstart [--threads=1,2]

Prints one JSON line per variant and thread count: file size, and the median
single-image latency under the LiteRT interpreter after warm-up, on a fixed
random uint8 image of the model's input size.
"""

import argparse
import glob
import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # pylint: disable=g-import-not-at-top

from tl_keras import tflite  # pylint: disable=g-import-not-at-top


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
      runner = tflite.Runner(path, num_threads=threads)
      size = runner.image_size
      image = np.random.default_rng(0).integers(0, 256, (size, size, 3),
                                                np.uint8)
      print(json.dumps({
          "benchmark": "tflite_latency", "file": os.path.basename(path),
          "size_bytes": os.path.getsize(path), "threads": threads,
          "median_ms": round(runner.latency_ms(image, runs=args.runs), 4),
          "input": f"{runner.input['dtype'].__name__} {size}x{size}x3"}),
            flush=True)


if __name__ == "__main__":
  main()
