"""Reading text datasets: TSV (no quoting) and JSON Lines, gzip or plain."""

import csv
import gzip
import json
import os

_EXTENSIONS = (".tsv.gz", ".tsv", ".jsonl.gz", ".jsonl")


def _open(path):
    opener = gzip.open if path.endswith(".gz") else open
    return opener(path, "rt", encoding="utf-8", newline="")


def find_split(data_dir, split):
    """The file for `split` (`train`, `validation`, `test`) in `data_dir`.

    Looks for `<split>.tsv.gz`, `.tsv`, `.jsonl.gz` and `.jsonl`.

    Args:
        data_dir: str, a folder.
        split: str, the split name.

    Returns:
        The path.

    Raises:
        FileNotFoundError: naming the folder and the names tried.

    Example:

    >>> import os, tempfile
    >>> from keras_selfattn.text import find_split
    >>> folder = tempfile.mkdtemp()
    >>> open(os.path.join(folder, "test.jsonl.gz"), "w").close()
    >>> os.path.basename(find_split(folder, "test"))
    'test.jsonl.gz'
    """
    for extension in _EXTENSIONS:
        path = os.path.join(data_dir, split + extension)
        if os.path.exists(path):
            return path
    tried = ", ".join(split + e for e in _EXTENSIONS)
    raise FileNotFoundError(f"No {split} file in {data_dir!r} (tried {tried})")


def read_columns(path, columns, limit=None):
    """Read named columns from a TSV or JSON Lines file (gzip or plain).

    TSV files have one header line, TAB separators and no quoting (a `"` is
    a literal character). JSON Lines files hold one object per line.

    Args:
        path: str, a `.tsv`, `.tsv.gz`, `.jsonl` or `.jsonl.gz` file.
        columns: list of str, the columns (TSV header names or JSON keys).
        limit: int or `None`, read at most this many rows.

    Returns:
        A dict mapping each column to a list of str.

    Raises:
        ValueError: when a column is missing, naming the columns found.

    Example:

    >>> import os, tempfile
    >>> from keras_selfattn.text import read_columns
    >>> path = os.path.join(tempfile.mkdtemp(), "train.tsv")
    >>> with open(path, "w") as f:
    ...     _ = f.write('text\\tlabel\\na "quoted" word\\t1\\n')
    >>> read_columns(path, ["text", "label"])
    {'text': ['a "quoted" word'], 'label': ['1']}
    """
    data = {c: [] for c in columns}
    with _open(path) as f:
        if ".jsonl" in os.path.basename(path):
            for number, line in enumerate(f, start=1):
                if limit is not None and number > limit:
                    break
                row = json.loads(line)
                missing = [c for c in columns if c not in row]
                if missing:
                    raise ValueError(
                        f"Column(s) {missing} not found in {path} line "
                        f"{number}; it has keys {sorted(row)}"
                    )
                for c in columns:
                    data[c].append(str(row[c]))
            return data
        reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        header = next(reader)
        missing = [c for c in columns if c not in header]
        if missing:
            raise ValueError(
                f"Column(s) {missing} not found in {path}; its header is "
                f"{header}"
            )
        index = [header.index(c) for c in columns]
        for number, row in enumerate(reader, start=1):
            if limit is not None and number > limit:
                break
            for c, i in zip(columns, index, strict=True):
                data[c].append(row[i])
    return data
