"""ResNet50 at 224 px, full fine-tune: training images/s on a GPU.

    python benchmarks/gpu_throughput.py [--batch_size=256 --steps=50]

Compares the tl_keras training step (`training.steps.step_functions`, the one
`train_phase` runs) with mixed bfloat16 + XLA against float32 without XLA,
on a batch held on the device (so the input pipeline is out of the
picture; `pipeline.py` measures that). Prints one JSON line per setting
with images/s and the share of the GPU's dense bf16 peak this implies, at
about 24.7 GFLOP per training image (3x the 8.2 GFLOP forward pass of
ResNet50 at 224 px). Without a GPU it prints a line saying so and exits 0.
"""

import argparse
import json
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import keras  # pylint: disable=g-import-not-at-top
import tensorflow as tf  # pylint: disable=g-import-not-at-top

from tl_keras.models import applications  # pylint: disable=g-import-not-at-top
from tl_keras import training  # pylint: disable=g-import-not-at-top

GFLOP_PER_IMAGE = 24.7
# Dense bf16 tensor-core peaks, TFLOP/s, by a substring of the device name.
PEAK_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L4": 121.0}


def throughput(policy, jit, batch_size, steps, num_classes=1000):
  keras.mixed_precision.set_dtype_policy(policy)
  keras.utils.set_random_seed(0)
  strategy = tf.distribute.get_strategy()
  model = applications.build_classifier("resnet50", num_classes, image_size=224,
                                  weights=None, frozen_base=False)
  spec = training.PhaseSpec("finetune", 1, 1e-4, jit_compile=jit)
  optimizer = training.make_optimizer(spec, steps + 10)
  optimizer.build(model.trainable_variables)
  train_steps, _ = training.steps.step_functions(
      model, optimizer, strategy, num_classes, batch_size, 0.0, jit)
  images = tf.random.uniform((batch_size, 224, 224, 3), 0, 255)
  labels = tf.random.uniform((batch_size,), 0, num_classes, tf.int32)
  batches = tf.data.Dataset.from_tensors((images, labels)).repeat()
  iterator = iter(strategy.experimental_distribute_dataset(batches))
  for _ in range(5):  # tracing, autotuning, XLA compilation
    loss, _ = train_steps(iterator, tf.constant(1))
  float(loss)
  start = time.perf_counter()
  loss, _ = train_steps(iterator, tf.constant(steps))  # one call, as training
  float(loss)  # waits for the device
  seconds = time.perf_counter() - start
  keras.mixed_precision.set_dtype_policy("float32")
  return steps * batch_size / seconds


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--batch_size", type=int, default=256)
  parser.add_argument("--steps", type=int, default=50)
  args = parser.parse_args()
  gpus = tf.config.list_physical_devices("GPU")
  if not gpus:
    print(json.dumps({"benchmark": "gpu_throughput", "skipped": "no GPU"}))
    return
  name = tf.config.experimental.get_device_details(gpus[0]).get(
      "device_name", "GPU")
  peak = next((v for k, v in PEAK_TFLOPS.items() if k in name), None)
  for policy, jit in (("float32", False), ("mixed_bfloat16", True)):
    rate = throughput(policy, jit, args.batch_size, args.steps)
    print(json.dumps({
        "benchmark": "gpu_throughput", "device": name, "model": "resnet50",
        "image_size": 224, "batch_size": args.batch_size, "policy": policy,
        "xla": jit, "images_per_second": round(rate, 1),
        "share_of_bf16_peak": (round(rate * GFLOP_PER_IMAGE / 1e3 / peak, 3)
                               if peak else None)}), flush=True)


if __name__ == "__main__":
  main()
