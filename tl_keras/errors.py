"""The one exception type that means "the user can fix this"."""

import difflib


class UserError(Exception):
  """A problem with the user's input, told in one line with the fix.

  `main.py` prints it on stderr without a traceback and exits with code 2.
  Library code raises it only for mistakes a user can correct (a flag, a
  path, a dataset); bugs stay ordinary exceptions with their tracebacks.
  """
  exit_code = 2


class CheckFailed(UserError):
  """The run finished, but a quality check the user asked for failed.

  Its artifacts are written (to inspect); `main.py` exits with code 3.
  """
  exit_code = 3


def unknown_name(kind, name, known, flag):
  """Builds the error for a name that is not in a table, with close matches."""
  close = difflib.get_close_matches(name, list(known), n=3, cutoff=0.5)
  hint = (f"did you mean {', '.join(close)}?" if close
          else f"known: {', '.join(sorted(known)[:12])}"
          + (", ..." if len(known) > 12 else ""))
  return UserError(f"unknown {kind} {name!r} in --{flag}; {hint}")
