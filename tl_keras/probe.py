"""The head phase solved as a linear probe on the frozen base's features.

The frozen base maps each image (or text) to a feature vector once (see
`training.FeatureCache`); fitting the new classification layer on those
vectors is then a small convex problem: multinomial logistic regression.
It is solved here properly, the way a linear-probe evaluation does it (CLIP's
protocol): features standardized with training statistics, an L2 strength
picked on the validation split from a grid, each candidate trained to
convergence. All candidates train at once, as one batched tensor program,
so the whole grid costs about as much as one fit.

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

import numpy as np
import tensorflow as tf

from tl_keras import inputs as inputs_lib

# L2 strengths tried, as the coefficient of 0.5 * ||W||^2 added to the mean
# cross-entropy (sklearn's C is 1 / (strength * N)). Standardized features
# make one grid fit every backbone.
STRENGTHS = tuple(10.0 ** (e / 2) for e in range(-12, 1))
# Full-batch Adam with cosine decay: a convex problem on standardized
# features converges in a few hundred steps. Larger sets use minibatches.
STEPS = 600
LEARNING_RATE = 0.05
MAX_BATCH = 4096
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

  def summary(self):
    """What run.json records about the head fit."""
    return {"strength": self.strength,
            "validation_loss": self.validation_loss,
            "validation_accuracy": self.validation_accuracy,
            "grid": self.grid, "steps": STEPS, "seconds": self.seconds}


def standardization(dataset):
  """(mean, std) per feature of a (feature, label) dataset, std floored."""
  total = square = None
  count = 0
  for x, _ in dataset.batch(MAX_BATCH).as_numpy_iterator():
    x = x.astype(np.float64)
    total = x.sum(0) if total is None else total + x.sum(0)
    square = (x ** 2).sum(0) if square is None else square + (x ** 2).sum(0)
    count += len(x)
  mean = total / count
  std = np.sqrt(np.maximum(square / count - mean ** 2, 0.0))
  floor = STD_FLOOR * max(float(np.sqrt(square.sum() / count / len(mean))),
                          1e-12)
  return mean.astype(np.float32), np.maximum(std, floor).astype(np.float32)


def fold(kernel, bias, mean, std):
  """A head on standardized features as the same head on raw features.

  W . ((x - mean) / std) + b == (W / std) . x + (b - (mean / std) . W)
  """
  raw = kernel / std[:, None]
  return raw, bias - mean @ raw


def fit(train, validation, num_classes, *, strengths=STRENGTHS, steps=STEPS,
        seed=0):
  """Fits the linear head on cached features, one candidate per strength.

  Args:
    train: unbatched (float32 feature [D], int32 label) dataset, in memory
      or streamed from disk.
    validation: the same for the validation split.
    num_classes: C.
    strengths: the L2 grid.
    steps: Adam steps per candidate (all candidates step together).
    seed: minibatch order, when the training set is larger than MAX_BATCH.

  Returns:
    A `Fit`, the candidate with the lowest validation loss (the stronger
    regularization on a tie).
  """
  start = time.time()
  mean, std = standardization(train)
  strengths = [float(s) for s in strengths]
  kernel, bias = _adam(_standardized(train, mean, std), num_classes,
                       np.asarray(strengths, np.float32), steps, seed)
  val_loss, val_acc = _evaluate(_standardized(validation, mean, std),
                                kernel, bias)
  train_loss, train_acc = _evaluate(_standardized(train, mean, std), kernel,
                                    bias)
  # Lowest loss; on a tie (to 4 decimals) the stronger regularization.
  best = min(range(len(strengths)),
             key=lambda k: (round(float(val_loss[k]), 4), -strengths[k]))
  raw_kernel, raw_bias = fold(kernel[best], bias[best], mean, std)
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
               mean=mean, std=std, seconds=time.time() - start)
  logging.info(
      "head: linear probe on %d-wide standardized features, L2 strength %g "
      "picked from %d by validation loss %.4f (validation accuracy %.4f, "
      "training accuracy %.4f), %.1fs", len(mean), result.strength,
      len(strengths), result.validation_loss, result.validation_accuracy,
      grid[best]["train_accuracy"], result.seconds)
  return result


def _standardized(dataset, mean, std):
  mean, std = tf.constant(mean), tf.constant(std)
  return dataset.map(lambda x, y: ((x - mean) / std, y),
                     num_parallel_calls=tf.data.AUTOTUNE)


def _example_losses(x, y, kernel, bias):
  """Cross-entropy [K, N] and hits [K, N] of each candidate on each example."""
  logits = np.einsum("nd,kdc->knc", x, kernel) + bias[:, None, :]
  logits -= logits.max(-1, keepdims=True)
  log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
  losses = -np.take_along_axis(
      log_probs, y[None, :, None].astype(np.int64), axis=-1)[..., 0]
  return losses, logits.argmax(-1) == y[None]


def _evaluate(dataset, kernel, bias):
  """Mean cross-entropy and accuracy of each candidate head."""
  loss = hits = 0.0
  count = 0
  for x, y in dataset.batch(MAX_BATCH).as_numpy_iterator():
    losses, correct = _example_losses(x, y, kernel, bias)
    loss = loss + losses.sum(1)
    hits = hits + correct.sum(1)
    count += len(y)
  return loss / count, hits / count


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
                   strengths=STRENGTHS, steps=STEPS, seed=0):
  """How well a linear probe does on `features`, by k-fold cross-validation.

  Every example is scored by a head that never saw it, so all N examples
  count, not only a validation split's: on small data that is what makes
  two feature sets comparable (`transfer_check`). Every fold fits the whole
  L2 grid, as `fit` does, and all folds train together as one batched
  program. The features are standardized once, with statistics of all N
  (no labels enter them).

  Args:
    features: float32 [N, D].
    labels: int [N].
    num_classes: C.
    folds: how many folds (each example is held out once).
    strengths, steps: as for `fit`.
    seed: the fold assignment and minibatch order.

  Returns:
    A `CrossValidation`.
  """
  labels = np.asarray(labels, np.int32)
  fold = np.empty(len(labels), np.int64)
  for k, part in enumerate(np.array_split(
      np.random.default_rng(seed).permutation(len(labels)), folds)):
    fold[part] = k
  # trains[i, k]: example i is in fold k's training set.
  trains = (fold[:, None] != np.arange(folds)[None]).astype(np.float32)
  mean, std = standardization(tf.data.Dataset.from_tensor_slices(
      (features, labels)))
  x = ((features - mean) / std).astype(np.float32)
  strengths = np.asarray(strengths, np.float32)
  # Candidate k * S + s: fold k's training set, strength s.
  kernel, bias = _adam(tf.data.Dataset.from_tensor_slices((x, labels, trains)),
                       num_classes, np.tile(strengths, folds), steps, seed,
                       folds=folds)
  all_losses, all_hits = _example_losses(x, labels, kernel, bias)
  shape = (folds, len(strengths), len(labels))
  # Each example scored by the heads of the one fold that held it out.
  held_out = np.arange(len(labels))
  losses = all_losses.reshape(shape)[fold, :, held_out].T
  hits = all_hits.reshape(shape)[fold, :, held_out].T
  best = int(np.argmin(losses.mean(1)))
  return CrossValidation(losses=losses[best], strength=float(strengths[best]),
                         accuracy=float(hits[best].mean()))


def _adam(dataset, num_classes, strengths, steps, seed, folds=0):
  """K heads (one per strength) trained together by Adam, cosine decay.

  With `folds`, each element also holds a [folds] 0/1 vector and the K
  heads are folds x (K / folds) strengths: head k * K / folds + s trains
  only on the examples whose entry k is 1.

  Returns:
    (kernel [K, D, C], bias [K, C]) as numpy arrays.
  """
  dim = dataset.element_spec[0].shape[-1]
  size = int(dataset.cardinality())
  if size < 0:  # streamed from disk: count once
    size = int(dataset.reduce(0, lambda n, _: n + 1))
  k = len(strengths)
  batch = min(size, MAX_BATCH)
  batches = dataset
  if size > batch:
    batches = batches.shuffle(min(size, 50_000), seed=seed)
  batches = batches.repeat().batch(batch, drop_remainder=True)
  if size == batch:
    batches = dataset.batch(batch).cache().repeat()  # one full batch
  kernel = tf.Variable(tf.zeros([k, dim, num_classes]))
  bias = tf.Variable(tf.zeros([k, num_classes]))
  variables = [kernel, bias]
  schedule = tf.keras.optimizers.schedules.CosineDecay(LEARNING_RATE, steps)
  optimizer = tf.keras.optimizers.Adam(schedule)
  optimizer.build(variables)
  strengths = tf.constant(strengths)

  @tf.function
  def run(iterator):
    for _ in tf.range(steps):
      x, y, *train = next(iterator)
      with tf.GradientTape() as tape:
        logits = tf.einsum("nd,kdc->knc", x, kernel) + bias[:, None, :]
        targets = tf.broadcast_to(y[None], [k, tf.shape(y)[0]])
        ce = tf.nn.sparse_softmax_cross_entropy_with_logits(targets, logits)
        if folds:  # [n, folds] -> [K, n]: each head's own examples
          weights = tf.repeat(tf.transpose(train[0]), k // folds, axis=0)
          ce = tf.reduce_sum(ce * weights, 1) / tf.maximum(
              tf.reduce_sum(weights, 1), 1.0)
        else:
          ce = tf.reduce_mean(ce, axis=1)
        # Candidates are independent: the sum's gradient is each one's own.
        loss = tf.reduce_sum(ce + 0.5 * strengths * tf.reduce_sum(
            kernel ** 2, axis=[1, 2]))
      optimizer.apply_gradients(zip(tape.gradient(loss, variables),
                                    variables))

  run(iter(inputs_lib.prefetched(batches)))
  return kernel.numpy(), bias.numpy()
