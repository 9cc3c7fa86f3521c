"""What a run leaves for people: plots, a self-contained HTML report, a card.

`write_all` turns a finished run's record (run.json) and metrics
(metrics.json) into `learning_curves.png`, `confusion_matrix.png`,
`report.html` (images embedded, opens offline) and `README.md`, the model
card.
"""

import base64
import html
import io
import os

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.ticker  # pylint: disable=g-import-not-at-top
from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top
import numpy as np  # pylint: disable=g-import-not-at-top

from tl_keras import model_card  # pylint: disable=g-import-not-at-top
from tl_keras.sentences import command_line, fallback_sentence, percent  # pylint: disable=g-import-not-at-top

PNG_FILES = ("learning_curves.png", "confusion_matrix.png")


def learning_curves_png(history):
  """Loss and accuracy against training steps, train and validation.

  The transfer run's phases are marked; the from-scratch baseline's
  validation curves share the step axis, so runs of different lengths are
  drawn to the same scale.
  """
  fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), dpi=100)
  runs = [h for h in history if h["phase"] != "scratch"]
  scratch = [h for h in history if h["phase"] == "scratch"]
  for ax, key, title in ((axes[0], "loss", "loss"),
                         (axes[1], "accuracy", "accuracy")):
    steps = [h["step"] for h in runs]
    ax.plot(steps, [h[key] for h in runs], "o-", label="train")
    ax.plot(steps, [h["val_" + key] for h in runs], "s-", label="validation")
    if scratch:
      ax.plot([h["step"] for h in scratch],
              [h["val_" + key] for h in scratch], ":", color="gray",
              label="from scratch (validation)")
    boundaries = [(runs[i - 1]["step"] + runs[i]["step"]) / 2
                  for i in range(1, len(runs))
                  if runs[i]["phase"] != runs[i - 1]["phase"]]
    for b in boundaries:
      ax.axvline(b, color="black", linestyle="--", linewidth=0.8)
      ax.text(b, ax.get_ylim()[1], " fine-tune", va="top", fontsize=8)
    ax.set_xlabel("training step")
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    ax.set_title(title)
    ax.grid(alpha=0.3)
  axes[1].legend(fontsize=8)
  fig.tight_layout()
  return _png(fig)


def confusion_matrix_png(confusion, class_names):
  """The confusion matrix as a heat map with counts, rows = true class."""
  confusion = np.asarray(confusion)
  n = len(class_names)
  size = min(2 + 0.45 * n, 14)
  fig, ax = plt.subplots(figsize=(size + 1, size), dpi=100)
  shown = confusion / np.maximum(confusion.sum(1, keepdims=True), 1)
  image = ax.imshow(shown, cmap="Blues", vmin=0, vmax=1)
  if n <= 30:
    ax.set_xticks(range(n), [c[:16] for c in class_names], rotation=60,
                  ha="right", fontsize=8)
    ax.set_yticks(range(n), [c[:16] for c in class_names], fontsize=8)
    for i in range(n):
      for j in range(n):
        if confusion[i, j]:
          ax.text(j, i, int(confusion[i, j]), ha="center", va="center",
                  fontsize=7, color="white" if shown[i, j] > 0.5 else "black")
  ax.set_xlabel("predicted")
  ax.set_ylabel("true")
  fig.colorbar(image, ax=ax, fraction=0.046, label="share of the true class")
  fig.tight_layout()
  return _png(fig)


def confusion_matrix_quick_png(confusion, class_names, cell=28):
  """A light heat map for TensorBoard, drawn directly (milliseconds).

  Rows are true classes, columns predictions; darker blue = larger share of
  the true class; counts are written in the cells.
  """
  from PIL import Image, ImageDraw  # pylint: disable=g-import-not-at-top
  confusion = np.asarray(confusion)
  n = len(class_names)
  margin = 90
  share = confusion / np.maximum(confusion.sum(1, keepdims=True), 1)
  image = Image.new("RGB", (margin + n * cell, n * cell + 4), "white")
  draw = ImageDraw.Draw(image)
  for i in range(n):
    draw.text((2, i * cell + cell // 3), class_names[i][:14], fill="black")
    for j in range(n):
      level = share[i, j]
      color = tuple(int(255 - level * (255 - c)) for c in (8, 48, 107))
      box = (margin + j * cell, i * cell, margin + (j + 1) * cell - 1,
             (i + 1) * cell - 1)
      draw.rectangle(box, fill=color)
      if confusion[i, j]:
        draw.text((box[0] + 3, box[1] + cell // 3), str(int(confusion[i, j])),
                  fill="white" if level > 0.5 else "black")
  buffer = io.BytesIO()
  image.save(buffer, format="PNG")
  return buffer.getvalue()


def prediction_grid_png(images, labels, predictions, class_names, cell=96):
  """Validation images captioned "predicted / true", red when wrong."""
  from PIL import Image, ImageDraw  # pylint: disable=g-import-not-at-top
  columns = min(8, len(images))
  rows = -(-len(images) // columns)
  caption = 14
  grid = Image.new("RGB", (columns * cell, rows * (cell + caption)), "white")
  draw = ImageDraw.Draw(grid)
  for i, (image, label, predicted) in enumerate(
      zip(images, labels, predictions)):
    x, y = (i % columns) * cell, (i // columns) * (cell + caption)
    grid.paste(Image.fromarray(np.asarray(image, np.uint8)).resize(
        (cell - 4, cell - 4)), (x + 2, y + 2))
    right = predicted == label
    text = (class_names[predicted][:9] if right else
            f"{class_names[predicted][:6]}/{class_names[label][:6]}")
    draw.text((x + 3, y + cell), text,
              fill=(0, 128, 0) if right else (200, 0, 0))
  buffer = io.BytesIO()
  grid.save(buffer, format="PNG")
  return buffer.getvalue()


def _png(fig):
  buffer = io.BytesIO()
  fig.savefig(buffer, format="png")
  plt.close(fig)
  return buffer.getvalue()


def _table(header, rows):
  head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
  body = "".join(
      "<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row)
      + "</tr>" for row in rows)
  return f"<table><tr>{head}</tr>{body}</table>"


def _kb(size):
  return f"{size / 1024:.0f} KB" if size is not None else ""


def _ms(latency):
  return f"{latency:.3f} ms" if latency is not None else ""


def html_report(record, metrics, images):
  """The report as one HTML string; `images` maps PNG name -> bytes."""
  config, test = record["config"], metrics["test"]
  parts = [
      f"<h1>{html.escape(config['model'])} on "
      f"{html.escape(config['dataset'])}</h1>",
      _table(["", "value"], [
          ["test accuracy", percent(test["accuracy"])],
          ["macro-F1", f"{test['macro_f1']:.4f}"],
          *([["top-5 accuracy", percent(test["top5_accuracy"])]]
            if "top5_accuracy" in test else []),
          ["test examples", test["examples"]],
          ["validation accuracy of the weights kept (lowest loss)",
           f"{percent(metrics['validation']['best_accuracy'])} "
           f"({' epoch '.join(map(str, metrics['validation']['best_epoch'] or []))})"],
          ["classes", len(record["data"]["classes"])],
          ["train / validation / test", " / ".join(
              str(record["data"]["sizes"][s])
              for s in ("train", "validation", "test"))],
          ["weights", config["weights"]],
          ["total time", f"{record['timings'].get('total_seconds', 0):.0f} s"],
      ])]
  parts += _transfer_section(metrics)
  parts += _recipe_section(record.get("recipe", {}))
  parts += _timings_section(record.get("timings", {}))
  parts += ["<h2>Learning curves</h2>", _img(images, "learning_curves.png"),
            "<h2>Confusion matrix (test)</h2>",
            _img(images, "confusion_matrix.png"),
            "<h2>Per class (test)</h2>", _table(
                ["class", "precision", "recall", "F1", "support"],
                [[name, f"{m['precision']:.4f}", f"{m['recall']:.4f}",
                  f"{m['f1']:.4f}", m["support"]]
                 for name, m in test["per_class"].items()])]
  parts += _exports_section(metrics)
  parts += ["<h2>Reproduce</h2>",
            f"<pre>{html.escape(command_line(config))}</pre>",
            "<h2>Environment</h2>", _table(
                ["", "version"], sorted(record["versions"].items()))]
  style = ("body{font-family:sans-serif;max-width:1000px;margin:2em auto;"
           "color:#222}table{border-collapse:collapse;margin:.5em 0}"
           "td,th{border:1px solid #ccc;padding:.25em .6em;text-align:left}"
           "th{background:#f3f3f3}img{max-width:100%}pre{background:#f6f6f6;"
           "padding:.6em;white-space:pre-wrap}")
  title = html.escape(f"tl_keras: {config['model']} on {config['dataset']}")
  return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{title}"
          f"</title><style>{style}</style></head><body>{''.join(parts)}"
          "</body></html>")


def _transfer_section(metrics):
  """The negative-transfer warning, and transfer against scratch."""
  parts, test = [], metrics["test"]
  if metrics.get("negative_transfer"):
    parts.append("<p style='background:#fde8e8;padding:.6em'><b>Warning: "
                 f"{html.escape(metrics['negative_transfer'])}.</b></p>")
  if metrics.get("scratch", {}).get("same_as_run"):
    parts += ["<h2>Transfer versus from scratch</h2>",
              "<p>The run trained from random initialization (the transfer "
              "check set the pretrained weights aside), so it is its own "
              "from-scratch baseline.</p>"]
  elif "scratch" in metrics:
    parts += ["<h2>Transfer versus from scratch</h2>"]
    parts.append(_table(
        ["", "validation accuracy", "test accuracy"],
        [["transfer", percent(metrics["validation"]["best_accuracy"]),
          percent(test["accuracy"])],
         ["from scratch: the same recipe from random weights",
          percent(metrics["scratch"]["validation"]["best_accuracy"]),
          percent(metrics["scratch"]["test"]["accuracy"])],
         ["gain", "", f"{100 * metrics['transfer_gain']:+.1f} points"]]))
    if metrics.get("kept"):
      parts.append(f"<p><b>Exported:</b> {html.escape(metrics['kept']['reason'])}"
                   ".</p>")
  return parts


def _exports_section(metrics):
  """The parity table of the TFLite files, and what the fallback did."""
  parts = []
  if metrics.get("tflite"):
    first = next(iter(metrics["tflite"].values()))
    parts += [f"<h2>Exports checked with LiteRT ({first['examples']} test "
              "examples)</h2>",
              "<p>Size on disk and gzipped (what a download carries); median "
              "single-example latency under the LiteRT interpreter on this "
              "machine, after warm-up.</p>", _table(
                  ["model", "accuracy", "agreement with Keras", "size",
                   "gzipped", "latency, 1 thread",
                   f"latency, {first['threads']} threads"],
                  [["Keras", percent(first["keras_accuracy"]), "", "", "", "",
                    ""]]
                  + [_parity_cells(f"model_{v}.tflite", r)
                     for v, r in metrics["tflite"].items()]
                  + [_parity_cells(f"model_{v}.tflite unpruned", r)
                     for v, r in _unpruned(metrics).items()])]
    if _unpruned(metrics):
      parts.append(
          "<p>Pruned with --prune_sparsity: the rows marked unpruned are "
          "the same network before pruning (phase 1's, Keras accuracy "
          f"{percent(next(iter(_unpruned(metrics).values()))['keras_accuracy'])}"
          "), converted the same way and not kept.</p>")
    parts += _fallback_section(metrics["tflite"].get("int8", {}))
  return parts


def _recipe_section(recipe):
  """What the recipe chose on the validation split, as HTML parts."""
  parts = []
  start = recipe.get("start")
  if start:
    parts += ["<h2>Transfer check: pretrained against random features</h2>",
              f"<p>Linear probes, {start['folds']}-fold cross-validated on "
              f"{start['examples']} training and validation examples: "
              + ("the pretrained features are clearly worse, so the network "
                 "trained from random initialization." if start["weights"] ==
                 "random" else "the pretrained weights are kept.") + "</p>",
              _table(["features", "held-out loss", "held-out accuracy"],
                     [[name, f"{start[key]['loss']:.4f}",
                       percent(start[key]["accuracy"])]
                      for name, key in (("pretrained", "pretrained"),
                                        ("random initialization",
                                         "random"))])]
  head = recipe.get("head")
  if head:
    parts += ["<h2>Phase 1: the head as a linear probe</h2>",
              f"<p>L2 strength {head['strength']:g}, picked from "
              f"{len(head['grid'])} by validation loss.</p>", _table(
                  ["L2 strength", "validation loss", "validation accuracy",
                   "training accuracy"],
                  [[f"{g['strength']:g}", f"{g['validation_loss']:.4f}",
                    percent(g["validation_accuracy"]),
                    percent(g["train_accuracy"])] for g in head["grid"]])]
  finetune = recipe.get("finetune")
  if finetune:
    parts += ["<h2>Phase 2: fine-tuning</h2>",
              f"<p>Learning rate {finetune['learning_rate']:g}, BatchNorm "
              f"{finetune['batchnorm']}"
              + (", picked by trials:" if finetune["trials"] else ".")
              + "</p>"]
    if finetune["trials"]:
      parts.append(_table(
          ["learning rate", "BatchNorm", "steps", "validation loss",
           "validation accuracy"],
          [[f"{t['learning_rate']:g}", t["batchnorm"], t["steps"],
            f"{t['validation_loss']:.4f}", percent(t["validation_accuracy"])]
           for t in finetune["trials"]]))
  augment = recipe.get("augment")
  if augment and "mirrored_accuracy" in augment:
    parts.append(
        f"<p>Augmentation (--augment=auto): {augment['policy']}. The phase-1 "
        f"head's validation accuracy was {percent(augment['accuracy'])}, and "
        f"{percent(augment['mirrored_accuracy'])} on mirror images"
        + (": mirror images are another class, so no flips.</p>"
           if augment["policy"] == "shift" else ".</p>"))
  return parts


# Where a run's time went, in the order things happen: (run.json key,
# what it covers). Keys a run did not reach are left out.
TIMINGS = (
    ("setup_seconds", "setup: data, model, weights"),
    ("features_seconds", "phase 1: feature pass through the frozen base"),
    ("probe_seconds", "phase 1: linear probe (L2 grid)"),
    ("loop_head_seconds", "phase 1: head trained in the loop"),
    ("transfer_check_seconds", "transfer check"),
    ("trials_seconds", "phase 2: learning-rate trials"),
    ("continuation_seconds", "phase 2: the winning trial's continuation"),
    ("scratch_seconds", "from-scratch baseline"),
    ("export_seconds", "exports"),
    ("int8_fallback_seconds", "int8 fallback"),
    ("parity_seconds", "parity check of the TFLite files"),
    ("total_seconds", "total"),
)


def timing_rows(timings):
  """[(what, seconds, share of the total)] of a run's `timings`."""
  timings = dict(timings)
  if "finetune_seconds" in timings:
    timings["continuation_seconds"] = timings["finetune_seconds"] - timings.get(
        "trials_seconds", 0.0)
  if "features_seconds" not in timings and "head_seconds" in timings:
    timings["loop_head_seconds"] = timings["head_seconds"]
  total = timings.get("total_seconds") or 0.0
  return [(what, timings[key], timings[key] / total if total else 0)
          for key, what in TIMINGS if key in timings]


def _timings_section(timings):
  if not timings.get("total_seconds"):
    return []
  return ["<h2>Where the time went</h2>", _table(
      ["", "seconds", "share"],
      [[what, f"{seconds:.1f}", percent(share)]
       for what, seconds, share in timing_rows(timings)])]


def _img(images, name):
  data = base64.b64encode(images[name]).decode("ascii")
  return f"<img alt='{name}' src='data:image/png;base64,{data}'>"


def write_all(directory, record, metrics):
  """Writes the PNG plots, report.html and README.md into `directory`."""
  images = {
      "learning_curves.png": learning_curves_png(record["history"]),
      "confusion_matrix.png": confusion_matrix_png(
          metrics["test"]["confusion_matrix"], record["data"]["classes"]),
  }
  for name, content in images.items():
    with open(os.path.join(directory, name), "wb") as f:
      f.write(content)
  with open(os.path.join(directory, "report.html"), "w",
            encoding="utf-8") as f:
    f.write(html_report(record, metrics, images))
  with open(os.path.join(directory, "README.md"), "w", encoding="utf-8") as f:
    f.write(model_card.model_card(record, metrics))


def _parity_cells(name, row):
  return [name, percent(row["accuracy"]), percent(row["agreement"]),
          _kb(row.get("size_bytes")), _kb(row.get("compressed_bytes")),
          _ms(row.get("latency_ms_1_thread")), _ms(row.get("latency_ms"))]


def _unpruned(metrics):
  """{variant: parity row} of the TFLite files before pruning, if any."""
  return {v: r["unpruned"] for v, r in metrics.get("tflite", {}).items()
          if "unpruned" in r}


def _fallback_section(row):
  """The report's account of the int8 fallback, when there was one."""
  fallback = row.get("fallback")
  if not fallback:
    return []
  val = fallback["validation"]
  return [
      "<h2>int8: layers kept in float</h2>",
      f"<p>Fully quantized, int8 reached {percent(val['accuracy_before'])} "
      f"on {val['examples']} validation examples against Keras's "
      f"{percent(val['keras_accuracy'])}; TensorFlow's quantization debugger "
      "ranked its layers by their error in quantization steps (RMSE / "
      "scale). With the worst kept in float it reaches "
      f"{percent(val['accuracy'])}: {html.escape(fallback_sentence(fallback))}."
      "</p>", _table(
          ["layer", "op", "RMSE / scale", "in float"],
          [[html.escape(r["layer"][:120]), r["op"], f"{r['rmse_steps']:.2f}",
            "yes" if r["layer"] in fallback["float_layers"] else ""]
           for r in fallback["worst_layers"]])]
