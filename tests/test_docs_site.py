"""The documentation site builds and works in a real headless browser.

`mkdocs build --strict` turns any warning (a broken link, a docstring
reference that no longer resolves, a page missing from the nav) into an
error. Then, when Chromium is installed (Debian's `chromium`), the built
site is served on 127.0.0.1 and driven through the Chrome DevTools
protocol over a pipe (`--remote-debugging-pipe`, standard library only):
the home page and an API page render, typing in the search box finds an
API name, no page logs a console error or an uncaught exception, and a
screenshot is kept under the build output (`screenshot.png`).

Set `KERAS_SELFATTN_SITE_DIR` to build into a folder that outlives the
test run (CI can keep it as an artifact); by default it is a pytest
temporary folder.
"""

import base64
import functools
import http.server
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import threading
import time

import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), os.pardir))
DOCS_PACKAGES = ("mkdocs", "material", "mkdocstrings", "latex2mathml")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# An API name that only the generated reference (a docstring) provides.
API_NAME = "keras_selfattn.models.Seq2SeqTransformer"


def _missing_docs_packages():
    return [p for p in DOCS_PACKAGES if importlib.util.find_spec(p) is None]


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    missing = _missing_docs_packages()
    if missing:
        pytest.skip(
            f"the docs tools are not installed ({', '.join(missing)}): "
            'pip install -e ".[docs]"'
        )
    out = os.environ.get("KERAS_SELFATTN_SITE_DIR") or str(
        tmp_path_factory.mktemp("site")
    )
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict"]
        + ["--config-file", os.path.join(ROOT, "mkdocs.yml")]
        + ["--site-dir", out],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert result.returncode == 0, (
        f"mkdocs build --strict failed:\n{result.stderr[-6000:]}"
    )
    return out


def _read(site, *parts):
    with open(os.path.join(site, *parts), encoding="utf-8") as f:
        return f.read()


def test_site_has_every_page(site):
    for page in (
        "index.html",
        "getting-started/index.html",
        "layers/multi-head-self-attention/index.html",
        "masking/index.html",
        "saving/index.html",
        "tokenizers/index.html",
        "serving/index.html",
        "performance/index.html",
        "mixed-precision/index.html",
        "distributed/index.html",
        "migration/index.html",
        "examples/translation/index.html",
        "api/models/index.html",
        "assets/scaling.png",
    ):
        assert os.path.isfile(os.path.join(site, page)), page
    # The build hooks are not published as pages.
    assert not os.path.exists(os.path.join(site, "_hooks"))


def test_api_reference_is_generated_from_docstrings(site):
    html = _read(site, "api", "models", "index.html")
    assert f'id="{API_NAME}"' in html
    # A phrase from the class docstring, rendered from the source.
    assert "An encoder-decoder Transformer" in html
    layer = _read(site, "layers", "multi-head-self-attention", "index.html")
    # Every constructor argument is documented, from the `Args:` section.
    for argument in ("num_heads", "attention_impl", "chunk_size", "window"):
        assert f"<code>{argument}</code>" in layer, argument


def test_maths_is_mathml_and_nothing_loads_from_other_hosts(site):
    layer = _read(site, "layers", "multi-head-self-attention", "index.html")
    assert "<math" in layer
    assert 'class="arithmatex"' not in layer  # every formula was converted
    for page in ("index.html", os.path.join("api", "models", "index.html")):
        html = _read(site, page)
        # Offline-safe: no web fonts, scripts or styles from a CDN.
        for attribute in ('src="http', 'href="https://fonts', "cdn."):
            assert attribute not in html, (page, attribute)


def test_search_index_holds_the_api(site):
    index = json.loads(_read(site, "search", "search_index.json"))
    locations = {doc["location"] for doc in index["docs"]}
    assert f"api/models/#{API_NAME}" in locations
    assert any(
        "MultiHeadSelfAttention" in doc["title"] for doc in index["docs"]
    )


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def server(site):
    handler = functools.partial(_Quiet, directory=site)
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


# Puts the two pipe ends on fds 3 and 4, then becomes Chromium. (A shell
# could do it with `3<&N`, but dash only takes single-digit fd numbers.)
_TRAMPOLINE = """
import fcntl, os, sys
ends = [fcntl.fcntl(int(fd), fcntl.F_DUPFD, 10) for fd in sys.argv[1:3]]
for fd in sys.argv[1:3]:
    os.close(int(fd))
os.dup2(ends[0], 3)
os.dup2(ends[1], 4)
os.close(ends[0])
os.close(ends[1])
os.execv(sys.argv[3], sys.argv[3:])
"""


class DevTools:
    """A minimal Chrome DevTools protocol client over a pipe.

    With `--remote-debugging-pipe` Chromium reads NUL-terminated JSON
    commands on fd 3 and writes replies and events on fd 4.
    """

    def __init__(self, binary, profile_dir, log_path):
        to_browser_read, self._to_browser = os.pipe()
        self._from_browser, from_browser_write = os.pipe()
        flags = [
            "--headless",
            "--no-sandbox",  # CI runs as root
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--hide-scrollbars",
            "--window-size=1280,1000",
            # No network but loopback: keep Chromium from calling home.
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={profile_dir}",
            "--remote-debugging-pipe",
            "about:blank",
        ]
        self._log = open(log_path, "wb")  # closed in close()
        self.process = subprocess.Popen(
            [sys.executable, "-c", _TRAMPOLINE]
            + [str(to_browser_read), str(from_browser_write), binary, *flags],
            pass_fds=(to_browser_read, from_browser_write),
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        os.close(to_browser_read)
        os.close(from_browser_write)
        self._next_id = 0
        self._replies = {}
        self.events = []  # every event, for the console checks
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self):
        buffer = b""
        while True:
            try:
                chunk = os.read(self._from_browser, 1 << 16)
            except OSError:  # closed by close()
                return
            if not chunk:
                return
            buffer += chunk
            while b"\0" in buffer:
                raw, buffer = buffer.split(b"\0", 1)
                message = json.loads(raw)
                if "id" in message:
                    self._replies[message["id"]] = message
                else:
                    self.events.append(message)

    def send(self, method, params=None, session=None, timeout=20.0):
        self._next_id += 1
        message = {"id": self._next_id, "method": method}
        message["params"] = params or {}
        if session:
            message["sessionId"] = session
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while self._next_id not in self._replies:
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise TimeoutError(f"no reply to {method}")
            time.sleep(0.01)
        reply = self._replies.pop(self._next_id)
        if "error" in reply:
            raise RuntimeError(f"{method}: {reply['error']}")
        return reply.get("result", {})

    def close(self):
        try:
            self.send("Browser.close", timeout=5.0)
        except (OSError, RuntimeError, TimeoutError):
            pass
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)
        for fd in (self._to_browser, self._from_browser):
            try:
                os.close(fd)
            except OSError:
                pass
        self._log.close()


class Page:
    """One browser tab attached through a flat DevTools session."""

    def __init__(self, browser):
        self.browser = browser
        target = browser.send("Target.createTarget", {"url": "about:blank"})
        self.session = browser.send(
            "Target.attachToTarget",
            {"targetId": target["targetId"], "flatten": True},
        )["sessionId"]
        for domain in ("Page", "Runtime", "Log"):
            self.send(f"{domain}.enable")

    def send(self, method, params=None, timeout=20.0):
        return self.browser.send(method, params, self.session, timeout)

    def open(self, url):
        since = len(self.browser.events)
        self.send("Page.navigate", {"url": url})
        deadline = time.monotonic() + 20
        while not any(
            e.get("method") == "Page.loadEventFired"
            and e.get("sessionId") == self.session
            for e in self.browser.events[since:]
        ):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{url} did not load")
            time.sleep(0.05)

    def evaluate(self, expression):
        result = self.send(
            "Runtime.evaluate",
            {"expression": expression, "returnByValue": True},
        )
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_until(self, expression, timeout=20.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = self.evaluate(expression)
            if value:
                return value
            time.sleep(0.1)
        raise TimeoutError(f"never true: {expression}")

    def type(self, text):
        # Real key events, as a user's keyboard sends them.
        for char in text:
            self.send(
                "Input.dispatchKeyEvent",
                {"type": "keyDown", "text": char, "key": char},
            )
            self.send("Input.dispatchKeyEvent", {"type": "keyUp", "key": char})

    def screenshot(self, path):
        data = self.send("Page.captureScreenshot", {"format": "png"})["data"]
        with open(path, "wb") as f:
            f.write(base64.b64decode(data))
        return path


# The text of the page's first heading, without its permalink sign.
H1 = (
    "Array.from(document.querySelector('h1').childNodes)"
    ".filter(n => !(n.classList && n.classList.contains('headerlink')))"
    ".map(n => n.textContent).join('').trim()"
)


def _console_errors(events):
    errors = []
    for event in events:
        method, params = event.get("method"), event.get("params", {})
        if method == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails", {})
            errors.append(f"uncaught: {details.get('text')} {details}")
        elif method == "Runtime.consoleAPICalled" and params.get("type") in (
            "error",
            "assert",
        ):
            args = [
                a.get("value", a.get("description")) for a in params["args"]
            ]
            errors.append(f"console.{params['type']}: {args}")
        elif method == "Log.entryAdded":
            entry = params.get("entry", {})
            if entry.get("level") == "error":
                errors.append(f"log: {entry.get('text')} {entry.get('url')}")
    return errors


@pytest.fixture(scope="module")
def browser(site, tmp_path_factory):
    if CHROMIUM is None:
        pytest.skip(
            "no chromium or chromium-browser on PATH: the browser checks "
            "need Debian's chromium (apt-get install -y chromium)"
        )
    profile = tmp_path_factory.mktemp("chromium-profile")
    browser = DevTools(CHROMIUM, str(profile), str(profile / "chromium.log"))
    try:
        browser.send("Browser.getVersion", timeout=30.0)
    except (OSError, RuntimeError, TimeoutError):
        browser.close()
        with open(profile / "chromium.log", "rb") as f:
            log = f.read()[-3000:].decode("utf-8", "replace")
        pytest.fail(f"Chromium did not start:\n{log}")
    yield browser
    browser.close()


def test_pages_render_search_works_and_no_console_errors(site, server, browser):
    page = Page(browser)

    # The home page renders, with its heading, the nav and the search box.
    page.open(f"{server}/")
    assert page.evaluate("document.title").startswith("keras-selfattn")
    assert page.evaluate(H1) == "keras-selfattn"
    dom = page.evaluate("document.documentElement.outerHTML")
    for text in ("Getting started", "API reference", "TransformerBlock"):
        assert text in dom, text
    shot = page.screenshot(os.path.join(site, "screenshot.png"))
    with open(shot, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"

    # The search box: type an API name, wait for Material's results.
    page.evaluate("document.querySelector('.md-search__input').focus()")
    page.type("Seq2SeqTransformer")
    results = page.wait_until(
        "Array.from(document.querySelectorAll('.md-search-result__item'))"
        ".map(e => e.textContent).join('\\n')"
    )
    assert "Seq2SeqTransformer" in results
    links = page.evaluate(
        "Array.from(document.querySelectorAll('.md-search-result__link'))"
        ".map(a => a.getAttribute('href'))"
    )
    assert any(API_NAME in link for link in links), links
    page.screenshot(os.path.join(site, "screenshot-search.png"))

    # An API page renders the generated reference.
    page.open(f"{server}/api/models/")
    assert page.evaluate(H1) == "keras_selfattn.models"
    assert page.evaluate(f"!!document.getElementById('{API_NAME}')")

    # A layer page: its formulas render as MathML with a real size.
    page.open(f"{server}/layers/multi-head-self-attention/")
    height = page.evaluate(
        "document.querySelector('div.math math').getBoundingClientRect().height"
    )
    assert height > 10

    errors = _console_errors(browser.events)
    assert not errors, "\n".join(errors)

    # The listeners work: a deliberate console error and an uncaught
    # exception are both seen, so the check above could fail.
    page.evaluate("console.error('probe: console')")
    page.evaluate("setTimeout(() => { throw new Error('probe: uncaught'); })")
    deadline = time.monotonic() + 10
    while len(_console_errors(browser.events)) < 2:
        assert time.monotonic() < deadline, _console_errors(browser.events)
        time.sleep(0.05)
