"""The JSON shape of an event, as ``tlslogd parse`` writes it (one object per line)."""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from tlslogd.events import (
    Delivery,
    Event,
    MessageReceived,
    MessageRejected,
    PostfixStarted,
    ProxyVerdict,
    SessionEnd,
    TlsEstablished,
    TlsFailure,
    TlsFallback,
    TlsproxyConnection,
    split_peer,
)


class EventRecord(BaseModel):
    """One line of ``tlslogd parse`` output (JSON Lines). Keys that a line does not say are null."""

    model_config = ConfigDict(extra="forbid")

    line: str | None
    kind: str
    direction: Literal["inbound", "outbound"] | None
    service: str | None
    program: str | None
    host: str | None
    pid: int | None
    timestamp: str | None
    peer_host: str | None
    peer_addr: str | None
    peer_port: int | None
    # tls_established
    trust: str | None = None
    protocol: str | None = None
    cipher: str | None = None
    cipher_bits: int | None = None
    cipher_alg_bits: int | None = None
    key_exchange: str | None = None
    server_signature: str | None = None
    server_digest: str | None = None
    client_signature: str | None = None
    client_digest: str | None = None
    reused: bool | None = None
    sni: str | None = None
    # tls_failure (reason also on deliveries whose status text is a TLS failure)
    reason: str | None = None
    detail: str | None = None
    # delivery / message_received
    queue_id: str | None = None
    to: str | None = None
    relay: str | None = None
    conn_use: int | None = None
    delay: float | None = None
    delays: str | None = None
    tls_feature: str | None = None
    dsn: str | None = None
    status: str | None = None
    tls: Literal["yes", "no", "unknown"] | None = None
    starttls_offered: bool | None = None
    scope: Literal["local", "remote"] | None = None
    sasl_method: str | None = None
    orig_client: str | None = None
    accepted: bool | None = None
    # session_end
    counters: dict[str, str] | None = None
    commands: str | None = None
    starttls: str | None = None
    notes: str | None = None
    # tlsproxy_connection
    action: str | None = None
    # postfix_started
    version: str | None = None


def _iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return dt.datetime.fromtimestamp(ts).astimezone().isoformat()


def _number(text: str | None) -> float | None:
    try:
        return float(text) if text else None
    except ValueError:
        return None


def _ratio(pair: tuple[int, int]) -> str:
    ok, total = pair
    return str(ok) if ok == total else f"{ok}/{total}"


def to_record(ev: Event) -> dict[str, Any]:
    """The JSON object ``tlslogd parse`` writes for an event (see :class:`EventRecord`)."""
    host, addr, port = split_peer(getattr(ev, "peer", None))
    if addr == "unknown":
        addr = None  # unknown[unknown]: Postfix has no address for the client
    rec: dict[str, Any] = {
        "line": ev.line,
        "kind": ev.kind,
        "direction": getattr(ev, "direction", None),
        "service": ev.service or None,
        "program": ev.program or None,
        "host": ev.host,
        "pid": ev.pid,
        "timestamp": _iso(ev.ts),
        "peer_host": host,
        "peer_addr": addr,
        "peer_port": port,
    }
    if isinstance(ev, TlsEstablished):
        rec.update(
            trust=ev.trust,
            protocol=ev.protocol,
            cipher=ev.cipher,
            cipher_bits=ev.cipher_bits,
            cipher_alg_bits=ev.cipher_alg_bits,
            key_exchange=ev.key_exchange,
            server_signature=ev.server_signature,
            server_digest=ev.server_digest,
            client_signature=ev.client_signature,
            client_digest=ev.client_digest,
            reused=ev.reused,
            sni=ev.sni,
        )
    elif isinstance(ev, TlsFailure):
        rec.update(reason=ev.reason, detail=ev.detail, queue_id=ev.queue_id)
    elif isinstance(ev, TlsFallback):
        rec.update(detail=ev.detail)
    elif isinstance(ev, Delivery):
        rec.update(
            queue_id=ev.queue_id,
            to=ev.to,
            relay=ev.relay,
            conn_use=ev.conn_use,
            delay=_number(ev.delay),
            delays=ev.delays,
            tls_feature=ev.tls_feature,
            dsn=ev.dsn,
            status=ev.status,
            detail=ev.status_text,
            reason=ev.reason,
            tls=ev.tls,
            starttls_offered=ev.offered,
            scope=ev.scope,
            protocol=ev.tls_protocol,
            cipher=ev.tls_cipher,
            trust=ev.tls_trust,
        )
    elif isinstance(ev, MessageReceived):
        rec.update(
            queue_id=ev.queue_id,
            sasl_method=ev.sasl_method,
            orig_client=ev.orig_client,
            tls=ev.tls,
            scope=ev.scope,
            accepted=ev.accepted,
        )
    elif isinstance(ev, MessageRejected):
        rec.update(queue_id=ev.queue_id, detail=ev.detail)
    elif isinstance(ev, SessionEnd):
        commands = ev.counters.get("commands")
        rec.update(
            counters={k: _ratio(v) for k, v in ev.counters.items() if k != "commands"},
            commands=_ratio(commands) if commands else None,
            starttls=ev.starttls,
            scope=ev.scope,
            notes=ev.notes,
            protocol=ev.tls_protocol,
            cipher=ev.tls_cipher,
        )
    elif isinstance(ev, TlsproxyConnection):
        rec.update(action=ev.what)
    elif isinstance(ev, ProxyVerdict):
        rec.update(action="accept" if ev.accepted else "reject", detail=ev.text)
    elif isinstance(ev, PostfixStarted):
        rec.update(version=ev.version)
    return rec
