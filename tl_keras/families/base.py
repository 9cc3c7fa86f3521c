"""The interface every model family implements."""

from tl_keras.errors import UserError


class Family:
  """One kind of model, from its --model name to its served files.

  Attributes:
    name: what run.json and --list_models call the family.
    kind: "image" or "text": the serving object's kind.
    block_word: what --unfreeze counts ("blocks", "transformer layers").
    no_decay: variable names (substrings) weight decay leaves alone.
    random_lrs: phase 2's trial rates from random weights (None: the
      recipe's `random_lrs`).
    label_smoothing: the loss's label smoothing when --label_smoothing is
      not given.
  """

  name = ""
  kind = "image"
  block_word = "blocks"
  no_decay = ()
  # Phase 2's trial rates from random weights; None: the recipe's.
  random_lrs = None
  label_smoothing = 0.0

  # Names and listing.

  def owns(self, name):
    """Whether --model=`name` is this family's."""
    raise NotImplementedError

  def built(self, model):
    """Whether `model` is a classifier this family built."""
    raise NotImplementedError

  def check(self, config):
    """Raises UserError for a --model or flag this family cannot take."""

  def listing(self):
    """[(group, name, input, parameters, note)] rows for --list_models."""
    return []

  def configured(self, config):
    """`config` as this family trains it (a family with nothing pretrained
    trains every weight from random values)."""
    return config

  def source_weights(self, config, sources, strategy):
    """The file of --weights=synthetic: this family's source-task weights,
    from `sources` (the `pretraining` module, passed in: families sit below
    it), trained first if its cache has none."""
    raise UserError(f"--model={config.model} has no offline source task: "
                    "use --weights=pretrained")

  # Data.

  def image_size(self, config):
    """The input size images are resized to; None for text."""
    return None

  def augment(self, config):
    """The --augment policy the family trains with."""
    return config.augment

  def load_splits(self, config):
    """The raw `data.Splits` of --dataset, as this family reads them."""
    raise NotImplementedError

  def prepare_splits(self, splits, model):
    """Splits as the model's training step takes them (text: tokenized)."""
    del model
    return splits

  def example_sources(self, raw_splits, split):
    """What names each example of a raw split, in order, for people
    reviewing it (an image's file, a text itself), or None."""
    return raw_splits.sources.get(split)

  def example_thumbnails(self, raw_splits, split, indices, size=64):
    """{index: uint8 [size, size, 3]} of those examples of a raw split, for
    a report; {} when the examples are not images."""
    del raw_splits, split, indices, size
    return {}

  # The classifier.

  def build(self, config, num_classes, strategy, raw_splits=None):
    """The classifier, base frozen, with the starting weights --weights names.

    `raw_splits`: the `data.Splits` the model is for, where the caller has
    them; a family whose model depends on the data (the word-embedding
    model's vocabulary) reads --dataset itself when they are None.
    """
    raise NotImplementedError

  def describe(self, config, model):
    """What run.json says about the model."""
    raise NotImplementedError

  def head_parts(self, model):
    """(feature tensor, head layers): the head maps features to
    probabilities, its last layer the Dense the probe fits."""
    raise NotImplementedError

  def has_batchnorm(self, model):
    return False

  def unfreeze_count(self, model, mode, value):
    """How many top blocks --unfreeze selects; UserError if too many."""
    raise NotImplementedError

  def unfreeze_top(self, model, mode, value, train_batchnorm=False):
    """Makes the top blocks trainable; returns how many layers with weights
    are trainable now."""
    raise NotImplementedError

  def first_unfrozen_block(self, model, mode, value):
    raise NotImplementedError

  # Export.

  def serving(self, model, about=None):
    """The `serving` object: SavedModel and TFLite inputs, runner, metadata."""
    raise NotImplementedError


def block_count(depth, mode, value, name, what="blocks"):
  """--unfreeze as a number of top blocks out of `depth`."""
  if mode == "all":
    return depth
  if mode == "layers":
    if value > depth:
      raise UserError(f"--unfreeze={value} exceeds the {depth} {what} of "
                      f"--model={name}; use at most {depth} or 'all'")
    return value
  return max(1, round(value * depth))


def activation(config):
  """The output layer's activation: one class per example (softmax), or an
  independent probability per label (sigmoid, --multi_label)."""
  return "sigmoid" if config.multi_label else "softmax"
