"""flashsrv.responder: from a request and a translated path to a response plan.

Entries are built by hand from open-file facts with no descriptor (-1): the responder never
reads a file, it only decides which bytes a response sends.
"""

from __future__ import annotations

import pytest

from flashsrv.entries import DIRECTORY, ERROR, FILE, FORBIDDEN, MISSING, Entry, OpenFile, Variant
from flashsrv.httpdate import format_http_date
from flashsrv.responder import Plan, Request, Responder, body_of, error_plan, https_location
from flashsrv.site_rules import SiteRules

DATA = bytes(range(100))
MTIME_NS = 1_700_000_000_123_456_789
SUFFIXES = {"identity": "", "gzip": ".gz", "br": ".br"}


def entry_of(*encodings: str, size: int = len(DATA), mtime_ns: int = MTIME_NS,
             relpath: str = "page.html") -> Entry:
    """A file entry with a variant per encoding (identity first), each a distinct file."""
    variants = {}
    for ino, encoding in enumerate(("identity", *encodings), start=10):
        file = OpenFile(-1, relpath + SUFFIXES[encoding], size, mtime_ns, ino, 1)
        variants[encoding] = Variant(file, encoding)
    return Entry(FILE, relpath, variants, "text/html; charset=utf-8")


def request(method: str = "GET", path: str = "/page.html", query: str = "",
            **headers: str) -> Request:
    """A request; keyword headers use underscores for dashes (if_none_match=...)."""
    fields = {name.replace("_", "-"): value for name, value in headers.items()}
    conditional = any(name.startswith("if-") or name == "range" for name in fields)
    return Request(method.encode(), path.encode(), query.encode(), "1.1", fields, True,
                   conditional)


def head_fields(plan: Plan) -> dict[str, str]:
    lines = plan.head.decode("latin-1").split("\r\n")
    assert lines[0].startswith(f"HTTP/1.1 {plan.status} ") and lines[-1] == ""
    return {name.lower(): value for name, _, value in (line.partition(": ")
                                                         for line in lines[1:-1])}


@pytest.fixture
def responder() -> Responder:
    return Responder(SiteRules(cache_rules=[("*.css", "max-age=60")],
                               extra_headers=[("X-Site", "yes")]))


# -- Request -----------------------------------------------------------------------------------


def test_request_target_keeps_the_query_and_the_log_text_is_quoted():
    assert request(path="/a b", query="x=1").target == b"/a b?x=1"
    assert request(path="/a").target == b"/a"
    assert request(path='/"quoted"').target_text == "'/\"quoted\"'"


# -- 200 ---------------------------------------------------------------------------------------


def test_a_plain_get_plans_the_whole_file_with_validators_and_site_headers(
        responder: Responder):
    entry = entry_of()
    plan = responder.respond(request(), entry)
    fields = head_fields(plan)
    variant = entry.variants["identity"]
    assert (plan.status, plan.length, plan.spans) == (200, len(DATA), [(0, len(DATA) - 1)])
    assert plan.file is variant.file and plan.body is None
    assert fields["content-length"] == str(len(DATA)) and fields["accept-ranges"] == "bytes"
    assert fields["etag"] == variant.etag
    assert fields["last-modified"] == format_http_date(MTIME_NS // 1_000_000_000)
    assert fields["cache-control"] == "no-cache" and fields["x-site"] == "yes"
    assert "vary" not in fields and "content-encoding" not in fields


def test_an_empty_file_has_no_span(responder: Responder):
    plan = responder.respond(request(), entry_of(size=0))
    assert (plan.status, plan.length, plan.spans) == (200, 0, [])


def test_cache_control_follows_the_site_rule_for_the_served_path(responder: Responder):
    plan = responder.respond(request(path="/s.css"), entry_of(relpath="s.css"))
    assert head_fields(plan)["cache-control"] == "max-age=60"


def test_head_is_planned_like_get(responder: Responder):
    entry = entry_of()
    assert responder.respond(request("HEAD"), entry).head == responder.respond(
        request(), entry).head


@pytest.mark.parametrize(("accept", "chosen"), [
    ("gzip, br", "br"), ("gzip", "gzip"), ("br;q=0.5, gzip", "gzip"), (None, "identity"),
    ("identity", "identity"),
])
def test_accept_encoding_picks_the_variant_and_the_response_varies(
        responder: Responder, accept: str | None, chosen: str):
    entry = entry_of("gzip", "br")
    headers = {} if accept is None else {"accept_encoding": accept}
    plan = responder.respond(request(**headers), entry)
    fields = head_fields(plan)
    assert plan.file is entry.variants[chosen].file
    assert fields["vary"] == "Accept-Encoding"
    assert fields.get("content-encoding", "identity") == chosen
    assert fields["etag"] == entry.variants[chosen].etag


# -- the response-header cache -----------------------------------------------------------------


def test_heads_are_cached_by_file_version_not_by_entry_object(responder: Responder):
    first = responder.respond(request(), entry_of())
    again = responder.respond(request(), entry_of())  # a new Entry for the same version
    changed = responder.respond(request(), entry_of(mtime_ns=MTIME_NS + 10**9))
    assert again.head is first.head
    assert changed.head != first.head
    assert head_fields(changed)["etag"] != head_fields(first)["etag"]


def test_a_new_responder_builds_heads_with_its_own_rules():
    entry = entry_of()
    old = Responder(SiteRules(extra_headers=[("X-Site", "old")])).respond(request(), entry)
    new = Responder(SiteRules(extra_headers=[("X-Site", "new")])).respond(request(), entry)
    assert (head_fields(old)["x-site"], head_fields(new)["x-site"]) == ("old", "new")


# -- preconditions -----------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_a_matching_if_none_match_is_304_with_validators_and_no_body(
        responder: Responder, method: str):
    entry = entry_of()
    plan = responder.respond(request(method, if_none_match=entry.variants["identity"].etag),
                             entry)
    fields = head_fields(plan)
    assert (plan.status, plan.length, plan.file, plan.spans) == (304, 0, None, [])
    assert fields["etag"] == entry.variants["identity"].etag
    assert "content-length" not in fields and "content-type" not in fields


def test_if_modified_since_the_last_modification_is_304(responder: Responder):
    since = format_http_date(MTIME_NS // 1_000_000_000)
    assert responder.respond(request(if_modified_since=since), entry_of()).status == 304


def test_a_failed_if_match_is_412(responder: Responder):
    plan = responder.respond(request(if_match='"other"'), entry_of())
    assert plan.status == 412 and plan.body is not None


def test_a_stale_if_none_match_gets_the_whole_file(responder: Responder):
    assert responder.respond(request(if_none_match='"old"'), entry_of()).status == 200


# -- ranges ------------------------------------------------------------------------------------


def test_a_single_range_is_206_with_its_content_range(responder: Responder):
    plan = responder.respond(request(range="bytes=10-19"), entry_of())
    fields = head_fields(plan)
    assert (plan.status, plan.length, plan.spans) == (206, 10, [(10, 19)])
    assert fields["content-range"] == f"bytes 10-19/{len(DATA)}"
    assert fields["content-length"] == "10"
    assert body_of(plan, DATA) == DATA[10:20]


def test_several_ranges_are_a_multipart_body_of_the_promised_length(responder: Responder):
    plan = responder.respond(request(range="bytes=0-4, 50-59"), entry_of())
    fields = head_fields(plan)
    body = body_of(plan, DATA)
    assert plan.status == 206 and fields["content-type"].startswith("multipart/byteranges")
    assert len(body) == plan.length == int(fields["content-length"])
    assert len(plan.part_heads) == 2 and plan.spans == [(0, 4), (50, 59)]
    assert DATA[0:5] in body and DATA[50:60] in body and body.endswith(plan.trailer)


def test_an_unsatisfiable_range_is_416_naming_the_size(responder: Responder):
    plan = responder.respond(request(range="bytes=500-"), entry_of())
    assert plan.status == 416
    assert ("Content-Range", f"bytes */{len(DATA)}") in plan.keep
    assert head_fields(plan)["content-range"] == f"bytes */{len(DATA)}"


@pytest.mark.parametrize("headers", [
    {"range": "bytes=0-4", "if_range": '"not-the-etag"'},  # the file changed: send it all
    {"range": "lines=1-2"},  # a unit we do not know is ignored
])
def test_ranges_that_do_not_apply_get_the_whole_file(responder: Responder,
                                                     headers: dict[str, str]):
    plan = responder.respond(request(**headers), entry_of())
    assert (plan.status, plan.length) == (200, len(DATA))


def test_head_ignores_range(responder: Responder):
    plan = responder.respond(request("HEAD", range="bytes=0-4"), entry_of())
    assert (plan.status, plan.length) == (200, len(DATA))


def test_a_matching_if_range_allows_the_partial_response(responder: Responder):
    entry = entry_of()
    plan = responder.respond(request(range="bytes=0-4", if_range=entry.variants["identity"].etag),
                             entry)
    assert plan.status == 206


# -- entries that are not a file to send -------------------------------------------------------


@pytest.mark.parametrize(("kind", "status"), [(MISSING, 404), (FORBIDDEN, 403), (ERROR, 500)])
def test_entries_without_a_file_are_errors_with_a_page(responder: Responder, kind: str,
                                                       status: int):
    plan = responder.respond(request(), Entry(kind, "page.html"))
    assert plan.status == status
    assert plan.body is not None and plan.length == len(plan.body)
    assert head_fields(plan)["x-site"] == "yes"


def test_a_directory_without_its_slash_is_redirected_keeping_the_query(responder: Responder):
    plan = responder.respond(request(path="/docs", query="a=1"), Entry(DIRECTORY, "docs"))
    assert plan.status == 301
    assert ("Location", "/docs/?a=1") in plan.keep
    assert head_fields(plan)["location"] == "/docs/?a=1"


def test_a_directory_without_an_index_is_403(responder: Responder):
    assert responder.respond(request(path="/docs/"), Entry(DIRECTORY, "docs")).status == 403


def test_a_directory_with_an_index_serves_it(responder: Responder):
    index = entry_of(relpath="docs")
    directory = Entry(DIRECTORY, "docs", index.variants, "text/html; charset=utf-8")
    plan = responder.respond(request(path="/docs/"), directory)
    assert plan.status == 200 and plan.file is index.variants["identity"].file


# -- error plans -------------------------------------------------------------------------------


def test_error_keeps_the_status_headers_apart_from_the_site_headers(responder: Responder):
    plan = responder.error(503, "busy", close=True)
    fields = head_fields(plan)
    assert plan.close and fields["retry-after"] == "1" and fields["x-site"] == "yes"
    assert plan.keep == [("Retry-After", "1")], "site headers are not kept for a custom page"
    assert b"busy" in (plan.body or b"")


def test_error_plan_escapes_the_detail():
    plan = error_plan(400, "<script>")
    assert b"<script>" not in (plan.body or b"") and b"&lt;script&gt;" in (plan.body or b"")
    assert head_fields(plan)["content-length"] == str(plan.length)


# -- https_location (--redirect-http) -----------------------------------------------------------


@pytest.mark.parametrize(("host", "port", "expected"), [
    ("example.test", 443, "https://example.test/a%20b?x=1&y"),
    ("example.test:8080", 443, "https://example.test/a%20b?x=1&y"),
    ("example.test:80", 8443, "https://example.test:8443/a%20b?x=1&y"),
    ("WWW.Example.TEST.", 443, "https://www.example.test/a%20b?x=1&y"),
    ("[::1]:8080", 8443, "https://[::1]:8443/a%20b?x=1&y"),
    ("[::1]", 443, "https://[::1]/a%20b?x=1&y"),
], ids=["default-port", "plain-port-dropped", "tls-port-kept", "case-and-dot", "ipv6-port",
        "ipv6-default"])
def test_https_location_keeps_host_path_and_query_and_names_the_tls_port_unless_443(
        host: str, port: int, expected: str) -> None:
    req = request(path="/a%20b", query="x=1&y", host=host)
    assert https_location(req, port, "10.0.0.1") == expected


def test_https_location_without_a_host_uses_the_address_the_request_reached() -> None:
    assert https_location(request(path="/"), 443, "10.0.0.1") == "https://10.0.0.1/"
    assert https_location(request(path="/p", query="q"), 8443, "[fd00::1]") == (
        "https://[fd00::1]:8443/p?q")
