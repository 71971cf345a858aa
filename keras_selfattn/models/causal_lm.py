"""A decoder-only (GPT-style) language model with cached generation."""

import inspect
import json

import keras
from keras import ops

from keras_selfattn.layers import _layer_norm
from keras_selfattn.layers import _masking
from keras_selfattn.layers import _validation
from keras_selfattn.layers.positional_encoding import sinusoids
from keras_selfattn.layers.transformer_block import TransformerBlock
from keras_selfattn.models import samplers as samplers_lib

# Positions added to the token embeddings, and those inside attention.
ABSOLUTE_POSITIONS = ("learned", "sinusoidal")
POSITIONS = (*ABSOLUTE_POSITIONS, "rotary", "alibi", "relative", None)
# Block options the model sets itself (or takes as its own arguments).
_OWN_BLOCK_ARGS = (
    "num_heads",
    "ff_dim",
    "causal",
    "position_embedding",
    "dropout",
    "name",
    "dtype",
    "trainable",
)
# The model's block defaults that differ from `TransformerBlock`'s: a
# GPT-2-style pre-norm stack (with a final norm).
_BLOCK_DEFAULTS = {"norm_first": True}


def _block_option_names():
    parameters = inspect.signature(TransformerBlock.__init__).parameters
    return sorted(
        name
        for name, parameter in parameters.items()
        if name != "self"
        and parameter.kind is not inspect.Parameter.VAR_KEYWORD
        and name not in _OWN_BLOCK_ARGS
    )


def positions_from_mask(mask):
    """Per-row positions of the real tokens: `0, 1, ...` counted over the
    `True` entries of `mask` `(B, T)`, so a left-padded row numbers its
    tokens as it would alone (padded entries get the position of the next
    real token, clipped at 0)."""
    counts = ops.cumsum(ops.cast(mask, "int32"), axis=1)  # (B, T)
    return ops.maximum(counts - 1, 0)


def left_align(token_ids, mask, pad_id):
    """Move each row's real tokens (`mask` `True`) to the right end, in
    order, with `pad_id` before them: right- (or any-) padded prompts
    become left-padded. Returns `(token_ids, mask)`."""
    length = ops.shape(token_ids)[1]
    steps = ops.arange(length, dtype="int32")[None, :]  # (1, T)
    # Padded entries sort first, then the real tokens in their order.
    keys = ops.where(mask, steps + length, steps)  # (B, T)
    order = ops.argsort(keys, axis=-1)
    mask = ops.take_along_axis(mask, order, axis=1)
    token_ids = ops.take_along_axis(token_ids, order, axis=1)
    return ops.where(mask, token_ids, pad_id), mask


def next_token_batch(token_ids, pad_id=0):
    """Inputs, targets and weights for next-token prediction.

    Position `t` of `inputs` predicts `targets[t] = token_ids[t + 1]`.
    Positions whose target is padding (or whose input is) are masked: their
    input becomes `pad_id` too, so the model's padding mask (which its
    logits carry into the loss) covers exactly the real targets, and the
    mean loss is the mean over real target tokens. A causal model's earlier
    positions never see the later ones, so masking them changes no other
    prediction.

    Args:
        token_ids: int `(batch_size, seq_len)`, padded with `pad_id` (on
            either side); a tensor, a NumPy array, or a `tf.data` element
            with the TensorFlow backend.
        pad_id: int, the padding id. Defaults to `0`.

    Returns:
        `(inputs, targets, sample_weight)`: int32 `(batch_size,
        seq_len - 1)` twice and float32 `(batch_size, seq_len - 1)` (1 for
        a real target, 0 elsewhere), ready for `model.fit(dataset)` (a
        tuple `(x, y, sample_weight)`).

    Example:

    >>> import numpy as np
    >>> from keras import ops
    >>> from keras_selfattn.models import next_token_batch
    >>> x, y, w = next_token_batch(np.array([[5, 6, 7, 0, 0]]))
    >>> ops.convert_to_numpy(x).tolist(), ops.convert_to_numpy(y).tolist()
    ([[5, 6, 0, 0]], [[6, 7, 0, 0]])
    >>> ops.convert_to_numpy(w).tolist()
    [[1.0, 1.0, 0.0, 0.0]]
    """
    pad_id = _validation.non_negative_int("pad_id", pad_id)
    token_ids = ops.cast(token_ids, "int32")
    inputs, targets = token_ids[:, :-1], token_ids[:, 1:]
    real = ops.logical_and(
        ops.not_equal(targets, pad_id), ops.not_equal(inputs, pad_id)
    )
    inputs = ops.where(real, inputs, pad_id)
    return inputs, targets, ops.cast(real, "float32")


@keras.saving.register_keras_serializable(package="keras_selfattn")
class CausalLM(keras.Model):
    """A decoder-only Transformer language model (GPT-style).

    Token ids are embedded (plus absolute positions, if any), run through
    `num_layers` causal `TransformerBlock`s (pre-norm by default, then a
    final normalization) and projected to next-token logits, with the
    token embedding's transpose (`tie_embeddings`) or a separate matrix:
    `logits[b, t] = h[b, t] E^T`, the scores of the token at `t + 1`.

    Positions: `"learned"` (a trainable `(max_length, hidden_dim)` table)
    or `"sinusoidal"` are added to the embeddings; `"rotary"`, `"alibi"`
    and `"relative"` live inside the attention (the blocks'
    `position_embedding`); `None` uses none (the causal mask alone).
    Absolute positions are counted per row over the real tokens, so a
    left-padded row is numbered as it would be alone.

    `generate` prefills the prompts in one call, then decodes inside a
    graph loop with a key/value cache in every block (each new token costs
    `O(length)`), with any sampler of `keras_selfattn.models.samplers`.

    Args:
        vocab_size: int, the vocabulary size.
        num_layers: int, the number of blocks.
        hidden_dim: int, the model width.
        num_heads: int, attention heads per block.
        ff_dim: int, the feed-forward width.
        max_length: int or `None`, the most positions; required for
            `position_embedding="learned"` (the table's rows), a limit for
            `"sinusoidal"`, unused otherwise. Defaults to `None`.
        position_embedding: str or `None`, one of `"learned"`,
            `"sinusoidal"`, `"rotary"`, `"alibi"`, `"relative"` or `None`.
            Defaults to `"rotary"`.
        dropout: float in [0, 1), on the embeddings and in every block.
            Defaults to `0.1`.
        tie_embeddings: bool, project to logits with the transposed token
            embedding (`True`) or a separate `(hidden_dim, vocab_size)`
            matrix. Defaults to `True`.
        pad_id: int, the padding id: inputs equal to it are masked (unless
            a `padding_mask` is given). Defaults to `0`.
        embeddings_initializer: initializer of the token (and learned
            position) embeddings. Defaults to `"uniform"`, Keras'
            `Embedding` default.
        block_options: dict or `None`, more `TransformerBlock` arguments
            for every block (`norm_first`, `normalization`, `use_bias`,
            `num_key_value_heads`, `gated_feedforward`, `qk_norm`,
            `logit_soft_cap`, `activation`, `window`, `attention_dropout`,
            `rotary_max_wavelength`, ...). Defaults to `None`: the
            `TransformerBlock` defaults, except `norm_first=True`. The
            final normalization follows the blocks' `normalization`,
            `layer_norm_epsilon` and `use_bias`; post-norm blocks
            (`norm_first=False`) get none.
        **kwargs: base `keras.Model` arguments (`name`, ...).

    Call arguments:
        token_ids: int `(batch_size, seq_len)`, or a dict with
            `"token_ids"` and optionally `"padding_mask"`.
        padding_mask: optional bool `(batch_size, seq_len)`, `True` for
            real tokens. Defaults to `token_ids != pad_id`.
        training: bool, whether dropout is active.

    Returns:
        float32 logits `(batch_size, seq_len, vocab_size)`, carrying the
        padding mask (so a Keras loss averages over real positions only).

    Masking:
        Padded positions are masked in every block's attention (a real
        token never sees one) and output zeros before the final norm; the
        logits carry the padding mask. Train with `next_token_batch`, which
        masks the positions whose target is padding.

    Example:

    >>> import numpy as np
    >>> import keras
    >>> from keras_selfattn.models import CausalLM, next_token_batch
    >>> model = CausalLM(vocab_size=20, num_layers=2, hidden_dim=16,
    ...                  num_heads=2, ff_dim=32)
    >>> ids = np.array([[1, 5, 6, 7, 8, 2], [1, 9, 10, 2, 0, 0]])
    >>> tuple(model(ids).shape)
    (2, 6, 20)
    >>> x, y, w = next_token_batch(ids)
    >>> model.compile(
    ...     optimizer="adam",
    ...     loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    ... )
    >>> history = model.fit(x, y, sample_weight=w, epochs=1, verbose=0)
    >>> # Prompts of different lengths, padded (either side) with pad_id:
    >>> out = model.generate(np.array([[1, 5, 6], [1, 9, 0]]),
    ...                      max_new_tokens=4, stop_token_ids=2)
    >>> tuple(out.shape)
    (2, 4)

    References:
        - [Radford et al., 2019, GPT-2](https://openai.com/research/better-language-models)
        - [Su et al., 2021, RoFormer](https://arxiv.org/abs/2104.09864)
    """

    def __init__(
        self,
        vocab_size,
        num_layers,
        hidden_dim,
        num_heads,
        ff_dim,
        max_length=None,
        position_embedding="rotary",
        dropout=0.1,
        tie_embeddings=True,
        pad_id=0,
        embeddings_initializer="uniform",
        block_options=None,
        **kwargs,
    ):
        positive = _validation.positive_int
        vocab_size = positive("vocab_size", vocab_size)
        num_layers = positive("num_layers", num_layers)
        hidden_dim = positive("hidden_dim", hidden_dim)
        num_heads = positive("num_heads", num_heads)
        ff_dim = positive("ff_dim", ff_dim)
        max_length = positive("max_length", max_length, allow_none=True)
        position_embedding = _validation.one_of(
            "position_embedding", position_embedding, POSITIONS
        )
        if position_embedding == "learned" and max_length is None:
            raise _validation.invalid(
                "max_length",
                "a positive integer with position_embedding='learned' (the "
                "rows of the position table)",
                max_length,
            )
        dropout = _validation.rate("dropout", dropout)
        tie_embeddings = _validation.boolean("tie_embeddings", tie_embeddings)
        pad_id = _validation.non_negative_int("pad_id", pad_id)
        if pad_id >= vocab_size:
            raise _validation.invalid(
                "pad_id", f"an id below vocab_size={vocab_size}", pad_id
            )
        block_options = _check_block_options(block_options)
        super().__init__(**kwargs)
        self.vocab_size = vocab_size
        self.num_layers = num_layers
        self.hidden_dim = hidden_dim
        self.num_heads = num_heads
        self.ff_dim = ff_dim
        self.max_length = max_length
        self.position_embedding = position_embedding
        self.dropout = dropout
        self.tie_embeddings = tie_embeddings
        self.pad_id = pad_id
        self.embeddings_initializer = keras.initializers.get(
            embeddings_initializer
        )
        self.block_options = block_options

        self.token_embedding = keras.layers.Embedding(
            vocab_size,
            hidden_dim,
            embeddings_initializer=self.embeddings_initializer,
            name="token_embedding",
        )
        if position_embedding == "learned":
            self.learned_positions = keras.layers.Embedding(
                max_length,
                hidden_dim,
                embeddings_initializer=keras.initializers.get(
                    keras.initializers.serialize(self.embeddings_initializer)
                ),
                name="position_embedding",
            )
        self.embedding_dropout = keras.layers.Dropout(
            dropout, name="embedding_dropout"
        )
        inside = (
            None
            if position_embedding in ABSOLUTE_POSITIONS
            else (position_embedding)
        )
        # Each block's arguments are checked by the block itself.
        self.blocks = [
            TransformerBlock(
                num_heads=num_heads,
                ff_dim=ff_dim,
                dropout=dropout,
                causal=True,
                position_embedding=inside,
                **{**_BLOCK_DEFAULTS, **block_options},
                name=f"block_{i}",
            )
            for i in range(num_layers)
        ]
        first = self.blocks[0]
        if first.norm_first:
            # Pre-norm blocks leave the residual stream unnormalized.
            if first.normalization == "rms":
                self.final_norm = _layer_norm.RMSNormalization(
                    epsilon=first.layer_norm_epsilon, name="final_norm"
                )
            else:
                self.final_norm = _layer_norm.LayerNormalization(
                    epsilon=first.layer_norm_epsilon,
                    center=first.use_bias,
                    name="final_norm",
                )
        if not tie_embeddings:
            # float32 logits: a stable softmax and loss under mixed
            # precision.
            self.output_projection = keras.layers.Dense(
                vocab_size, use_bias=False, dtype="float32", name="logits"
            )
        # Every size is known: the weights exist from construction (a
        # model can be saved, or quantized, before its first call).
        self.build()

    def build(self, input_shape=None):
        # Every size is known from the arguments: no input shape needed.
        if self.built:
            return
        hidden = (None, None, self.hidden_dim)
        self.token_embedding.build((None, None))
        if self.position_embedding == "learned":
            self.learned_positions.build((None, None))
        for block in self.blocks:
            block.build(hidden)
        if hasattr(self, "final_norm"):
            self.final_norm.build(hidden)
        if not self.tie_embeddings:
            self.output_projection.build(hidden)
        self.built = True

    def call(self, token_ids, padding_mask=None, training=None):
        hidden, mask = self._hidden(token_ids, padding_mask, training)
        logits = self._logits(hidden)
        _masking.set_keras_mask(logits, mask)
        return logits

    def hidden_states(self, token_ids, padding_mask=None, training=None):
        """The last hidden states: what `call` projects to logits.

        The features a downstream model starts from (see
        `build_classifier_from_lm`): the output of the last block after
        the final normalization. Causal, as in `call`: position `t` sees
        the tokens up to `t` only.

        Args:
            token_ids: int `(batch_size, seq_len)`, or a dict with
                `"token_ids"` and optionally `"padding_mask"`.
            padding_mask: optional bool `(batch_size, seq_len)`, `True`
                for real tokens. Defaults to `token_ids != pad_id`.
            training: bool, whether dropout is active. Defaults to `None`.

        Returns:
            `(batch_size, seq_len, hidden_dim)` in the model's compute
            dtype, carrying the padding mask as its Keras mask.
        """
        hidden, mask = self._hidden(token_ids, padding_mask, training)
        _masking.set_keras_mask(hidden, mask)
        return hidden

    def _hidden(self, token_ids, padding_mask, training):
        """The final-normed hidden states `(B, T, hidden_dim)` of a whole
        sequence (no cache) and its padding mask `(B, T)`."""
        if isinstance(token_ids, dict):
            padding_mask = token_ids.get("padding_mask", padding_mask)
            token_ids = token_ids["token_ids"]
        token_ids = ops.cast(token_ids, "int32")
        mask = self._padding_mask(token_ids, padding_mask)
        positions = positions_from_mask(mask)
        hidden, _ = self._forward(token_ids, mask, positions, training=training)
        return hidden, mask

    def compute_output_spec(self, token_ids, padding_mask=None, training=None):
        if isinstance(token_ids, dict):
            token_ids = token_ids["token_ids"]
        return keras.KerasTensor(
            (*token_ids.shape, self.vocab_size), dtype="float32"
        )

    def _padding_mask(self, token_ids, padding_mask):
        if padding_mask is None:
            return ops.not_equal(token_ids, self.pad_id)
        return _masking.check_padding_mask(
            "padding_mask", ops.cast(padding_mask, "bool"), token_ids
        )

    def _embed(self, token_ids, positions, training):
        """Token (and absolute position) embeddings `(B, T, hidden_dim)`."""
        x = self.token_embedding(token_ids)  # (B, T, D)
        if self.position_embedding == "learned":
            x = x + self.learned_positions(positions)
        elif self.position_embedding == "sinusoidal":
            x = x + ops.cast(sinusoids(positions, self.hidden_dim), x.dtype)
        return self.embedding_dropout(x, training=training)

    def _forward(
        self, token_ids, mask, positions, caches=None, index=None, training=None
    ):
        """The one forward path of `call`, prefill and decoding steps:
        hidden states `(B, T, hidden_dim)` after the final norm, and the
        new caches (`[]` without caches)."""
        x = self._embed(token_ids, positions, training)
        new_caches = []
        for i, block in enumerate(self.blocks):
            if caches is None:
                x = block(x, mask=mask, training=training)
            else:
                x, cache = block(
                    x,
                    mask=mask,
                    training=training,
                    cache=caches[i],
                    cache_update_index=index,
                )
                new_caches.append(cache)
        if hasattr(self, "final_norm"):
            x = self.final_norm(x)
        return x, new_caches

    def _logits(self, hidden):
        """float32 next-token logits from hidden states."""
        if self.tie_embeddings:
            table = ops.convert_to_tensor(self.token_embedding.embeddings)
            return ops.matmul(
                ops.cast(hidden, "float32"),
                ops.transpose(ops.cast(table, "float32")),
            )  # (B, T, V)
        # A tensor without the Keras mask: the projection needs none.
        return self.output_projection(ops.copy(hidden))  # (B, T, V)

    def init_cache(self, batch_size, max_length):
        """Empty key/value caches, one per block (see
        `TransformerBlock.init_cache`), for `call_with_cache`.

        Args:
            batch_size: int or scalar int tensor.
            max_length: int, the most positions a cache holds.

        Returns:
            A list of `num_layers` cache dicts.
        """
        self.build()
        return [
            block.init_cache(batch_size, max_length) for block in self.blocks
        ]

    def call_with_cache(
        self,
        token_ids,
        cache,
        cache_update_index,
        padding_mask=None,
        positions=None,
    ):
        """Run `token_ids` at cache positions `cache_update_index ...`.

        The building block of custom decoding loops: the tokens attend over
        everything the cache holds and themselves, and their keys and
        values are written into it. Equal to the rows of `call` on the
        whole sequence.

        Args:
            token_ids: int `(batch_size, seq_len)`.
            cache: from `init_cache` (or a previous call).
            cache_update_index: int or scalar int tensor, the cache slot
                of the first token.
            padding_mask: optional bool `(batch_size, seq_len)`. Defaults
                to `token_ids != pad_id`.
            positions: optional int `(batch_size, seq_len)`, the absolute
                positions (for `"learned"` or `"sinusoidal"`). Defaults to
                the cache slots, `cache_update_index + arange(seq_len)`.

        Returns:
            `(logits, new_cache)`: float32 `(batch_size, seq_len,
            vocab_size)` and the updated caches.
        """
        self.build()
        token_ids = ops.cast(token_ids, "int32")
        mask = self._padding_mask(token_ids, padding_mask)
        if positions is None:
            steps = ops.arange(ops.shape(token_ids)[1], dtype="int32")
            positions = ops.cast(cache_update_index, "int32") + steps[None]
        hidden, cache = self._forward(
            token_ids, mask, positions, cache, cache_update_index, False
        )
        return self._logits(hidden), cache

    def generate(
        self,
        prompt_ids,
        max_new_tokens,
        sampler="greedy",
        stop_token_ids=None,
        seed=None,
        padding_mask=None,
        jit_compile=True,
    ):
        """Continue prompts, inside the graph, with a key/value cache.

        The prompts are left-aligned (padding first, whatever side it was
        on), prefilled in one call, and then decoded token by token by the
        sampler's graph loop: each step runs every block on one token
        against the cache. Each row is numbered from its first real token,
        so a prompt padded in a batch generates what it would alone (with
        greedy decoding, the same tokens; with rotary positions, up to
        float32 rounding, as rotations at shifted positions are equal in
        exact arithmetic only). It runs eagerly, inside `tf.function` and
        under `jax.jit`.

        Called eagerly on TensorFlow, it runs one compiled function per
        sampler configuration, `max_new_tokens`, stop ids and prompt shape
        (kept with the model, as KerasHub's `generate` does), through XLA
        with `jit_compile=True`: on 2 CPU cores XLA decodes a batch of one
        about 2x faster than a plain graph (`benchmarks/generation_speed.py`),
        each new shape costs a compilation of a few seconds. Inside a
        traced function (`tf.function`, an export) it is part of that
        graph, which `jit_compile` does not change.

        Args:
            prompt_ids: int `(batch_size, prompt_len)`, padded with
                `pad_id` on either side. Each prompt needs one real token
                at least (start it with a start-of-text id if you have
                one); an empty one starts from `pad_id`.
            max_new_tokens: int >= 1, the most tokens to generate.
            sampler: a `Sampler` or a name (`"greedy"`, `"random"`,
                `"top_k"`, `"top_p"`, `"beam"`) or config. Defaults to
                `"greedy"`.
            stop_token_ids: `None`, an int or a sequence of ints: a row
                ends after one of them. Defaults to `None`.
            seed: int or scalar int tensor, for the random samplers: the
                same seed gives the same tokens. Defaults to `None`.
            padding_mask: optional bool `(batch_size, prompt_len)`,
                `True` for real tokens. Defaults to `prompt_ids != pad_id`.
            jit_compile: bool, compile an eager TensorFlow call with XLA
                (`False`: a plain `tf.function`). Defaults to `True`.

        Returns:
            int32 `(batch_size, max_new_tokens)`: the new tokens, the stop
            token included, `pad_id` after it.
        """
        if not isinstance(jit_compile, bool):
            raise _validation.invalid(
                "jit_compile", "True or False", jit_compile, error=TypeError
            )
        sampler = samplers_lib.get(sampler)
        max_new_tokens = _validation.positive_int(
            "max_new_tokens", max_new_tokens
        )
        stop = samplers_lib.check_stop_token_ids(stop_token_ids)
        for value in stop:
            if value >= self.vocab_size:
                raise _validation.invalid(
                    "stop_token_ids",
                    f"ids below vocab_size={self.vocab_size}",
                    stop_token_ids,
                )
        self.build()
        prompt_ids = ops.convert_to_tensor(prompt_ids, dtype="int32")
        if len(prompt_ids.shape) != 2 or prompt_ids.shape[1] == 0:
            raise _validation.invalid(
                "prompt_ids",
                "an int tensor of shape (batch_size, prompt_len) with "
                "prompt_len >= 1",
                f"<tensor of shape {tuple(prompt_ids.shape)}>",
            )
        prompt_len = prompt_ids.shape[1]
        if prompt_len is None:
            # The caches' size must be static (a `tf.function` signature
            # of shape (None, None) leaves it unknown): pad the prompts to
            # a fixed length instead.
            raise _validation.invalid(
                "prompt_ids",
                "a tensor with a static prompt_len (pad prompts to a fixed "
                "length; any amount of padding gives the same tokens)",
                f"<tensor of shape {tuple(prompt_ids.shape)}>",
            )
        if (
            self.position_embedding == "learned"
            and prompt_len + max_new_tokens - 1 > self.max_length
        ):
            raise _validation.invalid(
                "max_new_tokens",
                f"at most max_length - prompt_len + 1 = "
                f"{self.max_length - prompt_len + 1} (the learned position "
                f"table has max_length={self.max_length} rows)",
                max_new_tokens,
            )
        mask = self._padding_mask(prompt_ids, padding_mask)
        compiled = self._compiled_generate(
            sampler, max_new_tokens, stop, jit_compile
        )
        if compiled is not None:
            if seed is None:
                # Drawn here, not in the compiled function: Keras' global
                # seed generator (`keras.utils.set_random_seed`) is eager.
                seed = (
                    keras.random.randint((), 0, 2**31 - 1, dtype="int32")
                    if sampler.stochastic
                    else 0
                )
            seed = samplers_lib.check_seed(seed)
            return compiled(prompt_ids, mask, ops.cast(seed, "int32"))
        return self._generate(
            prompt_ids, mask, max_new_tokens, sampler, stop, seed
        )

    def _compiled_generate(self, sampler, max_new_tokens, stop, jit_compile):
        """The cached `tf.function` for an eager TensorFlow call of
        `generate` with these settings, or `None` (another backend, inside
        a trace, or a sampler whose options are tensors)."""
        if keras.backend.backend() != "tensorflow":
            return None
        import tensorflow as tf

        if not tf.executing_eagerly():
            return None
        try:
            config = json.dumps(sampler.get_config(), sort_keys=True)
        except (TypeError, ValueError):  # tensor options: no stable key
            return None
        key = (
            type(sampler).__name__,
            config,
            max_new_tokens,
            tuple(stop),
            jit_compile,
        )
        # Kept off Keras' and TensorFlow's attribute tracking (set through
        # `object.__setattr__`), so that exports and checkpoints of the
        # model never see these functions.
        functions = self.__dict__.get("_generate_functions")
        if functions is None:
            functions = {}
            object.__setattr__(self, "_generate_functions", functions)
        if key not in functions:

            def run(prompt_ids, mask, seed):
                return self._generate(
                    prompt_ids, mask, max_new_tokens, sampler, stop, seed
                )

            functions[key] = tf.function(run, jit_compile=jit_compile)
        return functions[key]

    def _generate(self, prompt_ids, mask, max_new_tokens, sampler, stop, seed):
        """`generate` after its checks: `mask` is the prompts' padding."""
        prompt_len = prompt_ids.shape[1]
        prompt_ids, mask = left_align(prompt_ids, mask, self.pad_id)
        shape = ops.shape(prompt_ids)
        batch_size, length = shape[0], shape[1]
        # Padding before each row's first token; an empty row keeps its
        # last entry (pad_id) as its one token.
        pad_count = ops.minimum(
            length - ops.sum(ops.cast(mask, "int32"), axis=1), length - 1
        )  # (B,)
        caches = self.init_cache(batch_size, prompt_len + max_new_tokens)
        # The prefill: the whole prompt in one call (its logits unused: the
        # sampler feeds the last prompt token again, rewriting its slot).
        _, caches = self._forward(
            prompt_ids, mask, positions_from_mask(mask), caches, 0, False
        )

        def step_fn(tokens, index, state):
            caches, pad_count = state
            positions = (index - pad_count)[:, None]  # (B, 1)
            hidden, caches = self._forward(
                tokens, None, positions, caches, index, False
            )
            return self._logits(hidden)[:, 0, :], (caches, pad_count)

        return sampler(
            step_fn,
            (caches, pad_count),
            prompt_ids,
            max_new_tokens,
            stop_token_ids=stop,
            pad_id=self.pad_id,
            prompt_mask=mask,
            seed=seed,
        )

    def get_config(self):
        return {
            **super().get_config(),
            "vocab_size": self.vocab_size,
            "num_layers": self.num_layers,
            "hidden_dim": self.hidden_dim,
            "num_heads": self.num_heads,
            "ff_dim": self.ff_dim,
            "max_length": self.max_length,
            "position_embedding": self.position_embedding,
            "dropout": self.dropout,
            "tie_embeddings": self.tie_embeddings,
            "pad_id": self.pad_id,
            "embeddings_initializer": keras.initializers.serialize(
                self.embeddings_initializer
            ),
            "block_options": _serializable(self.block_options),
        }


def _check_block_options(block_options):
    """`block_options` as a dict of `TransformerBlock` arguments the model
    does not set itself."""
    if block_options is None:
        return {}
    if not isinstance(block_options, dict):
        raise _validation.invalid(
            "block_options",
            "a dict of TransformerBlock arguments or None",
            block_options,
            TypeError,
        )
    allowed = _block_option_names()
    unknown = sorted(set(block_options) - set(allowed))
    if unknown:
        raise _validation.invalid(
            "block_options",
            f"TransformerBlock arguments among {allowed} (the model sets "
            f"{list(_OWN_BLOCK_ARGS)} itself); unknown: {unknown}",
            block_options,
        )
    return dict(block_options)


def _serializable(options):
    """Block options with Keras objects (initializers, activations) as
    their configs, for `get_config`."""
    return {
        key: keras.saving.serialize_keras_object(value)
        if not isinstance(value, (str, int, float, bool, list, tuple))
        and value is not None
        else (list(value) if isinstance(value, tuple) else value)
        for key, value in options.items()
    }
