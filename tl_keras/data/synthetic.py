"""Embedded synthetic image tasks: no download, deterministic from a seed.

Two tasks share one renderer of filled shapes on noisy, tinted backgrounds:

* ``synthetic_source``: 10 shape classes with many labels. A backbone trained
  on it learns edges, corners and curvature, the way an ImageNet backbone does.
* ``synthetic``: 6 *other* shapes with few labels. This is the offline default
  target task: a backbone pretrained on the source task transfers to it, while
  the same network trained from scratch on so few labels does much worse.

Every image depends only on (seed, split, class, index), so a split's content
does not change when another split's size does.
"""

import dataclasses

import numpy as np

_SUPERSAMPLE = 2  # Render at 2x and average down: anti-aliased edges.


def _polygon(vertex_radii):
  """Radius function of a star-shaped polygon with evenly spaced vertices."""
  radii = np.asarray(vertex_radii, dtype=np.float64)
  n = len(radii)
  step = 2 * np.pi / n

  def radius(theta):
    theta = np.mod(theta, 2 * np.pi)
    k = np.floor(theta / step).astype(int) % n
    phi = theta - k * step
    r1, r2 = radii[k], radii[(k + 1) % n]
    # Distance from the centre to the edge between vertices k and k+1.
    return r1 * r2 * np.sin(step) / (r1 * np.sin(phi) + r2 * np.sin(step - phi))

  return radius


def _ngon(n):
  return _polygon([1.0] * n)


def _star(points, inner):
  return _polygon([1.0, inner] * points)


def _flower(petals):
  return lambda theta: 0.62 + 0.38 * np.cos(petals * theta)


def _circle(theta):
  return np.ones_like(theta)


def _ellipse(theta):
  a, b = 1.0, 0.5
  return a * b / np.sqrt((b * np.cos(theta)) ** 2 + (a * np.sin(theta)) ** 2)


def _radial(radius_fn, hole=0.0):
  """Mask from a radius function, optionally hollowed out."""

  def mask(x, y):
    r = np.hypot(x, y)
    theta = np.arctan2(y, x)
    edge = radius_fn(theta)
    inside = r <= edge
    if hole:
      inside &= r >= hole * edge
    return inside

  return mask


def _cross(x, y):
  arm = 0.3
  return ((np.abs(x) <= arm) & (np.abs(y) <= 1)) | (
      (np.abs(y) <= arm) & (np.abs(x) <= 1))


def _crescent(x, y):
  return (np.hypot(x, y) <= 1) & (np.hypot(x - 0.55, y) > 0.8)


def _semicircle(x, y):
  return (np.hypot(x, y) <= 1) & (y <= 0.1)


# Masks take coordinates in the shape's own frame, scaled so radius 1 is the
# shape's size; rotation and placement are applied by the renderer.
SHAPES = {
    "circle": _radial(_circle),
    "triangle": _radial(_ngon(3)),
    "square": _radial(_ngon(4)),
    "pentagon": _radial(_ngon(5)),
    "star5": _radial(_star(5, 0.45)),
    "ring": _radial(_circle, hole=0.55),
    "cross": _cross,
    "ellipse": _radial(_ellipse),
    "flower4": _radial(_flower(4)),
    "crescent": _crescent,
    "hexagon": _radial(_ngon(6)),
    "star4": _radial(_star(4, 0.4)),
    "hollow_square": _radial(_ngon(4), hole=0.5),
    "hollow_triangle": _radial(_ngon(3), hole=0.45),
    "semicircle": _semicircle,
    "flower3": _radial(_flower(3)),
}


@dataclasses.dataclass(frozen=True)
class Task:
  """One embedded task: its classes and how many images each split holds."""
  classes: tuple
  per_class: dict  # split name -> images per class
  seed_offset: int  # keeps the two tasks' images independent


TASKS = {
    "synthetic_source": Task(
        classes=("circle", "triangle", "square", "pentagon", "star5", "ring",
                 "cross", "ellipse", "flower4", "crescent"),
        per_class={"train": 500, "validation": 50, "test": 50},
        seed_offset=1000),
    # Few labels on purpose: 12 per class is where transfer pays off.
    "synthetic": Task(
        classes=("hexagon", "star4", "hollow_square", "hollow_triangle",
                 "semicircle", "flower3"),
        per_class={"train": 12, "validation": 20, "test": 100},
        seed_offset=2000),
}

_SPLIT_IDS = {"train": 0, "validation": 1, "test": 2}


def render(shape, count, size, rng):
  """Renders `count` images of one shape.

  Args:
    shape: a key of `SHAPES`.
    count: number of images.
    size: output height and width in pixels.
    rng: a `numpy.random.Generator`; the only source of randomness.

  Returns:
    uint8 array [count, size, size, 3].
  """
  mask_fn = SHAPES[shape]
  hi = size * _SUPERSAMPLE
  grid = (np.arange(hi) + 0.5) / hi * 2 - 1  # pixel centres in [-1, 1]
  gx, gy = np.meshgrid(grid, grid)
  lo = np.linspace(-1, 1, size)
  lo_x, lo_y = np.meshgrid(lo, lo)
  images = np.empty((count, size, size, 3), dtype=np.uint8)
  for i in range(count):
    scale = rng.uniform(0.38, 0.72)
    cx, cy = rng.uniform(-1 + scale, 1 - scale, size=2) * 0.9
    angle = rng.uniform(0, 2 * np.pi)
    c, s = np.cos(angle), np.sin(angle)
    x = ((gx - cx) * c + (gy - cy) * s) / scale
    y = (-(gx - cx) * s + (gy - cy) * c) / scale
    mask = mask_fn(x, y).astype(np.float32)
    mask = mask.reshape(size, _SUPERSAMPLE, size, _SUPERSAMPLE).mean((1, 3))
    background = rng.uniform(0, 255, size=3)
    # Keep the shape visible: its colour differs from the background by a
    # margin in at least one channel.
    foreground = rng.uniform(0, 255, size=3)
    while np.abs(foreground - background).max() < 80:
      foreground = rng.uniform(0, 255, size=3)
    # A soft light gradient in a random direction, so colour alone is no cue.
    direction = rng.uniform(0, 2 * np.pi)
    ramp = np.cos(direction) * lo_x + np.sin(direction) * lo_y
    image = background + ramp[..., None] * rng.uniform(-40, 40, size=3)
    image = image + mask[..., None] * (foreground - image)
    image += rng.normal(0, 12, size=image.shape)
    images[i] = np.clip(image, 0, 255).astype(np.uint8)
  return images


def load(task_name, split, size=32, seed=0):
  """Generates one split of an embedded task.

  Args:
    task_name: a key of `TASKS`.
    split: "train", "validation" or "test".
    size: image height and width.
    seed: base seed; the same seed always gives the same images.

  Returns:
    (images uint8 [N, size, size, 3], labels int32 [N]), ordered by class.
  """
  task = TASKS[task_name]
  images, labels = [], []
  for label, shape in enumerate(task.classes):
    rng = np.random.default_rng(
        [seed, task.seed_offset, _SPLIT_IDS[split], label])
    images.append(render(shape, task.per_class[split], size, rng))
    labels.append(np.full(task.per_class[split], label, dtype=np.int32))
  return np.concatenate(images), np.concatenate(labels)
