"""The README's generated tables match the committed results."""

import os
import sys

from tests.conftest import REPO

sys.path.insert(0, os.path.join(REPO, "benchmarks"))
import tables  # pylint: disable=g-import-not-at-top,wrong-import-position


def test_readme_tables_are_rendered_from_results():
  with open(os.path.join(REPO, "README.md"), encoding="utf-8") as f:
    text = f.read()
  blocks = tables.BLOCK.findall(text)
  assert {name for _, name, _, _ in blocks} == set(tables.TABLES)
  assert tables.rendered(text) == text, (
      "a README table differs from results/: run python benchmarks/tables.py")


def test_a_changed_figure_is_caught():
  with open(os.path.join(REPO, "README.md"), encoding="utf-8") as f:
    text = f.read()
  block = tables.BLOCK.search(text)
  edited = text.replace(block.group(3), block.group(3).replace("%", "0%", 1))
  assert tables.rendered(edited) != edited
