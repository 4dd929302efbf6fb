"""The built-in status page at ``/``: server-rendered HTML from the same data as the JSON API.

One self-contained document: inline CSS, no fonts, images or scripts from elsewhere (mail servers
are often offline), a single column on a phone and a grid on a wide screen. It refreshes itself
every ``REFRESH_SECONDS``: a few lines of inline script fetch the page again and swap the body
(keeping the scroll position, and saying so when tlslogd stops answering instead of showing the
browser's error page); without JavaScript a ``<meta http-equiv="refresh">`` does the same.

Banners: *not healthy* when ``summary["log"]["healthy"]`` is false (with the source's reason);
*stale* when the log has grown (``lag_bytes`` > 0) and nothing was read for more than
``STALE_AFTER`` seconds (since ``last_read``, or since the process started when nothing was read
yet); *no data yet* when not a single line has been read since the state was created.

Every figure carries ``data-value`` (the raw number) and a stable ``id`` or ``data-`` key, so
scripts and tests can read the page: ``#outbound-tls-percent``, ``#outbound-plaintext``,
``#inbound-tls-percent``, ``tr[data-census=protocol][data-direction=outbound][data-key=TLSv1.3]``,
``#peers-plaintext_out tr[data-peer]``, ``td[data-total=lines]``, ``#log-status[data-state]``.
Everything that comes from log text (peer names, ciphers, program names) is escaped.
"""

from __future__ import annotations

import datetime as dt
import re
import socket
import time
from collections.abc import Callable, Iterable, Mapping
from html import escape
from typing import Any, Final

from tlslogd.events import LEGACY_PROTOCOLS
from tlslogd.peers import row_seen
from tlslogd.summary import (
    LEGACY_RECENT_DAYS,
    LOGLEVEL_SETTINGS,
    PROTOCOL_SETTINGS,
    handshake_evidence,
    unknown_note,
)

REFRESH_SECONDS: Final = 15
STALE_AFTER: Final = 60.0

DIRECTIONS: Final = ("inbound", "outbound")

# category: (title, explanation, grid width)
_PEER_SECTIONS: Final[Mapping[str, tuple[str, str, str]]] = {
    "plaintext_out": (
        "Delivered in plaintext",
        "Remote servers that received mail from us without TLS.",
        "w2",
    ),
    "offered_not_used": (
        "Offered STARTTLS, we used plaintext",
        "The server offered STARTTLS and we still talked plaintext to it (the mail was sent,"
        " deferred or bounced): look at smtp_tls_security_level and the TLS policy for these"
        " destinations.",
        "w2",
    ),
    "legacy_protocol": (
        "Still on TLSv1 / TLSv1.1",
        "These peers break when TLSv1 and TLSv1.1 are disabled.",
        "w2",
    ),
    "inbound_no_starttls": (
        "Clients that never used STARTTLS",
        "Clients that spoke EHLO and sent without STARTTLS.",
        "w2",
    ),
    "tls_failure": (
        "Failing TLS peers",
        "Failed TLS attempts in either direction, by reason.",
        "w4",
    ),
}

_REASONS: Final[Mapping[str, str]] = {
    "protocol": "no common protocol version",
    "cipher": "no shared cipher or signature algorithm, or too weak for the peer",
    "certificate": "certificate missing, untrusted, expired or not matching the policy",
    "lost_connection": "the peer went away during the handshake",
    "timeout": "nothing followed STARTTLS in time",
    "not_offered": "TLS required, the server did not offer STARTTLS",
    "refused": "STARTTLS refused",
    "engine": "our own TLS engine or configuration is broken",
    "policy": "a TLS policy that cannot be used (DANE/TLSA, policy maps)",
    "rejected": "the server refused the mail for a TLS reason",
    "handshake": "other handshake failure",
}

_TRUST: Final[Mapping[str, str]] = {
    "verified": "matched a DANE or secure policy",
    "trusted": "certificate chain valid",
    "untrusted": "encrypted, certificate not verified",
    "anonymous": "encrypted, no certificate",
    "none": "not logged (Postfix before 2.5)",
}

_SESSIONS: Final = (
    ("used", "STARTTLS"),
    ("implicit", "implicit TLS"),
    ("not_used", "no STARTTLS"),
    ("failed", "TLS failed"),
)
_SESSIONS_UNCOUNTED: Final = (("no_ehlo", "without EHLO"), ("unknown", "unknown"))

_TOTALS: Final[Mapping[str, str]] = {
    "lines": "log lines read",
    "events": "events",
    "unrecognised_lines": "unrecognised lines",
    "tls_handshakes": "TLS handshakes",
    "tls_handshakes_inbound": "… inbound",
    "tls_handshakes_outbound": "… outbound",
    "legacy_protocol_handshakes": "handshakes on TLSv1/TLSv1.1",
    "deliveries": "delivery attempts",
    "tls_deliveries": "deliveries sent over TLS (local next hops too)",
    "plaintext_deliveries": "deliveries sent in plaintext to remote servers",
    "offered_plaintext_deliveries": "… to servers offering STARTTLS",
    "local_plaintext_deliveries": "local plaintext deliveries",
    "unknown_tls_deliveries": "deliveries with unknown TLS (local ones too)",
    "starttls_offered": "STARTTLS offers not used",
    "tls_failures": "TLS failures",
    "tls_held_deliveries": "delivery attempts held back by TLS (without a connection too)",
    "sessions": "inbound sessions (local clients too)",
    "local_sessions": "… from local clients",
    "tls_sessions": "remote inbound sessions over TLS",
    "plaintext_sessions": "remote inbound sessions without STARTTLS",
    "messages_received": "messages received (local clients too)",
    "local_messages_received": "… from local clients",
    "tls_messages_received": "remote messages received over TLS",
    "messages_not_received": "queue IDs refused, discarded or abandoned",
}

_WEAK_CIPHER_PARTS: Final = frozenset(
    {"RC4", "DES", "3DES", "CBC3", "NULL", "EXP", "EXPORT", "MD5"}
)
_POST_QUANTUM: Final = re.compile(r"MLKEM|KYBER|SNTRUP", re.IGNORECASE)

_CSS: Final = """
:root{--bg:#f2f4f7;--card:#fff;--fg:#1f2328;--muted:#57606a;--line:#d8dee4;--head:#0a3069;
--link:#0550ae;--bar:#0969da;--track:#e7ecf0;--good:#116329;--good-bg:#dafbe1;--bad:#a40e26;
--bad-bg:#ffebe9;--warn:#6c4400;--warn-bg:#fff8c5;--info-bg:#ddf4ff;--pq:#6639ba;--pq-bg:#fbefff;
color-scheme:light dark}
@media (prefers-color-scheme:dark){:root{--bg:#0d1117;--card:#161b22;--fg:#e6edf3;
--muted:#9198a1;--line:#30363d;--head:#010409;--link:#79c0ff;--bar:#388bfd;--track:#30363d;
--good:#56d364;--good-bg:#0f2a1a;--bad:#ff8e87;--bad-bg:#3c1618;--warn:#e3b341;--warn-bg:#34290b;
--info-bg:#0c2d4a;--pq:#d2a8ff;--pq-bg:#2c1b4a}}
*{box-sizing:border-box}
body{margin:0;background:var(--bg);color:var(--fg);
font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",sans-serif}
a{color:var(--link)}
header{background:var(--head);color:#fff;padding:.8rem 1.25rem;display:flex;flex-wrap:wrap;
gap:.2rem 1.5rem;align-items:baseline;justify-content:space-between}
header h1{margin:0;font-size:1.25rem;font-weight:650}
header h1 span{font-weight:400;opacity:.85}
header p{margin:0;font-size:.85rem;opacity:.9}
.banner{margin:1rem 1.25rem 0;padding:.75rem 1rem;border-radius:6px;border-left:6px solid}
.banner strong{display:block;font-size:1.05rem}
.banner.bad{background:var(--bad-bg);border-color:var(--bad)}
.banner.warn{background:var(--warn-bg);border-color:var(--warn)}
.banner.info{background:var(--info-bg);border-color:var(--link)}
#banner-offline{position:sticky;top:0;z-index:1}
main{display:grid;gap:1rem;padding:1rem 1.25rem;grid-template-columns:minmax(0,1fr)}
@media (min-width:720px){main{grid-template-columns:repeat(2,minmax(0,1fr))}
.w2,.w4{grid-column:1/-1}}
@media (min-width:1200px){main{grid-template-columns:repeat(4,minmax(0,1fr))}
.w2{grid-column:span 2}.w4{grid-column:1/-1}}
section{background:var(--card);border:1px solid var(--line);border-radius:8px;padding:.9rem 1rem;
min-width:0;container-type:inline-size}
h2{font-size:1rem;margin:0 0 .5rem}
.kpi h2{font-size:.95rem}
h3{font-size:.8rem;margin:.6rem 0 .2rem;text-transform:uppercase;letter-spacing:.04em;
color:var(--muted)}
p{margin:.4rem 0}
.note{color:var(--muted);font-size:.85rem}
.big{font-size:2.4rem;font-weight:650;line-height:1.1;font-variant-numeric:tabular-nums}
.meter{height:.5rem;border-radius:.25rem;background:var(--track);margin:.5rem 0;overflow:hidden}
.meter span{display:block;height:100%;background:var(--bar)}
dl.counts{display:grid;grid-template-columns:1fr auto;gap:.1rem 1rem;margin:.5rem 0 0}
dl.counts dt{color:var(--muted)}
dl.counts dd{margin:0;text-align:right;font-variant-numeric:tabular-nums;font-weight:600}
.pair{display:grid;gap:0 1.5rem}
.scroll{overflow-x:auto}
table{border-collapse:collapse;width:100%;font-size:.9rem}
caption{text-align:left;font-size:.8rem;font-weight:600;text-transform:uppercase;
letter-spacing:.04em;color:var(--muted);padding:.5rem 0 .2rem}
th,td{text-align:left;padding:.25rem .4rem;border-bottom:1px solid var(--line);
vertical-align:top}
th{font-size:.8rem;color:var(--muted);font-weight:600}
td.n,th.n{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
td.share{font-variant-numeric:tabular-nums;text-align:right;white-space:nowrap;width:1%}
.pbar{display:inline-block;width:4rem;height:.45rem;margin-right:.5rem;border-radius:.2rem;
background:var(--track);vertical-align:.1em;overflow:hidden}
.pbar span{display:block;height:100%;background:var(--bar)}
td.key{overflow-wrap:break-word}
pre{margin:.4rem 0;padding:.4rem .6rem;background:var(--track);border-radius:.25rem;
font-size:.8rem;overflow-x:auto}
.peer{min-width:9rem;overflow-wrap:anywhere;font-family:ui-monospace,SFMono-Regular,Menlo,
monospace;font-size:.85rem}
th.peer{color:var(--fg)}
time{white-space:nowrap}
td .ago{display:block}
dd.bad{color:var(--bad)}
td small,th small{display:block;color:var(--muted);font-weight:400}
.ago{color:var(--muted);font-size:.85em;white-space:nowrap}
.tag{display:inline-block;font-size:.72rem;font-weight:650;padding:0 .35rem;margin-left:.3rem;
border-radius:.25rem;border:1px solid;white-space:nowrap;vertical-align:.1em}
.tag.bad{color:var(--bad);background:var(--bad-bg)}
.tag.warn{color:var(--warn);background:var(--warn-bg)}
.tag.good{color:var(--good);background:var(--good-bg)}
.tag.pq{color:var(--pq);background:var(--pq-bg)}
tr.legacy td{background:var(--bad-bg)}
.verdict{font-size:1.35rem;font-weight:650;margin:.2rem 0}
.verdict.good{color:var(--good)}.verdict.bad{color:var(--bad)}
code{font-family:ui-monospace,SFMono-Regular,Menlo,monospace;font-size:.85em;
background:var(--track);padding:.05rem .3rem;border-radius:.2rem;overflow-wrap:anywhere}
ul.plain{list-style:none;padding:0;margin:.3rem 0}
footer{padding:0 1.25rem 1.5rem;color:var(--muted);font-size:.85rem}
@container (min-width:44rem){.pair{grid-template-columns:1fr 1fr}}
@container (max-width:24rem){.pbar{display:none}}
@container (max-width:32rem){
table.stack thead{position:absolute;width:1px;height:1px;overflow:hidden;clip-path:inset(50%)}
table.stack tr{display:block;padding:.4rem 0;border-bottom:1px solid var(--line)}
table.stack th,table.stack td{display:flex;justify-content:space-between;gap:1rem;border:0;
padding:.05rem .4rem;text-align:right;white-space:normal}
table.stack th[scope=row]{display:block;text-align:left;font-weight:650}
table.stack td::before{content:attr(data-label);color:var(--muted);text-align:left}
table.stack .ago{display:inline}}
"""

# Refetch the page and swap the body; on failure keep the last figures and say so. Not while
# text is selected (it would be lost), for up to four refreshes in a row. The focused link
# keeps the focus (found by its id, or as the same n-th link to its address), the page and its
# sideways-scrolled tables keep their scroll positions, and an alert whose text did not change
# is not announced again.
_SCRIPT: Final = f"""
let held=0;
setInterval(async()=>{{if(document.hidden)return;if(String(getSelection())&&++held<5)return;
held=0;try{{
const r=await fetch(location.href,{{cache:"no-store"}});if(!r.ok)throw new Error(r.status);
const d=new DOMParser().parseFromString(await r.text(),"text/html");
for(const a of d.querySelectorAll("[role=alert][id]")){{const o=document.getElementById(a.id);
if(o&&o.textContent===a.textContent)a.removeAttribute("role");}}
const same=h=>[...document.querySelectorAll(`[href="${{CSS.escape(h)}}"]`)];
const f=document.activeElement,id=f&&f.id,h=f&&f!==document.body&&f.getAttribute("href"),
k=h?same(h).indexOf(f):-1,x=scrollX,y=scrollY,
w=[...document.querySelectorAll(".scroll")].map(e=>e.scrollLeft);
document.body.replaceWith(d.body);document.title=d.title;
const n=(id&&document.getElementById(id))||(h&&same(h)[k]);if(n)n.focus({{preventScroll:true}});
document.querySelectorAll(".scroll").forEach((e,i)=>{{if(w[i])e.scrollLeft=w[i];}});
scrollTo(x,y);
}}catch(e){{const b=document.getElementById("banner-offline");if(b)b.hidden=false;}}
}},{REFRESH_SECONDS * 1000});
"""


# -- formatting -------------------------------------------------------------------------------


def _e(value: object) -> str:
    return escape(str(value), quote=True)


def _attrs(**attrs: object) -> str:
    """HTML attributes from keywords (``data_value`` becomes ``data-value``); None is left out."""
    return "".join(
        f' {name.rstrip("_").replace("_", "-")}="{_e(value)}"'
        for name, value in attrs.items()
        if value is not None
    )


def _int(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _count(value: int) -> str:
    return f"{value:,}"


_LINE_KINDS: Final = {"event": "events"}


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{value:.1f} %"


def _bytes(value: int) -> str:
    size = float(value)
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{value:,} bytes" if unit == "bytes" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{value:,} bytes"


def _timestamp(value: object) -> float | None:
    """Epoch seconds from an ISO 8601 string or a number; None otherwise."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        try:
            return dt.datetime.fromisoformat(value).timestamp()
        except ValueError:
            return None
    return None


def _ago(seconds: float) -> str:
    if seconds < 0:
        return "in the future"
    if seconds < 90:
        return f"{seconds:.0f} s ago"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min ago"
    if seconds < 48 * 3600:
        return f"{seconds / 3600:.0f} h ago"
    return f"{seconds / 86400:.0f} days ago"


def _when(value: object, now: float | None = None) -> str:
    """A time from the summary (ISO 8601 or epoch seconds); with ``now``, also how long ago."""
    ts = _timestamp(value)
    if ts is None:
        return "never"
    local = dt.datetime.fromtimestamp(ts).astimezone()
    text = f'<time datetime="{local.isoformat(timespec="seconds")}">'
    text += f"{local:%Y-%m-%d %H:%M:%S}</time>"
    return text if now is None else f'{text} <span class="ago">({_ago(now - ts)})</span>'


def _meter(percent: float | None) -> str:
    width = 0.0 if percent is None else max(0.0, min(100.0, percent))
    return f'<div class="meter" aria-hidden="true"><span style="width:{width:.1f}%"></span></div>'


def _dl(rows: Iterable[tuple[str, int, str]], bad: Iterable[str] = ()) -> str:
    """A list of counts: (label, value, id); the ids in ``bad`` are marked when not zero."""
    marked = set(bad)
    items = "".join(
        f"<dt>{_e(label)}</dt><dd{_attrs(id=ident, data_value=value)}"
        f"{_attrs(class_='bad' if value and ident in marked else None)}>{_count(value)}</dd>"
        for label, value, ident in rows
    )
    return f'<dl class="counts">{items}</dl>'


def _cell(label: str, content: str, **attrs: object) -> str:
    """A cell of a table that stacks into "label: value" lines on a narrow screen."""
    return f"<td{_attrs(data_label=label, **attrs)}><span>{content}</span></td>"


def _tags_cipher(name: str) -> str:
    parts = set(re.split(r"[-_]", name.upper()))
    return '<span class="tag bad">weak</span>' if parts & _WEAK_CIPHER_PARTS else ""


def _tags_protocol(name: str) -> str:
    return '<span class="tag bad">legacy</span>' if name in LEGACY_PROTOCOLS else ""


def _tags_key_exchange(name: str) -> str:
    return '<span class="tag pq">post-quantum hybrid</span>' if _POST_QUANTUM.search(name) else ""


_CENSUS_TAGS: Final[Mapping[str, Callable[[str], str]]] = {
    "protocol": _tags_protocol,
    "cipher": _tags_cipher,
    "key_exchange": _tags_key_exchange,
}


# -- sections ---------------------------------------------------------------------------------


def _census_table(label: str, direction: str, counts: Mapping[str, int], evidence: str) -> str:
    total = sum(_int(n) for n in counts.values())
    if not total:
        if evidence == "not_logged":  # traffic, but no summary line: loglevel 0
            text = (
                f"No {direction} handshake is logged: set "
                f"<code>{LOGLEVEL_SETTINGS[direction]} = 1</code>."
            )
        else:
            text = f"No {direction} handshakes yet."
        return f"<div><h3>{direction}</h3><p class='note'>{text}</p></div>"
    tags = _CENSUS_TAGS.get(label)
    rows = []
    for key, raw in sorted(counts.items(), key=lambda kv: (-_int(kv[1]), kv[0])):
        n = _int(raw)
        share = 100.0 * n / total
        shown = "&lt;0.1" if 0 < share < 0.05 else f"{share:.1f}"
        legacy = label == "protocol" and key in LEGACY_PROTOCOLS
        rows.append(
            f"<tr{_attrs(class_='legacy' if legacy else None)}"
            f"{_attrs(data_census=label, data_direction=direction, data_key=key)}>"
            f'<td class="key">{_e(key).replace("_", "_<wbr>")}{tags(key) if tags else ""}</td>'
            f'<td class="n"{_attrs(data_value=n)}>{_count(n)}</td>'
            '<td class="share"><span class="pbar" aria-hidden="true">'
            f'<span style="width:{share:.1f}%"></span></span>{shown} %</td></tr>'
        )
    return (
        f'<div class="scroll"><table><caption>{direction}</caption>'
        '<thead><tr><th scope="col">'
        f"{_e(label.replace('_', ' '))}</th>"
        '<th scope="col" class="n">count</th><th scope="col" class="n">share</th></tr>'
        f"</thead><tbody>{''.join(rows)}</tbody></table></div>"
    )


def _census(
    label: str,
    title: str,
    data: Mapping[str, Mapping[str, int]],
    note: str,
    evidence: Mapping[str, str],
    width: str = "w2",
) -> str:
    tables = "".join(
        _census_table(label, d, data.get(d, {}), evidence.get(d, "")) for d in DIRECTIONS
    )
    return (
        f'<section class="{width}" id="census-{label}" aria-labelledby="h-{label}">'
        f'<h2 id="h-{label}">{_e(title)}</h2>{note}<div class="pair">{tables}</div></section>'
    )


def _unknown_note(direction: str, unknown: int, total: int, evidence: Mapping[str, str]) -> str:
    note = unknown_note(direction, unknown, total, evidence)
    return f'<p class="note" id="{direction}-unknown-note">{_e(note)}.</p>' if note else ""


def _held_by_tls(held: int) -> str:
    """Deliveries TLS held back: deferred or bounced for a mandatory policy the server does
    not meet, a refusal of our plaintext, ... (also without a connection, so not a part of
    the deferred and bounced counts before it)."""
    if not held:
        return ""
    return (
        f' <a href="#peers-tls_failure" id="outbound-held-by-tls"{_attrs(data_value=held)}>'
        f"{_count(held)} delivery attempt{'' if held == 1 else 's'} held back by TLS</a> "
        "(deferred or bounced for a TLS reason, also without a connection to a server)."
    )


def _outbound_card(out: Mapping[str, Any], started: str, evidence: Mapping[str, str]) -> str:
    sent = out.get("sent_remote", {})
    pct = out.get("tls_percent")
    yes, no, unknown = _int(sent.get("yes")), _int(sent.get("no")), _int(sent.get("unknown"))
    rows = [
        ("over TLS", yes, "outbound-tls"),
        ("plaintext", no, "outbound-plaintext"),
        (
            "… of which STARTTLS offered",
            _int(out.get("offered_plaintext_sent")),
            "outbound-offered-plaintext",
        ),
        ("unknown", unknown, "outbound-unknown"),
    ]
    return (
        '<section class="kpi" aria-labelledby="h-outbound">'
        '<h2 id="h-outbound">Outbound deliveries over TLS</h2>'
        f'<div class="big" id="outbound-tls-percent"{_attrs(data_value=pct)}>{_pct(pct)}'
        f"</div>{_meter(pct)}"
        f'<p class="note">Sent to remote servers since {started}.</p>'
        f"{_dl(rows, bad=('outbound-plaintext', 'outbound-offered-plaintext'))}"
        f"{_unknown_note('outbound', unknown, yes + no + unknown, evidence)}"
        f'<p class="note">Not counted: <span id="outbound-local"'
        f"{_attrs(data_value=_int(out.get('sent_local')))}>{_count(_int(out.get('sent_local')))}"
        f"</span> to local relays, {_count(_int(out.get('deferred')))} deferred, "
        f"{_count(_int(out.get('bounced')))} bounced.{_held_by_tls(_int(out.get('held_by_tls')))}"
        "</p>"
        f"{_all_local_hint(_int(out.get('sent_local_networks')), yes + no + unknown, 'next hops')}"
        "</section>"
    )


def _inbound_card(inb: Mapping[str, Any], started: str, evidence: Mapping[str, str]) -> str:
    sessions = inb.get("sessions", {})
    pct = inb.get("tls_session_percent")
    rows = [(label, _int(sessions.get(k)), f"inbound-{k}") for k, label in _SESSIONS]
    uncounted = ", ".join(
        f"{_count(_int(sessions.get(k)))} {label}" for k, label in _SESSIONS_UNCOUNTED
    )
    local = _int(inb.get("sessions_local"))
    total = sum(map(_int, sessions.values()))
    return (
        '<section class="kpi" aria-labelledby="h-inbound">'
        '<h2 id="h-inbound">Inbound sessions over TLS</h2>'
        f'<div class="big" id="inbound-tls-percent"{_attrs(data_value=pct)}>{_pct(pct)}</div>'
        f'{_meter(pct)}<p class="note">smtpd sessions since {started}.</p>'
        f"{_dl(rows, bad=('inbound-not_used', 'inbound-failed'))}"
        f"{_unknown_note('inbound', _int(sessions.get('unknown')), total, evidence)}"
        f'<p class="note">Not counted: {uncounted}, <span id="inbound-local"'
        f"{_attrs(data_value=local)}>{_count(local)}</span> from local clients.</p>"
        f"{_all_local_hint(local, total, 'clients')}"
        "</section>"
    )


def _all_local_hint(local: int, remote: int, what: str) -> str:
    """When everything was local: how to count a lab on loopback as the real thing."""
    if not local or remote:
        return ""
    return (
        f'<p class="note">All of them were in <code>local_networks</code> (loopback by '
        f"default). If these are real {what} (a test lab on loopback), set "
        "<code>local_networks = []</code>.</p>"
    )


def _messages_card(inb: Mapping[str, Any], not_received: int, started: str) -> str:
    messages = inb.get("messages", {})
    pct = inb.get("tls_message_percent")
    rows = [
        ("over TLS", _int(messages.get("yes")), "messages-tls"),
        ("plaintext", _int(messages.get("no")), "messages-plaintext"),
    ]
    other = sum(_int(n) for k, n in messages.items() if k not in ("yes", "no"))
    if other:
        rows.append(("unknown", other, "messages-unknown"))
    local = _int(inb.get("messages_local"))
    return (
        '<section class="kpi" aria-labelledby="h-messages">'
        '<h2 id="h-messages">Inbound messages over TLS</h2>'
        f'<div class="big" id="messages-tls-percent"{_attrs(data_value=pct)}>{_pct(pct)}</div>'
        f'{_meter(pct)}<p class="note">Queued by smtpd since {started}.</p>'
        f"{_dl(rows, bad=('messages-plaintext',))}"
        f'<p class="note">Not counted: <span id="messages-local"'
        f"{_attrs(data_value=local)}>{_count(local)}</span> from local clients, "
        f'<span id="messages-not-received"{_attrs(data_value=not_received)}>'
        f"{_count(not_received)}</span> refused, discarded or abandoned after their queue ID."
        "</p></section>"
    )


def _legacy_split(last_30d: Mapping[str, Any], evidence: Mapping[str, str]) -> str:
    """Which setting breaks whom: clients for smtpd_tls_protocols, servers for smtp_; and the
    direction where nobody used them, when its handshakes are logged: safe to change there."""
    counts = {d: _int(last_30d.get(d)) for d in ("inbound", "outbound")}
    parts = [
        f'<span id="legacy-{d}"{_attrs(data_value=n)}>{_count(n)} {what}'
        f"{'' if n == 1 else 's'}</span> (<code>{PROTOCOL_SETTINGS[d]}</code>)"
        for d, what in (("inbound", "client"), ("outbound", "server"))
        if (n := counts[d])
    ]
    if not parts:
        return ""
    safe = [
        f'<p id="legacy-safe-{d}">Nobody {d}: <code>{PROTOCOL_SETTINGS[d]} = &gt;=TLSv1.2</code> '
        "breaks no one.</p>"
        for d in ("inbound", "outbound")
        if not counts[d] and evidence.get(d) == "logged"
    ]
    return f"<p>Of them: {' and '.join(parts)}.</p>" + "".join(safe)


def _counted_since(summary: Mapping[str, Any]) -> str:
    """Since when the figures count, in log time: the first event (a log read from its start
    is older than the state), else when the state was created."""
    durable = summary.get("durable", {})
    return _when(durable.get("first_event") or durable.get("since") or summary.get("since"))


def _legacy_card(
    summary: Mapping[str, Any], totals: Mapping[str, Any], evidence: Mapping[str, str]
) -> str:
    peers = _int(summary.get("peers", {}).get("by_category", {}).get("legacy_protocol"))
    last_30d = summary.get("peers", {}).get("legacy_last_30d")
    if not isinstance(last_30d, Mapping):
        last_30d = {"peers": peers}
    recent = _int(last_30d.get("peers"))
    handshakes = _int(totals.get("tls_handshakes"))
    legacy = _int(totals.get("legacy_protocol_handshakes"))
    link = "/api/v1/peers?category=legacy_protocol"
    since = _counted_since(summary)
    last = _timestamp(summary.get("durable", {}).get("last_event"))
    known = [d for d, e in evidence.items() if e == "logged"]
    unknown = [d for d, e in evidence.items() if e == "not_logged"]
    if legacy:
        none_used = (
            f"No peer used TLSv1 or TLSv1.1 in the last {LEGACY_RECENT_DAYS} days of the log"
        )
    else:
        scope = f"{known[0]} " if len(known) == 1 else ""
        n = _int(totals.get(f"tls_handshakes_{known[0]}")) if scope else handshakes
        none_used = f"None of {_count(n)} {scope}handshakes since {since} used TLSv1 or TLSv1.1"
    if recent or (legacy and not peers):
        who = f"{_count(recent)} peer{'' if recent == 1 else 's'}" if recent else "Some peers"
        if last is not None:  # the log's last 30 days, as counted, not the last 30 of now
            link = f"{link}&amp;since={int(last - LEGACY_RECENT_DAYS * 86400)}"
        verdict = (
            f'<p class="verdict bad" id="legacy-verdict" data-state="in-use">'
            f'<a href="{link}" id="legacy-peers"{_attrs(data_value=recent)}>{who}</a> still '
            f"use{'s' if recent == 1 else ''} them</p>"
            f"<p>Disabling TLSv1 and TLSv1.1 would break them: they used them in the last "
            f"{LEGACY_RECENT_DAYS} days of the log; {_count(legacy)} of {_count(handshakes)} "
            f"handshakes since {since}.</p>{_legacy_split(last_30d, evidence)}"
        )
    elif known and not unknown:
        settings = "\n".join(f"{PROTOCOL_SETTINGS[d]} = &gt;=TLSv1.2" for d in known)
        verdict = (
            '<p class="verdict good" id="legacy-verdict" data-state="safe">'
            '<span id="legacy-peers" data-value="0">Nobody</span> — safe to disable</p>'
            f"<p>{none_used}. In main.cf (Postfix 3.6 and later):</p>"
            f"<pre>{settings}</pre>"
        )
    elif known:
        d = known[0]
        verdict = (
            '<p class="verdict" id="legacy-verdict" data-state="partial">'
            f'<span id="legacy-peers" data-value="0">Nobody</span> {d}; {unknown[0]} unknown</p>'
            f"<p>{none_used}: <code>{PROTOCOL_SETTINGS[d]} = &gt;=TLSv1.2</code> is safe.</p>"
        )
    elif unknown:
        verdict = (
            '<p class="verdict" id="legacy-verdict" data-state="not-logged">Cannot tell</p>'
            "<p>Mail flows, but Postfix logs no TLS handshake summary.</p>"
        )
    else:
        verdict = (
            '<p class="verdict" id="legacy-verdict" data-state="no-data">No handshakes yet</p>'
            "<p>The answer appears after the first TLS handshakes.</p>"
        )
    failed = _int(summary.get("peers", {}).get("protocol_failures"))
    if failed:
        verdict += (
            f'<p id="legacy-protocol-failures"{_attrs(data_value=failed)}>{_count(failed)} '
            f"peer{'' if failed == 1 else 's'} failed TLS on the protocol version: the current "
            "settings may already refuse what they need (reason <code>protocol</code> among the "
            '<a href="/api/v1/peers?category=tls_failure">failing TLS peers</a>).</p>'
        )
    if peers and not recent:
        verdict += (
            f'<p id="legacy-earlier">{_count(peers)} peer{"" if peers == 1 else "s"} used them '
            f"earlier, none in the last {LEGACY_RECENT_DAYS} days of the log.</p>"
        )
    if unknown:
        settings = " and ".join(f"<code>{LOGLEVEL_SETTINGS[d]} = 1</code>" for d in unknown)
        verdict += (
            f'<p id="legacy-unknown">No {" or ".join(unknown)} handshake is logged, so '
            f"who would break there cannot be known: set {settings} in main.cf.</p>"
        )
    return (
        '<section class="kpi" aria-labelledby="h-legacy"><h2 id="h-legacy">Switch off TLSv1 and '
        f'TLSv1.1?</h2>{verdict}<p class="note"><a id="legacy-json" href="{link}">Peers on '
        "legacy protocols (JSON)</a></p></section>"
    )


def _by_program(by_program: Mapping[str, Mapping[str, int]], local: int) -> str:
    if not by_program and local:
        body = (
            f'<p class="note">No remote inbound sessions; {_count(local)} from local clients '
            "(<code>local_networks</code>), not counted here.</p>"
        )
    elif not by_program:
        body = '<p class="note">No inbound sessions yet.</p>'
    else:
        seen = [k for k, _ in _SESSIONS_UNCOUNTED if any(c.get(k) for c in by_program.values())]
        columns = [*_SESSIONS, *((k, label) for k, label in _SESSIONS_UNCOUNTED if k in seen)]
        head = "".join(f'<th scope="col" class="n">{_e(label)}</th>' for _, label in columns)
        rows = []
        for program, counts in sorted(by_program.items()):
            cells = "".join(
                _cell(
                    label,
                    _count(_int(counts.get(k))),
                    class_="n",
                    data_key=k,
                    data_value=_int(counts.get(k)),
                )
                for k, label in columns
            )
            tls = _int(counts.get("used")) + _int(counts.get("implicit"))
            decided = tls + _int(counts.get("not_used")) + _int(counts.get("failed"))
            pct = round(100.0 * tls / decided, 2) if decided else None
            rows.append(
                f"<tr{_attrs(data_program=program)}><th scope='row' class='peer'>"
                f"{_e(program).replace('/', '/<wbr>')}"
                f"</th>{_cell('using TLS', _pct(pct), class_='n', data_value=pct)}{cells}</tr>"
            )
        body = (
            '<div class="scroll"><table class="stack"><thead><tr><th scope="col">syslog tag</th>'
            f'<th scope="col" class="n">using TLS</th>{head}</tr></thead>'
            f"<tbody>{''.join(rows)}</tbody></table></div>"
        )
    return (
        '<section class="w4" id="by-program" aria-labelledby="h-program">'
        '<h2 id="h-program">Inbound sessions: submission and port 25</h2>'
        '<p class="note"><code>postfix/smtpd</code> is normally port 25; the master.cf services'
        " <code>submission</code> (587) and <code>smtps</code> (465) serve mail clients.</p>"
        f"{body}</section>"
    )


def _failures(failures: Mapping[str, Mapping[str, int]]) -> str:
    reasons: dict[str, dict[str, int]] = {}
    for direction in DIRECTIONS:
        for reason, n in failures.get(direction, {}).items():
            reasons.setdefault(reason, {})[direction] = _int(n)
    if not reasons:
        body = '<p class="note">No TLS failures.</p>'
    else:
        rows = []
        for reason, counts in sorted(reasons.items(), key=lambda kv: -sum(kv[1].values())):
            meaning = _REASONS.get(reason)
            cells = "".join(
                f'<td class="n"{_attrs(data_direction=d, data_value=counts.get(d, 0))}>'
                f"{_count(counts.get(d, 0))}</td>"
                for d in DIRECTIONS
            )
            rows.append(
                f"<tr{_attrs(data_reason=reason)}><th scope='row'>{_e(reason)}"
                f"{f'<small>{_e(meaning)}</small>' if meaning else ''}</th>{cells}</tr>"
            )
        body = (
            '<div class="scroll"><table><thead><tr><th scope="col">reason</th>'
            '<th scope="col" class="n">inbound</th><th scope="col" class="n">outbound</th></tr>'
            f"</thead><tbody>{''.join(rows)}</tbody></table></div>"
        )
    return (
        '<section class="w2" id="failures" aria-labelledby="h-failures">'
        f'<h2 id="h-failures">TLS failures by reason</h2>{body}</section>'
    )


def _peer_detail(category: str, peer: Mapping[str, Any]) -> str:
    if category in ("plaintext_out", "offered_not_used"):
        attempts = _int(peer.get("deliveries"))
        return (
            f"{_int(peer.get('tls_deliveries'))} of {attempts} delivery "
            f"attempt{'' if attempts == 1 else 's'} over TLS"
        )
    if category == "inbound_no_starttls":
        return f"{_int(peer.get('tls_sessions'))} of {_int(peer.get('sessions'))} over TLS"
    found = peer.get("legacy_protocols" if category == "legacy_protocol" else "failure_reasons")
    if not isinstance(found, Mapping):
        return ""
    # "lost connection", not the key "lost_connection"; a failure reason's meaning on hover
    meanings = _REASONS if category == "tls_failure" else {}
    text = ", ".join(
        (
            f'<span title="{_e(meanings[str(k)])}">{_e(str(k).replace("_", " "))}</span>'
            if str(k) in meanings
            else _e(str(k).replace("_", " "))
        )
        + f" ×{_int(n)}"
        for k, n in sorted(found.items(), key=lambda kv: kv[0])
    )
    directions = peer.get("legacy_directions")
    if category == "legacy_protocol" and isinstance(directions, Mapping) and directions:
        text += " · " + " and ".join(
            "as a client" if d == "inbound" else "as a server" for d in sorted(directions)
        )
    return text


def _peers(category: str, rows: list[dict[str, Any]], matching: int, since: str, now: float) -> str:
    title, note, width = _PEER_SECTIONS[category]
    link = f"/api/v1/peers?category={category}"
    if not rows:
        body = '<p class="note">None.</p>'
    else:
        trs = []
        for peer in rows:
            count = _int(peer.get("counts", {}).get(category))
            name = str(peer.get("peer") or "")
            addrs = [a for a in peer.get("addresses") or [] if a != name]
            extra = f"<small>{_e(', '.join(str(a) for a in addrs))}</small>" if addrs else ""
            trs.append(
                f"<tr{_attrs(data_peer=name, data_count=count)}>"
                # long host names wrap after a dot, not in the middle of a label
                f'<th scope="row" class="peer">{_e(name).replace(".", ".<wbr>")}{extra}</th>'
                + _cell("domain", _e(peer.get("domain") or "–"))
                + _cell("events", _count(count), class_="n", data_value=count)
                + _cell("detail", _peer_detail(category, peer))
                + _cell("last seen", _when(row_seen(peer, category), now))
                + "</tr>"
            )
        body = (
            '<div class="scroll"><table class="stack"><thead><tr><th scope="col">peer</th>'
            '<th scope="col">domain</th><th scope="col" class="n">events</th>'
            '<th scope="col">detail</th><th scope="col">last seen</th></tr></thead>'
            f"<tbody>{''.join(trs)}</tbody></table></div>"
        )
    if matching > 100:  # the API's default limit
        link = f"{link}&amp;limit={min(matching, 10_000)}"
    if not matching:
        link_text = "JSON"
    elif len(rows) < matching:
        link_text = f"top {len(rows)} shown; all {_count(matching)} as JSON"
    else:
        link_text = f"all {_count(matching)} as JSON"
    return (
        f'<section class="{width}" id="peers-{category}" aria-labelledby="h-{category}">'
        f'<h2 id="h-{category}">{_e(title)} <span class="tag {"warn" if matching else "good"}"'
        f"{_attrs(id=f'peers-{category}-count', data_value=matching)}>"
        f"{_count(matching)} peer{'' if matching == 1 else 's'}</span></h2>"
        f'<p class="note">{_e(note)} Counted since {since}.</p>{body}'
        f'<p class="note"><a href="{link}">{link_text}</a></p></section>'
    )


def _totals(summary: Mapping[str, Any]) -> str:
    durable = summary.get("durable", {})
    totals: Mapping[str, Any] = durable.get("totals") or summary.get("totals", {})
    keys = [k for k in _TOTALS if k in totals] + [k for k in totals if k not in _TOTALS]
    rows = "".join(
        f"<tr><th scope='row'>{_e(_TOTALS.get(k, k.replace('_', ' ')))}</th>"
        f'<td class="n"{_attrs(data_total=k, data_value=_int(totals[k]))}>'
        f"{_count(_int(totals[k]))}</td></tr>"
        for k in keys
    )
    return (
        '<section class="w2" id="totals" aria-labelledby="h-totals">'
        f'<h2 id="h-totals">Totals since {_counted_since(summary)}'
        '</h2><p class="note">Kept across restarts. First event '
        f"{_when(durable.get('first_event'))}, last event "
        f"{_when(durable.get('last_event'))} (log time).</p>"
        f'<div class="scroll"><table><thead><tr><th scope="col">what</th>'
        f'<th scope="col" class="n">count</th></tr></thead><tbody>{rows}</tbody></table></div>'
        "</section>"
    )


def _log_state(log: Mapping[str, Any], process: Mapping[str, Any], now: float) -> tuple[str, float]:
    """``unhealthy``, ``stale`` (with the seconds since the last read) or ``ok``."""
    if not log.get("healthy", False):
        return "unhealthy", 0.0
    lag = log.get("lag_bytes")
    last = _timestamp(log.get("last_read")) or _timestamp(process.get("started"))
    if isinstance(lag, int) and lag > 0 and last is not None and now - last > STALE_AFTER:
        return "stale", now - last
    return "ok", 0.0


def _log_section(summary: Mapping[str, Any], state: str, now: float) -> str:
    log = summary.get("log", {})
    process = summary.get("process", {})
    detail = log.get("detail") if isinstance(log.get("detail"), Mapping) else {}
    position = log.get("position") if isinstance(log.get("position"), Mapping) else {}
    offset = detail.get("offset", position.get("offset"))
    size = detail.get("size")
    if isinstance(offset, int):
        where = f"byte {_count(offset)}" + (f" of {_count(size)}" if isinstance(size, int) else "")
    else:
        where = "–"
    lag = log.get("lag_bytes")
    label = {"ok": "OK", "stale": "stale", "unhealthy": "not healthy"}[state]
    tag = {"ok": "good", "stale": "warn", "unhealthy": "bad"}[state]
    reason = log.get("reason")
    lines = process.get("lines", {})
    rows = [
        (
            "status",
            f'<span class="tag {tag}" id="log-status" data-state="{state}">{label}</span>'
            + (f" {_e(reason)}" if reason else ""),
        ),
        ("source", f'<code id="log-source">{_e(log.get("source") or "–")}</code>'),
        ("position", f'<span id="log-position"{_attrs(data_value=offset)}>{where}</span>'),
        (
            "not read yet",
            f'<span id="log-lag"{_attrs(data_value=lag)}>'
            f"{_bytes(lag) if isinstance(lag, int) else 'unknown'}</span>",
        ),
        ("last read", f'<span id="log-last-read">{_when(log.get("last_read"), now)}</span>'),
        (
            "last event (log time)",
            f'<span id="log-last-event">{_when(summary.get("durable", {}).get("last_event"), now)}'
            "</span>",
        ),
        ("last checkpoint", _when(log.get("last_checkpoint"), now)),
        ("tlslogd started", _when(process.get("started"), now)),
        (
            "lines since start",
            ", ".join(f"{_count(_int(n))} {_e(_LINE_KINDS.get(k, k))}" for k, n in lines.items())
            or "–",
        ),
        (
            "sessions open · peers tracked",
            f"{_count(_int(process.get('sessions_active')))} · "
            f"{_count(_int(process.get('peers_tracked')))}",
        ),
    ]
    items = "".join(f"<tr><th scope='row'>{k}</th><td>{v}</td></tr>" for k, v in rows)
    return (
        '<section class="w2" id="log" aria-labelledby="h-log"><h2 id="h-log">Log source</h2>'
        f"<table><tbody>{items}</tbody></table></section>"
    )


def _config_checks(checks: list[Mapping[str, Any]]) -> str:
    if not checks:
        return ""
    tags = {"pass": "good", "warn": "warn", "fail": "bad"}
    items = "".join(
        f'<li><span class="tag {tags.get(str(c.get("status")), "warn")}">{_e(c.get("status"))}'
        f"</span> {_e(c.get('check'))}</li>"
        for c in checks
    )
    return (
        '<section class="w2" id="config-checks" aria-labelledby="h-config">'
        f'<h2 id="h-config">Postfix configuration checks</h2><ul class="plain">{items}</ul>'
        "</section>"
    )


def _banners(summary: Mapping[str, Any], state: str, idle: float) -> str:
    log = summary.get("log", {})
    detail = log.get("detail") if isinstance(log.get("detail"), Mapping) else {}
    name = _e(detail.get("path") or log.get("source") or "the log")
    out = [
        '<div class="banner warn" id="banner-offline" role="status" hidden><strong>tlslogd is '
        "not answering.</strong> The figures below are from the last update; retrying every "
        f"{REFRESH_SECONDS} s.</div>"
    ]
    if state == "unhealthy":
        reason = str(log.get("reason") or "no reason given")
        # the reason may already say what to do (a group to join, an ACL)
        hint = (
            ""
            if "usermod" in reason or "setfacl" in reason
            else " If it exists, make sure tlslogd may read it (group <code>adm</code>)."
        )
        out.append(
            '<div class="banner bad" id="banner-log" role="alert"><strong>tlslogd is not '
            f"healthy: {_e(reason)}</strong> It keeps serving and retries by itself. While "
            f"<code>{name}</code> cannot be read the figures below stand still.{hint} Details: "
            '<a href="/healthz">/healthz</a> and tlslogd\'s own log.</div>'
        )
    elif state == "stale":
        lag = _int(log.get("lag_bytes"))
        out.append(
            '<div class="banner warn" id="banner-stale" role="alert"><strong>The log is stale: '
            f"nothing read for {_ago(idle).removesuffix(' ago')}.</strong> "
            f"{_bytes(lag)} were written to <code>{name}</code> since the last read. tlslogd "
            'may be stuck: check its own log and <a href="/healthz">/healthz</a>.</div>'
        )
    totals = summary.get("durable", {}).get("totals") or summary.get("totals", {})
    if state != "unhealthy" and not _int(totals.get("lines")):
        out.append(
            '<div class="banner info" id="banner-empty" role="status"><strong>No log lines read '
            "yet.</strong> With no saved state tlslogd starts at the end of the log "
            "(<code>--from-start</code> reads an existing file from its beginning): the figures "
            "appear as Postfix logs new mail.</div>"
        )
    return "".join(out)


def render_status(
    summary: dict[str, Any], peers: dict[str, list[dict[str, Any]]], now: float | None = None
) -> str:
    """The whole page for a ``/api/v1/summary`` document and the top peers of each category.

    ``now`` (epoch seconds, default: the current time) is the reference for ages and the
    staleness rule."""
    now = time.time() if now is None else now
    adoption = summary.get("adoption", {})
    handshakes = summary.get("handshakes", {})
    state, idle = _log_state(summary.get("log", {}), summary.get("process", {}), now)
    since = _counted_since(summary)
    totals = summary.get("durable", {}).get("totals") or summary.get("totals", {})
    evidence = handshake_evidence(totals)
    census_note = f'<p class="note">Handshakes since {since}.</p>'
    trust_note = (
        '<p class="note">'
        + " · ".join(f"<b>{_e(k)}</b>: {_e(v)}" for k, v in _TRUST.items())
        + f". Since {since}.</p>"
    )
    by_category = summary.get("peers", {}).get("by_category", {})
    peer_sections = "".join(
        _peers(
            c, peers.get(c, []), max(_int(by_category.get(c)), len(peers.get(c, []))), since, now
        )
        for c in _PEER_SECTIONS
    )
    updated = dt.datetime.fromtimestamp(now).astimezone()
    version = _e(summary.get("version", ""))
    host = _e(socket.gethostname())
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width,initial-scale=1">
<noscript><meta http-equiv="refresh" content="{REFRESH_SECONDS}"></noscript>
<title>{"⚠ " if state != "ok" else ""}{host} — tlslogd — Postfix TLS status</title>
<link rel="icon" href="data:,">
<style>{_CSS}</style><script>{_SCRIPT}</script></head>
<body><header><h1>tlslogd <span>Postfix TLS status of {host}</span></h1>
<p>Updated <time id="updated" datetime="{updated.isoformat(timespec="seconds")}">{
        updated:%Y-%m-%d %H:%M:%S %Z}</time> · refreshes every {REFRESH_SECONDS} s</p></header>
{_banners(summary, state, idle)}
<main>
{_outbound_card(adoption.get("outbound", {}), since, evidence)}
{_inbound_card(adoption.get("inbound", {}), since, evidence)}
{_messages_card(adoption.get("inbound", {}), _int(totals.get("messages_not_received")), since)}
{_legacy_card(summary, totals, evidence)}
{_census("protocol", "TLS protocols", handshakes.get("protocol", {}), census_note, evidence)}
{_census("key_exchange", "Key exchange", handshakes.get("key_exchange", {}), census_note, evidence)}
{_census("cipher", "Ciphers", handshakes.get("cipher", {}), census_note, evidence, "w4")}
{_census("trust", "Trust levels", handshakes.get("trust", {}), trust_note, evidence)}
{_failures(summary.get("failures", {}))}
{_by_program(summary.get("inbound_by_program", {}), _int(totals.get("local_sessions")))}
{peer_sections}
{_totals(summary)}
{_log_section(summary, state, now)}
{_config_checks(summary.get("config_checks", []))}
</main>
<footer><p>tlslogd {version} · <a href="/api/v1/summary">summary (JSON)</a> ·
<a href="/api/v1/peers">peers (JSON)</a> · <a href="/metrics">metrics</a> ·
<a href="/healthz">health</a></p></footer>
</body></html>
"""
