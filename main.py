"""tl_keras: transfer learning from a pretrained backbone, end to end.

    python main.py --flagfile=flags/quickstart.flags      # offline demo
    python main.py --model=resnet50 --dataset=cifar10     # with internet

Intentionally kept short: flags become a `Config` and `tl_keras.modes.run.execute`
runs its --mode (train, export, predict, evaluate).
"""

import dataclasses
import os
import re
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TF's C++ start-up noise

from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags
from absl import logging

from tl_keras import config as config_lib
from tl_keras import console
from tl_keras.errors import UserError

_DEFINE = {bool: flags.DEFINE_bool, int: flags.DEFINE_integer,
           float: flags.DEFINE_float, str: flags.DEFINE_string}


def define_flags():
  """One absl flag per Config field; default and help come from Config."""
  for field in dataclasses.fields(config_lib.Config):
    meta = field.metadata
    # --helpfull lists flags under their group ("model flags", ...).
    group = {"module_name": f"{meta['group']} flags"}
    if meta["choices"]:
      flags.DEFINE_enum(field.name, field.default, meta["choices"],
                        meta["help"], **group)
    else:
      _DEFINE[field.type](field.name, field.default, meta["help"], **group)
  flags.DEFINE_bool("list_models", False,
                    "Print the image backbones and text models, and exit.")


define_flags()
FLAGS = flags.FLAGS


def main(argv):
  if len(argv) > 1:
    _fail(f"unexpected arguments {' '.join(argv[1:])}; flags take the form "
          "--name=value")
  config = config_lib.Config(**{f.name: FLAGS[f.name].value
                                for f in dataclasses.fields(config_lib.Config)})
  if not FLAGS.list_models:
    try:
      # Flag values are checked before TensorFlow is imported (seconds), so
      # a bad value is reported at once.
      config.resolved().validate()
    except UserError as e:
      _fail(str(e), e.exit_code)
  if FLAGS.verbosity <= 0:  # -v 1: TensorFlow's own logs too
    console.quiet_tensorflow(logging.get_absl_handler())
  if sys.stderr.isatty():
    console.short_log_lines(logging.get_absl_handler())
  if FLAGS.list_models:
    from tl_keras import listing  # pylint: disable=g-import-not-at-top
    print(listing.format_listing())
    return
  from tl_keras.modes import run  # pylint: disable=g-import-not-at-top
  try:
    print(run.execute(config))
  except UserError as e:
    _fail(str(e), e.exit_code)
  except KeyboardInterrupt:
    _fail("interrupted: no artifacts were written; rerun the same command "
          "(it resumes from the last checkpoint, if there is one)", 130)


def parse_flags(argv):
  """absl's parser, with bad flags as one `error:` line and exit code 2."""
  try:
    return FLAGS(argv)
  except flags.Error as e:
    _fail(f"{str(e).splitlines()[0]}; see python main.py --helpfull")


def print_help():
  """--help: the flags by group, one line each (--helpfull: absl's own)."""
  print("\n\n".join(__doc__.split("\n\n")[:2]))
  for group, fields in config_lib.groups().items():
    print(f"\n{group} flags:")
    for field in fields:
      first = re.split(r"(?<!e\.g)\. ", field.metadata["help"])[0].rstrip(".")
      default = f" [{field.default}]" if field.default not in ("", 0, None) else ""
      print(f"  --{field.name:<20} {first}{default}")
  print("\n  --list_models          Print the backbones and text models\n"
        "\nEvery flag in full: --helpfull. Recipes: --flagfile=flags/NAME.flags")


def _fail(message, exit_code=2):
  print(f"error: {message}", file=sys.stderr)
  sys.exit(exit_code)


def run():
  """`python main.py ...` and the installed `tl-keras ...` command."""
  if any(arg in ("--help", "-h", "--helpshort") for arg in sys.argv[1:]):
    print_help()
    sys.exit(0)
  logging.set_verbosity(logging.INFO)
  app.run(main, flags_parser=parse_flags)


if __name__ == "__main__":
  run()
