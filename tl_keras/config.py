"""The run configuration: one frozen object, defaults and help in one place.

`main.py` turns each field into an absl flag (default and help from here), so
flags, flagfiles and library calls cannot disagree about a default.
"""

import dataclasses
import os

from tl_keras.errors import UserError
from tl_keras.flag_values import CALIBRATED_EXPORTS
from tl_keras.flag_values import DEFAULT_EXPORTS
from tl_keras.flag_values import EXPORT_FORMATS
from tl_keras.flag_values import parse_exports
from tl_keras.flag_values import parse_profile_steps
from tl_keras.flag_values import parse_unfreeze

MODES = ("train", "export", "predict", "evaluate")
# --max_accuracy_drop's default: what the int8 fallback aims at when the
# check is off.
MAX_ACCURACY_DROP = 0.02


def _field(default, help, group, choices=None):  # pylint: disable=redefined-builtin
  return dataclasses.field(
      default=default,
      metadata={"help": help, "group": group, "choices": choices})


@dataclasses.dataclass(frozen=True)
class Config:
  """Everything a run needs. Build it with keyword arguments or from flags."""

  # Model.
  model: str = _field(
      "resnet50", "Backbone: a keras.applications name, a KerasHub image "
      "or text-classifier preset (e.g. resnet_18_imagenet, "
      "bert_base_en_uncased), a local preset folder, or bert_micro "
      "(offline); see --list_models.", "model")
  weights: str = _field(
      "imagenet",
      "imagenet, none, synthetic (pretrained on the embedded source task, made "
      "on first use and cached), a .keras/.weights.h5/.h5 file, or an earlier "
      "run's output directory. KerasHub presets: imagenet or pretrained = "
      "the preset's own weights; none; an earlier run (images) or preset "
      "folder (text); synthetic (bert_micro).", "model")
  image_size: int = _field(
      0, "Input size the backbone sees; 0 = the model's default.", "model")
  sequence_length: int = _field(
      0, "Text models: tokens per text, [CLS] and [SEP] included; 0 = 128 "
      "(32 for bert_micro).", "model")
  dropout: float = _field(
      0.0, "Dropout before the classification layer. 0 by default: the "
      "phase-1 head is a linear probe fitted without dropout, and dropout "
      "in phase 2 would perturb the logits it starts from.", "model")

  # Data.
  dataset: str = _field(
      "synthetic", "A TFDS classification dataset name (images, or text with "
      "a text model: glue/sst2, imdb_reviews...), 'folder' (images), "
      "csv/tsv/jsonl (texts), or an embedded task: synthetic (offline "
      "default), synthetic_source, synthetic_text, synthetic_text_source.",
      "data")
  data_dir: str = _field(
      "", "TFDS data directory; the image folder for --dataset=folder; the "
      "file, or folder of train/validation/test files, for csv/tsv/jsonl.",
      "data")
  text_column: str = _field(
      "text", "--dataset=csv/tsv/jsonl with a text model: the column holding "
      "the text.", "data")
  label_column: str = _field(
      "label", "--dataset=csv/tsv/jsonl: the column holding the label (names "
      "or integers).", "data")
  multi_label: bool = _field(
      False, "Each example may have several labels (or none): "
      "--label_column holds them separated by '|' (--dataset=csv/tsv/jsonl). "
      "A sigmoid head with binary cross-entropy; per-label thresholds "
      "chosen on validation; micro/macro-F1 and mean average precision.",
      "data")
  validation_fraction: float = _field(
      0.1, "Share of train held out for validation when a dataset has no "
      "validation split.", "data")
  test_fraction: float = _field(
      0.1, "Share of a folder dataset held out for the test split.", "data")
  max_train_samples: int = _field(
      0, "Use only this many training examples (0 = all): quick runs.", "data")
  skip_bad_images: bool = _field(
      False, "--dataset=folder: leave out images that cannot be decoded "
      "(counted in run.json) instead of stopping.", "data")
  augment: str = _field(
      "auto", "Augmentation of training images, with Keras's layers: none; "
      "shift (random shift); light (random horizontal flip and shift); "
      "randaugment (light, then RandAugment); mixup (light, then MixUp); "
      "auto: light, or shift when the phase-1 head tells mirror images "
      "apart (digits, text, arrows).", "data",
      choices=("auto", "none", "shift", "light", "randaugment", "mixup"))

  # Recipe.
  batch_size: int = _field(32, "Global batch size (all replicas together).",
                           "recipe")
  min_steps: int = _field(
      300, "Each phase trains at least this many optimizer steps: on a "
      "small dataset its epochs grow to reach them (the log says so). 0 = "
      "exactly --head_epochs and --finetune_epochs.", "recipe")
  head_epochs: int = _field(
      5, "Phase 1 trains the head with the base frozen (0 skips it). With "
      "the feature cache the head is fitted as a linear probe on cached "
      "features and this only needs to be nonzero; without it, epochs of "
      "training at --head_lr.", "recipe")
  head_lr: float = _field(
      1e-3, "Phase 1 peak learning rate when the head trains in the loop "
      "(no feature cache); also the --compare_scratch baseline's.", "recipe")
  finetune_epochs: int = _field(
      5, "Phase 2: epochs after unfreezing the top of the base (0 skips).",
      "recipe")
  finetune_lr: float = _field(
      0.0, "Phase 2 peak learning rate. 0 = chosen by short trials of 1e-5, "
      "1e-4 and 1e-3 on the validation split.", "recipe")
  warmup: float = _field(
      0.1, "Share of each phase's steps spent warming the learning rate up "
      "before cosine decay.", "recipe")
  early_stopping: float = _field(
      0.3, "A phase stops once this share of its steps has passed without a "
      "new low of its own validation loss (0 = never). The best weights are "
      "kept either way; the --compare_scratch baseline runs every step.",
      "recipe")
  unfreeze: str = _field(
      "all", "Phase 2 unfreezes the top of the base: N blocks (whole "
      "residual blocks, modules or stages; transformer layers for text), a "
      "fraction of the blocks such as 0.25, or 'all'.", "recipe")
  batchnorm: str = _field(
      "auto", "BatchNorm in the unfrozen part during phase 2. frozen: "
      "inference mode with the backbone's statistics. train: batch "
      "statistics, moving statistics updated. auto: train for "
      "--weights=none (there are no statistics to keep), else frozen unless "
      "a trial with it training reaches a lower validation loss.", "recipe",
      choices=("auto", "frozen", "train"))
  keep_phase: str = _field(
      "simplest", "Which weights the run keeps when phase 2's best has a "
      "lower validation loss than the phase-1 head. simplest: phase 2's "
      "only if lower by more than one standard error (on a small validation "
      "split phase 2's best looks better than it is), else the head. "
      "lowest_loss: phase 2's (e.g. when the noise check finds the head "
      "fragile).", "recipe", choices=("simplest", "lowest_loss"))
  optimizer: str = _field("adamw", "Optimizer for both phases.", "recipe",
                          choices=("adam", "adamw", "sgd"))
  weight_decay: float = _field(1e-4, "Weight decay (adamw and sgd).",
                               "recipe")
  label_smoothing: float = _field(
      None, "Label smoothing of the loss. Default: the model's (0.1 for "
      "average_word_embedding, 0 for every other model); none with "
      "--class_weight=logit_adjust.", "recipe")
  class_weight: str = _field(
      "auto", "Weigh each class's loss by the inverse of its share of the "
      "training examples: 'balanced' always, 'none' never, 'auto' when the "
      "largest class has 3x the examples of the smallest or more. Weighted, "
      "the recipe's validation choices use the weighted loss too. "
      "'logit_adjust': no weights; after training, each class's logit is "
      "shifted by minus the log of its share of the training examples (for "
      "the lowest balanced error).",
      "recipe", choices=("auto", "balanced", "logit_adjust", "none"))
  prune_sparsity: float = _field(
      0.0, "Prune the network's dense and convolution kernels to this share "
      "of zeros (e.g. 0.5), as --prune_method says; 0 = no pruning. The "
      "zeros are exact in every export and shrink the gzipped files.",
      "recipe")
  prune_method: str = _field(
      "oneshot", "How --prune_sparsity prunes. oneshot: once, after phase 1, "
      "each layer's remaining weights rebuilt to keep its outputs on "
      "training examples (optimal brain surgeon), then phase 2 trains "
      "with the zeros kept. gradual: magnitude pruning on a schedule during "
      "phase 2 (also what --weights=none and --head_epochs=0 get).",
      "recipe", choices=("oneshot", "gradual"))
  prune_block: int = _field(
      1, "--prune_sparsity removes blocks of this many neighbouring weights "
      "along each kernel's input channels, consecutive in the TFLite files: "
      "larger blocks compress smaller and cost more accuracy (see the "
      "README); 1 = single weights.", "recipe")
  feature_cache: str = _field(
      "auto", "Phase 1 runs the frozen base once per image and trains the "
      "head on the stored features, on one replica. auto: in memory when "
      "they fit, else on disk in --output_dir (removed after phase 1).",
      "recipe", choices=("auto", "memory", "disk", "off"))
  cache_views: int = _field(
      1, "With the feature cache: views per training image (1 = unaugmented;"
      " more add views drawn from --augment).", "recipe")
  pretrain_epochs: int = _field(
      10, "Epochs of source-task pretraining for --weights=synthetic.",
      "recipe")
  transfer_check: bool = _field(
      True, "After phase 1, compare a linear probe on the pretrained "
      "features with one on the same network at random initialization "
      "(cross-validated on up to 3,072 training and validation examples). "
      "When the random features are clearly better, the pretrained weights "
      "do not fit this data, and the run trains from random initialization "
      "instead (as --weights=none), saying so. --notransfer_check keeps the "
      "pretrained weights whatever the check would say.", "recipe")
  compare_scratch: bool = _field(
      False, "Also train the same architecture from random initialization "
      "with the same data and epochs; report it under metrics.json scratch.",
      "recipe")
  tfidf_baseline: bool = _field(
      True, "Text models: also fit TF-IDF (word 1-2-grams) and logistic "
      "regression on the training texts (up to 10,000; C picked on "
      "validation) and report its test accuracy beside the model's "
      "(metrics.json tfidf, the report, the model card): the word-count "
      "baseline a text network should beat. Seconds; never exported.",
      "recipe")
  seed: int = _field(42, "Seed for data order, augmentation and init.",
                     "recipe")

  # Export.
  export: str = _field(
      ",".join(DEFAULT_EXPORTS), "Comma list of exports besides model.keras: "
      + ", ".join(EXPORT_FORMATS) + "; empty for none. The default leaves "
      "out tflite_int16x8 (int8 weights, int16 activations): it holds "
      "accuracy where int8 does not, but runs slower than float32 on CPUs.",
      "export")
  calibration_samples: int = _field(
      300, "Training images (class-stratified) that calibrate tflite_int8 "
      "and tflite_int16x8.", "export")
  parity_samples: int = _field(
      1000, "Test images each TFLite variant is checked on against the Keras "
      "model (0 = the whole test split).", "export")
  max_accuracy_drop: float = _field(
      MAX_ACCURACY_DROP, "Fail the run (exit 3) when a TFLite variant's accuracy on the "
      "validation split (which the int8 fallback also judges) is more than "
      "this below the Keras model's, and by more than one example; a drop "
      "on the test split alone is logged. Negative = no check (the int8 "
      "fallback still aims at the default).",
      "export")
  min_int8_agreement: float = _field(
      0.0, "The int8 fallback also keeps layers in float until tflite_int8 "
      "picks the Keras model's class on at least this share of the "
      "validation split (e.g. 0.97; a single disagreement never counts): "
      "accuracies can match while different examples flip. 0 = judge "
      "accuracy alone.", "export")
  int8_fallback: str = _field(
      "auto", "When tflite_int8 falls more than --max_accuracy_drop below "
      "the Keras model on the validation split, or agrees with it on less "
      "than --min_int8_agreement of it, auto keeps its worst layers "
      "(ranked by TensorFlow's quantization debugger) in float until it is "
      "within bounds; off writes it as it is.", "export",
      choices=("auto", "off"))
  author: str = _field(
      "", "Author written into the .tflite files' standard metadata and the "
      "model card.", "export")
  license: str = _field(
      "", "License written into the .tflite files' standard metadata and "
      "the model card, e.g. Apache-2.0.", "export")

  # Run.
  mode: str = _field(
      "train", "train: the recipe and exports. export: add exports to "
      "--run_dir without retraining. predict: top-k labels of --inputs with "
      "--artifact. evaluate: --artifact on --dataset's --split.", "run",
      choices=MODES)
  run_dir: str = _field("", "--mode=export: the run directory to export.",
                        "run")
  artifact: str = _field(
      "", "--mode=predict/evaluate: a run directory, .keras file, SavedModel "
      "directory or .tflite file.", "run")
  inputs: str = _field(
      "", "--mode=predict: comma list of image files, folders of images, "
      ".txt files (one text a line), .csv files (--image_column or "
      "--text_column), or texts.", "run")
  image_column: str = _field(
      "path", "The column of a .csv naming image files (relative to the "
      ".csv): --dataset=csv/tsv/jsonl with an image model, and --inputs of "
      "--mode=predict.", "data")
  predictions: str = _field(
      "", "--mode=predict: the CSV the predictions go to (input, then each "
      "top-k label and score); default predictions.csv when --inputs holds "
      "a folder, .txt or .csv, else none.", "run")
  split: str = _field("test", "--mode=evaluate: the split to evaluate.",
                      "run", choices=("train", "validation", "test"))
  top_k: int = _field(5, "--mode=predict: labels per input.", "run")
  output_dir: str = _field(
      "", "Where artifacts go; default runs/<model>-<dataset>.", "run")
  overwrite: bool = _field(
      False, "Replace a run already in --output_dir.", "run")
  strategy: str = _field(
      "auto", "tf.distribute strategy.", "run",
      choices=("auto", "default", "one_device", "mirrored",
               "multi_worker_mirrored", "tpu"))
  tpu: str = _field("", "TPU address for --strategy=tpu (or auto).", "run")
  mixed_precision: str = _field(
      "auto", "auto: bfloat16 on TPUs and GPUs that have it (compute "
      "capability 8.0+), float16 with loss scaling on older GPUs, off on CPU.",
      "run", choices=("auto", "off", "mixed_float16", "mixed_bfloat16"))
  jit_compile: str = _field(
      "auto", "XLA-compile the training step; auto = on with a GPU.", "run",
      choices=("auto", "on", "off"))
  no_lr_scaling: bool = _field(
      False, "Use --head_lr/--finetune_lr as given. By default they are for "
      "a global batch of 32 and scale with --batch_size: by the square root "
      "of the ratio for adam/adamw, linearly for sgd.", "recipe")
  checkpoint_every: int = _field(
      200, "Checkpoint every N training steps (and at every epoch end); 0 = "
      "epoch ends only. A rerun of the same command resumes.", "run")
  profile_steps: str = _field(
      "", "A,B: trace global steps A to B with the TF profiler (TensorBoard's "
      "Profile tab).", "run")
  log_every_steps: int = _field(
      10, "Write training scalars to TensorBoard every N steps.", "run")

  def lr_rule(self):
    """How --head_lr and --finetune_lr scale with the global batch size.

    SGD: linearly (Goyal et al. 2017). Adam and AdamW: by the square root
    of the ratio, the rule for adaptive optimizers (Malladi et al. 2022,
    "On the SDEs and scaling rules for adaptive gradient algorithms"); the
    linear rule overshoots them at large batches.
    """
    if self.no_lr_scaling:
      return "none"
    return "linear" if self.optimizer == "sgd" else "square root"

  def lr_scale(self):
    """The factor `lr_rule` applies to --head_lr and --finetune_lr."""
    ratio = self.batch_size / REFERENCE_BATCH
    return {"none": 1.0, "linear": ratio,
            "square root": ratio ** 0.5}[self.lr_rule()]

  def resolved(self):
    """Returns a copy with derived defaults filled in."""
    model = os.path.basename(os.path.normpath(self.model))  # a preset folder
    output_dir = self.output_dir or os.path.join(
        "runs", f"{model}-{self.dataset}".replace("/", "_"))
    return dataclasses.replace(
        self, output_dir=os.path.abspath(os.path.expanduser(output_dir)),
        data_dir=os.path.expanduser(self.data_dir),
        run_dir=self.run_dir and os.path.abspath(
            os.path.expanduser(self.run_dir)),
        artifact=os.path.expanduser(self.artifact))

  def validate(self):
    """Raises UserError naming the first bad value; does no work."""
    for name in ("batch_size", "log_every_steps", "top_k", "cache_views"):
      if getattr(self, name) <= 0:
        raise UserError(f"--{name} must be positive, got {getattr(self, name)}")
    for name in ("head_epochs", "finetune_epochs", "pretrain_epochs",
                 "image_size", "sequence_length", "max_train_samples",
                 "min_steps", "weight_decay", "calibration_samples",
                 "parity_samples", "checkpoint_every", "finetune_lr"):
      if getattr(self, name) < 0:
        raise UserError(
            f"--{name} must be zero or more, got {getattr(self, name)}")
    if self.head_epochs == 0 and self.finetune_epochs == 0:
      raise UserError("--head_epochs and --finetune_epochs are both 0: "
                      "nothing to train; set one of them above 0")
    if self.prune_sparsity and self.finetune_epochs == 0:
      raise UserError("--prune_sparsity prunes during phase 2, which "
                      "--finetune_epochs=0 leaves out; set --finetune_epochs "
                      "above 0 or drop --prune_sparsity")
    if self.prune_block < 1:
      raise UserError(f"--prune_block must be 1 or more (1: single weights), "
                      f"got {self.prune_block}")
    if self.weights == "none" and self.finetune_epochs == 0:
      raise UserError("--weights=none with --finetune_epochs=0: random "
                      "weights have no features for a head alone; train "
                      "the network with --finetune_epochs above 0")
    if self.head_lr <= 0:
      raise UserError(f"--head_lr must be positive, got {self.head_lr}")
    for name in ("dropout", "label_smoothing", "warmup", "early_stopping",
                 "prune_sparsity"):
      if getattr(self, name) is None:  # the model's default
        continue
      if not 0 <= getattr(self, name) < 1:
        raise UserError(f"--{name} must be in [0, 1), got {getattr(self, name)}")
    if self.class_weight == "logit_adjust" and self.label_smoothing:
      raise UserError(
          f"--label_smoothing={self.label_smoothing} with "
          "--class_weight=logit_adjust: smoothing squeezes the logits, so "
          "the shift by the log of each class's share overshoots and "
          "favours the rare classes far too much; leave --label_smoothing "
          "out (logit_adjust trains without it) or use --class_weight=auto")
    if not 0 <= self.min_int8_agreement <= 1:
      raise UserError("--min_int8_agreement is a share of the validation "
                      f"examples, in [0, 1], got {self.min_int8_agreement}")
    for name in ("validation_fraction", "test_fraction"):
      if not 0 < getattr(self, name) < 0.5:
        raise UserError(
            f"--{name} must be in (0, 0.5), got {getattr(self, name)}")
    if 0 < self.image_size < 32:
      raise UserError(f"--image_size must be 32 or more, got {self.image_size}")
    for f in dataclasses.fields(self):
      choices = f.metadata.get("choices")
      if choices and getattr(self, f.name) not in choices:
        raise UserError(f"--{f.name}={getattr(self, f.name)} is not one of "
                        f"{', '.join(choices)}")
    parse_unfreeze(self.unfreeze)
    parse_exports(self.export)
    parse_profile_steps(self.profile_steps)
    calibrated = [f for f in parse_exports(self.export)
                  if f in CALIBRATED_EXPORTS]
    if calibrated and self.calibration_samples == 0:
      raise UserError(f"--calibration_samples=0 leaves {calibrated[0]} "
                      f"uncalibrated; use a few hundred, or drop "
                      f"{' and '.join(calibrated)} from --export")
    for mode, name in (("export", "run_dir"), ("predict", "artifact"),
                       ("predict", "inputs"), ("evaluate", "artifact")):
      if self.mode == mode and not getattr(self, name):
        raise UserError(f"--mode={mode} needs --{name}")
    if self.strategy == "tpu" and not self.tpu:
      raise UserError("--strategy=tpu needs --tpu=ADDRESS (or 'local' on a "
                      "TPU VM)")
    if self.dataset == "folder" and not self.data_dir:
      raise UserError("--dataset=folder needs --data_dir=PATH, a folder with "
                      "one subfolder of images per class")
    if self.dataset in ("csv", "tsv", "jsonl") and not self.data_dir:
      raise UserError(f"--dataset={self.dataset} needs --data_dir=PATH, a "
                      f".{self.dataset} file or a folder with "
                      f"train.{self.dataset}")
    if self.multi_label:
      self._validate_multi_label()
    if 0 < self.sequence_length < 8:
      raise UserError(f"--sequence_length must be 8 or more, got "
                      f"{self.sequence_length}")

  def _validate_multi_label(self):
    if self.mode == "train" and self.dataset not in ("csv", "tsv", "jsonl"):
      raise UserError(f"--multi_label reads several labels per example from "
                      f"a table; --dataset={self.dataset} has one; use "
                      "--dataset=csv/tsv/jsonl with --label_column cells "
                      "such as 'cat|dog'")
    if self.augment == "mixup":
      raise UserError("--augment=mixup mixes one-hot classes and does not "
                      "apply to --multi_label; use --augment=light or auto")
    if self.class_weight in ("balanced", "logit_adjust"):
      raise UserError(f"--class_weight={self.class_weight} balances classes "
                      "of single-label data; with --multi_label use "
                      "--class_weight=auto or none (the loss is not "
                      "weighted)")


# The settings a resumed run must share with the run it resumes.
RESUME_SETTINGS = ("model", "weights", "image_size", "sequence_length",
                   "dropout", "dataset", "data_dir", "text_column", "image_column",
                   "label_column", "multi_label", "validation_fraction", "test_fraction",
                   "max_train_samples", "skip_bad_images", "augment",
                   "batch_size", "min_steps", "head_epochs", "head_lr",
                   "finetune_epochs", "finetune_lr", "warmup", "unfreeze",
                   "batchnorm", "keep_phase", "early_stopping", "optimizer",
                   "weight_decay", "label_smoothing", "class_weight",
                   "pretrain_epochs",
                   "seed", "mixed_precision", "no_lr_scaling",
                   "feature_cache", "cache_views", "transfer_check",
                   "prune_sparsity", "prune_block", "prune_method")
# Learning rates are given for this global batch size (the linear rule).
REFERENCE_BATCH = 32


def groups():
  """Flag group name -> the Config fields in it, in definition order."""
  out = {}
  for f in dataclasses.fields(Config):
    out.setdefault(f.metadata["group"], []).append(f)
  return out
