"""Tests for the TSV / JSON Lines readers."""

import gzip
import json

import pytest

from keras_selfattn.text import find_split
from keras_selfattn.text import read_columns


def test_tsv_gzip_no_quoting_and_limit(tmp_path):
    path = tmp_path / "train.tsv.gz"
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.write('text\tlabel\n"quoted" start\t1\nplain\t0\nthird\t1\n')
    data = read_columns(str(path), ["label", "text"], limit=2)
    assert data == {"label": ["1", "0"], "text": ['"quoted" start', "plain"]}
    assert find_split(str(tmp_path), "train") == str(path)


def test_jsonl(tmp_path):
    path = tmp_path / "test.jsonl"
    rows = [{"dialogue": "A: hi\nB: yo", "summary": "greetings", "id": 1}]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    data = read_columns(str(path), ["dialogue", "summary"])
    assert data == {"dialogue": ["A: hi\nB: yo"], "summary": ["greetings"]}


def test_missing_column_and_file(tmp_path):
    path = tmp_path / "train.tsv"
    path.write_text("text\tlabel\nx\t1\n")
    with pytest.raises(ValueError, match=r"\['sentence'\] not found"):
        read_columns(str(path), ["sentence"])
    with pytest.raises(FileNotFoundError, match="No validation file"):
        find_split(str(tmp_path), "validation")
