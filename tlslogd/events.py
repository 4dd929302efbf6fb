"""Typed events: what one Postfix log line says about TLS, sessions and deliveries.

The parser creates one event per interesting line; the correlator fills in what only the
surrounding lines can tell (``Delivery.tls``, ``SessionEnd.starttls``, ``MessageReceived.tls``).
Events are plain slotted dataclasses: they are created for about half of all log lines, so they
stay cheap. ``tlslogd.records`` turns them into the JSON that ``tlslogd parse`` writes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

INBOUND = "inbound"
OUTBOUND = "outbound"

# Closed set of failure reasons (see README, "Failure reasons").
REASONS = (
    "protocol",  # no common protocol version (e.g. a TLSv1-only client refused)
    "cipher",  # no shared cipher or signature algorithm, or too weak for the peer
    "certificate",  # peer certificate missing, untrusted, expired or not matching the policy
    "lost_connection",  # the peer went away during the handshake
    "timeout",  # nothing followed STARTTLS in time
    "not_offered",  # TLS required but the server did not offer STARTTLS
    "refused",  # the server refused STARTTLS, or smtpd refused it (rate limit)
    "engine",  # our own TLS engine or TLS configuration is broken
    "policy",  # DANE/TLSA or other policy lookup failure
    "rejected",  # the server's reply refused the mail for a TLS reason ("530 5.7.0 Must issue ...")
    "handshake",  # any other handshake failure
)

LEGACY_PROTOCOLS = frozenset({"SSLv2", "SSLv3", "TLSv1", "TLSv1.1"})


def split_peer(peer: str | None) -> tuple[str | None, str | None, int | None]:
    """Split ``host[addr]:port`` at brackets, never at colons.

    Handles IPv6 (``mx[2001:db8::1]:25``), ``unknown[unknown]``, socket paths
    (``mail[private/dovecot-lmtp]``), ``[addr]:port`` (tlsproxy, postscreen) and bare host names
    (Postfix 2.2-2.4 client summaries, ``Host offered STARTTLS: [name]``).
    """
    if not peer:
        return None, None, None
    i = peer.find("[")
    if i < 0:
        return peer, None, None
    j = peer.rfind("]")
    host = peer[:i] or None
    if j < i:  # truncated line
        return host, peer[i + 1 :] or None, None
    addr = peer[i + 1 : j] or None
    rest = peer[j + 1 :]
    port = int(rest[1:]) if rest[:1] == ":" and rest[1:].isdigit() else None
    return host, addr, port


def tag_cut(program: str) -> bool:
    """Whether a syslog tag lost its daemon: rsyslog's RFC 5424 APP-NAME cuts ``postfix/smtpd``
    at the first slash, to ``postfix``."""
    return "/" not in program


@dataclass(slots=True)
class Event:
    """Fields every event has: where and when the line was logged, and by which process."""

    kind: ClassVar[str] = "event"
    host: str | None  # the log host (syslog header)
    program: str  # the whole syslog tag, e.g. postfix/submission/smtpd
    service: str  # the Postfix daemon: the tag's last component (smtpd, smtp, lmtp, ...)
    pid: int | None
    ts: float | None  # log time, seconds since the epoch
    line: str | None = field(default=None, init=False)


@dataclass(slots=True)
class TlsEstablished(Event):
    kind: ClassVar[str] = "tls_established"
    direction: str  # inbound | outbound
    peer: str
    trust: str  # anonymous | untrusted | trusted | verified | none (no trust word before 2.5)
    protocol: str
    cipher: str
    cipher_bits: int
    cipher_alg_bits: int
    reused: bool = False
    sni: str | None = None
    key_exchange: str | None = None
    server_signature: str | None = None
    server_digest: str | None = None
    client_signature: str | None = None
    client_digest: str | None = None


@dataclass(slots=True)
class StarttlsOffered(Event):
    """``Host offered STARTTLS: [name]``: the server offered STARTTLS and we did not use it."""

    kind: ClassVar[str] = "starttls_offered"
    direction: ClassVar[str] = OUTBOUND
    peer: str  # the server name as logged (no address)


@dataclass(slots=True)
class TlsFailure(Event):
    kind: ClassVar[str] = "tls_failure"
    direction: str
    peer: str | None
    reason: str
    detail: str
    # which kind of line: ssl_error, library, tlsproxy, lost, cert, reason, abort, policy_map, ...
    source: str
    queue_id: str | None = None


@dataclass(slots=True)
class Delivery(Event):
    kind: ClassVar[str] = "delivery"
    direction: ClassVar[str] = OUTBOUND
    queue_id: str
    to: str
    relay: str
    status: str
    conn_use: int | None = None
    delay: str | None = None
    delays: str | None = None
    tls_feature: str | None = None  # Postfix 3.11+ tls= field, as logged
    dsn: str | None = None
    status_text: str | None = None
    reason: str | None = None  # a failure reason when the status text is a TLS failure
    tls: str = "unknown"  # decided by the correlator: yes | no | unknown
    offered: bool = False  # decided by the correlator: plaintext to a server offering STARTTLS
    # decided by the correlator: a TLS attempt of this delivery failed (this line says so, or
    # the lines before it: a plaintext retry after a failed handshake)
    tls_failed: bool = False
    # decided by the correlator: local (socket, loopback, a local agent) | remote; None for
    # relay=none (no connection was made)
    scope: str | None = "remote"
    tls_protocol: str | None = None  # decided by the correlator
    tls_cipher: str | None = None
    tls_trust: str | None = None

    @property
    def peer(self) -> str | None:
        return None if self.relay == "none" else self.relay

    def setup_seconds(self) -> float | None:
        """Seconds between the start of connection setup and this line: delays c + d (or the
        whole delay when ``delays`` is not logged, Postfix 2.2)."""
        try:
            if self.delays:
                parts = self.delays.split("/")
                if len(parts) == 4:
                    return float(parts[2]) + float(parts[3])
            return float(self.delay) if self.delay else None
        except ValueError:
            return None


@dataclass(slots=True)
class SessionStart(Event):
    kind: ClassVar[str] = "session_start"
    direction: ClassVar[str] = INBOUND
    peer: str


@dataclass(slots=True)
class SessionEnd(Event):
    kind: ClassVar[str] = "session_end"
    direction: ClassVar[str] = INBOUND
    peer: str
    counters_text: str  # what follows the peer: " ehlo=2 starttls=1 ... commands=7" (3.0+)
    starttls: str | None = None  # decided by the correlator: used|implicit|failed|not_used|...
    tls_protocol: str | None = None  # the session's handshake, from the correlator
    tls_cipher: str | None = None
    scope: str = "remote"  # decided by the correlator: local (a client in local_networks)
    # decided by the correlator: this smtpd service was seen offering STARTTLS (a client used or
    # tried it), so a client that spoke EHLO without it declined it
    offered: bool = False

    def counter(self, name: str) -> tuple[int, int] | None:
        """(succeeded, attempted) of one command counter, None when not logged."""
        text = self.counters_text
        i = text.find(" " + name + "=")
        if i < 0:
            return None
        value = text[i + len(name) + 2 :].split(" ", 1)[0]
        ok, slash, total = value.partition("/")
        if not ok.isdigit() or (slash and not total.isdigit()):
            return None
        return int(ok), int(total) if slash else int(ok)

    @property
    def counters(self) -> dict[str, tuple[int, int]]:
        """Every command counter of Postfix 3.0+ (``commands`` included); empty before 3.0."""
        out: dict[str, tuple[int, int]] = {}
        for word in self.counters_text.split():
            name, eq, _ = word.partition("=")
            if eq and name != "notes":
                pair = self.counter(name)
                if pair is not None:
                    out[name] = pair
        return out

    @property
    def notes(self) -> str | None:
        i = self.counters_text.find(" notes=")
        return self.counters_text[i + 7 :].split(" ", 1)[0] if i >= 0 else None


@dataclass(slots=True)
class MessageReceived(Event):
    """``QUEUEID: client=host[addr]``: smtpd queued a message in the current session."""

    kind: ClassVar[str] = "message_received"
    direction: ClassVar[str] = INBOUND
    queue_id: str
    peer: str
    sasl_method: str | None = None
    # the original client of a message a content filter re-injected (XFORWARD), already
    # counted in its own session
    orig_client: str | None = None
    tls: str = "unknown"  # decided by the correlator
    scope: str = "remote"  # decided by the correlator, as its session's
    # False when the message was not queued after all: rejected at the end of DATA (a milter,
    # header or body check) or its DATA never completed; decided by the correlator when the
    # session ends, and such a message is not counted as received
    accepted: bool = True


@dataclass(slots=True)
class MessageRejected(Event):
    """``QUEUEID: reject: header ...``, ``QUEUEID: milter-reject: END-OF-MESSAGE from ...``: a
    message smtpd had queued (``client=``) was refused as a whole at the end of DATA, by cleanup
    (header_checks, body_checks, a milter) or by smtpd (smtpd_data_restrictions,
    smtpd_end_of_data_restrictions); the client got an error. Or it was discarded
    (``discard: ...``, ``milter-discard: ...``: a DISCARD action at any stage): the client was
    told it was delivered, but it was never queued. Either way nothing was received."""

    kind: ClassVar[str] = "message_rejected"
    direction: ClassVar[str] = INBOUND
    queue_id: str
    detail: str  # the action and what follows: "milter-reject: END-OF-MESSAGE from ..."
    peer: str | None  # the client, as ``from host[addr]`` names it


@dataclass(slots=True)
class ProxyVerdict(Event):
    """``proxy-accept: END-OF-MESSAGE: ...`` / ``proxy-reject: ...``: the before-queue content
    filter (``smtpd_proxy_filter``) took the message that ``NOQUEUE: client=`` announced, or not."""

    kind: ClassVar[str] = "proxy_verdict"
    direction: ClassVar[str] = INBOUND
    accepted: bool
    text: str


@dataclass(slots=True)
class TlsproxyConnection(Event):
    """tlsproxy ``CONNECT to|from [addr]:port`` and ``DISCONNECT [addr]:port``."""

    kind: ClassVar[str] = "tlsproxy_connection"
    what: str  # connect | disconnect
    direction: str | None
    peer: str


@dataclass(slots=True)
class PostfixStarted(Event):
    """``postfix/master[pid]: daemon started -- version X, configuration Y``: every Postfix
    process of this instance is new from here on."""

    kind: ClassVar[str] = "postfix_started"
    version: str


@dataclass(slots=True)
class TlsFallback(Event):
    """``warning: cannot load 1024-bit DH parameters from file F -- using compiled-in
    defaults``: a TLS setting that does not load, replaced by Postfix's built-in default. TLS
    works; the OpenSSL errors that the process logs next belong to this warning."""

    kind: ClassVar[str] = "tls_fallback"
    direction: str
    detail: str


@dataclass(slots=True)
class Unrecognised(Event):
    """A line that looks like one tlslogd reads but does not parse (truncated, new format, ...)."""

    kind: ClassVar[str] = "unrecognised"


@dataclass(slots=True)
class Ignored(Event):
    """A well-formed log line that says nothing tlslogd counts (only ``parse --all`` shows it)."""

    kind: ClassVar[str] = "ignored"
