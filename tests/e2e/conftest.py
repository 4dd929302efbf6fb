"""Session fixtures of the end-to-end suite: one lab, one tlslogd, one Prometheus, one run of
traffic, checked by the tests afterwards.

The traffic runs in two phases (:data:`PHASE_1`, :data:`PHASE_2`). Between them tlslogd is
stopped with SIGTERM while a client session is still open; that session ends and more mail
arrives while tlslogd is down (:data:`WHILE_STOPPED`); then tlslogd is started again on the same
state directory. So the run also proves that a restart neither loses nor double-counts anything.
Counters restart at zero in the new process, as Prometheus expects: :meth:`Run.total` adds the
first process's last scrape to the running one's, which is the exact count over the whole run.
For that, the log is quiet when the first process stops (phase 1 is mail delivered at once).

Everything the run writes (both maillogs, tlslogd's and Prometheus' output, swaks transcripts)
stays in the pytest temporary directory; a failing test says where.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.harness import (
    PEERS,
    QUEUE_LIFETIME,
    REPO,
    SWAKS_AUTH,
    HeldSession,
    Lab,
    Prometheus,
    Swaks,
    Tlslogd,
    find_program,
    settle,
    swaks_prefix,
    wait_for,
)

RULES = REPO / "dashboards" / "prometheus" / "tlslogd.rules.yml"

_REQUIRED = {
    "postfix": "postfix",
    "swaks": "swaks",
    "prometheus": "prometheus",
    "openssl": "openssl",
    "saslpasswd2": "sasl2-bin",
}

ARTIFACTS = pytest.StashKey[Path]()


def missing_requirements() -> str | None:
    if os.geteuid() != 0:
        return "the end-to-end suite runs its own Postfix instances and must run as root"
    missing = [f"{p} (Debian: {pkg})" for p, pkg in _REQUIRED.items() if find_program(p) is None]
    if missing:
        return "not installed: " + ", ".join(missing)
    if swaks_prefix() is None:
        return (
            f"the host name {socket.gethostname()} is not in /etc/hosts and unshare --uts fails"
            " (swaks would ask DNS)"
        )
    return None


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests marked ``after_traffic`` send more mail: they run after every other test."""
    items.sort(key=lambda item: item.get_closest_marker("after_traffic") is not None)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    artifacts = item.config.stash.get(ARTIFACTS, None)
    if report.failed and artifacts is not None:
        report.sections.append(
            ("end-to-end artifacts", f"maillogs, tlslogd and Prometheus output in {artifacts}")
        )
    return report


@dataclass(frozen=True)
class Message:
    """One message of the plan: who sends it how, and to which kind of peer."""

    name: str
    peer: str  # the kind of remote server (harness.PEERS) it is addressed to
    swaks: tuple[str, ...] = ()  # swaks arguments for TLS and authentication
    listener: str = "smtp"  # main's smtp, submission or smtps listener
    server: str = "127.0.0.1"
    accepted: bool = True  # whether main accepts it (swaks exits 0)


TLS12 = ("--tls", "--tls-protocol", "tlsv1_2")
TLS13 = ("--tls", "--tls-protocol", "tlsv1_3")


def legacy(protocol: str) -> tuple[str, ...]:
    """Insist on an old protocol (OpenSSL 3 needs security level 0 to offer it)."""
    return ("--tls", "--tls-protocol", protocol, "--tls-cipher", "DEFAULT@SECLEVEL=0")


# Before the restart: mail that is delivered at once, so the log goes quiet before tlslogd stops.
PHASE_1 = (
    Message("in-tls12", "tls", TLS12),
    Message("in-tls13", "selfsigned", TLS13),
    Message("in-plaintext", "plain"),
    Message("in-tlsv1-refused", "tls", legacy("tlsv1"), accepted=False),
    Message("in-tlsv1.1-refused", "tls", legacy("tlsv1_1"), accepted=False),
    Message("submission", "verified", ("--tls", *SWAKS_AUTH), listener="submission"),
    Message("smtps", "tls12", ("--tls-on-connect", *SWAKS_AUTH), listener="smtps"),
    Message("policy-none", "offering", ("--tls",)),
)
REUSE_BURST = 4  # messages in a row to the "reuse" peer: later ones take a cached connection
# While tlslogd is stopped (the held session ends then, too): mail that is retried until it
# expires and bounces, and mail that bounces at once.
WHILE_STOPPED = (
    Message("encrypt-not-offered", "encrypt"),
    Message("plaintext-refused", "demands"),
)
# After the restart: a plaintext fallback after a failed handshake, IPv6, the same peers again.
PHASE_2 = (
    Message("tls-fallback", "fallback", ("--tls",)),
    Message("in-ipv6-tls", "v6", ("--tls",), server="::1"),
    Message("in-ipv6-plaintext", "plain", server="::1"),
    Message("policy-none-again", "offering", ("--tls",)),
    Message("verify-fails", "verifyfail", ("--tls",)),
    *(Message(f"reuse-{i}", "reuse", ("--tls",)) for i in range(1, REUSE_BURST + 1)),
)
# Submitted locally one after another once PHASE_2 is sent: plaintext deliveries to the "cached"
# peer, the later ones over the connection the earlier one left in the cache.
CACHE_BURST = 3
HELD_PEER = "tls"  # the session open across the restart (TLSv1.3, like every plain --tls)


@dataclass(frozen=True)
class Run:
    """What the traffic fixture leaves for the tests."""

    lab: Lab
    tlslogd: Tlslogd
    prometheus: Prometheus
    restart_exit_code: int | None  # of the first tlslogd process, stopped with SIGTERM
    first_process_lines: int  # lines the first process had read when it was stopped
    first_process_scrape: float  # Prometheus time of the first process's last scrape
    maillog: Path  # a copy of the main maillog when the traffic was over
    artifacts: Path  # where the run keeps its logs and transcripts

    def total(self, expr: str) -> float:
        """``sum(expr)`` over the whole run: the first process's last scrape plus now."""
        before = self.prometheus.value(f"sum({expr})", at=self.first_process_scrape)
        return before + self.prometheus.value(f"sum({expr})")

    def wait_total(self, expr: str, expected: float) -> float:
        """:meth:`total`, polled until it equals ``expected`` (or a deadline passes)."""
        return settle(lambda: self.total(expr), expected)

    def wait_now(self, expr: str, expected: float) -> float:
        """``sum(expr)`` from the running process alone, polled like :meth:`wait_total`."""
        return settle(lambda: self.prometheus.value(f"sum({expr})"), expected)

    def log_lines(self) -> list[str]:
        return self.maillog.read_text().splitlines()

    def peers(self, category: str | None = None) -> dict[str, dict[str, Any]]:
        query = f"?limit=10000&category={category}" if category else "?limit=10000"
        return {p["peer"]: p for p in self.tlslogd.json("/api/v1/peers" + query)["peers"]}


@pytest.fixture(scope="session")
def e2e_dir(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Path:
    reason = missing_requirements()
    if reason is not None:
        pytest.skip(reason)
    path = tmp_path_factory.mktemp("e2e")
    request.config.stash[ARTIFACTS] = path
    return path


@pytest.fixture(scope="session")
def lab(e2e_dir: Path) -> Iterator[Lab]:
    # configuration, queues and keys in a short path: Postfix's sockets live in the queue dir
    root = Path(tempfile.mkdtemp(prefix="tlslogd-e2e-"))
    root.chmod(0o755)  # the postfix user must reach its queue and configuration
    lab = Lab(root, e2e_dir)
    try:
        lab.configure()
        yield lab
    finally:
        lab.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def tlslogd(lab: Lab, e2e_dir: Path) -> Iterator[Tlslogd]:
    """Started on the still empty maillog before Postfix, so it reads every line Postfix logs."""
    daemon = Tlslogd(lab.main.maillog, e2e_dir / "tlslogd-state", e2e_dir / "tlslogd.out")
    try:
        daemon.start()
        yield daemon
    finally:
        daemon.stop()


@pytest.fixture(scope="session")
def prometheus(tlslogd: Tlslogd, e2e_dir: Path) -> Iterator[Prometheus]:
    rules = [RULES] if RULES.exists() else []
    server = Prometheus(e2e_dir / "prometheus", f"127.0.0.1:{tlslogd.port}", rules)
    try:
        server.start()
        # Prometheus hands its targets to the scraper a few seconds after start: traffic must
        # not begin before the first scrape, or the alerts would miss the first phase
        wait_for(
            lambda: True if server.value('up{job="tlslogd"}') == 1 else None,
            30,
            "Prometheus' first scrape of tlslogd",
        )
        yield server
    finally:
        server.stop()


def send(swaks: Swaks, lab: Lab, message: Message) -> None:
    port = getattr(lab.ports, message.listener)
    to = f"{message.name}@{PEERS[message.peer].domain}"
    sent = swaks.send(message.name, to, message.server, port, *message.swaks)
    if (sent.returncode == 0) != message.accepted:
        raise AssertionError(
            f"swaks {message.name}: exit code {sent.returncode}, expected the message to be "
            f"{'accepted' if message.accepted else 'refused'}:\n{sent.transcript.read_text()}"
        )


def _caught_up(lab: Lab, tlslogd: Tlslogd, prometheus: Prometheus) -> tuple[int, float]:
    """Wait until tlslogd has read the whole maillog, Prometheus has scraped that and its rules
    have been evaluated on it; (lines the running process has read, time of the last scrape)."""

    def read_all() -> int | None:
        lines = lab.main.maillog.read_bytes().count(b"\n")
        summary = tlslogd.summary()
        process = sum(summary["process"]["lines"].values())
        return process if summary["totals"]["lines"] == lines else None

    process_lines = wait_for(read_all, 30, "tlslogd to read the whole maillog")
    wait_for(
        lambda: True if prometheus.value("sum(tlslogd_log_lines_total)") == process_lines else None,
        30,
        f"Prometheus to scrape tlslogd_log_lines_total = {process_lines}",
    )
    scraped = prometheus.value("max(timestamp(tlslogd_log_lines_total))")
    # a rule evaluation may run before the scrape of the same instant is stored: two scrapes
    # later, every rule has seen it
    later = wait_for(
        lambda: t if (t := prometheus.value("max(timestamp(up))")) >= scraped + 2 else None,
        30,
        "two more scrapes",
    )
    return process_lines, later


@pytest.fixture(scope="session")
def run(lab: Lab, tlslogd: Tlslogd, prometheus: Prometheus, e2e_dir: Path) -> Run:
    swaks = Swaks(e2e_dir / "swaks", swaks_prefix() or [])
    lab.start()
    for message in PHASE_1:
        send(swaks, lab, message)
    held = HeldSession(lab, f"held-across-restart@{PEERS[HELD_PEER].domain}")
    try:
        lab.wait_idle(timeout=60)
        first_lines, first_scrape = _caught_up(lab, tlslogd, prometheus)
        exit_code = tlslogd.stop()
        held.finish()
        for message in WHILE_STOPPED:
            send(swaks, lab, message)
        tlslogd.start()
    finally:
        held.close()
    for message in PHASE_2:
        send(swaks, lab, message)
    for i in range(1, CACHE_BURST + 1):
        lab.inject(f"cached-{i}@{PEERS['cached'].domain}")
    # retries, the plaintext fallback, expiry of what cannot be delivered and its bounce
    lab.wait_idle(timeout=QUEUE_LIFETIME * 5 + 30, quiet=3)
    _caught_up(lab, tlslogd, prometheus)
    maillog = e2e_dir / "maillog.final.log"
    shutil.copyfile(lab.main.maillog, maillog)
    return Run(lab, tlslogd, prometheus, exit_code, first_lines, first_scrape, maillog, e2e_dir)
