"""flashsrv.urlpath: request-target to root-relative path, the first line against traversal."""

from __future__ import annotations

from urllib.parse import quote

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from flashsrv.urlpath import BadTarget, Target, split_target, to_target


@pytest.mark.parametrize(("path", "relpath", "directory"), [
    (b"/", "", True),
    (b"", "", True),
    (b"/index.html", "index.html", False),
    (b"/docs/", "docs", True),
    (b"/docs/page.txt", "docs/page.txt", False),
    (b"//docs//./page.txt", "docs/page.txt", False),  # empty and "." segments vanish
    (b"/./", "", True),
    (b"/a%20b.txt", "a b.txt", False),
    (b"/caf%C3%A9.html", "caf\u00e9.html", False),
    (b"/a/b/", "a/b", True),
])
def test_target_is_normalised_to_a_relative_path(path, relpath, directory):
    assert to_target(path) == Target(relpath, directory)


@pytest.mark.parametrize("path", [
    b"/..", b"/../etc/passwd", b"/a/../../etc/passwd", b"/a/..", b"/a/../b",
    b"/%2e%2e/etc/passwd", b"/%2E%2E/x", b"/.%2e/x", b"/a/%2e./b",
])
def test_dot_dot_segment_is_refused_as_traversal(path):
    with pytest.raises(BadTarget) as raised:
        to_target(path)
    assert raised.value.status == 403


def test_dot_dot_is_refused_even_when_dotfiles_are_shown():
    with pytest.raises(BadTarget):
        to_target(b"/../x", show_dotfiles=True)


def test_encoded_slash_is_a_separator_so_it_cannot_hide_a_dot_dot():
    assert to_target(b"/a%2fb.txt") == Target("a/b.txt", False)
    assert to_target(b"/docs%2F") == Target("docs", True)
    with pytest.raises(BadTarget) as raised:
        to_target(b"/a%2f..%2f..%2fetc%2fpasswd")
    assert raised.value.status == 403


@pytest.mark.parametrize("path", [b"/a%00.txt", b"/%00", b"/a.txt%00.html"])
def test_nul_byte_is_refused_with_400(path):
    with pytest.raises(BadTarget) as raised:
        to_target(path)
    assert raised.value.status == 400


@pytest.mark.parametrize("path", [b"/a\\b", b"/a%5cb", b"/..%5c..%5cwindows", b"/%5C"])
def test_backslash_raw_or_encoded_is_refused_with_403(path):
    with pytest.raises(BadTarget) as raised:
        to_target(path)
    assert raised.value.status == 403


@pytest.mark.parametrize("path", [b"/%ff", b"/%c3", b"/a%80b"])
def test_path_that_is_not_utf8_is_refused_with_400(path):
    with pytest.raises(BadTarget) as raised:
        to_target(path)
    assert raised.value.status == 400


@pytest.mark.parametrize("path", [
    b"/.env", b"/.git/config", b"/docs/.htaccess", b"/%2egit/HEAD", b"/.well-knownx/a",
])
def test_dot_file_is_hidden_as_404(path):
    with pytest.raises(BadTarget) as raised:
        to_target(path)
    assert raised.value.status == 404


def test_well_known_is_the_one_dot_folder_served():
    assert to_target(b"/.well-known/security.txt") == Target(".well-known/security.txt", False)


def test_dot_files_are_served_when_the_site_says_so():
    assert to_target(b"/.env", show_dotfiles=True) == Target(".env", False)
    assert to_target(b"/a/.git/", show_dotfiles=True) == Target("a/.git", True)


# -- the property: whatever the bytes, nothing that could escape comes out ---------------------

_PIECES = [b"/", b"//", b".", b"..", b"%2e", b"%2E", b"%2f", b"%2F", b"%5c", b"\\", b"%00",
           b"a", b"b.txt", b".env", b".well-known", b"%c3%a9", b"%ff", b"%", b"%2", b"?", b" "]
paths = st.one_of(
    st.binary(max_size=64),
    st.lists(st.sampled_from(_PIECES), max_size=12).map(b"".join),
)


@given(path=paths, show_dotfiles=st.booleans())
@example(path=b"/%2e%2e%2f", show_dotfiles=True)
@example(path=b"/a/%2e%2e", show_dotfiles=False)
def test_any_path_is_refused_or_becomes_a_relpath_that_stays_below_the_root(path, show_dotfiles):
    try:
        target = to_target(path, show_dotfiles)
    except BadTarget as exc:
        assert exc.status in (400, 403, 404)
        return
    relpath = target.relpath
    assert not relpath.startswith("/") and not relpath.endswith("/")
    assert "\x00" not in relpath and "\\" not in relpath
    segments = relpath.split("/") if relpath else []
    assert all(segment not in ("", ".", "..") for segment in segments)
    if not show_dotfiles:
        assert all(not s.startswith(".") or s == ".well-known" for s in segments)


@given(path=paths, show_dotfiles=st.booleans())
def test_normalising_a_normalised_path_changes_nothing(path, show_dotfiles):
    try:
        target = to_target(path, show_dotfiles)
    except BadTarget:
        return
    again = "/" + quote(target.relpath) + ("/" if target.directory and target.relpath else "")
    assert to_target(again.encode(), show_dotfiles) == target


# -- split_target --------------------------------------------------------------------------------


@pytest.mark.parametrize(("raw", "path", "query"), [
    (b"/a.txt", b"/a.txt", b""),
    (b"/a.txt?v=1&x", b"/a.txt", b"v=1&x"),
    (b"/a.txt#frag", b"/a.txt", b""),
    (b"/a.txt?q#frag", b"/a.txt", b"q#frag"),
    (b"http://example.test/a/b?c", b"/a/b", b"c"),
    (b"HTTPS://example.test", b"/", b""),
    (b"http://example.test?q=1", b"/", b"q=1"),
])
def test_origin_and_absolute_form_targets_split_into_path_and_query(raw, path, query):
    assert split_target(raw) == (path, query)


@pytest.mark.parametrize("raw", [b"*", b"example.test:443", b"ftp://example.test/a", b"a.txt"])
def test_other_target_forms_are_refused_with_400(raw):
    with pytest.raises(BadTarget) as raised:
        split_target(raw)
    assert raised.value.status == 400
