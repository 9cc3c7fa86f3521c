"""Downloads that fail fast, with one clear line, on an offline machine.

TFDS retries a failed download for minutes, and Keras waits on each
connection, before either gives up. One connection attempt to the host they
download from says sooner whether there is a network at all.
"""

import contextlib
import os
import socket

from tl_keras.errors import UserError

# Where Keras's ImageNet weights and TFDS's prepared datasets come from.
HOST = "storage.googleapis.com:443"
# Seconds one connection may take before the machine counts as offline.
TIMEOUT = 10
_PROXIES = ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")


def check_online(what, fix):
  """UserError naming `what` and `fix` when the download host is unreachable.

  Behind a proxy the probe is skipped: only the proxy can tell.
  `TL_KERAS_DOWNLOAD_HOST` (host:port) overrides the host probed.
  """
  if any(os.environ.get(v) for v in _PROXIES):
    return
  host = os.environ.get("TL_KERAS_DOWNLOAD_HOST", HOST)
  name, _, port = host.rpartition(":")
  try:
    socket.create_connection((name, int(port)), timeout=TIMEOUT).close()
  except OSError as e:
    raise UserError(f"cannot reach {name} to download {what} "
                    f"({e.strerror or type(e).__name__}): this machine seems "
                    f"offline; {fix}") from e


@contextlib.contextmanager
def bounded_waits(seconds=TIMEOUT):
  """Every socket opened inside waits at most `seconds` per operation."""
  previous = socket.getdefaulttimeout()
  socket.setdefaulttimeout(seconds)
  try:
    yield
  finally:
    socket.setdefaulttimeout(previous)
