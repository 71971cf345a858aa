"""Uncached greedy decoding of a `Seq2SeqTransformer`: the oracle that the
key/value cache is tested (and benchmarked) against. Test code, not shipped
in the wheel."""

from keras import ops

from keras_selfattn.models import greedy_search


def generate_uncached(model, encoder_ids, max_length, start_id, end_id):
    """Greedy decoding that re-runs `model`'s decoder on the whole prefix at
    every step (no cache).

    Args:
        model: a `Seq2SeqTransformer`.
        encoder_ids: int tensor `(batch_size, source_len)`, 0 is padding.
        max_length: int, the number of tokens to generate.
        start_id: int, the first decoder input.
        end_id: int, the token that ends a row.

    Returns:
        int32 tensor `(batch_size, max_length)`, as `model.generate`.
    """
    model.build()
    encoder_ids = ops.convert_to_tensor(encoder_ids, dtype="int32")
    encoded = model.encode(encoder_ids, training=False)
    encoder_mask = ops.not_equal(encoder_ids, 0)
    batch_size = ops.shape(encoder_ids)[0]
    full = ops.zeros((batch_size, max_length + 1), dtype="int32")

    def step_fn(tokens, index, prefix):
        prefix = ops.slice_update(prefix, (0, index), tokens)
        logits = model.decode(
            prefix,
            encoded,
            encoder_mask,
            training=False,
            encoder_ids=encoder_ids,
        )  # (B, max_length + 1, V)
        return ops.take(logits, index, axis=1), prefix  # (B, V)

    return greedy_search(
        step_fn, full, batch_size, max_length, start_id, end_id
    )
