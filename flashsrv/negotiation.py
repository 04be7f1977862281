"""Content-coding negotiation (RFC 9110 §12.5.3) for compressed variants (.br, .zst, .gz
siblings, or made on the fly by --compress).

This module owns one decision: given Accept-Encoding and the codings for which a compressed
variant exists, which one to send ("br", "zstd", "gzip" or "identity"). It also owns the one
parser of q-values (`q_weight`), which the Accept check of the SPA fallback reuses.

It must never touch the disk (the caller already knows which siblings exist) or answer 406:
like nginx's gzip_static, a static file is always available as identity, which is the fallback
whatever the client says. Nothing here raises on client input.

Rules, in short:
  * no Accept-Encoding, or an empty one: identity;
  * a coding's weight is its own q, else the q of "*", else it is not acceptable;
    q=0 means "not acceptable"; a malformed q counts as q=0 (do not guess a yes);
  * identity competes only when the client ranks it (listed itself, or through "*");
    otherwise it is the fallback when no available coding is acceptable;
  * highest q wins; ties go to the server's order (`available`, best first), identity last;
  * "x-gzip" is gzip (§8.4.1.3); a coding listed twice keeps its lowest q.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Final

__all__ = ["IDENTITY", "choose_encoding", "q_weight"]

IDENTITY: Final = "identity"

# Codings that are other names for one we serve.
_ALIASES: Final = {"x-gzip": "gzip"}

# qvalue = ( "0" [ "." 0*3DIGIT ] ) / ( "1" [ "." 0*3("0") ] ); kept in thousandths, no floats.
_QVALUE = re.compile(r"0(?:\.[0-9]{0,3})?|1(?:\.0{0,3})?")

_OWS: Final = " \t"


def q_weight(params: list[str]) -> int:
    """A list member's q (RFC 9110 §12.4.2) in thousandths from its parameters: 1000 when
    absent, 0 when malformed (a malformed weight never selects anything)."""
    for param in params:
        name, eq, raw = param.partition("=")
        if name.strip(_OWS).lower() != "q":
            continue
        text = raw.strip(_OWS)
        if not eq or not _QVALUE.fullmatch(text):
            return 0
        whole, _, frac = text.partition(".")
        return int(whole) * 1000 + int(frac.ljust(3, "0"))
    return 1000


def _parse(accept_encoding: str) -> dict[str, int]:
    """Coding (lower case, aliases resolved) to q in thousandths."""
    weights: dict[str, int] = {}
    for member in accept_encoding.split(","):
        coding, *params = member.split(";")
        coding = coding.strip(_OWS).lower()
        if not coding:
            continue  # empty list members are legal and meaningless
        coding = _ALIASES.get(coding, coding)
        q = q_weight(params)
        weights[coding] = min(q, weights.get(coding, q))
    return weights


@lru_cache(maxsize=256)
def _choose(accept_encoding: str, available: tuple[str, ...]) -> str:
    weights = _parse(accept_encoding)
    star = weights.get("*")
    best, best_q = IDENTITY, 0
    for coding in available:  # server order: a strictly higher q is needed to displace
        q = weights.get(coding, star or 0)
        if q > best_q:
            best, best_q = coding, q
    identity_q = weights.get(IDENTITY, star)
    if identity_q is not None and identity_q > best_q:
        return IDENTITY
    return best


def choose_encoding(accept_encoding: str | None, available: tuple[str, ...]) -> str:
    """The content coding to send: one of `available` (best first) or "identity".

    Memoised on (header, available): browsers send a handful of distinct Accept-Encoding
    strings, so the hot path is one dictionary lookup. The cache is bounded (LRU, 256).
    """
    if not accept_encoding or not available:
        return IDENTITY
    return _choose(accept_encoding, available)
