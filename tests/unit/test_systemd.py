"""The systemd protocols' pure parts: LISTEN_* and NOTIFY_SOCKET parsing, notices, and what a
supervisor tells systemd for its workers. The Notifier's never-raising send is tested on a
socket pair (no systemd needed)."""

from __future__ import annotations

import logging
import os
import socket

import pytest

from flashsrv.systemd import (
    ActivationError,
    Notifier,
    WorkerNotices,
    listen_fds,
    notify_address,
    parse_notice,
    receive_notices,
    watchdog_interval,
)

PID = 4242


def test_listen_fds_start_at_three_and_take_their_names():
    env = {"LISTEN_PID": str(PID), "LISTEN_FDS": "2", "LISTEN_FDNAMES": "http:admin"}
    assert listen_fds(env, PID) == [(3, "http"), (4, "admin")]


def test_listen_fds_without_one_name_per_socket_are_unknown():
    env = {"LISTEN_PID": str(PID), "LISTEN_FDS": "2", "LISTEN_FDNAMES": "http"}
    assert listen_fds(env, PID) == [(3, "unknown"), (4, "unknown")]
    assert listen_fds({"LISTEN_PID": str(PID), "LISTEN_FDS": "1"}, PID) == [(3, "unknown")]


@pytest.mark.parametrize("env", [
    {},
    {"LISTEN_FDS": "1"},  # no LISTEN_PID: not for anyone
    {"LISTEN_PID": str(PID + 1), "LISTEN_FDS": "1"},  # inherited from the process systemd started
    {"LISTEN_PID": str(PID), "LISTEN_FDS": "0"},
])
def test_listen_fds_meant_for_no_socket_of_ours_are_none(env):
    assert listen_fds(env, PID) == []


@pytest.mark.parametrize("env", [
    {"LISTEN_PID": "me", "LISTEN_FDS": "1"},
    {"LISTEN_PID": str(PID), "LISTEN_FDS": "one"},
    {"LISTEN_PID": str(PID)},
    {"LISTEN_PID": str(PID), "LISTEN_FDS": "-1"},
])
def test_malformed_listen_variables_are_an_error(env):
    with pytest.raises(ActivationError):
        listen_fds(env, PID)


def test_notify_address_is_a_path_or_an_abstract_name():
    assert notify_address("/run/systemd/notify") == b"/run/systemd/notify"
    assert notify_address("@flashsrv/notify") == b"\0flashsrv/notify"


@pytest.mark.parametrize("value", ["", "@", "relative/path", "vsock:2:1234"])
def test_notify_address_refuses_what_it_cannot_reach(value):
    with pytest.raises(ValueError):
        notify_address(value)


def test_watchdog_interval_is_in_seconds_for_us_only():
    assert watchdog_interval({"WATCHDOG_USEC": "200000"}, PID) == 0.2
    assert watchdog_interval({"WATCHDOG_USEC": "20000000", "WATCHDOG_PID": str(PID)}, PID) == 20
    assert watchdog_interval({"WATCHDOG_USEC": "200000", "WATCHDOG_PID": "1"}, PID) is None
    assert watchdog_interval({}, PID) is None
    assert watchdog_interval({"WATCHDOG_USEC": "0"}, PID) is None
    assert watchdog_interval({"WATCHDOG_USEC": "soon"}, PID) is None


def test_parse_notice_reads_key_value_lines():
    assert parse_notice(b"READY=1\nSTATUS=a=b\nnoise\n") == {"READY": "1", "STATUS": "a=b"}


def test_the_tick_runs_twice_per_watchdog_interval_when_that_is_shorter():
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    with a, b:
        assert Notifier(a, watchdog=0.2).ping_period(0.25) == 0.1
        assert Notifier(a, watchdog=30).ping_period(0.25) == 0.25
        assert Notifier(a).ping_period(0.25) == 0.25
        assert Notifier(None, watchdog=0.2).ping_period(0.25) == 0.25


def test_without_notify_socket_nothing_is_sent_and_the_variables_are_removed():
    environ = {"WATCHDOG_USEC": "200000", "WATCHDOG_PID": str(PID), "OTHER": "x"}
    notifier = Notifier.from_environment(environ, PID)
    assert notifier.sock is None and notifier.watchdog is None
    notifier.notify("READY=1")
    notifier.ping()
    assert environ == {"OTHER": "x"}


def test_a_notify_socket_nobody_listens_on_disables_notifications(caplog):
    environ = {"NOTIFY_SOCKET": "@flashsrv-test-nobody-listens-here"}
    with caplog.at_level(logging.WARNING, "flashsrv"):
        notifier = Notifier.from_environment(environ, PID)
    assert notifier.sock is None and "NOTIFY_SOCKET" not in environ
    assert "notification socket" in caplog.text


def test_notices_are_sent_as_one_datagram_each():
    ours, systemd = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    with ours, systemd:
        notifier = Notifier(ours, watchdog=1.0)
        notifier.notify("READY=1", "STATUS=serving")
        notifier.notify()  # nothing to say: no empty datagram
        notifier.ping()
        systemd.settimeout(1)
        assert systemd.recv(4096) == b"READY=1\nSTATUS=serving"
        assert systemd.recv(4096) == b"WATCHDOG=1"


def test_a_send_never_blocks_nor_raises_and_failures_are_logged_once(caplog):
    ours, systemd = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    with ours:
        notifier = Notifier(ours, watchdog=1.0)
        with caplog.at_level(logging.WARNING, "flashsrv"):
            for _ in range(10_000):  # far more than the receiver's buffer holds
                notifier.ping()
            full = notifier.errors
            systemd.close()
            notifier.ping()
    assert full > 0 and notifier.errors == full + 1
    assert caplog.text.count("notification to systemd failed") == 1


def test_a_supervisor_learns_which_worker_sent_a_notice():
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    with a, b:
        channel = Notifier(a).worker_channel()
        assert channel is not None
        receiver, worker = channel
        assert receive_notices(receiver) == []
        worker.notify("READY=1")
        worker.notify("WATCHDOG=1")
        assert receive_notices(receiver) == [(os.getpid(), {"READY": "1"}),
                                             (os.getpid(), {"WATCHDOG": "1"})]
        receiver.close()
        assert worker.sock is not None
        worker.sock.close()
    assert Notifier(None).worker_channel() is None


def _supervisor(*workers: int) -> WorkerNotices:
    notices = WorkerNotices(1)
    for pid in workers:
        notices.started(pid)
    return notices


def test_ready_is_sent_once_every_worker_is_ready():
    notices = _supervisor(10, 11)
    assert notices.heard(10, {"READY": "1"}) == []
    assert notices.heard(11, {"READY": "1"}) == ["READY=1", "MAINPID=1",
                                                 "STATUS=2 workers serving"]
    assert notices.heard(10, {"READY": "1"}) == []  # once


def test_a_worker_that_dies_before_it_is_ready_is_not_waited_for():
    notices = _supervisor(10, 11)
    assert notices.heard(10, {"READY": "1"}) == []
    assert notices.exited(11)[0] == "READY=1"


def test_the_watchdog_is_fed_only_when_every_serving_worker_pinged():
    notices = _supervisor(10, 11)
    assert notices.heard(10, {"WATCHDOG": "1"}) == []  # not up yet: systemd does not watch
    notices.heard(10, {"READY": "1"})
    notices.heard(11, {"READY": "1"})
    assert notices.heard(10, {"WATCHDOG": "1"}) == []
    assert notices.heard(10, {"WATCHDOG": "1"}) == []  # 11 is still silent
    assert notices.heard(11, {"WATCHDOG": "1"}) == ["WATCHDOG=1"]
    assert notices.heard(11, {"WATCHDOG": "1"}) == []  # a new round
    notices.exited(10)
    notices.started(12)  # a replacement: not awaited until it is ready
    assert notices.heard(11, {"WATCHDOG": "1"}) == ["WATCHDOG=1"]


def test_a_reload_is_over_when_every_worker_is_ready_again():
    notices = _supervisor(10, 11)
    notices.heard(10, {"READY": "1"})
    notices.heard(11, {"READY": "1"})
    lines = notices.reloading()
    assert lines[0] == "RELOADING=1" and lines[1].startswith("MONOTONIC_USEC=")
    assert notices.heard(10, {"WATCHDOG": "1"}) == []
    assert notices.heard(11, {"WATCHDOG": "1"}) == ["WATCHDOG=1"]  # pings go on meanwhile
    assert notices.heard(11, {"READY": "1"}) == []
    assert notices.heard(10, {"READY": "1"})[0] == "READY=1"


def test_no_ready_after_stopping_and_strangers_are_ignored():
    notices = _supervisor(10)
    assert notices.stopping()[0] == "STOPPING=1"
    assert notices.heard(10, {"READY": "1"}) == []
    assert notices.heard(99, {"READY": "1"}) == []
