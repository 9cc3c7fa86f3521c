"""The average word-embedding classifier: a tiny text model from scratch.

MediaPipe Model Maker's other text model, rebuilt in Keras: words split
by a regular expression, looked up in a vocabulary of the training
split's most frequent words, embedded in 16 dimensions, averaged over
the words (not the padding), then a 16-wide ReLU layer, dropout and a
softmax. One change: the average weighs each word by a learned
importance (`ImportancePooling`) where Model Maker takes the plain mean.
It has nothing pretrained: the whole network trains from random weights.
It is well under 1 MB, fast on any CPU, and a baseline a transformer must
beat.

Tokenization is MediaPipe's `RegexTokenizer`, which the TFLite files
declare in their metadata so that MediaPipe's TextClassifier takes raw
strings: text is split at every run of characters matching `DELIMITER`
(Model Maker's pattern: anything but ASCII letters, digits, `_` and `'`),
each word becomes its vocabulary id (`<UNKNOWN>` when absent), `<START>`
goes first, and `<PAD>` fills to the sequence length. Case is kept:
MediaPipe does not lower-case before looking words up, so neither does
the model (Model Maker lower-cases its vocabulary, which MediaPipe then
cannot match for capitalized words).
"""

import collections
import re

import keras
from keras import layers
import tensorflow as tf

# Model Maker's delimiter (RE2 syntax, where \w is ASCII).
DELIMITER = r"[^\w']+"
PAD, START, UNKNOWN = "<PAD>", "<START>", "<UNKNOWN>"
# Model Maker's defaults (`AverageWordEmbeddingModelOptions`).
VOCABULARY_SIZE = 10000
SEQUENCE_LENGTH = 256
DIMENSION = 16
DROPOUT = 0.2
NAME = "average_word_embedding"
# How the words' embeddings are averaged: "weighted" (`ImportancePooling`)
# or "mean" (Model Maker's plain average; files saved before "weighted"
# existed load as "mean").
POOLING = "weighted"


def words(text):
  """`text` split as MediaPipe's RegexTokenizer splits it."""
  return [w for w in re.split(DELIMITER, text, flags=re.ASCII) if w]


def positions(texts):
  """The positions each text takes whole: <START> and its words."""
  return [1 + len(words(t)) for t in texts]


def vocabulary_of(texts, size=VOCABULARY_SIZE):
  """The `size` most frequent words of `texts`, most frequent first (ties
  in order of first appearance)."""
  counts = collections.Counter()
  for text in texts:
    counts.update(words(text))
  return [w for w, _ in counts.most_common(size)]


def vocabulary_ids(vocabulary):
  """{token: id} as the model numbers them: <PAD> 0, <START> 1,
  <UNKNOWN> 2, then the words."""
  return {token: i for i, token in enumerate((PAD, START, UNKNOWN,
                                              *vocabulary))}


@keras.saving.register_keras_serializable(package="tl_keras")
class RegexTokenizer(layers.Layer):
  """Raw strings [N] -> {"token_ids": int32 [N, sequence_length]}.

  TensorFlow ops only (RE2 regular expressions, a lookup table), so the
  SavedModel tokenizes inside its graph exactly as MediaPipe does.
  """

  def __init__(self, vocabulary, sequence_length=SEQUENCE_LENGTH, **kwargs):
    super().__init__(trainable=False, **kwargs)
    self.vocabulary = list(vocabulary)
    self.sequence_length = int(sequence_length)
    ids = vocabulary_ids(self.vocabulary)
    self._table = tf.lookup.StaticHashTable(
        tf.lookup.KeyValueTensorInitializer(
            tf.constant(list(ids), tf.string),
            tf.constant(list(ids.values()), tf.int32)),
        default_value=ids[UNKNOWN])
    self.built = True  # no weights to make

  def vocabulary_size(self):
    return len(self.vocabulary) + 3

  def call(self, texts):
    texts = tf.convert_to_tensor(texts, tf.string)
    split = tf.strings.split(tf.strings.regex_replace(texts, DELIMITER, " "))
    ids = tf.ragged.map_flat_values(self._table.lookup, split)
    start = tf.ones([tf.shape(texts)[0], 1], tf.int32)  # <START> is 1
    ids = tf.concat([start, ids], axis=1)[:, :self.sequence_length]
    return {"token_ids": ids.to_tensor(
        0, shape=[None, self.sequence_length])}

  def get_config(self):
    return {**super().get_config(), "vocabulary": self.vocabulary,
            "sequence_length": self.sequence_length}


@keras.saving.register_keras_serializable(package="tl_keras")
class ImportancePooling(layers.Layer):
  """(embeddings [N, L, D], token_ids [N, L]) -> [N, D]: the average of the
  words' embeddings, each weighted by its word's learned importance.

  The weights are a softmax over the text's words (padding excluded) of one
  trained number per vocabulary id, which starts at zero: at
  initialization this is the plain mean. Training raises the words that
  tell the classes apart and lowers the ones every text has, as IDF does
  for TF-IDF, where a plain mean gives "the" as much say as "asyncio". It
  adds one weight per word (a 16th of the embedding's) and only gather,
  softmax and sum ops, which TFLite and MediaPipe run.
  """

  def __init__(self, vocabulary_size, **kwargs):
    super().__init__(**kwargs)
    self.vocabulary_size = int(vocabulary_size)

  def build(self, embeddings_shape, token_ids_shape=None):
    self.importance = self.add_weight(
        shape=(self.vocabulary_size,), initializer="zeros",
        name="importance")

  def call(self, embeddings, token_ids):
    scores = keras.ops.take(keras.ops.cast(self.importance,
                                           embeddings.dtype), token_ids)
    # -1e4: far below any score, and within float16's range.
    scores = keras.ops.where(keras.ops.not_equal(token_ids, 0), scores,
                             keras.ops.cast(-1e4, embeddings.dtype))
    shares = keras.ops.softmax(scores, axis=1)
    return keras.ops.sum(embeddings * shares[..., None], axis=1)

  def compute_output_shape(self, embeddings_shape, token_ids_shape=None):
    return (embeddings_shape[0], embeddings_shape[2])

  def get_config(self):
    return {**super().get_config(), "vocabulary_size": self.vocabulary_size}


@keras.saving.register_keras_serializable(package="tl_keras")
class WordEmbeddingClassifier(keras.Model):
  """{"token_ids": int32 [N, L]} -> class probabilities; `preprocessor`
  (a `RegexTokenizer`) makes the token ids from raw strings."""

  def __init__(self, vocabulary, num_classes,
               sequence_length=SEQUENCE_LENGTH, dimension=DIMENSION,
               dropout=DROPOUT, dtype=None, activation="softmax",
               pooling=POOLING, **kwargs):
    # `dtype`: the layers' policy (None: the global one, mixed precision
    # included); the softmax computes in float32 whatever it is.
    preprocessor = RegexTokenizer(vocabulary, sequence_length,
                                  name="regex_tokenizer")
    inputs = keras.Input((sequence_length,), dtype="int32",
                         name="token_ids")
    x = layers.Embedding(preprocessor.vocabulary_size(), dimension,
                         dtype=dtype, name="embedding")(inputs)
    # Over the words (and <START>), not the padding: Model Maker averages
    # the padding in too, which drowns short texts at 256.
    if pooling == "weighted":
      x = ImportancePooling(preprocessor.vocabulary_size(), dtype=dtype,
                            name="pool")(x, inputs)
    elif pooling == "mean":
      x = layers.GlobalAveragePooling1D(dtype=dtype, name="pool")(
          x, mask=keras.ops.not_equal(inputs, 0))
    else:
      raise ValueError(f"pooling: 'weighted' or 'mean', got {pooling!r}")
    x = layers.Dense(dimension, activation="relu", dtype=dtype,
                     name="hidden")(x)
    x = layers.Dropout(dropout, dtype=dtype, name="dropout")(x)
    outputs = layers.Dense(num_classes, activation=activation,
                           dtype="float32", name="classifier")(x)
    super().__init__(inputs={"token_ids": inputs}, outputs=outputs,
                     **{"name": NAME, **kwargs})
    self.preprocessor = preprocessor
    self.num_classes = int(num_classes)
    self.sequence_length = int(sequence_length)
    self.dimension = int(dimension)
    self.dropout = float(dropout)
    self.activation = activation
    self.pooling = pooling

  @property
  def vocabulary(self):
    return self.preprocessor.vocabulary

  def get_config(self):
    return {"name": self.name, "trainable": self.trainable,
            "vocabulary": self.vocabulary, "num_classes": self.num_classes,
            "sequence_length": self.sequence_length,
            "dimension": self.dimension, "dropout": self.dropout,
            "activation": self.activation, "pooling": self.pooling,
            "dtype": self.get_layer("embedding").dtype_policy.name}

  @classmethod
  def from_config(cls, config):
    return cls(**{"pooling": "mean", **config})


def build_classifier(texts, num_classes, *, sequence_length=SEQUENCE_LENGTH,
                     vocabulary_size=VOCABULARY_SIZE, dropout=DROPOUT,
                     activation="softmax"):
  """The classifier with a vocabulary of `texts` (the training split's),
  at random weights; `activation` "sigmoid" for several labels per text."""
  return WordEmbeddingClassifier(vocabulary_of(texts, vocabulary_size),
                                 num_classes, sequence_length=sequence_length,
                                 dropout=dropout, activation=activation)


def is_classifier(model):
  return isinstance(model, WordEmbeddingClassifier)


def describe(model):
  """What run.json says about the model."""
  return {"name": NAME, "family": "average word embedding", "kind": "words",
          "vocabulary": len(model.vocabulary),
          "sequence_length": model.sequence_length,
          "dimension": model.dimension, "pooling": model.pooling,
          "params": int(model.count_params())}


def vocabulary_file(model):
  """MediaPipe's vocabulary file: "token id" a line."""
  return "".join(f"{t} {i}\n" for t, i in
                 vocabulary_ids(model.vocabulary).items())


def vocabulary_from_file(text):
  """The words of a `vocabulary_file`, in id order (the special tokens
  left out)."""
  ids = {}
  for line in text.splitlines():
    if line.strip():
      token, index = line.rsplit(" ", 1)
      ids[int(index)] = token
  return [ids[i] for i in sorted(ids) if i >= len(vocabulary_ids([]))]
