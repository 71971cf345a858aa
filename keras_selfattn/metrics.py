"""Standard text-generation metrics: BLEU (sacrebleu) and ROUGE (rouge-score).

Thin wrappers over the reference implementations, so scores are
comparable with published numbers; the packages are imported on first use
(install them with `pip install "keras-selfattn[metrics]"`).
"""

import importlib


def _require(module, package):
    try:
        return importlib.import_module(module)
    except ImportError as error:  # pragma: no cover - depends on the env
        raise ImportError(
            f"This metric needs {package}: pip install "
            '"keras-selfattn[metrics]"'
        ) from error


def _check_pairs(hypotheses, references):
    hypotheses, references = list(hypotheses), list(references)
    if len(hypotheses) != len(references):
        raise ValueError(
            "Received an invalid value for argument `references`, expected "
            f"one reference per hypothesis ({len(hypotheses)}). Received: "
            f"{len(references)} references"
        )
    return hypotheses, references


def bleu(hypotheses, references, tokenize="13a", lowercase=False):
    """Corpus BLEU with sacrebleu (the field's standard scorer).

    Args:
        hypotheses: list of str, system outputs (detokenized text).
        references: list of str, one reference per hypothesis.
        tokenize: str, sacrebleu's tokenizer. Defaults to `"13a"` (WMT).
        lowercase: bool, case-insensitive BLEU. Defaults to `False`.

    Returns:
        A dict: `bleu` (0-100), `signature` (sacrebleu's reproducibility
        string) and the n-gram `precisions`.

    Example:

    >>> from keras_selfattn.metrics import bleu
    >>> score = bleu(["the cat sat on the mat"], ["the cat sat on the mat"])
    >>> round(score["bleu"], 6)
    100.0
    """
    hypotheses, references = _check_pairs(hypotheses, references)
    sacrebleu = _require("sacrebleu", "sacrebleu")
    metric = sacrebleu.metrics.BLEU(tokenize=tokenize, lowercase=lowercase)
    score = metric.corpus_score(hypotheses, [references])
    return {
        "bleu": float(score.score),
        "precisions": [float(p) for p in score.precisions],
        "signature": str(metric.get_signature()),
    }


def rouge(hypotheses, references, use_stemmer=True):
    """ROUGE-1/2/L/Lsum F1 (x100), averaged over examples, with Google's
    `rouge-score` package.

    For `rougeLsum`, sentences are split on newlines (as in the summarization
    literature): put each sentence on its own line.

    Args:
        hypotheses: list of str, system summaries.
        references: list of str, one reference per hypothesis.
        use_stemmer: bool, Porter stemming. Defaults to `True`.

    Returns:
        A dict with `rouge1`, `rouge2`, `rougeL`, `rougeLsum` (0-100).

    Example:

    >>> from keras_selfattn.metrics import rouge
    >>> scores = rouge(["the cat sat"], ["the cat sat down"])
    >>> round(scores["rouge1"], 1)
    85.7
    """
    hypotheses, references = _check_pairs(hypotheses, references)
    scorer_module = _require("rouge_score.rouge_scorer", "rouge-score")
    keys = ["rouge1", "rouge2", "rougeL", "rougeLsum"]
    scorer = scorer_module.RougeScorer(keys, use_stemmer=use_stemmer)
    totals = dict.fromkeys(keys, 0.0)
    for hypothesis, reference in zip(hypotheses, references, strict=True):
        scores = scorer.score(reference, hypothesis)
        for key in keys:
            totals[key] += scores[key].fmeasure
    count = max(len(hypotheses), 1)
    return {key: 100.0 * totals[key] / count for key in keys}
