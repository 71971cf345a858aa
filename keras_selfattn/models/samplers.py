"""Samplers: how generation picks each next token, as graph loops.

A sampler drives a *step function* (the contract of `generation`):

    step_fn(tokens, index, state) -> (logits, new_state)

with `tokens` int32 `(batch, 1)` (the token at buffer position `index`),
`index` a scalar int32, `logits` float `(batch, vocab_size)` for the token
at `index + 1`, and `state` any nested structure of batch-leading tensors
(a model's key/value caches). Calling a sampler,

    sampler(step_fn, state, prompt, max_new_tokens, stop_token_ids, ...)

feeds the last prompt token first (`index = prompt_len - 1`; `state` must
already hold the positions before it, for example a prefilled cache), then
each chosen token, and returns the `max_new_tokens` new tokens. An
encoder-decoder model passes a one-token prompt (its start token), so the
same samplers serve `CausalLM.generate` and any step function of
`generation`'s world.

Every sampler applies, in this order, the repetition penalty, the
temperature and the `no_repeat_ngram_size` ban to the logits, then chooses:
`GreedySampler` the most likely token, `RandomSampler` a draw from the
softmax, `TopKSampler` a draw among the `k` most likely, `TopPSampler` a
draw from the nucleus, `BeamSampler` the best beam (`beam_search`, with the
GNMT length penalty). `ConfigurableSampler` applies temperature, top-k and
top-p in one pass with options that may be tensors, one per row (a served
model's options, which arrive with each request).

Random draws are stateless: token `t` of row `b` is drawn with the
Gumbel-max trick from a counter-based hash of `(seed, t, b, token)` in
`keras.ops` integer arithmetic. The same seed gives the same tokens eagerly,
inside `tf.function` or `jax.jit`, and on the TensorFlow and JAX backends
alike. (`keras.random` takes only Python ints or `SeedGenerator`s as seeds,
not a seed tensor that changes inside a loop or arrives as a serving input.)
"""

import keras
from keras import ops

from keras_selfattn.layers import _validation
from keras_selfattn.models import generation

# Logit of a token that must not be chosen; finite, so no NaN downstream.
_NEG_INF = -1e9
# `beam_search` needs an end id: with no stop token, one no row can emit.
_NO_END_ID = 2**31 - 1


# The hash works on 32-bit patterns held in int32 tensors: every backend
# wraps an int32 product modulo 2**32 (PyTorch has no wrapping uint32
# multiply: its uint32 product grows past 32 bits), and shifts are made
# logical by masking the sign bits the arithmetic shift copies in. The bit
# patterns equal those of the uint32 arithmetic in MurmurHash3.


def _int32(value):
    """A uint32 constant as the int32 with the same bits."""
    return value - 2**32 if value >= 2**31 else value


def _shift_right(x, bits):
    """Logical right shift of int32 bit patterns."""
    shifted = ops.right_shift(x, ops.convert_to_tensor(bits, "int32"))
    return ops.bitwise_and(
        shifted, ops.convert_to_tensor((1 << (32 - bits)) - 1, "int32")
    )


def _fmix32(x):
    """MurmurHash3's 32-bit finalizer: a bijection of 32-bit patterns
    (int32 tensors) that mixes every input bit into every output bit."""
    x = ops.bitwise_xor(x, _shift_right(x, 16))
    x = ops.multiply(x, ops.convert_to_tensor(_int32(0x85EBCA6B), "int32"))
    x = ops.bitwise_xor(x, _shift_right(x, 13))
    x = ops.multiply(x, ops.convert_to_tensor(_int32(0xC2B2AE35), "int32"))
    return ops.bitwise_xor(x, _shift_right(x, 16))


def _uniform(seed, step, shape):
    """Stateless uniform floats in (0, 1) of a static-width `shape`
    `(rows, width)`, a function of the int seed (a scalar, or one per row
    `(rows,)`), the int step and the position only (the same on every
    backend)."""
    rows, width = shape
    golden = ops.convert_to_tensor(_int32(0x9E3779B9), "int32")
    seed = ops.cast(seed, "int32")
    if len(seed.shape) == 1:
        # One seed per row: the key broadcasts over the row's width, so a
        # row draws what a scalar seed of the same value draws.
        seed = seed[:, None]  # (rows, 1)
    key = _fmix32(
        seed * golden + _fmix32(ops.cast(step, "int32") + _int32(0x7F4A7C15))
    )
    counter = ops.arange(rows, dtype="int32")[:, None] * width + ops.arange(
        width, dtype="int32"
    )  # (rows, width)
    bits = _fmix32(ops.bitwise_xor(_fmix32(counter), key))  # (rows, width)
    # The top 24 bits, centred in their bin: exact in float32, never 0 or 1.
    top = ops.cast(_shift_right(bits, 8), "float32")
    return (top + 0.5) * (1.0 / 2**24)


def gumbel_noise(seed, step, shape):
    """Gumbel(0, 1) noise `-log(-log(u))` of `shape` `(rows, vocab_size)`
    from the stateless hash: `argmax(logits + noise)` is a draw from
    `softmax(logits)` (the Gumbel-max trick)."""
    return -ops.log(-ops.log(_uniform(seed, step, shape)))


def check_stop_token_ids(stop_token_ids):
    """`stop_token_ids` (`None`, an int or a sequence of ints) as a tuple."""
    if stop_token_ids is None:
        return ()
    if isinstance(stop_token_ids, int) and not isinstance(stop_token_ids, bool):
        stop_token_ids = (stop_token_ids,)
    try:
        ids = tuple(stop_token_ids)
    except TypeError:
        raise _validation.invalid(
            "stop_token_ids",
            "None, an int or a sequence of non-negative ints",
            stop_token_ids,
        ) from None
    for value in ids:
        _validation.non_negative_int("stop_token_ids", value)
    return tuple(int(value) for value in ids)


def check_seed(seed):
    """`seed` checked: `None`, a tensor (checked by its maker), or an int
    in [0, 2**31 - 1]."""
    if seed is None or ops.is_tensor(seed):
        return seed
    seed = _validation.non_negative_int("seed", seed)
    if seed > 2**31 - 1:
        # The hash holds the seed in an int32.
        raise _validation.invalid("seed", "an integer in [0, 2**31 - 1]", seed)
    return seed


def _per_row(value, dtype):
    """A sampling option as something that broadcasts against `(rows,
    vocab_size)`: a number or scalar tensor as is, a `(rows,)` tensor as a
    column `(rows, 1)`."""
    if not ops.is_tensor(value):
        return value
    value = ops.cast(value, dtype)
    return value[:, None] if len(value.shape) == 1 else value


def _prompt_and_mask(prompt, prompt_mask):
    prompt = ops.convert_to_tensor(prompt, dtype="int32")
    if len(prompt.shape) != 2:
        raise _validation.invalid(
            "prompt",
            "an int tensor of shape (batch_size, prompt_len)",
            f"<tensor of shape {tuple(prompt.shape)}>",
        )
    if prompt.shape[1] == 0:
        raise _validation.invalid(
            "prompt", "at least one token per row", "<empty prompt>"
        )
    if prompt_mask is None:
        prompt_mask = ops.ones(ops.shape(prompt), dtype="bool")
    return prompt, ops.cast(prompt_mask, "bool")


def seen_tokens(tokens, valid, vocab_size):
    """Which tokens occur in the valid positions of `tokens`.

    Args:
        tokens: int `(rows, length)`.
        valid: bool `(rows, length)`, the positions that count.
        vocab_size: int.

    Returns:
        bool `(rows, vocab_size)`.
    """
    rows = ops.shape(tokens)[0]
    row_ids = ops.broadcast_to(
        ops.arange(rows, dtype="int32")[:, None], ops.shape(tokens)
    )
    indices = ops.stack([row_ids, ops.cast(tokens, "int32")], axis=-1)
    counts = ops.scatter(
        ops.reshape(indices, (-1, 2)),
        ops.reshape(ops.cast(valid, "float32"), (-1,)),
        (rows, vocab_size),
    )
    return ops.greater(counts, 0.0)


@keras.saving.register_keras_serializable(package="keras_selfattn")
class Sampler:
    """The base sampler: logit processing and the generation loop.

    Subclasses choose the token (`select`); this class runs the loop: a
    `keras.ops.while_loop` that feeds the last prompt token, then each new
    one, to the step function, processes the logits, chooses, writes
    `pad_id` after a row's stop token and ends when every row has stopped or
    `max_new_tokens` are out.

    Logit processing, in this order: the repetition penalty (Keskar et al.:
    the logit `l` of a token already in the prompt or the output becomes
    `l / penalty` if `l > 0`, else `l * penalty`), the temperature (`l / T`)
    and the `no_repeat_ngram_size` ban (a token that would complete an
    n-gram already in the prompt or output gets a logit of `-1e9`).

    Args:
        temperature: float > 0, divides the logits: below 1 sharpens the
            distribution, above 1 flattens it. Greedy and top-k with
            `k=1` ignore it. Defaults to `1.0`.
        repetition_penalty: float > 0, `1.0` is off; `1.2` is a common
            choice. Defaults to `1.0`.
        no_repeat_ngram_size: int >= 0, when `n > 0` no n-gram of this
            size occurs twice in prompt plus output. Defaults to `0` (off).

    Call arguments:
        step_fn: the step function (see the module docstring).
        state: its state, holding every position before the last prompt
            token.
        prompt: int `(batch_size, prompt_len)`, `prompt_len >= 1`; the last
            column is fed first. Pad on the left (see `prompt_mask`).
        max_new_tokens: int >= 1, the most tokens to generate per row.
        stop_token_ids: `None`, an int or a sequence of ints: a row stops
            after emitting one of them. Defaults to `None`.
        pad_id: int, written after a row's stop token. Defaults to `0`.
        prompt_mask: optional bool `(batch_size, prompt_len)`, `True` for
            real prompt tokens (for the repetition penalty and the n-gram
            ban). Defaults to all `True`.
        seed: int, or a scalar int tensor, for the random samplers; the
            same seed gives the same tokens. Defaults to `None` (a fresh
            seed from Keras' global generator; inside `jax.jit`, pass one).

    Returns:
        int32 `(batch_size, max_new_tokens)`: the new tokens, the stop
        token included, `pad_id` after it.

    Example:

    >>> from keras import ops
    >>> from keras_selfattn.models import GreedySampler
    >>> def step_fn(tokens, index, state):
    ...     # Prefers token (last + 1) mod 6.
    ...     return ops.one_hot((tokens[:, 0] + 1) % 6, 6), state
    >>> out = GreedySampler()(step_fn, (), [[4, 1], [0, 2]], 4,
    ...                       stop_token_ids=4)
    >>> ops.convert_to_numpy(out).tolist()
    [[2, 3, 4, 0], [3, 4, 0, 0]]
    """

    # Whether `select` draws random numbers (and so needs a seed).
    stochastic = False
    # The most new tokens of each row, below the call's `max_new_tokens`:
    # `None` (the call's), or an int tensor, scalar or `(batch_size,)`.
    token_limit = None

    def __init__(
        self, temperature=1.0, repetition_penalty=1.0, no_repeat_ngram_size=0
    ):
        self.temperature = _validation.positive_float(
            "temperature", temperature, finite=True
        )
        self.repetition_penalty = _validation.positive_float(
            "repetition_penalty", repetition_penalty, finite=True
        )
        self.no_repeat_ngram_size = _validation.non_negative_int(
            "no_repeat_ngram_size", no_repeat_ngram_size
        )

    def process_logits(self, logits, tokens, valid, index):
        """The processed float32 logits `(rows, vocab_size)` of the token
        at `index + 1`, given the buffer `tokens` `(rows, length)` filled up
        to `index` and `valid` `(rows, length)` marking its real tokens."""
        logits = ops.cast(logits, "float32")
        vocab_size = logits.shape[-1] or ops.shape(logits)[-1]
        if self.repetition_penalty != 1.0:
            seen = seen_tokens(tokens, valid, vocab_size)
            penalized = ops.where(
                ops.greater(logits, 0.0),
                logits / self.repetition_penalty,
                logits * self.repetition_penalty,
            )
            logits = ops.where(seen, penalized, logits)
        if ops.is_tensor(self.temperature) or self.temperature != 1.0:
            logits = logits / _per_row(self.temperature, "float32")
        if self.no_repeat_ngram_size:
            banned = generation.repeated_ngram_mask(
                tokens, index, self.no_repeat_ngram_size, vocab_size
            )
            logits = ops.where(banned, _NEG_INF, logits)
        return logits

    def select(self, logits, seed, step):
        """The chosen tokens, int32 `(rows,)`, from processed logits
        `(rows, vocab_size)`; `seed` and `step` (scalar ints) feed the
        random draws."""
        raise NotImplementedError(
            f"{type(self).__name__} must implement `select`."
        )

    def __call__(
        self,
        step_fn,
        state,
        prompt,
        max_new_tokens,
        stop_token_ids=None,
        pad_id=0,
        prompt_mask=None,
        seed=None,
    ):
        max_new_tokens = _validation.positive_int(
            "max_new_tokens", max_new_tokens
        )
        stop = check_stop_token_ids(stop_token_ids)
        pad_id = _validation.non_negative_int("pad_id", pad_id)
        seed = check_seed(seed)
        prompt, prompt_mask = _prompt_and_mask(prompt, prompt_mask)
        if self.stochastic and seed is None:
            seed = keras.random.randint((), 0, 2**31 - 1, dtype="int32")
        elif seed is None:
            seed = 0
        return self._loop(
            step_fn,
            state,
            prompt,
            prompt_mask,
            max_new_tokens,
            stop,
            pad_id,
            seed,
        )

    def _loop(
        self,
        step_fn,
        state,
        prompt,
        prompt_mask,
        max_new_tokens,
        stop,
        pad_id,
        seed,
    ):
        batch_size = ops.shape(prompt)[0]
        prompt_len = prompt.shape[1] or ops.shape(prompt)[1]
        new = (batch_size, max_new_tokens)
        # The buffer: the prompt, then room for the new tokens.
        tokens = ops.concatenate(
            [prompt, ops.full(new, pad_id, dtype="int32")], axis=1
        )  # (B, P + N)
        valid = ops.concatenate(
            [prompt_mask, ops.zeros(new, dtype="bool")], axis=1
        )  # (B, P + N)
        finished = ops.zeros((batch_size,), dtype="bool")
        stop_ids = ops.convert_to_tensor(stop or [0], dtype="int32")
        limit = self.token_limit
        if limit is not None:
            limit = ops.cast(limit, "int32")

        def cond(step, tokens, valid, finished, state):
            return ops.logical_and(
                ops.less(step, max_new_tokens),
                ops.logical_not(ops.all(finished)),
            )

        def body(step, tokens, valid, finished, state):
            index = prompt_len - 1 + step  # the position fed now
            current = ops.slice(tokens, (0, index), (batch_size, 1))
            logits, state = step_fn(current, index, state)
            logits = self.process_logits(logits, tokens, valid, index)
            chosen = ops.cast(self.select(logits, seed, step), "int32")
            chosen = ops.where(finished, pad_id, chosen)  # (B,)
            tokens = ops.slice_update(tokens, (0, index + 1), chosen[:, None])
            valid = ops.slice_update(
                valid, (0, index + 1), ops.logical_not(finished)[:, None]
            )
            if stop:
                hit = ops.any(
                    ops.equal(chosen[:, None], stop_ids[None, :]), axis=-1
                )
                finished = ops.logical_or(finished, hit)
            if limit is not None:
                # A row that has its `limit` tokens is done.
                finished = ops.logical_or(
                    finished, ops.greater_equal(step + 1, limit)
                )
            return step + 1, tokens, valid, finished, state

        _, tokens, _, _, _ = ops.while_loop(
            cond,
            body,
            (
                ops.convert_to_tensor(0, "int32"),
                tokens,
                valid,
                finished,
                state,
            ),
        )
        return tokens[:, prompt_len:]

    def get_config(self):
        return {
            "temperature": self.temperature,
            "repetition_penalty": self.repetition_penalty,
            "no_repeat_ngram_size": self.no_repeat_ngram_size,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __repr__(self):
        options = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({options})"


@keras.saving.register_keras_serializable(package="keras_selfattn")
class GreedySampler(Sampler):
    """Always the most likely token (after the logit processing).

    Deterministic: no seed. Ties go to the lowest token id.

    Args:
        temperature: float > 0 (no effect on the choice). Defaults to `1.0`.
        repetition_penalty: float > 0. Defaults to `1.0` (off).
        no_repeat_ngram_size: int >= 0. Defaults to `0` (off).

    Returns:
        Called, int32 `(batch_size, max_new_tokens)` (see `Sampler`).

    Example:

    >>> import numpy as np
    >>> from keras import ops
    >>> from keras_selfattn.models import GreedySampler
    >>> logits = np.log([[0.1, 0.6, 0.3]])
    >>> def step_fn(tokens, index, state):
    ...     return ops.convert_to_tensor(logits, "float32"), state
    >>> ops.convert_to_numpy(GreedySampler()(step_fn, (), [[0]], 3)).tolist()
    [[1, 1, 1]]
    >>> # Each bigram at most once: "1 1" cannot follow "1 1" again.
    >>> sampler = GreedySampler(no_repeat_ngram_size=2)
    >>> ops.convert_to_numpy(sampler(step_fn, (), [[0]], 3)).tolist()
    [[1, 1, 2]]
    """

    def select(self, logits, seed, step):
        return ops.argmax(logits, axis=-1)


@keras.saving.register_keras_serializable(package="keras_selfattn")
class RandomSampler(Sampler):
    """A draw from `softmax(logits / temperature)` (ancestral sampling).

    Args:
        temperature: float > 0. Defaults to `1.0`.
        repetition_penalty: float > 0. Defaults to `1.0` (off).
        no_repeat_ngram_size: int >= 0. Defaults to `0` (off).

    Returns:
        Called, int32 `(batch_size, max_new_tokens)` (see `Sampler`).

    Example:

    >>> import numpy as np
    >>> from keras import ops
    >>> from keras_selfattn.models import RandomSampler
    >>> def step_fn(tokens, index, state):
    ...     return ops.convert_to_tensor(np.zeros((2, 50)), "float32"), state
    >>> sampler = RandomSampler()
    >>> a = ops.convert_to_numpy(sampler(step_fn, (), [[1], [1]], 8, seed=3))
    >>> b = ops.convert_to_numpy(sampler(step_fn, (), [[1], [1]], 8, seed=3))
    >>> bool((a == b).all()), len(set(a.ravel().tolist())) > 4
    (True, True)
    """

    stochastic = True

    def filter_logits(self, logits):
        """The logits with the tokens that may not be drawn set to
        `-1e9` (none here; top-k and top-p keep only some)."""
        return logits

    def select(self, logits, seed, step):
        logits = self.filter_logits(logits)
        shape = (ops.shape(logits)[0], logits.shape[-1])
        # Gumbel-max: argmax(l + g) is distributed as softmax(l); a filtered
        # token (-1e9) never wins against the noise's range (< 20).
        return ops.argmax(logits + gumbel_noise(seed, step, shape), axis=-1)


@keras.saving.register_keras_serializable(package="keras_selfattn")
class TopKSampler(RandomSampler):
    """A draw among the `k` most likely tokens (Fan et al., 2018).

    `k=1` is greedy decoding, exactly.

    Args:
        k: int >= 1, how many tokens stay candidates. Defaults to `10`.
        temperature: float > 0. Defaults to `1.0`.
        repetition_penalty: float > 0. Defaults to `1.0` (off).
        no_repeat_ngram_size: int >= 0. Defaults to `0` (off).

    Returns:
        Called, int32 `(batch_size, max_new_tokens)` (see `Sampler`).

    Example:

    >>> import numpy as np
    >>> from keras import ops
    >>> from keras_selfattn.models import TopKSampler
    >>> logits = np.log([[0.05, 0.5, 0.05, 0.4]])
    >>> def step_fn(tokens, index, state):
    ...     return ops.convert_to_tensor(logits, "float32"), state
    >>> out = TopKSampler(k=2)(step_fn, (), [[0]], 20, seed=1)
    >>> sorted(set(ops.convert_to_numpy(out).ravel().tolist()))
    [1, 3]

    References:
        - [Fan et al., 2018, Hierarchical Neural Story Generation](
          https://arxiv.org/abs/1805.04833)
    """

    def __init__(
        self,
        k=10,
        temperature=1.0,
        repetition_penalty=1.0,
        no_repeat_ngram_size=0,
    ):
        super().__init__(temperature, repetition_penalty, no_repeat_ngram_size)
        self.k = _validation.positive_int("k", k)

    def filter_logits(self, logits):
        return _keep_top_k(logits, self.k)

    def get_config(self):
        return {"k": self.k, **super().get_config()}


def _keep_top_k(logits, k):
    """`logits` with all but the `k` largest per row at `-1e9` (ties: the
    lower ids, as `top_k`)."""
    vocab_size = logits.shape[-1]
    k = min(k, vocab_size)
    _, top = ops.top_k(logits, k)  # (rows, k)
    rows = ops.shape(logits)[0]
    row_ids = ops.broadcast_to(
        ops.arange(rows, dtype="int32")[:, None], (rows, k)
    )
    indices = ops.stack([row_ids, ops.cast(top, "int32")], axis=-1)
    keep = ops.scatter(
        ops.reshape(indices, (-1, 2)),
        ops.ones((rows * k,), dtype="float32"),
        (rows, vocab_size),
    )
    return ops.where(ops.greater(keep, 0.0), logits, _NEG_INF)


def _keep_top_p(logits, p, off=None):
    """`logits` with the tokens outside the nucleus of mass `p` (a number
    or a `(rows, 1)` tensor) at `-1e9`; rows where `off` (bool `(rows, 1)`)
    holds keep every token.

    The nucleus is every token at least as likely as its least likely
    member `t`, the largest probability with `mass(probs >= t) >= p` (the
    tokens sorted by probability, `t` is the first whose running sum
    reaches `p`; a token tied with it joins it, as no order between equals
    is meaningful). `t` is found without sorting: a bisection on the int32
    bit patterns of the probabilities, which order non-negative floats as
    their values do, so 31 halvings pin it exactly. Each halving is one
    compare-and-sum over the vocabulary: under XLA (`jit_compile`, JAX) it
    fuses, and is 10x faster than XLA's sort on CPU; in a plain TensorFlow
    graph it is within 15 % of `top_k`'s sort.
    """
    probs = ops.softmax(ops.cast(logits, "float32"), axis=-1)  # (rows, V)
    bits = ops.view(probs, "int32")  # monotone in probs, as probs >= 0
    # Invariant: mass(bits >= low) >= p (low = 0: all tokens, mass 1) and
    # mass(bits >= high) < p (high above the largest: no token).
    low = ops.zeros_like(bits[:, :1])  # (rows, 1)
    high = ops.max(bits, axis=-1, keepdims=True) + 1
    for _ in range(31):  # high - low < 2**31 halves to 1
        middle = low + (high - low) // 2
        mass = ops.sum(
            ops.where(ops.greater_equal(bits, middle), probs, 0.0),
            axis=-1,
            keepdims=True,
        )
        enough = ops.greater_equal(mass, p)
        low = ops.where(enough, middle, low)
        high = ops.where(enough, high, middle)
    # p = 1 keeps every token: a float32 sum of the probabilities may
    # round to just below 1 (or a part of them to 1), which would cut the
    # least likely tokens.
    keep = ops.logical_or(
        ops.greater_equal(bits, low), ops.greater_equal(p, 1.0)
    )
    if off is not None:
        keep = ops.logical_or(keep, off)
    return ops.where(keep, logits, _NEG_INF)


@keras.saving.register_keras_serializable(package="keras_selfattn")
class TopPSampler(RandomSampler):
    """A draw from the nucleus (Holtzman et al., 2020): the smallest set of
    most likely tokens whose probabilities sum to at least `p`.

    With tokens sorted by probability, token `j` is in the nucleus when the
    probabilities before it sum to less than `p` (so the most likely token
    always is); a token exactly as likely as the nucleus's least likely
    member joins it too. The probabilities are those after the logit
    processing (temperature included), renormalized over the nucleus.

    Args:
        p: float in (0, 1], the nucleus mass. Defaults to `0.9`.
        k: int >= 1 or `None`, first keep only the `k` most likely tokens
            (top-k, then top-p). Defaults to `None`.
        temperature: float > 0. Defaults to `1.0`.
        repetition_penalty: float > 0. Defaults to `1.0` (off).
        no_repeat_ngram_size: int >= 0. Defaults to `0` (off).

    Returns:
        Called, int32 `(batch_size, max_new_tokens)` (see `Sampler`).

    Example:

    >>> import numpy as np
    >>> from keras import ops
    >>> from keras_selfattn.models import TopPSampler
    >>> logits = np.log([[0.05, 0.5, 0.05, 0.4]])  # nucleus(0.8): 1 and 3
    >>> def step_fn(tokens, index, state):
    ...     return ops.convert_to_tensor(logits, "float32"), state
    >>> out = TopPSampler(p=0.8)(step_fn, (), [[0]], 20, seed=1)
    >>> sorted(set(ops.convert_to_numpy(out).ravel().tolist()))
    [1, 3]

    References:
        - [Holtzman et al., 2020, The Curious Case of Neural Text
          Degeneration](https://arxiv.org/abs/1904.09751)
    """

    def __init__(
        self,
        p=0.9,
        k=None,
        temperature=1.0,
        repetition_penalty=1.0,
        no_repeat_ngram_size=0,
    ):
        super().__init__(temperature, repetition_penalty, no_repeat_ngram_size)
        if (
            isinstance(p, bool)
            or not isinstance(p, (int, float))
            or not 0.0 < p <= 1.0
        ):
            raise _validation.invalid("p", "a float in (0, 1]", p)
        self.p = float(p)
        self.k = _validation.positive_int("k", k, allow_none=True)

    def filter_logits(self, logits):
        if self.k is not None:
            logits = _keep_top_k(logits, self.k)
        return _keep_top_p(logits, self.p)

    def get_config(self):
        return {"p": self.p, "k": self.k, **super().get_config()}


def _option(name, value, check):
    """A sampling option: a tensor as is (checked by whoever made it), a
    number through `check`."""
    if ops.is_tensor(value):
        return value
    return check(name, value)


def _top_p(name, value):
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not 0.0 < value <= 1.0
    ):
        raise _validation.invalid(name, "a float in (0, 1]", value)
    return float(value)


@keras.saving.register_keras_serializable(package="keras_selfattn")
class ConfigurableSampler(RandomSampler):
    """Temperature, top-k and top-p in one sampler, each a number or a
    tensor: one value per request, or one per row.

    The sampler of a served model, whose options arrive with each request
    (`keras_selfattn.export.export_causal_lm`): every option may be a
    Python number (checked here) or an int/float tensor, scalar or
    `(batch_size,)`, made inside a traced function (checked by its maker;
    such a sampler is for that trace, not for `get_config`). A draw keeps
    the `k` most likely tokens (all when `k=0`), then the nucleus of mass
    `p` among them (all when `p=1`), and draws from what is left, after
    the temperature. With numbers it draws what `TopKSampler` or
    `TopPSampler` draws from the same seed (but a token tied with the
    `k`-th most likely stays a candidate here, where `TopKSampler` keeps
    the lower id); `k=1` is greedy decoding.

    Args:
        temperature: float > 0, or a float tensor. Defaults to `1.0`.
        k: int >= 0, or an int tensor, the candidates kept by top-k
            (`0`: off). Defaults to `0`.
        p: float in (0, 1], or a float tensor, the nucleus mass (`1`:
            off). Defaults to `1.0`.
        token_limit: int >= 1, an int tensor, or `None`: each row stops
            after this many new tokens (`pad_id` after them), at most the
            call's `max_new_tokens`, which stays the static size of the
            output. Defaults to `None` (the call's).
        repetition_penalty: float > 0. Defaults to `1.0` (off).
        no_repeat_ngram_size: int >= 0. Defaults to `0` (off).

    Returns:
        Called, int32 `(batch_size, max_new_tokens)` (see `Sampler`).

    Example:

    >>> import numpy as np
    >>> from keras import ops
    >>> from keras_selfattn.models import ConfigurableSampler, TopPSampler
    >>> logits = np.log([[0.05, 0.5, 0.05, 0.4]] * 2)
    >>> def step_fn(tokens, index, state):
    ...     return ops.convert_to_tensor(logits, "float32"), state
    >>> nucleus = ConfigurableSampler(p=0.8)(step_fn, (), [[0], [0]], 9,
    ...                                      seed=1)
    >>> same = TopPSampler(p=0.8)(step_fn, (), [[0], [0]], 9, seed=1)
    >>> bool(ops.all(nucleus == same))
    True
    >>> # Per row: greedy for row 0, three tokens for row 1.
    >>> rows = ConfigurableSampler(k=ops.array([1, 0]),
    ...                            token_limit=ops.array([9, 3]))
    >>> out = ops.convert_to_numpy(rows(step_fn, (), [[0], [0]], 9, seed=1))
    >>> out[0].tolist(), out[1, 3:].tolist()
    ([1, 1, 1, 1, 1, 1, 1, 1, 1], [0, 0, 0, 0, 0, 0])
    """

    def __init__(
        self,
        temperature=1.0,
        k=0,
        p=1.0,
        token_limit=None,
        repetition_penalty=1.0,
        no_repeat_ngram_size=0,
    ):
        super().__init__(1.0, repetition_penalty, no_repeat_ngram_size)
        self.temperature = _option(
            "temperature",
            temperature,
            lambda name, v: _validation.positive_float(name, v, finite=True),
        )
        self.k = _option("k", k, _validation.non_negative_int)
        self.p = _option("p", p, _top_p)
        if token_limit is not None:
            token_limit = _option(
                "token_limit", token_limit, _validation.positive_int
            )
        self.token_limit = token_limit

    def filter_logits(self, logits):
        k = self.k
        if ops.is_tensor(k) or k > 0:
            vocab_size = logits.shape[-1]
            k = _per_row(ops.convert_to_tensor(k, "int32"), "int32")
            sorted_logits, _ = ops.top_k(logits, vocab_size)  # descending
            # The k-th largest logit of each row (k = 0: off, any index).
            kth = ops.clip(k - 1, 0, vocab_size - 1)
            kth = ops.take_along_axis(
                sorted_logits,
                ops.broadcast_to(kth, (ops.shape(logits)[0], 1)),
                axis=-1,
            )  # (rows, 1)
            keep = ops.logical_or(
                ops.less_equal(k, 0), ops.greater_equal(logits, kth)
            )
            logits = ops.where(keep, logits, _NEG_INF)
        p = self.p
        if ops.is_tensor(p):
            p = _per_row(p, "float32")
            return _keep_top_p(logits, p, off=ops.greater_equal(p, 1.0))
        if p < 1.0:
            return _keep_top_p(logits, p)
        return logits

    def get_config(self):
        if any(
            ops.is_tensor(v)
            for v in (self.temperature, self.k, self.p, self.token_limit)
        ):
            raise TypeError(
                "A ConfigurableSampler with tensor options has no config: "
                "it lives in the trace that made its tensors."
            )
        return {
            "k": self.k,
            "p": self.p,
            "token_limit": self.token_limit,
            **super().get_config(),
        }


@keras.saving.register_keras_serializable(package="keras_selfattn")
class BeamSampler(Sampler):
    """Beam search with the GNMT length penalty (`generation.beam_search`).

    Keeps the `beam_width` best sequences per row, ranked by `sum(log p) /
    ((5 + length) / 6) ** length_penalty` over the processed logits
    (repetition penalty, temperature and n-gram ban, with the prompt in the
    history), and returns the best. `beam_width=1` is greedy decoding.
    Beam search takes at most one stop token.

    Args:
        beam_width: int >= 1, beams per row. Defaults to `4`.
        length_penalty: float >= 0, the GNMT `alpha` (`0`: plain sum of
            log-probabilities). Defaults to `0.6`.
        temperature: float > 0. Defaults to `1.0`.
        repetition_penalty: float > 0. Defaults to `1.0` (off).
        no_repeat_ngram_size: int >= 0. Defaults to `0` (off).

    Returns:
        Called, int32 `(batch_size, max_new_tokens)` (see `Sampler`).

    Example:

    >>> import numpy as np
    >>> from keras import ops
    >>> from keras_selfattn.models import BeamSampler
    >>> def step_fn(tokens, index, state):
    ...     # After 1: 2 (p=0.6) or 3 (p=0.4); after 2 the end 4 is unlikely
    ...     # (0.3), after 3 likely (0.9): the beam finds "3 4".
    ...     table = np.full((5, 5), 1e-6)
    ...     table[1, [2, 3]] = [0.6, 0.4]
    ...     table[2, [4, 2]] = [0.3, 0.7]
    ...     table[3, [4, 2]] = [0.9, 0.1]
    ...     table[4, 4] = 1.0
    ...     logits = ops.convert_to_tensor(np.log(table), "float32")
    ...     return ops.take(logits, tokens[:, 0], axis=0), state
    >>> beam = BeamSampler(beam_width=2, length_penalty=0.0)
    >>> ops.convert_to_numpy(beam(step_fn, (), [[1]], 4, 4)).tolist()
    [[3, 4, 0, 0]]

    References:
        - [Wu et al., 2016, Google's Neural Machine Translation System](
          https://arxiv.org/abs/1609.08144)
    """

    def __init__(
        self,
        beam_width=4,
        length_penalty=0.6,
        temperature=1.0,
        repetition_penalty=1.0,
        no_repeat_ngram_size=0,
    ):
        super().__init__(temperature, repetition_penalty, no_repeat_ngram_size)
        self.beam_width = _validation.positive_int("beam_width", beam_width)
        self.length_penalty = _validation.non_negative_float(
            "length_penalty", length_penalty
        )

    def _loop(
        self,
        step_fn,
        state,
        prompt,
        prompt_mask,
        max_new_tokens,
        stop,
        pad_id,
        seed,
    ):
        if len(stop) > 1:
            raise _validation.invalid(
                "stop_token_ids", "at most one id for beam search", stop
            )
        end_id = stop[0] if stop else _NO_END_ID
        batch_size = ops.shape(prompt)[0]
        prompt_len = prompt.shape[1] or ops.shape(prompt)[1]
        new = (batch_size, max_new_tokens)
        # The history (prompt and beam) rides in the state: `beam_search`
        # repeats it per beam and reorders it with the beams.
        tokens = ops.concatenate(
            [prompt, ops.full(new, pad_id, dtype="int32")], axis=1
        )
        valid = ops.concatenate(
            [prompt_mask, ops.zeros(new, dtype="bool")], axis=1
        )

        def beam_step(current, step, beam_state):
            inner, tokens, valid = beam_state
            index = prompt_len - 1 + step
            # Step 0 gets `beam_search`'s start id: feed the prompt's last
            # token instead; later steps feed the beam's own token.
            last = ops.slice(tokens, (0, index), (ops.shape(tokens)[0], 1))
            current = ops.where(ops.equal(step, 0), last, current)
            tokens = ops.slice_update(tokens, (0, index), current)
            valid = ops.slice_update(
                valid,
                (0, index),
                ops.logical_or(
                    ops.greater(step, 0),
                    ops.slice(valid, (0, index), (ops.shape(valid)[0], 1)),
                ),
            )
            logits, inner = step_fn(current, index, inner)
            logits = self.process_logits(logits, tokens, valid, index)
            return logits, (inner, tokens, valid)

        best, _ = generation.beam_search(
            beam_step,
            (state, tokens, valid),
            batch_size,
            max_new_tokens,
            start_id=pad_id,
            end_id=end_id,
            beam_width=self.beam_width,
            length_penalty=self.length_penalty,
            pad_id=pad_id,
        )
        return best

    def get_config(self):
        return {
            "beam_width": self.beam_width,
            "length_penalty": self.length_penalty,
            **super().get_config(),
        }


_NAMES = {
    "greedy": GreedySampler,
    "random": RandomSampler,
    "top_k": TopKSampler,
    "top_p": TopPSampler,
    "beam": BeamSampler,
    "configurable": ConfigurableSampler,
}


def get(identifier):
    """A sampler from a name, a config dict or a `Sampler`.

    Args:
        identifier: a `Sampler` (returned as is), one of `"greedy"`,
            `"random"`, `"top_k"`, `"top_p"`, `"beam"`, `"configurable"`
            (with default options), or a dict `{"class_name": ...,
            "config": {...}}` from
            `keras.saving.serialize_keras_object(sampler)`.

    Returns:
        A `Sampler`.

    Example:

    >>> from keras_selfattn.models import samplers
    >>> samplers.get("top_p")
    TopPSampler(p=0.9, k=None, temperature=1.0, ...)
    >>> samplers.get({"class_name": "TopKSampler", "config": {"k": 3}}).k
    3
    """
    if isinstance(identifier, Sampler):
        return identifier
    if isinstance(identifier, str) and identifier in _NAMES:
        return _NAMES[identifier]()
    if isinstance(identifier, dict):
        name = identifier.get("class_name")
        cls = _NAMES.get(name) or {c.__name__: c for c in _NAMES.values()}.get(
            name
        )
        if cls is None:
            cls = keras.saving.get_registered_object(str(name))
        if isinstance(cls, type) and issubclass(cls, Sampler):
            return cls.from_config(identifier.get("config", {}))
    names = ", ".join(repr(name) for name in _NAMES)
    raise _validation.invalid(
        "sampler", f"a Sampler, one of {names} or a config dict", identifier
    )
