"""The run's plots as PNG bytes: learning curves and confusion matrices
(for report.html and TensorBoard), and a grid of predictions."""

import io

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.ticker  # pylint: disable=g-import-not-at-top
from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top
import numpy as np  # pylint: disable=g-import-not-at-top


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
