"""The built-in status page at ``/``: server-rendered HTML from the same data as the JSON API.

No build step, no external fonts, scripts or CDNs (mail servers are often offline); readable on
a phone and on a wide screen; refreshes itself.
"""

from __future__ import annotations

from html import escape
from typing import Any

_CSS = """
body{font:15px/1.4 system-ui,sans-serif;margin:0;background:#f6f7f9;color:#1d232a}
header{background:#1d3557;color:#fff;padding:.8em 1.2em}
header h1{font-size:1.2em;margin:0}
main{padding:1em;display:grid;gap:1em;grid-template-columns:repeat(auto-fit,minmax(20em,1fr))}
section{background:#fff;border-radius:8px;padding:.8em 1em;box-shadow:0 1px 3px #0002}
h2{font-size:1em;margin:.2em 0 .6em}
.big{font-size:2em;font-weight:600}
table{border-collapse:collapse;width:100%}
td,th{text-align:left;padding:.2em .4em;border-bottom:1px solid #eee}
td.n{text-align:right;font-variant-numeric:tabular-nums}
.bad{color:#b00020}.ok{color:#1b7f3b}
.banner{padding:.8em 1.2em;background:#b00020;color:#fff;font-weight:600}
a{color:#1d3557}
"""

LEGACY = {"SSLv2", "SSLv3", "TLSv1", "TLSv1.1"}


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{value:.1f}%"


def _table(rows: list[tuple[str, int]], legacy: bool = False) -> str:
    if not rows:
        return "<p>none yet</p>"
    out = []
    for name, count in rows:
        css = ' class="bad"' if legacy and name in LEGACY else ""
        out.append(f'<tr><td{css}>{escape(name)}</td><td class="n">{count}</td></tr>')
    return "<table>" + "".join(out) + "</table>"


def _census(handshakes: dict[str, dict[str, int]], legacy: bool = False) -> str:
    parts = []
    for direction in ("inbound", "outbound"):
        rows = sorted(handshakes.get(direction, {}).items(), key=lambda kv: -kv[1])
        parts.append(f"<h3>{direction}</h3>" + _table(rows, legacy))
    return "".join(parts)


def _peers(category: str, rows: list[dict[str, Any]]) -> str:
    link = f'<a href="/api/v1/peers?category={category}">all (JSON)</a>'
    if not rows:
        return f"<p>none — {link}</p>"
    body = "".join(
        f"<tr><td>{escape(r['peer'])}</td><td>{escape(r.get('domain') or '')}</td>"
        f'<td class="n">{r["counts"][category]}</td></tr>'
        for r in rows
    )
    return f"<table><tr><th>peer</th><th>domain</th><th>events</th></tr>{body}</table><p>{link}</p>"


def render_status(summary: dict[str, Any], peers: dict[str, list[dict[str, Any]]]) -> str:
    adoption = summary["adoption"]
    out_ = adoption["outbound"]
    in_ = adoption["inbound"]
    log = summary["log"]
    banner = ""
    if not log.get("healthy", True):
        banner = f'<div class="banner">Log problem: {escape(str(log.get("reason") or ""))}</div>'
    failures = summary["failures"]
    fail_rows = [
        (f"{d} {reason}", n)
        for d in ("inbound", "outbound")
        for reason, n in sorted(failures.get(d, {}).items(), key=lambda kv: -kv[1])
    ]
    titles = {
        "plaintext_out": "Plaintext deliveries by peer",
        "offered_not_used": "Offered STARTTLS, not used",
        "inbound_no_starttls": "Clients not using STARTTLS",
        "legacy_protocol": "Peers on TLSv1/TLSv1.1",
        "tls_failure": "Failing peers",
    }
    peer_sections = "".join(
        f"<section><h2>{escape(title)}</h2>{_peers(cat, peers.get(cat, []))}</section>"
        for cat, title in titles.items()
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width,initial-scale=1">
<meta http-equiv="refresh" content="15">
<title>tlslogd</title><style>{_CSS}</style></head>
<body><header><h1>tlslogd {escape(summary["version"])} — Postfix TLS</h1></header>{banner}
<main>
<section><h2>Outbound deliveries over TLS</h2>
<div class="big" id="outbound-tls">{_pct(out_["tls_percent"])}</div>
<p>sent remote: {out_["sent_remote"]["yes"]} TLS, {out_["sent_remote"]["no"]} plaintext,
{out_["sent_remote"]["unknown"]} unknown; {out_["offered_plaintext_sent"]} plaintext to servers
offering STARTTLS</p></section>
<section><h2>Inbound sessions using TLS</h2>
<div class="big" id="inbound-tls">{_pct(in_["tls_session_percent"])}</div>
<p>messages received over TLS: {_pct(in_["tls_message_percent"])}</p></section>
<section><h2>Protocols</h2>{_census(summary["handshakes"]["protocol"], legacy=True)}</section>
<section><h2>Ciphers</h2>{_census(summary["handshakes"]["cipher"])}</section>
<section><h2>Failures</h2>{_table(fail_rows)}</section>
{peer_sections}
<section><h2>Log</h2><p>{escape(str(log.get("source")))} —
<span class="{"ok" if log.get("healthy", True) else "bad"}">{escape(log.get("status", ""))}</span>,
last read {escape(str(log.get("last_read")))}</p>
<p><a href="/api/v1/summary">summary (JSON)</a> · <a href="/metrics">metrics</a></p></section>
</main></body></html>
"""
