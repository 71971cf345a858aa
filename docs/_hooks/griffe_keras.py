"""Griffe extension: read Keras-style docstrings as Google-style sections.

The library's docstrings follow Keras and KerasHub: the `>>>` lines of an
`Example:` section (griffe only knows `Examples:`) start at the left
margin after a blank line, and
`Call arguments:` lists `name: description` items like `Args:`. Griffe's
Google parser needs an indented section body, so this extension indents
the example (griffe then renders it as code) and turns the call arguments
into a Markdown list. Only the rendering changes, never the source text.
"""

import re

import griffe

# A section title at the left margin, e.g. `References:`.
_TITLE = re.compile(r"^[A-Z][A-Za-z ]*:$")
# An item of an argument list: `name: description`.
_ITEM = re.compile(r"^(\s*)(\*{0,2}\w+):\s(.*)$")


def _indent_examples(lines):
    out = []
    i = 0
    while i < len(lines):
        line = lines[i]
        out.append(line)
        i += 1
        if line.rstrip() not in ("Example:", "Examples:"):
            continue
        j = i
        while j < len(lines) and not lines[j].strip():
            j += 1
        if j == len(lines) or not lines[j].startswith(">>>"):
            continue
        # Griffe knows `Examples:`, not Keras' singular `Example:`.
        out[-1] = "Examples:"
        # Griffe skips a section whose title has a blank line below it.
        i = j
        while i < len(lines) and not _TITLE.match(lines[i]):
            out.append(f"    {lines[i]}" if lines[i].strip() else "")
            i += 1
        if i < len(lines) and out[-1]:
            out.append("")
    return out


def _list_call_arguments(lines):
    out = []
    inside = None  # the indentation of the items while in the section
    for line in lines:
        if line.strip() == "Call arguments:":
            inside = len(line) - len(line.lstrip()) + 4
            out.append(line)
            continue
        if inside is not None:
            if line.strip() and len(line) - len(line.lstrip()) < inside:
                inside = None
            else:
                match = _ITEM.match(line)
                if match and len(match.group(1)) == inside:
                    indent, name, text = match.groups()
                    line = f"{indent}- `{name}`: {text}"
        out.append(line)
    return out


def rewrite(text):
    """The docstring `text` with its examples indented and lists marked."""
    lines = text.split("\n")
    return "\n".join(_list_call_arguments(_indent_examples(lines)))


class KerasDocstrings(griffe.Extension):
    """Rewrites each docstring before griffe parses it."""

    def on_instance(self, *, obj, **kwargs):
        if obj.docstring is not None:
            obj.docstring.value = rewrite(obj.docstring.value)
