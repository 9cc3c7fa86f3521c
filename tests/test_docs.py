"""The commands in README.md and docs/: every flag they pass exists, every
flagfile and benchmark they name is there, and the cheap ones run."""

import glob
import os
import re
import shlex

import pytest

import main
from tests.conftest import REPO
from tests.helpers import run_main

FLAGS_OF_MAIN = set(main.FLAGS) | {"flagfile", "helpfull", "help", "v",
                                    "verbosity"}


def _commands():
  """(document, command) for each `python ...` line of a code block."""
  out = []
  for path in [os.path.join(REPO, "README.md")] + sorted(
      glob.glob(os.path.join(REPO, "docs", "*.md"))):
    text = open(path, encoding="utf-8").read()
    for block in re.findall(r"```\n(.*?)```", text, re.S):
      for line in block.splitlines():
        line = line.strip().rstrip("&").strip()
        if line.startswith("python "):
          out.append((os.path.relpath(path, REPO), line.split("  #")[0]))
  return out


COMMANDS = _commands()


def test_the_documents_hold_commands():
  assert len([c for _, c in COMMANDS if c.startswith("python main.py")]) > 15


@pytest.mark.parametrize("where, command", COMMANDS)
def test_a_documented_command_names_what_exists(where, command):
  words = shlex.split(command)
  script = os.path.join(REPO, words[1])
  assert os.path.isfile(script), f"{where}: {words[1]} does not exist"
  for word in words[2:]:
    if not word.startswith("--"):
      continue
    name = word[2:].split("=", 1)[0]
    if words[1] == "main.py":
      bare = name[2:] if name.startswith("no") else name
      assert name in FLAGS_OF_MAIN or bare in FLAGS_OF_MAIN, (
          f"{where}: {command}: no flag --{name}")
      if name == "flagfile":
        assert os.path.isfile(os.path.join(REPO, word.split("=", 1)[1]))
    else:  # a benchmark: its --help lists the flag
      source = open(script, encoding="utf-8").read()
      assert f'"--{name}"' in source, f"{where}: {command}: no --{name}"


@pytest.mark.parametrize("args, expect", [
    (["--list_models"], "efficientnet_lite0"),
    (["--help"], "--class_weight"),
])
def test_the_cheap_commands_run_as_written(args, expect):
  result = run_main(*args, timeout=120)
  assert result.returncode == 0, result.stderr[-2000:]
  assert expect in result.stdout + result.stderr
