"""Rules for the request line and header fields that the parser leaves to us.

httptools (llhttp) enforces HTTP/1.1 syntax, but accepts a few forms that a server must still
refuse or answer precisely: any Host value, Transfer-Encoding lists, and methods it does not
know (which it reports as a parse error, where RFC 9110 asks for 501). Pure functions over
bytes: no sockets, no parser state, nothing that raises on client input.
"""

from __future__ import annotations

import re

# RFC 9110 §9 and RFC 5789: methods every HTTP server knows. A static server implements only
# GET and HEAD; the others get 405 with Allow (§15.5.6), any other method 501 (§9.1).
KNOWN_METHODS = frozenset({
    b"GET", b"HEAD", b"POST", b"PUT", b"DELETE", b"CONNECT", b"OPTIONS", b"TRACE", b"PATCH",
})
SERVED_METHODS = frozenset({b"GET", b"HEAD"})
# The methods llhttp parses (its HTTP mode): a request line with any other token is a parse
# error there, which is how an unknown method reaches `unparsed_method_status`.
PARSER_METHODS = KNOWN_METHODS | frozenset({
    b"COPY", b"LOCK", b"MKCOL", b"MOVE", b"PROPFIND", b"PROPPATCH", b"SEARCH", b"UNLOCK",
    b"BIND", b"REBIND", b"UNBIND", b"ACL", b"REPORT", b"MKACTIVITY", b"CHECKOUT", b"MERGE",
    b"M-SEARCH", b"NOTIFY", b"SUBSCRIBE", b"UNSUBSCRIBE", b"PURGE", b"MKCALENDAR", b"LINK",
    b"UNLINK", b"SOURCE", b"PRI", b"QUERY",
})

# RFC 9110 §5.6.2 token, as the method of a request line (§9.1) that starts a message.
_REQUEST_LINE = re.compile(rb"(?:^|\n)([!#$%&'*+.^_`|~0-9A-Za-z-]+) \S+ HTTP/\d\.\d\r?\n")

# RFC 3986 §3.2.2 host (IP-literal / IPv4address / reg-name) and §3.2.3 port, as Host needs
# them (RFC 9110 §7.2); an empty value is allowed for a target without authority.
_HOST = re.compile(
    rb"(?:\[(?:[0-9A-Fa-f:.]+|v[0-9A-Fa-f]+\.[A-Za-z0-9._~!$&'()*+,;=:-]+)\]"
    rb"|(?:[A-Za-z0-9._~!$&'()*+,;=-]|%[0-9A-Fa-f]{2})*)"
    rb"(?::[0-9]*)?"
)


def method_status(method: bytes) -> int:
    """0 for a method we serve, 405 for one we know but do not serve, else 501."""
    if method in SERVED_METHODS:
        return 0
    return 405 if method in KNOWN_METHODS else 501


def unparsed_method_status(data: bytes) -> int:
    """The status for bytes the parser refused at a method: 501 when they hold a request line
    whose method is a valid token the parser does not know (the one it refused: requests
    before it in the same bytes had methods it knows), else 400."""
    for match in _REQUEST_LINE.finditer(data):
        if match.group(1) not in PARSER_METHODS:
            return 501
    return 400


def valid_host(value: bytes) -> bool:
    """Whether a Host field value is a uri-host with an optional port."""
    return _HOST.fullmatch(value.strip(b" \t")) is not None


def only_chunked(value: bytes) -> bool:
    """Whether a Transfer-Encoding value is exactly `chunked` (any case, optional whitespace).

    Lists, empty elements (`,chunked`) and every other coding are refused: a hop that reads
    such a field differently from us is how requests are smuggled; nginx refuses them too.
    """
    return value.strip(b" \t").lower() == b"chunked"


# Fields the server computes per response: a configured copy would contradict them, and a
# second Content-Length or Transfer-Encoding is exactly what request smuggling feeds on.
MANAGED_HEADERS = frozenset({
    "content-length", "transfer-encoding", "connection", "keep-alive", "date", "server",
    "content-range", "content-encoding", "content-type", "etag", "last-modified", "vary",
    "accept-ranges", "location", "upgrade", "trailer", "te",
})
_FIELD_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # RFC 9110 §5.1 token
_FIELD_VALUE = re.compile(r"[\x20-\x7e\t]*")  # one line of visible ASCII (no obs-text)


def field_value_problem(value: object) -> str | None:
    """Why a configured value cannot go on a header line, or None when it can."""
    if not isinstance(value, str) or not _FIELD_VALUE.fullmatch(value):
        return "a header value is a single line of visible ASCII characters"
    return None


def header_name_problem(name: str) -> str | None:
    """Why a site may not configure a response header of this name, or None when it may."""
    if not _FIELD_NAME.fullmatch(name):
        return f"{name!r} is not a valid header name"
    if name.lower() in MANAGED_HEADERS:
        return f"{name} is set by the server for each response and cannot be configured"
    return None


def configured_header_problem(name: str, value: object) -> str | None:
    """Why a site-configured response header cannot be sent as given, or None when it can."""
    return header_name_problem(name) or field_value_problem(value)


def host_name(value: str) -> str:
    """The name a Host header names: lower case, without port or trailing dot (RFC 9110
    §4.2.3: names compare case-insensitively; §7.2: the port is not part of the name)."""
    value = value.lower()
    if value.startswith("["):
        return value[: value.find("]") + 1]
    return value.partition(":")[0].rstrip(".")
