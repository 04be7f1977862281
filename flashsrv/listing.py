"""Directory listing pages (off by default): a pure function from entries to HTML.

Names are HTML-escaped and percent-encoded in links, directories come first, dot-files are never
shown. No disk here: the entries come from the helpers' `listdir`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from html import escape
from urllib.parse import quote

from flashsrv.httpdate import format_http_date


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def listing_rows(url_path: str, entries: Iterable[tuple[str, bool, int, int]]
                 ) -> Iterator[str]:
    """The table rows for a directory at url_path (decoded, ends with '/'), one at a time, so
    that a caller can render a large directory in slices; entries from diskops.listdir."""
    visible = [e for e in entries if not e[0].startswith(".")]
    visible.sort(key=lambda e: (not e[1], e[0].lower()))
    if url_path != "/":
        yield '<tr><td><a href="../">../</a></td><td></td><td></td></tr>'
    for name, is_dir, size, mtime in visible:
        label = name + "/" if is_dir else name
        href = quote(name) + ("/" if is_dir else "")
        size_text = "-" if is_dir else _size(size)
        yield (f'<tr><td><a href="{escape(href)}">{escape(label)}</a></td>'
               f"<td>{escape(size_text)}</td><td>{format_http_date(mtime)}</td></tr>")


def listing_page(url_path: str, rows: Iterable[str]) -> bytes:
    """The whole page around the rows."""
    title = escape(f"Index of {url_path}")
    return (
        f"<!doctype html><html><head><meta charset=\"utf-8\"><title>{title}</title></head>"
        f"<body><h1>{title}</h1><table><tr><th>Name</th><th>Size</th><th>Modified</th></tr>"
        + "".join(rows)
        + "</table></body></html>\n"
    ).encode()

