"""BLEU and ROUGE wrappers reproduce the reference numbers of the data."""

import os

import pytest

from keras_selfattn.metrics import bleu
from keras_selfattn.metrics import rouge
from keras_selfattn.text import read_columns


def test_bleu_perfect_and_zero():
    assert round(bleu(["a b c d e"], ["a b c d e"])["bleu"], 6) == 100.0
    assert bleu(["x y z w"], ["a b c d"])["bleu"] == 0.0
    assert "tok:13a" in bleu(["a"], ["a"])["signature"]


def test_rouge_by_hand():
    scores = rouge(["the cat sat"], ["the cat sat down"])
    # ROUGE-1: P = 3/3, R = 3/4, F = 6/7.
    assert scores["rouge1"] == pytest.approx(100 * 6 / 7)
    # ROUGE-2: bigrams 2/2 and 2/3: F = 0.8.
    assert scores["rouge2"] == pytest.approx(80.0)


def test_mismatched_lengths():
    with pytest.raises(ValueError, match="argument `references`"):
        bleu(["a", "b"], ["a"])
    with pytest.raises(ValueError, match="argument `references`"):
        rouge(["a"], [])


@pytest.mark.shared_data
def test_copy_source_bleu_matches_the_data_readme(shared_data):
    path = os.path.join(shared_data, "translation", "spa_eng", "test.tsv.gz")
    data = read_columns(path, ["en", "es"])
    # The README: copying the English source scores BLEU 0.55.
    assert bleu(data["en"], data["es"])["bleu"] == pytest.approx(0.55, abs=5e-3)


@pytest.mark.shared_data
def test_lead3_rouge_matches_the_data_readme(shared_data):
    path = os.path.join(shared_data, "summarization", "samsum", "test.jsonl.gz")
    data = read_columns(path, ["dialogue", "summary"])
    lead3 = ["\n".join(d.split("\n")[:3]) for d in data["dialogue"]]
    scores = rouge(lead3, data["summary"])
    # The README: LEAD-3 ROUGE-1/2/Lsum 31.31 / 8.68 / 27.57.
    assert scores["rouge1"] == pytest.approx(31.31, abs=0.01)
    assert scores["rouge2"] == pytest.approx(8.68, abs=0.01)
    assert scores["rougeLsum"] == pytest.approx(27.57, abs=0.01)
