"""The output directory: refuse to clobber a run, write atomically.

Artifacts are written into a staging folder inside the output directory and
moved into place only when all of them are complete, so a failed or killed
run leaves the previous artifacts (or none), never half-written ones.
"""

import contextlib
import csv
import fcntl
import importlib.util
import json
import os
import shutil
import tempfile

from tl_keras.errors import UserError

# What a finished run leaves; any of them means "a run is here".
RUN_ARTIFACTS = ("run.json", "metrics.json", "model.keras", "saved_model",
                 "labels.txt", "tensorboard", "model_float32.tflite",
                 "model_float16.tflite", "model_dynamic.tflite",
                 "model_int8.tflite", "model_int16x8.tflite", "report.html",
                 "README.md", "learning_curves.png", "confusion_matrix.png",
                 "preset", "vocab.txt")


CHECKPOINTS = "checkpoints"
# Files only a finished run has.
FINISHED = ("run.json", "metrics.json", "model.keras")


def prepare(output_dir, overwrite=False):
  """Checks `output_dir` is usable before any work starts.

  Returns:
    True when it holds an unfinished run's checkpoints to resume from.

  Raises:
    UserError: it holds a run (without `overwrite`), is a file, or is not
      writable.
  """
  if os.path.exists(output_dir) and not os.path.isdir(output_dir):
    raise UserError(f"--output_dir={output_dir} is a file, not a directory")
  check_writable(output_dir, flag="output_dir")
  existing = [a for a in RUN_ARTIFACTS
              if os.path.exists(os.path.join(output_dir, a))]
  progress = os.path.join(output_dir, CHECKPOINTS, "progress.json")
  if overwrite:
    # Old event files would mix with the new run's curves.
    for name in ("tensorboard", CHECKPOINTS):
      shutil.rmtree(os.path.join(output_dir, name), ignore_errors=True)
    return False
  finished = [a for a in FINISHED if a in existing]
  if not finished and os.path.exists(progress):
    return True
  if existing == ["tensorboard"]:
    # A run stopped before its first checkpoint (killed during the feature
    # pass, say) leaves only its event files: nothing to keep or resume.
    shutil.rmtree(os.path.join(output_dir, "tensorboard"), ignore_errors=True)
    return False
  if existing:
    raise UserError(
        f"--output_dir={output_dir} already holds a run "
        f"({', '.join(existing)}); pass --overwrite to replace it or choose "
        "another --output_dir")
  return False


def check_writable(directory, flag="run_dir"):
  """Creates `directory` if needed and proves a file can be written in it."""
  try:
    os.makedirs(directory, exist_ok=True)
    with tempfile.TemporaryFile(dir=directory):
      pass
  except OSError as e:
    raise UserError(f"cannot write to --{flag}={directory}: "
                    f"{e.strerror or e}; choose a writable directory") from e


@contextlib.contextmanager
def locked(directory, flag="output_dir"):
  """Holds an exclusive lock on `directory` for one run at a time.

  A second run (or export) pointed at the same directory while the first
  holds the lock is refused. The lock is on the directory itself, not on a
  file in it: a run that fails leaves nothing behind, and the lock dies
  with its process, so a killed run never leaves a stale one.

  Raises:
    UserError: another process holds the lock, or the directory is not
      writable.
  """
  check_writable(directory, flag=flag)
  fd = os.open(directory, os.O_RDONLY)
  try:
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
      raise UserError(f"another tl_keras process is writing to --{flag}="
                      f"{directory}; wait for it to finish or choose another "
                      "directory") from e
    try:
      yield
    finally:
      fcntl.flock(fd, fcntl.LOCK_UN)
  finally:
    os.close(fd)


@contextlib.contextmanager
def staged(output_dir):
  """Yields a staging directory; on success its entries replace the old.

  On an exception the staging directory is removed and nothing in
  `output_dir` changes.
  """
  stage = tempfile.mkdtemp(prefix=".staging-", dir=output_dir)
  try:
    try:
      yield stage
    except OSError as e:  # a full disk, a quota, a vanished mount
      raise UserError(
          f"could not write the artifacts to {output_dir}: "
          f"{e.strerror or e}; nothing there was changed; free space or "
          "choose another directory") from e
    for name in sorted(os.listdir(stage)):
      target = os.path.join(output_dir, name)
      if os.path.isdir(target) and not os.path.islink(target):
        shutil.rmtree(target)
      os.replace(os.path.join(stage, name), target)
  finally:
    shutil.rmtree(stage, ignore_errors=True)


def write_json(path, obj):
  """Writes JSON atomically: a temp file in the same folder, then rename."""
  def write(f):
    json.dump(obj, f, indent=2, ensure_ascii=False)
    f.write("\n")
  _write_atomically(path, write)


def write_csv(path, header, rows):
  """Writes a CSV file atomically, as `write_json` does."""
  def write(f):
    writer = csv.writer(f)
    writer.writerow(header)
    writer.writerows(rows)
  _write_atomically(path, write, newline="")


def _write_atomically(path, write, newline=None):
  """`write(file)` into a temp file in the same folder, then a rename: a
  reader never sees half a file, and a failure leaves none."""
  fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path) or ".", suffix=".tmp")
  try:
    with os.fdopen(fd, "w", encoding="utf-8", newline=newline) as f:
      write(f)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes it private
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise


def _umask():
  mask = os.umask(0)
  os.umask(mask)
  return mask


def write_labels(path, class_names):
  with open(path, "w", encoding="utf-8") as f:
    f.write("".join(f"{name}\n" for name in class_names))


def read_labels(path):
  with open(path, encoding="utf-8") as f:
    return [line.rstrip("\n") for line in f if line.rstrip("\n")]


def cache_dir():
  """Where tl_keras keeps what it makes once and reuses: source-task
  weights, unpacked packaged models ($TL_KERAS_CACHE or ~/.keras/tl_keras)."""
  return os.environ.get("TL_KERAS_CACHE") or os.path.join(
      os.path.expanduser("~"), ".keras", "tl_keras")


def package_dir(module):
  """The folder of the installed package `module`, found without importing
  it (weights and data that packages ship are read from there); None when
  it is not installed."""
  spec = importlib.util.find_spec(module)
  return os.path.dirname(spec.origin) if spec and spec.origin else None
