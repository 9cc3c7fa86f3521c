"""The head phase solved as a linear probe on the frozen base's features.

The frozen base maps each image (or text) to a feature vector once (see
`training.FeatureCache`); fitting the new classification layer on those
vectors is then a small convex problem: multinomial logistic regression.
It is solved here the way a linear-probe evaluation does it (CLIP's
protocol): features standardized with training statistics, an L2 strength
picked on the validation split from a grid, each candidate trained to
convergence by scikit-learn's `LogisticRegression` (L-BFGS, full batch).
The grid is walked from the strongest regularization to the weakest, each
fit starting from the previous one's solution (warm start), so the whole
grid costs a few cold fits.

The standardization is folded into the classifier's kernel and bias
afterwards, so the model's graph does not change and every export computes
exactly what was fitted.

This is the first half of LP-FT (Kumar et al., ICLR 2022): fine-tuning
starts from a well-fitted linear head, which distorts the pretrained
features less than fine-tuning from a random one.
"""

import dataclasses
import logging
import time
import warnings

import numpy as np

import tl_keras.training.imbalance as imbalance

# L2 strengths tried, as the coefficient of 0.5 * ||W||^2 added to the mean
# cross-entropy (scikit-learn's C is 1 / (strength * N)). Standardized
# features make one grid fit every backbone.
STRENGTHS = tuple(10.0 ** (e / 2) for e in range(-12, 1))
# L-BFGS iterations per strength, at most. Warm-started along the grid, most
# fits after the first few need a handful; the weakest strengths (nearly
# unregularized, on separable features) would otherwise run on for little.
MAX_ITER = 300
# Examples per chunk when features are read and scored.
CHUNK = 4096
# A floor on each feature's standard deviation: this fraction of the
# features' root mean square. Folding divides the kernel by each standard
# deviation, so a feature that barely moves over the training set would get
# a huge weight, and the logits would amplify the last digits of float32
# arithmetic (a batch of 1 and a batch of 12 disagreeing, exports drifting)
# and the feature's noise on new images. On pretrained backbones' features
# the floor almost never binds.
STD_FLOOR = 0.1


@dataclasses.dataclass
class Fit:
  """A fitted linear head, already folded back to raw features.

  Attributes:
    kernel: [D, C] weights on the raw (unstandardized) features.
    bias: [C].
    strength: the chosen L2 strength.
    validation_loss: its mean cross-entropy on the validation features.
    validation_accuracy: its validation accuracy.
    grid: one dict per strength tried (strength, validation loss and
      accuracy, training loss and accuracy).
    mean, std: the standardization that was folded in.
    seconds: the fit's wall time, reading the features included.
    iterations: L-BFGS iterations over the whole grid.
  """
  kernel: np.ndarray
  bias: np.ndarray
  strength: float
  validation_loss: float
  validation_accuracy: float
  grid: list
  mean: np.ndarray
  std: np.ndarray
  seconds: float = 0.0
  iterations: int = 0

  def summary(self):
    """What run.json records about the head fit."""
    return {"strength": self.strength,
            "validation_loss": self.validation_loss,
            "validation_accuracy": self.validation_accuracy,
            "grid": self.grid, "solver": "lbfgs",
            "iterations": self.iterations, "seconds": self.seconds}


def arrays(dataset):
  """(features [N, D] float32, labels [N] int32) of a (feature, label)
  dataset, in memory or streamed from disk."""
  features, labels = [], []
  for x, y in dataset.batch(CHUNK).as_numpy_iterator():
    features.append(np.asarray(x, np.float32))
    labels.append(np.asarray(y, np.int32))
  return np.concatenate(features), np.concatenate(labels)


def standardization(features):
  """(mean, std) per feature of [N, D] features (or a (feature, label)
  dataset), std floored at `STD_FLOOR` of the features' root mean square."""
  if not isinstance(features, np.ndarray):
    features = arrays(features)[0]
  x = features.astype(np.float64)
  mean = x.mean(0)
  square = (x ** 2).mean(0)
  std = np.sqrt(np.maximum(square - mean ** 2, 0.0))
  floor = STD_FLOOR * max(float(np.sqrt(square.mean())), 1e-12)
  return mean.astype(np.float32), np.maximum(std, floor).astype(np.float32)


def fold(kernel, bias, mean, std):
  """A head on standardized features as the same head on raw features.

  W . ((x - mean) / std) + b == (W / std) . x + (b - (mean / std) . W)
  """
  raw = kernel / std[:, None]
  return raw, bias - mean @ raw


def fit(train, validation, num_classes, *, strengths=STRENGTHS, seed=0,
        class_weights=None):
  """Fits the linear head on cached features, one candidate per strength.

  Args:
    train: unbatched (float32 feature [D], int32 label) dataset, in memory
      or streamed from disk.
    validation: the same for the validation split.
    num_classes: C.
    strengths: the L2 grid.
    seed: unused by L-BFGS (deterministic); kept for the callers' record.
    class_weights: [C] weights per class (`imbalance.class_weights`) or
      None. Each example's loss is weighed by its class's weight, in the
      fits and in the validation loss and accuracy the strength is picked
      by (the accuracy is then about the balanced accuracy).

  Returns:
    A `Fit`, the candidate with the lowest validation loss (the stronger
    regularization on a tie).
  """
  del seed
  start = time.time()
  x, y = arrays(train)
  xv, yv = arrays(validation)
  mean, std = standardization(x)
  x, xv = (x - mean) / std, (xv - mean) / std
  strengths = [float(s) for s in strengths]
  weigh = ((lambda labels: None) if class_weights is None else
           (lambda labels: imbalance.example_weights(class_weights, labels)))
  heads, iterations = path(x, y, num_classes, strengths, weigh(y))
  val_loss, val_acc = _evaluate(xv, yv, heads, weigh(yv))
  train_loss, train_acc = _evaluate(x, y, heads, weigh(y))
  # Lowest loss; on a tie (to 4 decimals) the stronger regularization.
  best = min(range(len(strengths)),
             key=lambda k: (round(float(val_loss[k]), 4), -strengths[k]))
  raw_kernel, raw_bias = fold(*heads[best], mean, std)
  grid = [{"strength": s, "validation_loss": float(val_loss[k]),
           "validation_accuracy": float(val_acc[k]),
           "train_loss": float(train_loss[k]),
           "train_accuracy": float(train_acc[k])}
          for k, s in enumerate(strengths)]
  result = Fit(kernel=raw_kernel.astype(np.float32),
               bias=raw_bias.astype(np.float32),
               strength=strengths[best],
               validation_loss=float(val_loss[best]),
               validation_accuracy=float(val_acc[best]), grid=grid,
               mean=mean, std=std, seconds=time.time() - start,
               iterations=iterations)
  logging.info(
      "head: linear probe on %d-wide standardized features, L2 strength %g "
      "picked from %d by validation loss %.4f (validation accuracy %.4f, "
      "training accuracy %.4f), %d L-BFGS iterations, %.1fs", len(mean),
      result.strength, len(strengths), result.validation_loss,
      result.validation_accuracy, grid[best]["train_accuracy"], iterations,
      result.seconds)
  return result


def path(x, y, num_classes, strengths, sample_weight=None):
  """Multinomial logistic regression at each L2 strength, warm-started.

  Args:
    x: standardized features [N, D].
    y: labels [N] in [0, num_classes).
    num_classes: C; classes without a training example get a zero kernel
      and a bias far below the others (they are never predicted).
    strengths: L2 strengths, as the coefficient of 0.5 * ||W||^2 added to
      the mean cross-entropy over the examples (weighted by
      `sample_weight`, whose mean is taken to be 1).
    sample_weight: [N] or None.

  Returns:
    ([(kernel [D, C], bias [C]) per strength, in the order given], the
    L-BFGS iterations over all of them).
  """
  if np.ndim(y) == 2:
    return _multi_label_path(x, y, strengths)
  from sklearn.exceptions import ConvergenceWarning  # pylint: disable=g-import-not-at-top
  from sklearn.linear_model import LogisticRegression  # pylint: disable=g-import-not-at-top
  n = len(y) if sample_weight is None else float(np.sum(sample_weight))
  present = np.unique(y)
  heads = [None] * len(strengths)
  iterations = 0
  if len(present) < 2:  # one class: nothing to separate
    for k in range(len(strengths)):
      bias = np.full(num_classes, -20.0, np.float32)
      bias[present] = 0.0
      heads[k] = (np.zeros((x.shape[1], num_classes), np.float32), bias)
    return heads, 0
  from threadpoolctl import threadpool_limits  # pylint: disable=g-import-not-at-top
  solver = LogisticRegression(max_iter=MAX_ITER, warm_start=True)
  # One BLAS thread: L-BFGS's products are thin (N x D times D x C), and
  # OpenBLAS's threads cost more than they give on them. Measured on 2
  # cores, per iteration: 2.4 against 13.4 ms at N=5,000, D=128, C=10;
  # 45 against 88 ms at N=20,000, D=1,280; never slower at N=50,000,
  # D=2,048. The transfer check's 130 fits took 40 s with two threads.
  with threadpool_limits(limits=1, user_api="blas"), (
      warnings.catch_warnings()):
    # The weakest strengths on separable features never "converge": the
    # weights grow for ever. MAX_ITER is where they stop, as intended.
    warnings.simplefilter("ignore", ConvergenceWarning)
    # Strongest first: each solution starts the next, weaker one close by.
    for k in sorted(range(len(strengths)), key=lambda k: -strengths[k]):
      solver.set_params(C=1.0 / (strengths[k] * n))
      solver.fit(x, y, sample_weight=sample_weight)
      iterations += int(np.max(solver.n_iter_))
      heads[k] = _full_head(solver, present, num_classes)
  return heads, iterations


def _multi_label_path(x, y, strengths):
  """`path` for multi-hot labels y [N, C]: one binary logistic regression
  per label (one-vs-rest), each warm-started along the grid, at the same
  strength for every label: 0.5 * strength * ||W||^2 added to the mean
  over examples of the summed binary cross-entropy of the labels. A label
  that is always (or never) present in training gets a zero kernel and a
  bias of +20 (-20)."""
  from sklearn.exceptions import ConvergenceWarning  # pylint: disable=g-import-not-at-top
  from sklearn.linear_model import LogisticRegression  # pylint: disable=g-import-not-at-top
  from threadpoolctl import threadpool_limits  # pylint: disable=g-import-not-at-top
  y = np.asarray(y) > 0
  n, num_labels = y.shape
  kernels = np.zeros((len(strengths), x.shape[1], num_labels), np.float32)
  biases = np.zeros((len(strengths), num_labels), np.float32)
  iterations = 0
  with threadpool_limits(limits=1, user_api="blas"), (
      warnings.catch_warnings()):
    warnings.simplefilter("ignore", ConvergenceWarning)
    for c in range(num_labels):
      if y[:, c].all() or not y[:, c].any():
        biases[:, c] = 20.0 if y[:, c].all() else -20.0
        continue
      solver = LogisticRegression(max_iter=MAX_ITER, warm_start=True)
      for k in sorted(range(len(strengths)), key=lambda k: -strengths[k]):
        solver.set_params(C=1.0 / (strengths[k] * n))
        solver.fit(x, y[:, c])
        iterations += int(np.max(solver.n_iter_))
        kernels[k, :, c], biases[k, c] = solver.coef_[0], solver.intercept_[0]
  return list(zip(kernels, biases)), iterations


def _full_head(solver, present, num_classes):
  """A fitted `LogisticRegression` as (kernel [D, C], bias [C])."""
  coef, intercept = solver.coef_, solver.intercept_
  if len(present) == 2:  # binary: one logit z, as softmax over (-z/2, z/2)
    coef = np.concatenate([-coef / 2, coef / 2])
    intercept = np.concatenate([-intercept / 2, intercept / 2])
  kernel = np.zeros((coef.shape[1], num_classes), np.float32)
  bias = np.full(num_classes, float(np.min(intercept)) - 20.0, np.float32)
  kernel[:, present] = coef.T
  bias[present] = intercept
  return kernel, bias


def _example_losses(x, y, heads):
  """Cross-entropy [K, N] and hits [K, N] of each head on each example
  (for multi-hot labels: binary cross-entropy averaged over the labels, and
  exact matches at 0.5)."""
  losses, hits = [], []
  for kernel, bias in heads:
    logits = x @ kernel + bias
    if np.ndim(y) == 2:
      truth = np.asarray(y) > 0
      # -log sigmoid(z) for the positives, -log(1 - sigmoid(z)) otherwise.
      signed = np.where(truth, logits, -logits)
      losses.append(np.logaddexp(0.0, -signed).mean(-1))
      hits.append(np.all((logits >= 0) == truth, -1))
      continue
    logits -= logits.max(-1, keepdims=True)
    log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    losses.append(-log_probs[np.arange(len(y)), y])
    hits.append(logits.argmax(-1) == y)
  return np.stack(losses), np.stack(hits)


def _evaluate(x, y, heads, weights=None):
  """Mean cross-entropy and accuracy of each head, each example weighed by
  `weights` [N] (which average 1), if given."""
  loss = hits = 0.0
  for i in range(0, len(y), CHUNK):
    losses, correct = _example_losses(x[i:i + CHUNK], y[i:i + CHUNK], heads)
    if weights is None:
      loss, hits = loss + losses.sum(1), hits + correct.sum(1)
    else:
      loss = loss + losses @ weights[i:i + CHUNK]
      hits = hits + correct @ weights[i:i + CHUNK]
  return loss / len(y), hits / len(y)


@dataclasses.dataclass
class CrossValidation:
  """What `cross_validate` measured.

  Attributes:
    losses: [N] each example's cross-entropy under the head fitted without
      its fold, at `strength`.
    strength: the L2 strength with the lowest mean held-out loss.
    accuracy: the held-out accuracy at that strength.
  """
  losses: np.ndarray
  strength: float
  accuracy: float

  @property
  def loss(self):
    return float(self.losses.mean())


FOLDS = 5


def cross_validate(features, labels, num_classes, *, folds=FOLDS,
                   strengths=STRENGTHS, seed=0, class_weights=None):
  """How well a linear probe does on `features`, by k-fold cross-validation.

  Every example is scored by a head that never saw it, so all N examples
  count, not only a validation split's: on small data that is what makes
  two feature sets comparable (`transfer_check`). Every fold fits the whole
  L2 grid along its warm-started path, as `fit` does. The features are
  standardized once, with statistics of all N (no labels enter them).

  Args:
    features: float32 [N, D].
    labels: int [N].
    num_classes: C.
    folds: how many folds (each example is held out once).
    strengths: as for `fit`.
    seed: the fold assignment.
    class_weights: as for `fit`: the fits and the held-out losses (and
      accuracy) weigh each example by its class's weight.

  Returns:
    A `CrossValidation`.
  """
  labels = np.asarray(labels, np.int32)
  fold_of = np.empty(len(labels), np.int64)
  for k, part in enumerate(np.array_split(
      np.random.default_rng(seed).permutation(len(labels)), folds)):
    fold_of[part] = k
  mean, std = standardization(np.asarray(features, np.float32))
  x = ((features - mean) / std).astype(np.float32)
  strengths = [float(s) for s in strengths]
  losses = np.empty((len(strengths), len(labels)))
  hits = np.empty((len(strengths), len(labels)), bool)
  weights = (None if class_weights is None else
             imbalance.example_weights(class_weights, labels))
  for k in range(folds):
    held = fold_of == k
    heads, _ = path(x[~held], labels[~held], num_classes, strengths,
                    None if weights is None else weights[~held])
    losses[:, held], hits[:, held] = _example_losses(x[held], labels[held],
                                                     heads)
  if weights is not None:
    losses, hits = losses * weights, hits * weights
  best = int(np.argmin(losses.mean(1)))
  return CrossValidation(losses=losses[best], strength=strengths[best],
                         accuracy=float(hits[best].mean()))
