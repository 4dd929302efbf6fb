"""The web-config.yml endpoint over real TLS and HTTP on 127.0.0.1.

Certificates come from the openssl command line in a throw-away directory; the server is uvicorn
running in a thread on a port the kernel picked; the client is Python's ssl + http.client.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import http.client
import json
import shutil
import socket
import ssl
import subprocess
import textwrap
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import bcrypt
import pytest
import uvicorn

from tlslogd.webconfig import (
    BasicAuthMiddleware,
    Endpoint,
    Message,
    Receive,
    Scope,
    Send,
    WebConfig,
    WebConfigError,
    build_ssl_context,
    load_web_config,
)

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl CLI")


# --- a throw-away PKI --------------------------------------------------------------------------


@dataclass(frozen=True)
class PKI:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path  # SAN DNS:prometheus.test, signed by ca
    client_key: Path
    other_cert: Path  # SAN DNS:intruder.test, signed by ca
    other_key: Path
    stranger_cert: Path  # SAN DNS:prometheus.test, signed by another CA
    stranger_key: Path


def _openssl(*args: str | Path) -> None:
    subprocess.run(["openssl", *map(str, args)], check=True, capture_output=True)


def _make_ca(directory: Path, name: str) -> tuple[Path, Path]:
    cert, key = directory / f"{name}.crt", directory / f"{name}.key"
    _openssl(
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-keyout", key, "-out", cert, "-days", "2", "-subj", f"/CN={name}",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
    )  # fmt: skip
    return cert, key


def _issue(
    directory: Path, name: str, ca: tuple[Path, Path], san: str, usage: str, keytype: str
) -> tuple[Path, Path]:
    cert, key, csr = (directory / f"{name}.{ext}" for ext in ("crt", "key", "csr"))
    extensions = directory / f"{name}.ext"
    extensions.write_text(
        f"subjectAltName={san}\nextendedKeyUsage={usage}\nbasicConstraints=CA:FALSE\n"
    )
    _openssl("req", "-new", "-newkey", keytype, "-nodes", "-keyout", key, "-out", csr,
             "-subj", f"/CN={name}")  # fmt: skip
    _openssl("x509", "-req", "-in", csr, "-CA", ca[0], "-CAkey", ca[1], "-CAcreateserial",
             "-out", cert, "-days", "2", "-extfile", extensions)  # fmt: skip
    return cert, key


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PKI:
    d = tmp_path_factory.mktemp("pki")
    ca = _make_ca(d, "test-ca")
    other_ca = _make_ca(d, "other-ca")
    server = _issue(d, "server", ca, "DNS:localhost,IP:127.0.0.1", "serverAuth", "rsa:2048")
    client = _issue(d, "client", ca, "DNS:prometheus.test", "clientAuth", "ec:" + str(ca[0]))
    other = _issue(d, "other", ca, "DNS:intruder.test", "clientAuth", "ec:" + str(ca[0]))
    stranger = _issue(d, "stranger", other_ca, "DNS:prometheus.test", "clientAuth", "rsa:2048")
    return PKI(ca[0], *server, *client, *other, *stranger)


# --- a real server and client ------------------------------------------------------------------


async def hello_app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] != "http":
        return
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"text/plain")],
        }
    )
    await send({"type": "http.response.body", "body": b"tlslogd_up 1\n"})


@contextmanager
def serving(web: WebConfig | None) -> Iterator[int]:
    """Run uvicorn in a thread on a free loopback port and stop it cleanly afterwards."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = Endpoint(hello_app, web).uvicorn_config(
        "127.0.0.1", port, log_config=None, lifespan="off", access_log=False
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not server.started:
            assert thread.is_alive() and time.monotonic() < deadline, "server did not start"
            time.sleep(0.01)
        yield port
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
        assert not thread.is_alive()


@dataclass(frozen=True)
class Reply:
    status: int
    headers: http.client.HTTPMessage
    body: bytes
    cipher: str | None


def client_context(
    pki: PKI,
    cert: tuple[Path, Path] | None = None,
    *,
    max_version: ssl.TLSVersion | None = None,
    min_version: ssl.TLSVersion | None = None,
) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=pki.ca)
    if cert is not None:
        ctx.load_cert_chain(*cert)
    if max_version is not None:
        ctx.maximum_version = max_version
    if min_version is not None:
        ctx.minimum_version = min_version
    return ctx


def get(
    port: int,
    ctx: ssl.SSLContext | None = None,
    auth: tuple[str, str] | None = None,
    path: str = "/metrics",
) -> Reply:
    conn: http.client.HTTPConnection
    if ctx is None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    else:
        conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=10, context=ctx)
    headers = {}
    if auth is not None:
        token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        headers["Authorization"] = f"Basic {token}"
    try:
        conn.request("GET", path, headers=headers)
        response = conn.getresponse()
        body = response.read()
        tls = conn.sock.cipher() if isinstance(conn.sock, ssl.SSLSocket) else None
        return Reply(response.status, response.headers, body, tls[0] if tls else None)
    finally:
        conn.close()


def write_config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "web-config.yml"
    path.write_text(textwrap.dedent(text))
    return path


def tls_config(tmp_path: Path, pki: PKI, extra: str = "", top: str = "") -> WebConfig:
    """A config with the test server certificate, ``extra`` tls_server_config keys and ``top``
    top-level sections."""
    text = f"tls_server_config:\n  cert_file: {pki.server_cert}\n  key_file: {pki.server_key}\n"
    return load_web_config(write_config(tmp_path, text + textwrap.indent(extra, "  ") + top))


def hashed(password: str) -> str:
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4)).decode()


# --- plain HTTP and server TLS -----------------------------------------------------------------


def test_without_web_config_the_endpoint_is_plain_http(pki: PKI) -> None:
    with serving(None) as port:
        reply = get(port)
        assert reply.status == 200
        assert reply.body == b"tlslogd_up 1\n"
        with pytest.raises(ssl.SSLError):
            get(port, client_context(pki))


def test_an_empty_file_also_means_plain_http(tmp_path: Path) -> None:
    web = load_web_config(write_config(tmp_path, "# nothing yet\n"))
    assert build_ssl_context(web) is None
    with serving(web) as port:
        assert get(port).status == 200


def test_tls_with_the_right_ca(tmp_path: Path, pki: PKI) -> None:
    with serving(tls_config(tmp_path, pki)) as port:
        reply = get(port, client_context(pki))
        assert reply.status == 200
        assert reply.body == b"tlslogd_up 1\n"
        with pytest.raises(ssl.SSLCertVerificationError):
            get(port, ssl.create_default_context())
        with pytest.raises(http.client.RemoteDisconnected):
            get(port)


def test_inline_pem_and_relative_file_names(tmp_path: Path, pki: PKI) -> None:
    (tmp_path / "tls").mkdir()
    shutil.copy(pki.server_key, tmp_path / "tls" / "server.key")
    cert = textwrap.indent(pki.server_cert.read_text(), "    ")
    path = write_config(tmp_path, "tls_server_config:\n  key_file: tls/server.key\n  cert: |\n")
    path.write_text(path.read_text() + cert)
    web = load_web_config(path)
    assert web.tls_server_config is not None
    assert web.tls_server_config.key_file == tmp_path / "tls" / "server.key"
    with serving(web) as port:
        assert get(port, client_context(pki)).status == 200


def test_min_version_tls13_refuses_a_tls12_only_client(tmp_path: Path, pki: PKI) -> None:
    with serving(tls_config(tmp_path, pki, "min_version: TLS13\n")) as port:
        with pytest.raises(ssl.SSLError):
            get(port, client_context(pki, max_version=ssl.TLSVersion.TLSv1_2))
        assert get(port, client_context(pki)).status == 200


def test_tls12_without_cipher_suites_offers_forward_secret_key_exchange_only(
    tmp_path: Path, pki: PKI
) -> None:
    # Python's default list (Debian's build, for one) also has RSA key exchange
    with serving(tls_config(tmp_path, pki, "max_version: TLS12\n")) as port:
        assert get(port, client_context(pki)).cipher.startswith("ECDHE-")
        rsa_key_exchange = client_context(pki)
        rsa_key_exchange.set_ciphers("kRSA")
        with pytest.raises(ssl.SSLError):
            get(port, rsa_key_exchange)


def test_cipher_suites_apply_to_tls12(tmp_path: Path, pki: PKI) -> None:
    extra = "max_version: TLS12\ncipher_suites: [TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256]\n"
    with serving(tls_config(tmp_path, pki, extra)) as port:
        assert get(port, client_context(pki)).cipher == "ECDHE-RSA-AES128-GCM-SHA256"
        other_suite = client_context(pki)
        other_suite.set_ciphers("ECDHE-RSA-AES256-GCM-SHA384")
        with pytest.raises(ssl.SSLError):
            get(port, other_suite)
        with pytest.raises(ssl.SSLError):
            get(port, client_context(pki, min_version=ssl.TLSVersion.TLSv1_3))


def test_curve_preferences_restrict_key_exchange(tmp_path: Path, pki: PKI) -> None:
    with serving(tls_config(tmp_path, pki, "curve_preferences: [CurveP384]\n")) as port:
        for version in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
            p256_only = client_context(pki, min_version=version, max_version=version)
            p256_only.set_ecdh_curve("prime256v1")
            with pytest.raises(ssl.SSLError):
                get(port, p256_only)
            p384_only = client_context(pki, min_version=version, max_version=version)
            p384_only.set_ecdh_curve("secp384r1")
            assert get(port, p384_only).status == 200


# --- client certificates -----------------------------------------------------------------------


def test_require_and_verify_client_cert(tmp_path: Path, pki: PKI) -> None:
    extra = f"client_auth_type: RequireAndVerifyClientCert\nclient_ca_file: {pki.ca}\n"
    with serving(tls_config(tmp_path, pki, extra)) as port:
        with pytest.raises(OSError):
            get(port, client_context(pki))
        with pytest.raises(OSError):
            get(port, client_context(pki, (pki.stranger_cert, pki.stranger_key)))
        reply = get(port, client_context(pki, (pki.client_cert, pki.client_key)))
        assert reply.status == 200


def test_verify_client_cert_if_given(tmp_path: Path, pki: PKI) -> None:
    extra = f"client_auth_type: VerifyClientCertIfGiven\nclient_ca_file: {pki.ca}\n"
    with serving(tls_config(tmp_path, pki, extra)) as port:
        assert get(port, client_context(pki)).status == 200
        assert get(port, client_context(pki, (pki.client_cert, pki.client_key))).status == 200
        with pytest.raises(OSError):
            get(port, client_context(pki, (pki.stranger_cert, pki.stranger_key)))


def test_client_allowed_sans(tmp_path: Path, pki: PKI, caplog: pytest.LogCaptureFixture) -> None:
    extra = (
        f"client_auth_type: RequireAndVerifyClientCert\nclient_ca_file: {pki.ca}\n"
        "client_allowed_sans: [prometheus.test, 192.0.2.1]\n"
    )
    with serving(tls_config(tmp_path, pki, extra)) as port:
        assert get(port, client_context(pki, (pki.client_cert, pki.client_key))).status == 200
        for version in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
            ctx = client_context(pki, (pki.other_cert, pki.other_key), max_version=version)
            with pytest.raises(OSError):
                get(port, ctx)
    assert "intruder.test" in caplog.text


def test_client_allowed_sans_with_a_blocking_socket(tmp_path: Path, pki: PKI) -> None:
    extra = (
        f"client_auth_type: RequireAndVerifyClientCert\nclient_ca_file: {pki.ca}\n"
        "client_allowed_sans: [prometheus.test]\n"
    )
    server_ctx = build_ssl_context(tls_config(tmp_path, pki, extra))
    assert server_ctx is not None
    outcomes: list[str] = []

    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]

        def accept_two() -> None:
            for _ in range(2):
                conn, _addr = listener.accept()
                try:
                    with server_ctx.wrap_socket(conn, server_side=True) as tls:
                        tls.sendall(b"welcome\n")
                        outcomes.append("accepted")
                except ssl.SSLError:
                    outcomes.append("refused")
                finally:
                    conn.close()

        thread = threading.Thread(target=accept_two)
        thread.start()
        try:
            for cert in ((pki.client_cert, pki.client_key), (pki.other_cert, pki.other_key)):
                ctx = client_context(pki, cert)
                with (
                    contextlib.suppress(OSError),
                    socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
                    ctx.wrap_socket(raw, server_hostname="localhost") as tls,
                ):
                    tls.recv(16)
        finally:
            thread.join(timeout=10)
    assert outcomes == ["accepted", "refused"]


# --- basic auth, headers, rate limit ----------------------------------------------------------


def test_basic_auth(tmp_path: Path, pki: PKI, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[bytes] = []
    real_checkpw = bcrypt.checkpw

    def counting_checkpw(password: bytes, hashed_password: bytes) -> bool:
        calls.append(hashed_password)
        return real_checkpw(password, hashed_password)

    monkeypatch.setattr(bcrypt, "checkpw", counting_checkpw)
    web = tls_config(tmp_path, pki, top=f"basic_auth_users:\n  alice: {hashed('correct horse')}\n")
    ctx = client_context(pki)
    with serving(web) as port:
        anonymous = get(port, ctx)
        assert anonymous.status == 401
        assert anonymous.headers["WWW-Authenticate"] == 'Basic realm="tlslogd"'
        assert calls == []

        wrong = get(port, ctx, ("alice", "battery staple"))
        assert wrong.status == 401
        assert wrong.headers["WWW-Authenticate"] == 'Basic realm="tlslogd"'

        unknown = get(port, ctx, ("mallory", "correct horse"))
        assert unknown.status == 401
        assert len(calls) == 2, "an unknown user must cost a bcrypt verification too"

        for _ in range(3):
            reply = get(port, ctx, ("alice", "correct horse"))
            assert reply.status == 200
            assert reply.body == b"tlslogd_up 1\n"
        assert len(calls) == 3, "successful verifications are cached"

        assert get(port, ctx, ("alice", "battery staple")).status == 401
        assert len(calls) == 4


def test_headers_are_added_to_every_response(tmp_path: Path) -> None:
    path = write_config(
        tmp_path,
        f"""\
        http_server_config:
          headers:
            X-Frame-Options: deny
            X-Content-Type-Options: nosniff
            Strict-Transport-Security: max-age=31536000
            Content-Security-Policy: ""
        basic_auth_users:
          alice: {hashed("secret")}
        """,
    )
    with serving(load_web_config(path)) as port:
        for auth in (None, ("alice", "secret")):
            reply = get(port, auth=auth)
            assert reply.status == (401 if auth is None else 200)
            assert reply.headers["X-Frame-Options"] == "deny"
            assert reply.headers["X-Content-Type-Options"] == "nosniff"
            assert reply.headers["Strict-Transport-Security"] == "max-age=31536000"
            assert "Content-Security-Policy" not in reply.headers


def test_rate_limit(tmp_path: Path) -> None:
    path = write_config(tmp_path, "rate_limit:\n  interval: 1h\n  burst: 2\n")
    with serving(load_web_config(path)) as port:
        assert [get(port).status for _ in range(3)] == [200, 200, 429]


def test_websocket_without_credentials_is_closed() -> None:
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "websocket.connect"}

    async def send(message: Message) -> None:
        sent.append(message)

    middleware = BasicAuthMiddleware(hello_app, {"alice": hashed("secret")})
    scope: dict[str, Any] = {"type": "websocket", "headers": []}
    asyncio.run(middleware(scope, receive, send))
    assert sent == [{"type": "websocket.close", "code": 1008}]


# --- a real Prometheus server ------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.mark.e2e
@pytest.mark.skipif(shutil.which("prometheus") is None, reason="needs prometheus (Debian package)")
def test_prometheus_scrapes_with_mutual_tls_and_basic_auth(tmp_path: Path, pki: PKI) -> None:
    extra = (
        f"client_auth_type: RequireAndVerifyClientCert\nclient_ca_file: {pki.ca}\n"
        "client_allowed_sans: [prometheus.test]\n"
    )
    web = tls_config(tmp_path, pki, extra, top=f"basic_auth_users:\n  prom: {hashed('s3cret')}\n")
    (tmp_path / "good").write_text("s3cret\n")
    (tmp_path / "bad").write_text("guess\n")
    prometheus_port = _free_port()
    with serving(web) as port:
        jobs = "".join(
            f"""
              - job_name: {name}
                scheme: https
                tls_config:
                  ca_file: {pki.ca}
                  cert_file: {pki.client_cert}
                  key_file: {pki.client_key}
                  server_name: localhost
                basic_auth:
                  username: prom
                  password_file: {tmp_path / name}
                static_configs:
                  - targets: ["127.0.0.1:{port}"]
            """
            for name in ("good", "bad")
        )
        config = tmp_path / "prometheus.yml"
        config.write_text(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n" + textwrap.dedent(jobs)
        )
        prometheus = subprocess.Popen(
            [
                "prometheus",
                f"--config.file={config}",
                f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{prometheus_port}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            health: dict[str, tuple[str, str]] = {}
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and len(health) < 2:
                assert prometheus.poll() is None, "prometheus exited"
                time.sleep(0.5)
                try:
                    reply = get(prometheus_port, path="/api/v1/targets")
                except OSError:
                    continue
                targets = json.loads(reply.body)["data"]["activeTargets"]
                health = {
                    t["labels"]["job"]: (t["health"], t["lastError"])
                    for t in targets
                    if t["health"] != "unknown"
                }
        finally:
            prometheus.terminate()
            prometheus.wait(timeout=30)
    assert set(health) == {"good", "bad"}, "prometheus did not scrape both jobs in time"
    assert health["good"] == ("up", "")
    assert health["bad"][0] == "down"
    assert "401" in health["bad"][1]


# --- configuration errors ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("tls_server_confg: {}\n", "unknown key 'tls_server_confg' in the top level"),
        (
            "tls_server_config:\n  cert_file: a.pem\n  key_file: a.key\n  client_auth: x\n",
            "unknown key 'client_auth' in tls_server_config",
        ),
        (
            "tls_server_config:\n  cert_file: a\n  key_file: b\n  min_version: TLS14\n",
            "tls_server_config.min_version: Input should be 'TLS10', 'TLS11', 'TLS12' or "
            "'TLS13' (got 'TLS14')",
        ),
        (
            "tls_server_config:\n  cert_file: a\n  key_file: b\n  min_version: TLS10\n",
            "TLS10 cannot be honoured",
        ),
        (
            "tls_server_config:\n  cert_file: a\n  key_file: b\n"
            "  min_version: TLS13\n  max_version: TLS12\n",
            "min_version TLS13 is above max_version TLS12",
        ),
        (
            "tls_server_config:\n  cert_file: a\n  key_file: b\n"
            "  cipher_suites: [TLS_AES_128_GCM_SHA256]\n",
            "TLS_AES_128_GCM_SHA256 is a TLS 1.3 suite",
        ),
        (
            "tls_server_config:\n  cert_file: a\n  key_file: b\n"
            "  cipher_suites: [TLS_RSA_WITH_RC4_128_SHA]\n",
            "unknown cipher suite 'TLS_RSA_WITH_RC4_128_SHA'",
        ),
        (
            "tls_server_config:\n  cert_file: a\n  key_file: b\n"
            "  curve_preferences: [X25519, CurveP256]\n",
            "single curve only",
        ),
        (
            "tls_server_config:\n  cert_file: a\n  key_file: b\n  curve_preferences: [P256]\n",
            "unknown curve 'P256'",
        ),
        (
            "tls_server_config:\n  cert_file: a\n  key_file: b\n"
            "  client_auth_type: RequireAnyClientCert\n",
            "tls_server_config.client_auth_type: RequireAnyClientCert accepts client "
            "certificates without verifying them",
        ),
        (
            "tls_server_config:\n  cert_file: a\n  key_file: b\n"
            "  client_auth_type: VerifyClientCertIfGiven\n  client_allowed_sans: [x]\n",
            "client_allowed_sans needs client_auth_type: RequireAndVerifyClientCert",
        ),
        (
            "tls_server_config:\n  cert_file: a\n  key_file: b\n  client_ca_file: ca.pem\n",
            "client_ca_file is set but client_auth_type is NoClientCert",
        ),
        ("tls_server_config:\n  cert_file: a\n", "set key_file (or key)"),
        ("tls_server_config:\n  min_version: TLS13\n", "set cert_file (or cert)"),
        (
            "tls_server_config:\n  cert_file: a\n  key_file: b\n  prefer_server_cipher_suites: 1\n",
            "tls_server_config.prefer_server_cipher_suites: Input should be a valid boolean",
        ),
        ("http_server_config:\n  http2: true\n", "serves HTTP/1.1 only"),
        (
            "http_server_config:\n  headers:\n    Server: nginx\n",
            "header 'Server' cannot be configured",
        ),
        (
            "http_server_config:\n  headers:\n    X-Frame-Options: allow\n",
            "invalid value 'allow' for header X-Frame-Options; expected one of deny, sameorigin",
        ),
        ("basic_auth_users:\n  alice: secret\n", "the password of user 'alice' is not a bcrypt"),
        ("rate_limit:\n  interval: 1s\n", "burst 0 would refuse every request"),
        ("rate_limit:\n  interval: soon\n  burst: 1\n", "expected a duration like 1s"),
        ("basic_auth_users: {}\nbasic_auth_users: {}\n", "found the key 'basic_auth_users' twice"),
        ("tls_server_config: [\n", "not valid YAML"),
        ("- just\n- a list\n", "expected a mapping of settings, got list"),
    ],
)
def test_configuration_errors_say_where_and_why(tmp_path: Path, text: str, expected: str) -> None:
    path = write_config(tmp_path, text)
    with pytest.raises(WebConfigError) as error:
        load_web_config(path)
    assert str(path) in str(error.value)
    assert expected in str(error.value)


def test_errors_never_echo_a_secret(tmp_path: Path) -> None:
    path = write_config(
        tmp_path,
        "tls_server_config:\n  cert_file: a\n  key: [not, a, key]\n"
        "basic_auth_users:\n  alice: hunter2\n",
    )
    with pytest.raises(WebConfigError) as error:
        load_web_config(path)
    message = str(error.value)
    assert "basic_auth_users: the password of user 'alice' is not a bcrypt hash" in message
    assert "tls_server_config.key: Input should be a valid string\n" in message
    assert "hunter2" not in message


def test_yaml_merge_keys_are_still_allowed(tmp_path: Path) -> None:
    path = write_config(
        tmp_path,
        "http_server_config:\n  headers: &h {X-Frame-Options: deny}\n"
        "  <<: {headers: {X-Frame-Options: sameorigin}}\n",
    )
    assert load_web_config(path).http_server_config.headers == {"X-Frame-Options": "deny"}


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(WebConfigError, match="cannot read the web config"):
        load_web_config(tmp_path / "absent.yml")


def test_certificate_errors_name_the_file(tmp_path: Path, pki: PKI) -> None:
    missing = tmp_path / "missing.pem"
    path = write_config(
        tmp_path, f"tls_server_config:\n  cert_file: {missing}\n  key_file: {pki.server_key}\n"
    )
    with pytest.raises(WebConfigError, match=r"tls_server_config\.cert_file: cannot read .*"):
        build_ssl_context(load_web_config(path))

    path = write_config(
        tmp_path,
        f"tls_server_config:\n  cert_file: {pki.server_cert}\n  key_file: {pki.client_key}\n",
    )
    with pytest.raises(WebConfigError, match="the key must belong to the certificate"):
        build_ssl_context(load_web_config(path))


def test_the_example_file_in_the_repository_loads() -> None:
    example = Path(__file__).resolve().parent.parent / "dashboards" / "web-config.example.yml"
    web = load_web_config(example)
    assert web.tls_server_config is not None
    assert web.tls_server_config.client_auth_type == "NoClientCert"
    assert set(web.users()) == {"prometheus"}
    assert web.http_server_config.headers
