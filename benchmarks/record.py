"""Runs one benchmark and keeps its JSON lines, each stamped with where
and when it was measured.

    python benchmarks/record.py results/NAME.jsonl [--append] -- \\
        python benchmarks/NAME.py [its flags]

Every line the benchmark prints that is a JSON object is written to the
results file with "commit" (the checkout's, "+dirty" when it has
uncommitted changes outside results/), "date" (UTC), "cpu", "cpu_features"
(the SIMD features that set kernel speed) and "cores" added; other lines
pass through to stdout. The file is written only when the benchmark
succeeds (a failed run leaves the committed results as they were), and
replaces the file unless --append. `make bench` runs every benchmark this
way; `benchmarks/tables.py` renders the documents' tables from the files.
"""

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _git(*args):
  return subprocess.run(["git", *args], cwd=REPO, capture_output=True,
                        text=True, check=False).stdout.strip()


# CPU features that set how fast int8 and float kernels run, recorded so
# that latencies measured on different machines can be told apart.
CPU_FEATURES = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni",
                "amx_int8", "asimddp", "i8mm")


def stamp():
  """What every row records about the measurement."""
  cpu = platform.processor() or platform.machine()
  flags = set()
  try:
    with open("/proc/cpuinfo", encoding="utf-8") as f:
      lines = f.readlines()
    cpu = next((l.split(":", 1)[1].strip() for l in lines
                if l.startswith("model name")), cpu)
    flags = set(next((l.split(":", 1)[1].split() for l in lines
                      if l.startswith(("flags", "Features"))), []))
  except OSError:
    pass
  commit = _git("rev-parse", "--short", "HEAD") or "unknown"
  # results/ is what benchmarks write, not what they run.
  if _git("status", "--porcelain", "--untracked-files=no", "--", ".",
          ":(exclude)results"):
    commit += "+dirty"
  return {"commit": commit,
          "date": datetime.datetime.now(datetime.timezone.utc).strftime(
              "%Y-%m-%dT%H:%M:%SZ"),
          "cpu": cpu, "cpu_features": [f for f in CPU_FEATURES if f in flags],
          "cores": os.cpu_count()}


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("results")
  parser.add_argument("--append", action="store_true")
  # The benchmark's command is everything after the first "--", so flags of
  # this script may come before or after the results file.
  argv = sys.argv[1:]
  split = argv.index("--") if "--" in argv else len(argv)
  args = parser.parse_args(argv[:split])
  command = argv[split + 1:]
  if not command:
    parser.error("give the benchmark's command after --")
  where = stamp()
  rows = []
  with subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE,
                        text=True) as process:
    for line in process.stdout:
      try:
        row = json.loads(line)
      except ValueError:
        row = None
      if isinstance(row, dict):
        rows.append({**row, **where})
      print(line, end="", flush=True)
  if process.returncode:
    sys.exit(f"{' '.join(command)} failed (exit {process.returncode}); "
             f"{args.results} is unchanged")
  os.makedirs(os.path.dirname(os.path.abspath(args.results)), exist_ok=True)
  with open(args.results, "a" if args.append else "w", encoding="utf-8") as f:
    for row in rows:
      f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
  main()
