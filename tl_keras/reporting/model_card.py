"""The model card: README.md in the output directory.

What the model is, how it was trained and how well it does, then how to use
every file it comes with (Keras, SavedModel, LiteRT, MediaPipe Tasks on
Python, Android, iOS and the Web).
"""

from tl_keras.reporting import sentences


def model_card(record, metrics):
  """README.md for the output directory: what the model is and how to use it."""
  config, test = record["config"], metrics["test"]
  kind = _KINDS[record["model"].get("kind", "image")]
  labels = record["data"]["classes"]
  # Runs written before balanced accuracy was measured have none.
  balanced = ("" if "balanced_accuracy" not in test else
              f", balanced accuracy {sentences.percent(test['balanced_accuracy'])}")
  multi = bool(test.get("multi_label"))
  lines = [
      f"# {config['model']} fine-tuned on {config['dataset']}", "",
      f"{kind['a']} classifier for {len(labels)} "
      f"{'labels, any number per example' if multi else 'classes'}: "
      f"{', '.join(labels[:20])}{', ...' if len(labels) > 20 else ''}.",
      _training_sentence(record, metrics), "",
      *_provenance(config),
      *_weights_license(record, config),
      "## Results on the test split", "",
      (_multi_label_results(test, kind) if multi else
       f"- accuracy {sentences.percent(test['accuracy'])}, macro-F1 "
       f"{test['macro_f1']:.4f}{balanced} on {test['examples']} "
       f"{kind['examples']}"),
  ]
  if metrics.get("scratch", {}).get("same_as_run"):
    lines.append("- trained from random initialization: this model is its "
                 "own from-scratch baseline")
  elif "scratch" in metrics:
    lines.append(f"- the same network trained from scratch: "
                 f"{sentences.percent(metrics['scratch']['test']['accuracy'])}")
    if "transfer" in metrics:
      lines.append(f"- from the pretrained weights: "
                   f"{sentences.percent(metrics['transfer']['test']['accuracy'])}")
    if metrics.get("kept"):
      lines.append(f"- {metrics['kept']['reason']}")
  if "tfidf" in metrics:
    lines.append(f"- {sentences.tfidf_sentence(metrics)}")
  if metrics.get("negative_transfer"):
    lines += ["", f"**Warning: {metrics['negative_transfer']}.**"]
  for variant, row in metrics.get("tflite", {}).items():
    lines.append(f"- `model_{variant}.tflite`: accuracy "
                 f"{sentences.percent(row['accuracy'])}, agrees with the Keras model on "
                 f"{sentences.percent(row['agreement'])} of test examples"
                 + _size_and_latency(row))
    if row.get("fallback"):
      lines[-1] += f" ({sentences.fallback_sentence(row['fallback'])})"
    if row.get("unpruned"):
      before = row["unpruned"]
      lines[-1] += (f"; before pruning {sentences.percent(before['accuracy'])}, "
                    f"{before['compressed_bytes'] / 1024:.0f} KB gzipped")
  return "\n".join(lines + kind["usage"](record, config, metrics))


def _multi_label_results(test, kind):
  """The card's result lines of a --multi_label model."""
  thresholds = ", ".join(f"{name} {m['threshold']:.3f}"
                         for name, m in test["per_class"].items())
  return "\n".join([
      f"- micro-F1 {test['micro_f1']:.4f}, macro-F1 {test['macro_f1']:.4f}, "
      f"mean average precision {test['mean_average_precision']:.4f}, exact "
      f"match {sentences.percent(test['accuracy'])} on {test['examples']} "
      f"{kind['examples']}",
      "- each label has its own sigmoid probability; a label is predicted "
      "when it reaches its threshold, chosen on the validation split for "
      f"the best F1: {thresholds}. In MediaPipe, ask for every category "
      "(`max_results=-1`) and keep those above the label's threshold (or "
      "one `score_threshold` for all)",
      "- the exports' accuracy and agreement below count an example right "
      "when every label is decided alike at 0.5"])


def _image_usage(record, config, metrics):
  """The model card's sections after the results, for an image model."""
  size = record["model"]["image_size"]
  return [
      "", "## Input", "",
      "Raw RGB pixels, 0–255. The backbone's normalization "
      f"(`{record['model']['preprocessing']}`) is inside every artifact. "
      f"`model.keras` and the SavedModel take any size and resize to "
      f"{size}×{size} the way training did: bilinear with antialiasing "
      "(`tf.image.resize(..., antialias=True)`), rounded to whole pixel "
      f"values. The `.tflite` files take {size}×{size}: resize the same way "
      "before calling them. "
      "Labels are in `labels.txt` (one per line, in output order) and inside "
      "the SavedModel and each .tflite file.", "",
      "## Use it", "",
      "```python",
      "import keras, tl_keras.models.applications  # registers the preprocessing layer",
      "model = keras.saving.load_model('model.keras')",
      "probabilities = model.predict(images_uint8.astype('float32'))",
      "",
      "import tensorflow as tf",
      "serve = tf.saved_model.load('saved_model').signatures['serving_default']",
      "probabilities = serve(images=tf.constant(images_uint8))['probabilities']",
      "",
      "from ai_edge_litert.interpreter import Interpreter",
      "interpreter = Interpreter(model_path='model_int8.tflite')",
      "```", "",
      *_mediapipe_usage(_MEDIAPIPE["image"], _variants(metrics)),
      "With the plain LiteRT interpreter, the input is uint8 "
      f"`[1, {size}, {size}, 3]`; `model_int8.tflite` also returns uint8 "
      "(scale and zero point are in the file). "
      "From the command line: `python main.py --mode=predict "
      "--artifact=THIS_DIR --inputs=photo.jpg`.", "",
      "## Limitations", "",
      f"- Trained on {record['data']['sizes']['train']} images; it knows "
      "only these classes and will pick one of them for any image.",
      "- Accuracy was measured on this dataset's test split; images from "
      "other cameras, lighting or sources may score lower.",
      "- Quantized variants can disagree with the Keras model on a few "
      "borderline images (the agreement figures above)."
      + _noise(metrics), "",
      "## Reproduce", "", "```", sentences.command_line(config), "```", ""]


def _size_and_latency(row):
  """"; 254 KB (213 KB gzipped), 0.051 ms a prediction on one thread"."""
  if "compressed_bytes" not in row:
    return ""
  return (f"; {row['size_bytes'] / 1024:.0f} KB "
          f"({row['compressed_bytes'] / 1024:.0f} KB gzipped), "
          f"{row['latency_ms_1_thread']:.3f} ms a prediction on one thread "
          "of the machine that trained it")


def _provenance(config):
  """The model card's author and license lines (--author, --license)."""
  parts = [f"{name}: {config[key]}." for name, key in (
      ("Author", "author"), ("License", "license")) if config.get(key)]
  return [" ".join(parts), ""] if parts else []


def _weights_license(record, config):
  """The license of pretrained weights a package shipped, when used."""
  note = record["model"].get("weights_license")
  if not note or config.get("weights") not in ("imagenet", "pretrained"):
    return []
  return [f"Pretrained weights: {note}.", ""]


def _training_sentence(record, metrics):
  """How the exported model was trained: by the transfer recipe, or (when
  --compare_scratch exported the baseline) from random initialization."""
  config = record["config"]
  backbone = f"Backbone `{config['model']}` ({record['model']['family']})"
  if metrics.get("kept", {}).get("model") == "scratch":
    return (f"{backbone} trained by tl_keras from random initialization: "
            "the --compare_scratch baseline, every layer trained, exported "
            "for its lower validation loss (the run from "
            f"`--weights={config['weights']}` is compared below).")
  return (f"{backbone} starting from `--weights={config['weights']}`, "
          "trained by tl_keras with the two-phase transfer recipe: "
          f"{_recipe_sentence(record)}")


def _recipe_sentence(record):
  """One sentence on what the recipe chose, for the model card."""
  recipe = record.get("recipe", {})
  parts = []
  if recipe.get("start", {}).get("weights") == "random":
    parts.append("the pretrained weights set aside (a linear probe did "
                 "better on the same network's random-initialization "
                 "features), so every layer trained from random "
                 "initialization")
  if recipe.get("head"):
    parts.append("the head fitted as a linear probe on the frozen "
                 f"backbone's features (L2 strength {recipe['head']['strength']:g})")
  finetune = recipe.get("finetune")
  if finetune:
    parts.append(f"then fine-tuned at learning rate "
                 f"{finetune['learning_rate']:g} with BatchNorm "
                 f"{finetune['batchnorm']}"
                 + (" (picked by trials on the validation split)"
                    if finetune["trials"] else ""))
  weighting = recipe.get("class_weight", {})
  if weighting.get("weighted"):
    parts.append("each class's loss weighted by the inverse of its share of "
                 "the training examples (the largest class has "
                 f"{weighting['imbalance']:.1f}x the smallest), in training "
                 "and in every choice made on the validation split")
  elif "logit_offsets" in weighting:
    parts.append("each class's logit shifted after training by minus the "
                 "log of its share of the training examples (logit "
                 "adjustment, for the lowest balanced error; the largest "
                 f"class has {weighting['imbalance']:.1f}x the smallest)")
  augment = recipe.get("augment")
  if augment and augment["policy"] == "shift":
    parts.append("no flips in augmentation (mirror images are another "
                 "class)")
  if recipe.get("kept") == "head":
    parts.append("fine-tuning did not clearly lower the validation loss, so "
                 "the probe's head was kept")
  return "; ".join(parts) + "." if parts else "head, then fine-tuning."


def _variants(metrics):
  return list(metrics.get("tflite", {})) or ["float32"]


# MediaPipe Tasks for each kind of model: the task, its package, what the
# files' metadata carries, and the input in each language's example.
_MEDIAPIPE = {
    "image": {
        "task": "ImageClassifier", "package": "vision",
        "carries": "and normalization", "takes": "",
        "imports": ["import mediapipe as mp"],
        "python": "mp.Image.create_from_file('photo.jpg')",
        "kotlin": "mpImage", "swift": "image: mpImage", "web": "image"},
    "text": {
        "task": "TextClassifier", "package": "text",
        "carries": "and the BERT tokenizer with its vocabulary",
        "takes": " and takes raw strings", "imports": [],
        "python": '"a text to classify"', "kotlin": '"a text to classify"',
        "swift": 'text: "a text to classify"', "web": '"a text to classify"'},
}
_MEDIAPIPE["words"] = {
    **_MEDIAPIPE["text"],
    "carries": "and the regex tokenizer with its vocabulary"}


def _mediapipe_usage(mediapipe, variants):
  """Model-card lines: the MediaPipe Tasks code that loads the .tflite files.

  Every file carries the standard TFLite metadata (labels, and the
  normalization or the tokenizer), so the task needs nothing else.
  `mediapipe`: an entry of `_MEDIAPIPE`.
  """
  first = f"model_{variants[0]}.tflite"
  files = ", ".join(f"`model_{v}.tflite`" for v in variants)
  task, package = mediapipe["task"], mediapipe["package"]
  return [
      f"Each of {files} carries the standard TFLite metadata (labels "
      f"{mediapipe['carries']}), so MediaPipe Tasks `{task}` loads it as it "
      f"is{mediapipe['takes']}:", "",
      "```python",
      *mediapipe["imports"],
      f"from mediapipe.tasks.python import {package}",
      f"classifier = {package}.{task}.create_from_model_path('{first}')",
      f"result = classifier.classify({mediapipe['python']})",
      "print(result.classifications[0].categories[0].category_name)",
      "```", "",
      "```kotlin",
      f"// Android: com.google.mediapipe:tasks-{package}",
      f"val classifier = {task}.createFromFile(context, \"{first}\")",
      f"val result = classifier.classify({mediapipe['kotlin']})",
      "```", "",
      "```swift",
      f"// iOS: MediaPipeTasks{package.capitalize()}",
      f"let classifier = try {task}(modelPath: "
      f"Bundle.main.path(forResource: \"model_{variants[0]}\", "
      "ofType: \"tflite\")!)",
      f"let result = try classifier.classify({mediapipe['swift']})",
      "```", "",
      "```javascript",
      f"// Web: @mediapipe/tasks-{package}",
      f"const classifier = await {task}.createFromModelPath(files, "
      f"\"{first}\");",
      f"const result = classifier.classify({mediapipe['web']});",
      "```", ""]


def _text_usage(record, config, metrics):
  """The model card's sections after the results, for a text model."""
  length = record["model"]["sequence_length"]
  return [
      "", "## Input", "",
      f"Raw strings. The tokenizer is attached to `model.keras`, "
      f"`preset/` and `saved_model/`; texts are cut to {length} tokens. "
      "The `.tflite` files take token ids (`token_ids`, `padding_mask` "
      f"and, for BERT, `segment_ids`, int32 `[1, {length}]`); their "
      "metadata holds the vocabulary (also in `vocab.txt`), and for BERT "
      "declares its tokenizer, so MediaPipe Tasks tokenizes raw strings "
      "for them.", "",
      "## Use it", "",
      "```python",
      "import keras_hub",
      "model = keras_hub.models.TextClassifier.from_preset('preset')",
      "probabilities = model.predict(['a text to classify'])",
      "",
      "import tensorflow as tf, tensorflow_text  # registers the tokenizer ops",
      "serve = tf.saved_model.load('saved_model').signatures['serving_default']",
      "probabilities = serve(texts=tf.constant(['a text']))['probabilities']",
      "```", "",
      *_mediapipe_usage(_MEDIAPIPE["text"], _variants(metrics)),
      "From the command line: `python main.py --mode=predict "
      "--artifact=THIS_DIR --inputs=texts.txt` (one text per line; "
      "`--artifact=THIS_DIR/model_dynamic.tflite` tokenizes for the TFLite "
      "file).", "",
      "## Limitations", "",
      f"- Trained on {record['data']['sizes']['train']} texts; it knows only "
      "these classes and will pick one of them for any text.",
      f"- Text beyond {length} tokens is cut off{_cut_share(record)}.",
      "- Quantized variants can disagree with the Keras model on a few "
      "borderline texts (the agreement figures above).", "",
      "## Reproduce", "", "```", sentences.command_line(config), "```", ""]


def _noise(metrics):
  """The noise check's finding, when the model is fragile."""
  noise = metrics.get("noise_check")
  if not noise or not noise["fragile"]:
    return ""
  return f"\n- Fragile to pixel noise: {sentences.noise_sentence(noise)}."


def _cut_share(record):
  """How many training texts the cut reached, when it reached any."""
  lengths = record["data"].get("text_lengths") or {}
  if not lengths.get("cut"):
    return ""
  return (f" ({100 * lengths['cut_share']:.1f}% of the training texts were; "
          f"95% fit whole in {lengths['p95']} tokens)")


def _words_usage(record, config, metrics):
  """The model card's sections after the results, for the average
  word-embedding model."""
  length = record["model"]["sequence_length"]
  return [
      "", "## Input", "",
      "Raw strings, split into words at every run of characters other "
      "than ASCII letters, digits, `_` and `'` (case kept); words outside "
      f"the {record['model']['vocabulary']:,}-word vocabulary of the "
      f"training texts count as unknown, and texts are cut to {length - 1} "
      "words. The tokenizer is attached to `model.keras` and "
      "`saved_model/`. The `.tflite` files take word ids (`token_ids`, "
      f"int32 `[1, {length}]`); their metadata declares MediaPipe's regex "
      "tokenizer with the vocabulary (also in `vocab.txt`), so MediaPipe "
      "Tasks tokenizes raw strings for them.", "",
      "## Use it", "",
      "```python",
      "import tensorflow as tf",
      "serve = tf.saved_model.load('saved_model').signatures['serving_default']",
      "probabilities = serve(texts=tf.constant(['a text']))['probabilities']",
      "```", "",
      *_mediapipe_usage(_MEDIAPIPE["words"], _variants(metrics)),
      "From the command line: `python main.py --mode=predict "
      "--artifact=THIS_DIR --inputs=texts.txt` (one text per line).", "",
      "## Limitations", "",
      f"- Trained from scratch on {record['data']['sizes']['train']} texts: "
      "it knows only the words and classes it saw, and will pick one of "
      "these classes for any text.",
      "- Word order is ignored (the embeddings are averaged).",
      "- Quantized variants can disagree with the Keras model on a few "
      "borderline texts (the agreement figures above).", "",
      "## Reproduce", "", "```", sentences.command_line(config), "```", ""]


# What the card says for each kind of model (the run's serving kind).
_KINDS = {
    "image": {"a": "An image", "examples": "images", "usage": _image_usage},
    "text": {"a": "A text", "examples": "texts", "usage": _text_usage},
    "words": {"a": "A text", "examples": "texts", "usage": _words_usage},
}
