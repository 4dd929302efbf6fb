#!/usr/bin/env python3
"""Side-by-side benchmark of tlslogd and its peers on one generated Postfix maillog.

Three modes (see benchmarks/README.md for what every number means):

* default: one corpus; every tool measured in turn, the whole round repeated ``--runs`` times
  (interleaved), medians reported. Tools: two plain Python read loops (the floor), the tlslogd
  parser alone, ``tlslogd report``, the tlslogd daemon catching up on the file (scraped every
  second, and every 0.1 s for scrape latency under load), kumina's
  postfix_exporter and mtail with its shipped postfix program, when installed.
* ``--live``: the daemon tails a log written at ``--rate`` lines/s for ``--seconds``; CPU use,
  append-to-/metrics latency, idle CPU and the catch-up rate on a backlog.
* ``--growth``: CPU and peak RSS of ``tlslogd report`` and of the daemon for growing corpora and
  for a corpus full of distinct hostile peers.

A tool that is not installed (or a tlslogd command that does not exist yet) is skipped with a
note. Every server started here listens on 127.0.0.1 and is stopped by its pid.
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import json
import os
import platform
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
GENERATOR = HERE / "gen_maillog.py"
GNU_TIME = "/usr/bin/time"
MTAIL_EXAMPLES = Path("/usr/share/doc/mtail/examples")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
SENTINEL_CIPHER = "BENCH-SENTINEL"
MARKER_CIPHER = "BENCH-MARKER"

READ_BINARY = "import sys\nfor line in open(sys.argv[1], 'rb'):\n    pass\n"
READ_TEXT = (
    "import sys\nfor line in open(sys.argv[1], encoding='utf-8', errors='replace'):\n    pass\n"
)
PARSER_ONLY = """\
import sys
from tlslogd.parse import Parser

parser = Parser()
events = 0
rest = b""
with open(sys.argv[1], "rb") as f:
    while block := f.read(1 << 20):
        block = rest + block
        cut = block.rfind(b"\\n") + 1
        rest = block[cut:]
        for _ in parser.scan(block[:cut].decode("utf-8", "replace")):
            events += 1
print(events)
"""


class Skip(Exception):
    """The tool cannot be measured here (not installed, command missing, failed to start)."""


@dataclass
class Sample:
    """One measurement of one tool: CPU and wall seconds, peak RSS, tool-specific extras."""

    cpu: float | None = None
    wall: float | None = None
    rss_mb: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    note: str = ""


@dataclass
class Corpus:
    path: Path
    lines: int
    size: int
    truth: dict[str, Any] | None


# -- processes, /proc and HTTP --------------------------------------------------------------------


def last_line(output: bytes) -> str:
    lines = output.decode(errors="replace").strip().splitlines()
    return lines[-1].strip() if lines else ""


def tail(path: Path, n: int = 400) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return " ".join(text[-n:].split())


def timed(argv: list[str], out: Path, timeout: float) -> tuple[Sample, int]:
    """Run a one-shot command under GNU time: CPU and peak RSS from time(1), wall from here."""
    stats = out.with_suffix(".time")
    err = out.with_suffix(".err")
    cmd = [GNU_TIME, "-f", "%e %U %S %M", "-o", str(stats), *argv]
    with out.open("wb") as stdout, err.open("wb") as stderr:
        start = time.perf_counter()
        try:
            rc = subprocess.run(cmd, stdout=stdout, stderr=stderr, timeout=timeout).returncode
        except subprocess.TimeoutExpired:
            return Sample(note=f"timed out after {timeout:.0f} s"), -1
        wall = time.perf_counter() - start
    fields = stats.read_text().split()[-4:]
    cpu = float(fields[1]) + float(fields[2])
    sample = Sample(cpu=round(cpu, 3), wall=round(wall, 4), rss_mb=round(int(fields[3]) / 1024, 1))
    if rc != 0:
        sample.note = f"exit {rc}: {tail(err)}"
    return sample, rc


def proc_cpu(pid: int) -> float:
    """User + system CPU seconds of a running process (all its threads)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    return round((int(fields[11]) + int(fields[12])) / CLOCK_TICKS, 3)


def proc_field(pid: int, name: str, key: str) -> int | None:
    """The number after ``key:`` in /proc/PID/NAME (``status``, ``io``), None if absent."""
    with open(f"/proc/{pid}/{name}") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return None


def proc_read_bytes(pid: int) -> int:
    """Bytes a running process has read with any read call (``rchar`` of /proc/PID/io)."""
    return proc_field(pid, "io", "rchar") or 0


def proc_hwm_mb(pid: int) -> float | None:
    """Peak resident set size of a running process (VmHWM)."""
    kib = proc_field(pid, "status", "VmHWM")
    return None if kib is None else round(kib / 1024, 1)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http_get(url: str, timeout: float = 5.0) -> tuple[str, float]:
    """Body and latency (s) of one GET."""
    start = time.perf_counter()
    with urllib.request.urlopen(url, timeout=timeout) as response:
        body = response.read().decode("utf-8", "replace")
    return body, time.perf_counter() - start


def stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM by pid, then SIGKILL after 10 s."""
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()


def metric_sum(text: str, name: str, skip: str | None = None) -> float:
    """Sum of all samples of one metric in Prometheus text exposition format; ``name`` may
    include the start of the label set (``name{label="x"``)."""
    total = 0.0
    brace = name.find("{")
    end = len(name) if brace < 0 else brace
    for line in text.splitlines():
        if line.startswith(name) and line[end : end + 1] in ("{", " "):
            if skip is not None and skip in line:
                continue
            total += float(line.rsplit(" ", 1)[1])
    return total


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def median(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return round(statistics.median(present), 4) if present else None


def warm(path: Path) -> None:
    """Read the file once so that every tool reads it from the page cache."""
    with path.open("rb") as f:
        while f.read(1 << 22):
            pass


def make_corpus(
    workdir: Path, lines: int, seed: int, hostile: int = 0, name: str = "corpus"
) -> Corpus:
    path = workdir / f"{name}.log"
    truth_path = workdir / f"{name}.truth.json"
    cmd = [sys.executable, str(GENERATOR), "--lines", str(lines), "--seed", str(seed)]
    if hostile:
        cmd += ["--hostile-peers", str(hostile)]
    subprocess.run([*cmd, "-o", str(path), "--stats", str(truth_path)], check=True)
    truth = json.loads(truth_path.read_text())
    return Corpus(path, truth["lines"]["total"], path.stat().st_size, truth)


def count_lines(path: Path) -> int:
    n = 0
    with path.open("rb") as f:
        while block := f.read(1 << 22):
            n += block.count(b"\n")
    return n


# -- the tlslogd daemon ---------------------------------------------------------------------------


class Daemon:
    """``tlslogd run`` on 127.0.0.1 with a private state directory."""

    def __init__(self, cmd: list[str], log: Path, workdir: Path, from_start: bool) -> None:
        self.port = free_port()
        self.state = Path(tempfile.mkdtemp(prefix="state-", dir=workdir))
        self.stderr = workdir / f"daemon-{self.port}.err"
        argv = [*cmd, "run", "--log", str(log), "--state-dir", str(self.state)]
        argv += ["--listen", f"127.0.0.1:{self.port}"]
        if from_start:
            argv.append("--from-start")
        self.argv = argv
        self.proc: subprocess.Popen[bytes] | None = None
        self.started = 0.0

    def __enter__(self) -> Daemon:
        with self.stderr.open("wb") as err:
            self.started = time.perf_counter()
            self.proc = subprocess.Popen(self.argv, stdout=subprocess.DEVNULL, stderr=err)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None:
            stop(self.proc)
        shutil.rmtree(self.state, ignore_errors=True)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def alive(self) -> None:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise Skip(f"tlslogd run exited with {self.proc.returncode}: {tail(self.stderr)}")

    def lines(self) -> int | None:
        """``totals.lines`` of /api/v1/summary, None while it does not answer."""
        try:
            body, _ = http_get(self.url("/api/v1/summary"), timeout=2)
            return int(json.loads(body)["totals"]["lines"])
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def wait_ready(self, timeout: float = 30) -> None:
        deadline = time.perf_counter() + timeout
        while self.lines() is None:
            self.alive()
            if time.perf_counter() > deadline:
                raise Skip(f"tlslogd run did not answer within {timeout:.0f} s")
            time.sleep(0.05)

    def wait_lines(self, expected: int, timeout: float, every: float = 0.1) -> bool:
        deadline = time.perf_counter() + timeout
        while time.perf_counter() < deadline:
            self.alive()
            if self.lines() == expected:
                return True
            time.sleep(every)
        return False


# -- the benchmark --------------------------------------------------------------------------------


@dataclass
class Tool:
    name: str
    label: str
    measure: Callable[[Corpus], Sample]
    check: Callable[[], object]  # raises Skip when the tool cannot run


class Bench:
    def __init__(self, args: argparse.Namespace, workdir: Path) -> None:
        self.args = args
        self.workdir = workdir
        self.tlslogd = (
            shlex.split(args.tlslogd) if args.tlslogd else [sys.executable, "-m", "tlslogd"]
        )

    def timeout(self, corpus: Corpus) -> float:
        return 120 + corpus.lines / 5000

    def out(self, name: str) -> Path:
        return self.workdir / f"{name}.out"

    # -- availability -------------------------------------------------------------------------

    def check_tlslogd(self, *subcommand: str) -> None:
        argv = [*self.tlslogd, *subcommand, "--help"]
        proc = subprocess.run(argv, capture_output=True, timeout=60)
        if proc.returncode != 0:
            raise Skip(f"`{shlex.join(argv[-2:])}` failed: {last_line(proc.stderr)}")

    def check_parser(self) -> None:
        code = "from tlslogd.parse import Parser\nParser().scan"
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=60)
        if proc.returncode != 0:
            raise Skip(f"tlslogd.parse.Parser is not importable: {last_line(proc.stderr)}")

    @staticmethod
    def exporter_path() -> str:
        path = shutil.which("prometheus-postfix-exporter")
        if path is None:
            raise Skip("prometheus-postfix-exporter is not installed")
        return path

    @staticmethod
    def mtail_program() -> Path:
        if shutil.which("mtail") is None:
            raise Skip("mtail is not installed")
        for candidate in (MTAIL_EXAMPLES / "postfix.mtail", MTAIL_EXAMPLES / "postfix.mtail.gz"):
            if candidate.exists():
                return candidate
        raise Skip(f"mtail's postfix.mtail is not in {MTAIL_EXAMPLES}")

    # -- measurements ---------------------------------------------------------------------------

    def read_loop(self, code: str, name: str) -> Callable[[Corpus], Sample]:
        def measure(corpus: Corpus) -> Sample:
            argv = [sys.executable, "-c", code, str(corpus.path)]
            return timed(argv, self.out(name), self.timeout(corpus))[0]

        return measure

    def parser(self, corpus: Corpus) -> Sample:
        out = self.out("parser")
        argv = [sys.executable, "-c", PARSER_ONLY, str(corpus.path)]
        sample, rc = timed(argv, out, self.timeout(corpus))
        if rc == 0:
            sample.extra["events"] = int(out.read_text().split()[-1])
        return sample

    def report(self, corpus: Corpus) -> Sample:
        out = self.out("report")
        argv = [*self.tlslogd, "report", "--format", "json", str(corpus.path)]
        sample, rc = timed(argv, out, self.timeout(corpus))
        if rc != 0:
            return sample
        try:
            data = json.loads(out.read_text())
            total = int(data["lines"]["total"])
        except (ValueError, KeyError, TypeError) as e:
            sample.note = f"no lines.total in the report: {e!r}"
            return sample
        sample.extra["lines_total"] = total
        if total != corpus.lines:
            sample.note = f"reported {total} lines, the corpus has {corpus.lines}"
        with contextlib.suppress(KeyError, TypeError, AttributeError):
            protocols = data["handshakes"]["protocol"]
            sample.extra["tls_smtpd"] = sum(protocols.get("inbound", {}).values())
            sample.extra["tls_smtp"] = sum(protocols.get("outbound", {}).values())
        return sample

    def daemon(self, corpus: Corpus, interval: float = 1.0) -> Sample:
        """Catch-up on the whole file (``--from-start``), with /metrics scraped every
        ``interval`` seconds as a Prometheus would. The end is watched without asking the
        daemon more often: its reads of anything but the log (modules, state, requests) are
        the bytes it has read in all (``rchar`` in /proc) less the log bytes the first scrape
        reports; once it has read that plus the whole file (less 1 MiB, as the two counts are
        not taken at the same moment), /metrics is asked until ``tlslogd_log_lines_total`` has
        every line."""
        latencies: list[float] = []
        seen = 0
        end: int | None = None
        with Daemon(self.tlslogd, corpus.path, self.workdir, from_start=True) as d:
            deadline = d.started + self.timeout(corpus)
            scrape = d.started + interval
            while seen < corpus.lines:
                d.alive()
                now = time.perf_counter()
                if now > deadline:
                    return Sample(note=f"not caught up after {now - d.started:.0f} s")
                if now >= scrape or (end is not None and proc_read_bytes(d.pid) >= end):
                    with contextlib.suppress(OSError):
                        body, latency = http_get(d.url("/metrics"))
                        seen = int(metric_sum(body, "tlslogd_log_lines_total"))
                        if end is None:
                            log_bytes = int(metric_sum(body, "tlslogd_log_bytes_read_total"))
                            # less 1 MiB: the two counts are taken a read apart
                            end = proc_read_bytes(d.pid) - log_bytes + corpus.size - (1 << 20)
                        if now >= scrape:
                            latencies.append(latency)
                            scrape += interval
                time.sleep(0.01)
            wall = round(time.perf_counter() - d.started, 4)
            sample = Sample(cpu=proc_cpu(d.pid), wall=wall, rss_mb=proc_hwm_mb(d.pid))
            # caught up: what a scrape costs with every series of this corpus (after the CPU
            # reading, so that it is not counted in the catch-up)
            renders: list[float] = []
            body = ""
            for _ in range(20):
                body, latency = http_get(d.url("/metrics"))
                renders.append(latency)
        if seen != corpus.lines:
            sample.note = f"counted {seen} lines, the corpus has {corpus.lines}"
        sample.extra.update(
            scrapes=len(latencies),
            scrape_p50_ms=ms(percentile(latencies, 0.5)),
            scrape_p99_ms=ms(percentile(latencies, 0.99)),
            scrape_max_ms=ms(max(latencies, default=None)),
            metrics_p50_ms=ms(percentile(renders, 0.5)),
            metrics_max_ms=ms(max(renders)),
            metrics_series=sum(1 for line in body.splitlines() if line and line[0] != "#"),
        )
        return sample

    def postfix_exporter(self, corpus: Corpus) -> Sample:
        """The exporter only tails: start it on an empty file, append the corpus and a sentinel
        TLS line, and measure until the sentinel is counted on /metrics."""
        exe = self.exporter_path()
        pfx = Path(tempfile.mkdtemp(prefix="exporter-", dir=self.workdir))
        log = pfx / "mail.log"
        log.touch()
        port = free_port()
        argv = [
            exe,
            f"--web.listen-address=127.0.0.1:{port}",
            f"--postfix.logfile_path={log}",
            f"--postfix.showq_path={pfx / 'no-showq'}",
        ]
        url = f"http://127.0.0.1:{port}/metrics"
        err = pfx / "exporter.err"
        sentinel = (
            "Nov  5 09:00:00 mx1 postfix/smtpd[1]: Anonymous TLS connection established from "
            f"sentinel.example.net[192.0.2.1]: TLSv1.3 with cipher {SENTINEL_CIPHER} (256/256 "
            "bits)\n"
        ).encode()
        with err.open("wb") as stderr:
            proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=stderr)
        try:
            fd = self._wait_exporter(proc, url, log, err)
            cpu0 = proc_cpu(proc.pid)
            start = time.perf_counter()
            with log.open("ab") as dst, corpus.path.open("rb") as src:
                shutil.copyfileobj(src, dst, 1 << 20)
                dst.write(sentinel)
            size = log.stat().st_size
            deadline = start + self.timeout(corpus)
            while (position := fd_position(proc.pid, log, fd)) < size:
                if time.perf_counter() > deadline or proc.poll() is not None:
                    return Sample(note=f"did not read the whole file: {tail(err)}")
                if position < 0:
                    fd = open_fd(proc.pid, log) or fd
                time.sleep(0.02)
            while True:
                body, _ = http_get(url)
                if f'cipher="{SENTINEL_CIPHER}"' in body:
                    break
                if time.perf_counter() > deadline:
                    return Sample(note="sentinel never counted")
                time.sleep(0.02)
            wall = round(time.perf_counter() - start, 4)
            sample = Sample(cpu=proc_cpu(proc.pid) - cpu0, wall=wall, rss_mb=proc_hwm_mb(proc.pid))
        finally:
            stop(proc)
            shutil.rmtree(pfx, ignore_errors=True)
        (self.workdir / "postfix_exporter.metrics").write_text(body)
        skip = f'cipher="{SENTINEL_CIPHER}"'
        sample.extra.update(
            tls_smtpd=metric_sum(body, "postfix_smtpd_tls_connections_total", skip),
            tls_smtp=metric_sum(body, "postfix_smtp_tls_connections_total"),
            unsupported=metric_sum(body, "postfix_unsupported_log_entries_total"),
            unsupported_no_service=metric_sum(
                body, 'postfix_unsupported_log_entries_total{service=""'
            ),
            smtpd_connects=metric_sum(body, "postfix_smtpd_connects_total"),
            deferred=metric_sum(body, "postfix_smtp_status_deferred"),
        )
        return sample

    @staticmethod
    def _wait_exporter(proc: subprocess.Popen[bytes], url: str, log: Path, err: Path) -> int:
        """Wait until /metrics answers and the log is open; returns the log's fd number."""
        deadline = time.perf_counter() + 20
        while time.perf_counter() < deadline:
            if proc.poll() is not None:
                raise Skip(f"postfix_exporter exited with {proc.returncode}: {tail(err)}")
            fd = open_fd(proc.pid, log)
            if fd is not None:
                with contextlib.suppress(OSError):
                    http_get(url, timeout=2)
                    return fd
            time.sleep(0.05)
        raise Skip("postfix_exporter did not start within 20 s")

    def mtail(self, corpus: Corpus) -> Sample:
        program = self.mtail_program()
        progs = self.workdir / "mtail-progs"
        progs.mkdir(exist_ok=True)
        target = progs / "postfix.mtail"
        if not target.exists():
            opener = gzip.open if program.suffix == ".gz" else open
            with opener(program, "rb") as src, target.open("wb") as dst:
                shutil.copyfileobj(src, dst)
        out = self.out("mtail")
        argv = [
            shutil.which("mtail") or "mtail",
            "--one_shot",
            "--one_shot_format",
            "prometheus",
            "--progs",
            str(progs),
            "--logs",
            str(corpus.path),
            "--logtostderr",
            "--address",
            "127.0.0.1",
            "--port",
            "0",
        ]
        sample, rc = timed(argv, out, self.timeout(corpus))
        if rc == 0:
            body = out.read_text(errors="replace")
            sample.extra.update(
                tls_smtpd=metric_sum(body, "postfix_smtpd_tls_connections_total"),
                tls_smtp=metric_sum(body, "postfix_smtp_tls_connections_total"),
            )
        return sample

    def tools(self) -> list[Tool]:
        def nothing() -> None:
            return None

        every = [
            Tool(
                "read_bytes",
                "read loop, binary (floor)",
                self.read_loop(READ_BINARY, "rb"),
                nothing,
            ),
            Tool("read_text", "read loop, text (floor)", self.read_loop(READ_TEXT, "rt"), nothing),
            Tool("parser", "tlslogd parser alone", self.parser, self.check_parser),
            Tool(
                "report",
                "tlslogd report --format json",
                self.report,
                lambda: self.check_tlslogd("report"),
            ),
            Tool(
                "daemon",
                "tlslogd run (catch-up, scraped every 1 s)",
                self.daemon,
                lambda: self.check_tlslogd("run"),
            ),
            Tool(
                "daemon_busy",
                "tlslogd run (catch-up, scraped every 0.1 s)",
                lambda corpus: self.daemon(corpus, 0.1),
                lambda: self.check_tlslogd("run"),
            ),
            Tool(
                "postfix_exporter",
                "postfix_exporter 0.3 (tail)",
                self.postfix_exporter,
                self.exporter_path,
            ),
            Tool("mtail", "mtail --one_shot postfix.mtail", self.mtail, self.mtail_program),
        ]
        wanted = self.args.tools.split(",") if self.args.tools else [t.name for t in every]
        unknown = set(wanted) - {t.name for t in every}
        if unknown:
            raise SystemExit(f"unknown --tools: {', '.join(sorted(unknown))}")
        return [t for t in every if t.name in wanted]


def ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 2)


def open_fd(pid: int, path: Path) -> int | None:
    """The number of the descriptor under which process ``pid`` has ``path`` open."""
    target = str(path.resolve())
    with contextlib.suppress(OSError):
        for entry in os.scandir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                if os.readlink(entry.path) == target:
                    return int(entry.name)
    return None


def fd_position(pid: int, path: Path, fd: int) -> int:
    """Read offset of descriptor ``fd`` of ``pid`` on ``path``; -1 when it is not that file."""
    with contextlib.suppress(OSError):
        if os.readlink(f"/proc/{pid}/fd/{fd}") == str(path.resolve()):
            position = proc_field(pid, f"fdinfo/{fd}", "pos")
            if position is not None:
                return position
    return -1


# -- machine description --------------------------------------------------------------------------


def first_line(argv: list[str]) -> str | None:
    try:
        proc = subprocess.run(argv, capture_output=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    text = (proc.stdout or proc.stderr).decode(errors="replace").strip()
    return text.splitlines()[0] if text else None


def package_version(name: str) -> str | None:
    if shutil.which("dpkg-query") is None:
        return None
    version = first_line(["dpkg-query", "-W", "-f", "${Version}", name])
    return version if version and "no packages" not in version else None


def machine(bench: Bench) -> dict[str, Any]:
    cpu = None
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    code = "import importlib.metadata as m; print(m.version('tlslogd'))"
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "kernel": platform.release(),
        "os": first_line(["sh", "-c", ". /etc/os-release && echo $PRETTY_NAME"]),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "python_executable": sys.executable,
        "tlslogd": first_line([sys.executable, "-c", code]),
        "tlslogd_command": shlex.join(bench.tlslogd),
        "mtail": package_version("mtail")
        or (first_line(["mtail", "--version"]) if shutil.which("mtail") else None),
        "postfix_exporter": package_version("prometheus-postfix-exporter"),
    }


def machine_markdown(info: dict[str, Any]) -> str:
    return "\n".join(f"* {key}: {value}" for key, value in info.items() if value is not None)


# -- default mode: side by side -------------------------------------------------------------------


def fmt(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def rate(n: float, seconds: float | None) -> str:
    if not seconds:
        return "-"
    r = n / seconds
    return f"{r / 1e6:.2f} M" if r >= 1e6 else f"{r / 1e3:.0f} k"


def side_by_side(bench: Bench, corpus: Corpus) -> dict[str, Any]:
    args = bench.args
    tools = bench.tools()
    notes: dict[str, str] = {}
    active = []
    for tool in tools:
        try:
            tool.check()
        except Skip as e:
            notes[tool.name] = f"skipped: {e}"
            continue
        active.append(tool)
    warm(corpus.path)
    samples: dict[str, list[Sample]] = {t.name: [] for t in active}
    for run in range(args.runs):
        for tool in active:
            if tool.name in notes:
                continue
            print(f"run {run + 1}/{args.runs}: {tool.name} ...", file=sys.stderr, flush=True)
            try:
                sample = tool.measure(corpus)
            except Skip as e:
                notes[tool.name] = f"skipped: {e}"
                continue
            except (OSError, subprocess.SubprocessError, ValueError) as e:
                sample = Sample(note=f"failed: {e!r}")
            samples[tool.name].append(sample)
            print(
                f"  cpu {fmt(sample.cpu)} s, wall {fmt(sample.wall)} s, rss {fmt(sample.rss_mb, 1)}"
                f" MB {sample.note}",
                file=sys.stderr,
                flush=True,
            )
    results: dict[str, Any] = {}
    for tool in tools:
        runs = samples.get(tool.name, [])
        entry: dict[str, Any] = {"label": tool.label, "samples": [asdict(s) for s in runs]}
        entry["median"] = {
            "cpu_s": median([s.cpu for s in runs]),
            "wall_s": median([s.wall for s in runs]),
            "rss_mb": median([s.rss_mb for s in runs]),
        }
        entry["ratios"] = {
            "cpu_vs_read_text": run_ratio(runs, samples.get("read_text", [])),
            "cpu_vs_postfix_exporter": run_ratio(runs, samples.get("postfix_exporter", [])),
        }
        run_notes = sorted({s.note for s in runs if s.note})
        entry["note"] = "; ".join([*([notes[tool.name]] if tool.name in notes else []), *run_notes])
        results[tool.name] = entry
    return results


def run_ratio(runs: list[Sample], reference: list[Sample]) -> float | None:
    """Median over runs of this tool's CPU divided by the reference's CPU in the same run."""
    ratios = [
        a.cpu / b.cpu for a, b in zip(runs, reference, strict=False) if a.cpu is not None and b.cpu
    ]
    return median(list(ratios))


def tls_comparison(results: dict[str, Any], truth: dict[str, Any] | None) -> list[str]:
    """What the peers counted as TLS handshakes, next to the ground truth."""
    if truth is None:
        return []
    hs = truth["tls"]["handshakes"]
    by_program = hs["by_program"]
    summaries = truth["tls"]["summary_lines"]
    rows = [
        "| counted by | inbound (smtpd) | outbound (smtp) | total |",
        "|---|---:|---:|---:|",
        f"| ground truth: handshakes | {hs['by_direction'].get('inbound', 0):,} | "
        f"{hs['by_direction'].get('outbound', 0):,} | {hs['total']:,} |",
    ]
    for name in ("report", "postfix_exporter", "mtail"):
        runs = results.get(name, {}).get("samples", [])
        if not runs:
            continue
        extra = runs[-1]["extra"]
        if "tls_smtpd" not in extra:
            continue
        smtpd, smtp = int(extra["tls_smtpd"]), int(extra["tls_smtp"])
        rows.append(f"| {results[name]['label']} | {smtpd:,} | {smtp:,} | {smtpd + smtp:,} |")
    rows += [
        "",
        f"Summary lines in the corpus: {summaries['total']:,}, of which "
        f"{summaries['by_program'].get('postfix/tlsproxy', 0):,} repeated by tlsproxy, "
        f"{summaries['by_state'].get('reused', 0):,} `reused`, "
        f"{summaries.get('with_sni', 0):,} with an SNI name; inbound by program: "
        + ", ".join(f"{p} {n:,}" for p, n in by_program.items() if not p.endswith("/smtp"))
        + ".",
    ]
    return rows


def side_by_side_markdown(
    corpus: Corpus, results: dict[str, Any], info: dict[str, Any], runs: int
) -> str:
    head = (
        f"Corpus: {corpus.path.name}, {corpus.lines:,} lines, {corpus.size / 1e6:.1f} MB. "
        f"Median of {runs} interleaved run(s); ratios are medians of per-run CPU ratios."
    )
    rows = [
        "| tool | CPU s | wall s | lines/s (wall) | lines per CPU-s | peak RSS MB "
        "| CPU ÷ read loop | CPU ÷ postfix_exporter | note |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for name, entry in results.items():
        m = entry["median"]
        r = entry["ratios"]
        rows.append(
            f"| {entry['label']} | {fmt(m['cpu_s'])} | {fmt(m['wall_s'])} | "
            f"{rate(corpus.lines, m['wall_s'])} | {rate(corpus.lines, m['cpu_s'])} | "
            f"{fmt(m['rss_mb'], 1)} | {fmt(r['cpu_vs_read_text'], 1)} | "
            f"{fmt(r['cpu_vs_postfix_exporter'], 2)} | {entry['note']} |"
        )
        if name.startswith("daemon") and entry["samples"]:
            extra = entry["samples"][-1]["extra"]
            rows[-1] = rows[-1][:-2] + (
                f" /metrics during catch-up: p50 {extra['scrape_p50_ms']} ms, p99 "
                f"{extra['scrape_p99_ms']} ms, max {extra['scrape_max_ms']} ms "
                f"({extra['scrapes']} scrapes); caught up, {extra['metrics_series']} series "
                f"in {extra['metrics_p50_ms']} ms (p50), {extra['metrics_max_ms']} ms (max) |"
            )
    parts = [head, "", *rows, "", *tls_comparison(results, corpus.truth), "", "Machine:", ""]
    return "\n".join([*parts, machine_markdown(info), ""])


# -- live mode ------------------------------------------------------------------------------------


class Restamper:
    """Gives corpus lines the current local time (classic syslog header), cached per second."""

    def __init__(self) -> None:
        self.second = -1
        self.stamp = b""

    def now(self) -> bytes:
        second = int(time.time())
        if second != self.second:
            self.second = second
            self.stamp = time.strftime("%b %e %H:%M:%S", time.localtime(second)).encode()
        return self.stamp

    def __call__(self, line: bytes) -> bytes:
        return self.now() + line[15:]


def corpus_lines(path: Path) -> Iterator[bytes]:
    while True:
        with path.open("rb") as f:
            yield from f


def live(bench: Bench, corpus: Corpus) -> dict[str, Any]:
    """The daemon tailing a log written at ``--rate``: first for CPU, scraped every 15 s as
    Prometheus would; then for latency, with a marker line each second and /metrics polled
    every 10 ms until it counts it (that polling costs CPU of its own, so it is kept apart)."""
    args = bench.args
    bench.check_tlslogd("run")
    log = bench.workdir / "live.log"
    log.write_bytes(b"")
    source = corpus_lines(corpus.path)
    stamp = Restamper()
    result: dict[str, Any] = {"rate": args.rate, "seconds": args.seconds}
    with Daemon(bench.tlslogd, log, bench.workdir, from_start=False) as d:
        d.wait_ready()
        fd = os.open(log, os.O_WRONLY | os.O_APPEND)
        try:
            cpu0 = proc_cpu(d.pid)
            tail = Tail(d, fd, source, stamp, args.rate)
            elapsed = tail.run(args.seconds, probe=False)
            result["cpu_percent_of_one_core"] = round(100 * (proc_cpu(d.pid) - cpu0) / elapsed, 2)
            tail.run(args.seconds, probe=True)
            expected = tail.written + tail.markers
            result.update(
                appended_lines=expected,
                markers=tail.markers,
                markers_missed=tail.missed,
                latency_p50_ms=ms(percentile(tail.latencies, 0.5)),
                latency_p99_ms=ms(percentile(tail.latencies, 0.99)),
                latency_max_ms=ms(max(tail.latencies, default=None)),
                caught_up=d.wait_lines(expected, timeout=120),
            )
            cpu0 = proc_cpu(d.pid)
            time.sleep(args.idle_seconds)
            result["idle_seconds"] = args.idle_seconds
            result["idle_cpu_percent"] = round(
                100 * (proc_cpu(d.pid) - cpu0) / args.idle_seconds, 3
            )
            backlog = b"".join(stamp(next(source)) for _ in range(args.backlog_lines))
            cpu0 = proc_cpu(d.pid)
            start = time.perf_counter()
            os.write(fd, backlog)
            done = d.wait_lines(expected + args.backlog_lines, timeout=600, every=0.05)
            took = time.perf_counter() - start
            result.update(
                backlog_lines=args.backlog_lines,
                backlog_seconds=round(took, 3) if done else None,
                backlog_lines_per_s=round(args.backlog_lines / took) if done else None,
                backlog_cpu_s=round(proc_cpu(d.pid) - cpu0, 3),
                peak_rss_mb=proc_hwm_mb(d.pid),
            )
        finally:
            os.close(fd)
    return result


class Tail:
    """Appends corpus lines to the live log at a steady rate, one write per line, in 10 ms
    steps."""

    def __init__(
        self, daemon: Daemon, fd: int, source: Iterator[bytes], stamp: Restamper, rate: int
    ) -> None:
        self.daemon, self.fd, self.source, self.stamp, self.rate = daemon, fd, source, stamp, rate
        self.written = 0
        self.markers = 0
        self.missed = 0
        self.latencies: list[float] = []

    def run(self, seconds: float, *, probe: bool) -> float:
        """Append for ``seconds``; with ``probe``, measure marker latency; returns the time."""
        written = 0
        pending: float | None = None  # when the newest marker was appended
        start = time.perf_counter()
        next_marker = next_scrape = start + 1.0
        tick = start
        while (now := time.perf_counter()) < start + seconds:
            due = int((now - start) * self.rate) - written
            for _ in range(due):  # a write per line, as postlogd and syslog daemons do
                os.write(self.fd, self.stamp(next(self.source)))
                written += 1
            if not probe and now >= next_scrape:
                with contextlib.suppress(OSError):
                    http_get(self.daemon.url("/metrics"))
                next_scrape += 15.0
            if probe and pending is None and now >= next_marker:
                self.markers += 1
                os.write(self.fd, marker_line(self.stamp.now()))
                pending = time.perf_counter()
                next_marker += 1.0
            if pending is not None:
                with contextlib.suppress(OSError):
                    body, _ = http_get(self.daemon.url("/metrics"))
                    if marker_count(body) >= self.markers:
                        self.latencies.append(time.perf_counter() - pending)
                        pending = None
                if pending is not None and time.perf_counter() - pending > 5:
                    self.missed += 1
                    pending = None
            tick += 0.01
            time.sleep(max(0.0, tick - time.perf_counter()))
        self.written += written
        return time.perf_counter() - start


def marker_line(stamp: bytes) -> bytes:
    text = (
        " mx1 postfix/smtpd[4242]: Anonymous TLS connection established from "
        f"marker.example.net[192.0.2.1]: TLSv1.3 with cipher {MARKER_CIPHER} (256/256 bits)\n"
    )
    return stamp + text.encode()


def marker_count(body: str) -> float:
    """How many marker handshakes /metrics has counted: the largest sum, over the counter
    families (``*_total``), of the samples labelled with the marker cipher."""
    needle = f'cipher="{MARKER_CIPHER}"'
    sums: dict[str, float] = {}
    for line in body.splitlines():
        if needle in line and not line.startswith("#"):
            name = line.split("{", 1)[0]
            if name.endswith("_total"):
                sums[name] = sums.get(name, 0.0) + float(line.rsplit(" ", 1)[1])
    return max(sums.values(), default=0.0)


def live_markdown(result: dict[str, Any], info: dict[str, Any]) -> str:
    rows = [
        "| measure | value |",
        "|---|---:|",
        f"| append rate | {result['rate']:,} lines/s for {result['seconds']} s |",
        f"| CPU while tailing (scraped every 15 s) | {result['cpu_percent_of_one_core']} % of "
        "one core |",
        f"| append → /metrics latency p50 (polled every 10 ms) | {result['latency_p50_ms']} ms |",
        f"| append → /metrics latency p99 | {result['latency_p99_ms']} ms |",
        f"| markers seen / missed | {result['markers'] - result['markers_missed']} / "
        f"{result['markers_missed']} |",
        f"| append → /metrics latency max | {result['latency_max_ms']} ms |",
        f"| idle CPU ({result['idle_seconds']} s, no writes) | {result['idle_cpu_percent']} % |",
        f"| backlog of {result['backlog_lines']:,} lines | "
        f"{fmt(result['backlog_lines_per_s'], 0)} lines/s, {result['backlog_cpu_s']} CPU s |",
        f"| peak RSS | {fmt(result['peak_rss_mb'], 1)} MB |",
    ]
    return "\n".join([*rows, "", "Machine:", "", machine_markdown(info), ""])


# -- growth mode ----------------------------------------------------------------------------------


def growth(bench: Bench) -> list[dict[str, Any]]:
    args = bench.args
    cases = [(int(n), 0) for n in args.growth_sizes.split(",")]
    if args.hostile:
        cases.append((args.hostile_lines, args.hostile))
    checks: dict[str, str] = {}
    for name in ("report", "run"):
        try:
            bench.check_tlslogd(name)
        except Skip as e:
            checks[name] = str(e)
    rows = []
    for lines, hostile in cases:
        name = f"growth-{lines}-{hostile}"
        print(f"{name}: generating ...", file=sys.stderr, flush=True)
        corpus = make_corpus(bench.workdir, lines, args.seed, hostile, name)
        warm(corpus.path)
        row: dict[str, Any] = {"lines": lines, "hostile_peers": hostile, "bytes": corpus.size}
        for tool, measure in (("report", bench.report), ("daemon", bench.daemon)):
            if ("run" if tool == "daemon" else "report") in checks:
                row[tool] = {"note": "skipped: " + checks["run" if tool == "daemon" else "report"]}
                continue
            print(f"{name}: {tool} ...", file=sys.stderr, flush=True)
            try:
                runs = [measure(corpus) for _ in range(args.runs)]
            except Skip as e:
                row[tool] = {"note": f"skipped: {e}"}
                continue
            row[tool] = {
                "cpu_s": median([s.cpu for s in runs]),
                "wall_s": median([s.wall for s in runs]),
                "rss_mb": median([s.rss_mb for s in runs]),
                "metrics_p50_ms": median([s.extra.get("metrics_p50_ms") for s in runs]),
                "metrics_ms": max(
                    (s.extra.get("metrics_max_ms") or 0.0 for s in runs), default=None
                ),
                "metrics_series": runs[-1].extra.get("metrics_series"),
                "note": "; ".join(sorted({s.note for s in runs if s.note})),
            }
        rows.append(row)
        if not args.keep:
            corpus.path.unlink()
    return rows


def growth_markdown(rows: list[dict[str, Any]], info: dict[str, Any]) -> str:
    out = [
        "| corpus | report CPU s | report peak RSS MB | daemon CPU s | daemon peak RSS MB | "
        "/metrics series | /metrics ms p50 / max | note |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for row in rows:
        label = f"{row['lines']:,} lines"
        if row["hostile_peers"]:
            label += f", {row['hostile_peers']:,} hostile peers"
        r, d = row["report"], row["daemon"]
        note = "; ".join(n for n in (r.get("note"), d.get("note")) if n)
        out.append(
            f"| {label} | {fmt(r.get('cpu_s'))} | {fmt(r.get('rss_mb'), 1)} | "
            f"{fmt(d.get('cpu_s'))} | {fmt(d.get('rss_mb'), 1)} | "
            f"{d.get('metrics_series') or '-'} | {fmt(d.get('metrics_p50_ms'), 1)} / "
            f"{fmt(d.get('metrics_ms'), 1)} | {note} |"
        )
    return "\n".join([*out, "", "Machine:", "", machine_markdown(info), ""])


# -- main -----------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--live", action="store_true", help="measure the daemon tailing a live log")
    mode.add_argument("--growth", action="store_true", help="CPU and RSS against corpus size")
    p.add_argument("--corpus", type=Path, help="use this maillog instead of generating one")
    p.add_argument("--truth", type=Path, help="ground truth JSON of --corpus (for comparisons)")
    p.add_argument("--lines", type=int, default=1_000_000, help="corpus size (default 1000000)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--runs", type=int, default=3, help="interleaved runs (default 3)")
    p.add_argument(
        "--tools",
        help="comma-separated subset: read_bytes,read_text,parser,report,"
        "daemon,daemon_busy,postfix_exporter,mtail",
    )
    p.add_argument("--tlslogd", help="tlslogd command (default: this python -m tlslogd)")
    p.add_argument("--workdir", type=Path, help="keep generated files here (default: a temp dir)")
    p.add_argument("--keep", action="store_true", help="do not delete the work directory")
    p.add_argument("--json", type=Path, help="write the results as JSON to this file")
    p.add_argument("--markdown", type=Path, help="also write the Markdown report to this file")
    live_opts = p.add_argument_group("--live")
    live_opts.add_argument("--seconds", type=float, default=60)
    live_opts.add_argument("--rate", type=int, default=2000, help="lines per second")
    live_opts.add_argument("--idle-seconds", type=float, default=30)
    live_opts.add_argument("--backlog-lines", type=int, default=200_000)
    growth_opts = p.add_argument_group("--growth")
    growth_opts.add_argument("--growth-sizes", default="100000,1000000,5000000")
    growth_opts.add_argument("--hostile", type=int, default=100_000, help="hostile peers")
    growth_opts.add_argument("--hostile-lines", type=int, default=1_000_000)
    args = p.parse_args(argv)
    if args.growth and "--runs" not in (argv if argv is not None else sys.argv):
        args.runs = 1
    if args.runs < 1:
        p.error("--runs must be >= 1")
    if not os.access(GNU_TIME, os.X_OK):
        p.error(f"GNU time ({GNU_TIME}) is required: apt-get install time")

    if args.workdir:
        args.workdir.mkdir(parents=True, exist_ok=True)
        workdir = args.workdir
    else:
        workdir = Path(tempfile.mkdtemp(prefix="tlslogd-bench-"))
    bench = Bench(args, workdir)
    info = machine(bench)
    try:
        if args.growth:
            rows = growth(bench)
            report: dict[str, Any] = {"mode": "growth", "machine": info, "cases": rows}
            text = growth_markdown(rows, info)
        else:
            if args.corpus:
                truth = json.loads(args.truth.read_text()) if args.truth else None
                corpus = Corpus(
                    args.corpus, count_lines(args.corpus), args.corpus.stat().st_size, truth
                )
            else:
                lines = args.lines
                if args.live:
                    lines = int(args.rate * (args.seconds + 5)) + args.backlog_lines
                print(f"generating {lines:,} lines ...", file=sys.stderr, flush=True)
                corpus = make_corpus(workdir, lines, args.seed)
            base = {
                "machine": info,
                "corpus": {"path": str(corpus.path), "lines": corpus.lines, "bytes": corpus.size},
            }
            if args.live:
                result = live(bench, corpus)
                report = {"mode": "live", **base, "result": result}
                text = live_markdown(result, info)
            else:
                results = side_by_side(bench, corpus)
                report = {"mode": "side_by_side", **base, "runs": args.runs, "tools": results}
                if corpus.truth is not None:
                    report["truth"] = {
                        "tls": corpus.truth["tls"],
                        "deliveries": corpus.truth["deliveries"]["by_tls"],
                    }
                text = side_by_side_markdown(corpus, results, info, args.runs)
    except Skip as e:
        print(f"skipped: {e}", file=sys.stderr)
        return 2
    finally:
        if not args.keep and not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)
    if args.markdown:
        args.markdown.write_text(text)
    if args.json:
        args.json.write_text(json.dumps(report, indent=1, default=str) + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
