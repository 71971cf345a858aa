"""Greedy generation with a LiteRT `CausalLM` step, in NumPy.

Needs only NumPy and the `ai-edge-litert` interpreter (no TensorFlow, no
Keras): this file can ship with an app as it is.
"""

import numpy as np


def _runner(model):
    """The `serving_default` signature runner of a path or interpreter."""
    if isinstance(model, (str, bytes)) or hasattr(model, "__fspath__"):
        from ai_edge_litert.interpreter import Interpreter

        model = Interpreter(model_path=str(model))
    return model.get_signature_runner("serving_default")


def litert_generate(
    model, prompt_ids, max_new_tokens, stop_token_ids=None, pad_id=0
):
    """Greedy generation with a file of `export_causal_lm_litert`: the
    tokens `CausalLM.generate(..., sampler="greedy")` gives, on device.

    The same procedure as `generate`: the prompts are left-aligned (real
    tokens last), each row numbered from its first real token; one call
    prefills every prompt token, then one call per new token feeds the
    last chosen token and the cache the previous call returned. A row
    ends after a stop token (`pad_id` follows); the loop ends when every
    row has, or after `max_new_tokens`.

    Args:
        model: the `.tflite` path, or an `ai_edge_litert` `Interpreter`
            of it.
        prompt_ids: int array `(batch_size, prompt_len)`, padded with
            `pad_id` on either side, `prompt_len >= 1` and
            `prompt_len + max_new_tokens - 1` at most the exported
            `max_length`.
        max_new_tokens: int >= 1.
        stop_token_ids: `None`, an int or a sequence of ints. Defaults to
            `None`.
        pad_id: int, the model's padding id. Defaults to `0`.

    Returns:
        int32 array `(batch_size, max_new_tokens)`: the new tokens, the
        stop token included, `pad_id` after it.
    """
    runner = _runner(model)
    details = runner.get_input_details()
    prompt = np.asarray(prompt_ids, dtype=np.int32)
    if prompt.ndim != 2 or prompt.shape[1] == 0:
        raise ValueError(
            "Received an invalid value for argument `prompt_ids`, expected "
            "an int array of shape (batch_size, prompt_len) with "
            f"prompt_len >= 1. Received: prompt_ids.shape={prompt.shape}"
        )
    batch, length = prompt.shape
    cache_names = sorted(name for name in details if name.startswith("cache_"))
    cache_length = int(details["cache_0_key_mask"]["shape"][1])
    if max_new_tokens < 1 or length + max_new_tokens - 1 > cache_length:
        raise ValueError(
            "Received an invalid value for argument `max_new_tokens`, "
            f"expected an integer in [1, {cache_length - length + 1}] (the "
            f"exported max_length {cache_length} minus the prompt length "
            f"{length}, plus 1). Received: max_new_tokens={max_new_tokens}"
        )
    if stop_token_ids is None:
        stop = []
    elif isinstance(stop_token_ids, (int, np.integer)):
        stop = [int(stop_token_ids)]
    else:
        stop = [int(i) for i in stop_token_ids]
    # Left-align: padding first, then each row's real tokens in order.
    mask = prompt != pad_id
    steps = np.arange(length)
    order = np.argsort(np.where(mask, steps + length, steps), axis=1)
    mask = np.take_along_axis(mask, order, axis=1)
    prompt = np.where(mask, np.take_along_axis(prompt, order, axis=1), pad_id)
    # An empty row keeps its last entry (pad_id) as its one token.
    pad_count = np.minimum(length - mask.sum(axis=1), length - 1)  # (B,)
    positions = np.maximum(np.cumsum(mask, axis=1) - 1, 0).astype(np.int32)
    # Empty caches for this batch (the file's batch axis is dynamic).
    cache = {
        name: np.zeros(
            (batch, *details[name]["shape"][1:]), details[name]["dtype"]
        )
        for name in cache_names
    }

    def run(tokens, token_mask, token_positions, index):
        out = runner(
            token_ids=tokens.astype(np.int32),
            padding_mask=token_mask,
            positions=token_positions.astype(np.int32),
            index=np.array([index], np.int32),
            **cache,
        )
        cache.update({name: out[name] for name in cache_names})
        return out["logits"]

    run(prompt, mask, positions, 0)  # the prefill (its logits unused)
    new = np.full((batch, max_new_tokens), pad_id, np.int32)
    finished = np.zeros(batch, bool)
    current = prompt[:, -1:]  # fed again at its slot, as `generate` does
    for step in range(max_new_tokens):
        index = length - 1 + step
        # Every fed token counts, as in `generate` (even a chosen pad_id).
        logits = run(
            current,
            np.ones_like(current, bool),
            (index - pad_count)[:, None],
            index,
        )
        chosen = np.where(finished, pad_id, np.argmax(logits, axis=-1))
        new[:, step] = chosen
        finished |= np.isin(chosen, stop)
        if finished.all():
            break
        current = chosen[:, None].astype(np.int32)
    return new
