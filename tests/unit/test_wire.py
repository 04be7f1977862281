"""helpers/wire.py: the frames between the main process and its helpers."""

from __future__ import annotations

import pytest
from flashsrv_helpers.wire import (
    CHANGED,
    DATA,
    DIRECTORY,
    ERROR,
    FACTS,
    FILE,
    FORBIDDEN,
    LENGTH,
    LISTING,
    MAX_FRAME,
    MISSING,
    FrameDecoder,
    encode,
)
from hypothesis import given
from hypothesis import strategies as st

# What crosses the pipes: tuples of plain values, nested in lists and tuples.
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=20),
    st.binary(max_size=40),
)
values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.lists(inner, max_size=3).map(tuple)), max_leaves=6)
messages = st.lists(st.lists(values, max_size=5).map(tuple), max_size=6)


@given(messages=messages, data=st.data())
def test_messages_fed_in_any_chunks_decode_to_the_same_messages(messages, data):
    stream = b"".join(encode(message) for message in messages)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=10)))
    decoder = FrameDecoder()
    decoded = []
    for start, end in zip([0, *cuts], [*cuts, len(stream)], strict=True):
        decoded += decoder.feed(stream[start:end])
    assert decoded == messages


def test_message_fed_byte_by_byte_comes_out_once_complete():
    frame = encode((FILE, [("", 6, 1, 2, 3, b"alpha\n", True)]))
    decoder = FrameDecoder()
    assert all(decoder.feed(frame[i : i + 1]) == [] for i in range(len(frame) - 1))
    assert decoder.feed(frame[-1:]) == [(FILE, [("", 6, 1, 2, 3, b"alpha\n", True)])]


def test_several_frames_in_one_read_all_come_out_in_order():
    decoder = FrameDecoder()
    assert decoder.feed(encode((1,)) + encode((2,)) + encode((3,))[:3]) == [(1,), (2,)]
    assert decoder.feed(encode((3,))[3:]) == [(3,)]


def test_frame_longer_than_the_limit_raises_value_error():
    with pytest.raises(ValueError, match="exceeds"):
        FrameDecoder().feed(LENGTH.pack(MAX_FRAME + 1))


def test_frame_of_exactly_the_limit_is_awaited_not_refused():
    assert FrameDecoder().feed(LENGTH.pack(MAX_FRAME) + b"x") == []


def test_frame_is_a_big_endian_length_then_its_payload():
    frame = encode(("lookup", "a.txt"))
    (size,) = LENGTH.unpack_from(frame)
    assert size == len(frame) - LENGTH.size
    assert frame[:4] == size.to_bytes(4, "big")


def test_result_kinds_are_distinct_and_changed_is_a_result_tuple():
    kinds = [FILE, DIRECTORY, MISSING, FORBIDDEN, ERROR, LISTING, FACTS, DATA]
    assert len(set(kinds)) == len(kinds)
    assert isinstance(CHANGED, tuple) and CHANGED[0] not in kinds
    assert FrameDecoder().feed(encode(CHANGED)) == [CHANGED]
