"""What a run prints: TensorFlow's start-up and internal logs kept out.

On every CPU machine TensorFlow's C++ start-up logs a CUDA probe failure,
oneDNN and CPU-feature notes, before absl's C++ logging is initialized, so
TF_CPP_MIN_LOG_LEVEL does not reach them; its Python side logs SavedModel
internals ("Sharding callback duration", "Assets written to") at INFO.
`quiet_tensorflow` loads TensorFlow with those held back and filters its
Python logs below warnings; `filtered_stderr` does the same for the TFLite
converter's and LiteRT's notes. Anything else still comes through.
"""

import contextlib
import logging
import os
import re
import sys
import tempfile

# Start-up records of TF's C++ logging (I/W/E0000: written before absl's
# logging starts) and the notice that precedes them; the TFLite converter's
# and LiteRT's notes on stderr.
_NOISE = re.compile(
    r"^(WARNING: All log messages before absl::InitializeLog\(\)|"
    r"[IW]0000 |E0000 .*(cuInit|cuda|CUDA)|fully_quantize: \d|"
    r"INFO: Created TensorFlow Lite XNNPACK delegate)")
_RECORD = re.compile(r"^([IWEF]\d{4} |WARNING|ERROR|INFO|Traceback)")


def without_noise(lines):
  """The lines of `lines` to show: TensorFlow's known notes left out.

  A record's continuation lines (those that do not start a new record) go
  with it.
  """
  kept, dropping = [], False
  for line in lines:
    if _NOISE.match(line):
      dropping = True
    elif dropping and not _RECORD.match(line):
      pass
    else:
      dropping = False
      kept.append(line)
  return kept


@contextlib.contextmanager
def filtered_stderr():
  """Holds what native code writes on stderr; passes on all but the noise.

  For the calls whose C++ side prints notes (TensorFlow's start-up, the
  TFLite converter, LiteRT's interpreter): its lines come out when the
  block ends, `without_noise`.
  """
  sys.stderr.flush()
  saved = os.dup(2)
  with tempfile.TemporaryFile() as held:
    os.dup2(held.fileno(), 2)
    try:
      yield
    finally:
      sys.stderr.flush()
      os.dup2(saved, 2)
      os.close(saved)
      held.seek(0)
      text = held.read().decode("utf-8", "replace")
      for line in without_noise(text.splitlines()):
        print(line, file=sys.stderr)


@contextlib.contextmanager
def quiet_native_output():
  """Native code's stdout dropped and its stderr `filtered_stderr`.

  The TFLite quantizer prints status lines from C++ straight to fd 1 and 2.
  """
  sys.stdout.flush()
  saved = os.dup(1)
  try:
    with open(os.devnull, "w", encoding="utf-8") as devnull:
      os.dup2(devnull.fileno(), 1)
      with filtered_stderr():
        yield
  finally:
    os.dup2(saved, 1)
    os.close(saved)


class _OnlyWarningsFromTensorFlow(logging.Filter):

  def filter(self, record):
    return record.levelno >= logging.WARNING or (
        _TENSORFLOW not in record.pathname)


_TENSORFLOW = os.sep + "tensorflow" + os.sep


def quiet_tensorflow(handler):
  """Imports TensorFlow and probes its devices with the start-up lines held.

  `handler` (absl's) passes TensorFlow's own Python logs from warnings up
  only: its SavedModel writer logs internals at INFO.
  """
  with filtered_stderr():
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    tf.config.list_physical_devices("GPU")
  handler.addFilter(_OnlyWarningsFromTensorFlow())


def short_log_lines(handler):
  """`handler` (absl's) writes "HH:MM:SS message", without file and thread."""
  handler.setFormatter(logging.Formatter("%(asctime)s %(message)s",
                                         datefmt="%H:%M:%S"))
