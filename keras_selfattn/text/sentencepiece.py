"""SentencePiece tokenization inside the graph, with tensorflow-text.

Needs TensorFlow, imported with this module (which `keras_selfattn.text`
loads on first access to one of its names); tensorflow-text is imported on
a tokenizer's first use, and the `sentencepiece` package (the trainer) only
by `learn_sentencepiece_model`.
"""

import base64
import io
import os

import keras
import tensorflow as tf

from keras_selfattn.layers import _validation
from keras_selfattn.text import _sequences
from keras_selfattn.text.wordpiece import END
from keras_selfattn.text.wordpiece import PAD
from keras_selfattn.text.wordpiece import START
from keras_selfattn.text.wordpiece import UNK
from keras_selfattn.text.wordpiece import _tf_text

# The text normalizations SentencePiece can compile into a model.
NORMALIZATIONS = ("identity", "nfkc", "nmt_nfkc", "nfkc_cf", "nmt_nfkc_cf")
MODEL_TYPES = ("unigram", "bpe")
# Byte pieces `<0x00>` ... `<0xFF>` that `byte_fallback` adds.
_BYTE_PIECES = 256


@keras.saving.register_keras_serializable(package="keras_selfattn")
class SentencePieceTokenizer(keras.layers.Layer):
    """Raw strings to padded SentencePiece ids, inside the TensorFlow graph.

    Segments the text into sub-word pieces with a SentencePiece model
    (tensorflow-text's `SentencepieceTokenizer`), optionally adds start/end
    tokens, then pads or truncates to `sequence_length`. The serialized
    model is part of the layer's config (base64), so it is saved in
    `.keras` files and baked into exported SavedModels: an exported model
    takes raw strings, and loads in TF Serving (the op ships with
    tensorflow-text).

    Unlike `WordPieceTokenizer`, detokenization is exact: with a model from
    `learn_sentencepiece_model` (no dummy prefix, whitespace kept, byte
    fallback), `detokenize(tokenize(s)) == s` for every valid UTF-8 string
    `s` the model's normalization leaves unchanged (all of them with the
    default `normalization="identity"`; one exception: the character
    `▁` U+2581, SentencePiece's space marker, comes back as a space). Spaces,
    tabs, newlines, case and punctuation survive, which is what a generator
    needs: its output reads as written, and a prompt's ids followed by the
    generated ids detokenize to the prompt followed by the continuation.
    Invalid UTF-8 bytes become U+FFFD (never an error).

    Padding must have id 0 (so `Embedding(mask_zero=True)` masks it).
    `learn_sentencepiece_model` reserves the ids of `WordPieceTokenizer`:
    `[PAD]` 0, `[UNK]` 1, `[START]` 2, `[END]` 3. Another model is accepted
    when its padding id is 0; its start/end ids are its own (its trainer
    spec's `bos_id`/`eos_id`).

    Args:
        proto: bytes, a serialized SentencePiece model (as returned by
            `learn_sentencepiece_model`), or the path of a `.model` file.
        sequence_length: int or `None`. Output length: longer token
            sequences are truncated (keeping the first tokens, and the end
            token when `add_end_token`), shorter ones padded with 0. With
            `None`, each batch is padded to its longest sequence and nothing
            is truncated. Defaults to `None`.
        add_start_token: bool, prepend the start token (`[START]`).
            Defaults to `False`.
        add_end_token: bool, append the end token (`[END]`). Defaults to
            `False`.
        **kwargs: base `keras.layers.Layer` arguments (`name`, ...).

    Call arguments:
        inputs: string tensor of shape `(batch_size,)` (or `(batch_size, 1)`).

    Returns:
        int32 tensor of shape `(batch_size, sequence_length)`.

    Example:

    >>> from keras_selfattn.text import SentencePieceTokenizer
    >>> from keras_selfattn.text import learn_sentencepiece_model
    >>> proto = learn_sentencepiece_model(
    ...     ["The cat sat on the mat.", "A dog sat."] * 10,
    ...     vocabulary_size=300)
    >>> tokenizer = SentencePieceTokenizer(proto, sequence_length=12,
    ...                                    add_start_token=True,
    ...                                    add_end_token=True)
    >>> ids = tokenizer(["The  cat sat.\\n", ""])
    >>> ids.shape
    TensorShape([2, 12])
    >>> ids[1].numpy().tolist()
    [2, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]
    >>> tokenizer.detokenize(ids).numpy().tolist()
    [b'The  cat sat.\\n', b'']

    References:
        - [Kudo and Richardson, 2018, SentencePiece](
          https://arxiv.org/abs/1808.06226)
        - [Kudo, 2018, Subword Regularization (the unigram model)](
          https://arxiv.org/abs/1804.10959)
    """

    def __init__(
        self,
        proto,
        sequence_length=None,
        add_start_token=False,
        add_end_token=False,
        **kwargs,
    ):
        proto = _load_proto(proto)
        pieces, ids = _parse_model(proto)
        sequence_length = _validation.positive_int(
            "sequence_length", sequence_length, allow_none=True
        )
        add_start_token = _validation.boolean(
            "add_start_token", add_start_token
        )
        add_end_token = _validation.boolean("add_end_token", add_end_token)
        for argument, value, key in (
            ("add_start_token", add_start_token, "bos_id"),
            ("add_end_token", add_end_token, "eos_id"),
        ):
            if value and ids[key] < 0:
                raise _validation.invalid(
                    argument,
                    f"False for a model without a {key}",
                    value,
                )
        _sequences.check_sequence_length(
            sequence_length, add_start_token, add_end_token
        )
        kwargs.setdefault("dtype", "int32")
        super().__init__(**kwargs)
        self.proto = proto
        self.sequence_length = sequence_length
        self.add_start_token = add_start_token
        self.add_end_token = add_end_token
        self._pieces = pieces
        self._ids = ids
        _sequences.set_up_string_layer(self)

    @property
    def vocabulary(self):
        """The pieces, a list of str indexed by id."""
        return list(self._pieces)

    @property
    def vocabulary_size(self):
        return len(self._pieces)

    @property
    def pad_id(self):
        return self._ids["pad_id"]

    @property
    def unk_id(self):
        return self._ids["unk_id"]

    @property
    def start_id(self):
        """The start token's id (-1 if the model has none)."""
        return self._ids["bos_id"]

    @property
    def end_id(self):
        """The end token's id (-1 if the model has none)."""
        return self._ids["eos_id"]

    def _sentencepiece(self):
        if self._tokenizer is None:
            # Created eagerly even when first used inside a tf.function:
            # its model resource must outlive that graph (export traces
            # several), and exports find it on the layer.
            with tf.init_scope():
                self._tokenizer = _tf_text().SentencepieceTokenizer(
                    self.proto, out_type=tf.int32
                )
        return self._tokenizer

    def tokenize_ragged(self, inputs):
        """Strings `(batch_size,)` to a ragged int32 `(batch_size, None)`,
        with start/end tokens, truncated to `sequence_length` but not
        padded."""
        strings = _sequences.string_batch(inputs)
        # SentencePiece replaces invalid UTF-8 bytes with U+FFFD itself.
        ids = self._sentencepiece().tokenize(strings)  # ragged (B, None)
        return _sequences.frame(
            ids,
            self.sequence_length,
            self.start_id if self.add_start_token else None,
            self.end_id if self.add_end_token else None,
        )

    def call(self, inputs):
        ids = self.tokenize_ragged(inputs)
        return ids.to_tensor(
            default_value=self.pad_id, shape=[None, self.sequence_length]
        )

    def detokenize(self, ids):
        """Ids `(batch_size, seq_len)` back to strings `(batch_size,)`.

        Stops at the first end token and drops padding and start tokens;
        the pieces are joined exactly (no spaces added or removed).
        """
        ragged = _sequences.content(
            ids, self.pad_id, self.start_id, self.end_id
        )
        return self._sentencepiece().detokenize(ragged)

    def id_to_token(self, ids):
        """Ids (any shape) to their pieces (`▁` marks a space)."""
        table = tf.constant(self._pieces)
        return tf.gather(table, tf.cast(ids, tf.int32))

    def litert_blockers(self):
        """Why this tokenizer cannot run in LiteRT: a list of reasons, each
        naming the TensorFlow op without a LiteRT kernel.

        TF-Text's LiteRT kernels cover `FastSentencepieceTokenizer`, not
        the `SentencepieceTokenizer` this layer runs, and the fast one
        gives other ids for the byte-fallback pieces (it maps characters
        without a piece to `[UNK]`), so the layer is not switched to it.
        """
        return [
            "SentencePieceTokenizer needs the op SentencepieceTokenizeOp, "
            "which has no LiteRT kernel"
        ]

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.sequence_length)

    def compute_output_spec(self, inputs):
        return keras.KerasTensor(
            (inputs.shape[0], self.sequence_length), dtype="int32"
        )

    def get_config(self):
        return {
            **super().get_config(),
            # Bytes do not survive Keras' JSON config; base64 does.
            "proto": base64.b64encode(self.proto).decode("ascii"),
            "sequence_length": self.sequence_length,
            "add_start_token": self.add_start_token,
            "add_end_token": self.add_end_token,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        if isinstance(config.get("proto"), str):
            config["proto"] = base64.b64decode(config["proto"], validate=True)
        return cls(**config)


def _load_proto(proto):
    """The serialized model from bytes or a `.model` file path."""
    if isinstance(proto, (str, os.PathLike)):
        with open(proto, "rb") as f:
            return f.read()
    if isinstance(proto, (bytes, bytearray, memoryview)):
        return bytes(proto)
    raise _validation.invalid(
        "proto",
        "bytes (a serialized SentencePiece model) or a path to a .model file",
        type(proto).__name__,
        error=TypeError,
    )


def _fields(buffer):
    """(field number, value) of a protocol buffer message's fields: ints
    for varints (as signed 64-bit), bytes for length-delimited fields."""
    position = 0

    def varint():
        nonlocal position
        value = shift = 0
        while True:
            if position >= len(buffer) or shift > 63:
                raise ValueError("truncated varint")
            byte = buffer[position]
            position += 1
            value |= (byte & 0x7F) << shift
            shift += 7
            if byte < 0x80:
                return value

    while position < len(buffer):
        key = varint()
        number, wire_type = key >> 3, key & 7
        if wire_type == 0:
            value = varint()
            # int32 fields hold negative numbers as 64-bit two's complement.
            yield number, value - (1 << 64) if value >= 1 << 63 else value
        elif wire_type == 2:
            size = varint()
            if position + size > len(buffer):
                raise ValueError("truncated field")
            yield number, buffer[position : position + size]
            position += size
        elif wire_type in (1, 5):
            position += 8 if wire_type == 1 else 4
        else:
            raise ValueError(f"unknown wire type {wire_type}")
    if position != len(buffer):
        raise ValueError("truncated field")


def _parse_model(proto):
    """The pieces and the special ids of a serialized `ModelProto`.

    Reads the few fields needed (pieces: field 1; trainer spec: field 2,
    with `unk_id` 40, `bos_id` 41, `eos_id` 42, `pad_id` 43, proto2
    defaults 0, 1, 2, -1), so that neither tensorflow-text nor
    sentencepiece is needed to build the layer.
    """
    ids = {"unk_id": 0, "bos_id": 1, "eos_id": 2, "pad_id": -1}
    numbers = {40: "unk_id", 41: "bos_id", 42: "eos_id", 43: "pad_id"}
    pieces = []
    try:
        for number, value in _fields(proto):
            if number == 1:
                piece = dict(_fields(value)).get(1, b"")
                pieces.append(bytes(piece).decode("utf-8"))
            elif number == 2:
                for field, id_ in _fields(value):
                    if field in numbers:
                        ids[numbers[field]] = id_
    except (ValueError, TypeError, UnicodeDecodeError) as error:
        raise _validation.invalid(
            "proto",
            f"a serialized SentencePiece model ({error})",
            f"{len(proto)} bytes",
        ) from None
    if not pieces:
        raise _validation.invalid(
            "proto",
            "a serialized SentencePiece model (no pieces found)",
            f"{len(proto)} bytes",
        )
    for key, value in ids.items():
        if value >= len(pieces):
            raise _validation.invalid(
                "proto",
                f"a model whose {key} is below its {len(pieces)} pieces",
                value,
            )
    if ids["pad_id"] != 0:
        raise _validation.invalid(
            "proto",
            "a model with pad_id=0 (as `learn_sentencepiece_model` trains "
            "it), so that padding is id 0",
            f"a model with pad_id={ids['pad_id']}",
        )
    return pieces, ids


def _sentences(data, max_sentences):
    """Up to `max_sentences` non-empty str from a `tf.data.Dataset` (of
    scalar strings or string batches), an iterable of str/bytes or a text
    file path (one sentence per line)."""
    if isinstance(data, (str, os.PathLike)):
        with open(data, encoding="utf-8", errors="replace") as f:
            lines = (line.rstrip("\n") for line in f)
            yield from _take(lines, max_sentences)
        return
    if isinstance(data, tf.data.Dataset):
        if data.element_spec.dtype != tf.string:
            raise _validation.invalid(
                "data",
                "a tf.data.Dataset of strings",
                f"a dataset of {data.element_spec.dtype.name}",
                error=TypeError,
            )
        data = (
            text
            for element in data.as_numpy_iterator()
            for text in _flatten(element)
        )
    elif isinstance(data, (bytes, bytearray)) or not hasattr(data, "__iter__"):
        raise _validation.invalid(
            "data",
            "a tf.data.Dataset of strings, an iterable of str or a text "
            "file path",
            type(data).__name__,
            error=TypeError,
        )
    yield from _take(data, max_sentences)


def _flatten(element):
    if isinstance(element, bytes):
        return [element]
    return element.reshape(-1).tolist()


def _take(texts, max_sentences):
    count = 0
    for text in texts:
        if count >= max_sentences:
            return
        if isinstance(text, bytes):
            # As the tokenizer does: invalid bytes become U+FFFD.
            text = text.decode("utf-8", errors="replace")
        elif not isinstance(text, str):
            raise _validation.invalid(
                "data",
                "strings (str or bytes)",
                f"an element of type {type(text).__name__}",
                error=TypeError,
            )
        if text:
            count += 1
            yield text


def learn_sentencepiece_model(
    data,
    vocabulary_size,
    model_type="unigram",
    normalization="identity",
    byte_fallback=True,
    character_coverage=0.9995,
    max_sentences=1_000_000,
):
    """Train a SentencePiece model for `SentencePieceTokenizer`.

    Trains in memory with the `sentencepiece` package (`pip install
    "keras-selfattn[text]"`), on one thread, so the same data and arguments
    give the same model bytes. The model is made for exact detokenization:
    no dummy prefix and no whitespace clean-up (leading, trailing and
    repeated spaces are kept), and, with `byte_fallback`, characters
    without a piece of their own are spelled as UTF-8 byte pieces instead
    of `[UNK]`. Ids 0-3 are `[PAD]`, `[UNK]`, `[START]`, `[END]`, as for
    `WordPieceTokenizer`.

    Args:
        data: a `tf.data.Dataset` of scalar strings or of string batches,
            an iterable of str (or UTF-8 bytes), or the path of a UTF-8
            text file with one sentence (or document) per line. Empty
            strings are skipped.
        vocabulary_size: int, the most pieces (reserved tokens and, with
            `byte_fallback`, the 256 byte pieces included). A small corpus
            may give fewer.
        model_type: `"unigram"` or `"bpe"`. Defaults to `"unigram"`.
        normalization: the normalization compiled into the model and
            applied by the tokenizer: `"identity"` (none, so every string
            round-trips), `"nfkc"`, `"nmt_nfkc"` (NFKC plus NMT clean-ups),
            or either with `_cf` (case folding too). Defaults to
            `"identity"`.
        byte_fallback: bool, spell characters without a piece as byte
            pieces (so no text becomes `[UNK]`). Defaults to `True`.
        character_coverage: float in (0, 1], the share of the characters
            that get pieces of their own; the rarest others become byte
            pieces (with `byte_fallback`) or `[UNK]`. Defaults to
            `0.9995`.
        max_sentences: int, train on the first this many non-empty
            strings. Defaults to `1_000_000`.

    Returns:
        bytes, the serialized model, ready for
        `SentencePieceTokenizer(proto=...)` (or to write to a `.model`
        file for the `sentencepiece` package).

    Example:

    >>> import tensorflow as tf
    >>> from keras_selfattn.text import learn_sentencepiece_model
    >>> texts = tf.data.Dataset.from_tensor_slices(
    ...     ["the cat sat", "the cats sat", "a dog sat"] * 20)
    >>> proto = learn_sentencepiece_model(texts, vocabulary_size=300)
    >>> proto == learn_sentencepiece_model(texts, vocabulary_size=300)
    True
    """
    vocabulary_size = _validation.positive_int(
        "vocabulary_size", vocabulary_size
    )
    model_type = _validation.one_of("model_type", model_type, MODEL_TYPES)
    normalization = _validation.one_of(
        "normalization", normalization, NORMALIZATIONS
    )
    byte_fallback = _validation.boolean("byte_fallback", byte_fallback)
    if (
        isinstance(character_coverage, bool)
        or not isinstance(character_coverage, (int, float))
        or not 0 < character_coverage <= 1
    ):
        raise _validation.invalid(
            "character_coverage", "a float in (0, 1]", character_coverage
        )
    max_sentences = _validation.positive_int("max_sentences", max_sentences)
    reserved = 4 + (_BYTE_PIECES if byte_fallback else 0)
    if vocabulary_size <= reserved:
        raise _validation.invalid(
            "vocabulary_size",
            f"an integer greater than the {reserved} reserved pieces (4 "
            "special tokens"
            + (f", {_BYTE_PIECES} bytes" if byte_fallback else "")
            + ")",
            vocabulary_size,
        )
    try:
        import sentencepiece
    except ImportError as error:  # pragma: no cover - depends on the env
        raise ImportError(
            "learn_sentencepiece_model needs sentencepiece: "
            'pip install "keras-selfattn[text]"'
        ) from error
    sentences = list(_sentences(data, max_sentences))
    if not sentences:
        raise _validation.invalid(
            "data", "at least one non-empty string", "no text"
        )
    model = io.BytesIO()
    try:
        sentencepiece.SentencePieceTrainer.train(
            sentence_iterator=iter(sentences),
            model_writer=model,
            vocab_size=vocabulary_size,
            model_type=model_type,
            normalization_rule_name=normalization,
            byte_fallback=byte_fallback,
            character_coverage=float(character_coverage),
            # Exact round trips: no "▁" added in front of the text, no
            # whitespace removed.
            add_dummy_prefix=False,
            remove_extra_whitespaces=False,
            # A small corpus may not fill `vocabulary_size`.
            hard_vocab_limit=False,
            # Documents, not only sentences: keep long lines.
            max_sentence_length=1 << 20,
            input_sentence_size=0,
            pad_id=0,
            unk_id=1,
            bos_id=2,
            eos_id=3,
            pad_piece=PAD,
            unk_piece=UNK,
            bos_piece=START,
            eos_piece=END,
            # One thread: the same input gives the same model.
            num_threads=1,
            minloglevel=2,
        )
    except RuntimeError as error:
        raise _validation.invalid(
            "vocabulary_size",
            f"a size this data supports (sentencepiece: {error})",
            vocabulary_size,
        ) from None
    return model.getvalue()
