"""Flags, flagfiles and Config validation."""

import dataclasses
import glob
import os

import pytest
from absl import flags

from tests.conftest import REPO
from tl_keras import config as config_lib
from tl_keras.errors import UserError
from tl_keras import flag_values


@pytest.fixture(scope="module")
def main_flags():
  import main  # Defines the flags, as a user's run does.
  return main.FLAGS


def _config(main_flags, args):
  main_flags.unparse_flags()
  main_flags(["main.py", *args])
  return config_lib.Config(**{f.name: main_flags[f.name].value
                              for f in dataclasses.fields(config_lib.Config)})


@pytest.mark.parametrize("optimizer, batch, rule, scale", [
    ("adamw", 128, "square root", 2.0), ("adam", 8, "square root", 0.5),
    ("sgd", 128, "linear", 4.0), ("sgd", 32, "linear", 1.0)])
def test_learning_rates_scale_with_the_batch_by_optimizer(
    main_flags, optimizer, batch, rule, scale):
  config = _config(main_flags, [f"--optimizer={optimizer}",
                                f"--batch_size={batch}"])
  assert config.lr_rule() == rule and config.lr_scale() == pytest.approx(scale)
  config = _config(main_flags, [f"--optimizer={optimizer}",
                                f"--batch_size={batch}", "--no_lr_scaling"])
  assert config.lr_rule() == "none" and config.lr_scale() == 1.0


FLAGFILES = sorted(glob.glob(os.path.join(REPO, "flags", "*.flags")))


def test_there_are_recipes():
  names = {os.path.basename(p) for p in FLAGFILES}
  assert {"base.flags", "quickstart.flags", "resnet50_cifar10.flags"} <= names


@pytest.mark.parametrize("path", FLAGFILES, ids=os.path.basename)
def test_every_flagfile_parses_and_validates(main_flags, path, monkeypatch):
  monkeypatch.chdir(REPO)  # recipes include flags/base.flags by that path
  # The folder recipe takes --data_dir on the command line, as users do.
  config = _config(main_flags, ["--data_dir=/photos", f"--flagfile={path}"])
  config.validate()
  if not path.endswith("base.flags"):
    first = open(path, encoding="utf-8").readline()
    assert first.startswith("# python main.py --flagfile=flags/"), (
        "a recipe's first line is the command that runs it")


def test_flag_defaults_come_from_config(main_flags):
  for field in dataclasses.fields(config_lib.Config):
    assert main_flags[field.name].default == field.default


def test_unknown_flag_value_is_rejected(main_flags):
  with pytest.raises(flags.IllegalFlagValueError):
    _config(main_flags, ["--optimizer=rmsprop"])


@pytest.mark.parametrize("changes, flag", [
    ({"batch_size": 0}, "--batch_size"),
    ({"head_epochs": -1}, "--head_epochs"),
    ({"early_stopping": 1.0}, "--early_stopping"),
    ({"min_steps": -1}, "--min_steps"),
    ({"warmup": -0.1}, "--warmup"),
    ({"batchnorm": "sometimes"}, "--batchnorm"),
    ({"augment": "heavy"}, "--augment"),
    ({"weights": "none", "finetune_epochs": 0}, "--finetune_epochs"),
    ({"head_lr": 0.0}, "--head_lr"),
    ({"finetune_lr": -1e-5}, "--finetune_lr"),
    ({"unfreeze": "lots"}, "--unfreeze"),
    ({"unfreeze": "1.5"}, "--unfreeze"),
    ({"head_epochs": 0, "finetune_epochs": 0}, "--head_epochs"),
    ({"dropout": 1.0}, "--dropout"),
    ({"dataset": "folder"}, "--data_dir"),
    ({"export": "saved_model,tflite_int4"}, "--export"),
    ({"calibration_samples": 0}, "--calibration_samples"),
    ({"calibration_samples": 0, "export": "tflite_int16x8"},
     "--calibration_samples=0 leaves tflite_int16x8"),
    ({"mode": "export"}, "--run_dir"),
    ({"mode": "predict", "artifact": "run"}, "--inputs"),
    ({"mode": "evaluate"}, "--artifact"),
    ({"mode": "serve"}, "--mode"),
])
def test_validate_names_the_flag(changes, flag):
  with pytest.raises(UserError, match=flag):
    config_lib.Config(**changes).validate()


@pytest.mark.parametrize("spec, parsed", [
    ("all", ("all", None)), ("12", ("layers", 12)), ("0.25", ("fraction", 0.25)),
    ("1", ("layers", 1)), ("1.0", ("fraction", 1.0))])
def test_parse_unfreeze(spec, parsed):
  assert flag_values.parse_unfreeze(spec) == parsed


def test_parse_exports_keeps_order_and_drops_repeats():
  assert flag_values.parse_exports(" tflite_int8, saved_model,tflite_int8") == (
      "tflite_int8", "saved_model")
  assert flag_values.parse_exports("") == ()
  config_lib.Config(export="saved_model", calibration_samples=0).validate()
  # int16x8 is written when named: slow on CPUs.
  default = flag_values.parse_exports(config_lib.Config().export)
  assert "tflite_int8" in default and "tflite_int16x8" not in default


def test_default_output_dir_names_model_and_dataset():
  config = config_lib.Config(model="resnet50", dataset="glue/sst2").resolved()
  assert config.output_dir.endswith(os.path.join("runs", "resnet50-glue_sst2"))
