"""flashsrv.prepared: the table of whole responses the connection's fast lane writes."""

from __future__ import annotations

from flashsrv.prepared import MAX_BYTES, PreparedResponses


def test_kept_response_is_found_by_its_exact_target():
    table = PreparedResponses()
    table.keep(b"/a.txt", b"HEAD\r\n\r\nalpha\n", 6)
    assert table.get(b"/a.txt") == (b"HEAD\r\n\r\nalpha\n", 6)
    assert table.get(b"/a.txt?v=1") is None and table.get(b"/A.txt") is None
    assert table.used == len(b"HEAD\r\n\r\nalpha\n")


def test_a_target_already_kept_is_not_replaced_nor_counted_twice():
    table = PreparedResponses()
    table.keep(b"/a", b"first", 1)
    table.keep(b"/a", b"second!", 2)
    assert table[b"/a"] == (b"first", 1)
    assert table.used == len(b"first")


def test_table_is_bounded_in_bytes():
    table = PreparedResponses(max_bytes=10)
    table.keep(b"/a", b"12345", 1)
    table.keep(b"/b", b"67890", 1)
    table.keep(b"/c", b"x", 1)  # would go over: not kept
    assert set(table) == {b"/a", b"/b"} and table.used == 10
    assert PreparedResponses().max_bytes == MAX_BYTES


def test_clear_empties_the_table_but_keeps_the_counters():
    table = PreparedResponses(max_bytes=10)
    table.keep(b"/a", b"12345", 1)
    table.hits, table.bytes_sent = 3, 15
    table.clear()
    assert not table and table.used == 0
    assert (table.hits, table.bytes_sent) == (3, 15)
    table.keep(b"/b", b"1234567890", 1)  # room again after a clear
    assert b"/b" in table


def test_stopped_table_keeps_nothing_more():
    table = PreparedResponses()
    table.keep(b"/a", b"x", 1)
    table.stop()
    assert not table
    table.keep(b"/b", b"y", 1)
    assert not table
