"""flashsrv.site_rules: Cache-Control by path glob, its default, and extra headers."""

from __future__ import annotations

from flashsrv.site_rules import DEFAULT_CACHE_CONTROL, SiteRules

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
