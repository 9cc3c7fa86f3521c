"""Flag values given as text, parsed: --unfreeze, --export, --profile_steps.
"""

from tl_keras.errors import UserError

EXPORT_FORMATS = ("saved_model", "tflite_float32", "tflite_float16",
                  "tflite_dynamic", "tflite_int8", "tflite_int16x8")
# tflite_int16x8 is written when asked for: slow on CPUs (see tl_keras.export.tflite).
DEFAULT_EXPORTS = EXPORT_FORMATS[:-1]
# The exports calibrated on training images (integer activations).
CALIBRATED_EXPORTS = ("tflite_int8", "tflite_int16x8")


def parse_unfreeze(spec):
  """Parses --unfreeze: an int (blocks), a float in (0, 1], or 'all'.

  Returns:
    ("all", None), ("layers", n) (n blocks) or ("fraction", f).
  """
  text = str(spec).strip().lower()
  if text == "all":
    return "all", None
  try:
    if text.isdigit():
      return "layers", int(text)
    value = float(text)
  except ValueError:
    value = None
  if value is None or not 0 < value <= 1:
    raise UserError(f"--unfreeze={spec!r} is not a block count, a fraction "
                    "in (0, 1], or 'all'")
  return "fraction", value


def parse_profile_steps(spec):
  """--profile_steps "A,B" as (A, B), or None when empty."""
  if not spec:
    return None
  try:
    first, last = (int(v) for v in spec.split(","))
  except ValueError:
    first = last = -1
  if not 0 < first < last:
    raise UserError(f"--profile_steps={spec!r} is not two step numbers A,B "
                    "with 0 < A < B")
  return first, last


def parse_exports(spec):
  """--export as a tuple of EXPORT_FORMATS, in the order given."""
  names = tuple(n.strip() for n in str(spec).split(",") if n.strip())
  for name in names:
    if name not in EXPORT_FORMATS:
      raise UserError(f"--export: unknown format {name!r}; choose from "
                      f"{', '.join(EXPORT_FORMATS)}")
  return tuple(dict.fromkeys(names))

