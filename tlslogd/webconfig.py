"""A secured metrics endpoint configured by a Prometheus ``web-config.yml``.

The file format is the one of the Prometheus exporter-toolkit (``--web.config.file``), so an
admin can point ``--web-config`` at the file their other exporters already use:
``tls_server_config``, ``http_server_config``, ``basic_auth_users`` and ``rate_limit``.

Every key is checked. An unknown key is an error, and so is a value that Python's ``ssl`` module
or this server cannot honour; the message says which key, which value and what would work.
Differences from the Go implementation, all reported as errors when configured:

* ``client_auth_type`` ``RequestClientCert`` and ``RequireAnyClientCert`` accept certificates
  without verifying them; Python's ``ssl`` always verifies a certificate it receives.
* ``curve_preferences`` may name one curve only (``SSLContext.set_ecdh_curve``).
* TLS 1.3 cipher suites cannot be chosen (neither can they in Go, which ignores them).
* TLS 1.0 and 1.1 need OpenSSL security level 0 from OpenSSL 3.0 on; it is not lowered here.
* ``http2: true``: the endpoint serves HTTP/1.1 only.

Certificates, keys and users are read once, by :func:`load_web_config` and
:func:`build_ssl_context`, not on every request as the Go implementation does.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hashlib
import hmac
import ipaddress
import logging
import os
import re
import secrets
import ssl
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterator, Mapping, MutableMapping
from pathlib import Path
from typing import Any, Literal

import bcrypt
import uvicorn
import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    StrictBool,
    StrictInt,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

REALM = "tlslogd"


class WebConfigError(ValueError):
    """The web configuration cannot be read or honoured; the message says where and why."""


# --- the file format ---------------------------------------------------------------------------

TLSVersionName = Literal["TLS10", "TLS11", "TLS12", "TLS13"]
ClientAuthType = Literal[
    "NoClientCert",
    "RequestClientCert",
    "RequireAnyClientCert",
    "RequireClientCert",
    "VerifyClientCertIfGiven",
    "RequireAndVerifyClientCert",
]

_TLS_VERSIONS: dict[str, ssl.TLSVersion] = {
    "TLS10": ssl.TLSVersion.TLSv1,
    "TLS11": ssl.TLSVersion.TLSv1_1,
    "TLS12": ssl.TLSVersion.TLSv1_2,
    "TLS13": ssl.TLSVersion.TLSv1_3,
}

# TLS 1.2 without cipher_suites: ECDHE key exchange only, as Go's defaults since 1.22. Python's
# own default list (Debian's build, for one) also offers RSA key exchange, which has no forward
# secrecy and would let a client that shares no curve with curve_preferences in anyway.
_DEFAULT_TLS12_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20"

# Go's names (crypto/tls.CipherSuites) of the TLS 1.0-1.2 suites, with their OpenSSL names.
_CIPHER_SUITES: dict[str, str] = {
    "TLS_RSA_WITH_AES_128_CBC_SHA": "AES128-SHA",
    "TLS_RSA_WITH_AES_256_CBC_SHA": "AES256-SHA",
    "TLS_RSA_WITH_AES_128_GCM_SHA256": "AES128-GCM-SHA256",
    "TLS_RSA_WITH_AES_256_GCM_SHA384": "AES256-GCM-SHA384",
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA": "ECDHE-ECDSA-AES128-SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA": "ECDHE-ECDSA-AES256-SHA",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA": "ECDHE-RSA-AES128-SHA",
    "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA": "ECDHE-RSA-AES256-SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256": "ECDHE-ECDSA-AES128-GCM-SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384": "ECDHE-ECDSA-AES256-GCM-SHA384",
    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256": "ECDHE-RSA-AES128-GCM-SHA256",
    "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384": "ECDHE-RSA-AES256-GCM-SHA384",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-RSA-CHACHA20-POLY1305",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-ECDSA-CHACHA20-POLY1305",
}
_TLS13_CIPHER_SUITES = frozenset(
    {"TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256"}
)

# Go's curve names with their OpenSSL names.
_CURVES: dict[str, str] = {
    "CurveP256": "prime256v1",
    "CurveP384": "secp384r1",
    "CurveP521": "secp521r1",
    "X25519": "X25519",
}

# The headers the exporter-toolkit lets an admin set, with their allowed values (None: any).
_HEADERS: dict[str, frozenset[str] | None] = {
    "Strict-Transport-Security": None,
    "X-Content-Type-Options": frozenset({"nosniff"}),
    "X-Frame-Options": frozenset({"deny", "sameorigin"}),
    "X-XSS-Protection": None,
    "Content-Security-Policy": None,
}

_BCRYPT_HASH = re.compile(r"\$2[aby]\$(?P<cost>\d\d)\$[./A-Za-z0-9]{53}")
_GO_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_GO_DURATION_UNITS = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "μs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TLSServerConfig(_Section):
    """``tls_server_config``: the server certificate and the TLS policy."""

    cert: str | None = None
    key: SecretStr | None = None
    client_ca: str | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    client_auth_type: ClientAuthType = "NoClientCert"
    client_ca_file: Path | None = None
    client_allowed_sans: list[str] | None = None
    min_version: TLSVersionName = "TLS12"
    max_version: TLSVersionName = "TLS13"
    cipher_suites: list[str] | None = None
    prefer_server_cipher_suites: StrictBool = True
    curve_preferences: list[str] | None = None

    @field_validator("cert_file", "key_file", "client_ca_file")
    @classmethod
    def _relative_to_config_file(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        base = info.context.get("base_dir") if isinstance(info.context, dict) else None
        if value is None or base is None:
            return value
        return Path(base, value)

    @field_validator("client_auth_type")
    @classmethod
    def _honoured_client_auth(cls, value: str) -> str:
        if value in ("RequestClientCert", "RequireAnyClientCert", "RequireClientCert"):
            raise ValueError(
                f"{value} accepts client certificates without verifying them, which Python's "
                "ssl module cannot do (it verifies every certificate it receives); use "
                "RequireAndVerifyClientCert (or VerifyClientCertIfGiven) with client_ca_file"
            )
        return value

    @field_validator("min_version", "max_version")
    @classmethod
    def _honoured_version(cls, value: str) -> str:
        if value in ("TLS10", "TLS11") and ssl.OPENSSL_VERSION_INFO >= (3, 0):
            raise ValueError(
                f"{value} cannot be honoured: {ssl.OPENSSL_VERSION} allows TLS 1.0 and 1.1 only "
                "at security level 0, which tlslogd does not lower; use TLS12 or TLS13"
            )
        return value

    @field_validator("cipher_suites")
    @classmethod
    def _known_cipher_suites(cls, value: list[str] | None) -> list[str] | None:
        for name in value or ():
            if name in _TLS13_CIPHER_SUITES:
                raise ValueError(
                    f"{name} is a TLS 1.3 suite, and TLS 1.3 suites cannot be chosen (Go ignores "
                    "them, Python's ssl module cannot set them); cipher_suites lists TLS 1.0-1.2 "
                    "suites only: remove it"
                )
            if name not in _CIPHER_SUITES:
                raise ValueError(
                    f"unknown cipher suite {name!r}; expected Go names of TLS 1.0-1.2 suites: "
                    + ", ".join(_CIPHER_SUITES)
                )
        return value

    @field_validator("curve_preferences")
    @classmethod
    def _single_known_curve(cls, value: list[str] | None) -> list[str] | None:
        for name in value or ():
            if name not in _CURVES:
                raise ValueError(f"unknown curve {name!r}; expected one of " + ", ".join(_CURVES))
        if value is not None and len(value) != 1:
            raise ValueError(
                "Python's ssl module can restrict key exchange to a single curve only "
                "(SSLContext.set_ecdh_curve), so a preference list cannot be honoured; list one "
                "curve, or remove curve_preferences to keep OpenSSL's default groups"
            )
        return value

    @model_validator(mode="after")
    def _consistent(self) -> TLSServerConfig:
        if self.cert is not None and self.cert_file is not None:
            raise ValueError("cert and cert_file are both set; give the certificate only once")
        if self.key is not None and self.key_file is not None:
            raise ValueError("key and key_file are both set; give the key only once")
        if self.client_ca is not None and self.client_ca_file is not None:
            raise ValueError("client_ca and client_ca_file are both set; give the CA only once")
        if self.cert is None and self.cert_file is None:
            raise ValueError("TLS needs the server certificate: set cert_file (or cert)")
        if self.key is None and self.key_file is None:
            raise ValueError("TLS needs the server key: set key_file (or key)")
        has_ca = self.client_ca is not None or self.client_ca_file is not None
        if has_ca and self.client_auth_type == "NoClientCert":
            raise ValueError(
                "client_ca_file is set but client_auth_type is NoClientCert, so no client "
                "certificate would ever be asked for; set client_auth_type: "
                "RequireAndVerifyClientCert"
            )
        if self.client_allowed_sans is not None and (
            self.client_auth_type != "RequireAndVerifyClientCert"
        ):
            raise ValueError(
                "client_allowed_sans needs client_auth_type: RequireAndVerifyClientCert; with "
                f"{self.client_auth_type} a client may come without a certificate to match"
            )
        if _TLS_VERSIONS[self.min_version] > _TLS_VERSIONS[self.max_version]:
            raise ValueError(
                f"min_version {self.min_version} is above max_version {self.max_version}"
            )
        return self


class HTTPServerConfig(_Section):
    """``http_server_config``: HTTP/2 and extra response headers."""

    http2: StrictBool | None = None
    headers: dict[str, str] = Field(default_factory=dict)

    @field_validator("headers", mode="before")
    @classmethod
    def _null_is_empty(cls, value: object) -> object:
        return {} if value is None else value

    @field_validator("http2")
    @classmethod
    def _http1_only(cls, value: bool | None) -> bool | None:
        if value:
            raise ValueError(
                "the tlslogd endpoint serves HTTP/1.1 only (HTTP/2 in uvicorn is experimental); "
                "Prometheus falls back to HTTP/1.1 by itself: set http2: false or remove it"
            )
        return value

    @field_validator("headers")
    @classmethod
    def _allowed_headers(cls, value: dict[str, str]) -> dict[str, str]:
        for name, content in value.items():
            if name not in _HEADERS:
                raise ValueError(
                    f"header {name!r} cannot be configured; expected one of " + ", ".join(_HEADERS)
                )
            allowed = _HEADERS[name]
            if content and allowed is not None and content not in allowed:
                raise ValueError(
                    f"invalid value {content!r} for header {name}; expected one of "
                    + ", ".join(sorted(allowed))
                )
        return {name: content for name, content in value.items() if content}


class RateLimitConfig(_Section):
    """``rate_limit``: a token bucket refilled once per ``interval``, ``burst`` deep."""

    interval: float = 0.0
    burst: StrictInt = 0

    @field_validator("interval", mode="before")
    @classmethod
    def _go_duration(cls, value: object) -> float:
        return _parse_go_duration(value)

    @model_validator(mode="after")
    def _usable(self) -> RateLimitConfig:
        if self.interval > 0 and self.burst < 1:
            raise ValueError(
                f"burst {self.burst} would refuse every request; set burst to at least 1, or "
                "interval to 0 to turn rate limiting off"
            )
        return self


class WebConfig(_Section):
    """A whole ``web-config.yml``."""

    tls_server_config: TLSServerConfig | None = None
    http_server_config: HTTPServerConfig = Field(default_factory=HTTPServerConfig)
    basic_auth_users: dict[str, SecretStr] = Field(default_factory=dict)
    rate_limit: RateLimitConfig | None = None

    @field_validator("tls_server_config", mode="before")
    @classmethod
    def _empty_tls_is_none(cls, value: object) -> object:
        return None if value == {} else value

    @field_validator("http_server_config", "basic_auth_users", mode="before")
    @classmethod
    def _null_is_empty(cls, value: object) -> object:
        return {} if value is None else value

    @field_validator("basic_auth_users")
    @classmethod
    def _bcrypt_hashes(cls, value: dict[str, SecretStr]) -> dict[str, SecretStr]:
        for user, hashed in value.items():
            problem = _bcrypt_hash_problem(hashed.get_secret_value())
            if problem:
                raise ValueError(f"the password of user {user!r} {problem}")
        return value

    def users(self) -> dict[str, str]:
        """The basic-auth users and their bcrypt hashes."""
        return {user: hashed.get_secret_value() for user, hashed in self.basic_auth_users.items()}


def load_web_config(path: str | os.PathLike[str]) -> WebConfig:
    """Read and check a ``web-config.yml``; relative file names are relative to its directory."""
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise WebConfigError(f"{file}: cannot read the web config: {exc}") from exc
    try:
        data = yaml.load(text, Loader=_StrictLoader)
    except yaml.YAMLError as exc:
        raise WebConfigError(f"{file}: not valid YAML: {exc}") from exc
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise WebConfigError(f"{file}: expected a mapping of settings, got {type(data).__name__}")
    try:
        return WebConfig.model_validate(data, context={"base_dir": file.parent})
    except ValidationError as exc:
        raise WebConfigError(_describe(file, exc)) from exc


class _StrictLoader(yaml.SafeLoader):
    """Safe YAML where a repeated key is an error instead of silently replacing the first."""


def _construct_unique_mapping(loader: _StrictLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: set[object] = set()
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue
        key = loader.construct_object(key_node)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                "while reading a mapping",
                node.start_mark,
                f"found the key {key!r} twice",
                key_node.start_mark,
            )
        seen.add(key)
    return loader.construct_mapping(node)


_StrictLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_unique_mapping
)


def _describe(file: Path, exc: ValidationError) -> str:
    lines = [f"{file}: invalid web config:"]
    for error in exc.errors(include_url=False):
        where = ".".join(str(part) for part in error["loc"]) or "(top level)"
        if error["type"] == "extra_forbidden":
            section = ".".join(str(part) for part in error["loc"][:-1]) or "the top level"
            lines.append(f"  {where}: unknown key {error['loc'][-1]!r} in {section}")
            continue
        message = error["msg"].removeprefix("Value error, ")
        given = error.get("input")
        secret = error["loc"][:1] == ("basic_auth_users",) or error["loc"][:2] == (
            "tls_server_config",
            "key",
        )
        plain = not secret and given is not None and not isinstance(given, dict | list)
        shown = f" (got {given!r})" if plain else ""
        lines.append(f"  {where}: {message}{shown}")
    return "\n".join(lines)


def _bcrypt_hash_problem(hashed: str) -> str | None:
    match = _BCRYPT_HASH.fullmatch(hashed)
    if match is None:
        return "is not a bcrypt hash ($2y$10$ and 53 characters, e.g. from htpasswd -nBC 10)"
    if not 4 <= int(match["cost"]) <= 31:
        return f"has bcrypt cost {match['cost']}, outside 04..31"
    return None


def _parse_go_duration(value: object) -> float:
    """A Go ``time.Duration`` as YAML gives it: a string like ``1m30s`` or integer nanoseconds."""
    if isinstance(value, bool):
        raise ValueError(f"expected a duration like 1s or 500ms, got {value!r}")
    if isinstance(value, int):
        return value / 1e9
    if not isinstance(value, str):
        raise ValueError(f"expected a duration like 1s or 500ms, got {value!r}")
    text = value.strip()
    if text == "0":
        return 0.0
    parts = list(_GO_DURATION_PART.finditer(text))
    if not parts or "".join(p.group(0) for p in parts) != text:
        raise ValueError(f"expected a duration like 1s, 500ms or 1m30s, got {value!r}")
    return sum(float(p.group(1)) * _GO_DURATION_UNITS[p.group(2)] for p in parts)


# --- TLS ---------------------------------------------------------------------------------------


def build_ssl_context(cfg: WebConfig) -> ssl.SSLContext | None:
    """The server-side TLS context for ``cfg``, or None when the file configures no TLS."""
    tls = cfg.tls_server_config
    if tls is None:
        return None
    ctx: ssl.SSLContext
    if tls.client_allowed_sans is not None:
        ctx = _AllowedSansContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.client_allowed_sans = frozenset(_normalise_san(s) for s in tls.client_allowed_sans)
    else:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = _TLS_VERSIONS[tls.min_version]
    ctx.maximum_version = _TLS_VERSIONS[tls.max_version]
    ctx.options |= ssl.OP_NO_RENEGOTIATION
    if tls.prefer_server_cipher_suites:
        ctx.options |= ssl.OP_CIPHER_SERVER_PREFERENCE
    else:
        ctx.options &= ~ssl.OP_CIPHER_SERVER_PREFERENCE

    cert = _pem("cert_file", tls.cert_file, tls.cert)
    key = _pem("key_file", tls.key_file, tls.key.get_secret_value() if tls.key else None)
    with _memory_file(cert) as cert_path, _memory_file(key) as key_path:
        try:
            ctx.load_cert_chain(cert_path, key_path)
        except ssl.SSLError as exc:
            raise WebConfigError(
                f"tls_server_config: cannot use the certificate ({tls.cert_file or 'cert'}) with "
                f"the key ({tls.key_file or 'key'}): {exc.reason or exc}; both must be PEM and "
                "the key must belong to the certificate"
            ) from exc

    if tls.client_auth_type != "NoClientCert":
        ctx.verify_mode = (
            ssl.CERT_REQUIRED
            if tls.client_auth_type == "RequireAndVerifyClientCert"
            else ssl.CERT_OPTIONAL
        )
        ca = (
            _pem("client_ca_file", tls.client_ca_file, tls.client_ca)
            if (tls.client_ca_file is not None or tls.client_ca is not None)
            else None
        )
        try:
            if ca is None:
                # As in Go, no client CA means the system's trusted roots.
                ctx.load_default_certs(ssl.Purpose.CLIENT_AUTH)
            else:
                ctx.load_verify_locations(cadata=ca.decode("ascii", errors="replace"))
        except ssl.SSLError as exc:
            raise WebConfigError(
                f"tls_server_config.client_ca_file: {tls.client_ca_file or 'client_ca'} holds "
                f"no usable PEM certificate: {exc.reason or exc}"
            ) from exc

    if tls.cipher_suites:
        openssl_names = ":".join(_CIPHER_SUITES[name] for name in tls.cipher_suites)
        try:
            ctx.set_ciphers(openssl_names)
        except ssl.SSLError as exc:
            raise WebConfigError(
                f"tls_server_config.cipher_suites: {ssl.OPENSSL_VERSION} offers none of "
                f"{', '.join(tls.cipher_suites)} ({openssl_names})"
            ) from exc
    else:
        ctx.set_ciphers(_DEFAULT_TLS12_CIPHERS)
    if tls.curve_preferences:
        ctx.set_ecdh_curve(_CURVES[tls.curve_preferences[0]])
    return ctx


def _pem(key_name: str, file: Path | None, inline: str | None) -> bytes:
    if file is None:
        return (inline or "").encode()
    try:
        return file.read_bytes()
    except OSError as exc:
        raise WebConfigError(f"tls_server_config.{key_name}: cannot read {file}: {exc}") from exc


@contextlib.contextmanager
def _memory_file(content: bytes) -> Iterator[str]:
    """A path to ``content`` that never touches a disk, for APIs that only take file names."""
    fd = os.memfd_create("tlslogd-pem", os.MFD_CLOEXEC)
    try:
        os.write(fd, content)
        yield f"/proc/self/fd/{fd}"
    finally:
        os.close(fd)


def _normalise_san(value: str) -> str:
    try:
        return ipaddress.ip_address(value).compressed
    except ValueError:
        return value


class _AllowedSansContext(ssl.SSLContext):
    """A server context whose handshakes also require an allowed client-certificate SAN."""

    client_allowed_sans: frozenset[str] = frozenset()


def _require_allowed_san(ctx: ssl.SSLContext, peer: dict[str, Any] | None) -> None:
    if not isinstance(ctx, _AllowedSansContext):
        return
    found = [
        _normalise_san(str(value))
        for kind, value in (peer or {}).get("subjectAltName", ())
        if kind in ("DNS", "IP Address", "email", "URI")
    ]
    if not ctx.client_allowed_sans.intersection(found):
        log.warning(
            "refused a client certificate: none of its SANs %s is in client_allowed_sans", found
        )
        raise ssl.SSLCertVerificationError(
            "client certificate has no SAN listed in client_allowed_sans"
        )


class _SanCheckingSSLObject(ssl.SSLObject):
    """Used by asyncio (and so uvicorn), which drives TLS through memory BIOs."""

    def do_handshake(self) -> None:
        super().do_handshake()
        _require_allowed_san(self.context, self.getpeercert())


class _SanCheckingSSLSocket(ssl.SSLSocket):
    """Used when the context wraps a plain socket."""

    def do_handshake(self, block: bool = False) -> None:
        super().do_handshake(block)
        _require_allowed_san(self.context, self.getpeercert())


_AllowedSansContext.sslobject_class = _SanCheckingSSLObject
_AllowedSansContext.sslsocket_class = _SanCheckingSSLSocket


# --- HTTP --------------------------------------------------------------------------------------


async def _respond(send: Send, status: int, text: str, headers: list[tuple[bytes, bytes]]) -> None:
    body = text.encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"text/plain; charset=utf-8"),
                (b"content-length", str(len(body)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class BasicAuthMiddleware:
    """HTTP basic authentication against bcrypt hashes, as ``basic_auth_users`` configures it.

    An unknown user costs the same bcrypt work as a known one, so response times do not tell
    which users exist. Successful verifications are remembered (keyed by a keyed hash, never the
    password itself) so a scrape every 15 s does not pay bcrypt each time; the cache is bounded.
    bcrypt runs in a worker thread, one verification at a time, off the event loop.
    """

    def __init__(self, app: ASGIApp, users: Mapping[str, str], *, cache_size: int = 64) -> None:
        if not users:
            raise ValueError("BasicAuthMiddleware needs at least one user")
        for user, hashed in users.items():
            problem = _bcrypt_hash_problem(hashed)
            if problem:
                raise ValueError(f"the password of user {user!r} {problem}")
        self._app = app
        self._users = {user: hashed.encode() for user, hashed in users.items()}
        self._decoy = max(self._users.values(), key=lambda hashed: hashed[4:6])
        self._cache: OrderedDict[bytes, None] = OrderedDict()
        self._cache_size = cache_size
        self._cache_key = secrets.token_bytes(32)
        self._bcrypt_lock = asyncio.Lock()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._app(scope, receive, send)
            return
        credentials = _basic_credentials(scope)
        if credentials is not None and await self._verify(*credentials):
            await self._app(scope, receive, send)
            return
        if scope["type"] == "http":
            challenge = f'Basic realm="{REALM}"'.encode()
            await _respond(send, 401, "Unauthorized\n", [(b"www-authenticate", challenge)])
        else:
            await send({"type": "websocket.close", "code": 1008})

    async def _verify(self, user: str, password: str) -> bool:
        digest = hmac.new(
            self._cache_key, user.encode() + b"\0" + password.encode(), hashlib.sha256
        ).digest()
        if digest in self._cache:
            self._cache.move_to_end(digest)
            return True
        hashed = self._users.get(user)
        async with self._bcrypt_lock:
            matches = await asyncio.to_thread(
                bcrypt.checkpw, password.encode(), hashed or self._decoy
            )
        if not (matches and hashed is not None):
            return False
        self._cache[digest] = None
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return True


def _basic_credentials(scope: Scope) -> tuple[str, str] | None:
    for name, value in scope.get("headers", ()):
        if name.lower() != b"authorization":
            continue
        scheme, _, encoded = value.partition(b" ")
        if scheme.lower() != b"basic":
            return None
        try:
            decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return None
        user, colon, password = decoded.partition(":")
        return (user, password) if colon else None
    return None


class ResponseHeadersMiddleware:
    """Adds ``http_server_config.headers`` to every HTTP response the app does not set itself."""

    def __init__(self, app: ASGIApp, headers: Mapping[str, str]) -> None:
        self._app = app
        self._headers = [(k.lower().encode(), v.encode()) for k, v in headers.items()]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                present = {name.lower() for name, _ in message.get("headers", ())}
                extra = [(k, v) for k, v in self._headers if k not in present]
                message["headers"] = [*message.get("headers", ()), *extra]
            await send(message)

        await self._app(scope, receive, send_with_headers)


class RateLimitMiddleware:
    """``rate_limit``: a token bucket of ``burst`` requests, one token back per ``interval``."""

    def __init__(self, app: ASGIApp, interval: float, burst: int) -> None:
        self._app = app
        self._interval = interval
        self._burst = float(burst)
        self._tokens = float(burst)
        self._last = time.monotonic()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self._take():
            await self._app(scope, receive, send)
            return
        await _respond(send, 429, "Too Many Requests\n", [])

    def _take(self) -> bool:
        now = time.monotonic()
        self._tokens = min(self._burst, self._tokens + (now - self._last) / self._interval)
        self._last = now
        if self._tokens < 1:
            return False
        self._tokens -= 1
        return True


def secure_app(app: ASGIApp, web: WebConfig) -> ASGIApp:
    """``app`` behind what ``web`` asks for: headers on every response, rate limit, basic auth."""
    secured = app
    if web.basic_auth_users:
        secured = BasicAuthMiddleware(secured, web.users())
    if web.rate_limit is not None and web.rate_limit.interval > 0:
        secured = RateLimitMiddleware(secured, web.rate_limit.interval, web.rate_limit.burst)
    if web.http_server_config.headers:
        secured = ResponseHeadersMiddleware(secured, web.http_server_config.headers)
    return secured


class Endpoint:
    """The ASGI app and TLS context a web config asks for, reloadable on a running server.

    :meth:`reload` applies a changed file: basic-auth users, headers and the rate limit at once,
    and a renewed certificate and key (and added client CAs) for new connections. Settings that
    shape the TLS context itself (versions, ciphers, client auth type) need a restart."""

    def __init__(self, app: ASGIApp, web: WebConfig | None) -> None:
        self._inner = app
        self.web = web
        self.context = build_ssl_context(web) if web is not None else None
        if self.context is not None:
            self.context.set_alpn_protocols(["http/1.1"])
        self._app = secure_app(app, web) if web is not None else app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._app(scope, receive, send)

    def reload(self, web: WebConfig) -> None:
        """Apply ``web``; raises :class:`WebConfigError` (and changes nothing) when it cannot."""
        if (web.tls_server_config is None) != (self.context is None):
            raise WebConfigError("turning TLS on or off needs a restart")
        if self.context is not None and web.tls_server_config is not None:
            fresh = build_ssl_context(web)  # validates everything before touching the server
            assert fresh is not None
            tls = web.tls_server_config
            cert = _pem("cert_file", tls.cert_file, tls.cert)
            key = _pem("key_file", tls.key_file, tls.key.get_secret_value() if tls.key else None)
            with _memory_file(cert) as cert_path, _memory_file(key) as key_path:
                self.context.load_cert_chain(cert_path, key_path)
            if tls.client_ca_file is not None or tls.client_ca is not None:
                ca = _pem("client_ca_file", tls.client_ca_file, tls.client_ca)
                self.context.load_verify_locations(cadata=ca.decode("ascii", errors="replace"))
        self._app = secure_app(self._inner, web)
        self.web = web

    def uvicorn_config(self, host: str, port: int, **kwargs: Any) -> uvicorn.Config:
        """A uvicorn configuration serving this endpoint (plain HTTP without a TLS context);
        uvicorn receives the context through ``ssl_context_factory``."""
        context = self.context
        if context is None:
            return uvicorn.Config(self, host=host, port=port, **kwargs)

        def provide_context(
            _config: uvicorn.Config, _default: Callable[[], ssl.SSLContext]
        ) -> ssl.SSLContext:
            return context

        return uvicorn.Config(
            self, host=host, port=port, ssl_context_factory=provide_context, **kwargs
        )
