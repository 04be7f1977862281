"""flashsrv.site_rules: Cache-Control by path glob, its default, extra headers, headers per
path, redirect and rewrite routes, clean URLs and the trailing-slash policy."""

from __future__ import annotations

import pytest

from flashsrv.path_patterns import Redirect, compile_pattern
from flashsrv.rule_files import redirect_rule
from flashsrv.site_rules import (
    DEFAULT_CACHE_CONTROL,
    NOT_SERVED,
    HeaderRule,
    Route,
    SiteRules,
)

IMMUTABLE = "public, max-age=31536000, immutable"


def test_default_is_no_cache_when_no_rule_matches():
    assert DEFAULT_CACHE_CONTROL == "no-cache"
    assert SiteRules().cache_control("index.html") == "no-cache"
    rules = SiteRules(cache_rules=[("assets/*", IMMUTABLE)])
    assert rules.cache_control("index.html") == "no-cache"


def test_default_can_be_configured():
    rules = SiteRules(default_cache_control="max-age=60")
    assert rules.cache_control("anything") == "max-age=60"


def test_star_crosses_slashes():
    rules = SiteRules(cache_rules=[("assets/*", IMMUTABLE)])
    assert rules.cache_control("assets/app.js") == IMMUTABLE
    assert rules.cache_control("assets/img/deep/logo.png") == IMMUTABLE
    assert rules.cache_control("other/assets/app.js") == "no-cache"


def test_first_matching_rule_wins():
    rules = SiteRules(cache_rules=[
        ("assets/*.html", "no-store"),
        ("assets/*", IMMUTABLE),
        ("*.html", "max-age=60"),
    ])
    assert rules.cache_control("assets/page.html") == "no-store"
    assert rules.cache_control("assets/app.js") == IMMUTABLE
    assert rules.cache_control("blog/post.html") == "max-age=60"
    swapped = SiteRules(cache_rules=[("assets/*", IMMUTABLE), ("assets/*.html", "no-store")])
    assert swapped.cache_control("assets/page.html") == IMMUTABLE


def test_matching_is_case_sensitive_and_against_the_relative_path():
    rules = SiteRules(cache_rules=[("*.JS", "x"), ("img/[ab].png", "y")])
    assert rules.cache_control("app.js") == "no-cache"
    assert rules.cache_control("APP.JS") == "x"
    assert rules.cache_control("img/a.png") == "y"
    assert rules.cache_control("img/c.png") == "no-cache"
    assert rules.cache_control("/img/a.png") == "no-cache"


def test_extra_headers_are_kept_in_order_and_not_shared():
    headers = [("X-Frame-Options", "DENY"), ("Referrer-Policy", "no-referrer")]
    rules = SiteRules(extra_headers=headers)
    assert rules.extra_headers == headers
    a, b = SiteRules(), SiteRules()
    a.extra_headers.append(("X", "1"))
    a.cache_rules.append(("*", "y"))
    assert b.extra_headers == [] and b.cache_rules == []


# --- headers per path: global first, then rules in order, a later same-name field wins -------


def header_rule(pattern: str, *headers: tuple[str, str]) -> HeaderRule:
    return HeaderRule(compile_pattern(pattern), headers, "test")


def redirect(source: str, to: str, status: int = 301, force: bool = True) -> Redirect:
    return redirect_rule(source, to, status, force, "test")


def test_headers_for_without_rules_is_the_global_set():
    rules = SiteRules(extra_headers=[("X-A", "1")])
    assert rules.headers_for(b"/anything") == (0, (("X-A", "1"),))


def test_headers_for_merges_global_then_matching_rules_in_order():
    rules = SiteRules(
        extra_headers=[("X-Frame-Options", "DENY"), ("X-Global", "g")],
        header_rules=[
            header_rule("/*", ("X-All", "all"), ("x-frame-options", "SAMEORIGIN")),
            header_rule("/assets/*", ("Cache-Control", "immutable"), ("X-All", "assets")),
            header_rule("/other/*", ("X-Other", "o")),
        ])
    _, headers = rules.headers_for(b"/assets/app.js")
    assert headers == (("X-Global", "g"), ("x-frame-options", "SAMEORIGIN"),
                       ("Cache-Control", "immutable"), ("X-All", "assets"))
    _, headers = rules.headers_for(b"/index.html")
    assert headers == (("X-Global", "g"), ("X-All", "all"), ("x-frame-options", "SAMEORIGIN"))


def test_headers_for_matches_the_decoded_normalised_path():
    rules = SiteRules(header_rules=[header_rule("/a/b", ("X-B", "1"))])
    for raw in (b"/a/b", b"/a/%62", b"/a/./b", b"//a//b", b"/a/b/"):
        assert rules.headers_for(raw)[1] == (("X-B", "1"),), raw
    assert rules.headers_for(b"/a/c")[1] == ()
    assert rules.headers_for(b"/../a/b")[1] == ()  # refused paths get the global set only


def test_headers_for_numbers_equal_sets_alike_and_different_sets_apart():
    rules = SiteRules(extra_headers=[("X-G", "g")],
                      header_rules=[header_rule("/a/*", ("X-A", "1"))])
    number_a, _ = rules.headers_for(b"/a/1")
    assert rules.headers_for(b"/a/2")[0] == number_a
    assert rules.headers_for(b"/b")[0] == 0
    assert number_a != 0


# --- routes: rule files, forced rules early, shadowing rules when nothing exists --------------


def test_rule_files_present_are_not_served():
    rules = SiteRules(hidden=("_redirects", "_headers"))
    assert rules.early
    for raw in (b"/_redirects", b"/_headers", b"/%5Fheaders", b"/./_redirects", b"//_headers"):
        assert rules.route_early(raw) == NOT_SERVED, raw
    assert rules.route_early(b"/docs/_redirects") is None
    assert SiteRules(hidden=("_headers",)).route_early(b"/_redirects") is None


def test_forced_rules_route_early_and_shadowing_ones_only_when_missing():
    rules = SiteRules(redirects=[redirect("/old/*", "/new/:splat", 302),
                                 redirect("/soft", "/elsewhere", 307, force=False)])
    assert rules.route_early(b"/old/a/b") == Route(302, "/new/a/b")
    assert rules.route_early(b"/soft") is None
    assert rules.route_missing(b"/soft") == Route(307, "/elsewhere")
    assert rules.route_missing(b"/old/a") is None  # forced rules are not shadowing ones
    assert rules.route_early(b"/other") is None and rules.route_missing(b"/other") is None


def test_first_matching_redirect_rule_wins():
    rules = SiteRules(redirects=[redirect("/a/*", "/first", 301),
                                 redirect("/a/b", "/second", 302)])
    assert rules.route_early(b"/a/b") == Route(301, "/first")


def test_a_directory_request_matches_a_pattern_with_or_without_its_slash():
    rules = SiteRules(redirects=[redirect("/dir", "/x")])
    assert rules.route_early(b"/dir/") == Route(301, "/x")
    assert rules.route_early(b"/dir") == Route(301, "/x")


def test_a_rewrite_route_gives_a_local_path_without_the_rules_query():
    rules = SiteRules(redirects=[redirect("/app/*", "/index.html?x=1", 200)])
    route = rules.route_early(b"/app/deep/link")
    assert route is not None and route == Route(200, "/index.html?x=1")
    assert route.path == b"/index.html"


def test_a_request_path_that_cannot_name_a_file_is_routed_nowhere():
    rules = SiteRules(redirects=[redirect("/*", "/:splat", 200),
                                 redirect("/s/*", "/:splat", 200, force=False)],
                      clean_urls=True, hidden=("_redirects",))
    for raw in (b"/../etc/passwd", b"/a/%2e%2e/%2e%2e/x", b"/a%00b", b"/a%5cb", b"/%ff"):
        assert rules.route_early(raw) is None, raw
        assert rules.route_missing(b"/s" + raw) is None, raw


def test_splat_of_a_route_stays_on_the_origin():
    rules = SiteRules(redirects=[redirect("/go/*", "/:splat", 302)])
    for raw in (b"/go//evil.com", b"/go/%2F%2Fevil.com", b"/go/%2f/evil.com",
                b"/go/%252F%252Fevil.com", b"/go/%09/evil.com"):
        route = rules.route_early(raw)
        assert route is not None, raw
        assert route.target.startswith("/") and not route.target.startswith("//"), route
        assert "\r" not in route.target and "\n" not in route.target, route


# --- clean URLs and the trailing-slash policy ------------------------------------------------


@pytest.mark.parametrize(("policy", "raw", "location"), [
    ("add", b"/a/b.html", "/a/b"),
    ("add", b"/about.html", "/about"),
    ("add", b"/a/index.html", "/a/"),
    ("leave", b"/a/index.html", "/a/"),
    ("remove", b"/a/index.html", "/a"),
    ("add", b"/index.html", "/"),
    ("remove", b"/index.html", "/"),
    ("add", b"/a/b/index.html", "/a/b/"),
    ("add", b"/a/%62.html", "/a/b"),
])
def test_clean_urls_redirect_html_paths(policy: str, raw: bytes, location: str):
    rules = SiteRules(clean_urls=True, trailing_slash=policy)
    assert rules.route_early(raw) == Route(301, location)


def test_clean_urls_leave_other_paths_alone():
    rules = SiteRules(clean_urls=True)
    for raw in (b"/about", b"/a/", b"/style.css", b"/a.htm", b"/"):
        assert rules.route_early(raw) is None, raw


@pytest.mark.parametrize("raw", [
    b"/x%0d%0aSet-Cookie:%20a=1.html", b"/x%0aLocation:%20//evil.com.html",
    b"/%E2%82%AC.html", b"/a%20b.html", b"/a%3Fb.html",
])
def test_a_clean_url_redirect_location_is_one_encoded_header_line(raw: bytes):
    route = SiteRules(clean_urls=True).route_early(raw)
    assert route is not None and route.status == 301
    assert all(0x21 <= ord(ch) < 0x7f for ch in route.target), route.target
    assert "?" not in route.target and route.target.startswith("/")


def test_trailing_slash_remove_redirects_directories_except_the_root():
    rules = SiteRules(trailing_slash="remove")
    assert rules.early
    assert rules.route_early(b"/docs/") == Route(301, "/docs")
    assert rules.route_early(b"/a/b/") == Route(301, "/a/b")
    assert rules.route_early(b"/") is None
    assert rules.route_early(b"/docs") is None
    assert rules.route_early(b"//evil.com/") == Route(301, "/evil.com")


@pytest.mark.parametrize("raw", [b"/x%0d%0aSet-Cookie:%20a=1/", b"/%E2%82%AC/"])
def test_a_trailing_slash_redirect_location_is_one_encoded_header_line(raw: bytes):
    route = SiteRules(trailing_slash="remove").route_early(raw)
    assert route is not None and route.status == 301
    assert all(0x21 <= ord(ch) < 0x7f for ch in route.target), route.target


def test_add_and_leave_need_no_early_look():
    assert not SiteRules().early
    assert not SiteRules(trailing_slash="leave").early
    assert SiteRules(clean_urls=True).early


# --- Route.location keeps the request's query ------------------------------------------------


def test_location_keeps_the_query_of_the_request():
    assert Route(301, "/new").location(b"") == "/new"
    assert Route(301, "/new").location(b"a=1&b=2") == "/new?a=1&b=2"
    assert Route(302, "/new?from=old").location(b"a=1") == "/new?from=old&a=1"
    assert Route(301, "https://example.com/x").location(b"q=%20") == "https://example.com/x?q=%20"


def test_a_rewrite_has_no_location_to_keep_a_query_in():
    assert Route(200, "/index.html").location(b"a=1") == "/index.html"
