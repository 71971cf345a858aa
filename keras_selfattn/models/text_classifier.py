"""Raw strings in, class probabilities out: a classifier with its tokenizer.

`TextClassifier` chains a tokenizer (`WordPieceTokenizer` or
`SentencePieceTokenizer`) and a token-id classifier
(`build_text_classifier`) in one `keras.Model` that takes Python lists,
NumPy `str`/`bytes` arrays and string tensors alike, in `__call__` as in
`predict`, `evaluate` and `fit`.

Needs TensorFlow (imported with this module, which `keras_selfattn.models`
loads on first access to `TextClassifier`) and, for the tokenizer,
tensorflow-text.
"""

import keras
import numpy as np
import tensorflow as tf

from keras_selfattn.layers import _validation
from keras_selfattn.models.text_generator import _TOKENIZERS
from keras_selfattn.models.text_generator import _deserialize

_EXPECTED = "a batch of strings of shape (batch_size,)"


def _texts(value, name):
    """`value` as a rank-1 string tensor, or the standard error for `name`.

    Keras' data adapters refuse NumPy unicode/bytes arrays (`Invalid dtype:
    str224`) and take a list as several inputs, so every entry point turns
    its texts into a string tensor first.
    """
    if isinstance(value, (str, bytes)):
        # A lone string would be a rank-0 batch: refuse it by name.
        raise _validation.invalid(
            name, f"{_EXPECTED} (a list of str, not a single str)", value
        )
    try:
        strings = tf.convert_to_tensor(value, dtype=tf.string)
    except (TypeError, ValueError) as error:
        # Numbers, None, ragged nesting: not strings, whatever TF raised.
        raise _validation.invalid(
            name, _EXPECTED, _describe(value), error=TypeError
        ) from error
    if strings.shape.rank != 1:
        raise ValueError(
            f"Received an invalid value for argument `{name}`, expected "
            f"{_EXPECTED}. Received: {name}.shape={strings.shape}"
        )
    return strings


def _describe(value):
    """A short description of what was received instead of texts."""
    if hasattr(value, "dtype"):
        return f"dtype={value.dtype}"
    if isinstance(value, (list, tuple)):
        kinds = ", ".join(sorted({type(v).__name__ for v in value}))
        return f"{type(value).__name__} of {kinds}"
    return type(value).__name__


def _is_texts(value):
    """Whether a `fit`/`predict` argument is texts we convert (not a
    dataset, a generator or a dict, which go to Keras as they are)."""
    return isinstance(value, (str, bytes, list, tuple, np.ndarray, tf.Tensor))


@keras.saving.register_keras_serializable(package="keras_selfattn")
class TextClassifier(keras.Model):
    """Raw strings `(batch_size,)` to class probabilities, in one model.

    Computes `classifier(tokenizer(texts))`: tokenization runs inside the
    TensorFlow graph, so a `.keras` file holds the vocabulary and the
    weights, and reloads with no `custom_objects` once `keras_selfattn` is
    imported. Unlike a functional model on `keras.Input(dtype="string")`,
    it accepts a Python list or tuple of `str`/`bytes`, a NumPy
    `str_`/`bytes_`/`object` array or a string tensor, in `__call__`,
    `predict`, `predict_on_batch`, `evaluate` and `fit` alike. A single
    string or a batch of rank other than 1 is refused with a `ValueError`,
    items that are not strings with a `TypeError`, both naming the
    argument. `predict_labels` returns the name of the most probable class.

    Args:
        tokenizer: `WordPieceTokenizer` or `SentencePieceTokenizer` (or
            its serialized config), the one the classifier was trained with.
        classifier: `keras.Model` (or its serialized config) from int token
            ids `(batch_size, seq_len)` to probabilities
            `(batch_size, num_classes)`, e.g. `build_text_classifier`.
        label_names: list of str, one name per class. Defaults to the class
            ids as strings (`["0", "1", ...]`).
        **kwargs: base `keras.Model` arguments (`name`, ...).

    Call arguments:
        inputs: texts of shape `(batch_size,)`: a list of str, a NumPy
            array or a string tensor.
        training: bool, dropout on or off. Defaults to `None`.

    Returns:
        float32 tensor of shape `(batch_size, num_classes)`.

    Example:

    >>> import numpy as np
    >>> from keras_selfattn.models import TextClassifier
    >>> from keras_selfattn.models import build_text_classifier
    >>> from keras_selfattn.text import WordPieceTokenizer
    >>> vocab = ["[PAD]", "[UNK]", "[START]", "[END]", "a", "good", "bad",
    ...          "movie"]
    >>> tokenizer = WordPieceTokenizer(vocab, sequence_length=6)
    >>> classifier = build_text_classifier(8, 6, num_classes=2, embed_dim=8,
    ...                                    num_heads=2, ff_dim=8)
    >>> model = TextClassifier(tokenizer, classifier, ["neg", "pos"])
    >>> model.predict(["a good movie", "bad"], verbose=0).shape
    (2, 2)
    >>> tuple(model(np.array(["a movie", "good", ""])).shape)
    (3, 2)
    >>> labels = model.predict_labels(np.array(["a bad movie"]))
    >>> len(labels), labels[0] in ("neg", "pos")
    (1, True)
    """

    def __init__(self, tokenizer, classifier, label_names=None, **kwargs):
        tokenizer = _deserialize(tokenizer, _TOKENIZERS, "tokenizer")
        classifier = _deserialize(classifier, keras.Model, "classifier")
        ids = keras.KerasTensor((None, tokenizer.sequence_length), "int32")
        output = classifier.compute_output_spec(ids)
        if not isinstance(output, keras.KerasTensor) or len(output.shape) != 2:
            raise _validation.invalid(
                "classifier",
                "a model with one output of shape (batch_size, num_classes)",
                keras.tree.map_structure(lambda t: t.shape, output),
            )
        num_classes = output.shape[-1]
        if label_names is None:
            label_names = [str(i) for i in range(num_classes)]
        if not isinstance(label_names, (list, tuple)) or not all(
            isinstance(n, str) for n in label_names
        ):
            raise _validation.invalid(
                "label_names", "a list of str", label_names, error=TypeError
            )
        if len(label_names) != num_classes:
            raise _validation.invalid(
                "label_names",
                f"{num_classes} names (one per class)",
                list(label_names),
            )
        super().__init__(**kwargs)
        self.tokenizer = tokenizer
        self.classifier = classifier
        self.label_names = list(label_names)
        self._output_dtype = output.dtype
        # String inputs: no XLA, no float conversion of the inputs, and a
        # Python list reaches `call` as one argument.
        self.supports_jit = False
        self._convert_input_args = False
        self._allow_non_tensor_positional_args = True
        # Both parts are built: weights load without a first call.
        self.built = True

    @property
    def num_classes(self):
        return len(self.label_names)

    def call(self, inputs, training=None):
        ids = self.tokenizer(_texts(inputs, "inputs"))  # (B, S)
        return self.classifier(ids, training=training)  # (B, C)

    def compute_output_spec(self, inputs, training=None):
        if len(inputs.shape) != 1:
            raise ValueError(
                "Received an invalid value for argument `inputs`, expected "
                f"{_EXPECTED}. Received: inputs.shape={inputs.shape}"
            )
        return keras.KerasTensor(
            (inputs.shape[0], self.num_classes), dtype=self._output_dtype
        )

    def predict(self, x, *args, **kwargs):
        if _is_texts(x):
            x = _texts(x, "x")
        return super().predict(x, *args, **kwargs)

    def predict_on_batch(self, x):
        return super().predict_on_batch(_texts(x, "x"))

    def evaluate(self, x=None, y=None, *args, **kwargs):
        if _is_texts(x):
            x = _texts(x, "x")
        return super().evaluate(x, y, *args, **kwargs)

    def test_on_batch(self, x, y=None, *args, **kwargs):
        return super().test_on_batch(_texts(x, "x"), y, *args, **kwargs)

    def fit(self, x=None, y=None, *args, validation_data=None, **kwargs):
        if _is_texts(x):
            x = _texts(x, "x")
        if isinstance(validation_data, (list, tuple)) and validation_data:
            texts, *rest = validation_data
            if _is_texts(texts):
                texts = _texts(texts, "validation_data")
            validation_data = (texts, *rest)
        return super().fit(
            x, y, *args, validation_data=validation_data, **kwargs
        )

    def train_on_batch(self, x, y=None, *args, **kwargs):
        return super().train_on_batch(_texts(x, "x"), y, *args, **kwargs)

    def predict_labels(self, texts, batch_size=None):
        """The name of the most probable class of each text.

        Args:
            texts: texts of shape `(batch_size,)`, as for `predict`.
            batch_size: int or `None`, as for `predict`. Defaults to `None`
                (32).

        Returns:
            A list of str, one label name per text.
        """
        texts = _texts(texts, "texts")
        if texts.shape[0] == 0:
            return []  # Keras' `predict` fails on an empty input.
        probabilities = self.predict(texts, batch_size=batch_size, verbose=0)
        return [self.label_names[i] for i in np.argmax(probabilities, -1)]

    def export(self, filepath, format="tf_saved_model", **kwargs):
        # A subclassed model has no `keras.Input` to infer a signature from:
        # default to raw strings `(batch_size,)`.
        if format == "tf_saved_model" and kwargs.get("input_signature") is None:
            kwargs["input_signature"] = [
                tf.TensorSpec((None,), tf.string, name="text")
            ]
        return super().export(filepath, format=format, **kwargs)

    def get_config(self):
        serialize = keras.saving.serialize_keras_object
        return {
            **super().get_config(),
            "tokenizer": serialize(self.tokenizer),
            "classifier": serialize(self.classifier),
            "label_names": list(self.label_names),
        }
