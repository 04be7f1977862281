"""Reading requests: the httptools callbacks, the limits httptools leaves to us, and the
`Request` they produce.

httptools calls `on_url`, `on_header`, `on_body` and `on_message_complete` while `feed` hands
it bytes; this class counts and checks (URL, header and body sizes, Host, framing, versions)
and hands each complete request to `request_received`, or a refusal to `reject`. It is a base
class of the connection (so httptools calls straight into it, with no indirection on the hot
path) and knows nothing of responses, files or the loop: the hooks below are the connection's.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Literal

from httptools import (
    HttpParserCallbackError,
    HttpParserError,
    HttpParserInvalidMethodError,
    HttpParserUpgrade,
    HttpRequestParser,
)

from flashsrv.fields import only_chunked, unparsed_method_status, valid_host
from flashsrv.prepared import Parsed, RepeatedRequests
from flashsrv.responder import Request
from flashsrv.urlpath import BadTarget, split_target, target_authority

if TYPE_CHECKING:
    from flashsrv.site import Site

log = logging.getLogger("flashsrv.connection")

MAX_URL_BYTES = 8192
MAX_HEADER_BYTES = 32768
MAX_HEADERS = 100
# Bytes a request head may take before it is complete, counted per data_received call:
# a coarse bound that also covers what httptools accumulates before it calls on_header.
MAX_PENDING_HEAD = 1 << 20
# A GET or HEAD body means nothing here; beyond this size it is refused rather than drained.
MAX_BODY_BYTES = 1 << 20
# The request headers the response depends on; all others are counted and dropped.
SEMANTIC_HEADERS = frozenset({
    b"accept", b"accept-encoding", b"if-match", b"if-none-match", b"if-modified-since",
    b"if-unmodified-since", b"if-range", b"range", b"expect", b"transfer-encoding", b"upgrade",
})
# Of those, the ones that may change the answer for a file with one representation: a request
# with none of them may be answered with a prepared response (`flashsrv.prepared`).
NOT_PLAIN = SEMANTIC_HEADERS - {b"accept", b"accept-encoding"}
# Headers only the access log reads (its combined and JSON formats record them): kept when it
# asks, and they leave a request plain, so the fast lane logs them too.
LOGGED_HEADERS = frozenset({b"referer", b"user-agent"})
SEMANTIC_AND_LOGGED = SEMANTIC_HEADERS | LOGGED_HEADERS
# What llhttp reports when it has read the whole HTTP/2 preface (`PRI * HTTP/2.0...`).
PREFACE_SEEN = "Pause on PRI/Upgrade"
CONDITIONAL_HEADERS = frozenset({
    b"if-match", b"if-none-match", b"if-modified-since", b"if-unmodified-since", b"range",
})


class Reject(Exception):
    """Raised from a parser callback: answer with this status and close the connection."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


class RequestReader:
    """The parser's callbacks and per-request state. Subclasses provide the hooks."""

    site: Site

    def __init__(self, log_headers: bool = False,
                 repeats: RepeatedRequests | None = None) -> None:
        self.parser = HttpRequestParser(self)
        # The request headers kept; chosen once per connection, so logging them costs nothing
        # when the log does not want them.
        self._kept = SEMANTIC_AND_LOGGED if log_headers else SEMANTIC_HEADERS
        self._input_closed = False
        self._host_ok = b""
        # Whole requests answered by `answer_prepared`, by their exact bytes (shared by the
        # connections of a site); None: every request goes through the parser.
        self._repeats = repeats
        # The parser holds no byte of an unfinished message: the next read starts a request.
        self._at_start = True
        # Of the messages one read completed: what the first parsed to, if `answer_prepared`
        # answered it; False once a second message, or one answered otherwise, completed.
        self._answered: Parsed | Literal[False] | None = None
        self._next_message()

    # -- hooks (the connection's) ------------------------------------------------------------

    def request_received(self, request: Request) -> None:
        raise NotImplementedError

    def answer_prepared(self, target: bytes, host: bytes, headers: dict[str, str]) -> bool:
        """Answer a plain keep-alive HTTP/1.1 GET of target (asked of host, with the kept
        header fields) from a prepared response, if one is kept and the connection is free to
        write it; whether it did."""
        raise NotImplementedError

    def reject(self, status: int, detail: str) -> None:
        raise NotImplementedError

    def expect_continue(self) -> None:
        raise NotImplementedError

    def head_started(self) -> None:
        """A request's head has begun and is not complete yet (called after each read while
        that is so): the connection starts its deadline, once."""
        raise NotImplementedError

    def body_started(self) -> None:
        """A request body has begun: it must all arrive within one deadline from here."""
        raise NotImplementedError

    def upgrade_seen(self) -> None:
        raise NotImplementedError

    def preface_received(self, data: bytes) -> bool:
        """The parser stopped at the end of an HTTP/2 connection preface, whose last bytes are
        in data (a parse error, so HTTP/1 requests never pay for this check): whether the
        connection took it over (h2c with prior knowledge) rather than refusing it."""
        raise NotImplementedError

    # -- bytes in ---------------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        """Parse data; a parse error or a refused request becomes `reject`. Nothing is read
        once input is closed (refused, closing or gone).

        Bytes that start at a message boundary and equal a whole request answered from a
        prepared response before are answered again without the parser: the same bytes in
        the same parser state make the same request, checks included."""
        if self._input_closed:
            return
        at_start = self._at_start
        if at_start and self._repeats is not None:
            parsed = self._repeats.get(data)
            if parsed is not None and self.answer_prepared(*parsed):
                return
        self._at_start = False
        self._answered = None
        try:
            self.parser.feed_data(data)
        except HttpParserCallbackError as exc:
            cause = exc.__context__
            if isinstance(cause, Reject):
                self.reject(cause.status, cause.detail)
            else:
                log.error("internal error while parsing a request", exc_info=cause)
                self.reject(500, "")
            return
        except HttpParserUpgrade:
            self.upgrade_seen()
        except HttpParserInvalidMethodError:
            status = unparsed_method_status(data)
            self.reject(status, "method not implemented" if status == 501 else "bad method")
            return
        except HttpParserError as exc:
            detail = str(exc)
            if detail == PREFACE_SEEN and self.preface_received(data):
                return
            self.reject(505 if detail == "Invalid HTTP version" else 400, detail)
            return
        if self._url:
            if self._in_head:  # a head still incomplete after these bytes
                self._pending_head += len(data)
                if self._pending_head > MAX_PENDING_HEAD:
                    self.reject(431, "request head too large")
                else:
                    self.head_started()
        elif data.endswith(b"\r\n\r\n") and self._answered is not None:
            # A message ended with these bytes and no request line has begun since: the
            # next read starts a request. (A partial method cannot end in a blank line.)
            self._at_start = True
            answered = self._answered
            if at_start and answered and self._repeats is not None:
                self._repeats.remember(data, answered)

    # -- parser events ------------------------------------------------------------------------

    def _next_message(self) -> None:
        """Reset the per-request state (instead of an on_message_begin callback, which would
        cost a Python call per request)."""
        self._url = b""
        self._headers: dict[str, str] = {}
        self._header_count = 0
        self._has_host = False
        self._conditional = False
        self._plain = True
        self._head_bytes = 0
        self._pending_head = 0
        self._body_bytes = 0
        self._in_head = True

    def on_url(self, url: bytes) -> None:
        self._url += url
        if len(self._url) > MAX_URL_BYTES:
            raise Reject(414, "request-target too long")

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head_bytes += len(name) + len(value) + 4
        self._header_count += 1
        if self._head_bytes > MAX_HEADER_BYTES or self._header_count > MAX_HEADERS:
            raise Reject(431, "request header fields too large")
        key = name.lower()
        if key == b"host":
            if self._has_host:
                raise Reject(400, "more than one Host header")
            self._has_host = True
            if value != self._host_ok:
                if not valid_host(value):
                    raise Reject(400, "invalid Host header")
                self._host_ok = value  # a keep-alive client repeats it: check it once
            self._headers["host"] = value.decode("latin-1")  # virtual hosts choose by it
        elif key in self._kept:
            if key in NOT_PLAIN:
                self._plain = False
                if key in CONDITIONAL_HEADERS:
                    self._conditional = True
                elif key == b"expect":
                    self._expect(value)
                elif key == b"transfer-encoding":
                    if "transfer-encoding" in self._headers:
                        raise Reject(400, "more than one Transfer-Encoding header")
                    if not only_chunked(value):
                        raise Reject(501, "transfer coding not implemented")
            text_key = key.decode("latin-1")
            text = value.decode("latin-1")
            old = self._headers.get(text_key)
            self._headers[text_key] = text if old is None else f"{old}, {text}"

    # No on_headers_complete: every check it would make is made in on_message_complete (or
    # on_body), saving a Python call per request.

    def _expect(self, value: bytes) -> None:
        """`Expect: 100-continue`: the client holds its body back until told to send it; its
        final answer (which never depends on the body here) follows once the body is read."""
        if value.strip().lower() == b"100-continue" and self.parser.get_http_version() == "1.1":
            self.expect_continue()

    def on_body(self, body: bytes) -> None:
        """A body on GET/HEAD means nothing to a static server: it is read and dropped. It must
        arrive within header_timeout of its first byte (no re-arming per chunk, so a body
        trickled byte by byte cannot hold the connection), and it is bounded in size."""
        if not self._body_bytes:
            self._in_head = False
            self.body_started()
        self._body_bytes += len(body)
        if self._body_bytes > MAX_BODY_BYTES:
            raise Reject(413, "request body too large")

    def on_message_complete(self) -> None:
        parser = self.parser
        version = parser.get_http_version()
        if version != "1.1":
            if version != "1.0":
                raise Reject(505, f"HTTP/{version} is not supported")
        elif not self._has_host:
            raise Reject(400, "HTTP/1.1 request without Host")
        elif self._plain and parser.get_method() == b"GET" and parser.should_keep_alive():
            parsed = (self._url, self._host_ok, self._headers)
            if self.answer_prepared(*parsed):
                self._answered = parsed if self._answered is None else False
                self._next_message()
                return
        self._answered = False
        url = self._url
        headers = self._headers
        conditional = self._conditional
        keep_alive = parser.should_keep_alive()
        if not self._plain:
            if "upgrade" in headers and parser.should_upgrade():
                keep_alive = False  # nothing after an upgrade request can be parsed
            if "transfer-encoding" in headers and version == "1.0":
                keep_alive = False  # RFC 9112 §6.1: framing a 1.0 peer cannot have meant
        self._next_message()
        if not keep_alive:
            self._input_closed = True  # the last request: bytes after it are not read
        if url.startswith(b"/") and b"?" not in url and b"#" not in url:
            path, query = url, b""
        else:
            try:
                path, query = split_target(url)
                authority = target_authority(url)
                if authority is not None:
                    if not valid_host(authority):
                        raise Reject(400, "invalid host in the request-target")
                    headers["host"] = authority.decode("latin-1")  # it overrides Host
            except BadTarget as exc:
                raise Reject(exc.status, exc.reason) from None
        self.request_received(Request(parser.get_method(), path, query, version, headers,
                                      keep_alive, conditional))
