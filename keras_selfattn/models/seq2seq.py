"""An encoder-decoder Transformer with cached greedy and beam decoding."""

import keras
from keras import ops

from keras_selfattn.layers import _validation
from keras_selfattn.layers.token_and_position_embedding import (
    TokenAndPositionEmbedding,
)
from keras_selfattn.layers.transformer_block import TransformerBlock
from keras_selfattn.layers.transformer_decoder_block import (
    TransformerDecoderBlock,
)
from keras_selfattn.models import generation
from keras_selfattn.models import samplers


@keras.saving.register_keras_serializable(package="keras_selfattn")
class Seq2SeqTransformer(keras.Model):
    """An encoder-decoder Transformer (Vaswani et al.) for text to text.

    The encoder embeds source ids (`TokenAndPositionEmbedding`, id 0 is
    padding) and runs `num_encoder_layers` `TransformerBlock`s; the decoder
    embeds target ids and runs `num_decoder_layers`
    `TransformerDecoderBlock`s (causal self-attention, cross-attention that
    honours the source padding), then a float32 projection to target-vocabulary
    logits. Training uses teacher forcing: `decoder_ids` are the targets
    shifted right (starting with the start token).

    `generate` decodes inside the graph with a key/value cache in every
    decoder block, so each new token costs O(length) rather than a re-run
    of the prefix; cached and uncached decoding give identical tokens.

    Args:
        source_vocabulary_size: int, source vocabulary size.
        target_vocabulary_size: int, target vocabulary size.
        source_length: int, the longest source sequence.
        target_length: int, the longest target sequence (decoder inputs).
        embed_dim: int, model width. Defaults to `256`.
        num_heads: int, attention heads. Defaults to `8`.
        ff_dim: int, feed-forward width. Defaults to `1024`.
        num_encoder_layers: int. Defaults to `2`.
        num_decoder_layers: int. Defaults to `2`.
        dropout: float in [0, 1). Defaults to `0.1`.
        share_embeddings: bool, one embedding table for source and target
            (a shared vocabulary; the sizes must then be equal). Defaults to
            `False`.
        norm_first: bool, pre-norm blocks (with a final layer norm on both
            stacks). Defaults to `False`.
        copy_attention: bool, a pointer-generator output (See et al.): a
            learned gate mixes the vocabulary distribution with a copy
            distribution, the last decoder block's cross-attention
            (averaged over heads) scattered onto the source ids, so the
            model can copy source tokens (names, numbers) it has rarely seen
            as targets. The source ids must index the target vocabulary (a
            shared vocabulary: equal sizes). The outputs are then
            log-probabilities, which are valid logits for every
            `from_logits=True` loss and for decoding. Defaults to `False`.
        **kwargs: base `keras.Model` arguments (`name`, ...).

    Call arguments:
        inputs: dict with `encoder_ids` int `(batch_size, source_len)` and
            `decoder_ids` int `(batch_size, target_len)`.
        training: bool.

    Returns:
        float32 logits `(batch_size, target_len, target_vocabulary_size)`
        (log-probabilities with `copy_attention=True`).

    Example:

    >>> import numpy as np
    >>> from keras_selfattn.models import Seq2SeqTransformer
    >>> model = Seq2SeqTransformer(50, 60, source_length=8, target_length=6,
    ...                            embed_dim=16, num_heads=2, ff_dim=32)
    >>> source = np.array([[5, 6, 7, 0], [8, 0, 0, 0]])
    >>> target = np.array([[2, 9, 10], [2, 11, 0]])
    >>> logits = model({"encoder_ids": source, "decoder_ids": target})
    >>> tuple(logits.shape)
    (2, 3, 60)
    >>> tokens = model.generate(source, max_length=5, start_id=2, end_id=3)
    >>> tuple(tokens.shape)
    (2, 5)

    References:
        - [Vaswani et al., 2017](https://arxiv.org/abs/1706.03762)
    """

    def __init__(
        self,
        source_vocabulary_size,
        target_vocabulary_size,
        source_length,
        target_length,
        embed_dim=256,
        num_heads=8,
        ff_dim=1024,
        num_encoder_layers=2,
        num_decoder_layers=2,
        dropout=0.1,
        share_embeddings=False,
        norm_first=False,
        copy_attention=False,
        **kwargs,
    ):
        positive = _validation.positive_int
        source_vocabulary_size = positive(
            "source_vocabulary_size", source_vocabulary_size
        )
        target_vocabulary_size = positive(
            "target_vocabulary_size", target_vocabulary_size
        )
        source_length = positive("source_length", source_length)
        target_length = positive("target_length", target_length)
        embed_dim = positive("embed_dim", embed_dim)
        num_heads = positive("num_heads", num_heads)
        ff_dim = positive("ff_dim", ff_dim)
        num_encoder_layers = positive("num_encoder_layers", num_encoder_layers)
        num_decoder_layers = positive("num_decoder_layers", num_decoder_layers)
        dropout = _validation.rate("dropout", dropout)
        share_embeddings = _validation.boolean(
            "share_embeddings", share_embeddings
        )
        norm_first = _validation.boolean("norm_first", norm_first)
        copy_attention = _validation.boolean("copy_attention", copy_attention)
        if copy_attention and source_vocabulary_size != (
            target_vocabulary_size
        ):
            raise _validation.invalid(
                "copy_attention",
                "False when the source and target vocabulary sizes differ "
                f"({source_vocabulary_size} != {target_vocabulary_size}); "
                "copying needs one shared vocabulary",
                copy_attention,
            )
        if share_embeddings and source_vocabulary_size != (
            target_vocabulary_size
        ):
            raise _validation.invalid(
                "share_embeddings",
                "False when the source and target vocabulary sizes differ "
                f"({source_vocabulary_size} != {target_vocabulary_size})",
                share_embeddings,
            )
        super().__init__(**kwargs)
        self.source_vocabulary_size = source_vocabulary_size
        self.target_vocabulary_size = target_vocabulary_size
        self.source_length = source_length
        self.target_length = target_length
        self.embed_dim = embed_dim
        self.num_heads = num_heads
        self.ff_dim = ff_dim
        self.num_encoder_layers = num_encoder_layers
        self.num_decoder_layers = num_decoder_layers
        self.dropout = dropout
        self.share_embeddings = share_embeddings
        self.norm_first = norm_first
        self.copy_attention = copy_attention

        longest = max(source_length, target_length)
        self.encoder_embedding = TokenAndPositionEmbedding(
            source_vocabulary_size,
            longest if share_embeddings else source_length,
            embed_dim,
            scale_embeddings=True,
            name="encoder_embedding",
        )
        if share_embeddings:
            self.decoder_embedding = self.encoder_embedding
        else:
            self.decoder_embedding = TokenAndPositionEmbedding(
                target_vocabulary_size,
                target_length,
                embed_dim,
                scale_embeddings=True,
                name="decoder_embedding",
            )
        block_kwargs = {
            "num_heads": num_heads,
            "ff_dim": ff_dim,
            "dropout": dropout,
            "norm_first": norm_first,
        }
        self.encoder_blocks = [
            TransformerBlock(**block_kwargs, name=f"encoder_block_{i}")
            for i in range(num_encoder_layers)
        ]
        self.decoder_blocks = [
            TransformerDecoderBlock(**block_kwargs, name=f"decoder_block_{i}")
            for i in range(num_decoder_layers)
        ]
        self.encoder_dropout = keras.layers.Dropout(dropout)
        self.decoder_dropout = keras.layers.Dropout(dropout)
        if norm_first:
            # Pre-norm blocks leave the residual stream unnormalized.
            self.encoder_norm = keras.layers.LayerNormalization(
                epsilon=1e-6, name="encoder_norm"
            )
            self.decoder_norm = keras.layers.LayerNormalization(
                epsilon=1e-6, name="decoder_norm"
            )
        # float32 logits: a stable softmax/loss under mixed precision.
        self.output_projection = keras.layers.Dense(
            target_vocabulary_size, dtype="float32", name="logits"
        )
        if copy_attention:
            # p(generate) per position, from the final decoder state.
            self.copy_gate = keras.layers.Dense(
                1, dtype="float32", name="copy_gate"
            )

    def build(self, input_shape=None):
        # Every size is known from the arguments: build all sub-layers now,
        # so a `.keras` file loads without replaying a call.
        if self.built:
            return
        ids = (None, None)
        hidden = (None, None, self.embed_dim)
        self.encoder_embedding.build(ids)
        if not self.share_embeddings:
            self.decoder_embedding.build(ids)
        for block in self.encoder_blocks:
            block.build(hidden)
        for block in self.decoder_blocks:
            block.build(hidden, hidden)
        if self.norm_first:
            self.encoder_norm.build(hidden)
            self.decoder_norm.build(hidden)
        self.output_projection.build(hidden)
        if self.copy_attention:
            self.copy_gate.build(hidden)
        self.built = True

    def call(self, inputs, training=None):
        encoder_ids, decoder_ids = _split_inputs(inputs)
        encoded = self.encode(encoder_ids, training=training)
        return self.decode(
            decoder_ids,
            encoded,
            encoder_mask=ops.not_equal(encoder_ids, 0),
            training=training,
            encoder_ids=encoder_ids,
        )

    def encode(self, encoder_ids, training=None):
        """Source ids `(B, S)` to encoder outputs `(B, S, embed_dim)`."""
        mask = ops.not_equal(encoder_ids, 0)
        x = self.encoder_embedding(encoder_ids)
        x = self.encoder_dropout(x, training=training)
        for block in self.encoder_blocks:
            x = block(x, mask=mask, training=training)
        if self.norm_first:
            x = self.encoder_norm(x)
        return x

    def decode(
        self,
        decoder_ids,
        encoder_outputs,
        encoder_mask,
        training=None,
        encoder_ids=None,
    ):
        """Teacher-forced decoding: target ids `(B, T)` to logits
        `(B, T, target_vocabulary_size)`. `encoder_ids` (the source ids) are
        required with `copy_attention`."""
        if self.copy_attention and encoder_ids is None:
            raise ValueError(
                "Received an invalid value for argument `encoder_ids`, "
                "expected the source ids `(batch_size, source_len)` when "
                "copy_attention=True. Received: encoder_ids=None"
            )
        mask = ops.not_equal(decoder_ids, 0)
        x = self.decoder_embedding(decoder_ids)
        x = self.decoder_dropout(x, training=training)
        last = len(self.decoder_blocks) - 1
        cross_scores = None
        for i, block in enumerate(self.decoder_blocks):
            want_scores = self.copy_attention and i == last
            x = block(
                x,
                encoder_outputs,
                mask=mask,
                encoder_mask=encoder_mask,
                training=training,
                return_attention_scores=want_scores,
            )
            if want_scores:
                x, _, cross_scores = x
        if self.norm_first:
            x = self.decoder_norm(x)
        logits = self.output_projection(x)
        if not self.copy_attention:
            return logits
        return self._copy_log_probs(x, logits, cross_scores, encoder_ids)

    def _copy_log_probs(self, hidden, logits, cross_scores, encoder_ids):
        """Pointer-generator mixing: `log(g * softmax(logits) + (1 - g) *
        copy)`, with `copy` the head-averaged cross-attention `(B, T, S)`
        summed onto the source ids."""
        gate = ops.sigmoid(self.copy_gate(hidden))  # (B, T, 1) float32
        vocab_probs = ops.softmax(logits, axis=-1)  # (B, T, V)
        attention = ops.mean(ops.cast(cross_scores, "float32"), axis=1)
        shape = ops.shape(attention)  # (B, T, S)
        batch, length = shape[0], shape[1]
        ids = ops.cast(encoder_ids, "int32")
        rows = ops.broadcast_to(
            ops.arange(batch, dtype="int32")[:, None, None], shape
        )
        steps = ops.broadcast_to(
            ops.arange(length, dtype="int32")[None, :, None], shape
        )
        tokens = ops.broadcast_to(ids[:, None, :], shape)
        indices = ops.stack([rows, steps, tokens], axis=-1)  # (B, T, S, 3)
        # Scatter adds repeated ids (the same source token seen twice).
        copy_probs = ops.scatter(
            ops.reshape(indices, (-1, 3)),
            ops.reshape(attention, (-1,)),
            (batch, length, self.target_vocabulary_size),
        )
        # Where no source token is attended (a padded target position), the
        # copy mass goes back to the vocabulary: rows always sum to one.
        uncopied = 1.0 - ops.sum(attention, axis=-1, keepdims=True)
        mixed = (gate + (1.0 - gate) * uncopied) * vocab_probs + (
            1.0 - gate
        ) * copy_probs
        return ops.log(ops.maximum(mixed, 1e-12))

    def _decoder_state(self, encoder_ids, max_length):
        """The initial decoding state: one cache per decoder block (and the
        source ids, for copying)."""
        encoded = self.encode(encoder_ids, training=False)
        encoder_mask = ops.not_equal(encoder_ids, 0)
        caches = [
            block.init_cache(encoded, max_length, encoder_mask=encoder_mask)
            for block in self.decoder_blocks
        ]
        return {"caches": caches, "encoder_ids": encoder_ids}

    def _step(self, tokens, index, state):
        """One cached decoding step (see `generation`)."""
        x = self.decoder_embedding(tokens, start_index=index)  # (B, 1, D)
        caches = []
        last = len(self.decoder_blocks) - 1
        cross_scores = None
        for i, (block, cache) in enumerate(
            zip(self.decoder_blocks, state["caches"], strict=True)
        ):
            step = {"cache": cache, "cache_update_index": index}
            if self.copy_attention and i == last:
                x, _, cross_scores, cache = block(
                    x, training=False, return_attention_scores=True, **step
                )
            else:
                x, cache = block(x, training=False, **step)
            caches.append(cache)
        if self.norm_first:
            x = self.decoder_norm(x)
        logits = self.output_projection(x)  # (B, 1, V)
        if self.copy_attention:
            logits = self._copy_log_probs(
                x, logits, cross_scores, state["encoder_ids"]
            )
        return logits[:, 0, :], dict(state, caches=caches)

    def generate(
        self,
        encoder_ids,
        max_length,
        start_id,
        end_id,
        method="greedy",
        beam_width=4,
        length_penalty=0.6,
        no_repeat_ngram_size=0,
        sampler=None,
        seed=None,
    ):
        """Decode target ids for source ids, inside the graph.

        Args:
            encoder_ids: int `(batch_size, source_len)`, 0 for padding.
            max_length: int, the most target tokens (end token included);
                at most `target_length`.
            start_id: int, the start token.
            end_id: int, the end token.
            method: `"greedy"` or `"beam"`. Defaults to `"greedy"`.
            beam_width: int, for `"beam"`. Defaults to `4`.
            length_penalty: float, the GNMT alpha for `"beam"`. Defaults
                to `0.6`.
            no_repeat_ngram_size: int, when `n > 0` no n-gram of this size
                is generated twice in an output (stops the loops small
                models fall into). Defaults to `0` (off).
            sampler: `None`, or a sampler from
                `keras_selfattn.models.samplers` (an instance, a name such
                as `"top_p"`, or a config): decode with it instead of
                `method` (then `method`, `beam_width`, `length_penalty` and
                `no_repeat_ngram_size` must stay at their defaults; the
                sampler has its own). `"greedy"` and `"beam"` give the same
                tokens as `method=`. Defaults to `None`.
            seed: int or `None`, the seed of a stochastic sampler: the same
                seed gives the same tokens (eagerly, traced and on every
                backend). Defaults to `None` (a fresh draw).

        Returns:
            int32 `(batch_size, max_length)`, padded with 0 after `end_id`.
        """
        if sampler is not None:
            return self._generate_with_sampler(
                encoder_ids,
                max_length,
                start_id,
                end_id,
                sampler,
                seed,
                method=method,
                beam_width=beam_width,
                length_penalty=length_penalty,
                no_repeat_ngram_size=no_repeat_ngram_size,
            )
        if seed is not None:
            raise _validation.invalid(
                "seed", "None unless a `sampler` is given", seed
            )
        method = _validation.one_of("method", method, ("greedy", "beam"))
        max_length = _validation.positive_int("max_length", max_length)
        if max_length > self.target_length:
            raise _validation.invalid(
                "max_length",
                f"at most target_length={self.target_length}",
                max_length,
            )
        self.build()
        encoder_ids = ops.convert_to_tensor(encoder_ids, dtype="int32")
        batch_size = ops.shape(encoder_ids)[0]
        state = self._decoder_state(encoder_ids, max_length)
        if method == "greedy":
            return generation.greedy_search(
                self._step,
                state,
                batch_size,
                max_length,
                start_id,
                end_id,
                no_repeat_ngram_size=no_repeat_ngram_size,
            )
        tokens, _ = generation.beam_search(
            self._step,
            state,
            batch_size,
            max_length,
            start_id,
            end_id,
            beam_width=beam_width,
            length_penalty=length_penalty,
            no_repeat_ngram_size=no_repeat_ngram_size,
        )
        return tokens

    def _generate_with_sampler(
        self, encoder_ids, max_length, start_id, end_id, sampler, seed, **search
    ):
        """`generate` with a sampler: the start token is a one-token
        prompt, `end_id` the stop token."""
        defaults = {
            "method": "greedy",
            "beam_width": 4,
            "length_penalty": 0.6,
            "no_repeat_ngram_size": 0,
        }
        for name, value in search.items():
            if value != defaults[name]:
                raise _validation.invalid(
                    name,
                    f"its default ({defaults[name]!r}) when a `sampler` is "
                    "given (set it on the sampler)",
                    value,
                )
        sampler = samplers.get(sampler)
        max_length = _validation.positive_int("max_length", max_length)
        if max_length > self.target_length:
            raise _validation.invalid(
                "max_length",
                f"at most target_length={self.target_length}",
                max_length,
            )
        start_id = _validation.non_negative_int("start_id", start_id)
        end_id = _validation.non_negative_int("end_id", end_id)
        self.build()
        encoder_ids = ops.convert_to_tensor(encoder_ids, dtype="int32")
        state = self._decoder_state(encoder_ids, max_length)
        prompt = ops.full((ops.shape(encoder_ids)[0], 1), start_id, "int32")
        return sampler(
            self._step,
            state,
            prompt,
            max_length,
            stop_token_ids=end_id,
            pad_id=0,
            seed=seed,
        )

    def get_config(self):
        return {
            **super().get_config(),
            "source_vocabulary_size": self.source_vocabulary_size,
            "target_vocabulary_size": self.target_vocabulary_size,
            "source_length": self.source_length,
            "target_length": self.target_length,
            "embed_dim": self.embed_dim,
            "num_heads": self.num_heads,
            "ff_dim": self.ff_dim,
            "num_encoder_layers": self.num_encoder_layers,
            "num_decoder_layers": self.num_decoder_layers,
            "dropout": self.dropout,
            "share_embeddings": self.share_embeddings,
            "norm_first": self.norm_first,
            "copy_attention": self.copy_attention,
        }


def _split_inputs(inputs):
    if isinstance(inputs, dict):
        missing = {"encoder_ids", "decoder_ids"} - set(inputs)
        if missing:
            raise ValueError(
                "Received an invalid value for argument `inputs`, expected a "
                "dict with keys 'encoder_ids' and 'decoder_ids'. Missing: "
                f"{sorted(missing)}"
            )
        return inputs["encoder_ids"], inputs["decoder_ids"]
    if isinstance(inputs, (list, tuple)) and len(inputs) == 2:
        return inputs[0], inputs[1]
    raise ValueError(
        "Received an invalid value for argument `inputs`, expected a dict "
        "with keys 'encoder_ids' and 'decoder_ids' (or a pair). Received: "
        f"inputs={type(inputs).__name__}"
    )
