"""Fenced Python blocks in README.md and docs/*.md run as tests."""

import glob
import os
import re

import pytest

ROOT = os.path.join(os.path.dirname(__file__), os.pardir)
FILES = [os.path.join(ROOT, "README.md")] + sorted(
    glob.glob(os.path.join(ROOT, "docs", "**", "*.md"), recursive=True)
)
BLOCK = re.compile(
    r"(?:<!-- skip-test: ([^>]+) -->\n)?^```python\n(.*?)^```",
    re.DOTALL | re.MULTILINE,
)


def _blocks():
    for path in FILES:
        with open(path, encoding="utf-8") as f:
            text = f.read()
        for i, match in enumerate(BLOCK.finditer(text)):
            name = f"{os.path.relpath(path, ROOT)}#{i}"
            # A block that needs a running server says so, with a reason.
            marks = [pytest.mark.skip(match.group(1))] if match.group(1) else []
            yield pytest.param(match.group(2), id=name, marks=marks)


@pytest.mark.parametrize("code", list(_blocks()))
def test_python_block_runs(code, tmp_path, monkeypatch):
    # Each block runs on its own, in a scratch directory.
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "<docs>", "exec"), {"__name__": "__docs__"})


def test_readme_has_a_python_block():
    assert any(True for _ in _blocks())
