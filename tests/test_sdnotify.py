"""The sd_notify client against real AF_UNIX datagram sockets, as systemd would provide them."""

from __future__ import annotations

import logging
import os
import socket
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tlslogd.sdnotify import SystemdNotifier


@pytest.fixture
def notify_socket() -> Iterator[tuple[socket.socket, str]]:
    """A bound datagram socket on a short path (AF_UNIX paths are limited to 107 bytes)."""
    with tempfile.TemporaryDirectory(prefix="sdn") as tmp:
        path = str(Path(tmp) / "notify")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(path)
        sock.settimeout(5)
        try:
            yield sock, path
        finally:
            sock.close()


def received(sock: socket.socket) -> dict[str, str]:
    data = sock.recv(4096).decode()
    return dict(line.split("=", 1) for line in data.split("\n"))


def test_unset_notify_socket_is_a_no_op() -> None:
    notifier = SystemdNotifier.from_environ({})
    assert not notifier.enabled
    assert notifier.ready() is False
    assert notifier.status("idle") is False
    assert notifier.watchdog() is False
    assert notifier.watchdog_interval() is None


def test_each_message_reaches_the_socket(notify_socket: tuple[socket.socket, str]) -> None:
    sock, path = notify_socket
    notifier = SystemdNotifier.from_environ({"NOTIFY_SOCKET": path})
    assert notifier.enabled

    assert notifier.ready("following /var/log/mail.log")
    assert received(sock) == {"READY": "1", "STATUS": "following /var/log/mail.log"}

    assert notifier.status("12 handshakes/s\nline two")
    assert received(sock) == {"STATUS": "12 handshakes/s line two"}

    assert notifier.watchdog()
    assert received(sock) == {"WATCHDOG": "1"}

    assert notifier.stopping()
    assert received(sock) == {"STOPPING": "1"}


def test_reloading_carries_the_monotonic_clock(notify_socket: tuple[socket.socket, str]) -> None:
    sock, path = notify_socket
    notifier = SystemdNotifier.from_environ({"NOTIFY_SOCKET": path})
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    assert notifier.reloading()
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    message = received(sock)
    assert message["RELOADING"] == "1"
    assert before <= int(message["MONOTONIC_USEC"]) <= after


def test_abstract_namespace_socket() -> None:
    name = f"tlslogd-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(5)
        notifier = SystemdNotifier.from_environ({"NOTIFY_SOCKET": "@" + name})
        assert notifier.ready()
        assert received(sock) == {"READY": "1"}


def test_send_failure_never_raises_and_logs_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    missing = str(tmp_path / "gone")
    notifier = SystemdNotifier.from_environ({"NOTIFY_SOCKET": missing})
    with caplog.at_level(logging.DEBUG, logger="tlslogd.sdnotify"):
        assert notifier.watchdog() is False
        assert notifier.watchdog() is False
        assert notifier.status("still here") is False
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1
    assert missing in warnings[0].getMessage()


def test_non_unix_address_disables_notifications(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="tlslogd.sdnotify"):
        notifier = SystemdNotifier.from_environ({"NOTIFY_SOCKET": "vsock:2:1234"})
    assert not notifier.enabled
    assert notifier.ready() is False
    assert "vsock:2:1234" in caplog.text


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({"WATCHDOG_USEC": "30000000"}, 30.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid())}, 30.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid() + 1)}, None),
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "soon"}, None),
        ({}, None),
    ],
)
def test_watchdog_interval(environ: dict[str, str], expected: float | None) -> None:
    assert SystemdNotifier.from_environ(environ).watchdog_interval() == expected
