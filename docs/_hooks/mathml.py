"""MkDocs hook: turn `pymdownx.arithmatex` maths into MathML at build time.

With `arithmatex: {generic: true}` the Markdown `$...$` and `$$...$$`
become `<span class="arithmatex">\\(...\\)</span>` and
`<div class="arithmatex">\\[...\\]</div>`. Browsers render MathML natively,
so converting here means the site needs no MathJax or KaTeX script from a
CDN: it works offline, and the headless-browser test sees no failed loads.
"""

import html
import re

from latex2mathml.converter import convert

_INLINE = re.compile(r'<span class="arithmatex">\\\((.*?)\\\)</span>', re.S)
_BLOCK = re.compile(r'<div class="arithmatex">\\\[(.*?)\\\]</div>', re.S)


def _mathml(tex, display):
    # arithmatex escapes `<`, `>` and `&` for HTML; the converter wants TeX.
    tex = html.unescape(tex).strip()
    # latex2mathml has no `aligned`; its `split` is the same table.
    tex = tex.replace("{aligned}", "{split}")
    return convert(tex, display=display)


def on_page_content(html_text, page, config, files):
    html_text = _BLOCK.sub(
        lambda m: f'<div class="math">{_mathml(m.group(1), "block")}</div>',
        html_text,
    )
    return _INLINE.sub(lambda m: _mathml(m.group(1), "inline"), html_text)
