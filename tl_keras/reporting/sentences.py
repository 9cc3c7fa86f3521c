"""Sentences the report and the model card both write: the command that
reproduces a run, percentages, what the int8 fallback did."""

import dataclasses
import shlex

from tl_keras import config as config_lib
from tl_keras.export import quantization


def command_line(config):
  """The command that reproduces a run: the flags that differ from defaults.

  One flag per line (a shell line continuation between them), so it never
  wraps inside a flag, and values quoted for the shell. It writes to
  --output_dir with "_rerun" added: the run it reproduces stays, and the
  command is not refused for finding it there.
  """
  skip = {"overwrite", "mode", "run_dir", "artifact", "inputs", "split",
          "top_k"}
  args = []
  for f in dataclasses.fields(config_lib.Config):
    value = config.get(f.name, f.default)
    if f.name in skip or value == f.default:
      continue
    if f.name == "output_dir":
      value = str(value).rstrip("/") + "_rerun"
    if isinstance(value, bool):
      args.append(f"--{'' if value else 'no'}{f.name}")
    else:
      args.append(f"--{f.name}={shlex.quote(str(value))}")
  return " \\\n    ".join(["python main.py", *args])


def percent(value):
  return f"{100 * value:.1f}%"


def fallback_sentence(fallback):
  """One line on what --int8_fallback did."""
  kind = fallback.get("float_kind")
  return (f"{len(fallback['float_layers'])} of its {fallback['layers']} "
          "quantized layers are kept in float"
          + (f" (every {kind} layer's ops)" if kind else "")
          + ": fully quantized it reached "
          f"{percent(fallback['test_before']['accuracy'])} on test and "
          f"agreed with Keras on {percent(fallback['test_before']['agreement'])}"
          f"; {fallback['size_bytes_before'] / 1024:.0f} KB became "
          f"{fallback['size_bytes'] / 1024:.0f} KB"
          + ("" if fallback["within_bounds"] else
             "; still out of bounds on validation (--max_accuracy_drop, "
             "--min_int8_agreement)")
          + (f"; {quantization.EVERY_LAYER_ADVICE}"
             if len(fallback["float_layers"]) >= fallback["layers"] else ""))


def noise_sentence(row):
  """What `writers.noise_check` found, in one sentence."""
  said = (f"the Keras model keeps its class on {percent(row['agreement'])} "
          f"of {row['examples']} test images when each pixel moves by up to "
          f"{row['levels']:g} level of 255 ({row['flipped']} change)")
  if not row["fragile"]:
    return said
  said += (": it hangs on features that faint noise overturns, so "
           "quantized files (whose rounding is an error of that size) and "
           "images from a real camera will disagree with it as often; "
           "training images much smoother than a camera's (scaled-up scans, "
           "renders) do this")
  if row.get("head_kept_over_phase_2"):
    return (said + ". This run kept the phase-1 head: phase 2's weights had "
            "a lower validation loss, but not by a standard error; "
            "fine-tuning on these images steadies a model, and "
            "--keep_phase=lowest_loss keeps phase 2's weights")
  return (said + ", and fine-tuning on them (phase 2), or on images with "
          "the camera's noise, makes it steadier")


def tfidf_sentence(metrics):
  """What --tfidf_baseline's word-count model says about the model, in one
  sentence."""
  row, test = metrics["tfidf"], metrics["test"]
  gap = 100 * (test["accuracy"] - row["test"]["accuracy"])
  said = (f"TF-IDF + logistic regression on the same texts scores "
          f"{percent(row['test']['accuracy'])} on test, this model "
          f"{percent(test['accuracy'])} ({gap:+.1f} points)")
  if gap >= 0:
    return said
  return (said + ": word counts score higher on these texts, so weigh this "
          "network's size and speed against a word-count model's before "
          "shipping it (--model=average_word_embedding is a small one that "
          "MediaPipe runs)")
