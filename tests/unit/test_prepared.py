"""flashsrv.prepared: the table of whole responses the connection's fast lane writes."""

from __future__ import annotations

from flashsrv.prepared import MAX_BYTES, MAX_STREAMS, PreparedResponses


def test_kept_response_is_found_by_its_exact_target():
    table = PreparedResponses()
    table.keep(b"/a.txt", (b"HEAD\r\n\r\n", b"alpha\n"))
    assert table.get(b"/a.txt") == (b"HEAD\r\n\r\nalpha\n", 6)
    assert table.get(b"/a.txt?v=1") is None and table.get(b"/A.txt") is None
    assert table.used == len(b"HEAD\r\n\r\nalpha\n")


def test_a_target_already_kept_is_not_replaced_nor_counted_twice():
    table = PreparedResponses()
    table.keep(b"/a", (b"firs", b"t"))
    table.keep(b"/a", (b"secon", b"d!"))
    assert table[b"/a"] == (b"first", 1)
    assert table.used == len(b"first")


def test_table_is_bounded_in_bytes():
    table = PreparedResponses(max_bytes=10)
    table.keep(b"/a", (b"1234", b"5"))
    table.keep(b"/b", (b"6789", b"0"))
    table.keep(b"/c", (b"", b"x"))  # would go over: not kept
    assert set(table) == {b"/a", b"/b"} and table.used == 10
    assert PreparedResponses().max_bytes == MAX_BYTES


def test_clear_empties_the_table_but_keeps_the_counters():
    table = PreparedResponses(max_bytes=10)
    table.keep(b"/a", (b"1234", b"5"))
    for log_headers in (False, True):
        table.repeats(log_headers).remember(b"GET /a HTTP/1.1\r\n\r\n", (b"/a", b"", {}))
    table.hits, table.bytes_sent = 3, 15
    table.clear()
    assert not table and table.used == 0
    assert not table.repeats(False) and not table.repeats(True)
    assert (table.hits, table.bytes_sent) == (3, 15)
    table.keep(b"/b", (b"123456789", b"0"))  # room again after a clear
    assert b"/b" in table


def test_stopped_table_keeps_nothing_more():
    table = PreparedResponses()
    table.keep(b"/a", (b"", b"x"))
    table.stop()
    assert not table
    table.keep(b"/b", (b"", b"y"))
    assert not table


def test_kept_streams_outlive_the_tick_while_current_and_go_with_a_clear():
    table: PreparedResponses[str] = PreparedResponses()
    table.keep(b"/small", (b"HEAD\r\n\r\n", b"x"))
    table.keep_stream(b"/big", "plan of /big")
    table.keep_stream(b"/old", "plan of /old")
    table.keep_stream(b"/big", "another plan")  # the first one stays
    table.repeats(False).remember(b"GET /big HTTP/1.1\r\n\r\n", (b"/big", b"", {}))
    table.expire(lambda kept: kept != "plan of /old")
    assert not table and table.streams == {b"/big": "plan of /big"}
    assert table.repeats(False), "the same bytes still parse the same after a tick"
    table.clear()
    assert not table.streams and not table.repeats(False)


def test_kept_streams_are_bounded_in_number_and_none_is_kept_once_stopped():
    table: PreparedResponses[int] = PreparedResponses()
    for i in range(MAX_STREAMS + 5):
        table.keep_stream(b"/f%d" % i, i)
    assert len(table.streams) == MAX_STREAMS
    table.stop()
    table.keep_stream(b"/late", 1)
    assert not table.streams
