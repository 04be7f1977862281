"""Unit tests for flashsrv.ranges: Range parsing, Content-Range and multipart framing, no I/O."""

from __future__ import annotations

import email
import email.policy
import itertools
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flashsrv.ranges import (
    MAX_RANGES,
    UNSATISFIABLE,
    Unsatisfiable,
    content_range,
    multipart_content_type,
    multipart_plan,
    new_boundary,
    parse_range,
    unsatisfied_range,
)

SIZE = 1000

# --- the sentinel ----------------------------------------------------------------------------


def test_unsatisfiable_is_a_singleton() -> None:
    assert Unsatisfiable() is UNSATISFIABLE
    assert isinstance(UNSATISFIABLE, Unsatisfiable)
    assert repr(UNSATISFIABLE) == "UNSATISFIABLE"


# --- ignored fields (None: serve 200) --------------------------------------------------------


def test_absent_range_is_ignored() -> None:
    assert parse_range(None, SIZE) is None


@pytest.mark.parametrize(
    "value",
    [
        "",
        "bytes",
        "bytes=",
        "bytes= ",
        "bytes=,",
        "bytes=-",
        "bytes=abc",
        "bytes=1-2-3",
        "bytes=10",
        "bytes=+1-2",
        "bytes=1-+2",
        "bytes=0x10-20",
        "bytes=1_0-20",
        "bytes=²-5",
        "bytes=--5",
        "bytes=1 - 2",
        "bytes=0-99;q=1",
        "bytes 0-99",
        "0-99",
    ],
)
def test_syntactically_invalid_range_is_ignored(value: str) -> None:
    assert parse_range(value, SIZE) is None


def test_unknown_unit_is_ignored() -> None:
    assert parse_range("items=0-5", SIZE) is None


def test_none_unit_is_ignored() -> None:
    assert parse_range("none=0-5", SIZE) is None


def test_last_before_first_makes_whole_field_invalid() -> None:
    assert parse_range("bytes=5-3", SIZE) is None


def test_one_invalid_member_invalidates_the_whole_field() -> None:
    assert parse_range("bytes=0-1, x-y", SIZE) is None


def test_more_than_max_ranges_is_ignored() -> None:
    value = "bytes=" + ",".join(f"{i * 10}-{i * 10 + 1}" for i in range(MAX_RANGES + 1))
    assert parse_range(value, SIZE) is None


def test_exactly_max_ranges_is_served() -> None:
    value = "bytes=" + ",".join(f"{i * 10}-{i * 10 + 1}" for i in range(MAX_RANGES))
    result = parse_range(value, SIZE)
    assert isinstance(result, list) and len(result) == MAX_RANGES


def test_max_ranges_is_counted_before_coalescing() -> None:
    value = "bytes=" + ",".join(["0-10"] * 17)
    assert parse_range(value, SIZE) is None


def test_max_ranges_argument_overrides_default() -> None:
    assert parse_range("bytes=0-1,5-6", SIZE, max_ranges=1) is None
    assert parse_range("bytes=0-1", SIZE, max_ranges=1) == [(0, 1)]


def test_huge_digit_strings_do_not_raise() -> None:
    big = "9" * 5000
    assert parse_range(f"bytes=0-{big}", SIZE) == [(0, SIZE - 1)]
    assert parse_range(f"bytes={big}-", SIZE) is UNSATISFIABLE
    assert parse_range(f"bytes=-{big}", SIZE) == [(0, SIZE - 1)]


# --- single ranges ---------------------------------------------------------------------------


def test_simple_range() -> None:
    assert parse_range("bytes=0-99", SIZE) == [(0, 99)]


def test_single_byte_range() -> None:
    assert parse_range("bytes=5-5", SIZE) == [(5, 5)]


def test_last_byte_range() -> None:
    assert parse_range("bytes=999-999", SIZE) == [(999, 999)]


def test_open_ended_range() -> None:
    assert parse_range("bytes=100-", SIZE) == [(100, 999)]


def test_whole_file_as_open_range() -> None:
    assert parse_range("bytes=0-", SIZE) == [(0, 999)]


def test_end_past_the_file_is_clamped() -> None:
    assert parse_range("bytes=900-5000", SIZE) == [(900, 999)]


def test_suffix_range() -> None:
    assert parse_range("bytes=-100", SIZE) == [(900, 999)]


def test_suffix_larger_than_file_is_whole_file() -> None:
    assert parse_range("bytes=-5000", SIZE) == [(0, 999)]


def test_suffix_equal_to_file_is_whole_file() -> None:
    assert parse_range("bytes=-1000", SIZE) == [(0, 999)]


def test_leading_zeros_are_accepted() -> None:
    assert parse_range("bytes=007-0010", SIZE) == [(7, 10)]


def test_unit_is_case_insensitive() -> None:
    assert parse_range("BYTES=0-1", SIZE) == [(0, 1)]
    assert parse_range("Bytes=0-1", SIZE) == [(0, 1)]


def test_whitespace_around_equals_and_value_is_tolerated() -> None:
    assert parse_range(" bytes = 0-1 ", SIZE) == [(0, 1)]


def test_whitespace_around_commas_is_tolerated() -> None:
    assert parse_range("bytes=0-1 ,\t5-6 , 10-11", SIZE) == [(0, 1), (5, 6), (10, 11)]


def test_empty_list_members_are_skipped() -> None:
    assert parse_range("bytes=,0-1,,5-6,", SIZE) == [(0, 1), (5, 6)]


# --- unsatisfiable (416) ---------------------------------------------------------------------


def test_start_at_size_is_unsatisfiable() -> None:
    assert parse_range("bytes=1000-", SIZE) is UNSATISFIABLE


def test_start_past_size_is_unsatisfiable() -> None:
    assert parse_range("bytes=2000-3000", SIZE) is UNSATISFIABLE


def test_zero_suffix_is_unsatisfiable() -> None:
    assert parse_range("bytes=-0", SIZE) is UNSATISFIABLE


@pytest.mark.parametrize("value", ["bytes=0-", "bytes=0-0", "bytes=-1", "bytes=-100"])
def test_every_range_of_an_empty_file_is_unsatisfiable(value: str) -> None:
    assert parse_range(value, 0) is UNSATISFIABLE


def test_unsatisfiable_members_are_dropped_when_others_remain() -> None:
    assert parse_range("bytes=2000-3000, 0-9, -0", SIZE) == [(0, 9)]


def test_all_members_unsatisfiable_is_416() -> None:
    assert parse_range("bytes=2000-3000, 1000-, -0", SIZE) is UNSATISFIABLE


def test_syntax_error_wins_over_unsatisfiable() -> None:
    assert parse_range("bytes=2000-3000, junk", SIZE) is None


# --- coalescing ------------------------------------------------------------------------------


def test_overlapping_ranges_are_coalesced() -> None:
    assert parse_range("bytes=0-50,25-75", SIZE) == [(0, 75)]


def test_adjacent_ranges_are_coalesced() -> None:
    assert parse_range("bytes=0-49,50-99", SIZE) == [(0, 99)]


def test_contained_range_is_absorbed() -> None:
    assert parse_range("bytes=0-500,10-20", SIZE) == [(0, 500)]


def test_duplicate_ranges_collapse_to_one() -> None:
    assert parse_range("bytes=0-9,0-9,0-9", SIZE) == [(0, 9)]


def test_ranges_are_sorted() -> None:
    assert parse_range("bytes=500-599,0-9", SIZE) == [(0, 9), (500, 599)]


def test_gap_of_one_byte_is_not_coalesced() -> None:
    assert parse_range("bytes=0-9,11-20", SIZE) == [(0, 9), (11, 20)]


def test_suffix_and_open_range_overlap_coalesce() -> None:
    assert parse_range("bytes=-100,950-", SIZE) == [(900, 999)]


def test_whole_file_many_ways_is_one_range() -> None:
    assert parse_range("bytes=0-,-1000,0-999", SIZE) == [(0, 999)]


# --- Content-Range values --------------------------------------------------------------------


def test_content_range_format() -> None:
    assert content_range(0, 99, 1000) == "bytes 0-99/1000"


def test_unsatisfied_range_format() -> None:
    assert unsatisfied_range(1000) == "bytes */1000"


def test_unsatisfied_range_of_empty_file() -> None:
    assert unsatisfied_range(0) == "bytes */0"


# --- multipart/byteranges --------------------------------------------------------------------

FILE = bytes(range(256)) * 4 + b"\r\n--tail--\r\n"


def assemble(parts: list[tuple[bytes, int, int]], closing: bytes, data: bytes) -> bytes:
    return b"".join(head + data[start : end + 1] for head, start, end in parts) + closing


def test_new_boundary_is_random_and_usable() -> None:
    a, b = new_boundary(), new_boundary()
    assert a != b
    assert re.fullmatch(r"[0-9a-f]{32}", a)


def test_multipart_content_type() -> None:
    assert multipart_content_type("abc") == "multipart/byteranges; boundary=abc"


def test_multipart_part_head_shape() -> None:
    parts, closing, _ = multipart_plan([(0, 9), (20, 29)], 100, "text/plain", "XYZ")
    assert parts[0] == (
        b"\r\n--XYZ\r\nContent-Type: text/plain\r\nContent-Range: bytes 0-9/100\r\n\r\n",
        0,
        9,
    )
    assert parts[1][0].startswith(b"\r\n--XYZ\r\n")
    assert parts[1][1:] == (20, 29)
    assert closing == b"\r\n--XYZ--\r\n"


def test_multipart_length_equals_assembled_body() -> None:
    ranges = [(0, 9), (100, 199), (len(FILE) - 5, len(FILE) - 1)]
    parts, closing, length = multipart_plan(ranges, len(FILE), "application/octet-stream", "b1")
    assert length == len(assemble(parts, closing, FILE))


def test_multipart_body_parses_with_the_email_package() -> None:
    boundary = new_boundary()
    ranges = [(0, 9), (300, 399), (len(FILE) - 12, len(FILE) - 1)]
    parts, closing, length = multipart_plan(ranges, len(FILE), "application/octet-stream", boundary)
    body = assemble(parts, closing, FILE)
    assert len(body) == length
    message = email.message_from_bytes(
        f"Content-Type: {multipart_content_type(boundary)}\r\n\r\n".encode() + body,
        policy=email.policy.HTTP,
    )
    assert message.is_multipart()
    subparts = list(message.iter_parts())
    assert len(subparts) == len(ranges)
    for sub, (start, end) in zip(subparts, ranges, strict=True):
        assert sub["Content-Type"] == "application/octet-stream"
        assert sub["Content-Range"] == f"bytes {start}-{end}/{len(FILE)}"
        assert sub.get_payload(decode=True) == FILE[start : end + 1]
    assert not message.defects


def test_multipart_body_parses_by_hand() -> None:
    boundary = "sep"
    ranges = [(1, 3), (10, 12)]
    parts, closing, _ = multipart_plan(ranges, 20, "text/plain", boundary)
    data = b"abcdefghijklmnopqrst"
    body = assemble(parts, closing, data)
    assert body.startswith(b"\r\n--sep\r\n")
    assert body.endswith(b"\r\n--sep--\r\n")
    chunks = body[: -len(b"\r\n--sep--\r\n")].split(b"\r\n--sep\r\n")
    assert chunks[0] == b""  # empty preamble
    payloads = [chunk.split(b"\r\n\r\n", 1)[1] for chunk in chunks[1:]]
    assert payloads == [b"bcd", b"klm"]


def test_multipart_single_range_is_still_framed_exactly() -> None:
    parts, closing, length = multipart_plan([(0, 0)], 1, "text/plain", "b")
    assert length == len(assemble(parts, closing, b"x"))


@pytest.mark.parametrize("ranges", [[], [(5, 4)], [(0, 100)], [(-1, 3)]])
def test_multipart_plan_rejects_caller_mistakes(ranges: list[tuple[int, int]]) -> None:
    with pytest.raises(ValueError):
        multipart_plan(ranges, 100, "text/plain", "b")


@pytest.mark.parametrize("boundary", ["", "x" * 71, "é", "trailing "])
def test_multipart_plan_rejects_bad_boundaries(boundary: str) -> None:
    with pytest.raises(ValueError):
        multipart_plan([(0, 1)], 10, "text/plain", boundary)


# --- properties ------------------------------------------------------------------------------

sizes = st.integers(min_value=0, max_value=10**12)
range_specs = st.one_of(
    st.builds(lambda a, b: f"{a}-{b}", st.integers(0, 3000), st.integers(0, 3000)),
    st.builds(lambda a: f"{a}-", st.integers(0, 3000)),
    st.builds(lambda a: f"-{a}", st.integers(0, 3000)),
)
range_fields = st.builds(
    lambda specs, sep: "bytes=" + sep.join(specs),
    st.lists(range_specs, min_size=1, max_size=20),
    st.sampled_from([",", ", ", " ,\t"]),
)


@given(st.one_of(st.none(), st.text()), sizes)
def test_parse_range_never_raises_on_arbitrary_text(value: str | None, size: int) -> None:
    result = parse_range(value, size)
    assert result is None or result is UNSATISFIABLE or isinstance(result, list)
    if isinstance(result, list):
        assert all(0 <= start <= end < size for start, end in result)


@given(st.text(alphabet="bytes=0123456789-, \t"), st.integers(0, 5000))
def test_parse_range_near_miss_grammar_never_raises(value: str, size: int) -> None:
    result = parse_range(value, size)
    if isinstance(result, list):
        assert all(0 <= start <= end < size for start, end in result)


@given(range_fields, st.integers(0, 3000))
def test_returned_ranges_lie_within_the_file(value: str, size: int) -> None:
    result = parse_range(value, size)
    if isinstance(result, list):
        assert result
        assert all(0 <= start <= end < size for start, end in result)


@given(range_fields, st.integers(1, 3000))
def test_coalesced_ranges_are_sorted_disjoint_and_not_adjacent(value: str, size: int) -> None:
    result = parse_range(value, size)
    if isinstance(result, list):
        for (_, prev_end), (next_start, _) in itertools.pairwise(result):
            assert prev_end + 1 < next_start
        assert sum(end - start + 1 for start, end in result) <= size


@given(range_fields, st.integers(1, 3000))
def test_coalescing_covers_exactly_the_requested_bytes(value: str, size: int) -> None:
    result = parse_range(value, size)
    if not isinstance(result, list):
        return
    wanted: set[int] = set()
    for spec in value.removeprefix("bytes=").replace(" ", "").replace("\t", "").split(","):
        first, _, last = spec.partition("-")
        if not first:
            wanted.update(range(max(size - int(last), 0), size))
        elif int(first) < size:
            wanted.update(range(int(first), min(int(last), size - 1) + 1 if last else size))
    covered = {i for start, end in result for i in range(start, end + 1)}
    assert covered == wanted


@given(
    st.lists(st.tuples(st.integers(0, 499), st.integers(0, 499)), min_size=1, max_size=8),
    st.text(alphabet="abcdefghij0123456789", min_size=1, max_size=70),
)
def test_multipart_length_is_always_exact(pairs: list[tuple[int, int]], boundary: str) -> None:
    ranges = [(min(a, b), max(a, b)) for a, b in pairs]
    data = bytes(i % 251 for i in range(500))
    parts, closing, length = multipart_plan(ranges, len(data), "image/png", boundary)
    assert length == len(assemble(parts, closing, data))
