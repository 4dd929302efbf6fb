"""``tlslogd run`` as a user runs it: a subprocess on 127.0.0.1, a real log file, real HTTP."""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import DATA, LAB_LOG, tlslogd


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Daemon:
    def __init__(self, log: Path, state: Path, *extra: str) -> None:
        self.port = free_port()
        self.log = log
        self.state = state
        self.extra = extra
        self.proc: subprocess.Popen[str] | None = None

    def command(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "tlslogd",
            "run",
            "--log",
            str(self.log),
            "--state-dir",
            str(self.state),
            "--listen",
            f"127.0.0.1:{self.port}",
            "--local-networks",
            "",
            *self.extra,
        ]

    def start(self) -> Daemon:
        env = {**os.environ, "TLSLOGD_POLL_INTERVAL": "0.2", "TLSLOGD_CHECKPOINT_INTERVAL": "0.2"}
        self.proc = subprocess.Popen(
            self.command(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
        )
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.output()
            try:
                self.get("/healthz")
                return self
            except urllib.error.HTTPError:
                return self  # answering (e.g. 401 behind basic auth)
            except (ConnectionError, OSError):
                time.sleep(0.05)
        raise AssertionError("daemon did not start: " + self.output())

    def output(self) -> str:
        if self.proc is None or self.proc.stdout is None:
            return ""
        if self.proc.poll() is None:
            return "(still running)"
        return self.proc.stdout.read()

    def get(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=5) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as exc:
            if (exc.code >= 500 and path == "/healthz") or exc.code == 400:
                return exc.code, exc.read().decode()
            raise

    def json(self, path: str) -> Any:
        return json.loads(self.get(path)[1])

    def totals(self) -> dict[str, int]:
        return dict(self.json("/api/v1/summary")["totals"])

    def wait_lines(self, n: int, timeout: float = 15) -> dict[str, int]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            totals = self.totals()
            if totals["lines"] >= n:
                return totals
            time.sleep(0.05)
        raise AssertionError(f"read {self.totals()['lines']} lines, expected {n}")

    def stop(self, sig: int = signal.SIGTERM) -> int:
        assert self.proc is not None
        self.proc.send_signal(sig)
        return self.proc.wait(timeout=10)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)


@pytest.fixture
def daemons() -> Iterator[list[Daemon]]:
    started: list[Daemon] = []
    yield started
    for d in started:
        d.kill()


def run_daemon(daemons: list[Daemon], log: Path, state: Path, *extra: str) -> Daemon:
    d = Daemon(log, state, *extra)
    daemons.append(d)
    return d.start()


def metric(text: str, name: str, **labels: str) -> float:
    """Sum of the samples of a metric whose labels include ``labels``."""
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        head, _, value = line.rpartition(" ")
        if all(f'{k}="{v}"' in head for k, v in labels.items()):
            total += float(value)
    return total


LAB_LINES = LAB_LOG.read_text().splitlines(keepends=True)


def test_reads_the_log_from_the_start_and_serves_metrics_and_api(
    tmp_path: Path, daemons: list[Daemon]
) -> None:
    log = tmp_path / "mail.log"
    log.write_text("".join(LAB_LINES))
    d = run_daemon(daemons, log, tmp_path / "state", "--from-start")
    totals = d.wait_lines(len(LAB_LINES))
    assert totals["plaintext_deliveries"] == 7
    assert totals["offered_plaintext_deliveries"] == 3
    assert totals["tls_handshakes_outbound"] == 55
    _, text = d.get("/metrics")
    assert metric(text, "tlslogd_deliveries_total", status="sent", tls="no", scope="remote") == 7
    assert metric(text, "tlslogd_starttls_offered_total") == 3
    assert metric(text, "tlslogd_tls_handshakes_total", program="postfix/smtps/smtpd") == 2
    assert metric(text, "tlslogd_log_lines_total") == len(LAB_LINES)
    assert metric(text, "tlslogd_source_up") == 1
    peers = d.json("/api/v1/peers?category=plaintext_out")
    assert [p["peer"] for p in peers["peers"]] == ["127.0.0.3", "127.0.0.4", "127.0.0.14"]
    status, error = d.get("/api/v1/peers?catgory=plaintext_out")  # a typo is not "all peers"
    assert status == 400 and "unknown parameter 'catgory'" in error
    status, error = d.get("/api/v1/summary?since=1h")  # not silently the whole summary
    assert status == 400 and "takes no parameters" in error
    status, page = d.get("/")
    assert status == 200 and "Outbound deliveries over TLS" in page
    assert d.stop() == 0


def test_legacy_protocol_and_failure_peers_are_exported_with_protocol_and_reason(
    tmp_path: Path, daemons: list[Daemon], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Real handshake and failure lines from the wild: the Grafana tables of who still needs
    TLSv1/1.1 (by protocol and direction) and of failing peers (by reason) read these series;
    the folded rest stays in _other of the per-category ranking."""
    text = "".join(
        (DATA / "wild" / name).read_text() for name in ("tls-summaries.log", "failures.log")
    )
    log = tmp_path / "mail.log"
    log.write_text(text)
    monkeypatch.setenv("TLSLOGD_TOP_PEERS", "3")
    d = run_daemon(daemons, log, tmp_path / "state", "--from-start")
    d.wait_lines(text.count("\n"))
    _, scraped = d.get("/metrics")
    legacy = "tlslogd_top_peer_legacy_handshakes"
    assert metric(scraped, legacy, peer="relay.example.org", protocol="TLSv1", direction="outbound")
    assert metric(scraped, legacy, peer="209.85.213.47", protocol="TLSv1", direction="inbound")
    failures = "tlslogd_top_peer_tls_failures"
    assert metric(scraped, failures, peer="internet.nl", reason="protocol") == 2
    peers = {
        sample.labels["peer"]
        for family in text_string_to_metric_families(scraped)
        for sample in family.samples
        if sample.name == legacy
    }
    assert len(peers) == 3  # only the top-N of the category
    ranked = metric(scraped, "tlslogd_top_peer_events", category="legacy_protocol")
    assert metric(scraped, "tlslogd_top_peer_events", category="legacy_protocol", peer="_other")
    assert ranked == d.totals()["legacy_protocol_handshakes"]
    assert d.stop() == 0


def test_policy_candidates_are_exported_once_caught_up(
    tmp_path: Path, daemons: list[Daemon]
) -> None:
    """tlslogd_policy_candidates: the lab's 127.0.0.4 is under a 'none' policy although it
    offers STARTTLS (remove_none); nothing else has the evidence for enforcement yet (may)."""
    log = tmp_path / "mail.log"
    log.write_text("".join(LAB_LINES))
    d = run_daemon(daemons, log, tmp_path / "state", "--from-start")
    d.wait_lines(len(LAB_LINES))
    deadline = time.monotonic() + 10
    text = ""
    while time.monotonic() < deadline and "tlslogd_policy_candidates{" not in text:
        time.sleep(0.2)
        _, text = d.get("/metrics")
    assert metric(text, "tlslogd_policy_candidates", level="remove_none") == 1
    assert metric(text, "tlslogd_policy_candidates", level="encrypt") == 0
    assert metric(text, "tlslogd_policy_candidates", level="may") > 0


def test_without_from_start_it_begins_at_the_end_and_follows_appends(
    tmp_path: Path, daemons: list[Daemon]
) -> None:
    log = tmp_path / "mail.log"
    log.write_text("".join(LAB_LINES[:100]))
    d = run_daemon(daemons, log, tmp_path / "state")
    assert d.totals()["lines"] == 0
    with log.open("a") as f:
        f.write("".join(LAB_LINES[100:150]))
        f.write(LAB_LINES[150][:20])  # half a line: waits for its newline
        f.flush()
        d.wait_lines(50)
        f.write(LAB_LINES[150][20:])
    assert d.wait_lines(51)["lines"] == 51


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_restart_resumes_exactly_no_line_lost_or_counted_twice(
    tmp_path: Path, daemons: list[Daemon], sig: int
) -> None:
    log = tmp_path / "mail.log"
    state = tmp_path / "state"
    log.write_text("".join(LAB_LINES[:300]))
    d = run_daemon(daemons, log, state, "--from-start")
    d.wait_lines(300)
    time.sleep(0.6)  # a checkpoint interval or two
    started = time.monotonic()
    code = d.stop(sig)
    if sig == signal.SIGTERM:
        assert code == 0
        assert time.monotonic() - started < 1.5
    with log.open("a") as f:
        f.write("".join(LAB_LINES[300:]))  # written while tlslogd is down
    d2 = run_daemon(daemons, log, state, "--from-start")
    totals = d2.wait_lines(len(LAB_LINES))
    time.sleep(0.3)
    totals = d2.totals()
    assert totals["lines"] == len(LAB_LINES)
    reference = tmp_path / "reference"
    whole = tmp_path / "whole.log"
    whole.write_text("".join(LAB_LINES))
    d3 = run_daemon(daemons, whole, reference, "--from-start")
    assert d3.wait_lines(len(LAB_LINES)) == totals
    # adoption figures and censuses go on across the restart, as the durable totals do;
    # /metrics starts from zero, as a counter after a restart does
    resumed, once = d2.json("/api/v1/summary"), d3.json("/api/v1/summary")
    for key in ("adoption", "handshakes", "failures", "inbound_by_program"):
        assert resumed[key] == once[key], key
    _, text = d2.get("/metrics")
    assert metric(text, "tlslogd_log_lines_total") == len(LAB_LINES) - 300


def test_after_a_restart_every_known_series_is_exported_from_zero(
    tmp_path: Path, daemons: list[Daemon]
) -> None:
    # A series that came back only with its next event, at 1, would look to Prometheus like a
    # counter that never moved (1 before, 1 after): that event would be lost to increase().
    log = tmp_path / "mail.log"
    state = tmp_path / "state"
    log.write_text("".join(LAB_LINES))
    d = run_daemon(daemons, log, state, "--from-start")
    d.wait_lines(len(LAB_LINES))
    _, before = d.get("/metrics")
    assert d.stop() == 0
    d2 = run_daemon(daemons, log, state)
    _, after = d2.get("/metrics")

    def series(text: str, name: str) -> dict[tuple[tuple[str, str], ...], float]:
        return {
            tuple(sorted(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            if sample.name == name
        }

    for name in ("tlslogd_deliveries_total", "tlslogd_tls_handshakes_total"):
        old, new = series(before, name), series(after, name)
        assert old and set(new) == set(old), name
        assert set(new.values()) == {0.0}, name
    # a second restart without mail in between keeps them: a series that vanished and came
    # back at 1 would hide that first plaintext delivery from the alerts
    assert d2.stop() == 0
    d3 = run_daemon(daemons, log, state)
    _, later = d3.get("/metrics")
    for name in ("tlslogd_deliveries_total", "tlslogd_tls_handshakes_total"):
        assert series(later, name) == series(after, name), name


def test_rename_rotation_while_running_loses_nothing(tmp_path: Path, daemons: list[Daemon]) -> None:
    log = tmp_path / "mail.log"
    log.write_text("".join(LAB_LINES[:200]))
    d = run_daemon(daemons, log, tmp_path / "state", "--from-start")
    d.wait_lines(200)
    log.rename(tmp_path / "mail.log.1")
    with (tmp_path / "mail.log.1").open("a") as f:
        f.write("".join(LAB_LINES[200:220]))  # the syslog daemon has not reopened yet
    log.write_text("".join(LAB_LINES[220:]))
    d.wait_lines(len(LAB_LINES))
    _, text = d.get("/metrics")
    assert metric(text, "tlslogd_log_rotations_total", kind="rename") == 1
    assert d.totals()["plaintext_deliveries"] == 7


def test_missing_log_is_unhealthy_until_it_appears(tmp_path: Path, daemons: list[Daemon]) -> None:
    log = tmp_path / "mail.log"
    d = run_daemon(daemons, log, tmp_path / "state")
    status, body = d.get("/healthz")
    assert status == 503
    assert "mail.log" in json.loads(body)["reason"]
    log.write_text("".join(LAB_LINES[:10]))
    deadline = time.monotonic() + 10
    while d.get("/healthz")[0] != 200 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert d.get("/healthz")[0] == 200
    assert d.wait_lines(10)["lines"] == 10


def test_a_corrupt_state_file_is_moved_aside_not_a_crash_loop(
    tmp_path: Path, daemons: list[Daemon]
) -> None:
    state = tmp_path / "state"
    state.mkdir()
    (state / "state.db").write_bytes(b"this is not a database" * 100)
    log = tmp_path / "mail.log"
    log.write_text("".join(LAB_LINES[:50]))
    d = run_daemon(daemons, log, state, "--from-start")
    assert d.wait_lines(50)["lines"] == 50
    assert [p.name for p in state.iterdir() if ".bad-" in p.name]
    assert d.stop() == 0
    assert "unusable" in d.output()


def test_a_state_file_of_another_program_is_moved_aside(
    tmp_path: Path, daemons: list[Daemon]
) -> None:
    state = tmp_path / "state"
    state.mkdir()
    db = sqlite3.connect(state / "state.db")
    db.execute("CREATE TABLE something (x)")
    db.commit()
    db.close()
    log = tmp_path / "mail.log"
    log.write_text("".join(LAB_LINES[:5]))
    d = run_daemon(daemons, log, state, "--from-start")
    assert d.wait_lines(5)["lines"] == 5


def test_bad_configuration_stops_with_one_clear_message(tmp_path: Path) -> None:
    config = tmp_path / "tlslogd.toml"
    config.write_text('listen = "127.0.0.1"\nlabel_cap = 0\ncolour = "blue"\n')
    result = tlslogd("check-config", "--config", str(config))
    assert result.returncode == 2
    message = result.stderr
    assert "listen = '127.0.0.1'" in message and "HOST:PORT" in message
    assert "label_cap = 0" in message
    assert "unknown key 'colour'" in message
    env = {**os.environ, "TLSLOGD_POLL_INTERVAL": "-1"}
    result = subprocess.run(
        [sys.executable, "-m", "tlslogd", "check-config", "--config", str(tmp_path / "none.toml")],
        capture_output=True,
        text=True,
        check=False,
        env=env,
    )
    assert result.returncode == 2 and "no such file" in result.stderr


def test_check_config_prints_the_effective_configuration(tmp_path: Path) -> None:
    config = tmp_path / "tlslogd.toml"
    config.write_text('log = "/var/log/maillog"\nlisten = "127.0.0.1:9999"\n')
    env = {**os.environ, "TLSLOGD_LISTEN": "[::1]:10155"}
    result = subprocess.run(
        [sys.executable, "-m", "tlslogd", "check-config", "--config", str(config)],
        capture_output=True,
        text=True,
        check=True,
        env=env,
    )
    lines = result.stdout.splitlines()
    assert 'log = "/var/log/maillog"' in lines  # from the file
    assert 'listen = "[::1]:10155"' in lines  # the environment beats the file
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "tlslogd",
            "check-config",
            "--config",
            str(config),
            "--listen",
            "127.0.0.1:10156",
        ],
        capture_output=True,
        text=True,
        check=True,
        env=env,
    )
    assert 'listen = "127.0.0.1:10156"' in result.stdout.splitlines()  # flags beat everything


def test_live_tailing_in_odd_pieces_agrees_with_replaying_the_file(
    tmp_path: Path, daemons: list[Daemon]
) -> None:
    log = tmp_path / "mail.log"
    log.write_text("")
    d = run_daemon(daemons, log, tmp_path / "state")
    data = "".join(LAB_LINES).encode()
    pieces = [7, 130, 1, 4096, 999, 33333, 2]
    position = 0
    with log.open("ab") as f:
        i = 0
        while position < len(data):
            size = pieces[i % len(pieces)]
            f.write(data[position : position + size])
            f.flush()
            position += size
            i += 1
            if i % 5 == 0:
                time.sleep(0.05)
    live = d.wait_lines(len(LAB_LINES))
    replay = subprocess.run(
        [
            sys.executable,
            "-m",
            "tlslogd",
            "report",
            "--format",
            "json",
            "--local-networks",
            "",
            str(log),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(replay.stdout)["totals"] == live


def test_sighup_reopens_the_log_and_reloads_the_web_configs_users(
    tmp_path: Path, daemons: list[Daemon]
) -> None:
    import base64

    import bcrypt

    def web_config(password: str) -> str:
        hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(4)).decode()
        return f"basic_auth_users:\n  prometheus: {hashed}\n"

    def status(d: Daemon, password: str) -> int:
        token = base64.b64encode(f"prometheus:{password}".encode()).decode()
        request = urllib.request.Request(
            f"http://127.0.0.1:{d.port}/metrics", headers={"Authorization": f"Basic {token}"}
        )
        try:
            with urllib.request.urlopen(request, timeout=5) as r:
                return int(r.status)
        except urllib.error.HTTPError as exc:
            return exc.code

    config = tmp_path / "web.yml"
    config.write_text(web_config("old secret"))
    log = tmp_path / "mail.log"
    log.write_text("".join(LAB_LINES[:10]))
    d = Daemon(log, tmp_path / "state", "--from-start", "--web-config", str(config))
    daemons.append(d)
    d.start()  # /healthz answers 401 too: start() only waits for an HTTP answer
    assert status(d, "old secret") == 200
    assert status(d, "wrong") == 401
    config.write_text(web_config("new secret"))
    assert d.proc is not None
    d.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while status(d, "new secret") != 200 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert status(d, "new secret") == 200
    assert status(d, "old secret") == 401
    config.write_text("basic_auth_users: [not, a, mapping]\n")  # a broken file keeps the old one
    d.proc.send_signal(signal.SIGHUP)
    time.sleep(0.5)
    assert status(d, "new secret") == 200
    assert d.stop() == 0
    assert "kept the current web config" in d.output()


def test_durable_censuses_survive_a_restart(tmp_path: Path, daemons: list[Daemon]) -> None:
    log = tmp_path / "mail.log"
    log.write_text("".join(LAB_LINES))
    state = tmp_path / "state"
    d = run_daemon(daemons, log, state, "--from-start")
    d.wait_lines(len(LAB_LINES))
    before = d.json("/api/v1/summary")["durable"]
    assert d.stop() == 0
    d2 = run_daemon(daemons, log, state)
    after = d2.json("/api/v1/summary")["durable"]
    assert after == before
    assert after["protocols"]["inbound"] == {"TLSv1.3": 39, "TLSv1.2": 9}
    assert after["first_event"] is not None


def test_a_busy_listen_address_is_one_clear_error(tmp_path: Path) -> None:
    log = tmp_path / "mail.log"
    log.write_text("".join(LAB_LINES[:10]))
    daemon = Daemon(log, tmp_path / "state")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", daemon.port))
        busy.listen()
        port = daemon.port
        result = subprocess.run(
            daemon.command(),
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    assert result.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}: Address already in use" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_state_dir_that_is_not_a_directory_is_named(tmp_path: Path) -> None:
    log = tmp_path / "mail.log"
    log.write_text("".join(LAB_LINES[:10]))
    blocker = tmp_path / "afile"
    blocker.write_text("")
    daemon = Daemon(log, blocker / "state")
    result = subprocess.run(daemon.command(), capture_output=True, text=True, timeout=30)
    assert result.returncode == 1
    assert result.stderr.strip().endswith(
        f"tlslogd: state_dir = {blocker / 'state'}: {blocker} is not a directory "
        "(expected a directory tlslogd can write)"
    )


def test_a_second_daemon_on_the_same_state_directory_refuses_to_start(
    tmp_path: Path, daemons: list[Daemon]
) -> None:
    """Two daemons sharing a state file would mix two logs' totals and positions in it for
    good (one tlslogd per Postfix instance, both left on the default state directory)."""
    state = tmp_path / "state"
    first_log, other_log = tmp_path / "mail.log", tmp_path / "other.log"
    first_log.write_text("".join(LAB_LINES[:40]))
    other_log.write_text("".join(LAB_LINES[40:100]))
    first = run_daemon(daemons, first_log, state, "--from-start")
    assert first.wait_lines(40)["lines"] == 40
    assert first.proc is not None
    second = Daemon(other_log, state, "--from-start")
    result = subprocess.run(second.command(), capture_output=True, text=True, timeout=30)
    assert result.returncode == 1
    assert f"in use by another tlslogd (pid {first.proc.pid})" in result.stderr
    assert "Traceback" not in result.stderr
    assert first.stop() == 0
    # the first one's state is its own: restarted, it has its 40 lines and nothing of the other
    again = run_daemon(daemons, first_log, state)
    assert again.totals()["lines"] == 40


def test_a_web_config_whose_certificate_is_missing_is_one_clear_error(tmp_path: Path) -> None:
    web = tmp_path / "web.yml"
    web.write_text(
        f"tls_server_config:\n  cert_file: {tmp_path}/none.crt\n  key_file: {tmp_path}/none.key\n"
    )
    log = tmp_path / "mail.log"
    log.write_text("".join(LAB_LINES[:10]))
    daemon = Daemon(log, tmp_path / "state", "--web-config", str(web))
    for command in (
        daemon.command(),
        [*daemon.command()[:3], "check-config", *daemon.command()[4:]],
    ):
        result = subprocess.run(command, capture_output=True, text=True, timeout=30)
        assert result.returncode == 2, command
        assert f"tls_server_config.cert_file: cannot read {tmp_path}/none.crt" in result.stderr
        assert "Traceback" not in result.stderr


def test_an_unrecognised_line_is_counted_and_quoted_without_its_control_characters(
    tmp_path: Path, daemons: list[Daemon]
) -> None:
    # a handshake summary whose tail is binary junk (a file appended to the maillog)
    junk = "Nov 26 09:12:01 mx postfix/smtpd[4242]: TLS connection \x1b[2J\x00\x07 lost\n"
    log = tmp_path / "mail.log"
    log.write_text("".join(LAB_LINES[:10]) + junk)
    d = run_daemon(daemons, log, tmp_path / "state", "--from-start")
    d.wait_lines(11)
    _, text = d.get("/metrics")
    assert metric(text, "tlslogd_log_lines_total", result="unrecognised") == 1
    assert d.stop() == 0
    output = d.output()
    assert (
        "unrecognised log line (1 so far): Nov 26 09:12:01 mx postfix/smtpd[4242]: "
        "TLS connection \\x1b[2J\\x00\\x07 lost" in output
    )
    assert "\x1b" not in output and "\x00" not in output


def test_crafted_cipher_names_are_folded_not_new_series(
    tmp_path: Path, daemons: list[Daemon]
) -> None:
    """A peer announcing ever new cipher names cannot grow the TSDB: past label_cap values a
    label's values become "other", counted by label; the folding counter exists (at 0) from a
    label's first value, so its first increase is a rate."""
    real = next(line for line in LAB_LINES if "TLS connection established from" in line)
    crafted = [
        real.replace("ECDHE-RSA-AES128-GCM-SHA256", f"CRAFTED-CIPHER-{n}").replace(
            "[29878]", f"[{30000 + n}]"
        )
        for n in range(8)
    ]
    log = tmp_path / "mail.log"
    log.write_text(real + "".join(crafted))
    config = tmp_path / "tlslogd.toml"
    config.write_text("label_cap = 3\n")
    d = run_daemon(daemons, log, tmp_path / "state", "--from-start", "--config", str(config))
    d.wait_lines(9)
    _, text = d.get("/metrics")
    ciphers = {
        line.split('cipher="', 1)[1].split('"', 1)[0]
        for line in text.splitlines()
        if line.startswith("tlslogd_tls_handshakes_total{")
    }
    assert ciphers == {
        "ECDHE-RSA-AES128-GCM-SHA256",
        "CRAFTED-CIPHER-0",
        "CRAFTED-CIPHER-1",
        "other",
    }
    assert metric(text, "tlslogd_tls_handshakes_total", cipher="other") == 6
    assert metric(text, "tlslogd_label_values_folded_total", label="cipher") == 6
    assert 'tlslogd_label_values_folded_total{label="protocol"} 0.0' in text


def test_check_config_warns_of_a_log_the_daemon_would_wait_for(tmp_path: Path) -> None:
    missing = tmp_path / "mail.log"
    command = ("check-config", "--log", str(missing), "--state-dir", str(tmp_path / "state"))
    result = tlslogd(*command)
    assert result.returncode == 0
    assert f"warning: log = {missing}: no such file yet (tlslogd waits for it)" in result.stderr
    missing.write_text("")
    result = tlslogd(*command)
    assert result.returncode == 0 and "warning" not in result.stderr


def test_started_on_a_quiet_log_it_decides_deliveries_of_the_first_second(
    tmp_path: Path, daemons: list[Daemon]
) -> None:
    # The lab log without Postfix's start: its first second holds handshakes and a plaintext
    # delivery whose connection began a moment before the first line. The log was quiet since
    # tlslogd started reading, so that connection began after the start: plaintext, not unknown.
    log = tmp_path / "mail.log"
    log.write_text("")
    d = run_daemon(daemons, log, tmp_path / "state")
    time.sleep(1.5)
    # another program's line first (a real dovecot line): the quiet time runs to the first event
    other = "Feb 28 17:09:48 mailserver dovecot: lmtp(1477476): Connect from local\n"
    with log.open("a") as f:
        f.write(other)
    d.wait_lines(1)
    time.sleep(1.5)
    excerpt = LAB_LINES[2:60]
    assert "relay=127.0.0.3[" in excerpt[50] and excerpt[50][:15] == excerpt[0][:15]
    with log.open("a") as f:
        f.write("".join(excerpt))
    d.wait_lines(1 + len(excerpt))
    _, text = d.get("/metrics")
    assert metric(text, "tlslogd_deliveries_total", tls="no", scope="remote") == 1
    assert metric(text, "tlslogd_deliveries_total", tls="unknown") == 0
