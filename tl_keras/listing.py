"""--list_models: every model tl_keras builds, grouped by family, aligned."""

from tl_keras import families


def rows():
  """[(group, name, input, parameters, note)] for every model."""
  return [row for family in families.FAMILIES for row in family.listing()]


def format_listing(entries=None, note_width=60):
  """The listing as text: a header per group, columns as wide as needed."""
  entries = rows() if entries is None else entries
  width = max(len(name) for _, name, _, _, _ in entries)
  lines, group = [], None
  for family, name, size, params, note in entries:
    if family != group:
      lines += ([""] if lines else []) + [f"{family}"]
      group = family
    parameters = f"{params / 1e6:7.1f}M" if params else " " * 8
    lines.append(f"  {name:<{width}}  {size:>5}  {parameters}  "
                 f"{note[:note_width]}".rstrip())
  return "\n".join(lines)
