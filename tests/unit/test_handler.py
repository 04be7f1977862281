"""flashsrv.handler: the one table from a failure to the answer that reports it."""

from __future__ import annotations

import errno
import logging

import pytest

from flashsrv.disk import DiskUnavailable, FileChanged
from flashsrv.handler import failure


@pytest.mark.parametrize("exc", [
    ConnectionResetError("client went away"), BrokenPipeError(), ConnectionAbortedError()])
def test_client_gone_means_close_without_an_answer(exc):
    assert failure(exc) is None


def test_disk_layer_unavailable_is_503():
    status, detail, why = failure(DiskUnavailable("helper queue full"))
    assert status == 503 and "try again" in detail and why == "helper queue full"


def test_file_changed_while_read_is_503():
    status, detail, why = failure(FileChanged())
    assert status == 503 and "changed" in detail and "changed" in why


def test_other_os_error_is_500_without_detail_for_the_client():
    status, detail, why = failure(OSError(errno.EIO, "Input/output error"))
    assert (status, detail) == (500, "")
    assert "Input/output error" in why


def test_a_bug_is_logged_and_the_connection_closed(caplog):
    with caplog.at_level(logging.ERROR, logger="flashsrv.connection"):
        assert failure(KeyError("oops")) is None
    assert "internal error" in caplog.text
