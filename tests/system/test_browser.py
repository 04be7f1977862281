"""A real browser against flashsrv: headless Chromium loads the embedded demo site over HTTPS
and says, through the DevTools protocol, which protocol and status each response came with.

Chromium is driven over `--remote-debugging-pipe` (DevTools messages as JSON, each ended by a
NUL byte, on the browser's descriptors 3 and 4): no websocket client, no new dependency. The
test CA is not installed anywhere: the browser is told to accept the server's certificate by
the SHA-256 of its public key (`--ignore-certificate-errors-spki-list`), which accepts that
certificate only. The machine has no internet, so every background service of the browser is
off (it would otherwise try to reach Google and be refused).
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import json
import os
import select
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

import pytest
from support import Serve, TlsFiles, get, tls_files, wait_until

CHROMIUM = shutil.which("chromium")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="chromium is not installed (tests/run installs it with apt-get)")

FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-extensions", "--remote-debugging-pipe")


class Assets(HTMLParser):
    """The URLs a page makes the browser load by itself: stylesheets and other <link>s,
    scripts, images, media and frames (not the <a> links, which wait for a click)."""

    LOADED = {"link": "href", "script": "src", "img": "src", "source": "src", "video": "src",
              "audio": "src", "iframe": "src", "embed": "src", "object": "data"}

    def __init__(self, base: str) -> None:
        super().__init__()
        self.base = base
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        wanted = self.LOADED.get(tag)
        value = dict(attrs).get(wanted) if wanted else None
        if value:
            self.urls.append(urljoin(self.base, value))


def spki_sha256(certs: TlsFiles) -> str:
    """Base64 of the SHA-256 of the server certificate's SubjectPublicKeyInfo."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    leaf = x509.load_pem_x509_certificates(certs.cert.read_bytes())[0]
    spki = leaf.public_key().public_bytes(serialization.Encoding.DER,
                                          serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(hashlib.sha256(spki).digest()).decode()


class Chromium:
    """A headless Chromium with its own profile in `folder`, driven over the DevTools pipe.
    Events that arrive while a command waits for its answer are kept in `events`."""

    def __init__(self, folder: Path, *flags: str) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "home").mkdir(exist_ok=True)
        self.log = folder / "chromium.log"
        to_browser, self._commands = os.pipe()
        self._answers, from_browser = os.pipe()

        def on_fds_3_and_4() -> None:  # in the child: above 10 first, so dup2 always copies
            commands = fcntl.fcntl(to_browser, fcntl.F_DUPFD, 10)
            answers = fcntl.fcntl(from_browser, fcntl.F_DUPFD, 10)
            os.dup2(commands, 3)
            os.dup2(answers, 4)

        assert CHROMIUM is not None
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                [CHROMIUM, *FLAGS, f"--user-data-dir={folder / 'profile'}", *flags,
                 "about:blank"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, close_fds=False,
                preexec_fn=on_fds_3_and_4, start_new_session=True,
                env={**os.environ, "HOME": str(folder / "home")})  # its NSS db, caches ...
        os.close(to_browser)
        os.close(from_browser)
        self._buffer = b""
        self._next_id = 0
        self.events: list[dict[str, Any]] = []

    def _receive(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            ready, _, _ = select.select([self._answers], [], [], max(0.0, left))
            if not ready:
                raise TimeoutError(f"Chromium said nothing in time; its log:\n{self.tail()}")
            data = os.read(self._answers, 1 << 16)
            if not data:
                raise ConnectionError(f"Chromium closed the pipe; its log:\n{self.tail()}")
            self._buffer += data
        message, _, self._buffer = self._buffer.partition(b"\0")
        return json.loads(message)

    def call(self, method: str, params: dict[str, Any] | None = None,
             session: str | None = None, timeout: float = 10.0) -> dict[str, Any]:
        """Send one command (to a page's session when given) and return its result."""
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method,
                                   "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self._commands, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            answer = self._receive(deadline)
            if answer.get("id") == self._next_id:
                assert "error" not in answer, f"{method}: {answer['error']}"
                return answer["result"]
            self.events.append(answer)

    def wait_for(self, done: Callable[[], bool], timeout: float = 15.0) -> None:
        """Read events (into `events`) until done() is true."""
        deadline = time.monotonic() + timeout
        while not done():
            self.events.append(self._receive(deadline))

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]

    def close(self) -> None:
        with contextlib.suppress(OSError, TimeoutError, ConnectionError, AssertionError):
            self.call("Browser.close", timeout=5)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)  # its own session: it and its children
            self.proc.wait(5)
        finally:
            os.close(self._commands)
            os.close(self._answers)


@dataclass
class PageLoad:
    """What the browser reported for one load of a page: the response of each URL (the
    DevTools `Network.Response`: status, protocol, securityState ...) and the error of each
    URL that failed."""

    responses: dict[str, dict[str, Any]]
    failed: dict[str, str]


class Tab:
    """A new tab of the browser, its network and page events on."""

    def __init__(self, browser: Chromium) -> None:
        self.browser = browser
        target = browser.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        self.session = browser.call("Target.attachToTarget",
                                    {"targetId": target, "flatten": True})["sessionId"]
        self.call("Network.enable")
        self.call("Page.enable")

    def call(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        return self.browser.call(method, params, session=self.session)

    def _params(self, method: str) -> list[dict[str, Any]]:
        return [e["params"] for e in self.browser.events
                if e.get("sessionId") == self.session and e.get("method") == method]

    def _settled(self, urls: set[str]) -> bool:
        """The load event came and every request for one of urls has finished or failed (not
        every request: one the browser makes for itself, as for a favicon, may be dropped
        without a word when the next page is loaded)."""
        started = {p["requestId"] for p in self._params("Network.requestWillBeSent")
                   if p["request"]["url"] in urls}
        ended = {p["requestId"] for p in self._params("Network.loadingFinished")
                 + self._params("Network.loadingFailed")}
        return bool(self._params("Page.loadEventFired")) and started <= ended

    def load(self, url: str, expected: Iterable[str] = (), reload: bool = False) -> PageLoad:
        """Go to url (reload=True: reload it, as the reload button does) and wait for the load
        event and for the requests for url and for each URL in `expected` to end."""
        self.browser.events.clear()
        if reload:
            self.call("Page.reload")
        else:
            navigated = self.call("Page.navigate", {"url": url})
            assert "errorText" not in navigated, \
                f"{url}: {navigated['errorText']}\n{self.browser.tail()}"
        self.browser.wait_for(lambda: self._settled({url, *expected}))
        urls = {p["requestId"]: p["request"]["url"]
                for p in self._params("Network.requestWillBeSent")}
        return PageLoad({p["response"]["url"]: p["response"]
                         for p in self._params("Network.responseReceived")},
                        {urls[p["requestId"]]: p["errorText"]
                         for p in self._params("Network.loadingFailed")})

    def evaluate(self, expression: str) -> Any:
        return self.call("Runtime.evaluate", {"expression": expression, "returnByValue": True}
                         )["result"]["value"]


def test_chromium_loads_the_demo_site_over_h2_with_every_asset(serve: Serve, tmp_path: Path):
    certs = tls_files(tmp_path / "certs")
    server = serve(None, *certs.args, "--access-log", "-", https=True)
    page = f"https://127.0.0.1:{server.https_port}/"
    html = get(server.over_tls(certs.client_context()), "/")
    assert html.status == 200
    parser = Assets(page)
    parser.feed(html.body.decode())
    assets = parser.urls
    assert len(assets) >= 3, f"the demo page references only {assets}"  # css, logo, script

    browser = Chromium(tmp_path / "chromium",
                       f"--ignore-certificate-errors-spki-list={spki_sha256(certs)}")
    try:
        tab = Tab(browser)
        first = tab.load(page, assets)
        # What the browser made of them: the script ran, the logo decoded, the style applied.
        rendered = tab.evaluate("[document.documentElement.dataset.served || null,"
                                " [...document.images].map(i => i.naturalWidth),"
                                " document.styleSheets.length]")
        again = tab.load(page, assets, reload=True)  # the reload button: a revalidation
    finally:
        browser.close()

    for visit in (first, again):
        assert not {url: error for url, error in visit.failed.items()
                    if url in (page, *assets)}, visit.failed
        report = {url: (r["status"], r["protocol"]) for url, r in visit.responses.items()}
        assert {protocol for _, protocol in report.values()} == {"h2"}, report
        assert visit.responses[page]["securityState"] == "secure", visit.responses[page]
        assert all(report.get(url) in ((200, "h2"), (304, "h2")) for url in (page, *assets)), \
            report  # (after a reload, Chromium shows the page's kept 200, its assets' 304s)
    assert all(first.responses[url]["status"] == 200 for url in (page, *assets))
    served, image_widths, stylesheets = rendered
    assert served == "flashsrv" and image_widths and all(image_widths) and stylesheets >= 1, \
        rendered

    paths = ["/", *(urlsplit(url).path for url in assets)]
    for line in [*(f'"GET {path} HTTP/2.0" 200' for path in paths), '"GET / HTTP/2.0" 304']:
        assert wait_until(lambda line=line: line in server.stdout_text(), 5), \
            f"no {line} in the access log:\n{server.stdout_text()[-3000:]}"
