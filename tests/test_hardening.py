"""Messy inputs: bad images, odd folders, foreign files, concurrent runs."""

import contextlib
import io
import os
import signal
import string
import subprocess
import sys
import tempfile

from hypothesis import HealthCheck, given, settings, strategies as st
import keras
import numpy as np
from PIL import Image, ImageOps
import pytest
import tensorflow as tf

from tests.conftest import REPO, write_image_folder
from tests.helpers import run_main
from tl_keras import artifacts
from tl_keras import config as config_lib
from tl_keras.data import datasets
from tl_keras.data import folders
from tl_keras.data import input_files
from tl_keras.errors import UserError
from tl_keras.models import applications
from tl_keras.modes import predictors


def _bad_files(folder):
  (folder / "zero.png").write_bytes(b"")
  (folder / "text.jpg").write_text("this is not a jpeg")
  good = folder / "0.png"
  (folder / "truncated.png").write_bytes(good.read_bytes()[:60])


def test_bad_images_stop_the_run_with_the_list(tmp_path):
  root = write_image_folder(tmp_path / "photos", per_class=5)
  _bad_files(tmp_path / "photos" / "cats")
  for i in range(10):
    (tmp_path / "photos" / "dogs" / f"junk{i}.gif").write_bytes(b"GIF89a")
  with pytest.raises(UserError) as info:
    folders.load_folder(root)
  message = str(info.value)
  assert "13 image(s)" in message and "and 3 more" in message
  assert "--skip_bad_images" in message and "\n" not in message
  assert message.count("(") >= 10  # ten files, each with its reason


def test_skip_bad_images_leaves_them_out_and_counts_them(tmp_path):
  root = write_image_folder(tmp_path / "photos", per_class=5)
  _bad_files(tmp_path / "photos" / "cats")
  splits = folders.load_folder(root, skip_bad_images=True)
  assert len(splits.skipped) == 3
  assert sum(splits.sizes.values()) == 10
  assert any("skipped 3" in note for note in splits.notes)
  for split in ("train", "validation", "test"):
    for image, _ in getattr(splits, split):
      assert image.shape[-1] == 3


def test_nested_folders_hidden_and_other_files_are_ignored(tmp_path):
  root = write_image_folder(tmp_path / "photos", per_class=3)
  nested = tmp_path / "photos" / "cats" / "more"
  write_image_folder(nested, per_class=2, classes=("deeper",))
  (tmp_path / "photos" / "cats" / ".DS_Store").write_bytes(b"\0\0")
  (tmp_path / "photos" / "dogs" / "readme.md").write_text("# dogs")
  (tmp_path / "photos" / ".cache").mkdir()
  class_names, files = folders.scan_folder(root)
  assert class_names == ["cats", "dogs"]
  assert [len(f) for f in files] == [3, 3]


def _reference_rgb(path):
  with Image.open(path) as image:
    return np.asarray(ImageOps.exif_transpose(image).convert("RGB"))


def _quadrants(height=20, width=30):
  pixels = np.zeros((height, width, 3), np.uint8)
  pixels[:height // 2, :width // 2] = (250, 10, 10)
  pixels[:height // 2, width // 2:] = (10, 250, 10)
  pixels[height // 2:, :width // 2] = (10, 10, 250)
  pixels[height // 2:, width // 2:] = (250, 250, 10)
  return pixels


def test_every_image_kind_becomes_upright_rgb(tmp_path):
  folder = tmp_path / "kinds" / "a"
  folder.mkdir(parents=True)
  rgb = Image.fromarray(_quadrants())
  rgb.convert("L").save(folder / "gray.png")
  rgb.convert("RGBA").save(folder / "rgba.png")
  rgb.convert("CMYK").save(folder / "cmyk.jpg", quality=95)
  Image.fromarray((_quadrants()[..., 0].astype(np.uint16) * 257)).save(
      folder / "sixteen.png")
  rgb.resize((50, 12)).save(folder / "other_size.bmp")
  rgb.save(folder / "palette.gif")
  for orientation in range(1, 9):
    exif = Image.Exif()
    exif[0x0112] = orientation
    rgb.save(folder / f"exif{orientation}.jpg", quality=95, exif=exif)
  write_image_folder(tmp_path / "kinds", per_class=3, classes=("b",))
  paths = sorted(str(p) for p in folder.iterdir())
  checked = folders.check_images(paths)
  for path in paths:
    reason, orientation = checked[path]
    assert not reason, path
    got = folders.apply_orientation(folders.decode_image(tf.io.read_file(path)),
                                 orientation).numpy()
    expected = _reference_rgb(path)
    if path.endswith("sixteen.png"):  # PIL reads 16-bit gray as 8-bit clip
      expected = np.repeat(_quadrants()[..., :1], 3, axis=-1)
    assert got.shape == expected.shape, path
    assert np.abs(got.astype(int) - expected).mean() < 4, path
  splits = folders.load_folder(str(tmp_path / "kinds"), validation_fraction=0.2,
                            test_fraction=0.2)
  shapes = {tuple(x.shape) for split in (splits.train, splits.test)
            for x, _ in split}
  assert {s[-1] for s in shapes} == {3} and (30, 20, 3) in shapes


def test_predict_applies_exif_orientation(tmp_path):
  exif = Image.Exif()
  exif[0x0112] = 6
  path = tmp_path / "turned.jpg"
  Image.fromarray(_quadrants(24, 24)).save(path, quality=95, exif=exif)
  got = input_files.read_images([str(path)], 24)[0]
  assert np.abs(got.astype(int) - _reference_rgb(path)).mean() < 4


def test_class_names_are_kept_exactly(tmp_path):
  names = ("Red fox", "rot fuchs", "Ünïcödé 狐", "fox", "Fox")
  root = write_image_folder(tmp_path / "photos", per_class=3, classes=names)
  if len(os.listdir(root)) < len(names):
    pytest.skip("case-insensitive file system")
  splits = folders.load_folder(root)
  assert splits.class_names == sorted(names)
  artifacts.write_labels(tmp_path / "labels.txt", splits.class_names)
  assert artifacts.read_labels(tmp_path / "labels.txt") == sorted(names)


def test_weights_of_another_architecture_name_the_layer(tmp_path):
  path = str(tmp_path / "mobilenet.weights.h5")
  applications.build_base("mobilenetv2", 32, None).save_weights(path)
  with pytest.raises(UserError, match=r"does not fit convnet_small .*stage1"):
    applications.build_base("convnet_small", 32, path)


def test_corrupted_weights_file(tmp_path):
  path = tmp_path / "broken.weights.h5"
  path.write_bytes(b"\x89HDF\r\n" + b"\0" * 40)
  with pytest.raises(UserError, match="not an HDF5 weights file"):
    applications.build_base("convnet_small", 32, str(path))


def test_keras_file_with_code_is_refused(tmp_path):
  inputs = keras.Input((None, None, 3))
  x = keras.layers.Lambda(lambda t: t * 2.0)(inputs)
  x = keras.layers.GlobalAveragePooling2D()(x)
  path = str(tmp_path / "lambda.keras")
  keras.Model(inputs, keras.layers.Dense(2)(x)).save(path)
  with pytest.raises(UserError, match="arbitrary code .*safe mode"):
    predictors.load(path)
  with pytest.raises(UserError, match="arbitrary code"):
    from tl_keras.families import images  # pylint: disable=g-import-not-at-top
    images.transfer_backbone(None, path)


def test_write_error_mid_run_keeps_the_previous_artifacts(tmp_path):
  (tmp_path / "metrics.json").write_text('{"old": true}')
  with pytest.raises(UserError, match="No space left.*nothing there was"):
    with artifacts.staged(str(tmp_path)) as stage:
      artifacts.write_json(os.path.join(stage, "metrics.json"), {"new": 1})
      raise OSError(28, "No space left on device")
  assert (tmp_path / "metrics.json").read_text() == '{"old": true}'
  assert os.listdir(tmp_path) == ["metrics.json"]


def test_an_offline_machine_gets_one_line_and_an_empty_output_dir(tmp_path):
  """A TFDS dataset not prepared locally, with the download host unreachable
  (a closed local port stands for it): one error line, nothing written."""
  out = tmp_path / "out"
  result = run_main("--model=convnet_small", "--weights=none",
                    "--dataset=cifar10", f"--data_dir={tmp_path / 'tfds'}",
                    f"--output_dir={out}",
                    env={"TL_KERAS_DOWNLOAD_HOST": "127.0.0.1:9",
                         "HTTPS_PROXY": "", "https_proxy": ""})
  assert result.returncode == 2
  lines = [l for l in result.stderr.splitlines() if l.startswith("error:")]
  assert lines == [lines[0]] and "this machine seems offline" in lines[0]
  assert "--data_dir" in lines[0] and "Traceback" not in result.stderr
  assert os.listdir(out) == []


def test_an_unprepared_tfds_dataset_asks_for_the_network_first(
    tmp_path, monkeypatch):
  """With the network unreachable, loading a TFDS dataset never prepared
  here opens one socket, the probe of the download host, and TFDS none:
  one error line, before the builder is made."""
  import socket  # pylint: disable=g-import-not-at-top
  from tl_keras.data import downloads  # pylint: disable=g-import-not-at-top
  for name in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
    monkeypatch.delenv(name, raising=False)
  monkeypatch.delenv("TL_KERAS_DOWNLOAD_HOST", raising=False)
  tried = []

  def unreachable(self, address):
    del self
    tried.append(address)
    raise OSError(101, "Network is unreachable")

  monkeypatch.setattr(socket.socket, "connect", unreachable)
  monkeypatch.setattr(socket, "getaddrinfo", lambda host, port, *a, **k: [
      (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("203.0.113.1", port))])
  with pytest.raises(UserError, match="seems offline.*--data_dir"):
    datasets.load("cifar10", data_dir=str(tmp_path / "tfds"))
  assert tried == [("203.0.113.1", int(downloads.HOST.split(":")[1]))]
  assert not (tmp_path / "tfds").exists()


def test_a_second_run_on_a_locked_directory_is_refused(tmp_path):
  out = tmp_path / "out"
  with artifacts.locked(str(out)):
    result = run_main("--model=convnet_small", "--weights=none",
                      f"--output_dir={out}", "--overwrite")
    with pytest.raises(UserError, match="another tl_keras process"):
      with artifacts.locked(str(out)):
        pass
  assert result.returncode == 2
  assert "another tl_keras process is writing" in result.stderr
  with artifacts.locked(str(out)):  # released with its holder
    pass
  assert os.listdir(out) == []  # the lock is the directory's: no file left


def _main_flags():
  import main  # pylint: disable=g-import-not-at-top
  return main


_FLAG_NAMES = [f.name for f in __import__("dataclasses").fields(
    config_lib.Config) if f.name not in ("output_dir", "run_dir")]
_VALUES = st.one_of(
    st.integers(-5, 10**6).map(str), st.floats(allow_nan=True).map(str),
    st.sampled_from(["", "all", "none", "true", "false", "0.25", "synthetic",
                     "tflite_int8,saved_model", "folder", "--", "=", "é"]),
    st.text(string.printable, max_size=12))


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.sampled_from(_FLAG_NAMES + ["bogus"]), _VALUES),
                max_size=4))
def test_any_flags_give_success_or_one_error_line(pairs):
  """Parsing and validation: a Config, or one `error:` line and exit 2."""
  main = _main_flags()
  argv = ["main.py"] + [f"--{name}={value}" for name, value in pairs]
  stderr = io.StringIO()
  main.FLAGS.unparse_flags()
  with contextlib.redirect_stderr(stderr):
    try:
      main.parse_flags(argv)
      config = config_lib.Config(**{
          name: main.FLAGS[name].value
          for name in (f.name for f in __import__("dataclasses").fields(
              config_lib.Config))})
      config.resolved().validate()
    except SystemExit as e:
      assert e.code == 2
      lines = stderr.getvalue().strip().splitlines()
      assert len(lines) == 1 and lines[0].startswith("error: "), lines
    except UserError as e:
      assert "\n" not in str(e)
  main.FLAGS.unparse_flags()


_KINDS = st.sampled_from(["png", "jpg", "empty", "text", "hidden", "txt",
                          "truncated"])


@settings(max_examples=25, deadline=None)
@given(st.dictionaries(
    st.text(string.ascii_letters + string.digits + " _-éü", min_size=1,
            max_size=8).filter(lambda n: n.strip() == n and n[0] != "."),
    st.lists(_KINDS, max_size=6), max_size=4), st.booleans())
def test_any_folder_gives_splits_or_one_error_line(tree, skip_bad):
  """The folder loader: `Splits` or a one-line UserError, nothing else."""
  pixels = np.random.default_rng(0).integers(0, 256, (9, 11, 3), np.uint8)
  with tempfile.TemporaryDirectory() as root:
    seen = set()
    for name, kinds in tree.items():
      if name.lower() in seen:  # case-insensitive file systems
        continue
      seen.add(name.lower())
      folder = os.path.join(root, name)
      os.makedirs(folder)
      for i, kind in enumerate(kinds):
        path = os.path.join(folder, f"{i}.{kind}")
        if kind in ("png", "jpg"):
          Image.fromarray(pixels).save(path)
        elif kind == "truncated":
          Image.fromarray(pixels).save(path + ".png")
          with open(path + ".png", "rb") as f:
            content = f.read()
          os.remove(path + ".png")
          with open(os.path.join(folder, f"{i}t.png"), "wb") as f:
            f.write(content[:50])
        elif kind == "hidden":
          with open(os.path.join(folder, f".{i}.png"), "wb") as f:
            f.write(b"junk")
        else:
          with open(path + (".png" if kind == "empty" else ""), "w",
                    encoding="utf-8") as f:
            f.write("" if kind == "empty" else "not an image")
    try:
      splits = datasets.load("folder", data_dir=root, skip_bad_images=skip_bad)
    except UserError as e:
      assert "\n" not in str(e) and str(e)
    else:
      assert splits.num_classes >= 2
      assert all(size > 0 for size in splits.sizes.values())


def test_ctrl_c_checkpoints_and_exits_cleanly(tmp_path):
  out = tmp_path / "out"
  env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
  process = subprocess.Popen(
      [sys.executable, os.path.join(REPO, "main.py"), "--model=convnet_small",
       "--weights=none", "--finetune_epochs=200", "--finetune_lr=1e-3",
       "--batch_size=8",
       f"--output_dir={out}"], cwd=REPO, env=env, stderr=subprocess.PIPE,
      text=True)
  try:
    lines = []
    for line in process.stderr:  # wait until training is under way
      lines.append(line)
      if "finetune epoch 2/" in line:  # validated every 2 epochs
        break
    process.send_signal(signal.SIGINT)
    _, rest = process.communicate(timeout=120)
  finally:
    process.kill()
  errors = [l for l in rest.splitlines() if l.startswith("error:")]
  assert process.returncode == 130, "".join(lines)[-2000:] + rest[-2000:]
  assert "Traceback" not in rest
  assert len(errors) == 1 and "stopped by SIGINT" in errors[0]
  assert "rerun the same command to resume" in errors[0]
  assert (out / "checkpoints" / "progress.json").exists()
  assert not [a for a in artifacts.FINISHED if (out / a).exists()]
