"""Pure correlation: join each delivery and each smtpd session to the TLS lines that belong to it.

Postfix logs a TLS handshake and the delivery it carried on separate lines, and the handshake
line has no queue ID. What joins them is the process: an smtp/lmtp process handles one
connection at a time, so a handshake it logs belongs to the deliveries it logs next for the same
relay; an smtpd process serves one client from ``connect from`` to ``disconnect from``.

The correlator keeps one small entry per process, keyed by (log host, syslog tag, pid), and
turns the parser's events into *outcomes* for the statistics:

* every completed handshake, once (``reused`` connections and tlsproxy's repeat of the smtp
  client's handshake are not new handshakes);
* every delivery with ``tls`` decided: ``yes`` when a handshake to the same relay was logged by
  the same process inside the delivery's connection window, ``no`` when it was not, or the
  server offered STARTTLS that we did not use, or Postfix 3.11's ``tls=`` field says so, and
  ``unknown`` when tlslogd started reading after that connection was set up (never a guess);
* every finished smtpd session with its use of STARTTLS, and every queued message with the TLS
  state of its session;
* every failed TLS attempt once, with the most specific reason its lines give (an
  ``SSL_accept error``, the ``TLS library problem`` that explains it and the ``lost connection
  after STARTTLS`` that follows are one failure).

Time is the log's own: entries expire by log timestamps, so replaying a file and tailing it give
the same outcomes. The table is bounded; evictions are counted.
"""

from __future__ import annotations

import ipaddress
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from tlslogd.events import (
    INBOUND,
    OUTBOUND,
    Delivery,
    Event,
    MessageReceived,
    MessageRejected,
    PostfixStarted,
    ProxyVerdict,
    SessionEnd,
    SessionStart,
    StarttlsOffered,
    TlsEstablished,
    TlsFailure,
    TlsFallback,
    TlsproxyConnection,
    split_peer,
    tag_cut,
)

Outcome = Event
Emit = Callable[[Outcome], None]
Key = tuple[str | None, str, int | None]

# How specific a failure reason is: a later line may refine a generic reason, never the reverse.
# which reason a failure of several lines keeps: the most specific; our own broken TLS setup
# over what the peer saw of it
_SPECIFIC = {"handshake": 0, "lost_connection": 1, "timeout": 1, "engine": 3}
_SWEEP_EVERY = 60.0  # seconds of log time between expiry sweeps
_SLACK = 2.0  # whole-second timestamps and two-digit delays: widen windows by this much
_PROXY_HANDSHAKE_SECONDS = 300.0  # tlsproxy's handshake ends within smtp_starttls_timeout
_ENGINE_LINES_SECONDS = 10.0  # a process logs the lines of one broken TLS setup at once


def _specificity(reason: str) -> int:
    return _SPECIFIC.get(reason, 2)


@dataclass(slots=True)
class TlsInfo:
    """What a delivery or a received message inherits from its connection's handshake."""

    peer: str
    ts: float | None
    trust: str
    protocol: str
    cipher: str


@dataclass(slots=True)
class Entry:
    """State of one Postfix process: an smtp/lmtp client or an smtpd session."""

    last_ts: float
    tls: TlsInfo | None = None
    tls_qid: str | None = None  # outbound: the queue ID the handshake was bound to
    offered: str | None = None  # outbound: host that offered STARTTLS (policy none)
    offered_ts: float | None = None
    offered_qid: str | None = None
    failure: TlsFailure | None = None  # a failed attempt whose last line may not be logged yet
    # outbound: the message whose TLS attempt failed ("Cannot start TLS"): its deliveries that
    # follow (the plaintext retry, another MX) had a failed TLS attempt
    failed_qid: str | None = None
    started: bool = False  # inbound: ``connect from`` was seen
    local: bool = False  # inbound: the client is in the local networks (a content filter, ...)
    # inbound: messages whose TLS only the session's end can tell (no handshake line logged)
    held: list[MessageReceived] = field(default_factory=list)
    # inbound: queued messages whose TLS is decided, counted when the session ends: until then
    # a milter or a header check may still reject them at the end of DATA, or the client may
    # leave before its DATA completes
    queued: list[MessageReceived] = field(default_factory=list)
    # inbound: messages a before-queue content filter has not accepted yet (NOQUEUE: client=)
    proxied: list[MessageReceived] = field(default_factory=list)
    # inbound: messages counted at once, not held (a full queue, a before-queue filter's): the
    # session's DATA counter counts them too
    passed: int = 0
    # inbound: STARTTLS failed because this process's TLS engine is off (counted once, when the
    # process logged it)
    engine_failed: bool = False


_HELD_MAX = 100  # messages held per session (smtpd's default recipient and message limits)
_WRAPPER_SERVICES = frozenset({"smtps", "submissions"})
# a held message's TLS, from its session's STARTTLS outcome
_MESSAGE_TLS = {"used": "yes", "implicit": "yes", "not_used": "no", "failed": "no", "no_ehlo": "no"}


def _instance(program: str) -> str:
    """The Postfix instance of a syslog tag: ``postfix`` for ``postfix/amavis/smtp``,
    ``postfix-out`` for ``postfix-out/smtp`` (whose main.cf sets the TLS log levels)."""
    return program.split("/", 1)[0]


def _wrapper_named(program: str) -> bool:
    """Whether the syslog tag names one of master.cf's stock wrapper-mode (port 465) services:
    ``postfix/smtps/smtpd``, ``postfix/submissions/smtpd``."""
    return not _WRAPPER_SERVICES.isdisjoint(program.split("/")[1:-1])


def _wait(queue: list[MessageReceived], ev: MessageReceived) -> bool:
    """Keep a message until its session can decide it; False when the session already holds
    as many as smtpd lets one session queue (decide it now instead)."""
    if len(queue) >= _HELD_MAX:
        return False
    queue.append(ev)
    return True


def _message_data(m: MessageReceived) -> list[Any]:
    """A waiting message in the checkpoint (see :func:`_message`)."""
    return [
        m.host,
        m.program,
        m.service,
        m.pid,
        m.ts,
        m.queue_id,
        m.peer,
        m.sasl_method,
        m.scope,
        m.tls,
        m.accepted,
    ]


def _message(data: list[Any]) -> MessageReceived:
    message = MessageReceived(*data[:8])
    message.scope = data[8]
    if len(data) > 9:  # older checkpoints kept only undecided ones
        message.tls = data[9]
    if len(data) > 10:
        message.accepted = bool(data[10])
    return message


def _uncompleted(entry: Entry, ev: SessionEnd) -> None:
    """Mark the messages of an ending session that were never queued: more of them are left
    than its Postfix 3.0+ command counters (a command the session never sent is left out)
    count successful DATA and BDAT commands. The client left in the middle of DATA (``lost
    connection after DATA``), abandoned the transaction (RSET) or the message was refused at
    the end of DATA. BDAT counts chunks, of which a message has one or more: the sum is an
    upper bound. The counters do not say which messages: the last ones are marked."""
    data, bdat = ev.counter("data"), ev.counter("bdat")
    most = max(0, (data[0] if data else 0) + (bdat[0] if bdat else 0) - entry.passed)
    left = [m for m in (*entry.held, *entry.queued) if m.accepted]
    for message in left[most:]:
        message.accepted = False


def merge_failure(first: TlsFailure, later: TlsFailure) -> TlsFailure:
    """One failure from two lines of the same attempt: the most specific reason, both details."""
    if later.source != "lost" and _specificity(later.reason) > _specificity(first.reason):
        first.reason = later.reason
    if later.detail and later.detail not in first.detail:
        first.detail = f"{first.detail}; {later.detail}" if first.detail else later.detail
    if first.peer is None or (first.source == "policy_map" and later.source == "policy"):
        first.peer = later.peer  # the policy lookup names the MX host, the map only the next-hop
    if first.queue_id is None:
        first.queue_id = later.queue_id
    return first


class LocalNetworks:
    """Decides whether a relay is local: a UNIX socket, or an address in the local networks
    (loopback by default) -- a content filter or a local LMTP server, not a remote peer."""

    def __init__(self, networks: Iterable[str] = ("127.0.0.0/8", "::1/128")) -> None:
        self._networks = [ipaddress.ip_network(n, strict=False) for n in networks]
        self._cache: dict[str, bool] = {}

    def is_local(self, addr: str | None) -> bool:
        if addr is None:
            return False
        known = self._cache.get(addr)
        if known is not None:
            return known
        try:
            ip = ipaddress.ip_address(addr.split("%", 1)[0])
            local = any(ip in n for n in self._networks)
        except ValueError:
            local = "/" in addr  # a socket path such as private/dovecot-lmtp
        if len(self._cache) > 4096:
            self._cache.clear()
        self._cache[addr] = local
        return local


def tls_from_feature(feature: str) -> str:
    """Postfix 3.11+ ``tls=`` delivery field -> yes | no | unknown.

    ``may``/``encrypt``/``verify``/``dane``... mean TLS was used at that level; ``:final`` is the
    level it was downgraded to (``may:none`` = plaintext); a leading ``!`` means the policy was
    violated and the connection not used; a trailing ``?`` means undecided."""
    level = feature.split("/", 1)[0]
    if level.startswith("!"):
        return "no"
    if level.endswith("?"):
        return "unknown"
    requested, _, final = level.partition(":")
    return "no" if (final or requested) == "none" else "yes"


def _same_host(relay: str, host: str) -> bool:
    """``Host offered STARTTLS: [name]`` names the server without address: compare names."""
    relay_host = split_peer(relay)[0]
    return relay_host is not None and relay_host.lower() == host.lower()


def _same_peer(relay: str, peer: str) -> bool:
    # 2.5+: the summary's peer is byte-identical to relay=; 2.2-2.4 logged the host name only.
    return relay == peer or ("[" not in peer and _same_host(relay, peer))


class Correlator:
    """The session table and the rules that join lines into outcomes. No I/O."""

    def __init__(
        self,
        *,
        ttl: float = 3600.0,
        max_entries: int = 10_000,
        is_local: Callable[[str | None], bool] | None = None,
    ) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self._is_local = is_local or LocalNetworks().is_local
        self._table: OrderedDict[Key, Entry] = OrderedDict()
        # log time from which tlslogd has read everything: a connection set up before it may
        # have logged its handshake in the part not read
        self.stream_start: float | None = None
        # seconds between the moment reading began at the end of the log (tlslogd run without
        # a saved position) and the chunk with the first event: the stream began that much
        # before that event
        self.quiet_start = 0.0
        self._next_sweep = 0.0
        self.evictions: dict[str, int] = {"expired": 0, "capacity": 0, "replaced": 0}
        self._local_peers: dict[str, bool] = {}  # relay or smtpd client -> in local_networks
        # (log host, Postfix instance, direction) seen logging a handshake summary: the
        # instance's smtpd_tls_loglevel / smtp_tls_loglevel is at least 1
        self._logging_tls: set[tuple[str | None, str, str]] = set()
        # (log host, syslog tag) of smtpd services seen offering STARTTLS: a session used or
        # tried it. Only there does a client that spoke EHLO without STARTTLS "not use" it
        self._offering_tls: set[tuple[str | None, str]] = set()
        # processes that logged that their own TLS engine is off ("disabling TLS support"):
        # their clients' failed STARTTLS is that failure again, not the clients'
        self._engine_down: set[Key] = set()
        # the log time of each process's last counted engine failure: the lines a process logs
        # for one broken file at its start are one failure; a later one (a new process that
        # reuses the pid) is another
        self._engine_counted: dict[Key, float | None] = {}
        # processes whose last line was a TLS setting replaced by a built-in default: the
        # OpenSSL errors they log next are part of that warning, not failures
        self._fallback: set[Key] = set()
        # tlsproxy's last "TLS library problem" per process: the reason of its next failure
        self._proxy_library: dict[Key, TlsFailure] = {}
        # the messages sessions hold back (held, queued), by queue ID: a rejection at the end of
        # DATA names only that
        self._waiting: dict[tuple[str | None, str], MessageReceived] = {}
        # CONNECTs not yet followed by their handshake, of tlsproxy processes whose tag was cut
        # to "postfix": their log times by process and "[addr]:port"
        self._proxy_connects: dict[tuple[Key, str], list[float]] = {}
        self._handlers: dict[type[Event], Callable[[Any, Emit], None]] = {
            Delivery: self._delivery,
            TlsEstablished: self._tls,
            SessionStart: self._session_start,
            SessionEnd: self._session_end,
            MessageReceived: self._message,
            StarttlsOffered: self._offered,
            TlsFailure: self._failure,
            PostfixStarted: self._postfix_started,
            TlsproxyConnection: self._proxy_connection,
            TlsFallback: self._tls_fallback,
            ProxyVerdict: self._proxy_verdict,
            MessageRejected: self._rejected,
        }

    def __len__(self) -> int:
        return len(self._table)

    def holds(self, ev: Event) -> bool:
        """Whether ``ev`` is a received message that still waits for its session to decide it
        (its TLS at the session's end, its queueing at a before-queue filter's verdict, a
        rejection at the end of its DATA)."""
        if type(ev) is not MessageReceived or not ev.accepted:
            return False
        entry = self._table.get((ev.host, ev.program, ev.pid))
        return entry is not None and any(
            m is ev for m in (*entry.held, *entry.queued, *entry.proxied)
        )

    def feed(self, ev: Event, emit: Emit) -> None:
        """Pass one event; ``emit`` gets its outcomes, in order. Deliveries, sessions and
        messages are annotated in place, so the event itself is complete afterwards (``tlslogd
        parse`` prints it)."""
        ts = ev.ts
        if ts is not None:
            if self.stream_start is None:
                self.stream_start = ts - self.quiet_start
            if ts >= self._next_sweep:
                self._sweep(ts, emit)
        if self._fallback and not (type(ev) is TlsFailure and ev.source == "library"):
            self._fallback.discard((ev.host, ev.program, ev.pid))  # the warning's lines ended
        handler = self._handlers.get(type(ev))
        if handler is not None:
            handler(ev, emit)

    def _tls(self, ev: TlsEstablished, emit: Emit) -> None:
        if self._proxy_connects:
            self._proxy_handshake(ev)
        if ev.service != "tlsproxy":  # tlsproxy's copies: the smtp client or smtpd logs its own
            # this instance logs its handshakes, and this process's TLS engine works
            if len(self._logging_tls) >= 1024:
                self._logging_tls.clear()
            self._logging_tls.add((ev.host, _instance(ev.program), ev.direction))
            self._engine_down.discard((ev.host, ev.program, ev.pid))
            if ev.direction == INBOUND:
                self._offers_tls(ev)
        if ev.direction == OUTBOUND:
            self._outbound_tls(ev, emit)
        else:
            self._inbound_tls(ev, emit)

    # -- table -----------------------------------------------------------------------------------

    def _entry(self, ev: Event, emit: Emit) -> Entry:
        key = (ev.host, ev.program, ev.pid)
        entry = self._table.get(key)
        ts = ev.ts if ev.ts is not None else 0.0
        if entry is None:
            entry = Entry(ts)
            self._table[key] = entry
            if len(self._table) > self.max_entries:
                _, old = self._table.popitem(last=False)
                self.evictions["capacity"] += 1
                self._release(old, emit)
        else:
            entry.last_ts = ts
            self._table.move_to_end(key)
        return entry

    def _release(self, entry: Entry, emit: Emit) -> None:
        """What an entry still holds when it leaves the table without its closing line: its
        pending failure, its queued messages, and its held messages (whose TLS stays unknown).
        A wrapper-mode hint whose delivery is not there is no failure: nothing says it failed."""
        if entry.failure is not None and entry.failure.source != "wrapper":
            emit(entry.failure)
            entry.failure = None
        self._flush(entry.queued, emit)
        self._flush(entry.held, emit)

    def _sweep(self, now: float, emit: Emit) -> None:
        self._next_sweep = now + _SWEEP_EVERY
        limit = now - self.ttl
        table = self._table
        while table:
            key, entry = next(iter(table.items()))
            if entry.last_ts >= limit:
                break
            del table[key]
            self.evictions["expired"] += 1
            self._release(entry, emit)

    def _window_start(self, ev: Delivery) -> float | None:
        """Earliest log time at which this delivery's connection could have been set up."""
        setup = ev.setup_seconds()
        if ev.ts is None or setup is None:
            return None
        return ev.ts - setup * 1.1 - _SLACK

    def _postfix_started(self, ev: PostfixStarted, emit: Emit) -> None:
        """A Postfix instance (re)started: its old processes are gone, and every line of the new
        ones comes after this one, so from here on the absence of a handshake is evidence."""
        instance = ev.program.rsplit("/", 1)[0]
        for key in [
            k for k in self._table if k[0] == ev.host and k[1].rsplit("/", 1)[0] == instance
        ]:
            entry = self._table.pop(key)
            self.evictions["replaced"] += 1
            self._release(entry, emit)
        self._engine_down = {k for k in self._engine_down if k[0] != ev.host}
        self.stream_start = 0.0

    # -- outbound (smtp, lmtp) -------------------------------------------------------------------

    def _outbound_tls(self, ev: TlsEstablished, emit: Emit) -> None:
        if ev.service == "tlsproxy":
            return  # the smtp process that asked for this connection logs it again
        entry = self._entry(ev, emit)
        pending = entry.failure
        if pending is not None and not (
            pending.reason == "certificate" and pending.peer == ev.peer
        ):
            emit(pending)  # an earlier attempt failed; this is a new connection
            entry.failure = None
        entry.tls = TlsInfo(ev.peer, ev.ts, ev.trust, ev.protocol, ev.cipher)
        entry.tls_qid = None
        entry.offered = None
        if not ev.reused:
            emit(ev)

    def _offered(self, ev: StarttlsOffered, emit: Emit) -> None:
        entry = self._entry(ev, emit)
        if entry.failure is not None and entry.failure.reason != "certificate":
            emit(entry.failure)  # e.g. a handshake failure, then a plaintext retry
        entry.failure = None
        entry.tls = None
        entry.offered = ev.peer
        entry.offered_ts = ev.ts
        entry.offered_qid = None
        emit(ev)

    def _delivery(self, ev: Delivery, emit: Emit) -> None:
        if "[" not in ev.relay:
            # relay=none (no connection was made), or a local agent (relay=local, virtual, a
            # pipe transport): no connection that could have used TLS, nothing to count --
            # except the failure that this deferral reports (a TLS policy that cannot be used)
            ev.tls = "no"
            ev.scope = None if ev.relay == "none" else "local"
            if ev.reason is not None:
                key = (ev.host, ev.program, ev.pid)
                entry = self._table.get(key)
                if entry is not None and entry.failure is not None:
                    emit(merge_failure(entry.failure, self._delivery_failure(ev)))
                    entry.failure = None
                elif (
                    ev.reason == "policy"
                    and ev.relay == "none"
                    and not (ev.status_text or "").startswith("delivery temporarily suspended")
                ):
                    # a dane-only policy refusing a destination (non DNSSEC destination, no
                    # TLSA records) logs nothing before this deferral: it is the failure
                    emit(self._delivery_failure(ev))
                if ev.scope is None:
                    emit(ev)  # mail that TLS held back without a connection
            return
        # LMTP hands mail to a mailbox store (Dovecot, Zimbra's mailboxd), wherever it runs
        local = ev.service == "lmtp" or self._local_peer(ev.relay)
        ev.scope = "local" if local else "remote"
        entry = self._entry(ev, emit)
        qid = ev.queue_id
        window = self._window_start(ev)
        tls = entry.tls
        pending = entry.failure
        if (
            tls is not None
            and (entry.tls_qid is None or entry.tls_qid == qid)
            and _same_peer(ev.relay, tls.peer)
            and (entry.tls_qid == qid or window is None or tls.ts is None or tls.ts >= window)
        ):
            entry.tls_qid = qid
            ev.tls = "yes"
            ev.tls_protocol, ev.tls_cipher, ev.tls_trust = tls.protocol, tls.cipher, tls.trust
        elif (
            entry.offered is not None
            and (entry.offered_qid is None or entry.offered_qid == qid)
            and _same_host(ev.relay, entry.offered)
            and (
                entry.offered_qid == qid
                or window is None
                or entry.offered_ts is None
                or entry.offered_ts >= window
            )
        ):
            entry.offered_qid = qid
            ev.tls = "no"
            ev.offered = True
        elif (
            ev.reason is None
            and pending is not None
            and pending.source == "cert"
            and pending.peer is not None
            and _same_peer(ev.relay, pending.peer)
        ):
            # Postfix 2.5-2.8 log a failed certificate check at any smtp_tls_loglevel, also 0,
            # where no summary follows: the handshake with this server happened and, at a level
            # that does not require a verified certificate, the mail went over it
            ev.tls = "yes"
            ev.tls_trust = "untrusted"
        elif (
            window is not None
            and self.stream_start is not None
            and window >= self.stream_start
            and self._logs_tls(ev, OUTBOUND)
        ):
            # Postfix logs nothing for a server without STARTTLS -- but neither does it for any
            # handshake at smtp_tls_loglevel = 0, nor does a log filtered with grep: only an
            # instance seen logging handshakes makes the absence of one evidence
            ev.tls = "no"
        else:
            ev.tls = "unknown"  # the connection began before tlslogd started reading
        if ev.tls_feature:
            decided = tls_from_feature(ev.tls_feature)
            if decided != ev.tls:
                ev.tls = decided
                if decided != "yes":
                    ev.tls_protocol = ev.tls_cipher = ev.tls_trust = None
        failures: list[TlsFailure] = []  # what this line completes, counted after it
        if (
            ev.reason in ("engine", "rejected")
            and (ev.host, ev.program, ev.pid) in self._engine_down
        ):
            # our TLS engine is off: counted once, and not the server's -- also when the server
            # then refuses our plaintext
            entry.failure = None
            ev.reason = "engine"
        elif ev.reason is not None:
            failure = self._delivery_failure(ev)
            if pending is not None and (pending.queue_id in (None, qid)):
                failure = merge_failure(pending, failure)
                ev.reason = failure.reason  # "Cannot start TLS" after "no protocols in common"
            elif pending is not None:
                failures.append(pending)
            entry.failure = None
            failures.append(failure)
        elif pending is not None:
            entry.failure = None
            if pending.source == "wrapper":
                # port 465 without wrapper mode: Postfix waits for a greeting while the server
                # waits for a TLS handshake -- unless the server speaks plaintext there too
                if "initial server greeting" in (ev.status_text or ""):
                    failures.append(pending)
                    ev.reason = pending.reason  # held back by our TLS setting
            elif pending.reason != "certificate":
                failures.append(pending)  # the handshake failed and the mail went in plaintext
        if entry.failed_qid != qid:
            entry.failed_qid = None
        ev.tls_failed = (
            ev.reason is not None
            or entry.failed_qid is not None
            or any(f.queue_id in (None, qid) for f in failures)
        )
        emit(ev)
        for failure in failures:
            emit(failure)

    @staticmethod
    def _delivery_failure(ev: Delivery) -> TlsFailure:
        """The TLS failure a delivery's status text reports."""
        return TlsFailure(
            ev.host,
            ev.program,
            ev.service,
            ev.pid,
            ev.ts,
            OUTBOUND,
            ev.relay,
            ev.reason or "handshake",
            ev.status_text or "",
            "delivery",
            ev.queue_id,
        )

    def _tls_fallback(self, ev: TlsFallback, emit: Emit) -> None:
        if len(self._fallback) >= 1024:
            self._fallback.clear()
        self._fallback.add((ev.host, ev.program, ev.pid))

    def _failure(self, ev: TlsFailure, emit: Emit) -> None:
        if ev.source == "library" and (ev.host, ev.program, ev.pid) in self._fallback:
            return  # why a TLS setting did not load; Postfix went on with its default
        if ev.service == "tlsproxy":
            self._proxy_failure(ev, emit)
            return
        key = (ev.host, ev.program, ev.pid)
        if ev.source == "engine":
            session = self._table.get(key)
            if session is not None and session.started and session.tls is None:
                # during an smtpd session (an smtps client dropped, an SNI certificate that does
                # not load): this session's handshake failed, by our doing; counted at its end
                pending = session.failure
                session.failure = ev if pending is None else merge_failure(pending, ev)
                return
            # at a process's start: complete in itself, counted once per process (Postfix logs
            # the file that does not load, then that TLS is off), and not a peer's doing
            if key in self._engine_counted:
                last = self._engine_counted[key]
                if last is None or ev.ts is None or ev.ts - last <= _ENGINE_LINES_SECONDS:
                    return
            if len(self._engine_down) >= 1024:
                self._engine_down.clear()
            if len(self._engine_counted) >= 1024:
                self._engine_counted.clear()
            self._engine_down.add(key)
            self._engine_counted[key] = ev.ts
            emit(ev)
            return
        if ev.source == "ssl_error":
            # a handshake was attempted: this process's TLS engine works (a new process on a
            # reused pid), and this failure and the lines after it are the peer's
            self._engine_down.discard(key)
        elif key in self._engine_down and (
            ev.source in ("lost", "library") or ev.reason == "engine"
        ):
            # TLS failed because our TLS engine is off: already counted as such
            session = self._table.get(key)
            if session is not None and session.started:
                session.engine_failed = True
            return
        entry = self._entry(ev, emit)
        if ev.peer is None and entry.tls is not None:
            ev.peer = entry.tls.peer  # the library problem of this process's TLS peer
        if entry.started and ev.source == "library" and tag_cut(ev.program):
            # the library problem of an smtpd session, not of a client
            ev.direction = INBOUND
            ev.service = "smtpd"
        pending = entry.failure
        if (
            pending is None
            and entry.tls is not None
            and (ev.source == "lost" or (ev.source == "library" and "unexpected eof" in ev.detail))
        ):
            # "lost connection/timeout after STARTTLS", or OpenSSL 3's "unexpected eof while
            # reading" when a client hangs up without close_notify (Postfix before 3.7.4):
            # after the handshake had succeeded, not a failed TLS attempt. Other library errors
            # after the handshake (a bad record MAC) do break TLS with that peer: they count.
            return
        if ev.source == "reason":  # "QUEUEID: Cannot start TLS: ..." before trying another MX
            emit(merge_failure(pending, ev) if pending is not None else ev)
            entry.failure = None
            entry.tls = None
            entry.failed_qid = ev.queue_id
            return
        if pending is None:
            entry.failure = ev
        elif ev.source == "ssl_error" and pending.source in ("ssl_error", "reason"):
            emit(pending)  # a new attempt in the same process
            entry.failure = ev
        else:
            entry.failure = merge_failure(pending, ev)
        if ev.source == "ssl_error":
            entry.tls = None

    def _proxy_failure(self, ev: TlsFailure, emit: Emit) -> None:
        """postscreen's STARTTLS runs in tlsproxy, and nobody else logs it: its "TLS handshake
        failed" line is the failure, with the reason of the library warning just before it.
        Outbound, the smtp client logs the failure of its delivery itself."""
        key = (ev.host, ev.program, ev.pid)
        if ev.source == "library":
            if len(self._proxy_library) >= 1024:
                self._proxy_library.clear()
            self._proxy_library[key] = ev
            return
        library = self._proxy_library.pop(key, None)
        if ev.source != "tlsproxy" or ev.direction != INBOUND:
            return
        if library is not None and (ev.ts or 0.0) - (library.ts or 0.0) <= 1.0:
            ev.reason = library.reason
            ev.detail = f"{ev.detail}; {library.detail}"
        emit(ev)

    def _local_peer(self, peer: str) -> bool:
        """Whether a relay or client (``host[addr]:port``) is in the local networks."""
        local = self._local_peers.get(peer)
        if local is None:
            local = self._is_local(split_peer(peer)[1])
            if len(self._local_peers) > 4096:
                self._local_peers.clear()
            self._local_peers[peer] = local
        return local

    def _client_scope(self, entry: Entry | None, peer: str) -> str:
        """A session's scope, and its messages': its client's, as ``connect from`` named it."""
        local = entry.local if entry is not None and entry.started else self._local_peer(peer)
        return "local" if local else "remote"

    def _offers_tls(self, ev: Event) -> None:
        """Note that ``ev``'s smtpd offers STARTTLS (one of its clients used or tried it)."""
        if len(self._offering_tls) >= 1024:
            self._offering_tls.clear()
        self._offering_tls.add((ev.host, ev.program))

    def _logs_tls(self, ev: Event, direction: str) -> bool:
        """Whether ``ev``'s Postfix instance was seen logging a handshake in ``direction``: only
        then is the absence of one evidence (its TLS loglevel is at least 1)."""
        return (ev.host, _instance(ev.program), direction) in self._logging_tls

    def _proxy_connection(self, ev: TlsproxyConnection, emit: Emit) -> None:
        """With a syslog tag cut to ``postfix`` (rsyslog's RFC 5424 APP-NAME), tlsproxy's
        handshake lines look like those of the smtp client or smtpd. tlsproxy logs ``CONNECT to
        [addr]:port`` (or ``from``) just before each handshake: remember it."""
        if not tag_cut(ev.program) or ev.what != "connect":
            return
        if len(self._proxy_connects) >= 1024:
            self._proxy_connects.clear()
        pending = self._proxy_connects.setdefault(((ev.host, ev.program, ev.pid), ev.peer), [])
        pending.append(ev.ts or 0.0)
        if len(pending) > 64:  # handshakes that failed
            del pending[0]

    def _proxy_handshake(self, ev: TlsEstablished) -> None:
        """A handshake with an ``[addr]:port`` that the same process logged a ``CONNECT`` for
        shortly before is tlsproxy's. One process serves many connections at once, several to
        the same server: each handshake takes the oldest pending ``CONNECT``."""
        bracket = ev.peer.find("[")
        if bracket < 0:
            return
        key = ((ev.host, ev.program, ev.pid), ev.peer[bracket:])
        pending = self._proxy_connects.get(key)
        if pending is None:
            return
        ts = ev.ts or 0.0
        while pending and ts - pending[0] > _PROXY_HANDSHAKE_SECONDS:
            del pending[0]
        if pending:
            del pending[0]
            ev.service = "tlsproxy"
        if not pending:
            del self._proxy_connects[key]

    # -- inbound (smtpd) -------------------------------------------------------------------------

    def _session_start(self, ev: SessionStart, emit: Emit) -> None:
        key = (ev.host, ev.program, ev.pid)
        old = self._table.pop(key, None)
        if old is not None:
            self.evictions["replaced"] += 1
            self._release(old, emit)
        entry = self._entry(ev, emit)
        entry.started = True
        entry.local = self._local_peer(ev.peer)

    def _inbound_tls(self, ev: TlsEstablished, emit: Emit) -> None:
        emit(ev)
        if ev.service == "tlsproxy":
            return  # postscreen's STARTTLS session: no smtpd session to attach it to
        entry = self._entry(ev, emit)
        entry.tls = TlsInfo(ev.peer, ev.ts, ev.trust, ev.protocol, ev.cipher)

    def _message(self, ev: MessageReceived, emit: Emit) -> None:
        if ev.orig_client is not None:
            # re-injected by a content filter: counted in the original client's session
            ev.scope = "local" if self._local_peer(ev.peer) else "remote"
            return
        entry = self._entry(ev, emit)
        ev.scope = self._client_scope(entry, ev.peer)
        # a before-queue content filter (smtpd_proxy_filter) gets the message first: it is
        # received only when the filter accepts it at the end of DATA
        if ev.queue_id != "NOQUEUE" or not _wait(entry.proxied, ev):
            self._decide(ev, entry, emit)

    def _proxy_verdict(self, ev: ProxyVerdict, emit: Emit) -> None:
        entry = self._table.get((ev.host, ev.program, ev.pid))
        if entry is None or not entry.proxied:
            return
        if ev.accepted:
            self._decide(entry.proxied.pop(0), entry, emit)
        elif ev.text.startswith("END-OF-MESSAGE"):
            entry.proxied.pop(0).accepted = False  # rejected at the end of DATA: not queued

    def _decide(self, ev: MessageReceived, entry: Entry, emit: Emit) -> None:
        """A queued message's TLS, from its session, now or when the session ends."""
        if entry.tls is not None:
            ev.tls = "yes"
        elif entry.started and self._logs_tls(ev, INBOUND):
            ev.tls = "no"  # this instance logs its handshakes, and the session had none
        elif (entry.started or ev.service == "smtpd") and self._keep(entry.held, ev):
            # no handshake line: the session began before the log (its handshake may be in the
            # part not read), or this smtpd logs none yet (with smtpd_tls_loglevel = 0 there
            # never is one). The session's STARTTLS counter decides when it ends
            return
        # a before-queue filter's accepted message: nothing rejects it later; qmqpd's: no
        # session end to wait for
        if ev.queue_id == "NOQUEUE" or ev.service != "smtpd" or not self._keep(entry.queued, ev):
            entry.passed += 1
            emit(ev)

    def _keep(self, queue: list[MessageReceived], ev: MessageReceived) -> bool:
        """Hold a message back in one of its session's queues (False when that is full)."""
        if not _wait(queue, ev):
            return False
        if ev.queue_id != "NOQUEUE":
            self._waiting[ev.host, ev.queue_id] = ev
        return True

    def _flush(self, queue: list[MessageReceived], emit: Emit) -> None:
        """Pass on the messages a session held back (those not accepted after all too: they
        are counted as not received)."""
        waiting = self._waiting
        for message in queue:
            key = (message.host, message.queue_id)
            if waiting.get(key) is message:
                del waiting[key]
            emit(message)
        queue.clear()

    def _rejected(self, ev: MessageRejected, emit: Emit) -> None:
        message = self._waiting.pop((ev.host, ev.queue_id), None)
        if message is not None:
            message.accepted = False

    def _session_end(self, ev: SessionEnd, emit: Emit) -> None:
        key = (ev.host, ev.program, ev.pid)
        entry = self._table.pop(key, None)
        starttls = ev.counter("starttls")
        modern = " commands=" in ev.counters_text  # Postfix 3.0+ command counters
        if starttls is not None:  # a handshake already told (_tls)
            self._offers_tls(ev)
        failure = entry.failure if entry is not None else None
        ev.scope = self._client_scope(entry, ev.peer)
        if entry is not None and entry.tls is not None:
            # no STARTTLS counter: implicit TLS (Postfix 3.0+ counts every command; before, a
            # stock wrapper-mode service's name says so)
            implicit = starttls is None and (modern or _wrapper_named(ev.program))
            ev.starttls = "implicit" if implicit else "used"
            ev.tls_protocol, ev.tls_cipher = entry.tls.protocol, entry.tls.cipher
        elif starttls is not None:
            ev.starttls = "used" if starttls[0] > 0 else "failed"
        elif entry is not None and entry.engine_failed:
            ev.starttls = "failed"  # smtpd answered STARTTLS with 454: our TLS engine is off
        elif (
            failure is not None
            and failure.source == "lost"
            and (entry is None or not entry.started)
        ):
            # "lost connection after STARTTLS" of a session that began before the log: its
            # handshake may well be in the part not read
            ev.starttls = "unknown"
            failure = None
        elif failure is not None:
            ev.starttls = "failed"  # e.g. a wrapper-mode (smtps) handshake failure
        elif entry is None or not entry.started:
            ev.starttls = "unknown"  # the session began before tlslogd was reading
        elif not modern:
            # Postfix 2.x logs no command counters: where this smtpd instance logs its
            # handshakes, a whole session without one did not use TLS (EHLO or not)
            ev.starttls = "not_used" if self._logs_tls(ev, INBOUND) else "unknown"
        elif _wrapper_named(ev.program) and not self._logs_tls(ev, INBOUND):
            # implicit TLS from the first byte, and with smtpd_tls_loglevel = 0 no line says so
            ev.starttls = "unknown"
        elif ev.counter("ehlo") is not None:
            ev.starttls = "not_used"
        else:
            ev.starttls = "no_ehlo"
        if ev.starttls == "not_used":
            # the client declined STARTTLS only if it was offered: where this smtpd service is
            # seen offering it; before that, or where TLS is off for the service, who knows
            ev.offered = (ev.host, ev.program) in self._offering_tls
        succeeded = starttls is not None and starttls[0] >= starttls[1] > 0
        if failure is not None and failure.source == "lost" and succeeded:
            failure = None  # the handshake succeeded (smtpd_tls_loglevel 0 logs no summary)
        if entry is not None:
            tls = _MESSAGE_TLS.get(ev.starttls, "unknown")
            for message in entry.held:
                message.tls = tls
            if modern:
                _uncompleted(entry, ev)
            for message in entry.proxied:
                message.accepted = False  # the before-queue filter never took it
            self._flush(entry.queued, emit)
            self._flush(entry.held, emit)
        emit(ev)
        if failure is not None:
            if failure.peer is None:
                failure.peer = ev.peer
            emit(failure)
        elif ev.starttls == "failed" and key not in self._engine_down:
            # STARTTLS failed but no SSL_accept line was logged (smtpd_tls_loglevel = 0)
            emit(
                TlsFailure(
                    ev.host,
                    ev.program,
                    ev.service,
                    ev.pid,
                    ev.ts,
                    INBOUND,
                    ev.peer,
                    "handshake",
                    "starttls=0 in the session's command counters",
                    "counters",
                )
            )

    # -- durable state ---------------------------------------------------------------------------

    def finish(self, emit: Emit) -> None:
        """The end of the input (``tlslogd report``): failures still waiting for the line that
        would complete them (a delivery, a disconnect) count as they are, and messages whose
        session did not end, with ``tls="unknown"``."""
        for entry in self._table.values():
            self._release(entry, emit)

    def snapshot(self) -> dict[str, Any]:
        """The table as JSON-able data, for the checkpoint (see :meth:`restore`)."""
        entries = []
        for (host, program, pid), e in self._table.items():
            f = e.failure
            entries.append(
                {
                    "key": [host, program, pid],
                    "last_ts": e.last_ts,
                    "tls": None
                    if e.tls is None
                    else [e.tls.peer, e.tls.ts, e.tls.trust, e.tls.protocol, e.tls.cipher],
                    "tls_qid": e.tls_qid,
                    "offered": e.offered,
                    "offered_ts": e.offered_ts,
                    "offered_qid": e.offered_qid,
                    "failed_qid": e.failed_qid,
                    "started": e.started,
                    "local": e.local,
                    "held": [_message_data(m) for m in e.held],
                    "queued": [_message_data(m) for m in e.queued],
                    "proxied": [_message_data(m) for m in e.proxied],
                    "passed": e.passed,
                    "engine_failed": e.engine_failed,
                    "failure": None
                    if f is None
                    else [
                        f.host,
                        f.program,
                        f.service,
                        f.pid,
                        f.ts,
                        f.direction,
                        f.peer,
                        f.reason,
                        f.detail,
                        f.source,
                        f.queue_id,
                    ],
                }
            )
        return {
            "stream_start": self.stream_start,
            "next_sweep": self._next_sweep,
            "entries": entries,
            "logging_tls": sorted(self._logging_tls, key=lambda k: (k[0] or "", k[1], k[2])),
            "offering_tls": sorted(
                ([*k] for k in self._offering_tls), key=lambda k: (k[0] or "", k[1])
            ),
            "engine_down": sorted(
                ([*k] for k in self._engine_down), key=lambda k: (k[0] or "", k[1], k[2] or 0)
            ),
        }

    def restore(self, data: dict[str, Any]) -> None:
        self.stream_start = data.get("stream_start")
        self._next_sweep = float(data.get("next_sweep") or 0.0)
        self._logging_tls = {
            (host, instance, direction) for host, instance, direction in data.get("logging_tls", ())
        }
        self._engine_down = {
            (host, program, pid) for host, program, pid in data.get("engine_down", ())
        }
        self._offering_tls = {(host, program) for host, program in data.get("offering_tls", ())}
        self._table.clear()
        for item in data.get("entries", []):
            host, program, pid = item["key"]
            tls = item.get("tls")
            failure = item.get("failure")
            self._table[(host, program, pid)] = Entry(
                last_ts=float(item["last_ts"]),
                tls=None if tls is None else TlsInfo(*tls),
                tls_qid=item.get("tls_qid"),
                offered=item.get("offered"),
                offered_ts=item.get("offered_ts"),
                offered_qid=item.get("offered_qid"),
                failed_qid=item.get("failed_qid"),
                failure=None if failure is None else TlsFailure(*failure),
                started=bool(item.get("started")),
                local=bool(item.get("local")),
                held=[_message(m) for m in item.get("held") or ()],
                queued=[_message(m) for m in item.get("queued") or ()],
                proxied=[_message(m) for m in item.get("proxied") or ()],
                passed=int(item.get("passed") or 0),
                engine_failed=bool(item.get("engine_failed")),
            )
        self._waiting = {
            (m.host, m.queue_id): m
            for e in self._table.values()
            for m in (*e.held, *e.queued)
            if m.queue_id != "NOQUEUE" and m.accepted
        }
