"""Command line: ``tlslogd run | demo | parse | report | check-config | audit``."""

from __future__ import annotations

import argparse
import contextlib
import csv
import gzip
import io
import json
import logging
import os
import stat
import sys
import time
from collections import deque
from collections.abc import Callable, Generator, Iterator, Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, cast

from tlslogd import __version__, summary
from tlslogd.destinations import DestinationTable
from tlslogd.errors import ConfigError
from tlslogd.events import Event
from tlslogd.parse import Parser
from tlslogd.peers import CATEGORIES, PeerTable, row_seen
from tlslogd.pipeline import Pipeline
from tlslogd.sessions import Correlator, LocalNetworks
from tlslogd.since import BadRequest, parse_since
from tlslogd.stats import Stats

# The daemon's commands import what only they need (pydantic's settings, asyncio, the web app)
# when they run: `report` starts in half the time without them.
if TYPE_CHECKING:
    from tlslogd.config import Settings
    from tlslogd.webconfig import WebConfig

CHUNK = 1 << 20
# events ``tlslogd parse`` keeps back behind a message its session has not decided yet
_PARSE_REORDER_MAX = 100_000


def _daemon_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", type=Path, help="TOML file (default /etc/tlslogd/tlslogd.toml)")
    p.add_argument("--log", help="maillog to follow, or 'journald' (default /var/log/mail.log)")
    p.add_argument("--listen", help="HOST:PORT to serve on (default 127.0.0.1:10154)")
    p.add_argument("--state-dir", type=Path, help="state directory (default /var/lib/tlslogd)")
    p.add_argument(
        "--from-start",
        action="store_true",
        default=None,
        help="with no saved position, read an existing log from its beginning",
    )
    p.add_argument("--web-config", type=Path, help="web-config.yml: TLS and basic auth")
    p.add_argument(
        "--local-networks",
        type=lambda s: [x.strip() for x in s.split(",") if x.strip()],
        help="comma-separated networks whose relays are local (default 127.0.0.0/8,::1/128)",
    )
    p.add_argument("--audit-config-dir", type=Path, help="audit this Postfix config directory")
    p.add_argument("--log-level", choices=("debug", "info", "warning", "error"))


def _file_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("files", nargs="*", metavar="FILE", help="log files (.gz too); - for stdin")
    p.add_argument(
        "--local-networks",
        default="127.0.0.0/8,::1/128",
        help="comma-separated networks whose relays are local (content filters, LMTP); "
        "'' for none (default %(default)s)",
    )


def _at_least_one(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a whole number from 1")
    return int(text)


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a number above 0")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tlslogd",
        description="Follow a Postfix maillog and report how mail travels: over TLS or not, "
        "with which protocol and cipher, to and from whom.",
    )
    parser.add_argument("--version", action="version", version=f"tlslogd {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="run the daemon: follow the log, serve /metrics")
    _daemon_flags(run)
    check = sub.add_parser("check-config", help="validate and print the effective configuration")
    _daemon_flags(check)

    demo = sub.add_parser("demo", help="replay a real sample log at a live pace and serve it")
    demo.add_argument("--listen", default="127.0.0.1:10154", help="HOST:PORT (%(default)s)")
    demo.add_argument("--speed", type=_positive, default=1.0, help="replay speed factor (1 = live)")

    parse = sub.add_parser("parse", help="write one JSON object per event (JSON Lines)")
    _file_flags(parse)
    parse.add_argument("--all", action="store_true", help="also lines that became no event")

    report = sub.add_parser("report", help="TLS report of log files: adoption, census, peers")
    _file_flags(report)
    report.add_argument("--since", help="only events from this time (ISO 8601, or 7d/24h ago)")
    report.add_argument("--until", help="only events before this time")
    report.add_argument("--format", choices=("table", "json", "csv"), default="table")
    report.add_argument(
        "--top", type=_at_least_one, default=20, help="peers per list (%(default)s)"
    )

    advise = sub.add_parser(
        "advise", help="propose TLS policies (smtp_tls_policy_maps) from the log's evidence"
    )
    _file_flags(advise)
    advise.add_argument(
        "--state-dir",
        type=Path,
        help="read the daemon's durable evidence instead of files (default /var/lib/tlslogd)",
    )
    advise.add_argument("--since", default="30d", help="window: 30d (default), ISO 8601, ...")
    advise.add_argument("--until", help="end of the window (default: the last event)")
    advise.add_argument(
        "--min-deliveries", type=int, default=20, help="deliveries needed to propose enforcement"
    )
    advise.add_argument("--min-days", type=int, default=7, help="days with deliveries needed")
    advise.add_argument("--format", choices=("policy", "table", "json"), default="policy")

    from tlslogd import audit

    audit_parser = sub.add_parser("audit", help="audit the Postfix TLS configuration")
    audit.add_arguments(audit_parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    command: str = args.command
    try:
        if command == "run":
            return _run(args)
        if command == "check-config":
            return _check_config(args)
        if command == "demo":
            return _demo(args)
        if command == "parse":
            return _parse(args)
        if command == "report":
            return _report(args)
        if command == "advise":
            return _advise(args)
        from tlslogd import audit

        return audit.run(args, sys.stdin, sys.stdout)
    except ConfigError as exc:
        print(f"tlslogd: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # the reader went away (tlslogd parse ... | head): stop quietly, and keep Python from
        # complaining when it flushes stdout at exit
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except OSError as exc:
        if exc.filename is None:
            raise
        print(f"tlslogd: {exc.filename}: {exc.strerror}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


# -- daemon -----------------------------------------------------------------------------------


def _settings(args: argparse.Namespace) -> Settings:
    flags = {
        "log": args.log,
        "listen": args.listen,
        "state_dir": args.state_dir,
        "from_start": args.from_start,
        "web_config": args.web_config,
        "local_networks": args.local_networks,
        "audit_config_dir": args.audit_config_dir,
        "log_level": args.log_level,
    }
    from tlslogd.config import load_settings

    settings = load_settings(args.config, flags)
    _warn_unknown_environment()
    return settings


def _warn_unknown_environment() -> None:
    from tlslogd.config import ENV_PREFIX, Settings, unknown_environment

    unknown = unknown_environment()
    if unknown:
        known = ", ".join(ENV_PREFIX + key.upper() for key in Settings.model_fields)
        print(
            f"tlslogd: warning: ignoring {', '.join(unknown)}: no such setting (the settings "
            f"are {known})",
            file=sys.stderr,
        )


def _logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def _run(args: argparse.Namespace) -> int:
    import asyncio

    from tlslogd.state import StateError

    settings = _settings(args)
    _logging(settings.log_level)
    from tlslogd.daemon import Daemon
    from tlslogd.sdnotify import SystemdNotifier

    auditor = None
    if settings.audit_config_dir is not None:
        from tlslogd import audit

        directory = settings.audit_config_dir

        def auditor() -> list[tuple[str, str]]:
            report = audit.audit_config_dir(directory)
            return [(r.check, r.status) for r in report.results]

    from tlslogd.webconfig import WebConfigError

    notifier = SystemdNotifier.from_environ(os.environ)
    try:
        web = _web_config(settings)
        daemon = Daemon(settings, notifier=notifier, audit=auditor, web=web)
    except WebConfigError as exc:  # also the files it names, which the daemon loads first
        raise ConfigError(str(exc)) from exc
    except StateError as exc:
        print(f"tlslogd: {exc}", file=sys.stderr)
        return 1
    return asyncio.run(daemon.run())


def _web_config(settings: Settings) -> WebConfig | None:
    from tlslogd.webconfig import load_web_config

    return None if settings.web_config is None else load_web_config(settings.web_config)


def _check_config(args: argparse.Namespace) -> int:
    from tlslogd.config import effective
    from tlslogd.webconfig import WebConfigError, build_ssl_context

    settings = _settings(args)
    try:
        web = _web_config(settings)
        if web is not None:
            build_ssl_context(web)  # the certificate and key load, the client CAs parse
    except WebConfigError as exc:
        raise ConfigError(str(exc)) from exc
    for key, value in effective(settings).items():
        print(f"{key} = {json.dumps(value)}")
    for warning in _run_time_problems(settings):
        print(f"tlslogd: warning: {warning}", file=sys.stderr)
    return 0


def _run_time_problems(settings: Settings) -> list[str]:
    """What the daemon would run into although the configuration is valid: a log it cannot
    read (yet: it waits for it) and a state directory it cannot write."""
    problems = []
    if settings.log not in ("journald", "demo"):
        log = Path(settings.log)
        if not log.exists():
            problems.append(f"log = {settings.log}: no such file yet (tlslogd waits for it)")
        elif not os.access(log, os.R_OK):
            problems.append(f"log = {settings.log}: not readable by this user")
    state = Path(settings.state_dir)
    existing = next((p for p in (state, *state.parents) if p.exists()), None)
    if existing is not None and not os.access(existing, os.W_OK | os.X_OK):
        problems.append(f"state_dir = {state}: {existing} is not writable by this user")
    return problems


def _demo(args: argparse.Namespace) -> int:
    _logging("info")
    _warn_unknown_environment()
    import asyncio
    import tempfile

    from tlslogd.config import Settings
    from tlslogd.daemon import Daemon
    from tlslogd.sdnotify import SystemdNotifier
    from tlslogd.sources.demo import DemoSource

    class Announcer(SystemdNotifier):
        """Prints the demo's address once the daemon serves it (not before: the port may be
        taken)."""

        def __init__(self, text: str) -> None:
            super().__init__(None)
            self._text = text

        def ready(self, status: str | None = None) -> bool:
            if self._text:
                print(self._text, file=sys.stderr)
                self._text = ""
            return super().ready(status)

    with tempfile.TemporaryDirectory(prefix="tlslogd-demo-") as state_dir:
        settings = Settings(
            log="demo", listen=args.listen, state_dir=Path(state_dir), local_networks=[]
        )
        speed: float = args.speed

        def source(kind: str, position: dict[str, Any] | None) -> DemoSource:
            return DemoSource(speed=speed)

        host, port = settings.host_port
        hint = (
            f"tlslogd demo: replaying a real Postfix log; open http://{host}:{port}/ "
            f"(also /metrics, /api/v1/summary, /api/v1/peers). Ctrl-C stops."
        )
        daemon = Daemon(settings, source_factory=source, notifier=Announcer(hint))
        return asyncio.run(daemon.run())


# -- files ------------------------------------------------------------------------------------


@contextlib.contextmanager
def _open(name: str) -> Iterator[tuple[io.BufferedIOBase, io.BufferedIOBase]]:
    """The stream to read ``name`` from, and the file on disk underneath it (not the same for a
    .gz file)."""
    if name == "-":
        stdin = cast(io.BufferedIOBase, sys.stdin.buffer)
        yield stdin, stdin
        return
    with open(name, "rb") as on_disk:
        if name.endswith(".gz"):
            with gzip.GzipFile(fileobj=on_disk, mode="rb") as unzipped:
                yield unzipped, on_disk
        else:
            yield on_disk, on_disk


class _JsonExport:
    """The log lines of a saved JSON export, one JSON object per line: ``journalctl -o json``
    records become the lines the journal source makes of them, and Docker's json-file records
    (``{"log": LINE, "stream": ..., "time": ...}``) give their LINE (joined again when Docker
    split a long one). A line that is neither stays as it is; a record without a usable line
    is reported once per problem."""

    def __init__(self, name: str, *, quiet: bool = False) -> None:
        self.name = name
        self.partial = ""
        self.reported: set[str] = set()
        self.quiet = quiet

    def lines(self, data: bytes) -> bytes:
        from tlslogd.sources.journal import FieldError, record_line

        out: list[bytes] = []
        for raw in data.splitlines():
            text = raw.strip().lstrip(b"\x1e")  # json-seq's record separator
            if not text.startswith(b"{"):
                out.append(raw + b"\n")
                continue
            try:
                record = json.loads(text)
            except (ValueError, RecursionError):  # RecursionError: nested beyond the stack
                record = None
            if not isinstance(record, dict):
                self._report("a line that starts with '{' is not a JSON object")
                out.append(raw + b"\n")
                continue
            log = record.get("log")
            if isinstance(log, str):
                self.partial += log
                if self.partial.endswith("\n"):
                    out.append(self.partial.encode("utf-8", "replace"))
                    self.partial = ""
                continue
            try:
                out.append(record_line(record))
            except FieldError as exc:
                self._report(f"a journal record's {exc}")
                out.append(raw + b"\n")
        return b"".join(out)

    def rest(self) -> bytes:
        """A Docker line still in pieces when the file ends."""
        rest, self.partial = self.partial, ""
        return (rest + "\n").encode("utf-8", "replace") if rest else b""

    def _report(self, problem: str) -> None:
        if problem not in self.reported and not self.quiet:
            self.reported.add(problem)
            print(f"tlslogd: {self.name}: {problem}; read as it is", file=sys.stderr)


def read_chunks(
    name: str,
    size: int = CHUNK,
    progress: Callable[[int], None] | None = None,
    *,
    quiet: bool = False,
) -> Generator[bytes, None, None]:
    """Complete lines of a file (or stdin, or a .gz file), about ``size`` bytes at a time, with
    the records of a saved JSON export (:class:`_JsonExport`) turned into their log lines: a
    file whose first line is a JSON object. ``progress`` gets the bytes of the file read since
    its last call, as they are on disk (compressed, for a .gz file). ``quiet``: problems of
    a JSON export are not reported (a look at the file's start)."""
    export: _JsonExport | None = None
    for data in _raw_chunks(name, size, progress):
        if export is None and data[:1] in (b"{", b"\x1e"):
            export = _JsonExport(name, quiet=quiet)
        yield export.lines(data) if export is not None else data
    if export is not None and (rest := export.rest()):
        yield rest


def _raw_chunks(
    name: str, size: int, progress: Callable[[int], None] | None = None
) -> Iterator[bytes]:
    done = 0
    with _open(name) as (f, on_disk):
        # a pipe (stdin, a process substitution) has no size to measure progress against
        measured = on_disk is not sys.stdin.buffer and on_disk.seekable()
        report = progress if measured else None
        rest = b""
        while True:
            try:
                data = f.read1(size)  # what one step decompressed, so a cut .gz keeps it
            except EOFError:  # a .gz cut short (still being written, or copied in part)
                print(
                    f"tlslogd: {name}: compressed data ends early; read up to there",
                    file=sys.stderr,
                )
                break
            except gzip.BadGzipFile as exc:
                raise ConfigError(f"{name}: {exc}") from None
            if report is not None:
                position = on_disk.tell()
                report(position - done)
                done = position
            if not data:
                break
            data = rest + data
            cut = data.rfind(b"\n") + 1
            if cut == 0 or len(data) < size:  # gather small reads (.gz steps, pipes)
                rest = data
                continue
            rest = data[cut:]
            yield data[:cut]
        if rest:
            yield rest if rest.endswith(b"\n") else rest + b"\n"


def time_ordered(files: Sequence[str]) -> list[str]:
    """Files oldest first, so that a rotated set is read in log order: by the log time of their
    first line, also when copying gave them other modification times; by modification time
    when the first lines carry no date."""
    if not files:
        return ["-"]
    named = [f for f in files if f != "-"]
    named.sort(key=_first_time)
    return named + (["-"] if "-" in files else [])


def _first_time(name: str) -> float:
    """Log time of the first dated event in the file's first 256 KiB, or its modification
    time (also for a pipe). The year of a classic syslog stamp is inferred from the
    modification time."""
    info = os.stat(name)
    mtime = info.st_mtime
    if not stat.S_ISREG(info.st_mode):
        return mtime  # a pipe (<(zcat ...)): what is read now would be missing later
    parser = Parser(reference_time=mtime)
    with contextlib.closing(read_chunks(name, size=1 << 18, quiet=True)) as chunks:
        data = next(chunks, b"")
    for ev in parser.scan(data.decode("utf-8", "replace")):
        if ev.ts is not None:
            return ev.ts
    return mtime


def _pipeline(
    files: Sequence[str],
    local_networks: str,
    since: float | None = None,
    until: float | None = None,
) -> Pipeline:
    reference = None
    named = [f for f in files if f != "-"]
    if named:
        reference = os.stat(named[0]).st_mtime
    networks = [n.strip() for n in local_networks.split(",") if n.strip()]
    try:
        local = LocalNetworks(networks)
    except ValueError as exc:
        raise ConfigError(f"--local-networks: {exc}") from exc
    return Pipeline(
        Parser(reference_time=reference),
        Correlator(is_local=local.is_local),
        Stats(
            peers=PeerTable(max_peers=1_000_000),
            destinations=DestinationTable(max_destinations=1_000_000),
        ),
        since=since,
        until=until,
    )


def _parse(args: argparse.Namespace) -> int:
    from tlslogd.records import to_record

    files = time_ordered(args.files)
    pipe = _pipeline(files, args.local_networks)
    out = sys.stdout
    write = out.write
    # in input order; a received message the correlator still holds (its session decides it
    # at its end when smtpd logs no handshake) keeps the lines after it waiting
    unwritten: deque[Event] = deque()
    holds = pipe.correlator.holds

    def flush(everything: bool = False) -> None:
        while unwritten and (
            everything or len(unwritten) > _PARSE_REORDER_MAX or not holds(unwritten[0])
        ):
            write(json.dumps(to_record(unwritten.popleft()), ensure_ascii=False) + "\n")

    def sink(ev: Event) -> None:
        unwritten.append(ev)
        flush()

    for name in files:
        for data in read_chunks(name):
            if not args.all:
                pipe.feed(data, sink)
                continue
            for line in data.decode("utf-8", "replace").splitlines():
                seen: list[Event] = []
                pipe.feed_text(line + "\n", seen.append)
                for ev in seen or [pipe.parser.parse_line(line)]:
                    sink(ev)
    pipe.finish()
    flush(everything=True)
    out.flush()
    return 0


def _report(args: argparse.Namespace) -> int:
    files = time_ordered(args.files)
    since, until = _window(args.since, None, "--since"), _window(args.until, None, "--until")
    if since is not None and until is not None and since >= until:
        raise ConfigError(f"--since {args.since} is not before --until {args.until}")
    pipe = _pipeline(files, args.local_networks, since, until)
    total = sum(os.stat(f).st_size for f in files if f != "-")
    progress = args.format == "table" and sys.stderr.isatty() and total > 20 << 20
    done = 0

    def read(n: int) -> None:
        nonlocal done
        done += n
        print(f"\rreading {100 * done / max(total, 1):5.1f}%", end="", file=sys.stderr)

    for name in files:
        for data in read_chunks(name, progress=read if progress else None):
            pipe.feed(data)
    pipe.finish()
    if progress:
        print("\r" + " " * 20 + "\r", end="", file=sys.stderr)
    result = report_data(pipe.stats, args.top)
    result["window"] = {"since": summary.iso(pipe.since), "until": summary.iso(pipe.until)}
    lines = pipe.stats.lines
    if lines["ignored"] and not lines["event"] and not lines["unrecognised"]:
        print(
            f"tlslogd report: warning: not one of the {lines['ignored']} lines is a Postfix TLS, "
            "session or delivery line: is this a Postfix mail log?",
            file=sys.stderr,
        )
    if args.format == "json":
        json.dump(result, sys.stdout, indent=1)
        sys.stdout.write("\n")
    elif args.format == "csv":
        write_csv(result, sys.stdout)
    else:
        sys.stdout.write(render_table(result))
    return 0


def _window(value: str | None, end: float | None, flag: str) -> float | None:
    """A --since/--until value; durations count back from ``end`` (the log's last event, or
    now)."""
    if value is None:
        return None
    try:
        return parse_since(value, end if end is not None else time.time(), flag)
    except BadRequest as exc:
        raise ConfigError(str(exc)) from exc


def _advise(args: argparse.Namespace) -> int:
    from tlslogd.advise import Thresholds, advise, render_policy_map, render_table, to_json
    from tlslogd.state import StateError, read_saved

    if args.files:
        files = time_ordered(args.files)
        pipe = _pipeline(files, args.local_networks)
        for name in files:
            for data in read_chunks(name):
                pipe.feed(data)
        pipe.finish()
        stats = pipe.stats
    else:
        path = (args.state_dir or Path("/var/lib/tlslogd")) / "state.db"
        if not path.exists():
            raise ConfigError(f"{path}: no state file (give log files, or --state-dir)")
        try:
            saved = read_saved(path)
        except StateError as exc:
            raise ConfigError(str(exc)) from exc
        stats = Stats(peers=PeerTable(max_peers=10**9), destinations=DestinationTable(10**9))
        if saved is not None:
            stats.restore(saved.stats)
            stats.peers.load(saved.peers)
            stats.destinations.load(saved.destinations)
    end = stats.last_event_ts
    until = _window(args.until, end, "--until")
    since = _window(args.since, until if until is not None else end, "--since")
    if until is None and end is not None:
        until = end + 1
    result = advise(
        stats.destinations,
        stats.peers,
        since=since,
        until=until,
        thresholds=Thresholds(args.min_deliveries, args.min_days),
        evidence=summary.handshake_evidence(stats.totals),
    )
    if args.format == "json":
        sys.stdout.write(to_json(result))
    elif args.format == "table":
        sys.stdout.write(render_table(result))
    else:
        sys.stdout.write(render_policy_map(result))
    return 0


def report_data(stats: Stats, top: int) -> dict[str, Any]:
    lines = stats.lines
    return {
        "lines": {"total": stats.totals["lines"], **lines},
        "period": {
            "first": summary.iso(stats.first_event_ts),
            "last": summary.iso(stats.last_event_ts),
        },
        "adoption": summary.adoption(stats),
        "handshakes": {label: summary.census(stats, label) for label in summary.CENSUS_LABELS},
        "handshake_evidence": summary.handshake_evidence(stats.totals),
        "protocol_failure_peers": summary.protocol_failure_peers(stats),
        "failures": summary.failures(stats),
        "inbound_by_program": summary.by_program(stats),
        "peers": summary.peers(stats, limit=top),
        "totals": dict(stats.totals),
    }


def write_csv(data: dict[str, Any], out: IO[str]) -> None:
    w = csv.writer(out)
    w.writerow(["section", "direction", "name", "count"])
    for key in ("total", "event", "ignored", "unrecognised"):
        w.writerow(["lines", "", key, data["lines"][key]])
    outbound = data["adoption"]["outbound"]
    for tls, n in outbound["sent_remote"].items():
        w.writerow(["deliveries_sent_remote", "outbound", f"tls={tls}", n])
    w.writerow(["offered_plaintext_sent", "outbound", "", outbound["offered_plaintext_sent"]])
    for key in ("sent_local", "deferred", "bounced", "held_by_tls"):
        w.writerow([f"deliveries_{key}", "outbound", "", outbound[key]])
    for starttls, n in data["adoption"]["inbound"]["sessions"].items():
        w.writerow(["sessions", "inbound", f"starttls={starttls}", n])
    for program, sessions in data["inbound_by_program"].items():
        for starttls, n in sessions.items():
            w.writerow(["sessions_by_program", "inbound", f"{program} starttls={starttls}", n])
    for tls, n in data["adoption"]["inbound"]["messages"].items():
        w.writerow(["messages_received", "inbound", f"tls={tls}", n])
    w.writerow(["sessions_local", "inbound", "", data["adoption"]["inbound"]["sessions_local"]])
    w.writerow(["messages_local", "inbound", "", data["adoption"]["inbound"]["messages_local"]])
    for direction, evidence in data["handshake_evidence"].items():
        # logged, not_logged (no summary at all: legacy peers cannot be known) or no_traffic
        n = data["totals"][f"tls_handshakes_{direction}"]
        w.writerow(["handshake_summaries", direction, evidence, n])
    for label, census in data["handshakes"].items():
        for direction, counts in census.items():
            for name, n in counts.items():
                w.writerow([f"handshakes_by_{label}", direction, name, n])
    for direction, reasons in data["failures"].items():
        for reason, n in reasons.items():
            w.writerow(["failures", direction, reason, n])
    for category, rows in data["peers"].items():
        for row in rows:
            w.writerow([f"peers_{category}", "", row["peer"], row["counts"][category]])


def _pct(value: float | None) -> str:
    return "   –  " if value is None else f"{value:5.1f}%"


def _all_local(what: str, peers: str) -> str:
    return (
        f"    {what} in --local-networks; if those are real {peers} (a lab on loopback), "
        "run again with --local-networks ''"
    )


def render_table(data: dict[str, Any]) -> str:
    out: list[str] = []
    add = out.append
    lines = data["lines"]
    period = data["period"]
    window = data.get("window") or {}
    windowed = bool(window.get("since") or window.get("until"))
    if period["first"]:
        counted = f"events from {period['first']} to {period['last']}"
    else:
        counted = "no event" if windowed else "no event with a log time"
    if windowed:
        counted += (
            f" within --since {window.get('since') or '(start)'}"
            f" --until {window.get('until') or '(end)'}"
        )
    add(
        f"tlslogd report: {lines['total']} lines read ({lines['event']} events, "
        f"{lines['unrecognised']} unrecognised); {counted}\n"
    )
    a = data["adoption"]
    o, i = a["outbound"], a["inbound"]
    s = o["sent_remote"]
    sess = i["sessions"]
    msgs = i["messages"]
    add("\nTLS adoption")
    add(
        f"  outbound deliveries sent to remote servers {_pct(o['tls_percent'])} TLS  "
        f"({s['yes']} TLS, {s['no']} plaintext, {s['unknown']} unknown)"
    )
    evidence = data["handshake_evidence"]
    note = summary.unknown_note("outbound", s["unknown"], sum(s.values()), evidence)
    if note:
        add(f"    {note}")
    add(f"    plaintext to servers that offered STARTTLS: {o['offered_plaintext_sent']}")
    add(
        f"    not sent: {o['deferred']} deferred, {o['bounced']} bounced; "
        f"held back by TLS: {o['held_by_tls']}"
        + (" (reasons under Failures by reason)" if o["held_by_tls"] else "")
    )
    add(f"    local (content filters, LMTP): {o['sent_local']}")
    if o["sent_local_networks"] and not sum(s.values()):
        add(_all_local("every delivery went to a relay", "next hops"))
    tls_sessions = sess.get("used", 0) + sess.get("implicit", 0)
    add(
        f"  inbound sessions                            {_pct(i['tls_session_percent'])} TLS  "
        f"({tls_sessions} TLS, {sess.get('not_used', 0)} without STARTTLS, "
        f"{sess.get('failed', 0)} failed, {sess.get('no_ehlo', 0)} without EHLO, "
        f"{sess.get('unknown', 0)} unknown)"
    )
    note = summary.unknown_note("inbound", sess.get("unknown", 0), sum(sess.values()), evidence)
    if note:
        add(f"    {note}")
    by_program = data["inbound_by_program"]
    if len(by_program) > 1:  # port 25 apart from submission and smtps
        for program, counts in by_program.items():
            tls = counts.get("used", 0) + counts.get("implicit", 0)
            rest = ", ".join(
                f"{counts[k]} {label}"
                for k, label in (
                    ("not_used", "without STARTTLS"),
                    ("failed", "failed"),
                    ("no_ehlo", "without EHLO"),
                    ("unknown", "unknown"),
                )
                if counts.get(k)
            )
            add(f"    {program + ':':<40} {tls} TLS" + (f", {rest}" if rest else ""))
    add(
        f"  inbound messages                            {_pct(i['tls_message_percent'])} TLS  "
        f"({msgs.get('yes', 0)} TLS, {msgs.get('no', 0)} plaintext, "
        f"{msgs.get('unknown', 0)} unknown)"
    )
    not_received = data["totals"]["messages_not_received"]
    if not_received:
        add(
            f"    not received after all: {not_received} queue ID{'' if not_received == 1 else 's'}"
            " (refused or discarded at the end of DATA, or their DATA never came or completed)"
        )
    add(
        f"    local clients (content filters, applications): sessions {i['sessions_local']}, "
        f"messages {i['messages_local']}"
    )
    if i["sessions_local"] and not sum(sess.values()):
        add(_all_local("every session came from a client", "clients"))
    for label, title in (
        ("protocol", "Protocols"),
        ("cipher", "Ciphers"),
        ("trust", "Trust"),
        ("key_exchange", "Key exchange"),
    ):
        census = data["handshakes"][label]
        names = sorted(
            set(census["inbound"]) | set(census["outbound"]),
            # most used first; ties by name, so that the same log gives the same table
            key=lambda n: (-(census["inbound"].get(n, 0) + census["outbound"].get(n, 0)), n),
        )
        add(f"\n{title:<40} {'inbound':>9} {'outbound':>9}")
        for name in names or ["(none)"]:
            add(
                f"  {name:<38} {census['inbound'].get(name, 0):>9} "
                f"{census['outbound'].get(name, 0):>9}"
            )
    add(f"\n{'Failures by reason':<40} {'inbound':>9} {'outbound':>9}")
    f = data["failures"]
    reasons = sorted(set(f["inbound"]) | set(f["outbound"]))
    for reason in reasons or ["(none)"]:
        add(f"  {reason:<38} {f['inbound'].get(reason, 0):>9} {f['outbound'].get(reason, 0):>9}")
    titles = {
        "plaintext_out": "Plaintext deliveries by peer",
        "offered_not_used": "Servers that offered STARTTLS which was not used",
        "legacy_protocol": "Peers on TLSv1/TLSv1.1/SSLv3 (who breaks if you disable them)",
        "inbound_no_starttls": "Clients that never used STARTTLS",
        "tls_failure": "Peers with TLS failures",
    }
    for category in CATEGORIES:
        rows = data["peers"][category]
        add(f"\n{titles[category]}")
        evidence = data["handshake_evidence"]
        said = []
        if category == "legacy_protocol":
            said = summary.legacy_unknown(evidence) if rows else summary.legacy_verdict(evidence)
            if n := data["protocol_failure_peers"]:
                said = [
                    *said,
                    f"{n} peer{'' if n == 1 else 's'} failed TLS on the protocol version: the "
                    "current settings may already refuse what they need (Peers with TLS "
                    "failures, reason protocol)",
                ]
        for sentence in said or ([] if rows else ["none"]):
            add(f"  {sentence}")
        if not rows:
            continue
        add(f"  {'peer':<40} {'domain':<24} {'events':>7}  last seen")
        for row in rows:
            extra = ""
            if category == "legacy_protocol":
                extra = "  " + ", ".join(f"{p}×{n}" for p, n in row["legacy_protocols"].items())
                extra += "".join(f" ({d})" for d in sorted(row["legacy_directions"]))
            elif category == "tls_failure":
                extra = "  " + ", ".join(f"{r}×{n}" for r, n in row["failure_reasons"].items())
            seen = summary.iso(row_seen(row, category)) or "–"
            add(
                f"  {row['peer'][:40]:<40} {(row['domain'] or '')[:24]:<24} "
                f"{row['counts'][category]:>7}  {seen}{extra}"
            )
    return "\n".join(out) + "\n"
