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
import threading
import time

# Start-up records of TF's C++ logging (I/W/E0000: written before absl's
# logging starts) and the notice that precedes them; the TFLite converter's
# and LiteRT's notes on stderr.
_NOISE = re.compile(
    r"^(WARNING: All log messages before absl::InitializeLog\(\)|"
    r"[IW]0000 |E0000 .*(cuInit|cuda|CUDA)|fully_quantize: \d|"
    r"INFO: Created TensorFlow Lite XNNPACK delegate)")
_RECORD = re.compile(r"^([IWEF]\d{4} |WARNING|ERROR|INFO|Traceback)")


class _NoiseFilter:
  """Line by line: whether to show it, TensorFlow's known notes left out.

  A record's continuation lines (those that do not start a new record) go
  with it.
  """

  def __init__(self):
    self.dropping = False

  def keep(self, line):
    if _NOISE.match(line):
      self.dropping = True
    elif not (self.dropping and not _RECORD.match(line)):
      self.dropping = False
      return True
    return False


def without_noise(lines):
  """The lines of `lines` to show (`_NoiseFilter`)."""
  noise = _NoiseFilter()
  return [line for line in lines if noise.keep(line)]


@contextlib.contextmanager
def filtered_stderr():
  """Passes what is written on stderr through, all but the noise, live.

  For the calls whose C++ side prints notes (TensorFlow's start-up, the
  TFLite converter, LiteRT's interpreter): file descriptor 2 becomes a
  pipe that a thread reads, writing the lines `without_noise` keeps to the
  real stderr as they come (progress lines included).
  """
  sys.stderr.flush()
  saved = os.dup(2)
  read_end, write_end = os.pipe()
  os.dup2(write_end, 2)
  os.close(write_end)

  def relay():
    noise = _NoiseFilter()
    with os.fdopen(read_end, "rb") as pipe:
      for raw in pipe:
        if noise.keep(raw.decode("utf-8", "replace")):
          os.write(saved, raw)

  thread = threading.Thread(target=relay, daemon=True)
  thread.start()
  try:
    yield
  finally:
    sys.stderr.flush()
    os.dup2(saved, 2)  # closes the pipe's last write end: the relay ends
    thread.join()
    os.close(saved)


class Heartbeat:
  """A log line while a long step runs: after `first` s, then every `every`.

  For steps that would otherwise be silent (a feature pass, an evaluation,
  a conversion, a parity check, an epoch off a terminal). A short step
  logs nothing. `done` (and `total`), updated by the step as it goes, are
  shown: "feature pass: 12 s so far, 120 of 1,563 batches".
  """

  def __init__(self, what, *, total=None, unit="", first=5.0, every=15.0,
               enabled=True):
    self.what, self.total, self.unit = what, total, unit
    self.first, self.every, self.enabled = first, every, enabled
    self.done = None
    self._stop = threading.Event()
    self._thread = None

  def __enter__(self):
    self._start = time.monotonic()
    if self.enabled:
      self._thread = threading.Thread(target=self._beat, daemon=True)
      self._thread.start()
    return self

  def __exit__(self, *unused):
    self._stop.set()
    if self._thread:
      self._thread.join()

  def _beat(self):
    wait = self.first
    while not self._stop.wait(wait):
      count = ""
      if self.done is not None:
        of = f" of {self.total:,}" if self.total else ""
        count = f", {self.done:,}{of} {self.unit}".rstrip()
      logging.info("%s: %.0f s so far%s", self.what,
                   time.monotonic() - self._start, count)
      wait = self.every


class Progress(Heartbeat):
  """A `Heartbeat` that also draws a bar on a terminal: `update(done)`
  redraws it in place on stderr; off a terminal only the log lines show."""

  WIDTH = 30

  def __init__(self, what, *, total, unit="", stream=None):
    super().__init__(what, total=total, unit=unit)
    self.stream = stream or sys.stderr
    self.bar = self.stream.isatty() and total > 1

  def update(self, done):
    self.done = done
    if self.bar:
      filled = int(self.WIDTH * done / max(self.total, 1))
      self.stream.write(f"\r{self.what} [{'#' * filled:<{self.WIDTH}}] "
                        f"{done:,}/{self.total:,}")
      self.stream.flush()

  def __exit__(self, *unused):
    super().__exit__(*unused)
    if self.bar:
      self.stream.write("\n")
      self.stream.flush()


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
