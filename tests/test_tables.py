"""The documents' generated tables match the committed results."""

import os
import sys

from tests.conftest import REPO

sys.path.insert(0, os.path.join(REPO, "benchmarks"))
import tables  # pylint: disable=g-import-not-at-top,wrong-import-position


def _texts():
  out = {}
  for path in tables.documents():
    with open(path, encoding="utf-8") as f:
      out[os.path.relpath(path, REPO)] = f.read()
  return out


def test_every_table_is_rendered_from_results():
  texts = _texts()
  assert "README.md" in texts and "docs/results.md" in texts
  names = [name for text in texts.values()
           for _, name, _, _ in tables.BLOCK.findall(text)]
  assert sorted(names) == sorted(tables.TABLES)  # each table once
  for path, text in texts.items():
    assert tables.rendered(text) == text, (
        f"a table in {path} differs from results/: run "
        "python benchmarks/tables.py")


def test_a_changed_figure_is_caught():
  text = _texts()["docs/results.md"]
  block = tables.BLOCK.search(text)
  edited = text.replace(block.group(3), block.group(3).replace("%", "0%", 1))
  assert tables.rendered(edited) != edited
