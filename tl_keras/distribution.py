"""tf.distribute strategies by name. Built once, in main.py, and passed down."""

import logging

import tensorflow as tf


def _auto(tpu):
  if tpu:
    return _tpu(tpu)
  gpus = tf.config.list_logical_devices("GPU")
  if len(gpus) >= 2:
    return tf.distribute.MirroredStrategy()
  return tf.distribute.get_strategy()


def _one_device(tpu):
  del tpu
  gpus = tf.config.list_logical_devices("GPU")
  return tf.distribute.OneDeviceStrategy(gpus[0].name if gpus else "/cpu:0")


def _tpu(tpu):
  resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu or "")
  tf.config.experimental_connect_to_cluster(resolver)
  tf.tpu.experimental.initialize_tpu_system(resolver)
  return tf.distribute.TPUStrategy(resolver)


STRATEGIES = {
    "auto": _auto,
    "default": lambda tpu: tf.distribute.get_strategy(),
    "one_device": _one_device,
    "mirrored": lambda tpu: tf.distribute.MirroredStrategy(),
    # Cluster from TF_CONFIG, as Kubernetes, Vertex AI and Slurm launchers set.
    "multi_worker_mirrored":
        lambda tpu: tf.distribute.MultiWorkerMirroredStrategy(),
    "tpu": _tpu,
}


def build_strategy(name="auto", tpu=""):
  """Returns the `tf.distribute.Strategy` called `name`."""
  strategy = STRATEGIES[name](tpu)
  logging.info("strategy %s with %d replica(s)", type(strategy).__name__,
               strategy.num_replicas_in_sync)
  return strategy


def resolve_mixed_precision(flag):
  """--mixed_precision as a Keras dtype policy name ("float32" when off)."""
  if flag == "off":
    return "float32"
  if flag != "auto":
    return flag
  if tf.config.list_logical_devices("TPU"):
    return "mixed_bfloat16"
  capabilities = [
      tf.config.experimental.get_device_details(gpu).get(
          "compute_capability", (0, 0))
      for gpu in tf.config.list_physical_devices("GPU")]
  if not capabilities:
    return "float32"  # CPUs gain nothing and lose precision
  return "mixed_bfloat16" if min(capabilities) >= (8, 0) else "mixed_float16"


def resolve_jit_compile(flag):
  """--jit_compile as a bool: auto = on when a GPU is present."""
  if flag == "auto":
    return bool(tf.config.list_physical_devices("GPU"))
  return flag == "on"


def is_chief(strategy):
  """Whether this process writes artifacts (one process per cluster does)."""
  resolver = getattr(strategy, "cluster_resolver", None)
  if resolver is None or not resolver.task_type:
    return True
  if resolver.task_type == "chief":
    return True
  has_chief = "chief" in resolver.cluster_spec().as_dict()
  return resolver.task_type == "worker" and resolver.task_id == 0 and (
      not has_chief)
