"""Kill a run, rerun the same command: it resumes where it stopped."""

import json
import os
import signal
import subprocess
import sys

import pytest

from tests.conftest import REPO
from tests.helpers import run_main
from tl_keras import artifacts
from tl_keras.errors import UserError

ARGS = ["--model=convnet_small", "--weights=none", "--batch_size=8",
        "--min_steps=0", "--finetune_epochs=8",
        "--finetune_lr=1e-3", "--checkpoint_every=2", "--export=saved_model",
        # From random weights pruning is gradual: killed while it ramps.
        "--prune_sparsity=0.5"]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
  out = tmp_path_factory.mktemp("reference") / "out"
  result = run_main(*ARGS, f"--output_dir={out}")
  assert result.returncode == 0, result.stderr[-3000:]
  return json.loads((out / "run.json").read_text()), json.loads(
      (out / "metrics.json").read_text())


def _start(out):
  return subprocess.Popen(
      [sys.executable, os.path.join(REPO, "main.py"), *ARGS,
       f"--output_dir={out}"], cwd=REPO, stderr=subprocess.PIPE, text=True,
      env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})


def _interrupt(out, sig, after):
  """Starts a run and sends `sig` once a log line contains `after`."""
  process = _start(out)
  try:
    log = []
    for line in process.stderr:
      log.append(line)
      if after in line:
        process.send_signal(sig)
        break
    _, rest = process.communicate(timeout=120)
  finally:
    process.kill()
  return process.returncode, "".join(log) + rest


# 9 steps an epoch; validated (a history row) every 2 epochs, 18 steps.
GROUP_STEPS = 18


def _same_history(got, expected, killed_at):
  """Rows whose epochs all ran after the kill (global step) match exactly."""
  assert [(h["phase"], h["epoch"]) for h in got] == [
      (h["phase"], h["epoch"]) for h in expected]
  since = sum(1 for h in expected if h["step"] - GROUP_STEPS < killed_at)
  assert since < len(expected)
  for g, e in list(zip(got, expected))[since:]:
    assert g["loss"] == pytest.approx(e["loss"], abs=1e-5), (g, e)
    assert g["val_loss"] == pytest.approx(e["val_loss"], abs=1e-5), (g, e)


def test_sigkill_mid_finetune_then_rerun_resumes(reference, tmp_path):
  out = tmp_path / "out"
  code, _ = _interrupt(out, signal.SIGKILL, "finetune epoch 4/")
  assert code == -signal.SIGKILL
  progress = json.loads((out / "checkpoints" / "progress.json").read_text())
  assert progress["phase"] == "finetune"
  assert progress["step_in_phase"] >= 2 * 9  # epoch 2's checkpoint at least
  assert not any((out / a).exists() for a in artifacts.FINISHED)

  result = run_main(*ARGS, f"--output_dir={out}")
  assert result.returncode == 0, result.stderr[-3000:]
  assert "resuming phase finetune" in result.stderr
  assert "finetune epoch 2/" not in result.stderr  # finished epochs not redone
  assert "BatchNorm will train" not in result.stderr  # nor the calibration
  run = json.loads((out / "run.json").read_text())
  _same_history(run["history"], reference[0]["history"], progress["step"])
  metrics = json.loads((out / "metrics.json").read_text())
  assert metrics["test"]["accuracy"] == pytest.approx(
      reference[1]["test"]["accuracy"], abs=1e-6)
  assert metrics["pruning"] == reference[1]["pruning"]
  assert metrics["pruning"]["sparsity"] == pytest.approx(0.5, abs=1e-3)
  assert run["model"]["weights_fingerprint"] == reference[0]["model"][
      "weights_fingerprint"]
  assert not (out / "checkpoints").exists()  # removed once finished


def test_sigterm_checkpoints_exits_and_resumes(reference, tmp_path):
  out = tmp_path / "out"
  code, log = _interrupt(out, signal.SIGTERM, "phase finetune:")
  assert code == 128 + signal.SIGTERM, log[-3000:]
  errors = [l for l in log.splitlines() if l.startswith("error:")]
  assert len(errors) == 1 and "stopped by SIGTERM" in errors[0]
  assert "rerun the same command to resume" in errors[0]
  progress = json.loads((out / "checkpoints" / "progress.json").read_text())
  assert progress["phase"] == "finetune" and progress["step_in_phase"] >= 1
  assert "Traceback" not in log

  result = run_main(*ARGS, f"--output_dir={out}")
  assert result.returncode == 0, result.stderr[-3000:]
  assert "resuming phase finetune" in result.stderr
  run = json.loads((out / "run.json").read_text())
  _same_history(run["history"], reference[0]["history"], progress["step"])
  assert run["model"]["weights_fingerprint"] == reference[0]["model"][
      "weights_fingerprint"]


def test_resume_with_other_flags_is_refused_and_overwrite_starts_afresh(
    tmp_path):
  out = tmp_path / "out"
  code, _ = _interrupt(out, signal.SIGKILL, "finetune epoch 2/")
  assert code == -signal.SIGKILL
  before = (out / "checkpoints" / "progress.json").read_text()
  changed = [a.replace("--finetune_lr=1e-3", "--finetune_lr=1e-4")
             for a in ARGS]
  result = run_main(*changed, f"--output_dir={out}")
  assert result.returncode == 2
  assert "--finetune_lr=0.001 then, 0.0001 now" in result.stderr
  assert (out / "checkpoints" / "progress.json").read_text() == before
  assert artifacts.prepare(str(out), overwrite=True) is False
  assert not (out / "checkpoints").exists()


def test_a_run_stopped_before_its_first_checkpoint_is_not_a_run(tmp_path):
  """Killed during the feature pass, a run leaves only its event files: the
  same command starts again, while a finished run is still protected."""
  out = tmp_path / "out"
  (out / "tensorboard" / "train").mkdir(parents=True)
  (out / "tensorboard" / "train" / "events.out").write_text("x")
  assert artifacts.prepare(str(out)) is False
  assert not (out / "tensorboard").exists()
  (out / "tensorboard").mkdir()
  (out / "model.keras").write_text("x")
  with pytest.raises(UserError, match="already holds a run"):
    artifacts.prepare(str(out))
