"""What every phase of one run shares: where and how it trains."""

import dataclasses
from typing import Any, Optional

import tl_keras.training.checkpoint as checkpoint_lib


@dataclasses.dataclass(frozen=True)
class Context:
  """The settings every phase and trial of a run trains with.

  Attributes:
    strategy: the `tf.distribute.Strategy` the steps run under.
    family: the model's family (`families.of(model)`): what differs between
      kinds of model (where the head starts, what unfreezing counts, whether
      there is BatchNorm). Needed by `run_recipe`; a lone `train_phase`
      does without.
    image_size: the input size images are resized to (None: token dicts).
    batch_size: the global batch size, all replicas together.
    seed: data order and augmentation.
    augment: the augmentation policy (`inputs.augmentation`; "auto" only for
      `run_recipe`, which settles it).
    class_weights: [C] loss weights per class (`imbalance.class_weights`),
      or None: the training loss and every validation choice weigh each
      example by its class's weight.
    summaries: the TensorBoard writer (None: nothing is written).
    checkpointer: where progress is saved (None: nowhere).
    stop: the SIGTERM/SIGINT request phases act on at step boundaries;
      shared by every copy made with `but`.
  """
  strategy: Any
  image_size: Optional[int]
  batch_size: int
  seed: int = 0
  augment: Any = "none"
  family: Any = None
  class_weights: Any = None
  summaries: Any = None
  checkpointer: Any = None
  stop: checkpoint_lib.StopRequest = dataclasses.field(
      default_factory=checkpoint_lib.StopRequest)

  def but(self, **changes):
    """A copy with `changes` (the same stop request)."""
    return dataclasses.replace(self, **changes)
