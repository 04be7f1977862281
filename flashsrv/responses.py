"""Response heads and small generated bodies: status reasons, header blocks, error pages.

Pure functions over plain values. A head built here ends after its last header line; the
connection adds `Date`, `Connection` and the blank line when it sends, because those two depend
on the moment and the connection while everything here can be cached per file version.
"""

from __future__ import annotations

from html import escape

from flashsrv import SERVER_NAME

REASONS: dict[int, str] = {
    200: "OK",
    206: "Partial Content",
    301: "Moved Permanently",
    302: "Found",
    303: "See Other",
    304: "Not Modified",
    307: "Temporary Redirect",
    308: "Permanent Redirect",
    400: "Bad Request",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    412: "Precondition Failed",
    413: "Content Too Large",
    414: "URI Too Long",
    416: "Range Not Satisfiable",
    421: "Misdirected Request",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    501: "Not Implemented",
    503: "Service Unavailable",
    505: "HTTP Version Not Supported",
}

ALLOWED_METHODS = "GET, HEAD"
HTML_TYPE = "text/html; charset=utf-8"
_SERVER_LINE = f"Server: {SERVER_NAME}\r\n"


def build_head(status: int, headers: list[tuple[str, str]]) -> bytes:
    """Status line, Server, then the given headers, each line CRLF-terminated."""
    lines = [f"HTTP/1.1 {status} {REASONS.get(status, 'Unknown')}\r\n", _SERVER_LINE]
    lines += [f"{name}: {value}\r\n" for name, value in headers]
    return "".join(lines).encode("latin-1")


def error_page(status: int, detail: str = "") -> bytes:
    """A tiny HTML page for an error status; detail is escaped and never a traceback."""
    title = f"{status} {REASONS.get(status, 'Error')}"
    extra = f"<p>{escape(detail)}</p>" if detail else ""
    return (
        f"<!doctype html><html><head><title>{title}</title></head>"
        f"<body><h1>{title}</h1>{extra}<hr><p>{SERVER_NAME}</p></body></html>\n"
    ).encode()


# Headers that belong to a status itself, whatever body goes with it.
STATUS_HEADERS: dict[int, list[tuple[str, str]]] = {
    405: [("Allow", ALLOWED_METHODS)],
    503: [("Retry-After", "1")],
}

