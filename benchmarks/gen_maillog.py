#!/usr/bin/env python3
"""Deterministic generator of large, realistic Postfix maillogs, with their ground truth.

The log is that of a Debian mail exchanger, ``mx1.example.org`` (192.0.2.25, 2001:db8::25):
postscreen in front of smtpd on port 25, submission (587, STARTTLS + SASL) and smtps (465, wrapper
mode), a content filter on 127.0.0.1:10024 (``postfix/amavis/smtp`` and the re-injection smtpd),
dovecot LMTP and IMAP, local delivery, pickup (cron, a web application, newsletters, vacation
replies), outbound smtp with STARTTLS, plaintext, connection caching and TLS connection reuse
through tlsproxy, deferrals, bounces, TLS failures in both directions and the usual noise (anvil,
scache, dnsblog, scanners, SASL brute force).

How it works: a small discrete-event simulation. Every session (an SMTP connection, a delivery, a
dovecot login, ...) is a Python generator that yields ``(delay_us, line, stat)``; a heap orders the
pending lines of all sessions by log time, so sessions interleave as they would in a real log
while each keeps its process id, queue IDs and peer. Server processes come from pools with
Postfix's ``max_use``/``max_idle`` behaviour, so pids are reused across sessions and replaced over
time. The output stops after exactly ``--lines`` lines.

Ground truth (``--stats FILE``) is accumulated from the lines actually written: each line carries
what it means (``stat``), and a session cut off by the line limit only counts the lines it got.
See ``benchmarks/README.md`` for every field.

Determinism: only ``random.Random(seed)`` with integer arithmetic on its output, an exponential
table rounded to integers, no wall clock, no iteration over sets; the same arguments give the same
bytes on any CPython 3.11+.

    python3 benchmarks/gen_maillog.py --lines 1000000 --seed 1 --stats truth.json > maillog
"""

from __future__ import annotations

import argparse
import base64
import bisect
import contextlib
import datetime as dt
import heapq
import ipaddress
import json
import math
import random
import sys
from collections.abc import Callable, Generator, Iterator
from typing import Any, TextIO

MX_NAME = "mx1"
MX_FQDN = "mx1.example.org"
MX_V4 = "192.0.2.25"
MX_V6 = "2001:db8::25"
LOCAL_DOMAINS = frozenset({"example.org", "lists.example.org", "mx1.example.org"})
HOSTILE_ZONES = ("bulk-sender.example.com", "dyn-pool.example.net", "mx-farm.example.org")
DEFAULT_START = "2025-11-05T09:00:00"

_DOC_V6 = 0x20010DB8 << 96  # 2001:db8::/32
SEC = 1_000_000
MS = 1_000

# -- small deterministic utilities ----------------------------------------------------------------

# Quantiles of the unit exponential distribution in thousandths, rounded to integers so that no
# libm difference can change a draw.
_EXP_MILLI = tuple(round(-math.log((i + 0.5) / 1024) * 1000) for i in range(1024))

# Relative traffic by hour of day (local time of the log).
_DIURNAL = (
    0.35, 0.30, 0.28, 0.28, 0.30, 0.40, 0.60, 0.85, 1.10, 1.25, 1.30, 1.30,
    1.20, 1.25, 1.30, 1.25, 1.15, 1.00, 0.85, 0.75, 0.65, 0.55, 0.48, 0.40,
)  # fmt: skip

_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")

_B36 = "0123456789abcdefghijklmnopqrstuvwxyz"


def base36(n: int) -> str:
    out = ""
    while True:
        n, r = divmod(n, 36)
        out = _B36[r] + out
        if not n:
            return out


class Table:
    """A weighted choice over fixed values, driven by ``rng.random``."""

    __slots__ = ("_cum", "_random", "_total", "_values")

    def __init__(self, rng: random.Random, pairs: list[tuple[float, Any]]) -> None:
        self._random = rng.random
        total = 0.0
        cum = []
        for weight, _ in pairs:
            total += weight
            cum.append(total)
        self._cum = cum
        self._total = total
        self._values = [value for _, value in pairs]

    def __call__(self) -> Any:
        return self._values[bisect.bisect_right(self._cum, self._random() * self._total)]


def fmt_delay(us: int) -> str:
    """Postfix's delay notation: two significant digits, 10 ms resolution, no trailing zeros."""
    cs = (us + 5_000) // 10_000
    if cs <= 0:
        return "0"
    if cs < 100:
        return f"0.{cs:02d}".rstrip("0")
    if cs < 1_000:
        ds = (cs + 5) // 10
        return str(ds // 10) if ds % 10 == 0 else f"{ds // 10}.{ds % 10}"
    secs = (cs + 50) // 100
    if secs >= 100:
        digits = len(str(secs)) - 2
        secs = (secs + 5 * 10 ** (digits - 1)) // 10**digits * 10**digits
    return str(secs)


# Postfix's order of the per-command counters in ``disconnect from`` (smtpd_format_cmd_stats).
_CMD_ORDER = (
    "helo", "ehlo", "xclient", "xforward", "starttls", "auth", "mail", "rcpt", "data",
    "bdat", "rset", "noop", "vrfy", "etrn", "quit", "help", "unknown",
)  # fmt: skip


class Commands(dict[str, list[int]]):
    """SMTP command counters of one smtpd session: name -> [succeeded, attempted]."""

    def hit(self, name: str, ok: bool = True) -> None:
        pair = self.get(name)
        if pair is None:
            pair = self[name] = [0, 0]
        pair[1] += 1
        if ok:
            pair[0] += 1

    def text(self) -> str:
        parts = []
        good = total = 0
        for name in _CMD_ORDER:
            pair = self.get(name)
            if pair is None:
                continue
            ok, tried = pair
            parts.append(f"{name}={ok}" if ok == tried else f"{name}={ok}/{tried}")
            good += ok
            total += tried
        parts.append(f"commands={good}" if good == total and total else f"commands={good}/{total}")
        return " ".join(parts)

    def outcome(self, wrapper: bool, wrapper_tls: bool) -> str:
        if wrapper:
            return "implicit" if wrapper_tls else "failed"
        starttls = self.get("starttls")
        if starttls is not None:
            return "used" if starttls[0] else "failed"
        ehlo = self.get("ehlo")
        return "not_used" if ehlo is not None and ehlo[0] else "no_ehlo"


# -- timestamps -----------------------------------------------------------------------------------


class Stamper:
    """Syslog headers (``<timestamp> mx1 ``) for log times in microseconds since ``start``."""

    def __init__(self, mode: str, start: dt.datetime) -> None:
        self.mode = mode
        self.start = start.replace(tzinfo=None)
        offset = start.utcoffset() or dt.timedelta(0)
        minutes = int(offset.total_seconds()) // 60
        sign = "+" if minutes >= 0 else "-"
        self.zone = f"{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"
        self._second = -1
        self._prefix = ""
        self.header: Callable[[int], str] = self._rfc3339 if mode == "rfc3339" else self._classic

    def wall(self, us: int) -> dt.datetime:
        return self.start + dt.timedelta(microseconds=us)

    def classic(self, us: int, zero_pad: bool = False) -> str:
        t = self.wall(us)
        day = f"{t.day:02d}" if zero_pad else f"{t.day:2d}"
        return f"{_MONTHS[t.month - 1]} {day} {t.hour:02d}:{t.minute:02d}:{t.second:02d}"

    def _classic(self, us: int) -> str:
        second = us // SEC
        if second != self._second:
            self._second = second
            self._prefix = f"{self.classic(us, self.mode == 'postlog')} {MX_NAME} "
        return self._prefix

    def _rfc3339(self, us: int) -> str:
        second = us // SEC
        if second != self._second:
            self._second = second
            t = self.wall(second * SEC)
            self._prefix = t.strftime("%Y-%m-%dT%H:%M:%S")
        return f"{self._prefix}.{us % SEC:06d}{self.zone} {MX_NAME} "


# -- ground truth ---------------------------------------------------------------------------------

LEGACY = ("TLSv1", "TLSv1.1")


def _bump(table: dict[Any, int], key: Any, n: int = 1) -> None:
    table[key] = table.get(key, 0) + n


class Truth:
    """What a correct tool must report about the lines written so far."""

    def __init__(self) -> None:
        self.lines = 0
        self.programs: dict[str, int] = {}
        self.summaries: dict[tuple[str, str, str], int] = {}
        self.sni = 0
        self.handshakes: dict[tuple[str, str, str, str, str], int] = {}
        self.offers: dict[str, int] = {}
        self.deliveries: dict[tuple[str, str, str, str], int] = {}
        self.plaintext: dict[str, int] = {}
        self.conn_use: dict[str, int] = {}
        self.sessions: dict[tuple[str, str], int] = {}
        self.failures: dict[tuple[str, str], int] = {}
        self.failure_lines: dict[str, int] = {}
        self.legacy: dict[tuple[str, str], int] = {}
        self.hostile: set[int] = set()
        self.add: dict[str, Callable[..., None]] = {
            "tls": self._tls,
            "offer": self._offer,
            "dlv": self._delivery,
            "sess": self._session,
            "fail": self._failure,
            "fline": self._failure_line,
            "hostile": self.hostile.add,
            "multi": self._multi,
        }

    def _multi(self, *stats: tuple[Any, ...]) -> None:
        add = self.add
        for stat in stats:
            add[stat[0]](*stat[1:])

    def _tls(
        self,
        program: str,
        direction: str,
        state: str,
        counted: bool,
        protocol: str,
        trust: str,
        cipher: str,
        peer: str,
        sni: bool = False,
    ) -> None:
        _bump(self.summaries, (program, state, protocol))
        if sni:
            self.sni += 1
        if counted:
            _bump(self.handshakes, (direction, program, protocol, trust, cipher))
            if protocol in LEGACY:
                _bump(self.legacy, (direction, peer))

    def _offer(self, host: str) -> None:
        _bump(self.offers, host)

    def _delivery(
        self, program: str, status: str, tls: str, kind: str, peer: str | None, cache: str | None
    ) -> None:
        _bump(self.deliveries, (program, status, tls, kind))
        if peer is not None:
            _bump(self.plaintext, peer)
        if cache is not None:
            _bump(self.conn_use, cache)

    def _session(self, program: str, outcome: str) -> None:
        _bump(self.sessions, (program, outcome))

    def _failure(self, direction: str, kind: str, line_kind: str | None) -> None:
        _bump(self.failures, (direction, kind))
        if line_kind is not None:
            _bump(self.failure_lines, line_kind)

    def _failure_line(self, line_kind: str) -> None:
        _bump(self.failure_lines, line_kind)

    def report(self, meta: dict[str, Any]) -> dict[str, Any]:
        def group(table: dict[Any, int], *index: int) -> dict[str, int]:
            out: dict[str, int] = {}
            for key, n in table.items():
                _bump(out, "/".join(key[i] for i in index) if len(index) > 1 else key[index[0]], n)
            return dict(sorted(out.items()))

        def nested(table: dict[Any, int], outer: int, inner: int) -> dict[str, dict[str, int]]:
            out: dict[str, dict[str, int]] = {}
            for key, n in table.items():
                _bump(out.setdefault(key[outer], {}), key[inner], n)
            return {k: dict(sorted(v.items())) for k, v in sorted(out.items())}

        hs = self.handshakes
        by_service: dict[str, int] = {}
        for key, n in hs.items():
            _bump(by_service, key[1].rsplit("/", 1)[1], n)
        dlv = self.deliveries
        remote = {k: n for k, n in dlv.items() if k[3] == "remote"}
        legacy = nested({(d, p): n for (d, p), n in self.legacy.items()}, 0, 1)
        return {
            "generator": meta,
            "lines": {"total": self.lines, "by_program": dict(sorted(self.programs.items()))},
            "tls": {
                "summary_lines": {
                    "total": sum(self.summaries.values()),
                    "by_program": group(self.summaries, 0),
                    "by_state": group(self.summaries, 1),
                    "by_protocol": group(self.summaries, 2),
                    "with_sni": self.sni,
                },
                "handshakes": {
                    "total": sum(hs.values()),
                    "by_direction": group(hs, 0),
                    "by_program": group(hs, 1),
                    "by_service": dict(sorted(by_service.items())),
                    "by_protocol": group(hs, 2),
                    "by_trust": group(hs, 3),
                    "by_cipher": group(hs, 4),
                    "by_direction_protocol": nested(hs, 0, 2),
                    "by_direction_trust": nested(hs, 0, 3),
                },
            },
            "starttls_offered": {
                "lines": sum(self.offers.values()),
                "peers": dict(sorted(self.offers.items())),
            },
            "deliveries": {
                "total": sum(dlv.values()),
                "by_status": group(dlv, 1),
                "by_program": group(dlv, 0),
                "by_kind": group(dlv, 3),
                "by_tls": group(dlv, 2),
                "by_status_tls": nested(dlv, 1, 2),
                "by_kind_tls": nested(dlv, 3, 2),
                "remote": {
                    "total": sum(remote.values()),
                    "by_tls": group(remote, 2),
                    "by_status_tls": nested(remote, 1, 2),
                },
                "conn_use": dict(sorted(self.conn_use.items())),
                "plaintext_by_peer": dict(sorted(self.plaintext.items())),
            },
            "sessions": {
                "total": sum(self.sessions.values()),
                "by_outcome": group(self.sessions, 1),
                "by_program": nested(self.sessions, 0, 1),
            },
            "failures": {
                "total": sum(self.failures.values()),
                "by_direction": nested(self.failures, 0, 1),
                "lines": dict(sorted(self.failure_lines.items())),
            },
            "legacy_protocol_peers": legacy,
            "hostile_peers": {"requested": meta["hostile_peers"], "seen": len(self.hostile)},
        }


# -- the simulation core --------------------------------------------------------------------------

Item = tuple[int, str | None, tuple[Any, ...] | None]
Session = Iterator[Item]
Step = Generator[Item, None, Any]  # a part of a session, used with ``yield from``; returns a value


class Sim:
    """Orders the lines of all sessions by log time and writes exactly ``limit`` of them."""

    def __init__(
        self, stamper: Stamper, truth: Truth, out: TextIO, limit: int, postfix_only: bool
    ) -> None:
        self.stamper = stamper
        self.truth = truth
        self.out = out
        self.limit = limit
        self.postfix_only = postfix_only
        self.now = 0
        self.heap: list[tuple[int, int, Session, str | None, tuple[Any, ...] | None]] = []
        self.seq = 0
        self.trigger: tuple[int, int, Callable[[], None]] = (1, 0, lambda: None)

    def spawn(self, session: Session, delay: int = 0) -> None:
        """Start a session now (+ ``delay``): its first line is due after its first delay."""
        try:
            wait, line, stat = next(session)
        except StopIteration:
            return
        self.seq += 1
        heapq.heappush(self.heap, (self.now + delay + wait, self.seq, session, line, stat))

    def every(self, lines: int, times: int, action: Callable[[], None]) -> None:
        """Run ``action`` after the first line and then every ``lines`` lines, ``times`` times."""
        self.trigger = (lines, times, action)

    def run(self) -> None:
        heap = self.heap
        pop = heapq.heappop
        push = heapq.heappush
        header = self.stamper.header
        truth = self.truth
        handlers = truth.add
        programs = truth.programs
        limit = self.limit
        postfix_only = self.postfix_only
        step, times, action = self.trigger
        next_trigger = 1 if times else limit + 1
        buf: list[str] = []
        written = 0
        while written < limit and heap:
            t, _, session, line, stat = pop(heap)
            self.now = t
            if line is not None and not (postfix_only and not line.startswith("postfix/")):
                buf.append(header(t) + line + "\n")
                written += 1
                program = line[: line.find("[")]
                programs[program] = programs.get(program, 0) + 1
                if stat is not None:
                    handlers[stat[0]](*stat[1:])
                if written == next_trigger:
                    action()
                    times -= 1
                    next_trigger = written + step if times else limit + 1
                if len(buf) >= 8192:
                    self.out.write("".join(buf))
                    buf.clear()
            try:
                wait, line, stat = next(session)
            except StopIteration:
                continue
            self.seq += 1
            push(heap, (t + wait, self.seq, session, line, stat))
        self.out.write("".join(buf))
        truth.lines = written


class Proc:
    __slots__ = ("idle_since", "pid", "tag", "uses")

    def __init__(self, name: str, pid: int) -> None:
        self.pid = pid
        self.tag = f"{name}[{pid}]"
        self.uses = 0
        self.idle_since = 0


class Pool:
    """Postfix server processes of one master.cf service: reused until max_use or max_idle."""

    def __init__(self, mx: Mx, name: str, max_use: int = 100, max_idle: int = 100 * SEC) -> None:
        self.mx = mx
        self.name = name
        self.max_use = max_use
        self.max_idle = max_idle
        self.idle: list[Proc] = []

    def acquire(self) -> Proc:
        idle = self.idle
        now = self.mx.sim.now
        expired = 0
        while expired < len(idle) and now - idle[expired].idle_since > self.max_idle:
            expired += 1
        if expired:
            del idle[:expired]
        if idle:
            return idle.pop()
        return Proc(self.name, self.mx.new_pid())

    def release(self, proc: Proc) -> None:
        proc.uses += 1
        if proc.uses < self.max_use:
            proc.idle_since = self.mx.sim.now
            self.idle.append(proc)


# -- peers ----------------------------------------------------------------------------------------

_WORDS = (
    "acme", "alder", "amber", "anchor", "apex", "arbor", "aster", "atlas", "aurora", "basalt",
    "beacon", "birch", "blue", "boreal", "bright", "brook", "cedar", "cobalt", "comet", "coral",
    "crest", "delta", "ember", "falcon", "fern", "fjord", "forge", "garnet", "glacier", "granite",
    "harbor", "hazel", "heron", "indigo", "iron", "juniper", "kestrel", "lagoon", "larch", "lumen",
    "maple", "marble", "meadow", "mesa", "north", "nova", "oak", "onyx", "orbit", "osprey",
    "pine", "pioneer", "prairie", "quartz", "raven", "ridge", "river", "rowan", "sable", "sage",
    "sierra", "silver", "slate", "solar", "spruce", "summit", "tern", "terra", "tidal", "timber",
    "topaz", "tundra", "valley", "vertex", "willow", "zenith", "zephyr", "lotus", "cinder", "flint",
)  # fmt: skip
_FIRST = (
    "alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi", "ivan", "judy", "mallory",
    "niaj", "olivia", "peggy", "rupert", "sybil", "trent", "victor", "walter", "wendy", "yara",
    "zoe", "anna", "ben", "chen", "dana", "eli", "fatima", "gus", "hana", "igor", "jonas", "kim",
    "lena", "marco", "nora", "omar", "paula", "quinn", "rosa", "sam", "tara", "uma", "vera",
)  # fmt: skip
_TLDS = ("com", "net", "org")


class Client:
    """An SMTP client of mx1 (an MTA, a bot, a submission user) with a stable identity."""

    __slots__ = (
        "addr", "broken", "cert", "cipher", "domain", "helo", "hostile", "kind", "name", "peer",
        "proto", "ptr", "resume", "sig", "starttls", "user", "v6",
    )  # fmt: skip

    def __init__(self, kind: str, addr: str, name: str | None, domain: str) -> None:
        self.kind = kind
        self.addr = addr
        self.v6 = ":" in addr
        self.name = name
        self.peer = f"{name or 'unknown'}[{addr}]"
        self.ptr: str | None = None
        self.domain = domain
        self.helo = name or f"[{addr}]"
        self.starttls = True
        self.broken = 0.0
        self.proto = "TLSv1.3"
        self.cipher: tuple[str, int, int] = ("TLS_AES_256_GCM_SHA384", 256, 256)
        self.sig = "rsa2048"
        self.cert: str | None = None
        self.resume = 0.0
        self.user: str | None = None
        self.hostile: int | None = None


class Server:
    """A remote MX host as seen by our smtp client."""

    __slots__ = (
        "addr", "cipher", "failure", "greylist", "host", "mode", "name", "peer", "proto", "reuse",
        "sig", "trust",
    )  # fmt: skip

    def __init__(self, name: str, addr: str, mode: str) -> None:
        self.name = name
        self.addr = addr
        self.host = f"{name}[{addr}]"
        self.peer = f"{self.host}:25"
        self.mode = mode
        self.failure = "handshake"
        self.greylist = False
        self.reuse = False
        self.trust = "Trusted"
        self.proto = "TLSv1.3"
        self.cipher: tuple[str, int, int] = ("TLS_AES_256_GCM_SHA384", 256, 256)
        self.sig = "rsa2048"


class Domain:
    __slots__ = ("bounce", "mxs", "name")

    def __init__(self, name: str, mxs: list[Server], bounce: float) -> None:
        self.name = name
        self.mxs = mxs
        self.bounce = bounce


class Msg:
    """A queued message: its queue ID and how many recipient groups are still undelivered."""

    __slots__ = ("born", "msgid", "nrcpt", "pending", "qid", "sender", "size")

    def __init__(self, born: int, qid: str, sender: str, size: int, msgid: str, nrcpt: int) -> None:
        self.born = born
        self.qid = qid
        self.sender = sender
        self.size = size
        self.msgid = msgid
        self.nrcpt = nrcpt
        self.pending = 0


class Conn:
    """A cached outbound connection (scache, or a TLS connection held by tlsproxy)."""

    __slots__ = ("busy", "expires", "server", "summary", "uses")

    def __init__(self, server: Server, expires: int, summary: str | None) -> None:
        self.server = server
        self.summary = summary  # the TLS summary of the handshake, None for plaintext
        self.uses = 1
        self.expires = expires
        self.busy = False


# -- TLS summary text -----------------------------------------------------------------------------

_C13 = (
    (75, ("TLS_AES_256_GCM_SHA384", 256, 256)),
    (15, ("TLS_AES_128_GCM_SHA256", 128, 128)),
    (10, ("TLS_CHACHA20_POLY1305_SHA256", 256, 256)),
)
_C12 = (
    (45, ("ECDHE-RSA-AES256-GCM-SHA384", 256, 256)),
    (20, ("ECDHE-RSA-AES128-GCM-SHA256", 128, 128)),
    (12, ("ECDHE-ECDSA-AES256-GCM-SHA384", 256, 256)),
    (10, ("ECDHE-RSA-CHACHA20-POLY1305", 256, 256)),
    (8, ("DHE-RSA-AES256-GCM-SHA384", 256, 256)),
    (5, ("AES256-GCM-SHA384", 256, 256)),
)
_C12_ANON = ((70, ("ADH-AES256-GCM-SHA384", 256, 256)), (30, ("AECDH-AES256-SHA", 256, 256)))
_CLEGACY = (
    (40, ("ECDHE-RSA-AES256-SHA", 256, 256)),
    (20, ("DHE-RSA-AES256-SHA", 256, 256)),
    (20, ("AES256-SHA", 256, 256)),
    (12, ("ECDHE-RSA-AES128-SHA", 128, 128)),
    (8, ("DES-CBC3-SHA", 112, 168)),
)
# Summary shapes: Postfix < 3.4 (no suffixes), 3.4-3.6 with OpenSSL 1.1.1 (P-256), 3.7-3.9 with
# OpenSSL 3 (prime256v1), 3.10+ with OpenSSL 3.5 (negotiated group names, lower case).
_STYLES = ((12, "3.3"), (18, "3.4"), (35, "3.7"), (35, "3.10"))
_KX = {
    "3.4": ((80, "X25519"), (15, "ECDHE (P-256)"), (3, "X448"), (2, "DHE (2048 bits)")),
    "3.7": ((80, "X25519"), (18, "ECDHE (prime256v1)"), (2, "DHE (2048 bits)")),
    "3.10": ((55, "x25519"), (35, "X25519MLKEM768"), (8, "secp256r1"), (2, "ffdhe2048")),
}


class TlsText:
    def __init__(self, rng: random.Random) -> None:
        self.random = rng.random
        self.style = Table(rng, list(_STYLES))
        self.kx = {k: Table(rng, list(v)) for k, v in _KX.items()}
        self.c13 = Table(rng, list(_C13))
        self.c12 = Table(rng, list(_C12))
        self.c12_anon = Table(rng, list(_C12_ANON))
        self.clegacy = Table(rng, list(_CLEGACY))

    def cipher(self, proto: str, anonymous: bool = False) -> tuple[str, int, int]:
        if proto == "TLSv1.3":
            table = self.c13
        elif proto == "TLSv1.2":
            table = self.c12_anon if anonymous else self.c12
        else:
            table = self.clegacy
        chosen: tuple[str, int, int] = table()
        return chosen

    @staticmethod
    def _sig(style: str, sig: str) -> str:
        if sig == "ecdsa":
            return "ECDSA (P-256)" if style == "3.4" else "ECDSA (prime256v1)"
        if sig == "ed25519":
            return "ED25519"
        return "RSA-PSS (4096 bits)" if sig == "rsa4096" else "RSA-PSS (2048 bits)"

    def line(
        self,
        trust: str,
        state: str,
        way: str,
        peer: str,
        proto: str,
        cipher: tuple[str, int, int],
        server_sig: str,
        client_sig: str | None = None,
        resumed: bool = False,
        sni: str | None = None,
        modern: bool = False,
    ) -> str:
        """One summary line; ``modern`` when only Postfix 3.4+ can log it (tlsproxy reuse)."""
        name, bits, alg = cipher
        text = f"{trust} TLS connection {state} {way} {peer}"
        style = self.style() if proto == "TLSv1.3" else "3.3"
        if (modern or sni) and style == "3.3":
            style = "3.7"
        if sni:
            text += f" to {sni}"
        text += f": {proto} with cipher {name} ({bits}/{alg} bits)"
        if proto != "TLSv1.3" or style == "3.3":
            return text
        text += f" key-exchange {self.kx[style]()}"
        if resumed:
            if style == "3.7" and self.random() < 0.5:
                text += f" server-signature {self._sig(style, server_sig)}"
            return text
        text += f" server-signature {self._sig(style, server_sig)}"
        if server_sig != "ed25519":
            text += " server-digest SHA256"
        if client_sig:
            text += f" client-signature {self._sig(style, client_sig)} client-digest SHA256"
        return text


# OpenSSL error strings of failed handshakes, by failure kind: (OpenSSL 3, OpenSSL 1.1.1).
_ACCEPT_LIB = {
    "protocol": (
        "error:0A000102:SSL routines::unsupported protocol:../ssl/statem/statem_srvr.c:1657:",
        "error:1417A102:SSL routines:tls_process_client_hello:unsupported protocol"
        ":../ssl/statem/statem_srvr.c:1661:",
    ),
    "cipher": (
        "error:0A0000C1:SSL routines::no shared cipher:../ssl/statem/statem_srvr.c:2220:",
        "error:1417A0C1:SSL routines:tls_post_process_client_hello:no shared cipher"
        ":../ssl/statem/statem_srvr.c:2283:",
    ),
    "handshake": (
        "error:0A00010B:SSL routines::wrong version number:../ssl/record/ssl3_record.c:354:",
        "error:1408F10B:SSL routines:ssl3_get_record:wrong version number"
        ":../ssl/record/ssl3_record.c:331:",
    ),
}
_CONNECT_LIB = {
    "protocol": "error:0A00042E:SSL routines::tlsv1 alert protocol version"
    ":../ssl/record/rec_layer_s3.c:1605:SSL alert number 70:",
    "handshake": "error:0A000410:SSL routines::sslv3 alert handshake failure"
    ":../ssl/record/rec_layer_s3.c:1605:SSL alert number 40:",
}


# -- the mail exchanger ---------------------------------------------------------------------------


class Mx:
    """The model: peers, process pools, and one generator per kind of session."""

    def __init__(self, sim: Sim, rng: random.Random, start: dt.datetime, hostile: int) -> None:
        self.sim = sim
        self.rng = rng
        self.random = rng.random
        self.randrange = rng.randrange
        self.getrandbits = rng.getrandbits
        self.start_hour_us = (start.hour * 3600 + start.minute * 60 + start.second) * SEC
        self.pid = 1100 + rng.randrange(400)
        self.inode = 0x1A2B3C + rng.randrange(0x100000)
        self.tls = TlsText(rng)
        self.pools = {
            name: Pool(self, name, *args)
            for name, *args in (
                ("postfix/smtpd",),
                ("postfix/submission/smtpd",),
                ("postfix/smtps/smtpd",),
                ("postfix/cleanup",),
                ("postfix/smtp",),
                ("postfix/lmtp",),
                ("postfix/local",),
                ("postfix/bounce",),
                ("postfix/dnsblog",),
                ("postfix/amavis/smtp",),
                ("postfix/pickup", 100, 3600 * SEC),
            )
        }
        # The re-injection smtpd behind the content filter is its own master.cf service.
        self.reinject = Pool(self, "postfix/smtpd")
        self.qmgr = f"postfix/qmgr[{self.new_pid()}]"
        self.anvil = f"postfix/anvil[{self.new_pid()}]"
        self.scache = f"postfix/scache[{self.new_pid()}]"
        self.postscreen = f"postfix/postscreen[{self.new_pid()}]"
        self.tlsproxy = f"postfix/tlsproxy[{self.new_pid()}]"
        self.dovecot = f"dovecot[{self.new_pid()}]"
        self.amavis_pid = self.new_pid()
        self.amavis_seq = 0
        self.postscreen_cache: set[str] = set()
        self.anvil_max: dict[str, int] = {}
        self.scache_stats = [0, 0]
        self.cache: dict[str, Conn] = {}
        self.counter = 0
        self._build_peers()
        self.hostile_next = 0
        if hostile:
            sim.every(max(1, int(sim.limit * 0.8) // hostile), hostile, self._spawn_hostile)

    # -- identities ----------------------------------------------------------------------------

    def new_pid(self) -> int:
        self.pid += 1 + self.getrandbits(4) + (self.getrandbits(6) if self.random() < 0.2 else 0)
        return self.pid

    def qid(self) -> str:
        self.inode += 1 + self.getrandbits(3)
        return f"{self.sim.now % SEC:05X}{self.inode:X}"

    def msgid(self, domain: str) -> str:
        self.counter += 1
        t = self.sim.now
        r = self.random()
        if r < 0.4:
            return f"<{t // SEC + 1_762_300_000}.{self.counter}.{self.getrandbits(24):x}@{domain}>"
        if r < 0.7:
            b = self.b64(16)
            return f"<CA+{b}@mail.{domain}>"
        return f"<{self.getrandbits(64):016x}{self.getrandbits(32):08x}@{domain}>"

    def b64(self, nbytes: int) -> str:
        """Random base64 text of the kind dovecot and mail clients put into session IDs."""
        raw = self.getrandbits(8 * nbytes).to_bytes(nbytes, "big")
        return base64.b64encode(raw, b"+_").decode("ascii").rstrip("=")

    def wait(self, lo_ms: int, hi_ms: int) -> int:
        """A uniform delay in microseconds between ``lo_ms`` and ``hi_ms`` milliseconds."""
        return lo_ms * MS + (self.getrandbits(32) * (hi_ms - lo_ms) * MS >> 32)

    def expo(self, mean_us: float) -> int:
        return int(mean_us * _EXP_MILLI[self.getrandbits(10)] / 1000) + 1

    def arrival(self, per_second: float) -> int:
        hour = ((self.start_hour_us + self.sim.now) // (3600 * SEC)) % 24
        return self.expo(SEC / (per_second * _DIURNAL[hour]))

    def clock(self) -> str:
        """The ``Nov  5 09:03:07`` text that anvil and scache put into their messages."""
        return self.sim.stamper.classic(self.sim.now)

    def _unique(self, seen: set[str], make: Callable[[], str]) -> str:
        while True:
            name = make()
            if name not in seen:
                seen.add(name)
                return name

    def _domain_name(self) -> str:
        w = _WORDS
        r = self.random()
        if r < 0.45:
            base = f"{w[self.randrange(len(w))]}{w[self.randrange(len(w))]}"
        elif r < 0.75:
            base = f"{w[self.randrange(len(w))]}-{w[self.randrange(len(w))]}"
        else:
            base = f"{w[self.randrange(len(w))]}{self.randrange(2, 99)}"
        return f"{base}.example.{_TLDS[self.randrange(3)]}"

    def _v6(self, prefix: int) -> str:
        """An address in 2001:db8:<prefix>::/48, in the canonical text form Postfix logs."""
        host = (prefix << 80) | (self.getrandbits(12) << 64) | (self.getrandbits(8) + 1)
        return str(ipaddress.IPv6Address(_DOC_V6 | host))

    def _build_peers(self) -> None:
        rng = self.rng
        seen: set[str] = set()
        tls = self.tls
        # Remote MX hosts: big providers, hosting clusters, and single-domain servers.
        mode = Table(
            rng,
            [
                (82.0, "tls"),
                (6.0, "plain"),
                (4.5, "offered"),
                (1.6, "broken"),
                (0.6, "verify"),
                (0.3, "required"),
                (1.5, "timeout"),
            ],
        )
        trust = Table(rng, [(50, "Trusted"), (32, "Untrusted"), (15, "Verified"), (3, "Anonymous")])
        proto = Table(rng, [(72, "TLSv1.3"), (25.5, "TLSv1.2"), (0.8, "TLSv1.1"), (1.7, "TLSv1")])
        sig = Table(rng, [(60, "rsa2048"), (15, "rsa4096"), (22, "ecdsa"), (3, "ed25519")])
        v4_pool = [f"192.0.2.{i}" for i in range(1, 255) if i != 25]
        v4_pool += [f"198.51.100.{i}" for i in range(200, 255)]

        def server(name: str, kind: str | None = None) -> Server:
            if self.random() < 0.12:
                addr = self._v6(0x500 + self.getrandbits(8))
            else:
                addr = v4_pool[self.randrange(len(v4_pool))]
            s = Server(name, addr, kind or mode())
            s.trust = trust()
            s.proto = proto()
            if s.trust == "Anonymous" and s.proto == "TLSv1.3":
                s.proto = "TLSv1.2"
            s.cipher = tls.cipher(s.proto, s.trust == "Anonymous")
            s.sig = sig()
            s.greylist = self.random() < 0.05
            if s.mode == "broken":
                s.failure = ("handshake", "protocol", "lost_connection")[self.randrange(3)]
            return s

        domains: list[tuple[float, Domain]] = []
        for i in range(10):
            dom = self._unique(seen, self._domain_name)
            mxs = [server(f"mx{j}.{dom}", "tls") for j in range(1, 4)]
            for s in mxs:
                s.trust = "Verified" if i < 3 else "Trusted"
                s.proto = "TLSv1.3"
                s.cipher = tls.cipher("TLSv1.3")
                s.greylist = False
                s.reuse = i in (0, 1, 4)
            domains.append((60.0 / (i + 1), Domain(dom, mxs, 0.01)))
        cluster_mode = Table(rng, [(90, "tls"), (4, "plain"), (4, "offered"), (2, "broken")])
        clusters = []
        for _ in range(40):
            zone = self._unique(seen, self._domain_name)
            clusters.append([server(f"mx{j:02d}.{zone}", cluster_mode()) for j in range(1, 3)])
        for i in range(1400):
            dom = self._unique(seen, self._domain_name)
            if self.random() < 0.45:
                mxs = clusters[self.randrange(len(clusters))]
            else:
                mxs = [server(f"{('mx', 'mail', 'smtp', 'mx1')[self.randrange(4)]}.{dom}")]
                if self.random() < 0.4:
                    backup = server(f"mx2.{dom}", "tls")
                    mxs.append(backup)
            domains.append((3.0 / (1 + i / 60), Domain(dom, mxs, 0.03)))
        self.domains = Table(rng, domains)
        self.domain_list = [d for _, d in domains]
        self.domain_by_name = {d.name: d for d in self.domain_list}

        # Inbound clients: legitimate MTAs, old MTAs, bots, submission users.
        cproto = Table(rng, [(70, "TLSv1.3"), (27.4, "TLSv1.2"), (0.9, "TLSv1.1"), (1.7, "TLSv1")])
        clients: list[tuple[float, Client]] = []
        addrs = [f"198.51.100.{i}" for i in range(1, 200)]
        rng.shuffle(addrs)
        for i in range(400):
            v6 = i >= len(addrs) or self.random() < 0.1
            addr = self._v6(0x100 + self.getrandbits(8)) if v6 else addrs[i]
            dom = self.domain_list[self.randrange(len(self.domain_list))].name
            label = ("mail", "smtp", "mx-out", "o", "out")[self.randrange(5)]
            name: str | None = f"{label}{self.randrange(1, 40)}.{dom}"
            c = Client("mta", addr, name, dom)
            c.starttls = self.random() < 0.9
            c.proto = cproto()
            c.cipher = tls.cipher(c.proto)
            c.sig = "ecdsa" if self.random() < 0.3 else "rsa2048"
            c.resume = 0.3 if self.random() < 0.5 else 0.0
            r = self.random()
            c.cert = "Untrusted" if r < 0.04 else "Trusted" if r < 0.06 else None
            if self.random() < 0.03:
                c.broken = 0.5
            if self.random() < 0.04:
                c.kind = "oldmta"
                c.starttls = False
            clients.append((30.0 / (1 + i / 8), c))
        bot_addrs = [f"203.0.113.{i}" for i in range(1, 200)]
        rng.shuffle(bot_addrs)
        for i in range(300):
            v6 = i >= len(bot_addrs) or self.random() < 0.12
            addr = self._v6(0x200 + self.getrandbits(8)) if v6 else bot_addrs[i]
            r = self.random()
            dom = f"{_WORDS[self.randrange(len(_WORDS))]}-isp.example.{_TLDS[self.randrange(3)]}"
            dashed = addr.replace(".", "-").replace(":", "-")
            name = None if r < 0.45 else f"{dashed}.dyn.{dom}"
            c = Client("bot", addr, name, dom)
            if name is not None and self.random() < 0.35:
                c.ptr, c.name, c.peer = name, None, f"unknown[{addr}]"
            c.helo = ("User", "localhost", f"{_WORDS[self.randrange(80)]}.example.com", c.helo)[
                self.randrange(4)
            ]
            c.starttls = self.random() < 0.35
            c.proto = cproto() if self.random() < 0.88 else ("TLSv1", "TLSv1.1")[self.randrange(2)]
            c.cipher = tls.cipher(c.proto)
            c.broken = 0.25
            clients.append((2.0, c))
        self.clients = Table(rng, clients)
        users: list[tuple[float, Client]] = []
        user_addrs = [f"203.0.113.{i}" for i in range(200, 255)]
        for i in range(120):
            v6 = i >= len(user_addrs) or self.random() < 0.2
            addr = self._v6(0x300 + self.getrandbits(8)) if v6 else user_addrs[i]
            isp = f"{_WORDS[self.randrange(80)]}-net.example.{_TLDS[self.randrange(3)]}"
            name = None if self.random() < 0.2 else f"client-{self.randrange(1, 9999)}.{isp}"
            c = Client("user", addr, name, isp)
            first = _FIRST[i % len(_FIRST)]
            c.user = f"{first}{'' if i < len(_FIRST) else i}@example.org"
            c.proto = "TLSv1.3" if self.random() < 0.85 else "TLSv1.2"
            c.cipher = tls.cipher(c.proto)
            c.sig = "ecdsa" if self.random() < 0.3 else "rsa2048"
            c.cert = "Trusted" if self.random() < 0.05 else None
            c.resume = 0.4
            users.append((4.0 / (1 + i / 20), c))
        self.users = Table(rng, users)
        scanners = []
        for i in range(60):
            addr = self._v6(0x400 + i) if i % 4 == 0 else f"203.0.113.{i + 1}"
            c = Client("bot", addr, None, "example.net")
            c.proto = ("TLSv1", "TLSv1.2", "TLSv1.3")[self.randrange(3)]
            c.cipher = tls.cipher(c.proto)
            scanners.append((1.0, c))
        self.scanners = Table(rng, scanners)
        self.local_users = [f"{f}@example.org" for f in _FIRST] + [
            f"{f}.{w}@example.org" for f, w in zip(_FIRST, _WORDS, strict=False)
        ]

    def local_rcpt(self) -> str:
        return self.local_users[self.randrange(len(self.local_users))]

    def remote_addr(self, dom: Domain) -> str:
        r = self.random()
        if r < 0.5:
            return f"{_FIRST[self.randrange(len(_FIRST))]}@{dom.name}"
        if r < 0.8:
            return f"{_FIRST[self.randrange(len(_FIRST))]}.{_WORDS[self.randrange(80)]}@{dom.name}"
        return f"{('info', 'sales', 'support', 'billing', 'hr')[self.randrange(5)]}@{dom.name}"

    # -- arrival processes ----------------------------------------------------------------------

    def arrivals(self, rate: float, make: Callable[[], Session]) -> Session:
        while True:
            yield self.arrival(rate), None, None
            self.sim.spawn(make())

    def start(self) -> None:
        spawn = self.sim.spawn
        spawn(self.arrivals(0.75, self.port25))
        spawn(self.arrivals(0.05, self.scan25))
        spawn(self.arrivals(0.36, self.submission))
        spawn(self.arrivals(0.035, self.smtps))
        spawn(self.arrivals(0.006, self.submission_bruteforce))
        spawn(self.arrivals(0.08, self.webapp))
        spawn(self.arrivals(0.0008, self.newsletter))
        spawn(self.arrivals(0.07, self.imap))
        spawn(self.periodic(300 * SEC, self.cron))
        spawn(self.periodic(600 * SEC, self.anvil_stats))
        spawn(self.periodic(600 * SEC, self.scache_report))

    def periodic(self, every: int, make: Callable[[], Session]) -> Session:
        while True:
            yield every - self.randrange(10 * SEC), None, None
            self.sim.spawn(make())

    # -- inbound: postscreen and smtpd on port 25 -----------------------------------------------

    def port25(self) -> Session:
        return self.postscreen_session(self.clients())

    def scan25(self) -> Session:
        return self.postscreen_session(self.scanners(), scanner=True)

    def postscreen_session(self, c: Client, scanner: bool = False) -> Session:
        """postscreen's verdict; clients that pass are handed to an smtpd process."""
        ps = self.postscreen
        port = 1024 + self.randrange(64511)
        cp = f"[{c.addr}]:{port}"
        here = f"[{MX_V6}]:25" if c.v6 else f"[{MX_V4}]:25"
        yield 0, f"{ps}: CONNECT from {cp} to {here}", None
        _bump(self.anvil_max, c.addr)
        if c.kind == "bot" and not scanner and c.hostile is None:
            r = self.random()
            if r < 0.22:
                dnsblog = self.pools["postfix/dnsblog"]
                proc = dnsblog.acquire()
                yield (
                    self.wait(20, 300),
                    (f"{proc.tag}: addr {c.addr} listed by domain dnsbl.example.org as 127.0.0.2"),
                    None,
                )
                dnsblog.release(proc)
                yield self.wait(5000, 6500), f"{ps}: DNSBL rank 3 for {cp}", None
                if self.random() < 0.7:
                    yield (
                        self.wait(200, 3000),
                        (
                            f"{ps}: NOQUEUE: reject: RCPT from {cp}: 550 5.7.1 Service "
                            f"unavailable; client [{c.addr}] blocked using dnsbl.example.org; "
                            f"from=<{self.spam_sender()}>, to=<{self.local_rcpt()}>, proto=ESMTP, "
                            f"helo=<{c.helo}>"
                        ),
                        None,
                    )
                yield self.wait(50, 900), f"{ps}: DISCONNECT {cp}", None
                return
            if r < 0.32:
                yield (
                    self.wait(50, 900),
                    (
                        f"{ps}: PREGREET {11 + len(c.helo)} after 0.{self.randrange(10, 99)} from "
                        f"{cp}: EHLO {c.helo}\\r\\n"
                    ),
                    None,
                )
                yield self.wait(5, 40), f"{ps}: DISCONNECT {cp}", None
                return
            if r < 0.38:
                yield (
                    self.wait(300, 5000),
                    (
                        f"{ps}: HANGUP after {self.randrange(1, 60) / 10} from {cp} in tests "
                        "before SMTP handshake"
                    ),
                    None,
                )
                yield self.wait(1, 10), f"{ps}: DISCONNECT {cp}", None
                return
        if c.addr in self.postscreen_cache:
            yield self.wait(1, 20), f"{ps}: PASS OLD {cp}", None
        else:
            self.postscreen_cache.add(c.addr)
            yield self.wait(6000, 6100), f"{ps}: PASS NEW {cp}", None
        if scanner:
            session = self.scanner_session(c)
        elif c.hostile is not None:
            session = self.hostile_inbound(c)
        else:
            session = self.smtpd25(c)
        self.sim.spawn(session, self.wait(1, 5))

    def spam_sender(self) -> str:
        word = _WORDS[self.randrange(80)]
        dom = f"{word}{self.randrange(100, 999)}.example.{_TLDS[self.randrange(3)]}"
        return f"{_WORDS[self.randrange(80)]}{self.randrange(10, 99)}@{dom}"

    def connect_lines(self, tag: str, c: Client, stat: tuple[Any, ...] | None = None) -> Session:
        if c.ptr is not None:
            tail = (": Name or service not known", ": Temporary failure in name resolution", "")[
                self.randrange(3)
            ]
            yield (
                self.wait(1, 400),
                (f"{tag}: warning: hostname {c.ptr} does not resolve to address {c.addr}{tail}"),
                None,
            )
        yield self.wait(1, 40), f"{tag}: connect from {c.peer}", stat

    def inbound_tls(
        self,
        tag: str,
        program: str,
        c: Client,
        cmds: Commands,
        wrapper: bool = False,
        fail: float | None = None,
    ) -> Step:
        """The lines of a STARTTLS (or wrapper-mode) handshake; returns whether it succeeded.
        ``fail`` overrides the client's own failure probability."""
        if not wrapper:
            cmds.hit("starttls", False)
        if self.random() < (c.broken if fail is None else fail):
            r = self.random()
            kind = "lost_connection" if r < 0.25 else "protocol" if r < 0.6 else "cipher"
            if c.kind == "bot" and r > 0.85:
                kind = "handshake"
            if kind == "lost_connection":
                detail = "lost connection" if self.random() < 0.7 else "Connection reset by peer"
            else:
                detail = "-1"
            yield self.wait(20, 900), f"{tag}: SSL_accept error from {c.peer}: {detail}", (
                "fail", "inbound", kind, "ssl_accept_error",
            )  # fmt: skip
            if kind != "lost_connection":
                lib = _ACCEPT_LIB[kind][self.randrange(2)]
                yield self.wait(0, 2), f"{tag}: warning: TLS library problem: {lib}", (
                    "fline", "tls_library_problem",
                )  # fmt: skip
            after = "CONNECT" if wrapper else "STARTTLS"
            prefix = "NOQUEUE: " if self.random() < 0.2 else ""
            yield self.wait(0, 3), f"{tag}: {prefix}lost connection after {after} from {c.peer}", (
                "fline", "lost_after_" + after.lower(),
            )  # fmt: skip
            return False
        if not wrapper:
            cmds["starttls"][0] += 1
        resumed = self.random() < c.resume
        trust = c.cert or "Anonymous"
        client_sig = None if c.cert is None else c.sig
        sni = MX_FQDN if program != "postfix/smtpd" and self.random() < 0.04 else None
        text = self.tls.line(
            trust, "established", "from", c.peer, c.proto, c.cipher, c.sig, client_sig, resumed, sni
        )
        stat = (
            "tls", program, "inbound", "established", True, c.proto, trust.lower(), c.cipher[0],
            c.peer, sni is not None,
        )  # fmt: skip
        yield self.wait(30, 400), f"{tag}: {text}", stat
        return True

    def smtpd25(self, c: Client) -> Session:
        pool = self.pools["postfix/smtpd"]
        proc = pool.acquire()
        tag = proc.tag
        cmds = Commands()
        yield from self.connect_lines(tag, c)
        if c.kind == "bot":
            yield from self.bot_dialogue(tag, c, cmds)
        else:
            cmds.hit("helo" if c.kind == "oldmta" else "ehlo")
            if c.starttls:
                ok = yield from self.inbound_tls(tag, "postfix/smtpd", c, cmds)
                if not ok:
                    yield from self.disconnect(tag, c, cmds, "postfix/smtpd")
                    pool.release(proc)
                    return
                cmds.hit("ehlo")
            n = 1 if self.random() < 0.92 else self.randrange(2, 4)
            for _ in range(n):
                sender = self.remote_addr_of(c)
                yield from self.receive(tag, c, cmds, sender, self.inbound_rcpts(), "inbound")
            r = self.random()
            if r < 0.03:
                yield self.wait(10, 300), f"{tag}: lost connection after DATA from {c.peer}", None
            else:
                cmds.hit("quit")
        yield from self.disconnect(tag, c, cmds, "postfix/smtpd")
        pool.release(proc)

    def remote_addr_of(self, c: Client) -> str:
        r = self.random()
        if r < 0.08:
            return ""
        if r < 0.3:
            return f"bounces+{self.getrandbits(32):x}@{c.domain}"
        return f"{_FIRST[self.randrange(len(_FIRST))]}@{c.domain}"

    def inbound_rcpts(self) -> list[str]:
        n = 1 if self.random() < 0.85 else self.randrange(2, 5)
        return [self.local_rcpt() for _ in range(n)]

    def disconnect(
        self,
        tag: str,
        c: Client,
        cmds: Commands,
        program: str,
        wrapper: bool = False,
        tls: bool = False,
    ) -> Session:
        stat = ("sess", program, cmds.outcome(wrapper, tls))
        yield self.wait(1, 200), f"{tag}: disconnect from {c.peer} {cmds.text()}", stat

    def receive(
        self,
        tag: str,
        c: Client,
        cmds: Commands,
        sender: str,
        rcpts: list[str],
        route: str,
        sasl: str = "",
    ) -> Session:
        """MAIL, RCPT..., DATA of one message; queues it and starts its delivery."""
        cmds.hit("mail")
        qid = ""
        accepted = []
        for rcpt in rcpts:
            if route == "inbound" and self.random() < 0.04:
                cmds.hit("rcpt", False)
                yield (
                    self.wait(50, 400),
                    (
                        f"{tag}: {qid or 'NOQUEUE'}: reject: RCPT from {c.peer}: 550 5.1.1 "
                        f"<{rcpt}>: Recipient address rejected: User unknown in virtual mailbox "
                        f"table; from=<{sender}> to=<{rcpt}> proto=ESMTP helo=<{c.helo}>"
                    ),
                    None,
                )
                continue
            cmds.hit("rcpt")
            if not qid:
                qid = self.qid()
                yield self.wait(50, 600), f"{tag}: {qid}: client={c.peer}{sasl}", None
            accepted.append(rcpt)
        if not accepted:
            if self.random() < 0.5:
                cmds.hit("rset")
            return
        cmds.hit("data", False)
        cleanup = self.pools["postfix/cleanup"]
        cproc = cleanup.acquire()
        dom = c.domain if route == "inbound" else "example.org"
        msg = Msg(
            self.sim.now, qid, sender, 1200 + self.getrandbits(16), self.msgid(dom), len(accepted)
        )
        yield self.wait(100, 2500), f"{cproc.tag}: {qid}: message-id={msg.msgid}", None
        if route == "inbound" and self.random() < 0.006:
            yield (
                self.wait(5, 300),
                (
                    f"{cproc.tag}: {qid}: reject: header Subject: =?UTF-8?B?V2lubmVyIQ==?= from "
                    f"{c.peer}; from=<{sender}> to=<{accepted[0]}> proto=ESMTP helo=<{c.helo}>: "
                    "5.7.1 message content rejected"
                ),
                None,
            )
            cleanup.release(cproc)
            return
        cleanup.release(cproc)
        cmds["data"][0] += 1
        yield (
            self.wait(1, 30),
            (
                f"{self.qmgr}: {qid}: from=<{sender}>, size={msg.size}, nrcpt={len(accepted)} "
                "(queue active)"
            ),
            None,
        )
        self.route(msg, accepted, route)

    def route(self, msg: Msg, rcpts: list[str], route: str) -> None:
        """Start the deliveries of a queued message: one group per next hop."""
        spawn = self.sim.spawn
        local = []
        remote: dict[str, list[str]] = {}
        for r in rcpts:
            domain = r.rpartition("@")[2]
            if domain in LOCAL_DOMAINS:
                local.append(r)
            else:
                remote.setdefault(domain, []).append(r)
        msg.pending = (1 if local else 0) + len(remote)
        if local:
            if route == "inbound" and self.random() < 0.25:
                spawn(self.content_filter(msg, local), self.wait(5, 200))
            elif route == "cron":
                spawn(self.local_delivery(msg, local), self.wait(5, 200))
            else:
                spawn(self.lmtp(msg, local), self.wait(5, 200))
        for dom_name, group in remote.items():
            spawn(self.outbound(msg, self.domain_by_name[dom_name], group, 1), self.wait(5, 300))

    def bot_dialogue(self, tag: str, c: Client, cmds: Commands) -> Session:
        r = self.random()
        peer = c.peer
        if r < 0.12:
            yield (
                self.wait(50, 300),
                (f"{tag}: warning: non-SMTP command from {peer}: GET / HTTP/1.1"),
                None,
            )
            cmds.hit("unknown", False)
            return
        if r < 0.2:
            yield self.wait(1000, 30000), f"{tag}: lost connection after CONNECT from {peer}", None
            return
        if r < 0.25:
            yield (
                self.wait(10, 200),
                (
                    f"{tag}: improper command pipelining after CONNECT from {peer}: "
                    f"EHLO {c.helo}\\r\\nMAIL FROM:<{self.spam_sender()}>\\r\\n"
                ),
                None,
            )
            cmds.hit("ehlo")
            cmds.hit("quit")
            return
        cmds.hit("ehlo")
        if c.starttls:
            ok = yield from self.inbound_tls(tag, "postfix/smtpd", c, cmds)
            if not ok:
                return
            cmds.hit("ehlo")
        r = self.random()
        if r < 0.2:
            for _ in range(self.randrange(1, 4)):
                cmds.hit("auth", False)
                yield (
                    self.wait(500, 4000),
                    (f"{tag}: warning: {peer}: SASL LOGIN authentication failed: UGFzc3dvcmQ6"),
                    None,
                )
            if self.random() < 0.5:
                yield self.wait(10, 500), f"{tag}: lost connection after AUTH from {peer}", None
            else:
                cmds.hit("quit")
            return
        if r < 0.3:
            yield self.wait(10000, 300000), f"{tag}: timeout after EHLO from {peer}", None
            return
        cmds.hit("mail")
        for _ in range(self.randrange(1, 3)):
            cmds.hit("rcpt", False)
            rcpt = self.local_rcpt() if self.random() < 0.6 else self.spam_sender()
            local = rcpt.rpartition("@")[2] in LOCAL_DOMAINS
            reason = (
                ("450 4.7.1 Client host rejected: cannot find your reverse hostname, "
                 f"[{c.addr}]") if c.name is None and local
                else f"550 5.1.1 <{rcpt}>: Recipient address rejected: User unknown in virtual "
                "mailbox table" if local
                else f"454 4.7.1 <{rcpt}>: Relay access denied"
            )  # fmt: skip
            yield (
                self.wait(100, 1500),
                (
                    f"{tag}: NOQUEUE: reject: RCPT from {peer}: {reason}; "
                    f"from=<{self.spam_sender()}> to=<{rcpt}> proto=ESMTP helo=<{c.helo}>"
                ),
                None,
            )
        if self.random() < 0.7:
            cmds.hit("quit")
        else:
            yield self.wait(10, 500), f"{tag}: lost connection after RCPT from {peer}", None

    def scanner_session(self, c: Client) -> Session:
        """TLS scanners and broken clients: STARTTLS right away, often failing."""
        pool = self.pools["postfix/smtpd"]
        proc = pool.acquire()
        tag = proc.tag
        cmds = Commands()
        yield from self.connect_lines(tag, c)
        cmds.hit("ehlo")
        ok = yield from self.inbound_tls(tag, "postfix/smtpd", c, cmds, fail=0.55)
        if ok:
            cmds.hit("ehlo")
            cmds.hit("quit")
        yield from self.disconnect(tag, c, cmds, "postfix/smtpd")
        pool.release(proc)

    # -- submission, smtps --------------------------------------------------------------------

    def user_message_rcpts(self) -> list[str]:
        n = 1 if self.random() < 0.7 else self.randrange(2, 6)
        out = []
        for _ in range(n):
            if self.random() < 0.35:
                out.append(self.local_rcpt())
            else:
                out.append(self.remote_addr(self.domains()))
        return out

    def submission(self) -> Session:
        c = self.users()
        program = "postfix/submission/smtpd"
        pool = self.pools[program]
        proc = pool.acquire()
        tag = proc.tag
        cmds = Commands()
        yield from self.connect_lines(tag, c)
        cmds.hit("ehlo")
        ok = yield from self.inbound_tls(tag, program, c, cmds, fail=0.004)
        if ok:
            cmds.hit("ehlo")
            if self.random() < 0.03:
                cmds.hit("auth", False)
                yield (
                    self.wait(300, 2500),
                    (
                        f"{tag}: warning: {c.peer}: SASL PLAIN authentication failed: "
                        f"authentication failure, sasl_username={c.user}"
                    ),
                    None,
                )
            cmds.hit("auth")
            sasl = f", sasl_method=PLAIN, sasl_username={c.user}"
            for _ in range(1 if self.random() < 0.9 else 2):
                yield from self.receive(
                    tag, c, cmds, c.user or "", self.user_message_rcpts(), "user", sasl
                )
            cmds.hit("quit")
        yield from self.disconnect(tag, c, cmds, program)
        pool.release(proc)

    def submission_bruteforce(self) -> Session:
        c = self.clients()
        if c.kind != "bot":
            return
        program = "postfix/submission/smtpd"
        pool = self.pools[program]
        proc = pool.acquire()
        tag = proc.tag
        cmds = Commands()
        yield from self.connect_lines(tag, c)
        cmds.hit("ehlo")
        if self.random() < 0.3:
            cmds.hit("auth", False)
            yield (
                self.wait(100, 900),
                (
                    f"{tag}: NOQUEUE: reject: AUTH from {c.peer}: 530 5.7.0 Must issue a STARTTLS "
                    "command first"
                ),
                None,
            )
        else:
            ok = yield from self.inbound_tls(tag, program, c, cmds)
            if ok:
                cmds.hit("ehlo")
                cmds.hit("auth", False)
                yield (
                    self.wait(1000, 4000),
                    (f"{tag}: warning: {c.peer}: SASL LOGIN authentication failed: UGFzc3dvcmQ6"),
                    None,
                )
        if self.random() < 0.5:
            cmds.hit("quit")
        yield from self.disconnect(tag, c, cmds, program)
        pool.release(proc)

    def smtps(self) -> Session:
        c = self.users()
        program = "postfix/smtps/smtpd"
        pool = self.pools[program]
        proc = pool.acquire()
        tag = proc.tag
        cmds = Commands()
        yield from self.connect_lines(tag, c)
        ok = yield from self.inbound_tls(tag, program, c, cmds, wrapper=True, fail=0.01)
        if ok:
            cmds.hit("ehlo")
            cmds.hit("auth")
            sasl = f", sasl_method=PLAIN, sasl_username={c.user}"
            yield from self.receive(
                tag, c, cmds, c.user or "", self.user_message_rcpts(), "user", sasl
            )
            cmds.hit("quit")
        yield from self.disconnect(tag, c, cmds, program, wrapper=True, tls=ok)
        pool.release(proc)

    # -- local mail sources ---------------------------------------------------------------------

    def pickup(self, uid: int, sender: str, rcpts: list[str], route: str) -> Session:
        pool = self.pools["postfix/pickup"]
        proc = pool.acquire()
        qid = self.qid()
        yield self.wait(1, 900), f"{proc.tag}: {qid}: uid={uid} from=<{sender.split('@')[0]}>", None
        pool.release(proc)
        cleanup = self.pools["postfix/cleanup"]
        cproc = cleanup.acquire()
        msg = Msg(
            self.sim.now, qid, sender, 600 + self.getrandbits(14), self.msgid(MX_FQDN), len(rcpts)
        )
        yield self.wait(1, 40), f"{cproc.tag}: {qid}: message-id={msg.msgid}", None
        cleanup.release(cproc)
        yield (
            self.wait(1, 30),
            (
                f"{self.qmgr}: {qid}: from=<{sender}>, size={msg.size}, nrcpt={len(rcpts)} "
                "(queue active)"
            ),
            None,
        )
        self.route(msg, rcpts, route)

    def cron(self) -> Session:
        return self.pickup(0, f"root@{MX_FQDN}", [f"root@{MX_FQDN}"], "cron")

    def webapp(self) -> Session:
        rcpt = self.remote_addr(self.domains()) if self.random() < 0.8 else self.local_rcpt()
        return self.pickup(33, f"www-data@{MX_FQDN}", [rcpt], "user")

    def newsletter(self) -> Session:
        for _ in range(self.randrange(20, 150)):
            yield self.wait(200, 2500), None, None
            self.sim.spawn(
                self.pickup(1001, "news@example.org", [self.remote_addr(self.domains())], "user")
            )

    def imap(self) -> Session:
        c = self.users()
        dv = self.dovecot
        session = self.b64(12)
        lip = MX_V6 if c.v6 else MX_V4
        if self.random() < 0.05:
            bot = self.clients()
            yield (
                0,
                (
                    f"{dv}: imap-login: Disconnected: Connection closed (auth failed, 3 attempts "
                    f"in {self.randrange(6, 20)} secs): user=<{self.local_rcpt()}>, method=PLAIN, "
                    f"rip={bot.addr}, lip={lip}, TLS, session=<{session}>"
                ),
                None,
            )
            return
        mpid = self.new_pid()
        yield (
            0,
            (
                f"{dv}: imap-login: Login: user=<{c.user}>, method=PLAIN, rip={c.addr}, lip={lip}, "
                f"mpid={mpid}, TLS, session=<{session}>"
            ),
            None,
        )
        yield (
            self.expo(240 * SEC),
            (
                f"{dv}: imap({c.user})<{mpid}><{session}>: Logged out "
                f"in={self.randrange(90, 9000)} out={self.randrange(500, 900000)} deleted=0 "
                "expunged=0 trashed=0 hdr_count=0 hdr_bytes=0 body_count=0 body_bytes=0"
            ),
            None,
        )

    # -- delivery agents ------------------------------------------------------------------------

    def finish(self, msg: Msg) -> Session:
        msg.pending -= 1
        if msg.pending == 0:
            yield self.wait(0, 4), f"{self.qmgr}: {msg.qid}: removed", None

    def lmtp(self, msg: Msg, rcpts: list[str]) -> Session:
        pool = self.pools["postfix/lmtp"]
        proc = pool.acquire()
        dv = self.dovecot
        lpid = self.new_pid()
        start = self.sim.now
        for rcpt in rcpts:
            sid = self.b64(16)
            yield (
                self.wait(10, 150),
                f"{dv}: lmtp({rcpt})<{lpid}><{sid}>: msgid={msg.msgid}: saved mail to INBOX",
                None,
            )
            took = self.sim.now - start + self.wait(1, 20)
            age = self.sim.now - msg.born
            yield (
                self.wait(0, 3),
                (
                    f"{proc.tag}: {msg.qid}: to=<{rcpt}>, relay={MX_FQDN}[private/dovecot-lmtp], "
                    f"delay={fmt_delay(age)}, delays={fmt_delay(max(0, age - took))}/0/0/"
                    f"{fmt_delay(took)}, dsn=2.0.0, status=sent (250 2.0.0 <{rcpt}> {sid} Saved)"
                ),
                ("dlv", "postfix/lmtp", "sent", "no", "lmtp", None, None),
            )
        pool.release(proc)
        yield from self.finish(msg)

    def local_delivery(self, msg: Msg, rcpts: list[str]) -> Session:
        pool = self.pools["postfix/local"]
        proc = pool.acquire()
        for rcpt in rcpts:
            yield (
                self.wait(5, 60),
                (
                    f"{proc.tag}: {msg.qid}: to=<{rcpt}>, orig_to=<root>, relay=local, delay=0.03, "
                    "delays=0.01/0.01/0/0.01, dsn=2.0.0, status=sent (delivered to mailbox)"
                ),
                ("dlv", "postfix/local", "sent", "none", "local", None, None),
            )
        pool.release(proc)
        yield from self.finish(msg)

    def content_filter(self, msg: Msg, rcpts: list[str]) -> Session:
        """Through amavis on 127.0.0.1:10024 and back in on 127.0.0.1:10025 as a new queue ID."""
        pool = self.pools["postfix/amavis/smtp"]
        proc = pool.acquire()
        scan = self.wait(300, 3000)
        yield scan, None, None
        rpool = self.reinject
        rproc = rpool.acquire()
        rtag = rproc.tag
        lo = "localhost[127.0.0.1]"
        yield self.wait(1, 5), f"{rtag}: connect from {lo}", None
        nqid = self.qid()
        yield self.wait(1, 10), f"{rtag}: {nqid}: client={lo}", None
        cleanup = self.pools["postfix/cleanup"]
        cproc = cleanup.acquire()
        yield self.wait(1, 20), f"{cproc.tag}: {nqid}: message-id={msg.msgid}", None
        cleanup.release(cproc)
        new = Msg(self.sim.now, nqid, msg.sender, msg.size + 900, msg.msgid, len(rcpts))
        yield (
            self.wait(1, 10),
            (
                f"{self.qmgr}: {nqid}: from=<{msg.sender}>, size={new.size}, nrcpt={len(rcpts)} "
                "(queue active)"
            ),
            None,
        )
        self.route(new, rcpts, "filtered")
        cmds = Commands()
        for name in ("ehlo", "mail"):
            cmds.hit(name)
        for _ in rcpts:
            cmds.hit("rcpt")
        cmds.hit("data")
        cmds.hit("quit")
        yield self.wait(1, 10), f"{rtag}: disconnect from {lo} {cmds.text()}", (
            "sess", "postfix/smtpd", "not_used",
        )  # fmt: skip
        rpool.release(rproc)
        self.amavis_seq += 1
        yield (
            self.wait(1, 10),
            (
                f"amavis[{self.amavis_pid}]: ({self.amavis_pid}-{self.amavis_seq:02d}) Passed "
                f"CLEAN {{RelayedInbound}}, <{msg.sender}> -> <{rcpts[0]}>, Queue-ID: {msg.qid}, "
                f"Message-ID: {msg.msgid}, mail_id: {self.getrandbits(48):012x}, Hits: -"
                f"{self.randrange(0, 300) / 100}, size: {msg.size}, queued_as: {nqid}, "
                f"{scan // MS} ms"
            ),
            None,
        )
        for rcpt in rcpts:
            yield (
                self.wait(0, 3),
                (
                    f"{proc.tag}: {msg.qid}: to=<{rcpt}>, relay=127.0.0.1[127.0.0.1]:10024, "
                    f"delay={fmt_delay(scan + 200 * MS)}, delays=0.2/0/0/{fmt_delay(scan)}, "
                    "dsn=2.0.0, status=sent (250 2.0.0 from MTA(smtp:[127.0.0.1]:10025): 250 2.0.0 "
                    f"Ok: queued as {nqid})"
                ),
                ("dlv", "postfix/amavis/smtp", "sent", "no", "content_filter", None, None),
            )
        pool.release(proc)
        yield from self.finish(msg)

    # -- outbound smtp --------------------------------------------------------------------------

    def dlv_line(
        self,
        tag: str,
        msg: Msg,
        rcpt: str,
        relay: str,
        setup: int,
        xmit: int,
        dsn: str,
        status: str,
        text: str,
        conn_use: int = 0,
    ) -> str:
        age = self.sim.now - msg.born
        cu = f", conn_use={conn_use}" if conn_use else ""
        return (
            f"{tag}: {msg.qid}: to=<{rcpt}>, relay={relay}{cu}, delay={fmt_delay(age)}, "
            f"delays={fmt_delay(max(0, age - setup - xmit))}/0.01/{fmt_delay(setup)}/"
            f"{fmt_delay(xmit)}, "
            f"dsn={dsn}, status={status} ({text})"
        )

    def outbound(self, msg: Msg, dom: Domain, rcpts: list[str], attempt: int) -> Session:
        """One delivery attempt of the recipients of ``msg`` at ``dom``."""
        pool = self.pools["postfix/smtp"]
        proc = pool.acquire()
        tag = proc.tag
        program = "postfix/smtp"
        s = dom.mxs[0]
        if s.mode == "timeout":
            yield (
                self.wait(30000, 30100),
                (f"{tag}: connect to {s.peer}: Connection timed out"),
                None,
            )
            if len(dom.mxs) > 1:
                s = dom.mxs[1]
            else:
                for rcpt in rcpts:
                    yield self.wait(0, 3), self.dlv_line(
                        tag, msg, rcpt, "none", 30 * SEC, 0, "4.4.1", "deferred",
                        f"connect to {s.peer}: Connection timed out",
                    ), ("dlv", program, "deferred", "none", "none", None, None)  # fmt: skip
                pool.release(proc)
                self.retry(msg, dom, rcpts, attempt)
                return
        stat_peer = s.host
        cached = self.cache.get(s.peer)
        conn_use = 0
        summary = None
        setup = self.wait(80, 900)
        if cached is not None and not cached.busy and cached.expires > self.sim.now:
            cached.busy = True
            cached.uses += 1
            self.scache_stats[1] += 1
            conn_use = cached.uses
            setup = self.wait(0, 5)
            summary = cached.summary
            if summary is not None:
                text = summary.replace(" established ", " reused ", 1)
                yield self.wait(1, 10), f"{tag}: {text}", (
                    "tls", program, "outbound", "reused", False, s.proto, s.trust.lower(),
                    s.cipher[0], stat_peer,
                )  # fmt: skip
        else:
            cached = None
            outcome = yield from self.outbound_handshake(tag, program, msg, dom, s, rcpts, attempt)
            if outcome == "done":
                pool.release(proc)
                return
            summary = None if outcome == "plain" else outcome
        tls = summary is not None
        xmit = self.wait(40, 1200)
        yield setup + xmit, None, None
        deferred: list[str] = []
        bounced: list[str] = []
        tls_word = "yes" if tls else "no"
        cache_kind = ("tls" if tls else "plaintext") if conn_use else None
        for rcpt in rcpts:
            if attempt == 1 and s.greylist:
                status, dsn = "deferred", "4.2.0"
                text = (
                    f"host {s.host} said: 450 4.2.0 <{rcpt}>: Recipient address rejected: "
                    f"Greylisted, see http://postgrey.example.net/help/{dom.name}.html (in reply "
                    "to RCPT TO command)"
                )
                deferred.append(rcpt)
            elif self.random() < dom.bounce:
                status, dsn = "bounced", "5.1.1"
                text = (
                    f"host {s.host} said: 550 5.1.1 <{rcpt}>: Recipient address rejected: User "
                    "unknown (in reply to RCPT TO command)"
                )
                bounced.append(rcpt)
            else:
                status, dsn = "sent", "2.0.0"
                text = f"250 2.0.0 Ok: queued as {self.getrandbits(40):010X}"
            plain_peer = stat_peer if status == "sent" and not tls else None
            yield (
                self.wait(0, 3),
                self.dlv_line(tag, msg, rcpt, s.peer, setup, xmit, dsn, status, text, conn_use),
                ("dlv", program, status, tls_word, "remote", plain_peer, cache_kind),
            )
        self.keep_connection(s, cached, summary)
        pool.release(proc)
        if bounced:
            yield from self.bounce(msg)
        if deferred:
            self.retry(msg, dom, deferred, attempt)
        else:
            yield from self.finish(msg)

    def outbound_handshake(
        self,
        tag: str,
        program: str,
        msg: Msg,
        dom: Domain,
        s: Server,
        rcpts: list[str],
        attempt: int,
    ) -> Step:
        """The lines before the delivery on a new connection. Returns the TLS summary, "plain",
        or "done" when the attempt ended here (deferred)."""
        mode = s.mode
        if mode == "plain":
            return "plain"
        if mode == "offered":
            yield self.wait(100, 600), f"{tag}: Host offered STARTTLS: [{s.name}]", (
                "offer", s.name,
            )  # fmt: skip
            return "plain"
        if mode == "required":
            for rcpt in rcpts:
                yield self.wait(100, 600), self.dlv_line(
                    tag, msg, rcpt, s.peer, 200 * MS, 0, "4.7.4", "deferred",
                    f"TLS is required, but was not offered by host {s.host}",
                ), (
                    "multi",
                    ("dlv", program, "deferred", "no", "remote", None, None),
                    ("fail", "outbound", "not_offered", None),
                )  # fmt: skip
            self.retry(msg, dom, rcpts, attempt)
            return "done"
        if mode == "broken":
            kind = s.failure
            detail = "lost connection" if kind == "lost_connection" else "-1"
            yield self.wait(100, 900), f"{tag}: SSL_connect error to {s.peer}: {detail}", (
                "fail", "outbound", kind, "ssl_connect_error",
            )  # fmt: skip
            if kind != "lost_connection":
                yield (
                    self.wait(0, 2),
                    (f"{tag}: warning: TLS library problem: {_CONNECT_LIB[kind]}"),
                    ("fline", "tls_library_problem"),
                )
            if attempt == 1:
                for rcpt in rcpts:
                    yield self.wait(0, 3), self.dlv_line(
                        tag, msg, rcpt, s.peer, 300 * MS, 0, "4.7.5", "deferred",
                        "Cannot start TLS: handshake failure",
                    ), ("dlv", program, "deferred", "no", "remote", None, None)  # fmt: skip
                self.retry(msg, dom, rcpts, attempt)
                return "done"
            yield self.wait(0, 3), f"{tag}: {msg.qid}: Cannot start TLS: handshake failure", (
                "fline", "cannot_start_tls",
            )  # fmt: skip
            return "plain"
        if s.reuse:
            yield self.wait(50, 300), f"{self.tlsproxy}: CONNECT to [{s.addr}]:25", None
            text = self.tls.line(
                s.trust, "established", "to", s.peer, s.proto, s.cipher, s.sig, modern=True
            )
            stat = (
                "tls", "postfix/tlsproxy", "outbound", "established", False, s.proto,
                s.trust.lower(), s.cipher[0], s.host,
            )  # fmt: skip
            yield self.wait(100, 800), f"{self.tlsproxy}: {text}", stat
            yield self.wait(0, 3), f"{tag}: {text}", (
                "tls", program, "outbound", "established", True, s.proto, s.trust.lower(),
                s.cipher[0], s.host,
            )  # fmt: skip
            return text
        trust = s.trust
        if mode == "verify":
            what = ("server certificate verification failed for", "certificate verification "
                    "failed for")[self.randrange(2)]  # fmt: skip
            why = "num=62:hostname mismatch" if what[0] == "s" else "self-signed certificate"
            yield self.wait(100, 800), f"{tag}: {what} {s.peer}: {why}", None
            trust = "Untrusted"
        text = self.tls.line(trust, "established", "to", s.peer, s.proto, s.cipher, s.sig,
                             resumed=self.random() < 0.25)  # fmt: skip
        stat = (
            "tls", program, "outbound", "established", True, s.proto, trust.lower(), s.cipher[0],
            s.host,
        )  # fmt: skip
        yield self.wait(100, 900), f"{tag}: {text}", stat
        if mode == "verify":
            for rcpt in rcpts:
                yield self.wait(1, 30), self.dlv_line(
                    tag, msg, rcpt, s.peer, 400 * MS, 0, "4.7.5", "deferred",
                    "Server certificate not verified",
                ), (
                    "multi",
                    ("dlv", program, "deferred", "yes", "remote", None, None),
                    ("fail", "outbound", "certificate", None),
                )  # fmt: skip
            self.retry(msg, dom, rcpts, attempt)
            return "done"
        return text

    def keep_connection(self, s: Server, cached: Conn | None, summary: str | None) -> None:
        """Keep the connection for 2 s (scache for plaintext; tlsproxy holds TLS connections of
        servers with connection reuse, without it a TLS connection is never cached)."""
        expires = self.sim.now + 2 * SEC
        if cached is not None:
            cached.busy = False
            cached.expires = expires
            return
        if summary is not None and not s.reuse:
            return
        conn = Conn(s, expires, summary)
        self.cache[s.peer] = conn
        self.scache_stats[0] += 1
        if summary is not None:
            self.sim.spawn(self.tlsproxy_close(conn))

    def tlsproxy_close(self, conn: Conn) -> Session:
        while True:
            yield max(0, conn.expires - self.sim.now) + self.wait(1, 50), None, None
            if not conn.busy and conn.expires <= self.sim.now:
                break
        if self.cache.get(conn.server.peer) is conn:
            del self.cache[conn.server.peer]
        yield 1, f"{self.tlsproxy}: DISCONNECT [{conn.server.addr}]:25", None

    def retry(self, msg: Msg, dom: Domain, rcpts: list[str], attempt: int) -> None:
        """Schedule the next attempt (qmgr's backoff); after four, the message just waits."""
        if attempt < 4:
            backoff = (300, 600, 1200)[attempt - 1] * SEC + self.wait(0, 60000)
            self.sim.spawn(self.redeliver(msg, dom, rcpts, attempt + 1), backoff)

    def redeliver(self, msg: Msg, dom: Domain, rcpts: list[str], attempt: int) -> Session:
        yield (
            0,
            (
                f"{self.qmgr}: {msg.qid}: from=<{msg.sender}>, size={msg.size}, nrcpt={msg.nrcpt} "
                "(queue active)"
            ),
            None,
        )
        yield from self.outbound(msg, dom, rcpts, attempt)

    def bounce(self, msg: Msg) -> Session:
        if not msg.sender:
            return
        pool = self.pools["postfix/bounce"]
        proc = pool.acquire()
        nqid = self.qid()
        yield (
            self.wait(5, 50),
            (f"{proc.tag}: {msg.qid}: sender non-delivery notification: {nqid}"),
            None,
        )
        pool.release(proc)
        cleanup = self.pools["postfix/cleanup"]
        cproc = cleanup.acquire()
        note = Msg(
            self.sim.now, nqid, "", 2400 + self.getrandbits(12), self.msgid_for_bounce(nqid), 1
        )
        yield self.wait(0, 5), f"{cproc.tag}: {nqid}: message-id={note.msgid}", None
        cleanup.release(cproc)
        yield (
            self.wait(0, 5),
            (f"{self.qmgr}: {nqid}: from=<>, size={note.size}, nrcpt=1 (queue active)"),
            None,
        )
        self.route(note, [msg.sender], "user")

    def msgid_for_bounce(self, qid: str) -> str:
        return f"<{self.sim.stamper.wall(self.sim.now).strftime('%Y%m%d%H%M%S')}.{qid}@{MX_FQDN}>"

    # -- periodic statistics ----------------------------------------------------------------------

    def anvil_stats(self) -> Session:
        seen = self.anvil_max
        if not seen:
            return
        busiest = max(seen.items(), key=lambda kv: kv[1])
        self.anvil_max = {}
        when = self.clock()
        a = self.anvil
        yield (
            0,
            (
                f"{a}: statistics: max connection rate {min(busiest[1], 60)}/60s for "
                f"(smtp:{busiest[0]}) at {when}"
            ),
            None,
        )
        yield (
            self.wait(0, 3),
            (
                f"{a}: statistics: max connection count {1 + self.randrange(3)} for "
                f"(smtp:{busiest[0]}) at {when}"
            ),
            None,
        )
        yield self.wait(0, 3), (f"{a}: statistics: max cache size {len(seen)} at {when}"), None

    def scache_report(self) -> Session:
        used, hits = self.scache_stats
        if not used:
            return
        self.scache_stats = [0, 0]
        sc = self.scache
        start = self.sim.stamper.classic(max(0, self.sim.now - 600 * SEC))
        yield 0, f"{sc}: statistics: start interval {start}", None
        total = used + hits
        yield (
            self.wait(0, 3),
            (
                f"{sc}: statistics: domain lookup hits={hits} miss={used} "
                f"success={100 * hits // max(total, 1)}%"
            ),
            None,
        )
        yield (
            self.wait(0, 3),
            (f"{sc}: statistics: address lookup hits=0 miss={used} success=0%"),
            None,
        )
        yield (
            self.wait(0, 3),
            (
                f"{sc}: statistics: max simultaneous domains=1 addresses={min(used, 9)} "
                f"connection={min(used, 9)}"
            ),
            None,
        )

    # -- hostile peers ----------------------------------------------------------------------------

    def hostile_identity(self, i: int) -> tuple[str, str]:
        """The i-th attacker-controlled name and address: distinct for every i < 2**24."""
        length = 8 + (i * 7919) % 33
        label = "".join(_B36[(i * 31 + k * 17 + (i >> k % 8)) % 36] for k in range(length))
        name = f"{label}-{base36(i)}.{HOSTILE_ZONES[i % 3]}"
        addr = str(
            ipaddress.IPv6Address(_DOC_V6 | (0xFF00 | i >> 16) << 80 | (i & 0xFFFF) << 64 | 1)
        )
        return name, addr

    def _spawn_hostile(self) -> None:
        i = self.hostile_next
        self.hostile_next += 1
        name, addr = self.hostile_identity(i)
        if i % 10 < 7:
            c = Client("bot", addr, name, name.split(".", 1)[1])
            c.hostile = i
            c.starttls = self.random() < 0.6
            c.proto = ("TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3")[self.randrange(4)]
            c.cipher = self.tls.cipher(c.proto)
            c.broken = 0.1
            self.sim.spawn(self.postscreen_session(c))
        else:
            s = Server(name, addr, ("offered", "plain", "tls")[self.randrange(3)])
            s.trust = "Untrusted"
            s.proto = ("TLSv1", "TLSv1.2", "TLSv1.3")[self.randrange(3)]
            s.cipher = self.tls.cipher(s.proto)
            self.sim.spawn(self.hostile_outbound(s, i))

    def hostile_inbound(self, c: Client) -> Session:
        pool = self.pools["postfix/smtpd"]
        proc = pool.acquire()
        tag = proc.tag
        cmds = Commands()
        yield from self.connect_lines(tag, c, ("hostile", c.hostile))
        cmds.hit("ehlo")
        if c.starttls:
            ok = yield from self.inbound_tls(tag, "postfix/smtpd", c, cmds)
            if ok:
                cmds.hit("ehlo")
        if "starttls" not in cmds or cmds["starttls"][0]:
            cmds.hit("mail")
            cmds.hit("rcpt", False)
            rcpt = self.spam_sender()
            yield (
                self.wait(100, 900),
                (
                    f"{tag}: NOQUEUE: reject: RCPT from {c.peer}: 454 4.7.1 <{rcpt}>: Relay access "
                    f"denied; from=<postmaster@{c.domain}> to=<{rcpt}> proto=ESMTP helo=<{c.helo}>"
                ),
                None,
            )
            cmds.hit("quit")
        yield from self.disconnect(tag, c, cmds, "postfix/smtpd")
        pool.release(proc)

    def hostile_outbound(self, s: Server, i: int) -> Session:
        """A vacation auto-reply to a forged sender whose domain the attacker controls."""
        user = self.local_rcpt()
        rcpt = f"{_FIRST[i % len(_FIRST)]}@{s.name}"
        pool = self.pools["postfix/pickup"]
        proc = pool.acquire()
        qid = self.qid()
        yield 0, f"{proc.tag}: {qid}: uid=5000 from=<{user.split('@')[0]}>", None
        pool.release(proc)
        msg = Msg(self.sim.now, qid, user, 900 + self.getrandbits(10), self.msgid("example.org"), 1)
        msg.pending = 1
        yield (
            self.wait(1, 30),
            (f"{self.qmgr}: {qid}: from=<{user}>, size={msg.size}, nrcpt=1 (queue active)"),
            None,
        )
        pool = self.pools["postfix/smtp"]
        sproc = pool.acquire()
        tag = sproc.tag
        mark: tuple[str, int] | None = ("hostile", i)
        tls = s.mode == "tls"
        if s.mode == "offered":
            yield self.wait(100, 600), f"{tag}: Host offered STARTTLS: [{s.name}]", (
                "multi", ("offer", s.name), mark,
            )  # fmt: skip
            mark = None
        elif tls:
            text = self.tls.line(s.trust, "established", "to", s.peer, s.proto, s.cipher, s.sig)
            yield self.wait(100, 900), f"{tag}: {text}", (
                "multi",
                ("tls", "postfix/smtp", "outbound", "established", True, s.proto, "untrusted",
                 s.cipher[0], s.host),
                mark,
            )  # fmt: skip
            mark = None
        setup, xmit = self.wait(80, 900), self.wait(40, 900)
        yield setup + xmit, None, None
        dlv = ("dlv", "postfix/smtp", "sent", "yes" if tls else "no", "remote",
               None if tls else s.host, None)  # fmt: skip
        yield (
            0,
            self.dlv_line(tag, msg, rcpt, s.peer, setup, xmit, "2.0.0", "sent", "250 2.0.0 Ok"),
            dlv if mark is None else ("multi", dlv, mark),
        )
        pool.release(sproc)
        yield from self.finish(msg)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--lines", type=int, default=100_000, help="lines to write (default 100000)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--timestamps", choices=("syslog", "rfc3339", "postlog"), default="syslog")
    p.add_argument(
        "--start",
        default=DEFAULT_START,
        help=f"log time of the first line, ISO 8601 (default {DEFAULT_START})",
    )
    p.add_argument("--hostile-peers", type=int, default=0, metavar="N")
    p.add_argument("--stats", metavar="FILE", help="write the ground truth as JSON to FILE")
    p.add_argument("-o", "--output", metavar="FILE", help="write the log to FILE (default stdout)")
    args = p.parse_args(argv)
    if args.lines < 0:
        p.error("--lines must be >= 0")
    if args.hostile_peers < 0 or args.hostile_peers >= 1 << 24:
        p.error("--hostile-peers must be in 0 .. 16777215")
    if args.hostile_peers and args.lines < 10 * args.hostile_peers:
        p.error("--hostile-peers N needs --lines of at least 10 * N")
    try:
        start = dt.datetime.fromisoformat(args.start)
    except ValueError:
        p.error(f"--start: not an ISO 8601 time: {args.start!r}")
    rng = random.Random(args.seed)
    truth = Truth()
    stamper = Stamper(args.timestamps, start)
    postfix_only = args.timestamps == "postlog"
    with contextlib.ExitStack() as stack:
        out = sys.stdout
        if args.output:
            out = stack.enter_context(open(args.output, "w", encoding="ascii"))
        sim = Sim(stamper, truth, out, args.lines, postfix_only)
        Mx(sim, rng, start, args.hostile_peers).start()
        sim.run()
        out.flush()
    if args.stats:
        meta = {
            "lines": args.lines,
            "seed": args.seed,
            "timestamps": args.timestamps,
            "start": start.isoformat(),
            "hostile_peers": args.hostile_peers,
        }
        with open(args.stats, "w", encoding="utf-8") as f:
            json.dump(truth.report(meta), f, indent=1, sort_keys=True)
            f.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
