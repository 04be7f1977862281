"""flashsrv.rule_files: the `_redirects` and `_headers` files a site ships, parsed into rules;
a bad line is reported as `name:line: problem` and skipped while the rest stands."""

from __future__ import annotations

import pytest

from flashsrv.rule_files import parse_headers, parse_redirects


def summary(text: str) -> list[tuple[str, str, int, bool, str]]:
    rules, errors = parse_redirects(text)
    assert errors == []
    return [(r.pattern.text, r.to, r.status, r.force, r.where) for r in rules]


# --- _redirects -----------------------------------------------------------------------------


def test_redirect_lines_with_default_301_statuses_and_force():
    text = ("/a /b\n"
            "/c /d 302\n"
            "/e /f 308!\n"
            "/app/* /index.html 200\n"
            "/g/* https://example.com/:splat 307\n")
    assert summary(text) == [
        ("/a", "/b", 301, False, "_redirects:1"),
        ("/c", "/d", 302, False, "_redirects:2"),
        ("/e", "/f", 308, True, "_redirects:3"),
        ("/app/*", "/index.html", 200, False, "_redirects:4"),
        ("/g/*", "https://example.com/:splat", 307, False, "_redirects:5"),
    ]


def test_forced_rewrite_and_tabs_between_words():
    assert summary("/x/*\t/:splat\t200!\n") == [("/x/*", "/:splat", 200, True, "_redirects:1")]


def test_comments_and_blank_lines_are_skipped_but_counted():
    text = "# moved pages\n\n   \n  # indented comment\n/old /new 302\n"
    assert summary(text) == [("/old", "/new", 302, False, "_redirects:5")]


def test_crlf_line_ends_are_read():
    assert summary("/a /b\r\n/c /d 303\r\n") == [
        ("/a", "/b", 301, False, "_redirects:1"), ("/c", "/d", 303, False, "_redirects:2")]


def test_the_file_name_given_is_used_in_where_and_in_errors():
    rules, errors = parse_redirects("/a /b\nnonsense\n", "/srv/www/_redirects")
    assert rules[0].where == "/srv/www/_redirects:1"
    assert len(errors) == 1 and errors[0].startswith("/srv/www/_redirects:2: ")


@pytest.mark.parametrize("line", [
    "/only-one-word",
    "/a /b 301 extra",
    "/a /b 301 # trailing comment",
    "/a /b abc",
    "/a /b !",
    "/a /b 30x",
    "/a /b 404",
    "/a /b 418",
    "/a /b 200x",
    "a /b",
    "/a/*/b /c",
    "/:x/:x /c",
    "/a //evil.com",
    "/a //evil.com 302!",
    "/a/* https://:splat/",
    "/a/* https://example.com@:splat/",
    "/a javascript:alert(1)",
    "/a https://example.com/ 200",
    "/a /b\\c",
    "/a \\\\evil.com",
])
def test_a_bad_line_is_reported_with_name_and_number_and_the_rest_stands(line: str):
    text = f"/first /one\n{line}\n/last /two 302\n"
    rules, errors = parse_redirects(text)
    assert [(r.pattern.text, r.to, r.status) for r in rules] == [
        ("/first", "/one", 301), ("/last", "/two", 302)]
    assert len(errors) == 1, errors
    assert errors[0].startswith("_redirects:2: "), errors


def test_every_bad_line_is_reported():
    _, errors = parse_redirects("/a\n/b //x\n/c /d\n/e /f 999\n")
    assert [e.split(": ", 1)[0] for e in errors] == ["_redirects:1", "_redirects:2",
                                                      "_redirects:4"]


# --- _headers -------------------------------------------------------------------------------


def header_summary(text: str) -> list[tuple[str, tuple[tuple[str, str], ...], str]]:
    rules, errors = parse_headers(text)
    assert errors == []
    return [(r.pattern.text, r.headers, r.where) for r in rules]


def test_a_path_line_then_indented_header_lines():
    text = ("/*\n"
            "  X-Frame-Options: DENY\n"
            "  Referrer-Policy: no-referrer\n"
            "/assets/*\n"
            "\tCache-Control: public, max-age=31536000, immutable\n"
            "  Link: </style.css>; rel=preload; as=style\n")
    assert header_summary(text) == [
        ("/*", (("X-Frame-Options", "DENY"), ("Referrer-Policy", "no-referrer")),
         "_headers:1"),
        ("/assets/*", (("Cache-Control", "public, max-age=31536000, immutable"),
                       ("Link", "</style.css>; rel=preload; as=style")), "_headers:4"),
    ]


def test_header_comments_and_blank_lines_and_spaces_around_the_colon():
    text = "# site headers\n\n/a\n  # about a\n\n  X-A :  1  \n"
    assert header_summary(text) == [("/a", (("X-A", "1"),), "_headers:3")]


def test_the_same_header_twice_in_one_block_is_kept_twice():
    text = "/a\n  Link: <a>\n  Link: <b>\n"
    assert header_summary(text) == [("/a", (("Link", "<a>"), ("Link", "<b>")), "_headers:1")]


def test_a_path_without_header_lines_makes_no_rule():
    assert header_summary("/a\n/b\n  X-B: 1\n") == [("/b", (("X-B", "1"),), "_headers:2")]


@pytest.mark.parametrize("name", [
    "Content-Length", "content-length", "Content-Type", "Transfer-Encoding", "Connection",
    "Location", "ETag", "Last-Modified", "Content-Encoding", "Content-Range", "Date", "Server",
    "Vary", "Accept-Ranges",
])
def test_managed_headers_are_refused_and_the_rest_of_the_block_stands(name: str):
    text = f"/a\n  X-One: 1\n  {name}: 5\n  X-Two: 2\n"
    rules, errors = parse_headers(text)
    assert [(r.pattern.text, r.headers) for r in rules] == [
        ("/a", (("X-One", "1"), ("X-Two", "2")))]
    assert len(errors) == 1 and errors[0].startswith("_headers:3: "), errors


@pytest.mark.parametrize("line", [
    "  no colon here",
    "  Bad Name: x",
    "  (bad): x",
    "  X-Bin: caf\u00e9",
    "  X-Ctl: a\x01b",
])
def test_a_bad_header_line_is_reported_and_skipped(line: str):
    rules, errors = parse_headers(f"/a\n  X-Good: 1\n{line}\n")
    assert [r.headers for r in rules] == [(("X-Good", "1"),)]
    assert len(errors) == 1 and errors[0].startswith("_headers:3: "), errors


def test_a_header_line_before_any_path_is_reported():
    rules, errors = parse_headers("  X-A: 1\n/b\n  X-B: 2\n", "site/_headers")
    assert [r.pattern.text for r in rules] == ["/b"]
    assert len(errors) == 1 and errors[0].startswith("site/_headers:1: "), errors


def test_a_bad_path_line_is_reported_once_and_its_header_lines_are_skipped():
    text = "/ok\n  X-A: 1\nnot-a-path\n  X-B: 2\n  X-C: 3\n/b/*/c\n  X-D: 4\n/z\n  X-E: 5\n"
    rules, errors = parse_headers(text)
    assert [(r.pattern.text, r.headers) for r in rules] == [
        ("/ok", (("X-A", "1"),)), ("/z", (("X-E", "5"),))]
    assert [e.split(": ", 1)[0] for e in errors] == ["_headers:3", "_headers:6"]
