"""The end-to-end lab: two real Postfix instances on loopback, tlslogd and a real Prometheus.

* ``main`` (syslog name ``postfix``) is the mail server tlslogd watches: smtpd on 127.0.0.1 and
  [::1] (STARTTLS offered, TLSv1.2 and later only), submission (STARTTLS required, Cyrus SASL
  with a sasldb), smtps (wrapper mode), and an smtp client that routes each test domain to one
  loopback listener of the sink, with a TLS policy per next hop.
* ``sink`` (syslog name ``postfix-sink``) plays the remote servers: one smtpd listener per kind
  of peer (see :data:`PEERS`), every message discarded.

Both instances run from their own configuration directory (``postfix -c DIR``), queue and data
directories under a temporary directory, and log through ``maillog_file``, so no syslog daemon,
system service or ``/etc/postfix`` is involved. Nothing leaves loopback: DNS is off
(``smtp_dns_support_level = disabled``, no peer-name lookups), every next hop is a bracketed
loopback address, and ``default_transport = error:`` refuses everything else. Ports are picked at
run time.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import smtplib
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, TypeVar

T = TypeVar("T")

DOMAIN = "e2e.test"
SENDER = f"alice@senders.{DOMAIN}"  # routed to the "tls" peer, so bounces are delivered too
REJECTED_SUBJECT = "tlslogd e2e: rejected by a header check"  # main's header_checks
SASL_USER = f"alice@{DOMAIN}"
SASL_PASSWORD = "e2e-secret"
SBIN_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])
REPO = Path(__file__).resolve().parents[2]


def find_program(name: str) -> str | None:
    return shutil.which(name, path=SBIN_PATH)


def hostname_in_hosts_file() -> bool:
    """swaks looks up the machine's own name: it must come from /etc/hosts, not DNS."""
    name = socket.gethostname()
    with contextlib.suppress(OSError):
        for line in Path("/etc/hosts").read_text().splitlines():
            if name in line.partition("#")[0].split()[1:]:
                return True
    return False


def swaks_prefix() -> list[str] | None:
    """How to start swaks without a DNS query: as is when the host name is in /etc/hosts,
    otherwise in a UTS namespace of its own named "localhost"; None when neither works."""
    if hostname_in_hosts_file():
        return []
    unshare = find_program("unshare")
    if unshare is None:
        return None
    wrapper = [unshare, "--uts", "sh", "-c", 'hostname localhost && exec "$@"', "swaks"]
    probe = subprocess.run([*wrapper, "true"], capture_output=True, timeout=10)
    return wrapper if probe.returncode == 0 else None


def wait_for(probe: Callable[[], T | None], timeout: float, what: str, step: float = 0.2) -> T:
    """Call ``probe`` until it returns something other than None; fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value is not None:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"gave up after {timeout:.0f} s waiting for {what}")
        time.sleep(step)


def settle(compute: Callable[[], T], expected: T, timeout: float = 20) -> T:
    """Call ``compute`` until it returns ``expected`` or ``timeout`` s have passed; the last
    value (for the caller to assert on, so a failure shows what was seen)."""
    deadline = time.monotonic() + timeout
    while True:
        value = compute()
        if value == expected or time.monotonic() >= deadline:
            return value
        time.sleep(0.5)


# -- ports ------------------------------------------------------------------------------------

_handed_out: set[int] = set()


def _family(addr: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in addr else socket.AF_INET


def _bindable(addr: str, port: int) -> bool:
    with socket.socket(_family(addr), socket.SOCK_STREAM) as s:
        try:
            s.bind((addr, port))
        except OSError:
            return False
    return True


def free_port(*addrs: str) -> int:
    """A TCP port free on every one of ``addrs``, never handed out before in this process."""
    for _ in range(200):
        with socket.socket(_family(addrs[0]), socket.SOCK_STREAM) as s:
            s.bind((addrs[0], 0))
            port = int(s.getsockname()[1])
        if port not in _handed_out and all(_bindable(a, port) for a in addrs[1:]):
            _handed_out.add(port)
            return port
    raise RuntimeError(f"no free port on {', '.join(addrs)}")


def listening() -> set[tuple[str, int]]:
    """(address, port) of every listening TCP socket, from /proc (connecting would be logged)."""
    found: set[tuple[str, int]] = set()
    for table, family in (("/proc/net/tcp", socket.AF_INET), ("/proc/net/tcp6", socket.AF_INET6)):
        with contextlib.suppress(FileNotFoundError):
            for row in Path(table).read_text().splitlines()[1:]:
                fields = row.split()
                if fields[3] != "0A":  # TCP_LISTEN
                    continue
                addr_hex, port_hex = fields[1].split(":")
                raw = bytes.fromhex(addr_hex)
                # the kernel prints the address as 32-bit words in host (little-endian) order
                raw = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
                found.add((socket.inet_ntop(family, raw), int(port_hex, 16)))
    return found


# -- processes --------------------------------------------------------------------------------


def stop_process(proc: subprocess.Popen[Any], grace: float = 10) -> int | None:
    """SIGTERM the process by pid, SIGKILL it after ``grace`` seconds; its exit code."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
    return proc.returncode


def http_get(url: str, timeout: float = 5) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


# -- certificates -----------------------------------------------------------------------------


class Pki:
    """A test CA and the certificates it signs, made with the openssl command."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        directory.mkdir(mode=0o755)
        self.ca = directory / "ca.crt"
        self._openssl(
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "30", "-sha256",
            "-keyout", str(directory / "ca.key"), "-out", str(self.ca),
            "-subj", "/O=tlslogd e2e/CN=tlslogd e2e test CA",
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        )  # fmt: skip

    def _openssl(self, *args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=120)

    def issue(self, name: str, cn: str, sans: str) -> tuple[Path, Path]:
        """A certificate signed by the CA: (certificate, key)."""
        cert, key, csr, ext = (self.dir / f"{name}.{x}" for x in ("crt", "key", "csr", "ext"))
        ext.write_text(
            "basicConstraints=critical,CA:FALSE\n"
            "keyUsage=critical,digitalSignature,keyEncipherment\n"
            "extendedKeyUsage=serverAuth,clientAuth\n"
            f"subjectAltName={sans}\n"
        )
        self._openssl(
            "req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(csr),
            "-subj", f"/O=tlslogd e2e/CN={cn}",
        )  # fmt: skip
        self._openssl(
            "x509", "-req", "-in", str(csr), "-CA", str(self.ca),
            "-CAkey", str(self.dir / "ca.key"), "-CAcreateserial", "-days", "30", "-sha256",
            "-extfile", str(ext), "-out", str(cert),
        )  # fmt: skip
        return cert, key

    def self_signed(self, name: str, cn: str) -> tuple[Path, Path]:
        cert, key = self.dir / f"{name}.crt", self.dir / f"{name}.key"
        self._openssl(
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "30", "-sha256",
            "-keyout", str(key), "-out", str(cert), "-subj", f"/O=Self-signed/CN={cn}",
            "-addext", f"subjectAltName=DNS:{cn}",
        )  # fmt: skip
        return cert, key


# -- Postfix ----------------------------------------------------------------------------------

# Internal services of both instances (no chroot: the temporary directories are not set up
# for it).
_INTERNAL_SERVICES = """\
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
local     unix  -       n       n       -       -       local
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""

_QUEUES = ("maildrop", "incoming", "active", "deferred", "hold")

# Retry quickly so the queue drains within the run: the opportunistic-TLS plaintext fallback
# needs a retry at least minimal_backoff_time after the message arrived, and mail that cannot be
# delivered (an "encrypt" policy against a server without STARTTLS) must expire and bounce.
QUEUE_LIFETIME = 12


class PostfixInstance:
    """One Postfix instance: ``postfix -c <config dir>`` with its own queue and data directory."""

    def __init__(self, root: Path, name: str, syslog_name: str, maillog: Path) -> None:
        self.name = name
        self.syslog_name = syslog_name
        self.config_dir = root / "etc" / name
        self.queue_dir = root / "spool" / name
        self.data_dir = root / "lib" / name
        self.maillog = maillog

    def settings(self, hostname: str) -> dict[str, str]:
        """main.cf settings both instances share: loopback only, no DNS, fast retries."""
        return {
            "compatibility_level": "3.6",
            "queue_directory": str(self.queue_dir),
            "data_directory": str(self.data_dir),
            "syslog_name": self.syslog_name,
            "myhostname": hostname,
            "mydomain": DOMAIN,
            "myorigin": "$myhostname",
            "maillog_file": str(self.maillog),
            "maillog_file_prefixes": str(self.maillog.parent),
            "inet_interfaces": "loopback-only",
            "inet_protocols": "all",
            "mynetworks": "127.0.0.0/8 [::1]/128",
            "relayhost": "",
            "smtp_dns_support_level": "disabled",
            "smtp_host_lookup": "native",
            "smtpd_peername_lookup": "no",
            "alias_maps": "",
            "alias_database": "",
            "biff": "no",
            "append_dot_mydomain": "no",
            "readme_directory": "no",
            "queue_run_delay": "2s",
            "minimal_backoff_time": "2s",
            "maximal_backoff_time": "4s",
            "maximal_queue_lifetime": f"{QUEUE_LIFETIME}s",
            "bounce_queue_lifetime": f"{QUEUE_LIFETIME}s",
            "delay_warning_time": "0",
            # no idle exits or periodic statistics during a run: the log only has traffic
            "max_idle": "3600s",
            "anvil_status_update_time": "3600s",
            "smtpd_banner": "$myhostname ESMTP",
        }

    def write(self, settings: dict[str, str], services: str) -> None:
        for directory in (self.config_dir, self.queue_dir):
            directory.mkdir(parents=True, mode=0o755)
        self.data_dir.mkdir(parents=True, mode=0o700)
        shutil.chown(self.data_dir, "postfix", "postfix")
        main_cf = "".join(f"{key} = {value}\n" for key, value in settings.items())
        (self.config_dir / "main.cf").write_text(main_cf)
        (self.config_dir / "master.cf").write_text(services + _INTERNAL_SERVICES)
        self.maillog.touch()
        self.postfix("check")

    def postfix(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        command = [find_program("postfix") or "postfix", "-c", str(self.config_dir), *args]
        result = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
        if check and result.returncode != 0:
            raise RuntimeError(
                f"{' '.join(command)} failed ({result.returncode}): {result.stdout}{result.stderr}"
            )
        return result

    def master_pid(self) -> int | None:
        try:
            pid = int((self.queue_dir / "pid" / "master.pid").read_text().strip())
        except (OSError, ValueError):
            return None
        return pid if Path(f"/proc/{pid}").exists() else None

    def processes(self) -> list[int]:
        """Pids of every process of this instance: those started with its MAIL_CONFIG."""
        marker = f"MAIL_CONFIG={self.config_dir}".encode()
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                environ = (entry / "environ").read_bytes().split(b"\0")
            except OSError:
                continue
            if marker in environ:
                found.append(int(entry.name))
        master = self.master_pid()
        if master is not None and master not in found:
            found.append(master)
        return found

    def start(self) -> None:
        self.postfix("start")
        wait_for(self.master_pid, 30, f"the master process of the {self.name} instance")

    def stop(self) -> None:
        """``postfix stop``, then SIGKILL (by pid) whatever of this instance is still alive."""
        if self.master_pid() is not None:
            self.postfix("stop", check=False)
            deadline = time.monotonic() + 15
            while self.master_pid() is not None and time.monotonic() < deadline:
                time.sleep(0.1)
        for pid in self.processes():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def queued(self, queues: tuple[str, ...] = _QUEUES) -> int:
        """Messages in the given queues (all of them by default)."""
        return sum(sum(len(files) for _, _, files in os.walk(self.queue_dir / q)) for q in queues)


@dataclass(frozen=True)
class Peer:
    """One kind of remote server: a sink listener, the test domain main routes to it, and the
    TLS policy main's smtp client applies to that next hop (None: the default, ``may``)."""

    kind: str
    addr: str
    starttls: bool = True
    requires_tls: bool = False  # refuses MAIL FROM before STARTTLS (smtpd_tls_security_level)
    self_signed: bool = False
    tls12_max: bool = False
    policy: str | None = None
    transport: str = "smtp"  # main's master.cf service that delivers to it

    @property
    def domain(self) -> str:
        return f"{self.kind}.{DOMAIN}"

    def nexthop(self, port: int) -> str:
        return f"[ipv6:{self.addr}]:{port}" if ":" in self.addr else f"[{self.addr}]:{port}"

    def relay(self, port: int) -> str:
        """How Postfix writes this peer in ``relay=`` and in its TLS lines."""
        return f"{self.addr}[{self.addr}]:{port}"


SINK_NAME = f"sink.{DOMAIN}"

PEERS = {
    p.kind: p
    for p in (
        Peer("tls", "127.0.0.2"),  # STARTTLS, certificate from the test CA: Trusted
        Peer("plain", "127.0.0.3", starttls=False),  # no STARTTLS: plaintext delivery
        Peer("offering", "127.0.0.4", policy="none"),  # offers STARTTLS, our policy says none
        Peer("selfsigned", "127.0.0.5", self_signed=True),  # Untrusted
        Peer("verified", "127.0.0.6", policy=f"secure match={SINK_NAME}"),  # Verified
        Peer("tls12", "127.0.0.7", tls12_max=True),  # TLSv1.2 at most
        # TLSv1.2 at most while we ask for TLSv1.3: handshake failure, then plaintext fallback
        Peer("fallback", "127.0.0.8", tls12_max=True, policy="may protocols=>=TLSv1.3"),
        Peer("encrypt", "127.0.0.9", starttls=False, policy="encrypt"),  # TLS required, absent
        # self-signed although our policy verifies it: the handshake succeeds, the delivery not
        Peer(
            "verifyfail", "127.0.0.10", self_signed=True, policy=f"verify match=selfsigned.{DOMAIN}"
        ),
        # through tlsproxy, which keeps TLS connections open for the next delivery
        Peer("reuse", "127.0.0.11", transport="smtp-reuse"),
        # no STARTTLS, and the connection cache is always on for it: plaintext reuse (conn_use=)
        Peer("cached", "127.0.0.12", starttls=False, transport="smtp-cache"),
        Peer("v6", "::1"),  # STARTTLS over IPv6
        # requires STARTTLS while our policy says none: "530 5.7.0 Must issue a STARTTLS command
        # first", a permanent error: the message bounces at once
        Peer("demands", "127.0.0.13", requires_tls=True, policy="none"),
    )
}


@dataclass(frozen=True)
class Ports:
    smtp: int  # main: 127.0.0.1 and [::1]
    submission: int  # main: 127.0.0.1
    smtps: int  # main: 127.0.0.1
    sink: int  # sink: every peer address


class Lab:
    """Both Postfix instances, their certificates and their routing.

    ``root`` holds configuration, queues and keys (short paths: Postfix's UNIX sockets live in
    the queue directory); ``logs`` holds the two maillogs and outlives the run."""

    def __init__(self, root: Path, logs: Path) -> None:
        self.root = root
        self.ports = Ports(
            smtp=free_port("127.0.0.1", "::1"),
            submission=free_port("127.0.0.1"),
            smtps=free_port("127.0.0.1"),
            sink=free_port(*(p.addr for p in PEERS.values())),
        )
        self.main = PostfixInstance(root, "main", "postfix", logs / "maillog.log")
        self.sink = PostfixInstance(root, "sink", "postfix-sink", logs / "sink.maillog.log")
        self.pki: Pki | None = None

    @property
    def ca(self) -> Path:
        assert self.pki is not None
        return self.pki.ca

    def relay(self, kind: str) -> str:
        return PEERS[kind].relay(self.ports.sink)

    def configure(self) -> None:
        pki = self.pki = Pki(self.root / "pki")
        self._configure_main(pki)
        self._configure_sink(pki)

    def _configure_main(self, pki: Pki) -> None:
        main = self.main
        conf = main.config_dir
        cert, key = pki.issue("mx", f"mx.{DOMAIN}", f"DNS:mx.{DOMAIN},IP:127.0.0.1,IP:::1")
        settings = main.settings(f"mx.{DOMAIN}") | {
            "mydestination": "$myhostname, localhost",
            "local_recipient_maps": "",
            "local_transport": "discard:",
            "default_transport": "error:5.7.1 only the test domains are delivered",
            "relay_transport": "$default_transport",
            "transport_maps": f"texthash:{conf}/transport",
            "smtpd_relay_restrictions": (
                "permit_mynetworks, permit_sasl_authenticated, reject_unauth_destination"
            ),
            "smtpd_tls_cert_file": str(cert),
            "smtpd_tls_key_file": str(key),
            "smtpd_tls_security_level": "may",
            "smtpd_tls_loglevel": "1",
            "smtpd_tls_protocols": ">=TLSv1.2",
            "smtpd_tls_mandatory_protocols": ">=TLSv1.2",
            "smtpd_sasl_type": "cyrus",
            "smtpd_sasl_path": "smtpd",
            "smtpd_sasl_auth_enable": "no",
            "smtp_tls_security_level": "may",
            "smtp_tls_loglevel": "1",
            "smtp_tls_note_starttls_offer": "yes",
            "smtp_tls_CAfile": str(pki.ca),
            "smtp_tls_policy_maps": f"texthash:{conf}/tls_policy",
            "connection_cache_ttl_limit": "5s",
            "header_checks": f"regexp:{conf}/header_checks",
        }
        p = self.ports
        sasl_only = (
            "  -o smtpd_sasl_auth_enable=yes\n"
            "  -o smtpd_client_restrictions=permit_sasl_authenticated,reject\n"
            "  -o smtpd_relay_restrictions=permit_sasl_authenticated,reject\n"
        )
        services = (
            f"127.0.0.1:{p.smtp} inet n - n - - smtpd\n"
            f"[::1]:{p.smtp} inet n - n - - smtpd\n"
            f"127.0.0.1:{p.submission} inet n - n - - smtpd\n"
            "  -o syslog_name=postfix/submission\n"
            "  -o smtpd_tls_security_level=encrypt\n"
            "  -o smtpd_tls_auth_only=yes\n"
            f"{sasl_only}"
            f"127.0.0.1:{p.smtps} inet n - n - - smtpd\n"
            "  -o syslog_name=postfix/smtps\n"
            "  -o smtpd_tls_wrappermode=yes\n"
            f"{sasl_only}"
            # TLS connection reuse: tlsproxy does the handshakes, the connection cache is always
            # on for this next hop and keeps an idle connection 5 s (it logs as postfix/smtp)
            "tlsproxy unix - - n - 0 tlsproxy\n"
            "smtp-reuse unix - - n - - smtp\n"
            "  -o smtp_tls_connection_reuse=yes\n"
            f"  -o smtp_connection_cache_destinations={PEERS['reuse'].addr}\n"
            "  -o smtp_connection_cache_time_limit=5s\n"
            "smtp-cache unix - - n - - smtp\n"
            f"  -o smtp_connection_cache_destinations={PEERS['cached'].addr}\n"
            "  -o smtp_connection_cache_time_limit=5s\n"
        )
        main.write(settings, services)
        routes = {
            peer.domain: f"{peer.transport}:{peer.nexthop(p.sink)}" for peer in PEERS.values()
        }
        routes[SENDER.partition("@")[2]] = f"smtp:{PEERS['tls'].nexthop(p.sink)}"
        (conf / "transport").write_text("".join(f"{d} {n}\n" for d, n in routes.items()))
        (conf / "header_checks").write_text(f"/^Subject: {REJECTED_SUBJECT}$/ REJECT\n")
        (conf / "tls_policy").write_text(
            "".join(
                f"{peer.nexthop(p.sink)} {peer.policy}\n" for peer in PEERS.values() if peer.policy
            )
        )
        # Debian's Postfix reads the Cyrus SASL configuration from <config_directory>/sasl
        sasl = conf / "sasl"
        sasl.mkdir(mode=0o755)
        sasldb = sasl / "sasldb2"
        (sasl / "smtpd.conf").write_text(
            "pwcheck_method: auxprop\nauxprop_plugin: sasldb\n"
            f"mech_list: PLAIN LOGIN\nsasldb_path: {sasldb}\n"
        )
        user, _, realm = SASL_USER.partition("@")
        saslpasswd2 = find_program("saslpasswd2") or "saslpasswd2"
        subprocess.run(
            [saslpasswd2, "-p", "-c", "-f", str(sasldb), "-u", realm, user],
            input=SASL_PASSWORD,
            text=True,
            check=True,
            capture_output=True,
            timeout=30,
        )
        shutil.chown(sasldb, "root", "postfix")
        sasldb.chmod(0o640)

    def _configure_sink(self, pki: Pki) -> None:
        cert, key = pki.issue("sink", SINK_NAME, f"DNS:{SINK_NAME}")
        rogue_cert, rogue_key = pki.self_signed("selfsigned", f"selfsigned.{DOMAIN}")
        settings = self.sink.settings(SINK_NAME) | {
            "mydestination": "",
            "relay_domains": "",
            "local_recipient_maps": "",
            "default_transport": "discard:",
            "relay_transport": "discard:",
            "local_transport": "discard:",
            "smtpd_relay_restrictions": "permit_mynetworks, reject",
            "smtpd_tls_cert_file": str(cert),
            "smtpd_tls_key_file": str(key),
            "smtpd_tls_security_level": "may",
            "smtpd_tls_loglevel": "1",
            "smtp_tls_security_level": "none",
        }
        services = []
        for peer in PEERS.values():
            host = f"[{peer.addr}]" if ":" in peer.addr else peer.addr
            lines = [f"{host}:{self.ports.sink} inet n - n - - smtpd"]
            if not peer.starttls:
                lines.append("  -o smtpd_tls_security_level=none")
            if peer.requires_tls:
                lines.append("  -o smtpd_tls_security_level=encrypt")
            if peer.self_signed:
                lines += [
                    f"  -o smtpd_tls_cert_file={rogue_cert}",
                    f"  -o smtpd_tls_key_file={rogue_key}",
                ]
            if peer.tls12_max:
                lines += [
                    "  -o smtpd_tls_protocols=<=TLSv1.2",
                    "  -o smtpd_tls_mandatory_protocols=<=TLSv1.2",
                ]
            services.append("\n".join(lines) + "\n")
        self.sink.write(settings, "".join(services))

    def start(self) -> None:
        self.sink.start()
        self.main.start()
        p = self.ports
        expected = {(a.addr, p.sink) for a in PEERS.values()} | {
            ("127.0.0.1", p.smtp),
            ("::1", p.smtp),
            ("127.0.0.1", p.submission),
            ("127.0.0.1", p.smtps),
        }
        wait_for(lambda: expected <= listening() or None, 30, "the Postfix listeners")

    def stop(self) -> None:
        for instance in (self.main, self.sink):
            instance.stop()

    def inject(self, to: str) -> None:
        """Submit a message with main's sendmail (no SMTP session: pickup queues it) and wait
        until main has logged its delivery."""
        sendmail = find_program("sendmail") or "/usr/sbin/sendmail"
        message = f"From: <{SENDER}>\nTo: <{to}>\nSubject: tlslogd e2e: {to}\n\nlocal\n"
        subprocess.run(
            [sendmail, "-C", str(self.main.config_dir), "-f", SENDER, to],
            input=message,
            text=True,
            check=True,
            capture_output=True,
            timeout=30,
        )
        needle = f"to=<{to}>, relay="
        wait_for(
            lambda: True if needle in self.main.maillog.read_text() else None,
            30,
            f"main to deliver the message to {to}",
        )

    def wait_idle(self, timeout: float, quiet: float = 1.5) -> None:
        """Until nothing is queued for delivery (a message still being received may sit in
        main's incoming queue) and neither log has grown for ``quiet`` seconds."""
        last: list[tuple[int, int]] = []
        since = [time.monotonic()]

        def idle() -> bool | None:
            sizes = (self.main.maillog.stat().st_size, self.sink.maillog.stat().st_size)
            if [sizes] != last:
                last[:] = [sizes]
                since[0] = time.monotonic()
                return None
            busy = self.main.queued(("maildrop", "active", "deferred")) + self.sink.queued()
            return True if busy == 0 and time.monotonic() - since[0] >= quiet else None

        wait_for(idle, timeout, "empty queues and quiet logs")


# -- clients ----------------------------------------------------------------------------------


SWAKS_AUTH = ("--auth", "PLAIN", "--auth-user", SASL_USER, "--auth-password", SASL_PASSWORD)


@dataclass(frozen=True)
class Sent:
    returncode: int
    transcript: Path


class Swaks:
    """swaks as the SMTP client; one transcript file per message."""

    def __init__(self, transcripts: Path, prefix: list[str]) -> None:
        self.dir = transcripts
        self.prefix = prefix  # swaks_prefix()
        transcripts.mkdir()
        self.count = 0

    def send(self, name: str, to: str, server: str, port: int, *args: str) -> Sent:
        self.count += 1
        transcript = self.dir / f"{self.count:02d}-{name}.txt"
        command = [
            "timeout", "60", *self.prefix, find_program("swaks") or "swaks", "--timeout", "20",
            "--server", server, "--port", str(port),
            "--helo", f"client.{DOMAIN}", "--from", SENDER, "--to", to,
            "--header", f"Message-Id: <{self.count}.{name}@client.{DOMAIN}>",
            "--h-Subject", f"tlslogd e2e: {name}", "--body", f"scenario {name}\n",
            *(["-6"] if ":" in server else []), *args,
        ]  # fmt: skip
        with transcript.open("w") as out:
            result = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT, timeout=90)
        return Sent(result.returncode, transcript)


class HeldSession:
    """An inbound STARTTLS session that stays open: envelope first, message and QUIT later (to
    span a restart of tlslogd). Before that envelope, the session sends a message that main's
    header_checks rejects at the end of DATA, after smtpd logged its queue ID (``client=``)."""

    def __init__(self, lab: Lab, to: str) -> None:
        # local_hostname: no getfqdn(), which would ask DNS
        self.smtp = smtplib.SMTP(
            "127.0.0.1", lab.ports.smtp, local_hostname=f"held.{DOMAIN}", timeout=30
        )
        self.to = to
        self.smtp.ehlo()
        self.smtp.starttls(context=ssl.create_default_context(cafile=str(lab.ca)))
        self.smtp.ehlo()
        self.smtp.mail(SENDER)
        self._rcpt(to)
        code, reply = self.smtp.data(
            f"From: <{SENDER}>\r\nTo: <{to}>\r\nSubject: {REJECTED_SUBJECT}\r\n\r\nrejected\r\n"
        )
        if code != 550:
            raise RuntimeError(f"the header check did not reject the message: {code} {reply!r}")
        self.smtp.mail(SENDER)
        self._rcpt(to)

    def _rcpt(self, to: str) -> None:
        code, reply = self.smtp.rcpt(to)
        if code != 250:
            raise RuntimeError(f"RCPT TO:<{to}> refused: {code} {reply!r}")

    def finish(self) -> None:
        message = (
            f"From: <{SENDER}>\r\nTo: <{self.to}>\r\nSubject: tlslogd e2e: held session\r\n"
            f"Message-Id: <held@client.{DOMAIN}>\r\n\r\nsent across a restart of tlslogd\r\n"
        )
        code, reply = self.smtp.data(message)
        if code != 250:
            raise RuntimeError(f"DATA refused: {code} {reply!r}")
        self.smtp.quit()

    def close(self) -> None:
        with contextlib.suppress(OSError, smtplib.SMTPException):
            self.smtp.close()


# -- tlslogd and Prometheus -------------------------------------------------------------------


def tlslogd_json(*args: str) -> dict[str, Any]:
    """The JSON output of a tlslogd command on files (``report``, ``advise``)."""
    result = subprocess.run(
        [sys.executable, "-m", "tlslogd", *args, "--format", "json"],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
        cwd=REPO,
    )
    return dict(json.loads(result.stdout))


class Tlslogd:
    """``python3 -m tlslogd run`` on the main maillog; its output is appended to ``output``."""

    def __init__(self, log: Path, state: Path, output: Path) -> None:
        self.log = log
        self.state = state
        self.output = output
        self.port = free_port("127.0.0.1")
        self.proc: subprocess.Popen[bytes] | None = None
        self._out: IO[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self._out = self.output.open("ab")
        self.proc = subprocess.Popen(
            [
                sys.executable, "-m", "tlslogd", "run", "--log", str(self.log),
                "--state-dir", str(self.state), "--listen", f"127.0.0.1:{self.port}",
                "--local-networks", "",
            ],
            stdout=self._out,
            stderr=subprocess.STDOUT,
            cwd=REPO,
        )  # fmt: skip

        def serving() -> bool | None:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"tlslogd exited with {self.proc.returncode}: {self.output}")
            with contextlib.suppress(OSError):
                return http_get(self.url + "/healthz")[0] == 200 or None
            return None

        wait_for(serving, 30, "tlslogd to serve /healthz")

    def stop(self) -> int | None:
        """SIGTERM (a final checkpoint, exit 0), SIGKILL if it hangs; the exit code."""
        if self.proc is None:
            return None
        code = stop_process(self.proc)
        if self._out is not None:
            self._out.close()
        return code

    def json(self, path: str) -> Any:
        status, body = http_get(self.url + path)
        if status != 200:
            raise AssertionError(f"GET {path}: {status} {body[:300]!r}")
        return json.loads(body)

    def summary(self) -> dict[str, Any]:
        return dict(self.json("/api/v1/summary"))


class PromQLError(Exception):
    """Prometheus refused or failed to evaluate an expression."""


class Prometheus:
    """Debian's prometheus binary scraping tlslogd every second, with its own TSDB."""

    def __init__(self, directory: Path, target: str, rule_files: list[Path]) -> None:
        self.dir = directory
        self.target = target
        self.rule_files = rule_files
        self.port = free_port("127.0.0.1")
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.dir.mkdir()
        config = {
            "global": {
                "scrape_interval": "1s",
                "scrape_timeout": "1s",
                "evaluation_interval": "1s",
            },
            "rule_files": [str(f) for f in self.rule_files],
            "scrape_configs": [
                {"job_name": "tlslogd", "static_configs": [{"targets": [self.target]}]}
            ],
        }
        (self.dir / "prometheus.yml").write_text(json.dumps(config, indent=1))  # YAML ⊃ JSON
        with (self.dir / "prometheus.out").open("ab") as out:
            self.proc = subprocess.Popen(
                [
                    find_program("prometheus") or "prometheus",
                    f"--config.file={self.dir / 'prometheus.yml'}",
                    f"--storage.tsdb.path={self.dir / 'tsdb'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                    "--storage.tsdb.retention.time=1d",
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
            )

        def ready() -> bool | None:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"prometheus exited: see {self.dir / 'prometheus.out'}")
            with contextlib.suppress(OSError):
                return http_get(self.url + "/-/ready")[0] == 200 or None
            return None

        wait_for(ready, 60, "Prometheus to be ready")

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)

    def api(self, path: str, **params: str) -> Any:
        url = f"{self.url}/api/v1/{path}?{urllib.parse.urlencode(params)}"
        status, body = http_get(url, timeout=30)
        data = json.loads(body)
        if status != 200 or data.get("status") != "success":
            raise PromQLError(f"{path} {params}: {data.get('errorType')}: {data.get('error')}")
        return data["data"]

    def query(self, expr: str, at: float | None = None) -> Any:
        params = {"query": expr}
        if at is not None:
            params["time"] = f"{at:.3f}"
        return self.api("query", **params)

    def value(self, expr: str, at: float | None = None) -> float:
        """The sum of an instant vector (0 when it is empty), or a scalar."""
        data = self.query(expr, at)
        if data["resultType"] == "scalar":
            return float(data["result"][1])
        return sum(float(sample["value"][1]) for sample in data["result"])
