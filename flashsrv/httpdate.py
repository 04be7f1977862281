"""HTTP dates (RFC 9110 §5.6.7): formatting for Date/Last-Modified and parsing for If-* headers.

Pure functions over plain values: no sockets, no disk.
"""

from __future__ import annotations

import calendar
import time
from datetime import UTC, datetime
from email.utils import parsedate_tz

_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def format_http_date(ts: float) -> str:
    """IMF-fixdate, e.g. 'Sun, 06 Nov 1994 08:49:37 GMT' (the only form a sender may generate)."""
    t = time.gmtime(ts)
    return (
        f"{_DAYS[t.tm_wday]}, {t.tm_mday:02d} {MONTHS[t.tm_mon - 1]} {t.tm_year} "
        f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} GMT"
    )


def parse_http_date(value: str | bytes | None) -> int | None:
    """Seconds since the epoch for any of the three HTTP date forms, or None if unparseable.

    Recipients must accept IMF-fixdate, RFC 850 and asctime forms; anything else is ignored
    (an invalid If-Modified-Since is treated as absent, as the RFC says).
    """
    if value is None:
        return None
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    parts = parsedate_tz(value.strip())
    if parts is None:
        return None
    year = parts[0]
    if year < 100:
        year += 2000 if year < 70 else 1900
    try:
        # datetime refuses hour 25 or second 99, which timegm would roll into a later instant.
        when = datetime(year, *parts[1:6], tzinfo=UTC)
        return calendar.timegm(when.utctimetuple()) - (parts[9] or 0)
    except (OverflowError, ValueError):
        return None


class DateHeader:
    """The `Date: ...` line of every response, refreshed by the server's periodic tick (four
    times a second) so that the hot path only reads an attribute, as nginx's cached time."""

    __slots__ = ("_second", "line")

    def __init__(self) -> None:
        self._second: int = -1
        self.line = b""
        self.refresh()

    def refresh(self) -> None:
        now = int(time.time())
        if now != self._second:
            self._second = now
            self.line = b"Date: " + format_http_date(now).encode("ascii") + b"\r\n"
