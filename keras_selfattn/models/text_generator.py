"""Raw strings in, generated strings out: a seq2seq model with its tokenizers.

`TextGenerator` chains a source tokenizer (`WordPieceTokenizer` or
`SentencePieceTokenizer`), the cached `Seq2SeqTransformer.generate` and the
target tokenizer's `detokenize` in one graph, so a `.keras` file or an
exported SavedModel takes raw text.
`make_seq2seq_dataset` builds the matching teacher-forcing `tf.data`
pipeline; `cross_attention_scores` returns a decoder block's attention over
the source for plots.

Needs TensorFlow (imported with this module, which `keras_selfattn.models`
loads on first access to one of its names) and, for the tokenizers,
tensorflow-text.
"""

import keras
import tensorflow as tf

from keras_selfattn.layers import _validation
from keras_selfattn.models.seq2seq import Seq2SeqTransformer
from keras_selfattn.text.sentencepiece import SentencePieceTokenizer
from keras_selfattn.text.wordpiece import WordPieceTokenizer

# (pattern, replacement) pairs that undo the tokenizer's spaces around
# punctuation: "¿ qué hora es ?" -> "¿qué hora es?", "tom ' s" -> "tom's".
_TIDY_RULES = (
    (r"\s+([.,!?;:%)\]}»…])", r"\1"),
    (r"([¿¡(\[{«])\s+", r"\1"),
    (r"\s*'\s*", "'"),
)


# The tokenizer layers the text models take.
_TOKENIZERS = (WordPieceTokenizer, SentencePieceTokenizer)


def _deserialize(obj, expected_type, name):
    """An object from itself or from its serialized config dict;
    `expected_type` is a class or a tuple of classes."""
    if isinstance(obj, dict):
        obj = keras.saving.deserialize_keras_object(obj)
    if not isinstance(obj, expected_type):
        types = expected_type if isinstance(expected_type, tuple) else ()
        names = " or ".join(t.__name__ for t in types or (expected_type,))
        raise _validation.invalid(
            name,
            f"a {names} (or its serialized config)",
            type(obj).__name__,
            error=TypeError,
        )
    return obj


def tidy_spacing(strings):
    """Remove the spaces that detokenization puts around punctuation.

    Args:
        strings: string tensor of any shape.

    Returns:
        A string tensor of the same shape.

    Example:

    >>> from keras_selfattn.models.text_generator import tidy_spacing
    >>> tidy_spacing(["¿ qué hora es ?", "tom ' s cat ( grey ) ."]).numpy()
    array([b'\\xc2\\xbfqu\\xc3\\xa9 hora es?', b"tom's cat (grey)."],
          dtype=object)
    """
    strings = tf.convert_to_tensor(strings, dtype=tf.string)
    for pattern, replacement in _TIDY_RULES:
        strings = tf.strings.regex_replace(strings, pattern, replacement)
    return strings


@keras.saving.register_keras_serializable(package="keras_selfattn")
class TextGenerator(keras.layers.Layer):
    """Raw source strings to generated target strings, inside the graph.

    Tokenizes with `source_tokenizer`, decodes with the cached
    `seq2seq.generate` (greedy or beam search, options fixed here) and
    turns the ids back into text with `target_tokenizer.detokenize`
    (which stops at the end token), optionally re-attaching punctuation
    (`tidy_spacing`). The tokenizers' vocabularies and the model's weights
    are all saved with the layer: a `.keras` file reloads with no
    `custom_objects` once `keras_selfattn` is imported, and the call traces
    into a `tf.function` with a `(None,)` string signature (export).

    Args:
        source_tokenizer: `WordPieceTokenizer` or `SentencePieceTokenizer`
            for the source text, with a `sequence_length` of at most
            `seq2seq.source_length`.
        target_tokenizer: `WordPieceTokenizer` or `SentencePieceTokenizer`
            of the target vocabulary (its start/end ids start and stop
            decoding).
        seq2seq: a `Seq2SeqTransformer`.
        max_length: int, the most generated tokens (end token included), at
            most `seq2seq.target_length`. Defaults to
            `seq2seq.target_length`.
        method: `"greedy"` or `"beam"`. Defaults to `"greedy"`.
        beam_width: int, beams for `"beam"`. Defaults to `4`.
        length_penalty: float >= 0, the GNMT alpha for `"beam"`. Defaults
            to `0.6`.
        no_repeat_ngram_size: int, when `n > 0` no n-gram of this size is
            generated twice in an output. Defaults to `0` (off).
        tidy: bool, remove the spaces detokenization leaves around
            punctuation (`tidy_spacing`). Defaults to `True`. Pass `False`
            with a `SentencePieceTokenizer` target: its text is already
            exact.
        **kwargs: base `keras.layers.Layer` arguments (`name`, ...).

    Call arguments:
        inputs: string tensor of shape `(batch_size,)`.

    Returns:
        string tensor of shape `(batch_size,)`.

    Example:

    >>> from keras_selfattn.models import Seq2SeqTransformer
    >>> from keras_selfattn.models.text_generator import TextGenerator
    >>> from keras_selfattn.text import WordPieceTokenizer
    >>> vocab = ["[PAD]", "[UNK]", "[START]", "[END]", "a", "b", "c"]
    >>> source = WordPieceTokenizer(vocab, sequence_length=6)
    >>> target = WordPieceTokenizer(vocab, sequence_length=6,
    ...                             add_start_token=True, add_end_token=True)
    >>> model = Seq2SeqTransformer(7, 7, source_length=6, target_length=5,
    ...                            embed_dim=8, num_heads=2, ff_dim=8)
    >>> generator = TextGenerator(source, target, model, max_length=4)
    >>> out = generator(["a b c", ""])
    >>> out.shape, out.dtype
    (TensorShape([2]), tf.string)
    >>> generator.generate_ids(["a b"]).shape
    TensorShape([1, 4])
    """

    def __init__(
        self,
        source_tokenizer,
        target_tokenizer,
        seq2seq,
        max_length=None,
        method="greedy",
        beam_width=4,
        length_penalty=0.6,
        tidy=True,
        no_repeat_ngram_size=0,
        **kwargs,
    ):
        source_tokenizer = _deserialize(
            source_tokenizer, _TOKENIZERS, "source_tokenizer"
        )
        target_tokenizer = _deserialize(
            target_tokenizer, _TOKENIZERS, "target_tokenizer"
        )
        seq2seq = _deserialize(seq2seq, Seq2SeqTransformer, "seq2seq")
        length = source_tokenizer.sequence_length
        if length is None or length > seq2seq.source_length:
            raise _validation.invalid(
                "source_tokenizer",
                "a tokenizer whose sequence_length is at most "
                f"seq2seq.source_length={seq2seq.source_length}",
                f"sequence_length={length}",
            )
        if max_length is None:
            max_length = seq2seq.target_length
        max_length = _validation.positive_int("max_length", max_length)
        if max_length > seq2seq.target_length:
            raise _validation.invalid(
                "max_length",
                f"at most seq2seq.target_length={seq2seq.target_length}",
                max_length,
            )
        method = _validation.one_of("method", method, ("greedy", "beam"))
        beam_width = _validation.positive_int("beam_width", beam_width)
        length_penalty = _validation.non_negative_float(
            "length_penalty", length_penalty
        )
        tidy = _validation.boolean("tidy", tidy)
        no_repeat_ngram_size = _validation.non_negative_int(
            "no_repeat_ngram_size", no_repeat_ngram_size
        )
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.source_tokenizer = source_tokenizer
        self.target_tokenizer = target_tokenizer
        self.seq2seq = seq2seq
        self.max_length = max_length
        self.method = method
        self.beam_width = beam_width
        self.length_penalty = float(length_penalty)
        self.tidy = tidy
        self.no_repeat_ngram_size = no_repeat_ngram_size
        # String inputs and outputs: no XLA, no float conversion of inputs.
        self.supports_jit = False
        self._convert_input_args = False
        self._allow_non_tensor_positional_args = True
        # Every size is known: build now, so weights load without a call.
        self.seq2seq.build()
        self.built = True

    def generate_ids(self, inputs):
        """Strings `(batch_size,)` to generated ids
        `(batch_size, max_length)`, 0 after the end token."""
        ids = self.source_tokenizer(inputs)  # (B, S)
        # Drop the columns that are padding in every row: less work.
        lengths = tf.reduce_sum(tf.cast(ids != 0, tf.int32), axis=1)
        ids = ids[:, : tf.maximum(tf.reduce_max(lengths), 1)]
        return self.seq2seq.generate(
            ids,
            max_length=self.max_length,
            start_id=self.target_tokenizer.start_id,
            end_id=self.target_tokenizer.end_id,
            method=self.method,
            beam_width=self.beam_width,
            length_penalty=self.length_penalty,
            no_repeat_ngram_size=self.no_repeat_ngram_size,
        )

    def detokenize(self, ids):
        """Generated ids `(batch_size, length)` to strings `(batch_size,)`."""
        strings = self.target_tokenizer.detokenize(ids)
        return tidy_spacing(strings) if self.tidy else strings

    def call(self, inputs):
        return self.detokenize(self.generate_ids(inputs))

    def compute_output_spec(self, inputs):
        return keras.KerasTensor((inputs.shape[0],), dtype="string")

    def get_config(self):
        serialize = keras.saving.serialize_keras_object
        return {
            **super().get_config(),
            "source_tokenizer": serialize(self.source_tokenizer),
            "target_tokenizer": serialize(self.target_tokenizer),
            "seq2seq": serialize(self.seq2seq),
            "max_length": self.max_length,
            "method": self.method,
            "beam_width": self.beam_width,
            "length_penalty": self.length_penalty,
            "tidy": self.tidy,
            "no_repeat_ngram_size": self.no_repeat_ngram_size,
        }


def make_seq2seq_dataset(
    sources,
    targets,
    source_tokenizer,
    target_tokenizer,
    batch_size,
    shuffle=False,
    seed=None,
    trim=True,
):
    """A teacher-forcing `tf.data` pipeline for `Seq2SeqTransformer.fit`.

    Each batch is `({"encoder_ids": (B, S), "decoder_ids": (B, T)},
    labels (B, T))`: the target is tokenized with start and end tokens, the
    decoder reads `tokens[:, :-1]` and learns to predict `tokens[:, 1:]`.
    Padding is 0 everywhere, so train with
    `SparseCategoricalCrossentropy(from_logits=True, ignore_class=0)`.

    Args:
        sources: list of str (or a string tensor), the source texts.
        targets: list of str, one target per source.
        source_tokenizer: a tokenizer layer (`WordPieceTokenizer`,
            `SentencePieceTokenizer`) with a `sequence_length`.
        target_tokenizer: a tokenizer layer with `add_start_token` and
            `add_end_token`; its `sequence_length` is the model's
            `target_length + 1`.
        batch_size: int.
        shuffle: bool, shuffle the pairs (all of them) every epoch.
            Defaults to `False`.
        seed: int or `None`, the shuffle seed. Defaults to `None`.
        trim: bool, drop the columns that are padding in every row of a
            batch (shorter batches train faster). Defaults to `True`.

    Returns:
        A batched, prefetched `tf.data.Dataset`.

    Example:

    >>> from keras_selfattn.models.text_generator import make_seq2seq_dataset
    >>> from keras_selfattn.text import WordPieceTokenizer
    >>> vocab = ["[PAD]", "[UNK]", "[START]", "[END]", "a", "b", "x", "y"]
    >>> source = WordPieceTokenizer(vocab, sequence_length=5)
    >>> target = WordPieceTokenizer(vocab, sequence_length=6,
    ...                             add_start_token=True, add_end_token=True)
    >>> ds = make_seq2seq_dataset(["a b", "b"], ["x y", "y"], source, target,
    ...                           batch_size=2, trim=False)
    >>> inputs, labels = next(iter(ds))
    >>> inputs["encoder_ids"].numpy().tolist()
    [[4, 5, 0, 0, 0], [5, 0, 0, 0, 0]]
    >>> inputs["decoder_ids"].numpy().tolist()
    [[2, 6, 7, 3, 0], [2, 7, 3, 0, 0]]
    >>> labels.numpy().tolist()
    [[6, 7, 3, 0, 0], [7, 3, 0, 0, 0]]
    """
    batch_size = _validation.positive_int("batch_size", batch_size)
    if not (
        target_tokenizer.add_start_token and target_tokenizer.add_end_token
    ):
        raise _validation.invalid(
            "target_tokenizer",
            "a tokenizer with add_start_token=True and add_end_token=True",
            f"add_start_token={target_tokenizer.add_start_token}, "
            f"add_end_token={target_tokenizer.add_end_token}",
        )
    if source_tokenizer.sequence_length is None:
        raise _validation.invalid(
            "source_tokenizer", "a tokenizer with a sequence_length", None
        )
    if target_tokenizer.sequence_length is None:
        raise _validation.invalid(
            "target_tokenizer", "a tokenizer with a sequence_length", None
        )

    # Plain TensorFlow ops, no Python control flow on tensors: AutoGraph
    # conversion is not needed (and it trips over the lazy tensorflow-text
    # import inside the tokenizer).
    @tf.autograph.experimental.do_not_convert
    def to_inputs(source, target):
        encoder_ids = source_tokenizer(source)  # (B, S)
        tokens = target_tokenizer(target)  # (B, T + 1)
        if trim:
            encoder_ids = _trim(encoder_ids)
            tokens = _trim(tokens)
        inputs = {"encoder_ids": encoder_ids, "decoder_ids": tokens[:, :-1]}
        return inputs, tokens[:, 1:]

    ds = tf.data.Dataset.from_tensor_slices(
        (tf.constant(sources, tf.string), tf.constant(targets, tf.string))
    )
    if shuffle:
        count = int(ds.cardinality())
        ds = ds.shuffle(max(count, 1), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size).map(
        to_inputs, num_parallel_calls=tf.data.AUTOTUNE
    )
    options = tf.data.Options()
    # In-memory data: shard by element, not by file, across workers.
    options.experimental_distribute.auto_shard_policy = (
        tf.data.experimental.AutoShardPolicy.DATA
    )
    return ds.with_options(options).prefetch(tf.data.AUTOTUNE)


def _trim(ids):
    """Drop the trailing columns that are padding in every row."""
    lengths = tf.reduce_sum(tf.cast(ids != 0, tf.int32), axis=1)
    keep = tf.maximum(tf.reduce_max(lengths), 1)
    return ids[:, :keep]


def cross_attention_scores(seq2seq, encoder_ids, decoder_ids, block=-1):
    """A decoder block's cross-attention weights for teacher-forced inputs.

    Args:
        seq2seq: a `Seq2SeqTransformer`.
        encoder_ids: int `(batch_size, source_len)`, 0 for padding.
        decoder_ids: int `(batch_size, target_len)`, starting with the start
            token (e.g. the start token then the generated tokens).
        block: int, which decoder block. Defaults to `-1` (the last).

    Returns:
        float `(batch_size, num_heads, target_len, source_len)`: row `t`
        is where the decoder looked when predicting token `t + 1`.

    Example:

    >>> import numpy as np
    >>> from keras_selfattn.models import Seq2SeqTransformer
    >>> from keras_selfattn.models.text_generator import (
    ...     cross_attention_scores)
    >>> model = Seq2SeqTransformer(9, 9, source_length=5, target_length=4,
    ...                            embed_dim=8, num_heads=2, ff_dim=8)
    >>> scores = cross_attention_scores(
    ...     model, np.array([[4, 5, 6, 0]]), np.array([[2, 7, 8]]))
    >>> tuple(scores.shape)
    (1, 2, 3, 4)
    >>> np.allclose(np.asarray(scores).sum(-1), 1.0, atol=1e-5)
    True
    """
    encoder_ids = tf.convert_to_tensor(encoder_ids, tf.int32)
    decoder_ids = tf.convert_to_tensor(decoder_ids, tf.int32)
    blocks = seq2seq.decoder_blocks
    last = range(len(blocks))[block]
    encoded = seq2seq.encode(encoder_ids, training=False)
    encoder_mask = encoder_ids != 0
    mask = decoder_ids != 0
    x = seq2seq.decoder_embedding(decoder_ids)  # (B, T, D)
    for i in range(last + 1):
        x, _, cross = blocks[i](
            x,
            encoded,
            mask=mask,
            encoder_mask=encoder_mask,
            training=False,
            return_attention_scores=True,
        )
    return cross  # (B, H, T, S)
