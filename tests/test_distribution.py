"""Strategies: two worker processes on localhost, two mirrored CPU devices."""

import json
import os
import re
import socket
import subprocess
import sys
import textwrap

from tests.conftest import REPO


def _free_ports(n):
  sockets = [socket.socket() for _ in range(n)]
  for s in sockets:
    s.bind(("localhost", 0))
  ports = [s.getsockname()[1] for s in sockets]
  for s in sockets:
    s.close()
  return ports


def test_two_workers_train_alike_and_only_the_chief_writes(tmp_path):
  ports = _free_ports(2)
  cluster = {"worker": [f"localhost:{p}" for p in ports]}
  out = tmp_path / "out"
  processes = []
  try:
    for index in range(2):
      env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "TF_CONFIG": json.dumps(
          {"cluster": cluster, "task": {"type": "worker", "index": index}})}
      processes.append(subprocess.Popen(
          [sys.executable, os.path.join(REPO, "main.py"),
           "--model=convnet_small", "--weights=none", "--batch_size=16",
           "--head_epochs=1", "--finetune_epochs=1", "--unfreeze=all",
           "--strategy=multi_worker_mirrored", "--export=saved_model",
           f"--output_dir={out}"],
          cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
          text=True))
    results = [p.communicate(timeout=300) for p in processes]
  finally:
    for p in processes:
      p.kill()
  for p, (_, err) in zip(processes, results):
    assert p.returncode == 0, err[-3000:]
  fingerprints = [re.search(r"final weights fingerprint (\w+)", err).group(1)
                  for _, err in results]
  assert fingerprints[0] == fingerprints[1]
  assert re.search(r"strategy \w+ with 2 replica", results[0][1])
  run = json.loads((out / "run.json").read_text())
  assert run["strategy"]["flag"] == "multi_worker_mirrored"
  assert run["strategy"]["replicas"] == 2
  assert run["model"]["weights_fingerprint"] == fingerprints[0]
  # Worker 1 wrote nothing: the chief's files are all there is.
  assert sorted(os.listdir(out)) == sorted(
      [".tl_keras.lock", "labels.txt", "metrics.json", "model.keras",
       "run.json", "saved_model", "tensorboard"])


MIRRORED_SCRIPT = textwrap.dedent("""
    import sys
    import numpy as np
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras
    from tl_keras import data, models, training

    splits = data.load("synthetic", max_train_samples=64)

    def train(strategy):
      keras.utils.set_random_seed(0)
      with strategy.scope():
        # No dropout: its masks are drawn per replica.
        model = models.build_classifier("convnet_small", splits.num_classes,
                                        image_size=32, dropout=0.0)
      spec = training.PhaseSpec("head", 2, 1e-2, optimizer="sgd")
      training.train_phase(model, spec, splits, strategy=strategy,
                           image_size=32, batch_size=16, seed=0,
                           augment=False)
      return model.get_weights(), strategy.num_replicas_in_sync

    one, n1 = train(tf.distribute.OneDeviceStrategy("/cpu:0"))
    two, n2 = train(tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]))
    assert (n1, n2) == (1, 2), (n1, n2)
    diff = max(float(np.abs(a - b).max()) for a, b in zip(one, two))
    print("max weight difference", diff)
    sys.exit(0 if diff < 1e-4 else 1)
""")


def test_mirrored_on_two_devices_matches_one_device():
  result = subprocess.run(
      [sys.executable, "-c", MIRRORED_SCRIPT], cwd=REPO, capture_output=True,
      text=True, timeout=300, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
      check=False)
  assert result.returncode == 0, result.stdout + result.stderr[-3000:]
  assert "max weight difference" in result.stdout
