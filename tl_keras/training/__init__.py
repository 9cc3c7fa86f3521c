"""The training loop and the two-phase transfer recipe, by concern.

    context     what every phase of a run shares (`Context`)
    loop        one phase under any tf.distribute strategy (`train_phase`)
    steps       the optimizer, loss scaling, compiled train and eval steps
    recipe      the two-phase recipe: head, then fine-tuning (`run_recipe`)
    choices     what the recipe picks on the validation split (trials, ...)
    features    the feature cache (the frozen base's outputs, computed once)
    transfer_check  pretrained features against random ones, after phase 1
    pruning     masks in the training step; gradual magnitude pruning
    oneshot     one-shot pruning with layer-wise reconstruction
    checkpoint  checkpoints, the best weights, SIGTERM/SIGINT handling
    summaries   TensorBoard

The names other modules use are importable from `tl_keras.training`.
"""

from tl_keras.evaluation import clearly_lower
from tl_keras.training.checkpoint import Best
from tl_keras.training.checkpoint import Checkpointer
from tl_keras.training.checkpoint import Stopped
from tl_keras.training.checkpoint import StopRequest
from tl_keras.training.choices import choose_augmentation
from tl_keras.training.choices import choose_finetuning
from tl_keras.training.context import Context
from tl_keras.training.features import FeatureCache
from tl_keras.training.loop import fingerprint
from tl_keras.training.loop import PhaseSpec
from tl_keras.training.loop import train_phase
from tl_keras.training import imbalance
from tl_keras.training import oneshot
from tl_keras.training import pruning
from tl_keras.training.recipe import Recipe
from tl_keras.training.recipe import run_recipe
from tl_keras.training.steps import evaluate
from tl_keras.training.steps import LossScale
from tl_keras.training.steps import make_optimizer
from tl_keras.training.steps import StepCache
from tl_keras.training.summaries import Summaries
from tl_keras.training.transfer_check import warning as transfer_warning

__all__ = [
    "Best", "Checkpointer", "Context", "StopRequest", "Stopped",
    "FeatureCache", "PhaseSpec",
    "fingerprint", "train_phase", "Recipe", "choose_augmentation",
    "choose_finetuning", "clearly_lower", "run_recipe", "LossScale",
    "evaluate", "make_optimizer", "StepCache", "Summaries", "transfer_warning",
    "imbalance", "oneshot",
    "pruning",
]
