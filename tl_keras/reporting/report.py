"""What a run leaves for people: plots, a self-contained HTML report, a card.

The plots are drawn by `plots`, the card written by `model_card`.

`write_all` turns a finished run's record (run.json) and metrics
(metrics.json) into `learning_curves.png`, `confusion_matrix.png`,
`report.html` (images embedded, opens offline) and `README.md`, the model
card.
"""

import base64
import html
import os

from tl_keras.reporting import model_card
from tl_keras.reporting import plots
from tl_keras.reporting.sentences import command_line, fallback_sentence, noise_sentence, percent, tfidf_sentence

PNG_FILES = ("learning_curves.png", "confusion_matrix.png")


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
          *_headline_rows(test),
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
  parts += ["<h2>Learning curves</h2>", _img(images, "learning_curves.png")]
  parts += _per_class_section(test, images)
  parts += _review_section(metrics.get("review"), images)
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


def _headline_rows(test):
  """The summary table's test figures."""
  if test.get("multi_label"):
    return [["micro-F1 (every label decision pooled)",
             f"{test['micro_f1']:.4f}"],
            ["macro-F1 (the mean over labels)", f"{test['macro_f1']:.4f}"],
            ["mean average precision (no threshold)",
             f"{test['mean_average_precision']:.4f}"],
            ["exact match (every label right)", percent(test["accuracy"])]]
  return [["test accuracy", percent(test["accuracy"])],
          ["macro-F1", f"{test['macro_f1']:.4f}"],
          *([["balanced accuracy (mean recall per class)",
              percent(test["balanced_accuracy"])]]
            if "balanced_accuracy" in test else []),
          *([["top-5 accuracy", percent(test["top5_accuracy"])]]
            if "top5_accuracy" in test else [])]


def _per_class_section(test, images):
  """The confusion matrix and per-class table, or (multi-label) the
  per-label table with each label's threshold and average precision."""
  if not test.get("multi_label"):
    return ["<h2>Confusion matrix (test)</h2>",
            _img(images, "confusion_matrix.png"),
            "<h2>Per class (test)</h2>", _table(
                ["class", "precision", "recall", "F1", "support"],
                [[name, f"{m['precision']:.4f}", f"{m['recall']:.4f}",
                  f"{m['f1']:.4f}", m["support"]]
                 for name, m in test["per_class"].items()])]
  return ["<h2>Per label (test)</h2>",
          "<p>A label is predicted when its probability reaches its "
          "threshold, chosen on the validation split for the best F1. Apps "
          "read every label whose score passes (MediaPipe: "
          "<code>max_results=-1</code> and a <code>score_threshold</code>; "
          "the exports output one independent probability per label).</p>",
          _table(["label", "threshold", "precision", "recall", "F1",
                  "average precision", "support"],
                 [[name, f"{m['threshold']:.3f}", f"{m['precision']:.4f}",
                   f"{m['recall']:.4f}", f"{m['f1']:.4f}",
                   f"{m['average_precision']:.4f}"
                   if "average_precision" in m else "", m["support"]]
                  for name, m in test["per_class"].items()])]


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
  if "tfidf" in metrics:
    row = metrics["tfidf"]
    parts += ["<h2>Against word counts</h2>", _table(
        ["", "test accuracy", "test macro-F1"],
        [["this model", percent(test["accuracy"]),
          f"{test['macro_f1']:.4f}"],
         [f"TF-IDF (word 1-2-grams) + logistic regression, C={row['c']:.3g} "
          f"picked on validation, {row['train_texts']} training texts",
          percent(row["test"]["accuracy"]),
          f"{row['test']['macro_f1']:.4f}"]]),
              f"<p>{html.escape(tfidf_sentence(metrics))}.</p>"]
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
  if metrics.get("noise_check"):
    noise = metrics["noise_check"]
    parts.append(f"<p>{'<strong>Warning:</strong> ' if noise['fragile'] else ''}"
                 f"Noise check: {html.escape(noise_sentence(noise))}.</p>")
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
    ("review_seconds", "label review (every split predicted)"),
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


def _review_section(review, images):
  """The likely label errors: the most confused pairs and the most
  confident mistakes (`modes.review`)."""
  if not review:
    return []
  parts = ["<h2>Possible label errors</h2>",
           f"<p>{review['wrong']} training, validation and test examples "
           "were predicted wrong; all of them are in <code>suspect_labels.csv</code>, the "
           "most confident first. A confident mistake is where a wrong label "
           "is most likely: check these first.</p>"]
  if review["confused_pairs"]:
    parts += ["<h3>Most confused classes</h3>", _table(
        ["label", "predicted as", "examples"],
        [[html.escape(p["label"]), html.escape(p["predicted"]), p["count"]]
         for p in review["confused_pairs"]])]
  if review["top"]:
    parts.append("<h3>The most confident mistakes</h3>")
    if "top_losses.png" in images:
      parts.append(_img(images, "top_losses.png"))
    parts.append(_table(
        ["split", "#", "example", "label", "predicted", "confidence"],
        [[r["split"], r["index"], html.escape(str(r["example"])[:200]),
          html.escape(r["label"]), html.escape(r["predicted"]),
          percent(r["confidence"])] for r in review["top"]]))
  return parts


def _img(images, name):
  data = base64.b64encode(images[name]).decode("ascii")
  return f"<img alt='{name}' src='data:image/png;base64,{data}'>"


def write_all(directory, record, metrics):
  """Writes the PNG plots, report.html and README.md into `directory`."""
  images = {
      "learning_curves.png": plots.learning_curves_png(record["history"])}
  if "confusion_matrix" in metrics["test"]:  # not for multi-label
    images["confusion_matrix.png"] = plots.confusion_matrix_png(
        metrics["test"]["confusion_matrix"], record["data"]["classes"])
  for name, content in images.items():
    with open(os.path.join(directory, name), "wb") as f:
      f.write(content)
  # Written by the run, which had the images (`modes.review`).
  thumbnails = os.path.join(directory, "top_losses.png")
  if os.path.exists(thumbnails):
    with open(thumbnails, "rb") as f:
      images["top_losses.png"] = f.read()
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


def _agreement(validation, key):
  """", deciding as Keras does on X%" (runs recorded before agreement was
  measured: nothing)."""
  if key not in validation:
    return ""
  return f", deciding as Keras does on {percent(validation[key])}"


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
      f"{percent(val['keras_accuracy'])}{_agreement(val, 'agreement_before')}"
      "; TensorFlow's quantization debugger "
      "ranked its layers by their error in quantization steps (RMSE / "
      "scale). With the worst kept in float it reaches "
      f"{percent(val['accuracy'])}{_agreement(val, 'agreement')}: "
      f"{html.escape(fallback_sentence(fallback))}."
      "</p>", _table(
          ["layer", "op", "RMSE / scale", "in float"],
          [[html.escape(r["layer"][:120]), r["op"], f"{r['rmse_steps']:.2f}",
            "yes" if r["layer"] in fallback["float_layers"] else ""]
           for r in fallback["worst_layers"]])]
