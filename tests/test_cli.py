"""The file commands as a user runs them: ``tlslogd parse``, ``tlslogd report``, ``demo``."""

from __future__ import annotations

import gzip
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from pathlib import Path

import pytest

from tests.conftest import DATA, LAB_LOG, tlslogd, wild_block
from tlslogd.cli import read_chunks
from tlslogd.records import EventRecord

LAB = LAB_LOG.read_text()


def test_version() -> None:
    result = tlslogd("--version")
    assert result.returncode == 0 and result.stdout.startswith("tlslogd ")


def test_parse_writes_one_schema_valid_json_object_per_event_in_input_order() -> None:
    result = tlslogd("parse", "--local-networks", "", str(LAB_LOG))
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines()]
    position = 0
    for record in records:
        EventRecord.model_validate(record)  # every key present, no unknown key
        position = LAB.index(record["line"], position)  # in input order
    kinds = {r["kind"] for r in records}
    assert {
        "tls_established",
        "delivery",
        "session_end",
        "tls_failure",
        "starttls_offered",
    } <= kinds
    plaintext = {
        r["relay"]
        for r in records
        if r["kind"] == "delivery" and r["status"] == "sent" and r["tls"] == "no"
    }
    assert plaintext == {
        "127.0.0.3[127.0.0.3]:2525",
        "127.0.0.4[127.0.0.4]:2525",
        "127.0.0.14[127.0.0.14]:2525",
    }


def test_parse_all_also_writes_the_lines_that_became_no_event(tmp_path: Path) -> None:
    result = tlslogd("parse", "--all", str(LAB_LOG))
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(records) == LAB.count("\n")
    assert {r["kind"] for r in records} >= {"ignored", "tls_established"}


def test_parse_reads_stdin_and_gzip_and_survives_garbage(tmp_path: Path) -> None:
    gz = tmp_path / "mail.log.1.gz"
    with gzip.open(gz, "wt") as f:
        f.write(LAB)
    from_gz = tlslogd("parse", str(gz)).stdout
    from_stdin = tlslogd("parse", "-", stdin=LAB).stdout
    assert from_gz == from_stdin != ""
    garbage = tlslogd("parse", "--all", stdin="\x00\x01 not a log line\n" + "x" * 100000 + "\n")
    assert garbage.returncode == 0
    assert [json.loads(line)["kind"] for line in garbage.stdout.splitlines()] == ["ignored"] * 2


def test_report_json_answers_the_three_questions() -> None:
    result = tlslogd("report", "--format", "json", "--local-networks", "", str(LAB_LOG))
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["lines"]["total"] == LAB.count("\n")
    outbound = data["adoption"]["outbound"]
    assert outbound["sent_remote"] == {"yes": 42, "no": 7, "unknown": 0}
    assert outbound["offered_plaintext_sent"] == 3
    assert [p["peer"] for p in data["peers"]["plaintext_out"]] == [
        "127.0.0.3",
        "127.0.0.4",
        "127.0.0.14",
    ]
    assert [p["peer"] for p in data["peers"]["offered_not_used"]] == ["127.0.0.4", "127.0.0.14"]
    assert data["peers"]["legacy_protocol"] == []
    assert data["handshakes"]["protocol"]["inbound"] == {"TLSv1.3": 39, "TLSv1.2": 9}
    assert data["failures"]["inbound"] == {"protocol": 2, "lost_connection": 1, "handshake": 1}


def test_report_table_and_csv() -> None:
    table = tlslogd("report", "--local-networks", "", str(LAB_LOG)).stdout
    assert "85.7% TLS" in table
    assert "nobody: safe to disable TLSv1 and TLSv1.1" in table
    # the lab's 34 deferrals are all for TLS (a certificate or protocol a policy refuses)
    assert "not sent: 34 deferred, 0 bounced; held back by TLS: 34" in table
    submission = next(line for line in table.splitlines() if "postfix/submission/smtpd:" in line)
    assert submission.split(":", 1)[1].split() == ["4", "TLS,", "1", "without", "STARTTLS"]
    csv_out = tlslogd("report", "--format", "csv", "--local-networks", "", str(LAB_LOG)).stdout
    rows = csv_out.splitlines()
    assert "deliveries_sent_remote,outbound,tls=no,7" in rows
    assert "offered_plaintext_sent,outbound,,3" in rows
    assert "deliveries_held_by_tls,outbound,,34" in rows
    assert "sessions_by_program,inbound,postfix/submission/smtpd starttls=not_used,1" in rows
    assert "handshake_summaries,inbound,logged,48" in rows


def test_report_tables_show_when_a_peer_last_had_an_event_of_that_table() -> None:
    # 127.0.99.4 got one message in plaintext (line 102, 21:52:46), then only deferrals that
    # needed TLS, the last at 21:53:16: its plaintext row says 21:52:46
    real = DATA / "real" / "postfix-3.10-trixie.log"
    table = tlslogd("report", "--local-networks", "", str(real)).stdout
    plaintext = table.split("Plaintext deliveries by peer", 1)[1].split("\n\n", 1)[0]
    row = next(line for line in plaintext.splitlines() if "127.0.99.4 " in line)
    assert row.split()[-1][4:19] == "-11-25T21:52:46"  # (the year is inferred)


def test_parse_decides_received_messages_as_the_report_does_without_summaries() -> None:
    """smtpd_tls_loglevel = 0: a message's TLS is known only when its session ends. ``parse``
    keeps its object back until then, so it says what ``report`` counts, in input order."""
    level0 = "".join(
        line
        for line in LAB.splitlines(keepends=True)
        if "TLS connection established from" not in line
    )
    result = tlslogd("parse", "--local-networks", "", "-", stdin=level0)
    records = [json.loads(line) for line in result.stdout.splitlines()]
    position = 0
    for record in records:
        position = level0.index(record["line"], position)
    received = Counter(r["tls"] for r in records if r["kind"] == "message_received")
    assert received == {"yes": 44, "no": 3, "unknown": 2}  # the smtps pair: no line says
    report = json.loads(
        tlslogd("report", "--format", "json", "--local-networks", "", "-", stdin=level0).stdout
    )
    assert report["adoption"]["inbound"]["messages"] == {"yes": 44, "no": 3, "unknown": 2}


def test_report_does_not_call_disabling_tlsv1_safe_where_no_handshake_is_logged() -> None:
    # the lab log as a server with smtpd_tls_loglevel = 0 writes it: no inbound summaries
    level0 = "".join(
        line
        for line in LAB.splitlines(keepends=True)
        if "TLS connection established from" not in line
    )
    result = tlslogd("report", "--local-networks", "", "-", stdin=level0)
    section = result.stdout.split("(who breaks if you disable them)\n", 1)[1].split("\n\n")[0]
    assert section.splitlines() == [
        "  nobody outbound: safe to disable TLSv1 and TLSv1.1 there "
        "(smtp_tls_protocols = >=TLSv1.2)",
        "  inbound: cannot tell, no inbound handshake is logged (set smtpd_tls_loglevel = 1)",
        # the lab's clients refused for offering TLSv1/TLSv1.1 only, and the TLSv1.3-only server
        "  3 peers failed TLS on the protocol version: the current settings may already refuse "
        "what they need (Peers with TLS failures, reason protocol)",
    ]
    data = json.loads(
        tlslogd("report", "--format", "json", "--local-networks", "", "-", stdin=level0).stdout
    )
    assert data["handshake_evidence"] == {"inbound": "not_logged", "outbound": "logged"}
    # the two smtps sessions: implicit TLS that no line shows, neither plaintext nor a client
    # that never used STARTTLS
    assert data["inbound_by_program"]["postfix/smtps/smtpd"] == {"unknown": 2}


def test_report_says_how_to_count_loopback_next_hops_as_remote() -> None:
    default = tlslogd("report", str(LAB_LOG)).stdout
    assert "(0 TLS, 0 plaintext, 0 unknown)" in default
    assert "run again with --local-networks ''" in default
    remote = tlslogd("report", "--local-networks", "", str(LAB_LOG)).stdout
    assert "--local-networks" not in remote


def test_report_reads_a_rotated_set_in_time_order(tmp_path: Path) -> None:
    lines = LAB.splitlines(keepends=True)
    old, new = tmp_path / "mail.log.1", tmp_path / "mail.log"
    old.write_text("".join(lines[:300]))
    new.write_text("".join(lines[300:]))
    os.utime(old, (time.time() - 3600, time.time() - 3600))
    split = json.loads(
        tlslogd("report", "--format", "json", "--local-networks", "", str(new), str(old)).stdout
    )
    whole = json.loads(
        tlslogd("report", "--format", "json", "--local-networks", "", str(LAB_LOG)).stdout
    )
    assert split["totals"] == whole["totals"]


def test_report_orders_a_copied_rotated_set_by_its_log_times(tmp_path: Path) -> None:
    """``scp host:/var/log/mail.log* .`` gives the files new modification times in glob order:
    the newest log looks oldest. Read by modification time, connections would be cut apart
    and the plaintext deliveries become unknown."""
    lines = LAB.splitlines(keepends=True)
    parts = [
        (tmp_path / "mail.log.2.gz", lines[:100]),
        (tmp_path / "mail.log.1", lines[100:200]),
        (tmp_path / "mail.log", lines[200:]),
    ]
    for path, part in parts:
        data = "".join(part).encode()
        path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)
    now = time.time()
    for age, path in enumerate(sorted(path for path, _ in parts)):  # glob order, oldest first
        os.utime(path, (now - 60 + age, now - 60 + age))
    split = json.loads(
        tlslogd(
            "report",
            "--format",
            "json",
            "--local-networks",
            "",
            *sorted(map(str, tmp_path.iterdir())),
        ).stdout
    )
    whole = json.loads(
        tlslogd("report", "--format", "json", "--local-networks", "", str(LAB_LOG)).stdout
    )
    assert split["adoption"]["outbound"]["sent_remote"] == {"yes": 42, "no": 7, "unknown": 0}
    assert split["totals"] == whole["totals"]


def test_report_since_until_window() -> None:
    result = tlslogd(
        "report",
        "--format",
        "json",
        "--local-networks",
        "",
        "--since",
        "2026-11-25T20:06:10+00:00",
        "--until",
        "2026-11-25T20:06:12+00:00",
        str(LAB_LOG),
    )
    data = json.loads(result.stdout)
    assert 0 < data["totals"]["tls_handshakes"] < 103


def test_bad_arguments_get_a_clear_message() -> None:
    result = tlslogd("report", "--since", "yesterday-ish", str(LAB_LOG))
    assert result.returncode == 2 and "--since" in result.stderr
    result = tlslogd("report", "--local-networks", "10.0.0.0/99", str(LAB_LOG))
    assert result.returncode == 2 and "--local-networks" in result.stderr


def test_demo_serves_a_live_replay_of_the_embedded_sample() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "tlslogd", "demo", "--listen", f"127.0.0.1:{port}", "--speed", "20"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 20
        totals: dict[str, int] = {}
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(
                    f"http://127.0.0.1:{port}/api/v1/summary", timeout=2
                ) as r:
                    totals = json.load(r)["totals"]
                if totals.get("plaintext_deliveries", 0) > 0:
                    break
            except OSError:
                pass
            time.sleep(0.2)
        assert totals.get("tls_handshakes", 0) > 0 and totals.get("plaintext_deliveries", 0) > 0
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as r:
            assert r.status == 200
    finally:
        proc.terminate()
        assert proc.wait(timeout=10) == 0


def test_demo_on_a_taken_port_says_so_and_invites_nobody_to_another_server() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = tlslogd("demo", "--listen", f"127.0.0.1:{port}")
    assert result.returncode == 1
    assert "Address already in use" in result.stderr
    assert "open http://" not in result.stderr


@pytest.mark.parametrize("command", ["parse", "report"])
def test_missing_file_is_an_error_not_a_traceback(command: str) -> None:
    result = tlslogd(command, "/nonexistent/mail.log")
    assert result.returncode != 0
    assert "Traceback" not in result.stderr


def test_a_reader_that_stops_early_is_no_error() -> None:
    result = subprocess.run(
        f"{sys.executable} -m tlslogd parse {LAB_LOG} | head -1",
        shell=True,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert len(result.stdout.splitlines()) == 1
    assert result.stderr == ""


def test_a_cut_gz_is_read_up_to_the_cut_and_a_non_gz_is_one_error(tmp_path: Path) -> None:
    whole = gzip.compress(LAB.encode())
    cut = tmp_path / "mail.log.2.gz"
    cut.write_bytes(whole[: len(whole) // 2])
    result = tlslogd("report", "--format", "json", str(cut))
    assert result.returncode == 0
    assert "compressed data ends early; read up to there" in result.stderr
    assert 0 < json.loads(result.stdout)["lines"]["total"] < LAB.count("\n")
    fake = tmp_path / "mail.log.1.gz"
    fake.write_text(LAB)
    result = tlslogd("report", str(fake))
    assert result.returncode == 2
    assert result.stderr.startswith(f"tlslogd: {fake}: Not a gzipped file")
    assert "Traceback" not in result.stderr


def test_report_header_says_what_was_counted_and_bad_ranges_are_refused() -> None:
    head = tlslogd("report", "--local-networks", "", str(LAB_LOG)).stdout.splitlines()[0]
    assert head.startswith(f"tlslogd report: {LAB.count(chr(10))} lines read (")
    assert "; events from 2026-11-25T20:06:08" in head
    empty = tlslogd("report", "--since", "2020-01-01", "--until", "2020-01-02", str(LAB_LOG))
    assert "; no event within --since 2020-01-01" in empty.stdout.splitlines()[0]
    backwards = tlslogd("report", "--since", "2h", "--until", "3h", str(LAB_LOG))
    assert backwards.returncode == 2 and "--since 2h is not before --until 3h" in backwards.stderr
    assert tlslogd("report", "--top", "0", str(LAB_LOG)).returncode == 2
    assert tlslogd("demo", "--speed", "0").returncode == 2


def test_report_of_a_file_that_is_no_mail_log_says_so(tmp_path: Path) -> None:
    binary = tmp_path / "state.db"
    binary.write_bytes(bytes(range(256)) * 40)
    result = tlslogd("report", str(binary))
    assert result.returncode == 0
    assert "is this a Postfix mail log?" in result.stderr
    assert "is this a Postfix mail log?" not in tlslogd("report", str(LAB_LOG)).stderr


def test_report_says_why_many_deliveries_are_unknown() -> None:
    # the lab log as a server with smtp_tls_loglevel = 0 writes it: no outbound summaries
    level0 = "".join(
        line
        for line in LAB.splitlines(keepends=True)
        if not ("TLS connection established to" in line or "TLS connection reused to" in line)
        and "postfix/tlsproxy" not in line
    )
    table = tlslogd("report", "--local-networks", "", "-", stdin=level0).stdout
    assert (
        "    TLS use unknown for 46 of 49 deliveries (no outbound handshake is logged: "
        "set smtp_tls_loglevel = 1)"
    ) in table.splitlines()
    full = tlslogd("report", "--local-networks", "", str(LAB_LOG)).stdout
    assert "TLS use unknown" not in full


def test_report_period_covers_events_that_count_nothing() -> None:
    # tlsproxy's lines alone (the smtp clients repeat its handshakes): no count, a period
    proxy = "".join(line for line in LAB.splitlines(keepends=True) if "postfix/tlsproxy" in line)
    head = tlslogd("report", "-", stdin=proxy).stdout.splitlines()[0]
    assert "; events from 2026-11-25T20:06:" in head


def test_report_period_spans_files_read_out_of_log_order(tmp_path: Path) -> None:
    # files are read oldest modified first: a copy of an older log, made later, is read last
    lines = LAB.splitlines(keepends=True)
    older, newer = tmp_path / "copied-later.log", tmp_path / "mail.log"
    newer.write_text("".join(lines[len(lines) // 2 :]))
    older.write_text("".join(lines[: len(lines) // 2]))
    period = json.loads(tlslogd("report", "--format", "json", str(newer), str(older)).stdout)
    whole = json.loads(tlslogd("report", "--format", "json", str(LAB_LOG)).stdout)
    assert period["period"] == whole["period"]


def test_report_suggests_counting_loopback_relays_only_when_local_networks_made_them_local() -> (
    None
):
    # the lab's next hops are all on loopback: local by the default local_networks
    hint = "run again with --local-networks ''"
    assert hint in tlslogd("report", str(LAB_LOG)).stdout
    # lightmeter's test log 27 without its one remote delivery: LMTP to Dovecot's socket is
    # local whatever local_networks says, so the hint would change nothing
    lmtp_only = "".join(
        line
        for line in wild_block("sessions.log", "27_one_sent_one_received").splitlines(True)
        if "postfix/smtp[" not in line
    )
    table = tlslogd("report", "-", stdin=lmtp_only).stdout
    assert "local (content filters, LMTP): 1" in table
    assert hint not in table


EXPORTS = DATA / "exports"


def _without_times(report: dict[str, object]) -> dict[str, object]:
    """A report without the peers' first/last seen (the journal keeps microseconds)."""
    return {k: v for k, v in report.items() if k != "peers"}


def test_a_saved_journalctl_json_export_reads_like_the_same_records_printed_as_text() -> None:
    """Real ``journalctl -o json`` output and ``-o short-full`` of the same journal records: the
    same report, as the daemon's journal source reads the same records."""
    exported = tlslogd("report", "--format", "json", str(EXPORTS / "journalctl-json.log"))
    printed = tlslogd(
        "report", "--format", "json", str(DATA / "real" / "journalctl-short-full.log")
    )
    assert exported.returncode == 0 and exported.stderr == ""
    got, want = json.loads(exported.stdout), json.loads(printed.stdout)
    assert got["lines"] == {"total": 126, "event": 83, "ignored": 43, "unrecognised": 0}
    assert _without_times(got) == _without_times(want)
    assert [p["peer"] for p in got["peers"]["tls_failure"]] == [
        p["peer"] for p in want["peers"]["tls_failure"]
    ]


def test_docker_json_file_records_give_their_log_lines(tmp_path: Path) -> None:
    """Docker's json-file log of a Postfix container (real lines): each record's ``log`` is the
    line; a line Docker split into pieces is joined again; a broken record is said once and
    read as it is."""
    records = (EXPORTS / "docker-json-file.log").read_text().splitlines()
    first = json.loads(records[0])
    head, tail = first["log"][:30], first["log"][30:]
    pieces = [json.dumps({**first, "log": head}), json.dumps({**first, "log": tail})]
    path = tmp_path / "container-json.log"
    path.write_text("\n".join([*pieces, *records[1:], '{"log": "cut', '{"log": "cut']) + "\n")
    out = tlslogd("parse", "--all", str(path))
    assert out.returncode == 0
    events = [json.loads(line) for line in out.stdout.splitlines()]
    kinds = [(e["kind"], e["host"], e["pid"]) for e in events[:4]]
    assert kinds == [
        ("session_start", "stash", 17196),
        ("session_end", "stash", 17196),
        ("session_start", "stash", 17196),
        ("session_end", "stash", 17196),
    ]
    assert events[0]["line"] == first["log"].rstrip("\n")
    assert [e["line"] for e in events[4:]] == ['{"log": "cut', '{"log": "cut']
    assert out.stderr.count("is not a JSON object") == 1


def test_journal_records_without_a_usable_line_are_said_not_dropped() -> None:
    """Real journalctl JSON with a MESSAGE it left out (null, over 4096 bytes without --all):
    named on standard error; the other records are read."""
    out = tlslogd("report", "--format", "json", str(DATA / "journal" / "quirks.jsonl"))
    assert out.returncode == 0
    assert "MESSAGE is missing or was left out by journalctl" in out.stderr
    report = json.loads(out.stdout)
    assert report["lines"]["event"] >= 1


def test_a_json_line_nested_beyond_the_stack_is_said_not_fatal(tmp_path: Path) -> None:
    path = tmp_path / "export.json"
    record = (EXPORTS / "docker-json-file.log").read_text().splitlines()[0]
    path.write_text(record + "\n" + '{"log": ' + "[" * 100_000 + "\n")
    out = tlslogd("report", "--format", "json", str(path))
    assert out.returncode == 0, out.stderr
    assert "is not a JSON object; read as it is" in out.stderr
    assert json.loads(out.stdout)["lines"]["event"] == 1


@pytest.mark.parametrize("compressed", [False, True])
def test_report_progress_counts_the_file_as_it_is_on_disk(tmp_path: Path, compressed: bool) -> None:
    # the progress meter divides what was read by the files' sizes on disk: a .gz file must
    # count its compressed bytes, or the meter runs past 100 %
    text = LAB_LOG.read_bytes() * 40
    path = tmp_path / ("mail.log.1.gz" if compressed else "mail.log")
    path.write_bytes(gzip.compress(text) if compressed else text)
    steps: list[int] = []
    data = b"".join(read_chunks(str(path), size=1 << 14, progress=steps.append))
    assert data == text
    assert sum(steps) == path.stat().st_size
    assert len([s for s in steps if s]) > 1  # it moves while the file is read


def test_report_progress_passes_over_a_pipe(tmp_path: Path) -> None:
    # `tlslogd report mail.log <(zcat mail.log.2.gz)`: a pipe has no size and cannot tell its
    # position; its lines are read all the same
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    writer = subprocess.Popen(["cp", str(LAB_LOG), str(fifo)])
    steps: list[int] = []
    data = b"".join(read_chunks(str(fifo), progress=steps.append))
    assert writer.wait(timeout=10) == 0
    assert data == LAB_LOG.read_bytes()
    assert steps == []


def test_report_reads_all_of_a_pipe_given_with_files(tmp_path: Path) -> None:
    # the files are put in order by their first lines; a pipe's cannot be looked at first
    lines = LAB.splitlines(keepends=True)
    rotated = tmp_path / "mail.log.1"
    rotated.write_text("".join(lines[:300]))
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    (tmp_path / "rest").write_text("".join(lines[300:]))
    writer = subprocess.Popen(["cp", str(tmp_path / "rest"), str(fifo)])
    result = tlslogd("report", "--format", "json", str(rotated), str(fifo))
    assert writer.wait(timeout=10) == 0
    assert json.loads(result.stdout)["lines"]["total"] == len(lines)


def test_report_leaves_the_daemons_machinery_unloaded() -> None:
    # pydantic's settings, asyncio and the web app would cost `report` more start-up time than
    # a day's log of a small server takes to read
    code = (
        "import sys\n"
        "from tlslogd import cli\n"
        f"cli.main(['report', '--format', 'json', {str(LAB_LOG)!r}])\n"
        f"cli.main(['report', '--since', '30d', '--until', '1h', {str(LAB_LOG)!r}])\n"
        "heavy = {'pydantic', 'pydantic_settings', 'asyncio', 'uvicorn', 'prometheus_client'}\n"
        "print(sorted(heavy & set(sys.modules)), file=sys.stderr)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stderr.strip().splitlines()[-1] == "[]"


def test_the_same_log_gives_the_same_report_whatever_the_hash_seed() -> None:
    # ties (two ciphers with one handshake each) are ordered by name, not by Python's
    # per-process string hashing: reports of one log can be diffed
    outputs = set()
    for seed in ("1", "2", "3"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        done = subprocess.run(
            [sys.executable, "-m", "tlslogd", "report", str(LAB_LOG)],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
            env=env,
        )
        outputs.add(done.stdout)
    assert len(outputs) == 1
