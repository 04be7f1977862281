"""Unit tests for flashsrv.conditional: RFC 9110 §13 preconditions and If-Range, no I/O."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flashsrv.conditional import (
    evaluate_preconditions,
    if_range_allows_partial,
    parse_entity_tags,
)
from flashsrv.httpdate import format_http_date

ETAG = '"5f3a-1c8"'
MTIME = 784111777  # Sun, 06 Nov 1994 08:49:37 GMT
AT = format_http_date(MTIME)
BEFORE = format_http_date(MTIME - 1)
AFTER = format_http_date(MTIME + 1)


def check(
    method: str = "GET",
    *,
    im: str | None = None,
    inm: str | None = None,
    ims: str | None = None,
    ius: str | None = None,
    etag: str = ETAG,
    mtime: int = MTIME,
) -> int | None:
    return evaluate_preconditions(method, etag, mtime, im, inm, ims, ius)


# --- entity-tag lists ------------------------------------------------------------------------


def test_parse_single_strong_tag() -> None:
    assert parse_entity_tags('"abc"') == [(False, '"abc"')]


def test_parse_weak_tag() -> None:
    assert parse_entity_tags('W/"abc"') == [(True, '"abc"')]


def test_parse_list_with_whitespace_and_empty_members() -> None:
    assert parse_entity_tags(' "a" ,, W/"b",\t"c" , ') == [
        (False, '"a"'),
        (True, '"b"'),
        (False, '"c"'),
    ]


def test_parse_comma_inside_opaque_tag_is_part_of_the_tag() -> None:
    assert parse_entity_tags('"a,b", "c"') == [(False, '"a,b"'), (False, '"c"')]


def test_parse_empty_opaque_tag_is_valid() -> None:
    assert parse_entity_tags('""') == [(False, '""')]


def test_parse_skips_unquoted_members() -> None:
    assert parse_entity_tags('abc, "d"') == [(False, '"d"')]


def test_parse_lowercase_weak_prefix_is_malformed() -> None:
    assert parse_entity_tags('w/"a", "b"') == [(False, '"b"')]


def test_parse_unterminated_quote_ends_the_list() -> None:
    assert parse_entity_tags('"a", "b') == [(False, '"a"')]


def test_parse_space_inside_tag_is_malformed() -> None:
    assert parse_entity_tags('"a b", "c"') == [(False, '"c"')]


def test_parse_trailing_garbage_after_tag_drops_the_member() -> None:
    assert parse_entity_tags('"a"x, "b"') == [(False, '"b"')]


def test_parse_empty_value() -> None:
    assert parse_entity_tags("") == []


@given(st.text())
def test_parse_entity_tags_never_raises(value: str) -> None:
    for weak, opaque in parse_entity_tags(value):
        assert isinstance(weak, bool)
        assert opaque.startswith('"') and opaque.endswith('"')


# --- no conditions ---------------------------------------------------------------------------


def test_unconditional_request_proceeds() -> None:
    assert check() is None


def test_empty_condition_fields_are_ignored() -> None:
    assert check(im="", inm=" ", ims="", ius="") is None


# --- If-Match (§13.1.1) ----------------------------------------------------------------------


def test_if_match_same_strong_tag_proceeds() -> None:
    assert check(im=ETAG) is None


def test_if_match_other_tag_fails_with_412() -> None:
    assert check(im='"other"') == 412


def test_if_match_star_proceeds_for_existing_resource() -> None:
    assert check(im="*") is None


def test_if_match_list_containing_our_tag_proceeds() -> None:
    assert check(im=f'"a", {ETAG} ,"b"') is None


def test_if_match_uses_strong_comparison_so_weak_tag_fails() -> None:
    assert check(im=f"W/{ETAG}") == 412


def test_if_match_never_matches_our_weak_etag() -> None:
    assert check(im=ETAG, etag=f"W/{ETAG}") == 412


def test_if_match_garbage_fails_with_412() -> None:
    assert check(im="garbage") == 412


def test_if_match_failure_is_412_even_for_get() -> None:
    assert check("GET", im='"x"') == 412
    assert check("HEAD", im='"x"') == 412


def test_if_match_is_case_sensitive() -> None:
    assert check(im='"5F3A-1C8"') == 412


def test_if_match_failure_wins_over_matching_if_none_match() -> None:
    assert check(im='"x"', inm=ETAG) == 412


# --- If-Unmodified-Since (§13.1.4) -----------------------------------------------------------


def test_if_unmodified_since_same_date_proceeds() -> None:
    assert check(ius=AT) is None


def test_if_unmodified_since_later_date_proceeds() -> None:
    assert check(ius=AFTER) is None


def test_if_unmodified_since_earlier_date_fails_with_412() -> None:
    assert check(ius=BEFORE) == 412


def test_if_unmodified_since_ignored_when_if_match_present() -> None:
    assert check(im=ETAG, ius=BEFORE) is None


def test_if_unmodified_since_ignored_when_if_match_is_star() -> None:
    assert check(im="*", ius=BEFORE) is None


def test_if_unmodified_since_unparseable_is_ignored() -> None:
    assert check(ius="yesterday") is None


def test_if_unmodified_since_list_of_dates_is_ignored() -> None:
    assert check(ius=f"{BEFORE}, {BEFORE}") is None


def test_if_unmodified_since_accepts_rfc850_and_asctime() -> None:
    assert check(ius="Saturday, 05-Nov-94 08:49:37 GMT") == 412
    assert check(ius="Sat Nov  5 08:49:37 1994") == 412


# --- If-None-Match (§13.1.2) -----------------------------------------------------------------


def test_if_none_match_same_tag_gives_304_for_get() -> None:
    assert check("GET", inm=ETAG) == 304


def test_if_none_match_same_tag_gives_304_for_head() -> None:
    assert check("HEAD", inm=ETAG) == 304


def test_if_none_match_same_tag_gives_412_for_other_methods() -> None:
    assert check("POST", inm=ETAG) == 412
    assert check("DELETE", inm=ETAG) == 412


def test_if_none_match_other_tag_proceeds() -> None:
    assert check(inm='"other"') is None


def test_if_none_match_uses_weak_comparison() -> None:
    assert check(inm=f"W/{ETAG}") == 304


def test_if_none_match_matches_our_weak_etag_weakly() -> None:
    assert check(inm=ETAG, etag=f"W/{ETAG}") == 304


def test_if_none_match_star_gives_304() -> None:
    assert check(inm="*") == 304


def test_if_none_match_star_gives_412_for_put() -> None:
    assert check("PUT", inm="*") == 412


def test_if_none_match_list_containing_our_tag_gives_304() -> None:
    assert check(inm=f'"a", W/"b", {ETAG}') == 304


def test_if_none_match_garbage_proceeds() -> None:
    assert check(inm="garbage, also garbage") is None


def test_if_none_match_method_is_case_sensitive() -> None:
    assert check("get", inm=ETAG) == 412


def test_if_none_match_wins_over_if_modified_since() -> None:
    # The tag differs, so the resource changed: a later IMS must not turn that into 304.
    assert check(inm='"other"', ims=AFTER) is None


def test_if_none_match_match_wins_over_old_if_modified_since() -> None:
    assert check(inm=ETAG, ims=BEFORE) == 304


# --- If-Modified-Since (§13.1.3) -------------------------------------------------------------


def test_if_modified_since_same_date_gives_304() -> None:
    assert check(ims=AT) == 304


def test_if_modified_since_later_date_gives_304() -> None:
    assert check(ims=AFTER) == 304


def test_if_modified_since_earlier_date_proceeds() -> None:
    assert check(ims=BEFORE) is None


def test_if_modified_since_for_head_gives_304() -> None:
    assert check("HEAD", ims=AT) == 304


def test_if_modified_since_ignored_for_other_methods() -> None:
    assert check("POST", ims=AT) is None


def test_if_modified_since_unparseable_is_ignored() -> None:
    assert check(ims="not a date") is None


def test_if_modified_since_list_of_dates_is_ignored() -> None:
    assert check(ims=f"{AFTER}, {BEFORE}") is None


def test_if_modified_since_with_surrounding_whitespace() -> None:
    assert check(ims=f"  {AT}\t") == 304


# --- precedence across all four --------------------------------------------------------------


def test_all_four_satisfied_gives_304_from_if_none_match() -> None:
    assert check(im=ETAG, inm=ETAG, ims=AT, ius=AT) == 304


def test_passing_if_unmodified_since_then_if_modified_since_304() -> None:
    assert check(ius=AFTER, ims=AFTER) == 304


def test_failing_if_unmodified_since_wins_over_if_none_match() -> None:
    assert check(ius=BEFORE, inm=ETAG) == 412


# --- If-Range (§13.1.5) ----------------------------------------------------------------------


def test_no_if_range_allows_partial() -> None:
    assert if_range_allows_partial(None, ETAG, MTIME)


def test_if_range_matching_strong_etag_allows_partial() -> None:
    assert if_range_allows_partial(ETAG, ETAG, MTIME)


def test_if_range_with_whitespace_around_tag_allows_partial() -> None:
    assert if_range_allows_partial(f" {ETAG} ", ETAG, MTIME)


def test_if_range_other_etag_refuses_partial() -> None:
    assert not if_range_allows_partial('"other"', ETAG, MTIME)


def test_weak_etag_never_satisfies_if_range() -> None:
    assert not if_range_allows_partial(f"W/{ETAG}", ETAG, MTIME)


def test_if_range_never_matches_our_weak_etag() -> None:
    assert not if_range_allows_partial(ETAG, f"W/{ETAG}", MTIME)


def test_if_range_list_of_etags_refuses_partial() -> None:
    assert not if_range_allows_partial(f"{ETAG}, {ETAG}", ETAG, MTIME)


def test_if_range_tag_with_trailing_junk_refuses_partial() -> None:
    assert not if_range_allows_partial(f"{ETAG} junk", ETAG, MTIME)


def test_if_range_exact_date_allows_partial() -> None:
    assert if_range_allows_partial(AT, ETAG, MTIME)


def test_if_range_later_date_refuses_partial() -> None:
    assert not if_range_allows_partial(AFTER, ETAG, MTIME)


def test_if_range_earlier_date_refuses_partial() -> None:
    assert not if_range_allows_partial(BEFORE, ETAG, MTIME)


@pytest.mark.parametrize("value", ["", "   ", "garbage", "*", "12345", f"{AT}, {AT}"])
def test_if_range_unparseable_refuses_partial(value: str) -> None:
    assert not if_range_allows_partial(value, ETAG, MTIME)


@given(st.text(), st.text(max_size=20), st.integers(min_value=0, max_value=2**40))
def test_if_range_never_raises(value: str, tag: str, mtime: int) -> None:
    assert isinstance(if_range_allows_partial(value, f'"{tag}"', mtime), bool)


@given(
    st.sampled_from(["GET", "HEAD", "POST", "PUT"]),
    st.one_of(st.none(), st.text()),
    st.one_of(st.none(), st.text()),
    st.one_of(st.none(), st.text()),
    st.one_of(st.none(), st.text()),
)
def test_evaluate_preconditions_never_raises(
    method: str, im: str | None, inm: str | None, ims: str | None, ius: str | None
) -> None:
    assert check(method, im=im, inm=inm, ims=ims, ius=ius) in (None, 304, 412)


@given(st.sampled_from(["POST", "PUT", "DELETE"]), st.one_of(st.none(), st.text()))
def test_other_methods_never_get_304(method: str, inm: str | None) -> None:
    assert check(method, inm=inm, ims=AT) != 304
