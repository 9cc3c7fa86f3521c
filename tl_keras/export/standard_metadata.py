"""Standard TFLite metadata (`TFLITE_METADATA`), written by MediaPipe's writers.

The apps that load our .tflite files (MediaPipe Tasks, the LiteRT Support
Library, Android Studio's ML model binding) read the metadata schema of
`mediapipe/tasks/metadata/metadata_schema.fbs`: the input's normalization
(images) or tokenizer and vocabulary (text), the output's labels as a file
packed inside the model, a name and a description. `image_classifier` and
`bert_text_classifier` write it with
`mediapipe.tasks.python.metadata.metadata_writers`, the writers MediaPipe
Model Maker uses, next to tl_keras's own JSON entry (`tflite.METADATA_NAME`),
which it keeps.

mediapipe 1.2's `metadata` module imports a compiled helper,
`mediapipe.tasks.cc.metadata.python._pywrap_metadata_version`, that its wheel
does not ship; the helper only computes the metadata's minimum parser
version. `_install_parser_version` provides it in Python, following
`mediapipe/tasks/cc/metadata/metadata_version.cc` (1.0.0, raised by each
schema member added later), when the compiled one is missing.
"""

import json
import os
import sys
import types

# The members added to the metadata schema after 1.0.0, and the parser
# version that reads them (metadata_version.cc's GetMemberVersion).
VOCABULARY_FILE = (1, 0, 1)
PROCESS_UNITS = (1, 1, 0)  # subgraph input/output process units
TOKENIZER = (1, 1, 0)  # BERT and SentencePiece tokenizer options
TENSOR_GROUPS = (1, 2, 0)
REGEX_TOKENIZER = (1, 2, 1)
AUDIO_PROPERTIES = (1, 3, 0)
SCANN_INDEX_FILE = (1, 4, 0)
FILE_VERSION = (1, 4, 1)
CUSTOM_METADATA = (1, 5, 0)

_HELPER = "mediapipe.tasks.cc.metadata.python._pywrap_metadata_version"


def minimum_parser_version(buffer):
  """The oldest metadata parser that reads a ModelMetadata flatbuffer."""
  from mediapipe.tasks.metadata import metadata_schema_py_generated as fb  # pylint: disable=g-import-not-at-top
  model = fb.ModelMetadataT.InitFromObj(
      fb.ModelMetadata.GetRootAsModelMetadata(bytearray(buffer), 0))
  found = [(1, 0, 0)]

  def files(entries):
    for entry in entries or []:
      if entry.type == fb.AssociatedFileType.VOCABULARY:
        found.append(VOCABULARY_FILE)
      if entry.type == fb.AssociatedFileType.SCANN_INDEX_FILE:
        found.append(SCANN_INDEX_FILE)
      if entry.version is not None:
        found.append(FILE_VERSION)

  def units(entries):
    for unit in entries or []:
      if unit.optionsType in (
          fb.ProcessUnitOptions.BertTokenizerOptions,
          fb.ProcessUnitOptions.SentencePieceTokenizerOptions):
        found.append(TOKENIZER)
      if unit.optionsType == fb.ProcessUnitOptions.RegexTokenizerOptions:
        found.append(REGEX_TOKENIZER)

  def tensors(entries):
    for tensor in entries or []:
      files(tensor.associatedFiles)
      units(tensor.processUnits)
      if tensor.content is not None and (
          tensor.content.contentPropertiesType ==
          fb.ContentProperties.AudioProperties):
        found.append(AUDIO_PROPERTIES)

  for graph in model.subgraphMetadata or []:
    tensors(graph.inputTensorMetadata)
    tensors(graph.outputTensorMetadata)
    files(graph.associatedFiles)
    for process_units in (graph.inputProcessUnits, graph.outputProcessUnits):
      if process_units is not None:
        found.append(PROCESS_UNITS)
        units(process_units)
    if (graph.inputTensorGroups is not None
        or graph.outputTensorGroups is not None):
      found.append(TENSOR_GROUPS)
    if graph.customMetadata is not None:
      found.append(CUSTOM_METADATA)
  files(model.associatedFiles)
  return ".".join(str(n) for n in max(found))


def _install_parser_version():
  """Provides MediaPipe's missing compiled helper, if it is missing."""
  try:
    __import__(_HELPER)
    return
  except ImportError:
    pass
  parents = _HELPER.split(".")
  for i in range(3, len(parents)):
    sys.modules.setdefault(".".join(parents[:i]),
                           types.ModuleType(".".join(parents[:i])))
  helper = types.ModuleType(_HELPER)
  helper.GetMinimumMetadataParserVersion = minimum_parser_version
  sys.modules[_HELPER] = helper


def _writers():
  _install_parser_version()
  from mediapipe.tasks.python.metadata.metadata_writers import metadata_info  # pylint: disable=g-import-not-at-top
  from mediapipe.tasks.python.metadata.metadata_writers import metadata_writer  # pylint: disable=g-import-not-at-top
  return metadata_info, metadata_writer


def image_classifier(content, *, labels, **general):
  """`content` with standard image-classifier metadata.

  The input is raw RGB pixels (normalization is inside the model), so its
  normalization is mean 0, std 1: MediaPipe passes the pixels unchanged.
  The labels go in as `labels.txt`, packed inside the file. `general`: as
  in `_populated`.

  Returns:
    The .tflite bytes.
  """
  return _populated(content, labels, lambda writer, folder, writers: (
      writer.add_image_input([0.0], [1.0])), **general)


def bert_text_classifier(content, *, labels, vocabulary, inputs, **general):
  """`content` with standard BERT text-classifier metadata.

  MediaPipe's `TextClassifier` then takes raw strings: the metadata holds
  the WordPiece vocabulary (packed inside the file) and which input is the
  token ids, the padding mask and the segment ids.

  Args:
    content: .tflite bytes taking int32 [1, L] token ids, mask, segments.
    labels: class names, in order.
    vocabulary: the tokenizer's vocabulary, one token per entry.
    inputs: (token ids, padding mask, segment ids) input names, each
      contained in the name of one input tensor of `content`.
    **general: as in `_populated`.

  Returns:
    The .tflite bytes.
  """
  from ai_edge_litert import interpreter as litert  # pylint: disable=g-import-not-at-top
  tensors = [d["name"] for d in
             litert.Interpreter(model_content=content).get_input_details()]
  ids, mask, segments = (next(t for t in tensors if wanted in t)
                         for wanted in inputs)

  def add_input(writer, folder, writers):
    path = os.path.join(folder, "vocab.txt")
    with open(path, "w", encoding="utf-8") as f:
      f.write("\n".join(vocabulary) + "\n")
    writer.add_bert_text_input(writers.BertTokenizer(path), ids, mask,
                               segments)

  return _populated(content, labels, add_input, **general)


def regex_text_classifier(content, *, labels, vocabulary_file, delimiter,
                          **general):
  """`content` with standard regex-tokenizer text-classifier metadata
  (Model Maker's average word-embedding layout).

  MediaPipe's `TextClassifier` then takes raw strings: it splits them at
  `delimiter`, looks the words up in the packed vocabulary ("token id" a
  line: `vocabulary_file`'s text) and feeds the one int32 [1, L] input.
  `general`: as in `_populated`.
  """

  def add_input(writer, folder, writers):
    path = os.path.join(folder, "vocab.txt")
    with open(path, "w", encoding="utf-8") as f:
      f.write(vocabulary_file)
    writer.add_regex_text_input(writers.RegexTokenizer(delimiter, path))

  return _populated(content, labels, add_input, **general)


def _populated(content, labels, add_input, *, name, description, version,
               author=None, license=None):  # pylint: disable=redefined-builtin
  """`content` with the input `add_input` describes and a labelled output.

  Args:
    content: .tflite bytes.
    labels: class names, in output order (packed as labels.txt).
    add_input: fn(writer, folder, writers module) adding the input's
      metadata; files it packs go in `folder`, removed afterwards.
    name, description, version, author, license: the general information.
  """
  info, writers = _writers()
  writer = _writer_class(writers)(bytearray(content))
  folder = writer._temp_folder  # pylint: disable=protected-access
  try:
    # add_general_info takes a name and a description only.
    writer._general_md = info.GeneralMd(  # pylint: disable=protected-access
        name=name, version=version, description=description,
        author=author or None, licenses=license or None)
    add_input(writer, folder.name, writers)
    writer.add_classification_output(writers.Labels().add(list(labels)))
    populated, _ = writer.populate()
  finally:
    folder.cleanup()
  return bytes(populated)


def _writer_class(writers):
  """MediaPipe's writer, without its `__del__`.

  Its `__del__` removes the writer's temporary folder with `os.path`; a
  writer collected at interpreter exit finds `os` gone and prints an
  ignored exception. The folder is removed explicitly instead.
  """

  class Writer(writers.MetadataWriter):

    def __del__(self):
      pass

  return Writer


def _displayer(path):
  """MediaPipe's reader of the file's metadata; None if it has none."""
  _install_parser_version()
  from mediapipe.tasks.python.metadata import metadata  # pylint: disable=g-import-not-at-top
  with open(path, "rb") as f:
    content = f.read()
  try:
    return metadata.MetadataDisplayer.with_model_buffer(content)
  except ValueError:  # no TFLITE_METADATA entry
    return None


def packed_file(path, name):
  """The bytes of the file `name` packed inside a .tflite, or None."""
  displayer = _displayer(path)
  if displayer is None or name not in (
      displayer.get_packed_associated_file_list()):
    return None
  return bytes(displayer.get_associated_file_buffer(name))


def read(path):
  """The standard metadata of a .tflite file: {} if it has none.

  Returns:
    {"name", "description", "version", "author", "license", "labels" (from
    the packed labels file), "mean", "std" (the image input's
    normalization, if any), "tokenizer" and "vocabulary" (text: the
    tokenizer's type and the packed vocabulary file's name),
    "min_parser_version"}.
  """
  displayer = _displayer(path)
  if displayer is None:
    return {}
  described = json.loads(displayer.get_metadata_json())
  out = {k: described.get(k) for k in ("name", "description", "version",
                                        "author", "license")}
  out["min_parser_version"] = described.get("min_parser_version")
  graph = (described.get("subgraph_metadata") or [{}])[0]
  for tensor in graph.get("input_tensor_metadata", []):
    for unit in tensor.get("process_units") or []:
      if unit.get("options_type") == "NormalizationOptions":
        out["mean"] = unit["options"]["mean"]
        out["std"] = unit["options"]["std"]
  for unit in graph.get("input_process_units") or []:
    if unit.get("options_type", "").endswith("TokenizerOptions"):
      out["tokenizer"] = unit["options_type"][:-len("Options")]
      files = unit["options"].get("vocab_file") or []
      out["vocabulary"] = files[0]["name"] if files else None
  for tensor in graph.get("output_tensor_metadata", []):
    for entry in tensor.get("associated_files") or []:
      if entry.get("type") == "TENSOR_AXIS_LABELS":
        text = displayer.get_associated_file_buffer(entry["name"])
        out["labels"] = [l for l in text.decode("utf-8").split("\n") if l]
  return out
