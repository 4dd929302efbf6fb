"""Pure parsing: log text in, typed events out. Every regular expression of tlslogd lives here.

How a chunk of log text is read (:meth:`Parser.scan`):

1. One compiled regex, ``_MESSAGE``, is run over the whole chunk with ``finditer``. It starts with
   the literal ``]: `` that ends every syslog tag (``postfix/smtpd[1234]: ``), so the regex engine
   jumps from tag to tag in C, and it only matches where the message that follows is one tlslogd
   reads (a TLS summary, a delivery, ``connect from``, ...). Lines that say nothing about TLS,
   sessions or deliveries -- most of a maillog -- never reach Python code.
2. For each match the line's syslog header (timestamp, host, tag, pid) is parsed with
   ``_HEADER``, and the named group of the alternative that matched picks the handler that builds
   the event.
3. RFC 5424 lines (``<22>1 2025-01-05T09:03:07Z host postfix/smtpd 1234 - - text``) have no
   ``]: ``; a chunk that contains any is also scanned line by line for them, with the same message
   alternatives.

A candidate line whose header or message does not parse becomes an :class:`Unrecognised` event,
so it is counted and can be sample-logged; nothing raises.
"""

from __future__ import annotations

import copy
import datetime as dt
import re
import time
from collections.abc import Callable, Iterator
from typing import Final

from tlslogd.events import (
    INBOUND,
    OUTBOUND,
    Delivery,
    Event,
    Ignored,
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
    Unrecognised,
    tag_cut,
)

_CACHE_MAX: Final = 4096

# host, program (syslog tag), service, pid, timestamp
_Fields = tuple[str | None, str, str, int | None, float | None]

_QID = r"[0-9A-Za-z]{5,20}"  # short hex or long queue IDs, and NOQUEUE

# tlsproxy's CONNECT/DISCONNECT lines look like postscreen's, which are far more frequent: look
# behind for the tlsproxy tag (one fixed-width look-behind per pid length).
_TLSPROXY = "(?:" + "|".join(rf"(?<=tlsproxy\[\d{{{n}}}\]:\ )" for n in range(1, 8)) + ")"

# The message alternatives. Every alternative starts with literal text (so the regex engine
# rejects a branch on its first character) and ends with an empty named group -- the marker --
# that names the handler building its event (``Match.lastgroup`` is the last group closed).
# Messages that start with a queue ID share one branch, so the ID is matched once, possessively.
# The broad "unrec" markers come last: lines that start like something tlslogd reads but did not
# parse (truncated, or a format change) are counted as unrecognised instead of vanishing.
_ALTERNATIVES = rf"""
(?P<qid>{_QID}+):\ (?:
  to=<(?P<dlv_to>[^>\n]*)>,(?:\ orig_to=<[^>\n]*>,)?
  \ relay=(?P<dlv_relay>[^\s,]+)
  (?:,\ ?conn_use=(?P<dlv_cu>\d+))?
  (?:,\ delay=(?P<dlv_delay>[\d.]+))?
  (?:,\ delays=(?P<dlv_delays>[\d./]+))?
  (?:,\ tls=(?P<dlv_tls>[^\s,]+))?
  (?:,\ dsn=(?P<dlv_dsn>[\d.]+))?
  (?:,\ [a-z_]+=[^\s,]*)*?
  ,\ status=(?P<dlv_status>[A-Za-z]+)(?:\ \((?P<dlv_text>[^\n]*))?(?P<dlv>)
 |client=(?P<cli_peer>[^\s,]+)(?P<cli_rest>[^\n]*)(?P<cli>)
 |(?P<qr_text>(?:Cannot\ start\ TLS|TLS\ is\ required|Server\ certificate\ not
   |TLSA\ lookup\ error|client\ TLS\ configuration\ problem|TLS\ failure)[^\n]*)(?P<qr>)
 |(?P<qlost_what>lost\ connection|timeout|too\ many\ errors)\ after\ STARTTLS
   \ from\ (?P<qlost_peer>\S+)(?P<qlost>)
 |abort:\ TLS\ from\ (?P<abort_peer>\S+):\ (?P<abort_text>[^\n]*)(?P<abort>)
 |(?P<rj_text>(?:milter-)?(?:reject:\ (?:END-OF-MESSAGE|DATA|BDAT|header|body|content)
   |discard:\ [A-Za-z-]+)\ [^\n]*)(?P<rj>)
 |(?:to|client)=(?P<unrec>)
)
|(?:(?P<tls_trust>[A-Z][a-z]+)\ )?TLS\ connection\ (?:
  (?P<tls_state>established|reused)\ (?P<tls_dir>to|from)\ (?P<tls_peer>\S+)
  (?:\ to\ (?P<tls_sni>[^\s:]+))?
  :\ (?P<tls_proto>\S+)\ with\ cipher\ (?P<tls_cipher>\S+)
  \ \((?P<tls_bits>\d+)/(?P<tls_alg>\d+)\ bits\)(?P<tls_rest>[^\n]*)(?P<tls>)
 |(?P<unrec_tls>)
)
|connect\ from\ (?:(?P<conn_peer>\S+)(?P<conn>)|(?P<unrec_conn>))
|proxy-(?P<px_what>accept|reject):\ (?P<px_text>[^\n]*)(?P<px>)
|daemon\ started\ --\ version\ (?P<ms_version>[^,\s]+)(?P<ms>)
|disconnect\ from\ (?:(?P<disc_peer>\S+)(?P<disc_rest>[^\n]*)(?P<disc>)|(?P<unrec_disc>))
|Host\ offered\ (?:STARTTLS:\ \[(?P<off_host>[^\]\n]*)\](?P<off>)|(?P<unrec_off>))
|SSL_(?P<ssl_op>accept|connect)\ error\ (?:
  (?:from|to)\ (?P<ssl_peer>\S+):\ (?P<ssl_detail>[^\n]*)(?P<ssl>)|(?P<unrec_ssl>)
)
|(?P<lost_what>lost\ connection|timeout|too\ many\ errors)\ after\ STARTTLS
  \ from\ (?P<lost_peer>\S+)(?P<lost>)
|(?:warning:\ )?TLS\ library\ problem:\ (?:\d+:)?(?P<lib_text>[^\n]*)(?P<lib>)
|{_TLSPROXY}(?P<tp_what>CONNECT|DISCONNECT)\ (?:(?P<tp_dir>to|from)\ )?
  (?P<tp_peer>\[[^\]\n]*\](?::\d+)?)(?P<tp>)
|(?:warning:\ )?TLS\ handshake\ failed\ for\ service=(?P<hsf_svc>\S+)
  \ peer=(?P<hsf_peer>\S+)(?P<hsf>)
|(?:server\ |client\ |CA\ )?certificate\ verification\ failed\ for\ (?P<cv_peer>\S+)
  :\ (?P<cv_text>[^\n]*)(?P<cv>)
|message\ repeated\ (?P<rep_n>\d+)\ times:\ \[\ ?(?P<rep>)
|(?:warning:\ )?(?P<eng_text>(?:cannot\ (?:get|load)|No\ server\ certs|Invalid\ TLS\ protocol
  |error\ (?:loading\ private\ keys|decoding\ DH|opening\ DH)|SMTPS\ wrappermode
  |disabling\ TLS\ support|connect\ to\ private/tlsproxy\ service)[^\n]*)(?P<eng>)
|warning:\ (?:
  Refusing\ STARTTLS\ request\ from\ (?P<rf_peer>\S+)\ for\ service\ \S+(?P<refuse>)
 |New\ TLS\ session\ rate\ limit\ exceeded:\ \d+\ from\ (?P<rl_peer>\S+)
  \ for\ service\ \S+(?P<ratelimit>)
 |Wrapper-mode\ request\ dropped\ from\ (?P<wm_peer>\S+)\ for\ service\ [^\s.]+\.
  \ ?(?P<wm_text>[^\n]*)(?P<wrapper>)
 |TLS\ policy\ lookup\ for\ [^/\s]+/(?P<pl_host>[^\s/]+?):\ (?P<pl_text>[^\n]*)(?P<policy>)
 |(?P<pm_text>(?:smtp|lmtp)_tls_policy_maps,\ (?:next-hop\ destination\ "(?P<pm_dest>[^"\n]+)")?
   [^\n]*)(?P<policymap>)
)
"""

# Solaris and illumos syslogd insert a message ID after the tag: "]: [ID 197553 mail.info] ..."
_MESSAGE: Final = re.compile(
    r"\]:\ (?:\[ID\ \d+\ [a-z0-9]+\.[a-z]+\]\ )?(?:" + _ALTERNATIVES + ")", re.X
)
_BODY: Final = re.compile(r"(?:" + _ALTERNATIVES + ")", re.X)
_PID_TAG: Final = re.compile(r"\[\d+\]: ")  # a syslog tag's pid: "postfix/smtpd[1234]: "
# a log viewer's box around each line, copied with it (k9s's pod logs): "│ <line>   │"
_BORDER: Final = re.compile(r"(?m)^│ ?([^\n]*?)[ \t]*(?:│[ \t]*)?$")
assert _MESSAGE.groupindex == _BODY.groupindex  # handlers read groups by number from either


def _groups(*names: str) -> tuple[int, ...]:
    """Group numbers, for the handlers of frequent lines (faster than looking up names)."""
    return tuple(_MESSAGE.groupindex[n] for n in names)


_TLS_GROUPS: Final = _groups(
    "tls_trust",
    "tls_state",
    "tls_dir",
    "tls_peer",
    "tls_sni",
    "tls_proto",
    "tls_cipher",
    "tls_bits",
    "tls_alg",
    "tls_rest",
)
_DLV_GROUPS: Final = _groups(
    "qid",
    "dlv_to",
    "dlv_relay",
    "dlv_cu",
    "dlv_delay",
    "dlv_delays",
    "dlv_tls",
    "dlv_dsn",
    "dlv_status",
    "dlv_text",
)
_CLI_GROUPS: Final = _groups("qid", "cli_peer", "cli_rest")
_CONN_GROUP: Final = _MESSAGE.groupindex["conn_peer"]
_DISC_GROUPS: Final = _groups("disc_peer", "disc_rest")

_LEVEL = r"(?i:emerg|alert|crit|err|error|warn|warning|notice|info|debug)"
_SEVERITY = rf"(?:[a-z0-9]+\.)?{_LEVEL}"
# a severity column where a host name would be ("2026-11-25T21:54:25+00:00 INFO postfix/smtpd[1]")
_SEVERITY_WORDS: Final = frozenset(
    ("EMERG", "ALERT", "CRIT", "ERR", "ERROR", "WARN", "WARNING", "NOTICE", "INFO", "DEBUG")
)

# Every header shape seen in real maillogs, from the line start to the tag's ``[pid``:
#   Nov  5 09:03:07 mx postfix/smtpd[1234          classic syslog (RFC 3164), and "Nov 05",
#   2025-01-05T09:03:07.118402+01:00 mx postfix/.. RFC 3339 (rsyslog), ISO 8601 (journalctl),
#   ... mx mail.info postfix/..., ... INFO    postfix/..   a facility.severity or severity column,
#   <22>Nov  5 ...                                  a syslog priority left in the file,
#   mail_1  | Nov  5 ...                            docker compose's service prefix,
#   Aug 26 06:06:18 host mailu-smtp[840]: Aug 26 08:06:18 mail postfix/..  a container's
#                                                   syslog line relayed whole by the host's,
#   2023-12-04 19:58:45.426648751  mail.info: Dec  4 19:58:45 postfix/..  s6-log's time and
#                                                   busybox syslogd's "facility.level:" (no host),
#   2024-07-03T17:18:06.602684852Z Jul 03 ...      docker logs --timestamps before the stamp,
#   postfix/smtpd[1234                              the tag alone (no timestamp, no host),
#   /var/log/mail.log.1:Nov  5 ...                  grep -H / zgrep's file name before the stamp,
#   Mar 19 23:48:18 <mail.info> mx ...             FreeBSD syslogd -vv (-v: "<2.6>"),
#   Wed 2025-11-05 09:03:07 UTC mx ...             journalctl -o short-full,
#   1762333387.118402 mx ...                        journalctl -o short-unix,
#   [  642875.000001] mx ...                        journalctl -o short-monotonic (no wall clock),
#   09:03:07 mx ...                                 a time without a date (not read),
# and a month name in another language (journalctl -o short under a German or French locale).
_HEADER: Final = re.compile(
    rf"""
    (?:[^\s|]+\s+\|\s+)?
    (?:[^\W\d_]{{3,5}}\.?\s+[0-3]?\d\s+\d\d:\d\d:\d\d\s+\S+\s+[^\s\[\]]+\[\d+\]:\s+
       (?=[A-Z][a-z]{{2}}\s+[0-3]?\d\s+\d\d:\d\d:\d\d\s))?
    (?:(?P<s6>\d{{4}}-\d\d-\d\d\ \d\d:\d\d:\d\d\.\d+)\s+(?=[a-z0-9]+\.{_LEVEL}:\s))?
    (?:[a-z0-9]+\.{_LEVEL}:\s+)?
    (?:[^\s:|]+:(?=[A-Z][a-z]{{2}}\s|\d{{4}}-\d\d-\d\d[T\ ]))?
    (?:(?P<dock>\d{{4}}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?Z)\s+(?=\S+\s+[ 0-3]?\d\s))?
    (?:<\d{{1,3}}>)?
    (?:
      (?:(?P<bsd>[A-Z][a-z]{{2}}\s+[0-3]?\d\s+\d\d:\d\d:\d\d)(?:\.\d+)?
        |(?P<iso>\d{{4}}-\d\d-\d\d[T\ ]\d\d:\d\d:\d\d(?:[.,]\d+)?(?:Z|[+-]\d\d(?::?\d\d)?)?)
        |(?P<other>[A-Z][a-z]{{2}}\ \d{{4}}-\d\d-\d\d\ \d\d:\d\d:\d\d(?:\.\d+)?\ [\w+-]+
          |\d{{9,11}}\.\d{{1,9}})
        |\[\s*\d+\.\d+(?:\s+<\s*\d+\.\d+\s*>)?\s*\]
        |\d\d:\d\d:\d\d(?:\.\d+)?
        |[^\W\d_]{{3,5}}\.?\s+[0-3]?\d\s+\d\d:\d\d:\d\d
      )\s+
    )?
    (?:<(?:[a-z0-9]+\.[a-z]+|\d{{1,2}}\.\d)>\s+)?
    (?:[a-z0-9]+\.{_LEVEL}\s+)?
    (?:(?P<host>[^\s\[\]|]+)\s+)??
    (?:{_SEVERITY}\s+|<{_SEVERITY}>\s+)?
    (?P<tag>[^\s\[\]]+)\[(?P<pid>\d+)
    """,
    re.X,
)

# RFC 5424: [<PRI>]VERSION TIMESTAMP HOSTNAME APP-NAME PROCID MSGID STRUCTURED-DATA MSG, also
# relayed behind a classic syslog prefix ("Sep 12 21:37:54 host 1 2023-09-12T...").
_RFC5424: Final = re.compile(
    r"""(?m)^(?:<\d{1,3}>|[A-Z][a-z]{2}\s+[0-3]?\d\s+\d\d:\d\d:\d\d\s+\S+\s+)1
    \ (?P<ts>\S+)\ (?P<host>\S+)\ (?P<tag>\S+)\ (?P<pid>\S+)\ \S+
    \ (?:-|(?:\[(?:[^\]\\\n]|\\.)*\])+)(?:\ (?:\ufeff)?\ ?|$)""",
    re.X,
)

# tlsproxy's CONNECT/DISCONNECT as the whole message of an RFC 5424 line (no "tlsproxy[pid]: " to
# look behind for). postscreen's "CONNECT from [addr]:port to [addr]:port" does not fullmatch.
_PROXY_BODY: Final = re.compile(
    r"(?P<tp_what>CONNECT|DISCONNECT)\ (?:(?P<tp_dir>to|from)\ )?"
    r"(?P<tp_peer>\[[^\]\n]*\](?::\d+)?)\s*",
    re.X,
)

# the client in a rejection: "END-OF-MESSAGE from host[addr]: 5.7.1 ...", "header Subject: x from
# host[addr]; from=<...>"
_REJECTED_FROM: Final = re.compile(r" from ([^\s\[\]]+\[[^\]\s]*\])[:;]")

_SUFFIX: Final = re.compile(
    r" (key-exchange|server-signature|server-digest|client-signature|client-digest) (\S+)"
    r"(?: \(([^)]*)\))?"
)

_CURVES: Final = {
    "p-256": "P-256",
    "prime256v1": "P-256",
    "secp256r1": "P-256",
    "p-384": "P-384",
    "secp384r1": "P-384",
    "p-521": "P-521",
    "secp521r1": "P-521",
}


def _daemon_of(ev: Event) -> str:
    """The Postfix daemon behind an RFC 5424 line whose APP-NAME is just ``postfix``.

    rsyslog's default parser cuts the tag at the first slash, so ``postfix/smtpd`` arrives as
    ``postfix`` and the daemon must be told from the message: a delivery names its transport in
    ``relay=`` (``local``, ``virtual``) or is the smtp client's, and anything else with a
    direction is the SMTP server's (inbound) or client's (outbound). tlsproxy's handshake lines
    look like those of smtp or smtpd: the correlator tells them apart by the process' own
    ``CONNECT`` line just before."""
    if isinstance(ev, Delivery):
        return ev.relay if ev.relay in ("local", "virtual") else "smtp"
    if isinstance(ev, TlsproxyConnection) or (
        isinstance(ev, TlsFailure) and ev.source == "tlsproxy"
    ):
        return "tlsproxy"
    direction = getattr(ev, "direction", None)
    if direction == INBOUND:
        return "smtpd"
    if direction == OUTBOUND:
        return "smtp"
    return ev.service


def _attribute(text: str, name: str) -> str | None:
    """The value of ``name=value`` in a list of ``, name=value`` attributes."""
    i = text.find(name)
    if i < 0:
        return None
    return text[i + len(name) :].split(",", 1)[0].strip() or None


def _param(text: str) -> str:
    """``2048 bits`` -> ``2048``; ``prime256v1`` -> ``P-256``; keeps ``raw public key``."""
    words = text.split()
    out = []
    for w in words:
        if w in ("bits", "bit"):
            continue
        out.append(_CURVES.get(w.lower(), w))
    return " ".join(out)


def algorithm(name: str, param: str | None) -> str:
    """Normalise a key-exchange or signature algorithm across Postfix and OpenSSL versions.

    ``ECDHE (P-256)``, ``ECDHE (prime256v1)`` and the 3.10+ group name ``secp256r1`` all become
    ``ECDHE P-256``; ``x25519`` becomes ``X25519``; ``DHE (2048 bits)`` and ``ffdhe2048`` become
    ``DHE 2048``; hybrids such as ``X25519MLKEM768`` stay as they are.
    """
    low = name.lower()
    if low in ("x25519", "x448"):
        name = name.upper()
    elif low in _CURVES:
        name = "ECDHE " + _CURVES[low]
    elif low.startswith("ffdhe") and low[5:].isdigit():
        name = "DHE " + low[5:]
    if param:
        return f"{name} {_param(param)}"
    return name


# key-exchange, server-signature, server-digest, client-signature, client-digest
_Suffix = tuple[str | None, str | None, str | None, str | None, str | None]


def _suffix(rest: str) -> _Suffix:
    """The TLS 1.3 suffixes of a handshake summary (Postfix 3.4+), normalised."""
    found: dict[str, str] = {}
    for name, value, param in _SUFFIX.findall(rest):
        found[name] = value if name.endswith("digest") else algorithm(value, param)
    return (
        found.get("key-exchange"),
        found.get("server-signature"),
        found.get("server-digest"),
        found.get("client-signature"),
        found.get("client-digest"),
    )


_MONTHS: Final = {
    m: i
    for i, m in enumerate(
        ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"], 1
    )
}


# Month abbreviations of other locales (glibc's LC_TIME abmon, lower case, without a trailing
# dot), as journalctl -o short and other strftime("%b") writers print them under that locale:
# German, French, Spanish, Italian, Dutch, Portuguese, Swedish, Polish, Czech and Russian.
# No abbreviation means two different months.
_LOCAL_MONTHS: Final = {
    name: i
    for names in (
        "jan feb mär apr mai jun jul aug sep okt nov dez",
        "janv févr mars avr mai juin juil août sept oct nov déc",
        "ene feb mar abr may jun jul ago sep oct nov dic",
        "gen feb mar apr mag giu lug ago set ott nov dic",
        "jan feb mrt apr mei jun jul aug sep okt nov dec",
        "jan fev mar abr mai jun jul ago set out nov dez",
        "jan feb mar apr maj jun jul aug sep okt nov dec",
        "sty lut mar kwi maj cze lip sie wrz paź lis gru",
        "led úno bře dub kvě čvn čvc srp zář říj lis pro",
        "янв фев мар апр мая июн июл авг сен окт ноя дек",
    )
    for i, name in enumerate(names.split(), 1)
}


class Timestamps:
    """Turn header timestamps into seconds since the epoch, cached by their text.

    Classic syslog timestamps have no year and no zone: they are local time, and the year is
    inferred from ``reference`` (the file's modification time, or now) and then carried forward,
    so a log crossing New Year stays in order.
    """

    def __init__(self, reference: float | None = None) -> None:
        ref = time.localtime(reference if reference is not None else time.time())
        self._ref_month_day = (ref.tm_mon, ref.tm_mday)
        self._ref_year = ref.tm_year
        self._year: int | None = None
        self._month = 0
        self.cache: dict[str, float] = {}  # timestamp text -> seconds
        self._hours: dict[tuple[int, int, int, int], float] = {}

    def parse(self, text: str) -> float | None:
        """Seconds since the epoch for a classic, ISO 8601 or journalctl (``short-full``,
        ``short-unix``) timestamp, None for anything else."""
        cached = self.cache.get(text)
        if cached is not None:
            return cached
        if text[:1].isdigit():
            if "-" not in text and ":" not in text:
                try:
                    return float(text)  # short-unix: seconds since the epoch
                except ValueError:
                    return None
            return self.iso(text)
        if text[8:9] == "-":
            return self._full(text)
        return self.bsd(text)

    def _full(self, text: str) -> float | None:
        """journalctl's ``Wed 2025-11-05 09:03:07 CET``: local time, unless the zone says UTC
        (a zone abbreviation is ambiguous; journalctl writes the zone of the machine it runs on,
        which is also where tlslogd reads its output)."""
        parts = text.split()
        if len(parts) != 4:
            return None
        zone = parts[3]
        offset = "+00:00" if zone in ("UTC", "GMT") else zone if zone[:1] in "+-" else ""
        return self.iso(f"{parts[1]}T{parts[2]}{offset}")

    def bsd(self, text: str) -> float | None:
        cached = self.cache.get(text)
        if cached is not None:
            return cached
        parts = text.split()
        month = None
        if len(parts) == 3:
            month = _MONTHS.get(parts[0]) or _LOCAL_MONTHS.get(parts[0].rstrip(".").lower())
        clock = parts[2].split(":") if month is not None else ()
        if len(clock) != 3 or not all(c.isdigit() for c in clock) or not parts[1].isdigit():
            return None
        day, hour, minute, second = int(parts[1]), int(clock[0]), int(clock[1]), int(clock[2])
        assert month is not None
        year = self._year_for(month, day)
        key = (year, month, day, hour)
        hour_start = self._hours.get(key)
        if hour_start is None:
            try:
                hour_start = time.mktime((year, month, day, hour, 0, 0, 0, 0, -1))
            except (OverflowError, ValueError):
                return None
            if len(self._hours) > _CACHE_MAX:
                self._hours.clear()
            self._hours[key] = hour_start
        value = hour_start + minute * 60 + second
        if len(self.cache) > _CACHE_MAX:
            self.cache.clear()
        self.cache[text] = value
        return value

    def _year_for(self, month: int, day: int) -> int:
        if self._year is None:
            self._year = self._ref_year
            if (month, day) > (self._ref_month_day[0], self._ref_month_day[1] + 1):
                self._year -= 1
        elif month < self._month - 6:
            self._year += 1  # December -> January
            self.cache.clear()
        elif month > self._month + 6 and self._month:
            return self._year - 1  # a late line from last December; keep the current year
        self._month = month
        return self._year

    def iso(self, text: str) -> float | None:
        # Cache by second and zone; add the fraction separately (every line differs in it).
        frac = 0.0
        base = text
        if len(text) > 19 and text[19] in ".,":
            end = 20
            while end < len(text) and text[end].isdigit():
                end += 1
            frac = float("0." + (text[20:end] or "0"))
            base = text[:19] + text[end:]
        cached = self.cache.get(base)
        if cached is None:
            try:
                parsed = dt.datetime.fromisoformat(base.replace(" ", "T", 1))
            except ValueError:
                return None
            cached = parsed.timestamp()
            if len(self.cache) > _CACHE_MAX:
                self.cache.clear()
            self.cache[base] = cached
        return cached + frac


_LIB_REASONS: Final = (
    # our own files and settings first: a certificate we cannot load is not the peer's fault
    ("system lib", "engine"),
    ("fopen", "engine"),
    ("no such file", "engine"),
    ("ssl_ctx_use", "engine"),
    ("pem routines", "engine"),
    ("key values mismatch", "engine"),
    ("ssl_set_cert", "engine"),
    ("not replacing certificate", "engine"),
    ("pem lib", "engine"),  # a PEM file of ours that does not parse (CA file, certificate)
    ("x509_load_cert", "engine"),  # the CA file (smtp(d)_tls_CAfile)
    ("x509_check_private_key", "engine"),  # our key does not match our certificate
    # our own protocol settings leave no version to offer: raised before any byte is sent
    ("no protocols available", "engine"),
    ("unsupported protocol", "protocol"),
    ("protocol version", "protocol"),
    ("version too low", "protocol"),
    ("unknown protocol", "protocol"),
    ("no shared cipher", "cipher"),
    ("no cipher", "cipher"),
    ("no suitable signature", "cipher"),
    ("no shared signature", "cipher"),
    ("no suitable key share", "cipher"),
    ("legacy sigalg", "cipher"),
    ("insufficient security", "cipher"),  # alert 71: the peer wants stronger parameters
    ("dh key too small", "cipher"),  # the server's DH group is too weak for our library
    ("inappropriate fallback", "protocol"),
    ("certificate", "certificate"),
    ("unknown ca", "certificate"),
    ("bad signature", "certificate"),
    ("unexpected eof", "lost_connection"),
    ("connection reset", "lost_connection"),
    ("broken pipe", "lost_connection"),
)


def library_reason(text: str) -> str:
    """Failure reason from an OpenSSL error string (``TLS library problem: ...``)."""
    low = text.lower()
    for needle, reason in _LIB_REASONS:
        if needle in low:
            return reason
    return "handshake"


def ssl_error_reason(detail: str) -> str:
    """Reason from the tail of ``SSL_accept/SSL_connect error ...: <detail>``."""
    d = detail.strip()
    if d.lstrip("-").isdigit():
        return "handshake"
    low = d.lower()
    if "lost connection" in low or "reset by peer" in low or "broken pipe" in low:
        return "lost_connection"
    if "timed out" in low or "timeout" in low:
        return "timeout"
    return "handshake"


_STATUS_REASONS: Final = (
    ("TLS is required, but was not offered", "not_offered"),
    ("refused to start TLS", "refused"),
    ("TLS engine is unavailable", "engine"),
    ("TLS is required, but unavailable", "engine"),
    ("TLS is required but unavailable", "engine"),
    ("TLS is required, but not available", "engine"),
    ("client TLS configuration problem", "policy"),
    ("Cannot start TLS", "handshake"),
    ("Server certificate not", "certificate"),
    ("Cannot verify server", "certificate"),
    ("TLSA lookup error", "policy"),
    ("non DNSSEC destination", "policy"),
    ("no TLSA records found", "policy"),
    ("TLSA records unusable", "policy"),
    ("MX RRset is insecure", "policy"),
    ("while receiving the STARTTLS response", "lost_connection"),
    ("while sending STARTTLS", "lost_connection"),
    ("timed out while performing the TLS handshake", "timeout"),
    ("TLS handshake", "handshake"),
)


# a word every needle above contains one of: most status texts have none and stop here
_STATUS_HINTS: Final = ("TLS", "certificate", "DNSSEC", "RRset", "verify")
assert all(any(h in needle for h in _STATUS_HINTS) for needle, _ in _STATUS_REASONS)

# The server's own reply refuses the mail for a TLS reason: "host mx[addr] said: 530 5.7.0 Must
# issue a STARTTLS command first", Microsoft's "454 4.7.0 Failed to establish appropriate TLS
# channel", a TLS-version policy's "550 5.7.4 ... TLS version is not available". That is a
# security or policy reply (enhanced code X.7.Y, or a bare 530) whose own words name TLS or
# STARTTLS -- not an address, a URL, a bracketed tag or Postfix's "(in reply to ... command)".
_REMOTE_REFUSAL: Final = re.compile(r" said: (?:[45]\d\d[ -][45]\.7\.\d{1,3}\b|530[ -])([^\n]*)")
_NOT_REPLY_WORDS: Final = re.compile(r"<[^>\n]*>|\S+://\S*|\[[^\]\n]*\]|\(in reply to [^)\n]*\)")
_TLS_WORD: Final = re.compile(r"\b(?:START)?TLS\b")


def status_reason(text: str | None) -> str | None:
    """Failure reason when a delivery's status text is a TLS failure, else None."""
    if not text or not any(hint in text for hint in _STATUS_HINTS):
        return None
    for needle, reason in _STATUS_REASONS:
        if needle in text:
            return reason
    refusal = _REMOTE_REFUSAL.search(text)
    if refusal is not None and _TLS_WORD.search(_NOT_REPLY_WORDS.sub(" ", refusal.group(1))):
        return "rejected"
    return None


_SERVICE_CACHE_MAX: Final = 1024


def _unboxed(text: str) -> str:
    """The text without a log viewer's box around each line."""
    if "│" in text:  # free on ASCII text: a wider character is never searched for
        return _BORDER.sub(r"\1", text)
    return text


def _line(text: str, start: int, end: int) -> str:
    """The line from ``start`` to ``end`` (-1: the end of the text), without a CRLF file's
    carriage return."""
    line = text[start : end if end >= 0 else len(text)]
    return line[:-1] if line.endswith("\r") else line


class Parser:
    """Parse Postfix log text into events. Holds only caches and the year inference state."""

    def __init__(self, *, reference_time: float | None = None) -> None:
        self.timestamps = Timestamps(reference_time)
        self._services: dict[str, str] = {}
        self._suffixes: dict[str, _Suffix] = {}
        self._handlers: dict[str, Callable[..., Event | None]] = {
            "dlv": self._delivery,
            "tls": self._tls,
            "cli": self._client,
            "conn": self._connect,
            "disc": self._disconnect,
            "off": self._offered,
            "ssl": self._ssl_error,
            "lib": self._library,
            "lost": self._lost,
            "qlost": self._lost,
            "tp": self._tlsproxy,
            "hsf": self._handshake_failed,
            "cv": self._cert_verify,
            "qr": self._queue_reason,
            "abort": self._abort,
            "refuse": self._refuse,
            "ratelimit": self._refuse,
            "wrapper": self._wrapper_dropped,
            "policy": self._policy,
            "policymap": self._policy,
            "ms": self._master_started,
            "px": self._proxy_verdict,
            "rj": self._rejected,
            "eng": self._engine,
        }

    # -- entry points -------------------------------------------------------------------------

    def scan(self, text: str, *, with_lines: bool = False) -> Iterator[Event]:
        """Events of a chunk of complete lines, in order. Lines that matter for nothing yield no
        event; candidate lines that do not parse yield :class:`Unrecognised`."""
        text = _unboxed(text)
        if text.startswith("<") or "\n<" in text or " 1 20" in text:
            return self._scan_mixed(text, with_lines)
        if _PID_TAG.search(text) is None:
            return self._scan_untagged(text)
        return self._scan_bracketed(text, with_lines, None)

    def parse_line(self, line: str) -> Event:
        """Classify one line (without its newline): its event, or :class:`Ignored` /
        :class:`Unrecognised` with the header fields that could be read."""
        for ev in self.scan(line, with_lines=True):
            return ev
        return self._no_event(line)

    # -- scanning -----------------------------------------------------------------------------

    def _scan_bracketed(
        self, text: str, with_lines: bool, starts: list[int] | None
    ) -> Iterator[Event]:
        """Events of every ``]: `` candidate of the chunk (appending each line start to
        ``starts`` when given).

        This loop runs for about half of all log lines, so the common header shape
        (``<timestamp> <host> <tag>[<pid>``) is split inline with string methods and caches;
        anything else goes through :meth:`_header`."""
        rfind = text.rfind
        find = text.find
        handlers = self._handlers
        stamps = self.timestamps.cache
        parse_stamp = self.timestamps.parse
        services = self._services
        summaries = 0
        for m in _MESSAGE.finditer(text):
            bracket = m.start()
            start = rfind("\n", 0, bracket) + 1
            kind = m.lastgroup
            if kind == "tls" or kind == "unrec_tls":
                summaries += 1
            if kind == "rep":
                for repeated in self._repeated(m, text, start, bracket, with_lines):
                    if type(repeated) is TlsEstablished:
                        summaries += 1
                    if starts is not None:
                        starts.append(start)
                    yield repeated
                continue
            head, _, tagpid = text[start:bracket].rpartition(" ")
            tag, _, pid = tagpid.partition("[")
            stamp, _, host = head.rpartition(" ")
            ts = stamps.get(stamp)
            if ts is None and stamp:
                ts = parse_stamp(stamp)
            service = services.get(tag) or self._service(tag)
            handler = handlers.get(kind)  # type: ignore[arg-type]
            ev: Event | None
            if ts is not None and pid.isdigit() and host and host not in _SEVERITY_WORDS:
                if handler is None:
                    ev = self._unrecognised(text, start, find, (host, tag, service, int(pid), ts))
                else:
                    ev = handler(m, host, tag, service, int(pid), ts)
            else:
                fields = self._header(text, start, bracket)
                if fields is None or handler is None:
                    ev = self._unrecognised(text, start, find, fields)
                else:
                    ev = handler(m, *fields)
            if ev is None:
                continue
            if with_lines and ev.line is None:
                end = find("\n", bracket)
                ev.line = _line(text, start, end)
            if starts is not None:
                starts.append(start)
            yield ev
        if starts is None and summaries < _summaries(text):
            # handshake summaries the scan did not read: without a syslog tag among tagged
            # lines (an excerpt pasted into a log), or with something before the message (a
            # forum's markup): counted as unrecognised, not silently ignored
            untagged: list[str] = []
            for line in text.splitlines(True):
                if _PID_TAG.search(line) is None:
                    untagged.append(line)
                elif _SUMMARY in line:
                    found = _MESSAGE.search(line)
                    if found is None or found.lastgroup not in ("tls", "unrec_tls", "rep"):
                        yield self._unrecognised(line.rstrip("\n"), 0, line.find, None)
            yield from self._scan_untagged("".join(untagged))

    @staticmethod
    def _scan_untagged(text: str) -> Iterator[Event]:
        """A chunk without a single syslog tag (``journalctl -o cat``, an excerpt copied from a
        log viewer): no line can be given to a process, but those that say something about TLS,
        sessions or deliveries are unrecognised, counted and sample-logged, not ignored."""
        done = 0
        find = text.find
        for m in _BODY.finditer(text):
            if m.start() < done or (m.start() and text[m.start() - 1].isalnum()):
                continue  # one per line; and not "connect from" inside "Disconnect from"
            end = find("\n", m.start())
            done = end if end >= 0 else len(text)
            yield Parser._unrecognised(text, text.rfind("\n", 0, m.start()) + 1, find, None)

    def _scan_mixed(self, text: str, with_lines: bool) -> Iterator[Event]:
        """A chunk with RFC 5424 lines: scan both shapes and merge them in line order."""
        starts: list[int] = []
        events = list(self._scan_bracketed(text, with_lines, starts))
        found = list(zip(starts, events, strict=True))
        find = text.find
        for m in _RFC5424.finditer(text):
            start = m.start()
            end = find("\n", start)
            end = end if end >= 0 else len(text)
            body = _BODY.match(text, m.end(), end)
            pid = m.group("pid")
            fields = (
                None if m.group("host") == "-" else m.group("host"),
                m.group("tag"),
                self._service(m.group("tag")),
                int(pid) if pid.isdigit() else None,
                self.timestamps.iso(m.group("ts")),
            )
            ev: Event | None
            cut = tag_cut(fields[1])
            if body is None:
                proxy = _PROXY_BODY.fullmatch(text, m.end(), end)
                # tlsproxy's, when the tag says so; with a cut tag only CONNECT to/from, as
                # postscreen's DISCONNECT looks the same
                if proxy is None or not (
                    fields[2] == "tlsproxy" or (cut and proxy.group("tp_dir"))
                ):
                    continue
                ev = self._tlsproxy(proxy, fields[0], fields[1], "tlsproxy", *fields[3:])
            else:
                handler = self._handlers.get(body.lastgroup or "")
                ev = handler(body, *fields) if handler else Unrecognised(*fields)
            if ev is None:
                continue
            if cut:
                ev.service = _daemon_of(ev)
            if with_lines:
                ev.line = _line(text, start, end)
            found.append((start, ev))
        found.sort(key=lambda item: item[0])
        for _, ev in found:
            yield ev

    def _repeated(
        self, m: re.Match[str], text: str, start: int, bracket: int, with_lines: bool
    ) -> Iterator[Event]:
        """rsyslog's ``message repeated N times: [ MESSAGE]``: MESSAGE N more times."""
        end = text.find("\n", bracket)
        inner = text[m.end() : end if end >= 0 else len(text)]
        if inner.endswith("]"):
            inner = inner[:-1]
        line = text[start : bracket + 3] + inner
        found = list(self._scan_bracketed(line, with_lines, None))
        for _ in range(min(int(m.group("rep_n")), 10_000)):
            for ev in found:
                yield copy.copy(ev)

    def _header(self, text: str, start: int, end: int) -> _Fields | None:
        """Header fields of the line starting at ``start`` whose tag ends at ``end`` (the ``]``).

        The common shape, ``<timestamp> <host> <tag>[<pid>``, is split with string methods and a
        timestamp cache; anything else (severity columns, no timestamp, a syslog priority) goes
        through ``_HEADER``."""
        head, _, tagpid = text[start:end].rpartition(" ")
        tag, _, pid = tagpid.partition("[")
        stamp, _, host = head.rpartition(" ")
        if stamp and host and pid.isdigit() and "[" not in host and host not in _SEVERITY_WORDS:
            ts = self.timestamps.parse(stamp)
            if ts is not None:
                return host, tag, self._service(tag), int(pid), ts
        h = _HEADER.fullmatch(text, start, end)
        return None if h is None else self._header_fields(h)

    def _header_fields(self, h: re.Match[str]) -> _Fields:
        tag = h.group("tag")
        s6, dock, bsd, iso, other = h.group("s6", "dock", "bsd", "iso", "other")
        ts = None
        if s6 is not None or dock is not None:  # the outer stamp has the year (and the zone)
            ts = self.timestamps.iso(s6 or dock or "")
        elif bsd is not None:
            ts = self.timestamps.bsd(bsd)
        elif iso is not None:
            ts = self.timestamps.iso(iso)
        elif other is not None:
            ts = self.timestamps.parse(other)
        return h.group("host"), tag, self._service(tag), int(h.group("pid")), ts

    def _service(self, tag: str) -> str:
        service = self._services.get(tag)
        if service is None:
            service = tag.rsplit("/", 1)[-1]
            if len(self._services) >= _SERVICE_CACHE_MAX:
                self._services.clear()
            self._services[tag] = service
        return service

    @staticmethod
    def _unrecognised(
        text: str, start: int, find: Callable[[str, int], int], fields: _Fields | None
    ) -> Unrecognised:
        """An unrecognised line always carries its text (at most 2000 characters), so that it
        can be sample-logged."""
        end = find("\n", start)
        ev = Unrecognised(*(fields or (None, "", "", None, None)))
        ev.line = _line(text, start, end)[:2000]
        return ev

    def _no_event(self, line: str) -> Event:
        """A line that became no event: ignored, like the daemon counts it (with the header
        fields when they can be read)."""
        line = _unboxed(line)
        bracket = line.find("]: ")
        fields = self._header(line, 0, bracket) if bracket > 0 else None
        if fields is None:
            m = _RFC5424.match(line)
            if m is not None:
                pid = m.group("pid")
                fields = (
                    m.group("host"),
                    m.group("tag"),
                    self._service(m.group("tag")),
                    int(pid) if pid.isdigit() else None,
                    self.timestamps.iso(m.group("ts")),
                )
        ev = Ignored(*(fields or (None, "", "", None, None)))
        ev.line = line
        return ev

    # -- handlers: one per message alternative ------------------------------------------------

    def _tls(
        self,
        m: re.Match[str],
        host: str | None,
        tag: str,
        svc: str,
        pid: int | None,
        ts: float | None,
    ) -> Event:
        trust, state, way, peer, sni, proto, cipher, bits, alg, rest = m.group(*_TLS_GROUPS)
        ev = TlsEstablished(
            host,
            tag,
            svc,
            pid,
            ts,
            OUTBOUND if way == "to" else INBOUND,
            peer,
            trust.lower() if trust else "none",
            proto,
            cipher,
            int(bits),
            int(alg),
            state == "reused",
            sni,
        )
        if rest:
            suffix = self._suffixes.get(rest)
            if suffix is None:
                suffix = _suffix(rest)
                if len(self._suffixes) >= _CACHE_MAX:
                    self._suffixes.clear()
                self._suffixes[rest] = suffix
            (
                ev.key_exchange,
                ev.server_signature,
                ev.server_digest,
                ev.client_signature,
                ev.client_digest,
            ) = suffix
        return ev

    def _delivery(
        self,
        m: re.Match[str],
        host: str | None,
        tag: str,
        svc: str,
        pid: int | None,
        ts: float | None,
    ) -> Event:
        qid, to, relay, cu, delay, delays, tlsf, dsn, status, text = m.group(*_DLV_GROUPS)
        if text is not None:
            text = text.rstrip()
            if text.endswith(")"):
                text = text[:-1]
        return Delivery(
            host,
            tag,
            svc,
            pid,
            ts,
            qid,
            to,
            relay,
            status.lower(),
            int(cu) if cu else None,
            delay,
            delays,
            tlsf,
            dsn,
            text,
            None if status == "sent" else status_reason(text),
        )

    def _client(
        self,
        m: re.Match[str],
        host: str | None,
        tag: str,
        svc: str,
        pid: int | None,
        ts: float | None,
    ) -> Event:
        qid, peer, rest = m.group(*_CLI_GROUPS)
        sasl = _attribute(rest, "sasl_method=") if rest else None
        orig = _attribute(rest, "orig_client=") if rest else None
        return MessageReceived(host, tag, svc, pid, ts, qid, peer, sasl, orig)

    def _connect(
        self,
        m: re.Match[str],
        host: str | None,
        tag: str,
        svc: str,
        pid: int | None,
        ts: float | None,
    ) -> Event | None:
        if svc != "smtpd" and svc != "postfix":  # "postfix": see _daemon_of
            return None
        return SessionStart(host, tag, svc, pid, ts, m.group(_CONN_GROUP))

    def _disconnect(
        self,
        m: re.Match[str],
        host: str | None,
        tag: str,
        svc: str,
        pid: int | None,
        ts: float | None,
    ) -> Event | None:
        if svc != "smtpd" and svc != "postfix":
            return None
        peer, rest = m.group(*_DISC_GROUPS)
        return SessionEnd(host, tag, svc, pid, ts, peer, rest)

    def _offered(
        self,
        m: re.Match[str],
        host: str | None,
        tag: str,
        svc: str,
        pid: int | None,
        ts: float | None,
    ) -> Event:
        return StarttlsOffered(host, tag, svc, pid, ts, m.group("off_host"))

    def _ssl_error(
        self,
        m: re.Match[str],
        host: str | None,
        tag: str,
        svc: str,
        pid: int | None,
        ts: float | None,
    ) -> Event:
        op, peer, detail = m.group("ssl_op", "ssl_peer", "ssl_detail")
        way = INBOUND if op == "accept" else OUTBOUND
        return TlsFailure(
            host, tag, svc, pid, ts, way, peer, ssl_error_reason(detail), detail, "ssl_error"
        )

    def _library(
        self,
        m: re.Match[str],
        host: str | None,
        tag: str,
        svc: str,
        pid: int | None,
        ts: float | None,
    ) -> Event:
        text = m.group("lib_text")
        return TlsFailure(
            host, tag, svc, pid, ts, _direction(svc), None, library_reason(text), text, "library"
        )

    def _lost(
        self,
        m: re.Match[str],
        host: str | None,
        tag: str,
        svc: str,
        pid: int | None,
        ts: float | None,
    ) -> Event:
        what = m.group("lost_what") or m.group("qlost_what")
        reason = "lost_connection" if what == "lost connection" else "timeout"
        if what == "too many errors":
            reason = "handshake"
        return TlsFailure(
            host,
            tag,
            svc,
            pid,
            ts,
            INBOUND,
            m.group("lost_peer") or m.group("qlost_peer"),
            reason,
            what,
            "lost",
        )

    def _tlsproxy(
        self,
        m: re.Match[str],
        host: str | None,
        tag: str,
        svc: str,
        pid: int | None,
        ts: float | None,
    ) -> Event | None:
        if svc != "tlsproxy":
            return None
        what, way, peer = m.group("tp_what", "tp_dir", "tp_peer")
        direction = OUTBOUND if way == "to" else INBOUND if way == "from" else None
        return TlsproxyConnection(host, tag, svc, pid, ts, what.lower(), direction, peer)

    def _handshake_failed(
        self,
        m: re.Match[str],
        host: str | None,
        tag: str,
        svc: str,
        pid: int | None,
        ts: float | None,
    ) -> Event:
        service = m.group("hsf_svc")
        way = OUTBOUND if service.endswith("smtp") or service.endswith("lmtp") else INBOUND
        return TlsFailure(
            host,
            tag,
            svc,
            pid,
            ts,
            way,
            m.group("hsf_peer"),
            "handshake",
            f"service={service}",
            "tlsproxy",
        )

    def _cert_verify(
        self,
        m: re.Match[str],
        host: str | None,
        tag: str,
        svc: str,
        pid: int | None,
        ts: float | None,
    ) -> Event:
        return TlsFailure(
            host,
            tag,
            svc,
            pid,
            ts,
            _direction(svc),
            m.group("cv_peer"),
            "certificate",
            m.group("cv_text"),
            "cert",
        )

    def _queue_reason(
        self,
        m: re.Match[str],
        host: str | None,
        tag: str,
        svc: str,
        pid: int | None,
        ts: float | None,
    ) -> Event:
        text = m.group("qr_text")
        return TlsFailure(
            host,
            tag,
            svc,
            pid,
            ts,
            OUTBOUND,
            None,
            status_reason(text) or "handshake",
            text,
            "reason",
            m.group("qid"),
        )

    def _abort(
        self,
        m: re.Match[str],
        host: str | None,
        tag: str,
        svc: str,
        pid: int | None,
        ts: float | None,
    ) -> Event:
        return TlsFailure(
            host,
            tag,
            svc,
            pid,
            ts,
            INBOUND,
            m.group("abort_peer"),
            "certificate",
            m.group("abort_text"),
            "abort",
        )

    def _refuse(
        self,
        m: re.Match[str],
        host: str | None,
        tag: str,
        svc: str,
        pid: int | None,
        ts: float | None,
    ) -> Event:
        peer = m.group("rf_peer") or m.group("rl_peer")
        detail = "rate limit" if m.group("rl_peer") else "STARTTLS refused"
        return TlsFailure(host, tag, svc, pid, ts, INBOUND, peer, "refused", detail, "refuse")

    def _proxy_verdict(
        self,
        m: re.Match[str],
        host: str | None,
        tag: str,
        svc: str,
        pid: int | None,
        ts: float | None,
    ) -> Event:
        what, text = m.group("px_what", "px_text")
        return ProxyVerdict(host, tag, svc, pid, ts, what == "accept", text)

    def _rejected(
        self,
        m: re.Match[str],
        host: str | None,
        tag: str,
        svc: str,
        pid: int | None,
        ts: float | None,
    ) -> Event:
        qid, text = m.group("qid", "rj_text")
        peer = _REJECTED_FROM.search(text)
        return MessageRejected(host, tag, svc, pid, ts, qid, text, peer and peer.group(1))

    def _wrapper_dropped(
        self,
        m: re.Match[str],
        host: str | None,
        tag: str,
        svc: str,
        pid: int | None,
        ts: float | None,
    ) -> Event:
        """smtpd could not set up TLS for an smtps (wrapper-mode) client and dropped it."""
        detail = m.group("wm_text") or "wrapper-mode request dropped"
        return TlsFailure(
            host, tag, svc, pid, ts, INBOUND, m.group("wm_peer"), "engine", detail, "engine"
        )

    def _policy(
        self,
        m: re.Match[str],
        host: str | None,
        tag: str,
        svc: str,
        pid: int | None,
        ts: float | None,
    ) -> Event:
        """A TLS policy that cannot be used: a lookup error or a malformed smtp_tls_policy_maps
        entry. The deferral that follows in the same process is the same failure."""
        if m.group("pl_text") is not None:
            peer, text, source = m.group("pl_host"), m.group("pl_text"), "policy"
        else:  # the map's entry names only the next-hop; the policy lookup after it, the MX
            peer, text, source = m.group("pm_dest"), m.group("pm_text"), "policy_map"
        return TlsFailure(host, tag, svc, pid, ts, OUTBOUND, peer, "policy", text, source)

    def _master_started(
        self,
        m: re.Match[str],
        host: str | None,
        tag: str,
        svc: str,
        pid: int | None,
        ts: float | None,
    ) -> Event | None:
        if svc != "master" and svc != "postfix":
            return None
        return PostfixStarted(host, tag, svc, pid, ts, m.group("ms_version"))

    def _engine(
        self,
        m: re.Match[str],
        host: str | None,
        tag: str,
        svc: str,
        pid: int | None,
        ts: float | None,
    ) -> Event | None:
        text = m.group("eng_text")
        if "-- using compiled-in defaults" in text:
            # DH parameters that do not load (src/tls/tls_dh.c): TLS goes on with Postfix's own
            return TlsFallback(host, tag, svc, pid, ts, _direction(svc), text)
        low = text.lower()
        if (
            text.startswith("cannot")
            and "TLS" not in text
            and "certificate" not in low
            and "private key" not in low
        ):
            return None  # cannot get/load something else
        # tlsproxy unreachable (smtp_tls_connection_reuse without it): this attempt's failure,
        # by our doing; the process's TLS engine itself is fine. Port 465 without
        # smtp_tls_wrappermode: Postfix's hint before it connects, a failure if the delivery
        # then fails for want of a greeting (the server waits for a TLS handshake)
        if text.startswith("connect to"):
            source = "attempt"
        elif text.startswith("SMTPS wrappermode"):
            source = "wrapper"
        else:
            source = "engine"
        return TlsFailure(host, tag, svc, pid, ts, _direction(svc), None, "engine", text, source)


_SUMMARY: Final = "TLS connection established"


def _summaries(text: str) -> int:
    """How many new-handshake summaries a chunk holds, tagged or not (one fast count)."""
    return text.count(_SUMMARY)


def _direction(service: str) -> str:
    return INBOUND if service in ("smtpd", "postscreen") else OUTBOUND
