"""Service-manager notifications (the sd_notify protocol) without a libsystemd dependency.

systemd passes the address of a datagram socket in ``$NOTIFY_SOCKET`` to ``Type=notify`` services;
each datagram is a set of newline-separated ``KEY=VALUE`` assignments. When the variable is unset
(the daemon runs in a terminal, a container or under another supervisor) every call is a no-op.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Mapping

log = logging.getLogger(__name__)


class SystemdNotifier:
    """Sends state changes to the service manager over the ``$NOTIFY_SOCKET`` datagram socket.

    A failed send never raises: the first failure is logged as a warning, later ones at debug
    level, because losing a notification must not take the daemon down.
    """

    def __init__(self, address: str | None, *, watchdog_usec: int | None = None) -> None:
        self._address = _socket_address(address) if address else None
        self._watchdog_usec = watchdog_usec
        self._failure_logged = False

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> SystemdNotifier:
        """Build a notifier from ``NOTIFY_SOCKET``, ``WATCHDOG_USEC`` and ``WATCHDOG_PID``.

        The watchdog applies only when ``WATCHDOG_PID`` is unset or names this process, as
        sd_watchdog_enabled(3) specifies: a child that inherited the environment must not ping.
        """
        address = environ.get("NOTIFY_SOCKET") or None
        if address is not None and not address.startswith(("/", "@")):
            log.warning("NOTIFY_SOCKET=%r is not an AF_UNIX socket; notifications are off", address)
            address = None
        return cls(address, watchdog_usec=_watchdog_usec(environ))

    @property
    def enabled(self) -> bool:
        """True when there is a service manager to notify."""
        return self._address is not None

    def watchdog_interval(self) -> float | None:
        """The watchdog timeout in seconds (``WatchdogSec=``), or None when there is no watchdog.

        Ping with :meth:`watchdog` at half this interval at the latest.
        """
        if self._watchdog_usec is None:
            return None
        return self._watchdog_usec / 1_000_000

    def ready(self, status: str | None = None) -> bool:
        """Start-up is complete (``READY=1``), optionally with a status line."""
        return self._send("READY=1", *_status_lines(status))

    def status(self, text: str) -> bool:
        """A one-line, human-readable status shown by ``systemctl status``."""
        return self._send(*_status_lines(text))

    def watchdog(self) -> bool:
        """Keep-alive ping for ``WatchdogSec=`` (``WATCHDOG=1``)."""
        return self._send("WATCHDOG=1")

    def reloading(self) -> bool:
        """A reload has begun; send :meth:`ready` when it is done.

        ``MONOTONIC_USEC`` lets ``Type=notify-reload`` (systemd 253 and later) match this message
        to the reload it asked for; older versions ignore the field.
        """
        now_usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return self._send("RELOADING=1", f"MONOTONIC_USEC={now_usec}")

    def stopping(self) -> bool:
        """Shutdown has begun (``STOPPING=1``)."""
        return self._send("STOPPING=1")

    def _send(self, *assignments: str) -> bool:
        if self._address is None:
            return False
        payload = "\n".join(assignments).encode()
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                sock.sendto(payload, self._address)
        except OSError as exc:
            level = logging.DEBUG if self._failure_logged else logging.WARNING
            self._failure_logged = True
            log.log(level, "cannot notify the service manager at %r: %s", self._address, exc)
            return False
        return True


def _socket_address(address: str) -> str:
    """A leading ``@`` names a socket in the abstract namespace (a leading NUL byte)."""
    if address.startswith("@"):
        return "\0" + address[1:]
    return address


def _watchdog_usec(environ: Mapping[str, str]) -> int | None:
    pid = environ.get("WATCHDOG_PID")
    if pid is not None and pid.strip() != str(os.getpid()):
        return None
    try:
        usec = int(environ.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    return usec if usec > 0 else None


def _status_lines(text: str | None) -> tuple[str, ...]:
    """A status must stay on one line: a newline would start another assignment."""
    if text is None:
        return ()
    return ("STATUS=" + " ".join(text.splitlines()),)
