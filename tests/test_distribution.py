"""Strategies: two worker processes on localhost, two mirrored CPU devices."""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import time

from tests.conftest import REPO


def _free_ports(n):
  sockets = [socket.socket() for _ in range(n)]
  for s in sockets:
    s.bind(("localhost", 0))
  ports = [s.getsockname()[1] for s in sockets]
  for s in sockets:
    s.close()
  return ports


def _workers(cluster, args, logs):
  """Starts one main.py process per worker of `cluster`, stderr to `logs`."""
  processes = []
  for index, log in enumerate(logs):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "TF_CONFIG": json.dumps(
        {"cluster": cluster, "task": {"type": "worker", "index": index}})}
    with open(log, "w", encoding="utf-8") as err:
      processes.append(subprocess.Popen(
          [sys.executable, os.path.join(REPO, "main.py"), *args], cwd=REPO,
          env=env, stdout=subprocess.DEVNULL, stderr=err))
  return processes


def _wait(processes, timeout=300):
  try:
    return [p.wait(timeout=timeout) for p in processes]
  finally:
    for p in processes:
      p.kill()


def test_two_workers_stop_together_resume_train_alike_chief_writes(tmp_path):
  cluster = {"worker": [f"localhost:{p}" for p in _free_ports(2)]}
  out = tmp_path / "out"
  args = ["--model=convnet_small", "--weights=none", "--batch_size=16",
          "--min_steps=0", "--head_epochs=1", "--finetune_epochs=2",
          "--finetune_lr=1e-3", "--batchnorm=train", "--unfreeze=all",
          "--strategy=multi_worker_mirrored", "--export=saved_model",
          f"--output_dir={out}"]
  logs = [tmp_path / f"worker{i}.log" for i in range(2)]
  # SIGTERM reaches only worker 1 (not the chief), once training runs:
  # both workers checkpoint at the same step and exit.
  processes = _workers(cluster, args, logs)
  deadline = time.time() + 240
  while "phase finetune:" not in logs[1].read_text() and (
      time.time() < deadline and processes[1].poll() is None):
    time.sleep(0.1)
  processes[1].send_signal(signal.SIGTERM)
  codes = _wait(processes)
  err = [log.read_text() for log in logs]
  assert codes == [143, 143], err[0][-3000:] + err[1][-3000:]
  assert "stopped by SIGTERM" in err[1]
  assert "with the other workers of the cluster" in err[0]
  assert (out / "checkpoints" / "progress.json").exists()

  # The same command resumes on both and finishes.
  codes = _wait(_workers(cluster, args, logs))
  err = [log.read_text() for log in logs]
  assert codes == [0, 0], err[0][-3000:] + err[1][-3000:]
  assert all("resuming at phase finetune" in e for e in err)
  fingerprints = [re.search(r"final weights fingerprint (\w+)", e).group(1)
                  for e in err]
  assert fingerprints[0] == fingerprints[1]
  assert re.search(r"strategy \w+ with 2 replica", err[0])
  run = json.loads((out / "run.json").read_text())
  assert run["strategy"]["flag"] == "multi_worker_mirrored"
  assert run["strategy"]["replicas"] == 2
  assert run["model"]["weights_fingerprint"] == fingerprints[0]
  # Worker 1 wrote nothing: the chief's files are all there is.
  written = set(os.listdir(out)) - {"top_losses.png"}  # if any mistake
  assert written == {"README.md", "confusion_matrix.png", "labels.txt",
                     "learning_curves.png", "metrics.json", "model.keras",
                     "report.html", "run.json", "saved_model",
                     "suspect_labels.csv", "tensorboard"}


# The end of each mirrored script: `train(strategy)` under one device and
# under two mirrored CPUs must give the same weights.
_COMPARE = textwrap.dedent("""
    one, n1 = train(tf.distribute.OneDeviceStrategy("/cpu:0"))
    two, n2 = train(tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]))
    assert (n1, n2) == (1, 2), (n1, n2)
    diff = max(float(np.abs(a - b).max()) for a, b in zip(one, two))
    print("max weight difference", diff)
    sys.exit(0 if diff < 1e-4 else 1)
""")

MIRRORED_SCRIPT = textwrap.dedent("""
    import sys
    import numpy as np
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras
    from tl_keras import training
    from tl_keras.data import datasets
    from tl_keras.models import applications

    splits = datasets.load("synthetic", max_train_samples=64)

    def train(strategy):
      keras.utils.set_random_seed(0)
      with strategy.scope():
        # No dropout: its masks are drawn per replica.
        model = applications.build_classifier(
            "convnet_small", splits.num_classes, image_size=32, dropout=0.0)
      spec = training.PhaseSpec("head", 2, 1e-2, optimizer="sgd")
      training.train_phase(model, spec, splits,
                           training.Context(strategy, 32, 16, augment=False))
      return model.get_weights(), strategy.num_replicas_in_sync

""") + _COMPARE


def test_mirrored_on_two_devices_matches_one_device():
  result = subprocess.run(
      [sys.executable, "-c", MIRRORED_SCRIPT], cwd=REPO, capture_output=True,
      text=True, timeout=300, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
      check=False)
  assert result.returncode == 0, result.stdout + result.stderr[-3000:]
  assert "max weight difference" in result.stdout


def test_mixed_precision_auto_is_off_on_cpu():
  from tl_keras import distribution  # pylint: disable=g-import-not-at-top
  assert distribution.resolve_mixed_precision("auto") == "float32"
  assert distribution.resolve_mixed_precision("mixed_bfloat16") == (
      "mixed_bfloat16")
  assert distribution.resolve_jit_compile("auto") is False


def test_mixed_bfloat16_with_xla_trains_and_exports_float32(tmp_path):
  from tests.helpers import run_main  # pylint: disable=g-import-not-at-top
  from tl_keras.export import litert  # pylint: disable=g-import-not-at-top
  out = tmp_path / "out"
  result = run_main("--model=convnet_small", "--weights=none",
                    "--batch_size=16", "--min_steps=0", "--finetune_epochs=1",
                    "--finetune_lr=1e-3", "--mixed_precision=mixed_bfloat16",
                    "--jit_compile=on", "--export=saved_model,tflite_float32",
                    f"--output_dir={out}")
  assert result.returncode == 0, result.stderr[-3000:]
  run = json.loads((out / "run.json").read_text())
  assert run["precision"]["policy"] == "mixed_bfloat16"
  assert run["precision"]["jit_compile"] is True
  runner = litert.ImageRunner(str(out / "model_float32.tflite"))
  assert runner.output["dtype"].__name__ == "float32"
  assert not {d for ds in runner.op_dtypes().values() for d in ds} & {
      "bfloat16", "float16"}
  metrics = json.loads((out / "metrics.json").read_text())
  assert metrics["tflite"]["float32"]["agreement"] >= 0.95


def test_loss_scale_skips_overflow_and_adapts():
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from tl_keras import training  # pylint: disable=g-import-not-at-top
  scale = training.LossScale(initial=8.0, growth_steps=2)
  grads = scale.unscale([tf.constant([8.0, 16.0])])
  assert grads[0].numpy().tolist() == [1.0, 2.0]
  assert float(scale.scale.numpy()) == 8.0
  scale.unscale([tf.constant([8.0])])  # the second finite step: grow
  assert float(scale.scale.numpy()) == 16.0
  grads = scale.unscale([tf.constant([float("inf"), 1.0])])
  assert grads[0].numpy().tolist() == [0.0, 0.0]  # the step is skipped
  assert float(scale.scale.numpy()) == 8.0 and int(scale.good_steps.numpy()) == 0


TEXT_MIRRORED_SCRIPT = textwrap.dedent("""
    import sys, tempfile
    import numpy as np
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras, keras_hub
    from tl_keras import families, training
    from tl_keras.data import datasets, text_data
    from tl_keras.models import text_models

    preset = tempfile.mkdtemp()
    tokenizer = keras_hub.models.BertTokenizer(
        vocabulary=text_models.micro_vocabulary(), lowercase=True)
    keras_hub.models.BertBackbone(  # no dropout: masks differ per replica
        vocabulary_size=tokenizer.vocabulary_size(), num_layers=2,
        num_heads=2, hidden_dim=16, intermediate_dim=32,
        max_sequence_length=32, dropout=0.0).save_to_preset(preset)
    tokenizer.save_to_preset(preset)
    raw = datasets.limited(text_data.load("synthetic_text"), "synthetic_text", 64)

    def train(strategy):
      keras.utils.set_random_seed(0)
      with strategy.scope():
        model = text_models.build_classifier(
            preset, raw.num_classes, sequence_length=24,
            weights="pretrained", dropout=0.0)
      splits = text_data.tokenized_splits(raw, model.preprocessor)
      recipe = training.Recipe(
          head=training.PhaseSpec("head", 1, 1e-2, optimizer="sgd"),
          finetune=training.PhaseSpec("finetune", 1, 1e-2, optimizer="sgd"),
          unfreeze=("layers", 1))
      # The head is fitted on this host from cached features, then phase
      # 2 runs on the replicas.
      training.run_recipe(model, recipe, splits,
                          training.Context(strategy, None, 16, augment=False,
                                           family=families.of(model)))
      return model.get_weights(), strategy.num_replicas_in_sync

""") + _COMPARE


def test_text_model_mirrored_on_two_devices_matches_one_device():
  result = subprocess.run(
      [sys.executable, "-c", TEXT_MIRRORED_SCRIPT], cwd=REPO,
      capture_output=True, text=True, timeout=300,
      env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}, check=False)
  assert result.returncode == 0, result.stdout + result.stderr[-3000:]
  assert "max weight difference" in result.stdout
