"""flashsrv.path_patterns: Netlify-style path patterns, filling a rule's target, and the
refusal of targets that could be abused (open redirects, header injection)."""

from __future__ import annotations

from urllib.parse import unquote, urlsplit

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from flashsrv.path_patterns import (
    REDIRECT_STATUSES,
    REWRITE_STATUS,
    Redirect,
    check_target,
    compile_pattern,
)

LOCAL_TARGETS = ("/:splat", "/new/:splat", "/:a/:splat", "/x/:a-:splat?keep=1")


def rule(source: str, to: str, status: int = 301, force: bool = True) -> Redirect:
    check_target(to, status)
    return Redirect(compile_pattern(source), to, status, force, "test")


def assert_same_origin_path(location: str) -> None:
    """A Location a browser resolves against the request's own origin, on one header line."""
    assert location.startswith("/") and not location.startswith("//"), location
    assert not location.startswith("/\\"), location
    for bad in ("\r", "\n", "\\", " ", "\t", "\x00"):
        assert bad not in location, location
    parts = urlsplit(location)
    assert parts.scheme == "" and parts.netloc == "", location
    assert location.isascii(), location


# --- matching -------------------------------------------------------------------------------


@pytest.mark.parametrize(("path", "splat"), [
    ("/news", ""), ("/news/", ""), ("/news/2024", "2024"), ("/news/2024/01/", "2024/01/"),
])
def test_splat_after_a_slash_matches_the_folder_itself_and_everything_below(path, splat):
    assert compile_pattern("/news/*").match(path) == {"splat": splat}


@pytest.mark.parametrize("path", ["/newsx", "/newsx/a", "/new", "/", "/other/news/a"])
def test_splat_after_a_slash_does_not_match_a_longer_segment_or_another_folder(path):
    assert compile_pattern("/news/*").match(path) is None


def test_splat_glued_to_a_segment_takes_the_rest_of_it():
    pattern = compile_pattern("/news*")
    assert pattern.match("/newsx") == {"splat": "x"}
    assert pattern.match("/news/a") == {"splat": "/a"}
    assert pattern.match("/new") is None


def test_root_splat_matches_every_path():
    pattern = compile_pattern("/*")
    assert pattern.match("/") == {"splat": ""}
    assert pattern.match("/a/b.html") == {"splat": "a/b.html"}


def test_placeholders_take_one_whole_segment_each():
    pattern = compile_pattern("/blog/:year/:slug")
    assert pattern.match("/blog/2024/hello") == {"year": "2024", "slug": "hello"}
    assert pattern.match("/blog/2024/hello/") == {"year": "2024", "slug": "hello"}
    assert pattern.match("/blog/2024") is None
    assert pattern.match("/blog/2024/hello/more") is None
    assert pattern.match("/blog//hello") is None


def test_placeholders_and_splat_together():
    pattern = compile_pattern("/u/:name/*")
    assert pattern.match("/u/ann/photos/1.jpg") == {"name": "ann", "splat": "photos/1.jpg"}
    assert pattern.match("/u/ann") == {"name": "ann", "splat": ""}


@pytest.mark.parametrize("text", ["/about", "/about/"])
def test_a_pattern_without_splat_matches_with_or_without_a_trailing_slash(text):
    pattern = compile_pattern(text)
    assert pattern.match("/about") == {}
    assert pattern.match("/about/") == {}
    assert pattern.match("/about/x") is None
    assert pattern.match("/aboutx") is None


def test_literal_segments_are_exact_not_regular_expressions():
    pattern = compile_pattern("/a.b/(x)+")
    assert pattern.match("/a.b/(x)+") == {}
    assert pattern.match("/aXb/(x)+") is None
    assert pattern.match("/a.b/xx") is None


def test_splat_and_placeholders_take_any_character_but_a_slash_for_a_segment():
    # A decoded path may hold a CR or LF (%0d, %0a): "the rest of the path" includes them.
    assert compile_pattern("/go/*").match("/go/a\r\nb") == {"splat": "a\r\nb"}
    assert compile_pattern("/go/:x").match("/go/a\nb") == {"x": "a\nb"}


def test_matching_is_case_sensitive():
    assert compile_pattern("/News").match("/news") is None


@pytest.mark.parametrize("text", [
    "", "news", "*", "news/*", "/a?b", "/a#b", "/a\\b", "/a b", "/a\tb",
    "/*/a", "/a*/b", "/**", "/:x/:x", "/:splat", "/a:b", "/pre-:name",
])
def test_bad_patterns_raise_value_error(text):
    with pytest.raises(ValueError):
        compile_pattern(text)


# --- filling in a target --------------------------------------------------------------------


def test_placeholders_are_filled_in_the_target():
    r = rule("/blog/:year/:slug", "/posts/:year-:slug")
    assert r.target({"year": "2024", "slug": "hi"}) == "/posts/2024-hi"


def test_splat_keeps_its_slashes_and_encodes_what_a_segment_cannot_carry():
    r = rule("/old/*", "/new/:splat")
    assert r.target({"splat": "a/b c/d?e#f%"}) == "/new/a/b%20c/d%3Fe%23f%25"
    assert r.target({"splat": ""}) == "/new/"
    assert r.target({"splat": "caf\u00e9"}) == "/new/caf%C3%A9"


def test_the_rules_own_query_is_kept_and_not_filled():
    r = rule("/old/*", "/new/:splat?from=old")
    assert r.target({"splat": "x"}) == "/new/x?from=old"


def test_an_unknown_placeholder_stays_literal():
    assert rule("/a", "/b/:nothing").target({}) == "/b/:nothing"


@pytest.mark.parametrize("splat", [
    "/evil.com", "//evil.com", "///evil.com", "evil.com", "%2F%2Fevil.com", "%2f%2fevil.com",
    "\\evil.com", "\\\\evil.com", "/\\evil.com", "\\/evil.com", "%5Cevil.com",
    "a\r\nSet-Cookie: x=1", "\r\n\r\n<html>", "a\nb", "a\rb", "x y", "\tevil",
    "..", "../../etc/passwd", "?x=1", "#frag", "\u2028", "\x00", "https://evil.com",
])
def test_splat_from_the_request_never_leaves_the_origin_or_breaks_the_header(splat):
    for to in LOCAL_TARGETS:
        values = {"splat": splat, "a": splat}
        assert_same_origin_path(rule("/go/:a/*", to).target(values))


def test_a_splat_that_would_make_a_network_path_gets_a_single_slash():
    r = rule("/go/*", "/:splat")
    assert r.target({"splat": "/evil.com"}) == "/evil.com"
    assert r.target({"splat": "//evil.com/x"}) == "/evil.com/x"
    assert r.target({"splat": "%2F%2Fevil.com"}) == "/%252F%252Fevil.com"
    assert r.target({"splat": "\\evil.com"}) == "/%5Cevil.com"


def test_an_external_target_keeps_its_host_whatever_the_splat():
    r = rule("/docs/*", "https://docs.example.com/:splat", 302)
    for splat in ("@evil.com", "/evil.com", "//evil.com", "x@evil.com", ":443@evil.com"):
        parts = urlsplit(r.target({"splat": splat}))
        assert (parts.scheme, parts.hostname) == ("https", "docs.example.com"), splat


@given(st.text())
@example("/evil.com")
@example("//evil.com")
@example("\\\\evil.com")
@example("\r\nLocation: //evil.com")
@example(" //evil.com")
def test_property_a_local_targets_value_never_makes_another_origin(splat: str):
    for to in LOCAL_TARGETS:
        target = rule("/go/:a/*", to).target({"splat": splat, "a": splat})
        assert target.startswith("/") and not target.startswith("//")
        for bad in ("\r", "\n", "\\", " "):
            assert bad not in target
        assert target.isascii()


@given(st.text())
def test_property_the_splat_is_recovered_by_decoding_the_target(splat: str):
    target = rule("/go/*", "/files/:splat").target({"splat": splat})
    assert unquote(target) == "/files/" + splat


# --- refused targets ------------------------------------------------------------------------


@pytest.mark.parametrize(("to", "status"), [
    ("//evil.com", 301), ("//evil.com/x", 302), ("///evil.com", 301),
    ("javascript:alert(1)", 302), ("data:text/html,x", 301), ("ftp://evil.com/", 301),
    ("evil.com", 301), ("relative/path", 301), ("", 301), ("https://", 301), ("https:///x", 301),
    ("https://:splat/", 301), ("https://:splat", 302), ("https://a.com@:splat", 301),
    ("https://a.com@evil.com/", 301), ("https://:host.example.com/", 301),
    ("http://a.com:splat/", 301),
    ("https://example.com/x", 200), ("//x", 200), ("x", 200),
    ("/a b", 301), ("/a\tb", 301), ("/a\r\nb", 301), ("/a\nb", 301), ("/a\\b", 301),
    ("/\\evil.com", 301), ("\\\\evil.com", 301), ("/a\x7f", 301), ("/a\x00", 301),
    ("/ok", 418), ("/ok", 404), ("/ok", 300), ("/ok", 304), ("/ok", 204), ("/ok", 0),
])
def test_check_target_refuses(to: str, status: int):
    with pytest.raises(ValueError):
        check_target(to, status)


@pytest.mark.parametrize(("to", "status"), [
    ("/", 301), ("/new/:splat", 308), ("/posts/:year-:slug?x=1", 302),
    ("https://docs.example.com/:splat", 301), ("http://example.com:8080/x", 307),
    ("/index.html", REWRITE_STATUS), ("/app/:splat", REWRITE_STATUS),
    *((f"/s{s}", s) for s in REDIRECT_STATUSES),
])
def test_check_target_accepts(to: str, status: int):
    check_target(to, status)


def test_a_non_ascii_target_is_refused_or_filled_in_encoded():
    # The Location goes on the wire as Latin-1: "/€" must not reach it as is.
    try:
        r = rule("/euro", "/caf\u00e9/\u20ac", 302)
    except ValueError:
        return
    assert r.target({}).isascii(), r.target({})


def test_local_means_a_path():
    assert rule("/a", "/b").local
    assert not rule("/a", "https://example.com/b").local
