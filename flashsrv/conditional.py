"""Conditional requests (RFC 9110 §13): the 304 / 412 decision and the If-Range check.

This module owns:
  * parsing entity-tag lists (If-Match, If-None-Match) and their strong/weak comparison;
  * the order in which preconditions are evaluated (RFC 9110 §13.2.2);
  * whether an If-Range lets a Range request be answered with a partial response.

It must never touch a socket, the disk or the clock: callers pass the resource's validators
(our ETag string and Last-Modified seconds) and the raw header values, and get back a status
code or a boolean. Nothing here raises on client input: a malformed field is ignored or simply
fails to match, as the RFC asks.

Callers evaluate preconditions only when the request would otherwise succeed (2xx) on a resource
that exists (RFC 9110 §13.2.1): that is why `*` always matches here.
"""

from __future__ import annotations

import re

from flashsrv.httpdate import parse_http_date

__all__ = ["evaluate_preconditions", "if_range_allows_partial", "parse_entity_tags"]

# Methods for which a matching If-None-Match means "you already have it" (304) rather than
# "precondition failed" (412), and the only methods that honour If-Modified-Since.
_READ_METHODS = frozenset({"GET", "HEAD"})

# etagc = %x21 / %x23-7E / obs-text: no whitespace, no DQUOTE, no controls, no DEL.
_OPAQUE_BODY = re.compile(r'[^\x00-\x20"\x7f]*')

# If-Range carries exactly one entity-tag, never a list.
_SINGLE_TAG = re.compile(r'(?:W/)?"[^\x00-\x20"\x7f]*"')

_OWS = " \t"

# One entity-tag as a pair (weak, opaque-tag including its quotes).
EntityTag = tuple[bool, str]


def parse_entity_tags(value: str) -> list[EntityTag]:
    """The well-formed members of an entity-tag list, in order; malformed members are skipped.

    A scanner rather than `split(",")`, because a comma is a legal character inside an opaque
    tag. A member that does not parse is dropped up to the next comma, never an exception: a
    broken If-None-Match must not turn into a 500.
    """
    tags: list[EntityTag] = []
    i, n = 0, len(value)
    while i < n:
        c = value[i]
        if c in _OWS or c == ",":
            i += 1
            continue
        weak = value.startswith("W/", i)
        j = i + 2 if weak else i
        if j < n and value[j] == '"':
            close = value.find('"', j + 1)
            if close == -1:
                break  # unterminated quote: nothing after it can be a member
            k = close + 1
            while k < n and value[k] in _OWS:
                k += 1
            body = value[j + 1 : close]
            if (k == n or value[k] == ",") and _OPAQUE_BODY.fullmatch(body):
                tags.append((weak, value[j : close + 1]))
                i = k
                continue
        comma = value.find(",", i)
        if comma == -1:
            break
        i = comma + 1
    return tags


def _split_tag(etag: str) -> EntityTag:
    """A single entity-tag as (weak, opaque); our own ETags are normally strong."""
    if etag.startswith("W/"):
        return True, etag[2:]
    return False, etag


def _strong_match(a: EntityTag, b: EntityTag) -> bool:
    """RFC 9110 §8.8.3.2: both strong and character-for-character equal."""
    return not a[0] and not b[0] and a[1] == b[1]


def _present(value: str | None) -> str | None:
    """The stripped field value, or None when the field is absent or empty.

    An empty field carries no condition (If-Match's grammar needs at least one member), so it
    is treated as absent rather than as a list that matches nothing.
    """
    if value is None:
        return None
    value = value.strip(_OWS)
    return value or None


def _single_date(value: str) -> int | None:
    """An HTTP-date, or None when invalid or a list of dates (both must be ignored, §13.1.3/4).

    IMF-fixdate and RFC 850 dates contain exactly one comma and asctime none, so more than one
    comma means several members; the date parser would otherwise read just the first one.
    """
    if value.count(",") > 1:
        return None
    return parse_http_date(value)


def evaluate_preconditions(
    method: str,
    etag: str,
    last_modified: int,
    if_match: str | None,
    if_none_match: str | None,
    if_modified_since: str | None,
    if_unmodified_since: str | None,
) -> int | None:
    """412, 304, or None (serve the request normally), following RFC 9110 §13.2.2 step by step.

    Order matters: the entity-tag conditions are more precise than the dates, so each date
    condition is skipped when its entity-tag counterpart is present.
    """
    if (
        if_match is None
        and if_none_match is None
        and if_modified_since is None
        and if_unmodified_since is None
    ):
        return None  # the common case: not a conditional request at all

    ours = _split_tag(etag)
    im = _present(if_match)
    inm = _present(if_none_match)

    # Step 1: If-Match, strong comparison; "*" matches because the resource exists.
    if im is not None:
        if im != "*" and not any(_strong_match(ours, t) for t in parse_entity_tags(im)):
            return 412
    # Step 2: If-Unmodified-Since, only without If-Match; an invalid date is ignored.
    else:
        ius_raw = _present(if_unmodified_since)
        ius = _single_date(ius_raw) if ius_raw is not None else None
        if ius is not None and last_modified > ius:
            return 412

    # Step 3: If-None-Match, weak comparison (§13.1.2): a match means the condition is false.
    if inm is not None:
        if inm == "*" or any(t[1] == ours[1] for t in parse_entity_tags(inm)):
            return 304 if method in _READ_METHODS else 412
    # Step 4: If-Modified-Since, only without If-None-Match and only for GET/HEAD.
    elif method in _READ_METHODS:
        ims_raw = _present(if_modified_since)
        ims = _single_date(ims_raw) if ims_raw is not None else None
        if ims is not None and last_modified <= ims:
            return 304

    return None


def if_range_allows_partial(if_range: str | None, etag: str, last_modified: int) -> bool:
    """True when a Range request may be answered partially (RFC 9110 §13.1.5).

    No If-Range: yes. An entity-tag: only a strong tag that strongly matches ours (a weak tag
    never does, since a partial response spliced onto a weakly-equal copy would corrupt it).
    A date: only an exact match of Last-Modified. Anything else (lists, junk, empty) means
    "send the whole representation", which is always a safe answer.
    """
    if if_range is None:
        return True
    value = if_range.strip(_OWS)
    if value.startswith(('"', "W/")):
        if not _SINGLE_TAG.fullmatch(value):
            return False
        return _strong_match(_split_tag(etag), _split_tag(value))
    date = _single_date(value) if value else None
    return date is not None and date == last_modified
