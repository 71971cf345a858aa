"""WordPiece tokenization inside the graph, with tensorflow-text.

Needs TensorFlow, imported with this module (which `keras_selfattn.text`
loads on first access to one of its names); tensorflow-text is imported on
a tokenizer's first use.
"""

import contextlib
import importlib

import keras
import tensorflow as tf

from keras_selfattn.layers import _validation
from keras_selfattn.text import _sequences

PAD = "[PAD]"
UNK = "[UNK]"
START = "[START]"
END = "[END]"
RESERVED_TOKENS = (PAD, UNK, START, END)

# Ops that TF-Text registers as LiteRT custom kernels and that the LiteRT
# mode below emits (`tokenize`, then `to_tensor`).
LITERT_CUSTOM_OPS = ("FastWordpieceTokenizeWithOffsets", "RaggedTensorToTensor")
_LITERT_MODE = [False]


@contextlib.contextmanager
def litert_mode():
    """Within this context, `WordPieceTokenizer.call` traces a graph that
    LiteRT can run with TF-Text's kernels (see `litert_blockers`)."""
    previous = _LITERT_MODE[0]
    _LITERT_MODE[0] = True
    try:
        yield
    finally:
        _LITERT_MODE[0] = previous


@tf.autograph.experimental.do_not_convert
def _tf_text():
    """Import tensorflow-text on first use, so `import keras_selfattn` stays
    light and the layer stays registered even without the extra."""
    try:
        return importlib.import_module("tensorflow_text")
    except ImportError as error:  # pragma: no cover - depends on the env
        raise ImportError(
            "WordPieceTokenizer needs tensorflow-text: "
            'pip install "keras-selfattn[text]"'
        ) from error


def normalize_text(strings, lower_case=True, strip_accents=False):
    """The normalization the tokenizer applies before splitting.

    Invalid UTF-8 bytes become U+FFFD (never an error), then optional case
    folding (`lower_case`) and accent stripping (NFD, drop combining marks).

    Args:
        strings: string tensor of any shape.
        lower_case: bool, Unicode case folding.
        strip_accents: bool, remove accents ("está" -> "esta").

    Returns:
        A string tensor of the same shape.
    """
    strings = tf.strings.unicode_transcode(
        strings, "UTF-8", "UTF-8", errors="replace"
    )
    if lower_case:
        strings = _tf_text().case_fold_utf8(strings)
    if strip_accents:
        strings = _tf_text().normalize_utf8(strings, "NFD")
        strings = tf.strings.regex_replace(strings, r"\p{Mn}", "")
    return strings


@keras.saving.register_keras_serializable(package="keras_selfattn")
class WordPieceTokenizer(keras.layers.Layer):
    """Raw strings to padded WordPiece ids, inside the TensorFlow graph.

    Normalizes the text (`normalize_text`), splits it on whitespace and
    punctuation and into WordPiece sub-words with tensorflow-text's
    `FastWordpieceTokenizer`, optionally adds start/end tokens, then pads or
    truncates to `sequence_length`. The vocabulary is part of the layer's
    config, so it is saved in `.keras` files and baked into exported
    SavedModels: an exported model takes raw strings. With `lower_case=False`
    and `strip_accents=False`, it also runs on device: `export_litert`
    writes it with TF-Text's LiteRT kernels, giving the same ids.

    The vocabulary must start with the reserved tokens: `[PAD]` has id 0 (so
    `Embedding(mask_zero=True)` masks padding), then `[UNK]`, `[START]`,
    `[END]` (`learn_wordpiece_vocabulary` produces such a vocabulary).

    Args:
        vocabulary: list of str, or a path to a text file with one token per
            line, starting with `[PAD]`, `[UNK]`, `[START]`, `[END]`.
        sequence_length: int or `None`. Output length: longer token
            sequences are truncated (keeping the first tokens, and the end
            token when `add_end_token`), shorter ones padded with 0. With
            `None`, each batch is padded to its longest sequence and nothing
            is truncated. Defaults to `None`.
        lower_case: bool, case-fold the text. Defaults to `True`.
        strip_accents: bool, remove accents. Defaults to `False`.
        add_start_token: bool, prepend `[START]`. Defaults to `False`.
        add_end_token: bool, append `[END]`. Defaults to `False`.
        max_bytes_per_word: int, longer words become `[UNK]`. Defaults to
            `100`.
        **kwargs: base `keras.layers.Layer` arguments (`name`, ...).

    Call arguments:
        inputs: string tensor of shape `(batch_size,)` (or `(batch_size, 1)`).

    Returns:
        int32 tensor of shape `(batch_size, sequence_length)`.

    Example:

    >>> from keras_selfattn.text import WordPieceTokenizer
    >>> vocab = ["[PAD]", "[UNK]", "[START]", "[END]", "the", "cat", "sat",
    ...          "on", "mat", "##s", "."]
    >>> tokenizer = WordPieceTokenizer(vocab, sequence_length=8,
    ...                                add_start_token=True,
    ...                                add_end_token=True)
    >>> ids = tokenizer(["The cats sat on the mat.", ""])
    >>> ids.numpy().tolist()
    [[2, 4, 5, 9, 6, 7, 4, 3], [2, 3, 0, 0, 0, 0, 0, 0]]
    >>> tokenizer.detokenize(ids).numpy().tolist()
    [b'the cats sat on the', b'']

    References:
        - [Song et al., 2021, Fast WordPiece Tokenization](
          https://arxiv.org/abs/2012.15524)
    """

    def __init__(
        self,
        vocabulary,
        sequence_length=None,
        lower_case=True,
        strip_accents=False,
        add_start_token=False,
        add_end_token=False,
        max_bytes_per_word=100,
        **kwargs,
    ):
        vocabulary = _load_vocabulary(vocabulary)
        sequence_length = _validation.positive_int(
            "sequence_length", sequence_length, allow_none=True
        )
        lower_case = _validation.boolean("lower_case", lower_case)
        strip_accents = _validation.boolean("strip_accents", strip_accents)
        add_start_token = _validation.boolean(
            "add_start_token", add_start_token
        )
        add_end_token = _validation.boolean("add_end_token", add_end_token)
        max_bytes_per_word = _validation.positive_int(
            "max_bytes_per_word", max_bytes_per_word
        )
        _sequences.check_sequence_length(
            sequence_length, add_start_token, add_end_token
        )
        kwargs.setdefault("dtype", "int32")
        super().__init__(**kwargs)
        self.vocabulary = vocabulary
        self.sequence_length = sequence_length
        self.lower_case = lower_case
        self.strip_accents = strip_accents
        self.add_start_token = add_start_token
        self.add_end_token = add_end_token
        self.max_bytes_per_word = max_bytes_per_word
        _sequences.set_up_string_layer(self)

    @property
    def vocabulary_size(self):
        return len(self.vocabulary)

    @property
    def pad_id(self):
        return 0

    @property
    def start_id(self):
        return self.vocabulary.index(START)

    @property
    def end_id(self):
        return self.vocabulary.index(END)

    def _fast_wordpiece(self):
        if self._tokenizer is None:
            # Created eagerly even when first used inside a tf.function: its
            # model buffer must outlive that graph (export traces several).
            with tf.init_scope():
                self._tokenizer = self._make_fast_wordpiece()
        return self._tokenizer

    def _make_fast_wordpiece(self):
        return _tf_text().FastWordpieceTokenizer(
            vocab=self.vocabulary,
            token_out_type=tf.int32,
            unknown_token=UNK,
            max_bytes_per_word=self.max_bytes_per_word,
            support_detokenization=True,
        )

    def tokenize_ragged(self, inputs):
        """Strings `(batch_size,)` to a ragged int32 `(batch_size, None)`,
        with start/end tokens, truncated to `sequence_length` but not
        padded."""
        strings = _sequences.string_batch(inputs)
        strings = normalize_text(strings, self.lower_case, self.strip_accents)
        ids = self._fast_wordpiece().tokenize(strings)  # ragged (B, None)
        return _sequences.frame(
            ids,
            self.sequence_length,
            self.start_id if self.add_start_token else None,
            self.end_id if self.add_end_token else None,
        )

    def litert_blockers(self):
        """Why this tokenizer cannot run in LiteRT: a list of reasons, each
        naming the option and the TensorFlow op without a LiteRT kernel
        (empty when it can)."""
        blockers = []
        if self.lower_case:
            blockers.append(
                "lower_case=True needs the op CaseFoldUTF8, which has no "
                "LiteRT kernel"
            )
        if self.strip_accents:
            blockers.append(
                "strip_accents=True needs the ops NormalizeUTF8 and "
                "StaticRegexReplace, which have no LiteRT kernels"
            )
        return blockers

    def _call_litert(self, strings):
        """`call` with TF-Text's LiteRT kernels and builtin ops only.

        The same ids as `call` for valid UTF-8 text, when
        `litert_blockers()` is empty: no `UnicodeTranscode` (no kernel; an
        app's strings are valid UTF-8), truncation by `to_tensor`'s shape
        (`RaggedTensorToTensor`) instead of ragged slicing, and the start
        and end tokens written into the dense tensor.
        """
        if strings.shape.rank == 2:
            strings = tf.squeeze(strings, axis=1)
        ragged = self._fast_wordpiece().tokenize(strings)  # ragged (B, None)
        specials = int(self.add_start_token) + int(self.add_end_token)
        room = None
        if self.sequence_length is not None:
            room = self.sequence_length - specials
        ids = ragged.to_tensor(
            default_value=self.pad_id, shape=[None, room]
        )  # (B, L): L = room, or the longest row when `room` is None
        splits = ragged.row_splits
        lengths = tf.cast(splits[1:] - splits[:-1], tf.int32)  # (B,)
        if room is not None:
            lengths = tf.minimum(lengths, room)
        else:
            # LiteRT's RaggedTensorToTensor pads a batch of empty rows to
            # width 1, TensorFlow's to width 0: cut to the longest row.
            longest = tf.reduce_max(tf.concat([lengths, [0]], 0))
            ids = ids[:, :longest]  # (B, L)
        batch = tf.shape(ids)[:1]
        if self.add_start_token:
            start = tf.fill(tf.concat([batch, [1]], 0), self.start_id)
            ids = tf.concat([start, ids], axis=1)  # (B, L + 1)
            lengths += 1
        if self.add_end_token:
            pad = tf.fill(tf.concat([batch, [1]], 0), self.pad_id)
            ids = tf.concat([ids, pad], axis=1)  # (B, W)
            # The end token goes right after each row's last token.
            positions = tf.range(tf.shape(ids)[1])[None, :]  # (1, W)
            ids = tf.where(
                positions == lengths[:, None], self.end_id, ids
            )  # (B, W)
        return ids

    def call(self, inputs):
        if _LITERT_MODE[0]:
            strings = tf.convert_to_tensor(inputs, dtype=tf.string)
            return self._call_litert(strings)
        ids = self.tokenize_ragged(inputs)
        return ids.to_tensor(
            default_value=self.pad_id, shape=[None, self.sequence_length]
        )

    def detokenize(self, ids):
        """Ids `(batch_size, seq_len)` back to strings `(batch_size,)`.

        Stops at the first `[END]`, drops `[PAD]`/`[START]`, joins
        sub-words; words are separated by single spaces (so are punctuation
        marks and CJK ideographs, which are words of their own), and the text
        is in normalized form (lower-cased when `lower_case`).
        """
        ragged = _sequences.content(
            ids, self.pad_id, self.start_id, self.end_id
        )
        return self._fast_wordpiece().detokenize(ragged)

    def id_to_token(self, ids):
        """Ids (any shape) to their sub-word strings."""
        table = tf.constant(self.vocabulary)
        return tf.gather(table, tf.cast(ids, tf.int32))

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.sequence_length)

    def compute_output_spec(self, inputs):
        return keras.KerasTensor(
            (inputs.shape[0], self.sequence_length), dtype="int32"
        )

    def get_config(self):
        return {
            **super().get_config(),
            "vocabulary": list(self.vocabulary),
            "sequence_length": self.sequence_length,
            "lower_case": self.lower_case,
            "strip_accents": self.strip_accents,
            "add_start_token": self.add_start_token,
            "add_end_token": self.add_end_token,
            "max_bytes_per_word": self.max_bytes_per_word,
        }


def _load_vocabulary(vocabulary):
    """A list of tokens from a list or a one-token-per-line file."""
    if isinstance(vocabulary, str):
        with open(vocabulary, encoding="utf-8") as f:
            vocabulary = [line.rstrip("\n") for line in f if line.strip()]
    if not isinstance(vocabulary, (list, tuple)) or not all(
        isinstance(t, str) for t in vocabulary
    ):
        raise _validation.invalid(
            "vocabulary",
            "a list of str or a path to a one-token-per-line file",
            type(vocabulary).__name__,
            error=TypeError,
        )
    vocabulary = list(vocabulary)
    if tuple(vocabulary[: len(RESERVED_TOKENS)]) != RESERVED_TOKENS:
        raise _validation.invalid(
            "vocabulary",
            f"a list starting with the reserved tokens {list(RESERVED_TOKENS)}",
            vocabulary[: len(RESERVED_TOKENS)],
        )
    if len(set(vocabulary)) != len(vocabulary):
        seen, duplicates = set(), []
        for token in vocabulary:
            if token in seen:
                duplicates.append(token)
            seen.add(token)
        raise _validation.invalid(
            "vocabulary", "unique tokens", f"duplicates {duplicates[:5]}"
        )
    return vocabulary


def learn_wordpiece_vocabulary(
    dataset,
    vocabulary_size,
    lower_case=True,
    strip_accents=False,
    reserved_tokens=RESERVED_TOKENS,
    max_unique_words=200_000,
):
    """Learn a WordPiece vocabulary from a `tf.data.Dataset` of strings.

    The text is normalized exactly as `WordPieceTokenizer` will (same
    `lower_case`/`strip_accents`), split on whitespace and punctuation, and
    the sub-word vocabulary is learned with tensorflow-text's BERT vocabulary
    learner.

    Args:
        dataset: `tf.data.Dataset` of scalar strings or of string batches.
        vocabulary_size: int, the maximum vocabulary size (reserved tokens
            included).
        lower_case: bool, as in `WordPieceTokenizer`.
        strip_accents: bool, as in `WordPieceTokenizer`.
        reserved_tokens: the tokens that come first; the first four must be
            `[PAD]`, `[UNK]`, `[START]`, `[END]`.
        max_unique_words: int, how many distinct words the learner keeps
            (the most frequent).

    Returns:
        A list of str, ready for `WordPieceTokenizer(vocabulary=...)`.

    Example:

    >>> import tensorflow as tf
    >>> from keras_selfattn.text import learn_wordpiece_vocabulary
    >>> texts = tf.data.Dataset.from_tensor_slices(
    ...     ["the cat sat", "the cats sat", "a dog sat"] * 20)
    >>> vocab = learn_wordpiece_vocabulary(texts, vocabulary_size=40)
    >>> vocab[:4]
    ['[PAD]', '[UNK]', '[START]', '[END]']
    >>> "the" in vocab and "sat" in vocab
    True
    """
    vocabulary_size = _validation.positive_int(
        "vocabulary_size", vocabulary_size
    )
    reserved_tokens = list(reserved_tokens)
    if tuple(reserved_tokens[: len(RESERVED_TOKENS)]) != RESERVED_TOKENS:
        raise _validation.invalid(
            "reserved_tokens",
            f"a list starting with {list(RESERVED_TOKENS)}",
            reserved_tokens,
        )
    if vocabulary_size <= len(reserved_tokens):
        raise _validation.invalid(
            "vocabulary_size",
            f"an integer greater than the {len(reserved_tokens)} reserved "
            "tokens",
            vocabulary_size,
        )
    learner = importlib.import_module(
        "tensorflow_text.tools.wordpiece_vocab.bert_vocab_from_dataset"
    )
    if dataset.element_spec.shape.rank == 0:
        dataset = dataset.batch(1024)
    normalized = dataset.map(
        lambda s: normalize_text(s, lower_case, strip_accents),
        num_parallel_calls=tf.data.AUTOTUNE,
    )
    vocabulary = learner.bert_vocab_from_dataset(
        normalized.prefetch(tf.data.AUTOTUNE),
        vocab_size=vocabulary_size,
        reserved_tokens=reserved_tokens,
        # Already normalized; split like FastWordpieceTokenizer does.
        bert_tokenizer_params={"lower_case": False},
        learn_params={"max_input_tokens": max_unique_words},
    )
    return vocabulary[:vocabulary_size]
