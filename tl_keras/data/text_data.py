"""Text classification data: embedded tasks, CSV/TSV/JSONL files and TFDS.

Every loader returns `datasets.Splits` of unbatched (string text, int32 label)
datasets; `tokenize` turns them into (token dict, label) datasets with the
model's preprocessor, once, before training.
"""

import csv
import dataclasses
import json
import logging
import os

import numpy as np
import tensorflow as tf

from tl_keras.data import datasets
from tl_keras.data import real_data
from tl_keras.errors import UserError

FILE_FORMATS = ("csv", "tsv", "jsonl")
SPLIT_FILES = {"train": ("train",), "validation": ("validation", "val", "dev"),
               "test": ("test",)}

# ---------------------------------------------------------------------------
# The embedded tasks.
#
# A made-up language: TOPICS topics of WORDS_PER_TOPIC content words each,
# plus filler words that carry no topic. Every word is a pseudo-word built
# from syllables, so no real-language knowledge helps.
#
# * synthetic_text_source: which of the 40 topics a sentence is about (many
#   labels). A BERT trained on it learns which words belong together.
# * synthetic_text: 5 coarse classes, each the union of 8 topics, with few
#   labels: a sentence is about one topic of its class. Most content words
#   appear in only a couple of training sentences, so a model has to already
#   know which words go together to do well: transfer does, a model trained
#   from scratch on the same sentences much less.

TOPICS = 40
WORDS_PER_TOPIC = 10
FILLERS = 60
TARGET_CLASSES = ("astronomy", "botany", "cuisine", "dance", "economy")
TEXT_TASKS = {
    # name: (classes, {split: sentences})
    "synthetic_text_source": (TOPICS, {"train": 8000, "validation": 400,
                                       "test": 800}),
    "synthetic_text": (len(TARGET_CLASSES), {"train": 300, "validation": 200,
                                             "test": 600}),
}


def words():
  """(content words [TOPICS, WORDS_PER_TOPIC], filler words), fixed."""
  rng = np.random.default_rng(20240521)
  syllables = [c + v for c in "bdfgklmnprstvz" for v in "aeiou"]
  seen, out = set(), []
  while len(out) < TOPICS * WORDS_PER_TOPIC + FILLERS:
    word = "".join(rng.choice(syllables, size=rng.integers(2, 4)))
    if word not in seen:
      seen.add(word)
      out.append(word)
  content = np.array(out[:TOPICS * WORDS_PER_TOPIC]).reshape(
      TOPICS, WORDS_PER_TOPIC)
  return content, out[TOPICS * WORDS_PER_TOPIC:]


def _sentence(rng, content, fillers, topics, n_content, distractor_topics):
  picked = [content[rng.choice(topics), rng.integers(WORDS_PER_TOPIC)]
            for _ in range(n_content)]
  picked.append(content[rng.choice(distractor_topics),
                        rng.integers(WORDS_PER_TOPIC)])
  picked += list(rng.choice(fillers, size=rng.integers(4, 9)))
  rng.shuffle(picked)
  return " ".join(picked)


def synthetic_texts(task, split, seed=0):
  """(texts, labels, class names) of an embedded task's split."""
  num_classes, sizes = TEXT_TASKS[task]
  content, fillers = words()
  split_id = ("train", "validation", "test").index(split)
  rng = np.random.default_rng([seed, split_id, len(task)])
  texts, labels = [], []
  for i in range(sizes[split]):
    label = i % num_classes
    if task == "synthetic_text_source":
      topics = [label]
      others = [t for t in range(TOPICS) if t != label]
      n_content = rng.integers(3, 6)
    else:
      topics = [rng.choice(range(label, TOPICS, num_classes))]
      others = [t for t in range(TOPICS) if t % num_classes != label]
      n_content = rng.integers(2, 4)
    texts.append(_sentence(rng, content, fillers, topics, n_content, others))
    labels.append(label)
  order = rng.permutation(len(texts))
  names = (list(TARGET_CLASSES) if task == "synthetic_text"
           else [f"topic_{t:02d}" for t in range(TOPICS)])
  return [texts[i] for i in order], [labels[i] for i in order], names


def load_synthetic_text(task, seed=0):
  out, sizes = {}, {}
  for split in ("train", "validation", "test"):
    texts, labels, names = synthetic_texts(task, split, seed)
    out[split] = _dataset(texts, labels)
    sizes[split] = len(texts)
  return datasets.Splits(**out, sizes=sizes, class_names=names)


def _dataset(texts, labels):
  """(string, int32 label) examples; a label is a class id or (multi-label)
  a multi-hot row."""
  return tf.data.Dataset.from_tensor_slices(
      (tf.constant(list(texts), tf.string),
       tf.constant(np.asarray(labels, np.int32))))


# ---------------------------------------------------------------------------
# Files.


def read_table(path, fmt, text_column, label_column,
               text_flag="text_column", multi_label=False):
  """(texts, raw string labels) of one CSV/TSV/JSONL file. `text_flag`:
  the flag that names the text column, for the errors. `multi_label`: a
  label cell may be empty (no label applies); `label_sets` splits them.

  Raises:
    UserError: a named column is missing, a text is empty, or a row cannot
      be parsed.
  """
  rows = []
  try:
    with open(path, encoding="utf-8", newline="") as f:
      if fmt == "jsonl":
        for number, line in enumerate(f, 1):
          if line.strip():
            try:
              rows.append((number, json.loads(line)))
            except json.JSONDecodeError as e:
              raise UserError(f"{path}:{number} is not a JSON object ({e.msg})"
                              "; --dataset=jsonl needs one object per line")
        columns = set().union(*(r.keys() for _, r in rows if
                                isinstance(r, dict))) if rows else set()
      else:
        reader = csv.DictReader(f, delimiter="\t" if fmt == "tsv" else ",")
        columns = set(reader.fieldnames or ())
        rows = [(reader.line_num, row) for row in reader]
  except UnicodeDecodeError as e:
    raise UserError(f"{path} is not UTF-8 text ({e.reason}); save it as "
                    "UTF-8") from e
  for flag, name in ((text_flag, text_column),
                     ("label_column", label_column)):
    if name not in columns:
      raise UserError(
          f"{path} has no column {name!r} (it has: "
          f"{', '.join(sorted(map(str, columns))) or 'none'}); pass "
          f"--{flag}=NAME")
  texts, labels = [], []
  for number, row in rows:
    if not isinstance(row, dict):
      raise UserError(f"{path}:{number} is not a JSON object")
    text, label = row.get(text_column), row.get(label_column)
    if text is None or not str(text).strip():
      raise UserError(f"{path}:{number} has an empty {text_column!r}; "
                      "remove the row or fill it in")
    if (label is None or str(label).strip() == "") and not multi_label:
      raise UserError(f"{path}:{number} has an empty {label_column!r}; every "
                      "row needs a label")
    texts.append(str(text))
    labels.append("" if label is None else str(label).strip())
  if not texts:
    raise UserError(f"{path} has no rows; it needs a header and one row per "
                    "example")
  return texts, labels


def split_files(path, fmt):
  """{split: file} for a file or a folder of train/validation/test files."""
  if os.path.isfile(path):
    return {"train": path}
  if not os.path.isdir(path):
    raise UserError(f"--data_dir={path}: no such file or folder; pass a "
                    f".{fmt} file or a folder with train.{fmt} (and "
                    f"optionally validation.{fmt}, test.{fmt})")
  found = {}
  for split, stems in SPLIT_FILES.items():
    for stem in stems:
      candidate = os.path.join(path, f"{stem}.{fmt}")
      if os.path.isfile(candidate):
        found[split] = candidate
        break
  if "train" not in found:
    raise UserError(f"--data_dir={path} has no train.{fmt}; pass the file "
                    f"itself, or a folder with train.{fmt}")
  return found


def check_seen(labels, index, where):
  """Raises UserError when `labels` hold one that `index` (train's) has not."""
  unseen = sorted(set(labels) - set(index))
  if unseen:
    raise UserError(
        f"{where} has labels never seen in train: "
        f"{', '.join(unseen[:5])}{' ...' if len(unseen) > 5 else ''}; "
        "add training examples of them or drop those rows")


# --multi_label: a label cell holds its labels separated by this.
LABEL_SEPARATOR = "|"


def label_sets(labels):
  """Each raw label cell split at `LABEL_SEPARATOR` into its labels (blank
  parts dropped: an empty cell has none)."""
  return [[p.strip() for p in str(l).split(LABEL_SEPARATOR) if p.strip()]
          for l in labels]


def multi_hot(sets, index):
  """int32 [N, C]: 1 where example n has label c (`index`: name -> c)."""
  out = np.zeros((len(sets), len(index)), np.int32)
  for n, names in enumerate(sets):
    out[n, [index[name] for name in names]] = 1
  return out


def encode_labels(tables, multi_label):
  """(class names, {split: int32 labels}) of {split: raw label cells}:
  class ids, or multi-hot rows of `label_sets`. Names come from train;
  another split holding one train lacks raises UserError."""
  parse = label_sets if multi_label else (lambda cells: [[c] for c in cells])
  sets = {split: parse(cells) for split, cells in tables.items()}
  class_names = class_names_of([l for row in sets["train"] for l in row])
  if multi_label and len(class_names) < 2:
    raise UserError(f"--multi_label: the training labels name "
                    f"{len(class_names)} label(s); it needs at least 2, "
                    f"separated by '{LABEL_SEPARATOR}' in --label_column")
  index = {name: i for i, name in enumerate(class_names)}
  out = {}
  for split, rows in sets.items():
    check_seen([l for row in rows for l in row], index, f"the {split} split")
    out[split] = (multi_hot(rows, index) if multi_label else
                  np.asarray([index[row[0]] for row in rows], np.int32))
  return class_names, out


def class_names_of(labels):
  unique = sorted(set(labels))
  if all(l.lstrip("-").isdigit() for l in unique):
    unique = sorted(unique, key=int)
  return unique


def hold_out(tables, fractions, seed):
  """Cuts the splits `tables` lacks from train, at random: {split: (items,
  labels)} in place, by {split: fraction}. Returns the log's notes."""
  notes = []
  rng = np.random.default_rng(seed)
  for split, fraction in fractions.items():
    if split in tables:
      continue
    items, labels = tables["train"]
    order = rng.permutation(len(items))
    cut = max(1, round(fraction * len(items)))
    held, kept = order[:cut], order[cut:]
    tables[split] = ([items[i] for i in held], [labels[i] for i in held])
    tables["train"] = ([items[i] for i in kept], [labels[i] for i in kept])
    notes.append(f"no {split} file: holding out {cut} training examples "
                 f"({fraction:.0%})")
  return notes


def load_files(path, fmt, *, text_column="text", label_column="label",
               validation_fraction=0.1, test_fraction=0.1, seed=0,
               multi_label=False):
  """`Splits` of CSV/TSV/JSONL data with string (or integer) labels.

  `path` is one file, split into train/validation/test at random by the
  fractions, or a folder with train.<fmt> and optionally validation.<fmt>
  (or val/dev) and test.<fmt>; missing splits are cut from train.
  `multi_label`: each label cell holds any number of labels separated by
  '|', and the labels are multi-hot rows.
  """
  files = split_files(path, fmt)
  tables = {split: read_table(f, fmt, text_column, label_column,
                              multi_label=multi_label)
            for split, f in files.items()}
  notes = hold_out(tables, {"test": test_fraction,
                            "validation": validation_fraction}, seed)
  class_names, labels = encode_labels(
      {split: cells for split, (_, cells) in tables.items()}, multi_label)
  out = {split: _dataset(texts, labels[split])
         for split, (texts, _) in tables.items()}
  sizes = {split: len(texts) for split, (texts, _) in tables.items()}
  logging.info("%s files: text column %r, label column %r, %d %s",
               fmt, text_column, label_column, len(class_names),
               "labels (several per text)" if multi_label else "classes")
  return datasets.Splits(**out, sizes=sizes, class_names=class_names,
                         notes=notes)


# ---------------------------------------------------------------------------
# TFDS.


def _find_text_features(info):
  """(text key, label key) of a TFDS text-classification dataset."""
  texts, label = datasets.classification_features(
      info, datasets.tfds_module().features.Text)
  if len(texts) != 1 or not label:
    raise UserError(
        f"--dataset={info.full_name.split('/')[0]} is not single-text "
        f"classification (text features: {', '.join(texts) or 'none'}; "
        "needs exactly one Text and a ClassLabel feature); export it to "
        "CSV and use --dataset=csv with --text_column")
  return texts[0], label


def _numpy_split(builder, spec, text_key, label_key):
  tfds = datasets.tfds_module()
  texts, labels = [], []
  ds = builder.as_dataset(split=spec, shuffle_files=False)
  for ex in tfds.as_numpy(ds.batch(1024)):
    texts += [t.decode("utf-8") for t in ex[text_key]]
    labels += list(ex[label_key])
  return texts, np.asarray(labels, np.int32)


def load_tfds_text(name, *, data_dir="", validation_fraction=0.1):
  """A TFDS text-classification dataset by name (glue/sst2, imdb_reviews...).

  An unlabelled test split (glue's, labels -1) is replaced by validation,
  and validation is then cut from train; the notes say so.
  """
  builder, (text_key, label_key) = datasets.open_tfds(
      name, data_dir, _find_text_features,
      [*TEXT_TASKS, *real_data.TEXT_TASKS, *FILE_FORMATS])
  available = set(builder.info.splits.keys())
  specs, notes = datasets.choose_splits(
      name, available, validation_fraction)
  tables = {s: _numpy_split(builder, spec, text_key, label_key)
            for s, spec in specs.items()}
  if len(tables["test"][1]) and (tables["test"][1] < 0).all():
    val_name = next((s for s in ("validation", "val") if s in available),
                    None)
    if val_name is None:
      raise UserError(f"--dataset={name}: its test split is unlabelled and it "
                      "has no validation split to test on")
    keep = round(100 * (1 - validation_fraction))
    tables["test"] = _numpy_split(builder, val_name, text_key, label_key)
    tables["train"] = _numpy_split(builder, f"train[:{keep}%]", text_key,
                                   label_key)
    tables["validation"] = _numpy_split(builder, f"train[{keep}%:]", text_key,
                                        label_key)
    notes = [f"{name}: the test split is unlabelled, so the test figures are "
             f"on {val_name!r} and validation is the last {100 - keep}% of "
             "train"]
  logging.info("TFDS %s: text feature %r, label feature %r", name, text_key,
               label_key)
  return datasets.Splits(
      **{s: _dataset(*t) for s, t in tables.items()},
      sizes={s: len(t[0]) for s, t in tables.items()},
      class_names=list(builder.info.features[label_key].names), notes=notes)


IMAGE_TASK_NAMES = {"synthetic": "synthetic_text",
                    "synthetic_source": "synthetic_text_source"}


def load(dataset, *, data_dir="", text_column="text", label_column="label",
         validation_fraction=0.1, test_fraction=0.1, seed=0,
         multi_label=False):
  """Text `Splits` by the name given to --dataset.

  The image tasks' names stand for their text counterparts, so the default
  --dataset=synthetic works for a text --model too.
  """
  dataset = IMAGE_TASK_NAMES.get(dataset, dataset)
  if dataset in TEXT_TASKS:
    return load_synthetic_text(dataset, seed=seed)
  if dataset in real_data.TEXT_TASKS:
    return real_data.load_text_task(
        dataset, validation_fraction=validation_fraction,
        test_fraction=test_fraction, seed=seed)
  if dataset in FILE_FORMATS:
    return load_files(data_dir, dataset, text_column=text_column,
                      label_column=label_column,
                      validation_fraction=validation_fraction,
                      test_fraction=test_fraction, seed=seed,
                      multi_label=multi_label)
  return load_tfds_text(dataset, data_dir=data_dir,
                        validation_fraction=validation_fraction)


# ---------------------------------------------------------------------------
# Tokenization.


def tokenize(dataset, preprocessor, batch_size=512):
  """(text, label) -> (token dict, label), computed once and kept in memory.

  Labels stay as they are (padding examples keep label -1).
  """
  parts, labels = [], []
  for texts, y in dataset.batch(batch_size):
    parts.append({k: v.numpy() for k, v in preprocessor(texts).items()})
    labels.append(y.numpy())
  if not parts:
    raise UserError("a text split is empty after loading")
  features = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
  return tf.data.Dataset.from_tensor_slices(
      (features, np.concatenate(labels).astype(np.int32)))


# Training texts measured against the sequence length: enough for the
# share and the 95th percentile, and seconds even on a large dataset.
LENGTH_SAMPLE = 10_000


def measure_lengths(splits, positions, sequence_length, limit=None):
  """How the training texts fit `sequence_length`, in `splits.text_lengths`
  (run.json) and, when some are cut, a note for the log and a warning.

  `positions(texts)` gives the positions each text takes whole (its tokens
  and the model's special tokens). A cut text loses its end silently, so
  the run says how many are cut and what length would hold 95% whole, or,
  when that is past `limit` (the most positions the model takes, if it
  has a most), that even the model's limit cuts them.
  """
  texts, _ = texts_of(splits.train, LENGTH_SAMPLE)
  if not texts:
    return
  needed = np.asarray(positions(texts))
  cut = int((needed > sequence_length).sum())
  stats = {"sequence_length": int(sequence_length), "texts": len(texts),
           "cut": cut, "cut_share": round(cut / len(texts), 4),
           "p95": int(np.ceil(np.percentile(needed, 95))),
           "longest": int(needed.max())}
  splits.text_lengths = stats
  if not cut:
    return
  sampled = (f" (of the first {len(texts):,})"
             if len(texts) < splits.sizes["train"] else "")
  note = (f"{cut:,} of the training texts{sampled} "
          f"({100 * stats['cut_share']:.1f}%) are longer than "
          f"--sequence_length={sequence_length} tokens and are cut; 95% "
          f"fit whole in {stats['p95']} tokens")
  if limit and stats["p95"] > limit:
    stats["limit"] = int(limit)
    note += f", more than the {limit} positions the model takes at most"
  splits.notes.append(note)
  log = logging.warning if stats["cut_share"] > 0.05 else logging.info
  log(note)


def tokenized_splits(splits, preprocessor):
  """A copy of text `splits` with every split tokenized."""
  return dataclasses.replace(
      splits, **{s: tokenize(getattr(splits, s), preprocessor)
                 for s in ("train", "validation", "test")})


def texts_of(dataset, limit=0):
  """The first `limit` (0 = all) texts and labels of a split, as lists."""
  if limit:
    dataset = dataset.take(limit)
  texts, labels = [], []
  for t, y in dataset.batch(1024).as_numpy_iterator():
    texts += [s.decode("utf-8") for s in t]
    labels += list(y)
  return texts, np.asarray(labels, np.int32)
