"""``tlslogd audit``: check a Postfix configuration for the TLS settings tlslogd relies on and for
the well-known Postfix TLS hardening advice.

The input is a configuration directory (``main.cf`` and ``master.cf``) or the output of
``postconf -n``, ``postconf -M`` and/or ``postconf -P`` concatenated in any order. Values are
resolved the way Postfix resolves them: a master.cf ``-o`` override beats main.cf, main.cf beats
the built-in default, and built-in defaults depend on the Postfix version (and, for
``smtp_tls_security_level``, on ``compatibility_level``). ``$name``, ``${name}``, ``$(name)``,
``${name?text}`` and ``${name:text}`` are expanded where a value is used.

Every check yields a :class:`CheckResult` with a stable id, ``pass``/``warn``/``fail``, a one-line
reason and the exact fix: a main.cf line, or a ``-o`` override for a named master.cf service.
Certificate, key and DH parameter files are only inspected when auditing a directory; postconf
output may come from another host.
"""

from __future__ import annotations

import argparse
import dataclasses
import enum
import json
import re
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import Final, NamedTuple, TextIO

DEFAULT_CONFIG_DIR: Final = "/etc/postfix"


class AuditInputError(Exception):
    """The configuration cannot be read, or is not Postfix configuration syntax."""


# --------------------------------------------------------------------------------------------
# Versions


_VERSION: Final = re.compile(r"(\d+)\.(\d+)(?:\.(\d+))?(?:-\S+)?")


class PostfixVersion(NamedTuple):
    """A Postfix release number; compares like a tuple, so ``version >= (3, 6)`` works."""

    major: int
    minor: int
    patch: int = 0

    @classmethod
    def parse(cls, text: str) -> PostfixVersion:
        """Read ``3.7``, ``3.7.11`` or a snapshot name such as ``3.11-20250623``."""
        match = _VERSION.fullmatch(text.strip())
        if match is None:
            raise ValueError(f"not a Postfix version: {text!r} (expected X.Y or X.Y.Z)")
        return cls(int(match[1]), int(match[2]), int(match[3] or 0))

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}.{self.patch}"


# Audited against when the version is neither given, nor in the input, nor installed: the
# current stable release series.
ASSUMED_VERSION: Final = PostfixVersion(3, 11, 0)


def _after_mid_2015(version: PostfixVersion) -> bool:
    """The July 2015 patch releases (2.10.8, 2.11.6, 3.0.2) and everything newer dropped SSLv2 and
    SSLv3 and the "export" opportunistic cipher grade from the defaults."""
    return version >= (3, 0, 2) or (2, 11, 6) <= version < (3, 0) or (2, 10, 8) <= version < (2, 11)


def _compatibility_level(text: str) -> tuple[int, ...]:
    """``compatibility_level`` as a comparable tuple (``3.11`` > ``3.6``); invalid reads as 0."""
    if re.fullmatch(r"\d+(?:\.\d+)*", text.strip()) is None:
        return (0,)
    return tuple(int(part) for part in text.strip().split("."))


# --------------------------------------------------------------------------------------------
# Results


class Status(enum.StrEnum):
    PASS = "pass"
    WARN = "warn"
    FAIL = "fail"


_STATUS_ORDER: Final = (Status.PASS, Status.WARN, Status.FAIL)


def _worst(statuses: Iterable[Status]) -> Status:
    return max(statuses, key=_STATUS_ORDER.index, default=Status.PASS)


@dataclasses.dataclass(frozen=True)
class Fix:
    """One configuration change. ``service`` (``name/type``, as ``postconf -P`` spells it) is set
    for a master.cf ``-o`` override and empty for a main.cf line; ``remove`` asks to delete the
    named setting instead of adding ``line``."""

    line: str
    service: str = ""
    remove: bool = False

    @property
    def file(self) -> str:
        return "master.cf" if self.service else "main.cf"

    def __str__(self) -> str:
        where = f"{self.service}: " if self.service else ""
        if self.remove:
            return f"remove from {self.file}: {where}{self.line}"
        return f"{where}{self.line}"

    def to_dict(self) -> dict[str, str]:
        return {
            "file": self.file,
            "service": self.service,
            "action": "remove" if self.remove else "add",
            "line": self.line,
        }


@dataclasses.dataclass(frozen=True)
class CheckResult:
    check: str
    status: Status
    reason: str
    fixes: tuple[Fix, ...] = ()

    @property
    def fix(self) -> str:
        """The fix as text: one line per change, master.cf lines prefixed with their service."""
        return "\n".join(str(fix) for fix in self.fixes)

    def to_dict(self) -> dict[str, object]:
        return {
            "check": self.check,
            "status": str(self.status),
            "reason": self.reason,
            "fix": self.fix,
            "fixes": [fix.to_dict() for fix in self.fixes],
        }


@dataclasses.dataclass(frozen=True)
class AuditReport:
    results: list[CheckResult]
    version: PostfixVersion
    version_source: str
    source: str
    notes: tuple[str, ...] = ()

    @property
    def failed(self) -> bool:
        return any(result.status is Status.FAIL for result in self.results)

    def result(self, check: str) -> CheckResult:
        for result in self.results:
            if result.check == check:
                return result
        raise KeyError(check)

    def counts(self) -> dict[str, int]:
        return {
            str(status): sum(result.status is status for result in self.results)
            for status in _STATUS_ORDER
        }

    def to_dict(self) -> dict[str, object]:
        return {
            "source": self.source,
            "postfix_version": str(self.version),
            "version_source": self.version_source,
            "notes": list(self.notes),
            "failed": self.failed,
            "summary": self.counts(),
            "results": [result.to_dict() for result in self.results],
        }


# --------------------------------------------------------------------------------------------
# Parsing main.cf, master.cf and postconf output


_PARAM_LINE: Final = re.compile(r"([A-Za-z0-9_.-]+)\s*=\s*(.*)", re.DOTALL)
_SERVICE_PARAM_LINE: Final = re.compile(
    r"([^/\s=]+)/([^/\s=]+)/([A-Za-z0-9_.-]+)\s*=\s*(.*)", re.DOTALL
)
_SERVICE_TYPES: Final = frozenset({"inet", "unix", "unix-dgram", "fifo", "pass"})
_SUBMISSION_PORT: Final = 587
_SUBMISSIONS_PORT: Final = 465
_SERVICE_PORTS: Final = MappingProxyType(
    {"smtp": 25, "submission": 587, "submissions": 465, "smtps": 465, "ssmtp": 465, "urd": 465}
)


@dataclasses.dataclass(frozen=True)
class Service:
    """A master.cf entry, reduced to what the audit needs."""

    name: str
    type: str
    command: str
    overrides: Mapping[str, str]

    @property
    def key(self) -> str:
        return f"{self.name}/{self.type}"

    @property
    def host(self) -> str:
        return _split_endpoint(self.name)[0]

    @property
    def port(self) -> int | None:
        port = _split_endpoint(self.name)[1].lower()
        return int(port) if port.isdigit() else _SERVICE_PORTS.get(port)


def _split_endpoint(name: str) -> tuple[str, str]:
    """``127.0.0.1:submission`` -> (``127.0.0.1``, ``submission``); ``[::1]:25``; ``smtp``."""
    if name.startswith("["):
        host, _, rest = name[1:].partition("]")
        return host, rest.removeprefix(":")
    host, colon, port = name.rpartition(":")
    return (host, port) if colon else ("", name)


def _clip(text: str) -> str:
    return text if len(text) <= 60 else text[:57] + "..."


def _logical_lines(text: str) -> Iterator[tuple[int, str]]:
    """Postfix logical lines with their first line number: a line that starts with whitespace
    continues the previous one; blank lines and lines whose first non-blank character is ``#``
    are skipped, also between a line and its continuation."""
    start, parts = 0, list[str]()
    for number, line in enumerate(text.splitlines(), start=1):
        content = line.strip()
        if not content or content.startswith("#"):
            continue
        if line[0].isspace() and parts:
            parts.append(content)
            continue
        if parts:
            yield start, " ".join(parts)
        start, parts = number, [content]
    if parts:
        yield start, " ".join(parts)


def parse_main_cf(text: str) -> dict[str, str]:
    """main.cf (or ``postconf -n`` output) as parameter -> raw value; a later line wins."""
    params: dict[str, str] = {}
    for number, line in _logical_lines(text):
        match = _PARAM_LINE.fullmatch(line)
        if match is None:
            raise AuditInputError(f"main.cf line {number}: expected 'name = value': {_clip(line)}")
        params[match[1]] = match[2].strip()
    return params


def _master_tokens(line: str, where: str) -> list[str]:
    """Split a master.cf line on whitespace; ``{ ... }`` groups one argument that may contain
    whitespace (the braces and the whitespace just inside them are dropped)."""
    tokens: list[str] = []
    index, end = 0, len(line)
    while index < end:
        if line[index].isspace():
            index += 1
        elif line[index] == "{":
            depth, close = 0, index
            while close < end:
                if line[close] == "{":
                    depth += 1
                elif line[close] == "}":
                    depth -= 1
                    if depth == 0:
                        break
                close += 1
            if depth:
                raise AuditInputError(f"{where}: unbalanced '{{' in {_clip(line)}")
            tokens.append(line[index + 1 : close].strip())
            index = close + 1
        else:
            close = index
            while close < end and not line[close].isspace():
                close += 1
            tokens.append(line[index:close])
            index = close
    return tokens


def _service(tokens: Sequence[str]) -> Service:
    overrides: dict[str, str] = {}
    args = list(tokens[8:])
    while args:
        arg = args.pop(0)
        if arg == "-o" and args:
            setting = args.pop(0)
        elif arg.startswith("-o") and len(arg) > 2:
            setting = arg[2:]
        else:
            continue
        name, equals, value = setting.partition("=")
        if equals:
            overrides[name.strip()] = value.strip()
    command = tokens[7].rsplit("/", 1)[-1]
    return Service(tokens[0], tokens[1], command, overrides)


def _is_service_line(tokens: Sequence[str]) -> bool:
    return len(tokens) >= 8 and tokens[1] in _SERVICE_TYPES


def parse_master_cf(text: str) -> list[Service]:
    """master.cf (or ``postconf -M`` output) as service entries with their ``-o`` overrides."""
    services: list[Service] = []
    for number, line in _logical_lines(text):
        where = f"master.cf line {number}"
        tokens = _master_tokens(line, where)
        if not _is_service_line(tokens):
            raise AuditInputError(
                f"{where}: expected 'service type private unpriv chroot wakeup maxproc command':"
                f" {_clip(line)}"
            )
        services.append(_service(tokens))
    return services


class _PostconfOutput(NamedTuple):
    main: dict[str, str]
    services: tuple[Service, ...] | None
    all_services: bool  # postconf -M output was there, not only -P (services with overrides)
    messages: tuple[str, ...]


def _parse_postconf_output(text: str) -> _PostconfOutput:
    """Sort lines of ``postconf -n`` (``name = value``), ``postconf -M`` (service entries) and
    ``postconf -P`` (``service/type/name = value``) output, in any mix and order."""
    main: dict[str, str] = {}
    services: dict[str, Service] = {}
    service_params: list[tuple[str, str, str, str]] = []
    messages: list[str] = []
    listed = False
    for number, line in _logical_lines(text):
        if line.startswith("postconf:"):
            messages.append(line)
        elif (match := _SERVICE_PARAM_LINE.fullmatch(line)) is not None:
            service_params.append((match[1], match[2], match[3], match[4].strip()))
        elif (match := _PARAM_LINE.fullmatch(line)) is not None:
            main[match[1]] = match[2].strip()
        elif _is_service_line(tokens := _master_tokens(line, f"line {number}")):
            service = _service(tokens)
            services[service.key] = service
            listed = True
        else:
            raise AuditInputError(
                f"line {number} is not postconf -n, -M or -P output: {_clip(line)}"
            )
    if not (main or services or service_params):
        raise AuditInputError(
            "no configuration in the input: expected the output of postconf -n, postconf -M"
            " and/or postconf -P"
        )
    for name, service_type, param, value in service_params:
        key = f"{name}/{service_type}"
        known = services.get(key, Service(name, service_type, "", {}))
        services[key] = dataclasses.replace(known, overrides={**known.overrides, param: value})
    return _PostconfOutput(
        main,
        tuple(services.values()) if services else None,
        listed,
        tuple(messages),
    )


# --------------------------------------------------------------------------------------------
# The configuration model: values as Postfix resolves them


_PROTOCOL_PARAMS: Final = (
    "smtpd_tls_protocols",
    "smtpd_tls_mandatory_protocols",
    "smtp_tls_protocols",
    "smtp_tls_mandatory_protocols",
)
_CIPHER_PARAMS: Final = (
    "smtpd_tls_ciphers",
    "smtpd_tls_mandatory_ciphers",
    "smtp_tls_ciphers",
    "smtp_tls_mandatory_ciphers",
)
# Built-in defaults that do not depend on the version (as in postconf -d of current releases).
_DEFAULTS: Final = MappingProxyType(
    {
        "compatibility_level": "0",
        "inet_interfaces": "all",
        "smtpd_tls_key_file": "$smtpd_tls_cert_file",
        "smtpd_tls_eckey_file": "$smtpd_tls_eccert_file",
        "smtpd_tls_dkey_file": "$smtpd_tls_dcert_file",
        "smtpd_tls_loglevel": "0",
        "smtp_tls_loglevel": "0",
        "smtp_tls_note_starttls_offer": "no",
        "smtpd_use_tls": "no",
        "smtpd_enforce_tls": "no",
        "smtp_use_tls": "no",
        "smtp_enforce_tls": "no",
        "smtp_tls_enforce_peername": "yes",
        "smtpd_tls_mandatory_ciphers": "medium",
        "smtp_tls_mandatory_ciphers": "medium",
        "tls_high_cipherlist": "aNULL:-aNULL:HIGH:@STRENGTH",
        "tls_medium_cipherlist": "aNULL:-aNULL:HIGH:MEDIUM:+RC4:@STRENGTH",
        "tls_low_cipherlist": "aNULL:-aNULL:HIGH:MEDIUM:LOW:+RC4:@STRENGTH",
        "tls_export_cipherlist": "aNULL:-aNULL:HIGH:MEDIUM:LOW:EXPORT:+RC4:@STRENGTH",
        "tls_null_cipherlist": "eNULL:!aNULL",
        "tls_preempt_cipherlist": "no",
        "smtpd_tls_received_header": "no",
        "smtpd_tls_auth_only": "no",
        "smtpd_sasl_auth_enable": "no",
        "smtpd_tls_wrappermode": "no",
    }
)
_EXPANSION: Final = re.compile(
    r"\$(?:\$|([A-Za-z0-9_]+)|\(([A-Za-z0-9_]+)\)"
    r"|\{([A-Za-z0-9_]+)(?:([?:])(\{[^{}]*\}|[^{}]*))?\})"
)
_MAX_EXPANSION_DEPTH: Final = 20
_LOOPBACK_NAMES: Final = frozenset({"localhost", "loopback-only", "::1"})


def _split_list(value: str) -> list[str]:
    return [item for item in re.split(r"[\s,]+", value) if item]


def _yes(value: str) -> bool:
    return value.strip().lower() == "yes"


def _is_loopback(host: str) -> bool:
    host = host.strip("[]").lower()
    return host in _LOOPBACK_NAMES or host.startswith("127.")


def _is_smtpd(service: Service) -> bool:
    """An SMTP server; services only known from ``postconf -P`` are assumed to be one when they
    listen on the network."""
    return service.command == "smtpd" or (not service.command and service.type in ("inet", "pass"))


def _is_smtp_client(service: Service) -> bool:
    if service.type != "unix":
        return False
    return service.command == "smtp" or (not service.command and service.name in ("smtp", "relay"))


@dataclasses.dataclass(frozen=True)
class _Config:
    main: Mapping[str, str]
    services: tuple[Service, ...] | None
    all_services: bool  # False when only services with -o overrides (postconf -P) are known
    version: PostfixVersion
    config_dir: Path | None  # set when auditing a directory, whose files are then inspected

    def raw(self, name: str, service: Service | None = None) -> str:
        if service is not None and name in service.overrides:
            return service.overrides[name]
        if name in self.main:
            return self.main[name]
        return self.default(name)

    def explicit(self, name: str, service: Service | None = None) -> bool:
        return name in self.main or (service is not None and name in service.overrides)

    def value(self, name: str, service: Service | None = None) -> str:
        return self._value(name, service, 0)

    def _value(self, name: str, service: Service | None, depth: int) -> str:
        if name == "service_name" and service is not None:
            return service.name
        return self.expand(self.raw(name, service), service, depth)

    def expand(self, text: str, service: Service | None = None, depth: int = 0) -> str:
        """Expand ``$name`` references the way Postfix does when it uses a value."""
        if "$" not in text or depth > _MAX_EXPANSION_DEPTH:
            return text

        def substitute(match: re.Match[str]) -> str:
            name = match[1] or match[2] or match[3]
            if name is None:
                return "$"
            value = self._value(name, service, depth + 1)
            operator, alternative = match[4], match[5]
            if operator is None:
                return value
            if alternative.startswith("{") and alternative.endswith("}"):
                alternative = alternative[1:-1].strip()
            # ${name?text}: text when name is non-empty; ${name:text}: text when it is empty
            chosen = alternative if bool(value) == (operator == "?") else ""
            return self.expand(chosen, service, depth + 1)

        return _EXPANSION.sub(substitute, text)

    def default(self, name: str) -> str:
        if name in _PROTOCOL_PARAMS:
            if self.version >= (3, 6):
                return ">=TLSv1"
            if _after_mid_2015(self.version):
                return "!SSLv2, !SSLv3"
            return "" if name == "smtpd_tls_protocols" else "!SSLv2"
        if name in ("smtpd_tls_ciphers", "smtp_tls_ciphers"):
            return "medium" if _after_mid_2015(self.version) else "export"
        if name == "smtp_tls_security_level":
            compatible = _compatibility_level(self.value("compatibility_level")) >= (3, 11)
            return "may" if self.version >= (3, 11) and compatible else ""
        if name == "config_directory":
            return str(self.config_dir) if self.config_dir is not None else DEFAULT_CONFIG_DIR
        return _DEFAULTS.get(name, "")

    def describe(self, name: str, service: Service | None = None) -> str:
        """How a value is set, for reasons: ``name = value``, ``-o name=value`` or the default."""
        raw, value = self.raw(name, service), self.value(name, service)
        expanded = f" (= {value})" if value != raw else ""
        if service is not None and name in service.overrides:
            return f"-o {name}={raw}{expanded}"
        if name in self.main:
            return f"{name} = {raw}{expanded}"
        shown = f"'{raw}'" if raw else "empty"
        return f"{name} is not set (Postfix {self.version} default: {shown}{expanded})"

    @property
    def loopback_only(self) -> bool:
        interfaces = _split_list(self.value("inet_interfaces"))
        return bool(interfaces) and all(_is_loopback(interface) for interface in interfaces)

    def public(self, service: Service) -> bool:
        """Reachable from the network: not bound to loopback (post-postscreen ``pass`` services
        count as public)."""
        if service.type == "pass":
            return True
        return service.type == "inet" and not self.loopback_only and not _is_loopback(service.host)

    def smtpd_services(self) -> list[Service]:
        return [s for s in self.services or () if _is_smtpd(s) and self.public(s)]

    def client_services(self) -> list[Service]:
        return [s for s in self.services or () if _is_smtp_client(s)]

    def port25_services(self) -> list[Service]:
        """The SMTP servers that answer on a public port 25, also behind postscreen."""
        listeners = [
            s for s in self.services or () if s.type == "inet" and s.port == 25 and self.public(s)
        ]
        servers = [s for s in listeners if _is_smtpd(s)]
        if any(s.command == "postscreen" for s in listeners):
            servers += [s for s in self.services or () if s.type == "pass" and _is_smtpd(s)]
        return servers


# --------------------------------------------------------------------------------------------
# Verdicts and how they become results


class _Verdict(NamedTuple):
    status: Status
    reason: str
    # the fix: settings as (parameter, value); a value of None removes the parameter
    settings: tuple[tuple[str, str | None], ...] = ()


class _Finding(NamedTuple):
    verdict: _Verdict
    target: Service | None  # where the fix goes: a master.cf service, or None for main.cf
    label: str = ""  # what the verdict is about, put in front of its reason


_Judge = Callable[[_Config, Service | None], _Verdict]


def _fix(name: str, value: str | None, service: Service | None) -> Fix:
    if service is None:
        return Fix(name, remove=True) if value is None else Fix(f"{name} = {value}")
    if value is None:
        return Fix(f"-o {name}=...", service.key, remove=True)
    if re.search(r"\s", value):
        return Fix(f"-o {{ {name} = {value} }}", service.key)
    return Fix(f"-o {name}={value}", service.key)


def _combine(check: str, findings: Sequence[_Finding]) -> CheckResult:
    status = _worst(finding.verdict.status for finding in findings)
    if status is Status.PASS:
        shown = list(findings[:1])
    else:
        shown = [finding for finding in findings if finding.verdict.status is not Status.PASS]
    reason = "; ".join(
        f"{finding.label}: {finding.verdict.reason}" if finding.label else finding.verdict.reason
        for finding in shown
    )
    fixes: list[Fix] = []
    for finding in findings:
        if finding.verdict.status is Status.PASS:
            continue
        for name, value in finding.verdict.settings:
            fix = _fix(name, value, finding.target)
            if fix not in fixes:
                fixes.append(fix)
    return CheckResult(check, status, reason, tuple(fixes))


def _scoped(
    cfg: _Config, check: str, judge: _Judge, params: Sequence[str], services: Iterable[Service]
) -> CheckResult:
    """Judge main.cf, then every service in scope that overrides one of ``params``."""
    findings = [_Finding(judge(cfg, None), None)]
    seen: set[str] = set()
    for service in services:
        if service.key not in seen and any(param in service.overrides for param in params):
            seen.add(service.key)
            findings.append(_Finding(judge(cfg, service), service, service.key))
    return _combine(check, findings)


# --------------------------------------------------------------------------------------------
# Certificate, key and parameter files (only when auditing a directory)


class _Problem(NamedTuple):
    status: Status
    message: str


_PEM_BEGIN: Final = re.compile(r"^-----BEGIN ([A-Z0-9 ]+)-----\s*$", re.MULTILINE)
_KEY_LABELS: Final = frozenset({"PRIVATE KEY", "RSA PRIVATE KEY", "EC PRIVATE KEY"})
_CERT_LABELS: Final = frozenset({"CERTIFICATE", "TRUSTED CERTIFICATE"})
_ENCRYPTED_KEY: Final = "ENCRYPTED PRIVATE KEY"


def _pem_labels(path: str) -> list[str] | _Problem:
    """The PEM object types in a file, in order, or why the file cannot be used or checked."""
    file = Path(path)
    if not file.is_absolute():
        return _Problem(
            Status.WARN,
            f"{path} is a relative path, which Postfix resolves against its working"
            " directory; use an absolute path",
        )
    try:
        text = file.read_text(encoding="ascii", errors="replace")
    except FileNotFoundError:
        return _Problem(Status.FAIL, f"{path} does not exist")
    except PermissionError:
        return _Problem(
            Status.WARN, f"{path} is not readable by this user and was not checked (run as root)"
        )
    except IsADirectoryError:
        return _Problem(Status.FAIL, f"{path} is a directory")
    except OSError as exc:
        return _Problem(Status.WARN, f"{path} could not be checked: {exc.strerror}")
    return _PEM_BEGIN.findall(text)


def _key_problem(labels: Sequence[str], path: str) -> _Problem | None:
    if _ENCRYPTED_KEY in labels:
        return _Problem(
            Status.FAIL, f"{path} holds a passphrase-protected key, which Postfix cannot load"
        )
    if not any(label in _KEY_LABELS for label in labels):
        return _Problem(Status.FAIL, f"{path} holds no private key")
    return None


def _inspect_chain_files(paths: Sequence[str]) -> list[_Problem]:
    """smtpd_tls_chain_files: together the files must read key, certificate[, issuers], key, ..."""
    problems: list[_Problem] = []
    labels: list[str] = []
    for path in paths:
        found = _pem_labels(path)
        if isinstance(found, _Problem):
            problems.append(found)
        else:
            labels += found
    if problems:
        return problems
    joined = ", ".join(paths)
    if (problem := _key_problem(labels, joined)) is not None:
        return [problem]
    if labels[0] not in _KEY_LABELS:
        return [
            _Problem(
                Status.FAIL,
                f"{joined} must start with a private key followed by its certificate chain"
                f" (found {labels[0]} first)",
            )
        ]
    for position, label in enumerate(labels):
        following = labels[position + 1] if position + 1 < len(labels) else ""
        if label in _KEY_LABELS and following not in _CERT_LABELS:
            return [
                _Problem(
                    Status.FAIL, f"in {joined} a private key is not followed by its certificate"
                )
            ]
    return []


def _inspect_cert_and_key(cert: str, key: str) -> list[_Problem]:
    problems: list[_Problem] = []
    cert_labels = _pem_labels(cert)
    if isinstance(cert_labels, _Problem):
        problems.append(cert_labels)
    elif not any(label in _CERT_LABELS for label in cert_labels):
        problems.append(_Problem(Status.FAIL, f"{cert} holds no certificate"))
    key_labels = cert_labels if key == cert else _pem_labels(key)
    if isinstance(key_labels, _Problem):
        problems.append(key_labels)
    elif (problem := _key_problem(key_labels, key)) is not None:
        problems.append(problem)
    return problems


def _inspect_dh_file(path: str) -> _Problem | None:
    labels = _pem_labels(path)
    if isinstance(labels, _Problem):
        return labels
    if "DH PARAMETERS" not in labels:
        return _Problem(Status.FAIL, f"{path} holds no DH PARAMETERS")
    return None


# --------------------------------------------------------------------------------------------
# Checks: certificate, security levels


_CERT_PAIRS: Final = (
    ("smtpd_tls_cert_file", "smtpd_tls_key_file"),
    ("smtpd_tls_eccert_file", "smtpd_tls_eckey_file"),
    ("smtpd_tls_dcert_file", "smtpd_tls_dkey_file"),
)
_CERT_PARAMS: Final = ("smtpd_tls_chain_files", *(name for pair in _CERT_PAIRS for name in pair))
_CHAIN_EXAMPLE: Final = "${config_directory}/tls/server-key-and-chain.pem"


def _cert_judge(cfg: _Config, service: Service | None) -> _Verdict:
    chain = _split_list(cfg.value("smtpd_tls_chain_files", service))
    pairs = [
        (cert, cfg.value(key, service).strip() or cert, cert_param)
        for cert_param, key in _CERT_PAIRS
        if (cert := cfg.value(cert_param, service).strip())
    ]
    if chain:
        what = f"smtpd_tls_chain_files = {', '.join(chain)}"
        if pairs:
            what += " (the legacy *_cert_file/*_key_file settings are ignored)"
    elif pairs:
        what = " and ".join(f"{param} = {cert}" for cert, _, param in pairs)
    else:
        return _Verdict(
            Status.FAIL,
            "no server certificate: neither smtpd_tls_chain_files nor smtpd_tls_cert_file/"
            "smtpd_tls_key_file (or the eccert/dcert variants) is set, so Postfix cannot offer"
            " STARTTLS",
            (("smtpd_tls_chain_files", _CHAIN_EXAMPLE),),
        )
    if cfg.config_dir is None:
        return _Verdict(Status.PASS, f"{what} (files not checked: auditing postconf output)")
    if chain:
        problems = _inspect_chain_files(chain)
    else:
        problems = [p for cert, key, _ in pairs for p in _inspect_cert_and_key(cert, key)]
    if not problems:
        return _Verdict(Status.PASS, f"{what}: private key and certificate found")
    messages = list(dict.fromkeys(problem.message for problem in problems))
    return _Verdict(_worst(p.status for p in problems), f"{what}: {'; '.join(messages)}")


_SERVER_LEVEL_PARAMS: Final = ("smtpd_tls_security_level", "smtpd_use_tls", "smtpd_enforce_tls")
_CLIENT_LEVEL_PARAMS: Final = ("smtp_tls_security_level", "smtp_use_tls", "smtp_enforce_tls")
# The server logs a warning and uses "encrypt" for the client-only levels.
_SERVER_ENCRYPT_LEVELS: Final = frozenset({"encrypt", "fingerprint", "verify", "secure", "dane"})
_CLIENT_LEVELS: Final = frozenset(
    {"none", "may", "encrypt", "dane", "dane-only", "fingerprint", "verify", "secure"}
)
_CLIENT_MANDATORY_LEVELS: Final = frozenset(
    {"encrypt", "dane-only", "fingerprint", "verify", "secure"}
)
_OBSOLETE: Final = "obsolete: Postfix 3.9 and later log a deprecation warning"


class _Level(NamedTuple):
    level: str
    described: str
    legacy: bool


def _server_level(cfg: _Config, service: Service | None) -> _Level:
    level = cfg.value("smtpd_tls_security_level", service).strip().lower()
    if level:
        return _Level(level, cfg.describe("smtpd_tls_security_level", service), False)
    if _yes(cfg.value("smtpd_enforce_tls", service)):
        return _Level("encrypt", cfg.describe("smtpd_enforce_tls", service), True)
    if _yes(cfg.value("smtpd_use_tls", service)):
        return _Level("may", cfg.describe("smtpd_use_tls", service), True)
    return _Level("none", cfg.describe("smtpd_tls_security_level", service), False)


def _client_level(cfg: _Config, service: Service | None) -> _Level:
    level = cfg.value("smtp_tls_security_level", service).strip().lower()
    if level:
        return _Level(level, cfg.describe("smtp_tls_security_level", service), False)
    if _yes(cfg.value("smtp_enforce_tls", service)):
        verify = _yes(cfg.value("smtp_tls_enforce_peername", service))
        return _Level(
            "verify" if verify else "encrypt", cfg.describe("smtp_enforce_tls", service), True
        )
    if _yes(cfg.value("smtp_use_tls", service)):
        return _Level("may", cfg.describe("smtp_use_tls", service), True)
    return _Level("none", cfg.describe("smtp_tls_security_level", service), False)


def _server_level_verdict(cfg: _Config, service: Service | None, port25: bool) -> _Verdict:
    level, described, legacy = _server_level(cfg, service)
    to_may = (("smtpd_tls_security_level", "may"),)
    if level == "none":
        return _Verdict(
            Status.FAIL,
            f"{described}: STARTTLS is not offered, so mail from other servers arrives in"
            " plaintext",
            to_may,
        )
    if level != "may" and level not in _SERVER_ENCRYPT_LEVELS:
        return _Verdict(Status.FAIL, f"{described}: not a TLS security level", to_may)
    if level != "may" and port25:
        return _Verdict(
            Status.FAIL,
            f"{described}: requires TLS on the public port-25 listener, which RFC 3207 forbids"
            " (servers without STARTTLS could not deliver); require TLS on submission instead",
            to_may,
        )
    if legacy:
        return _Verdict(
            Status.WARN,
            f"{described} means '{level}', but is {_OBSOLETE}",
            (("smtpd_tls_security_level", level if level == "may" else "encrypt"),),
        )
    how = "STARTTLS is offered, not required" if level == "may" else "TLS is required"
    return _Verdict(Status.PASS, f"{described}: {how}")


def _check_server_level(cfg: _Config) -> CheckResult:
    check = "smtpd_tls_security_level"
    findings = []
    if not cfg.all_services:
        # master.cf is not (fully) known: judge main.cf as what the port-25 listener inherits
        findings.append(_Finding(_server_level_verdict(cfg, None, port25=True), None))
    port25 = cfg.port25_services()
    others = [
        s
        for s in cfg.smtpd_services()
        if s not in port25
        and s.port not in (_SUBMISSION_PORT, _SUBMISSIONS_PORT)
        and not _yes(cfg.value("smtpd_tls_wrappermode", s))
    ]
    if not findings and not port25 + others:
        return CheckResult(
            check,
            Status.PASS,
            "no public SMTP server listener in master.cf (loopback-only or no smtpd service)",
        )
    for service in port25 + others:
        overridden = any(param in service.overrides for param in _SERVER_LEVEL_PARAMS)
        where = f"port {service.port}" if service.port else service.type
        findings.append(
            _Finding(
                _server_level_verdict(cfg, service, port25=service in port25),
                service if overridden else None,
                f"{service.key} ({where})",
            )
        )
    return _combine(check, findings)


def _client_level_judge(cfg: _Config, service: Service | None) -> _Verdict:
    level, described, legacy = _client_level(cfg, service)
    to_may = (("smtp_tls_security_level", "may"),)
    if level not in _CLIENT_LEVELS:
        return _Verdict(Status.FAIL, f"{described}: not a TLS security level", to_may)
    if level == "none":
        hint = ""
        if cfg.version >= (3, 11):
            hint = " (Postfix 3.11 defaults to 'may' only at compatibility_level >= 3.11)"
        return _Verdict(
            Status.FAIL,
            f"{described}: outbound mail is never encrypted{hint}",
            to_may,
        )
    if legacy:
        return _Verdict(
            Status.WARN,
            f"{described} means '{level}', but is {_OBSOLETE}",
            (("smtp_tls_security_level", level),),
        )
    if level in _CLIENT_MANDATORY_LEVELS and not cfg.value("relayhost", service).strip():
        return _Verdict(
            Status.WARN,
            f"{described}: mandatory TLS for every destination defers mail to the many servers"
            " without (verifiable) TLS; keep 'may' or 'dane' as the default and require more per"
            " destination with smtp_tls_policy_maps",
            to_may,
        )
    source = ""
    if not cfg.explicit("smtp_tls_security_level", service):
        source = " (the Postfix 3.11 default at compatibility_level >= 3.11)"
    return _Verdict(Status.PASS, f"{described}: outbound TLS is used when offered{source}")


# --------------------------------------------------------------------------------------------
# Checks: logging tlslogd depends on


_BLANK_INBOUND: Final = (
    "Postfix logs no inbound TLS handshakes, so tlslogd's inbound protocol/cipher census is"
    " blank (STARTTLS adoption from the 'disconnect ... starttls=' counters still works)"
)
_BLANK_OUTBOUND: Final = (
    "Postfix logs no outbound TLS handshakes, so tlslogd cannot tell a TLS delivery from a"
    ' plaintext one: deliveries are counted as tls="unknown", and the per-delivery TLS panels'
    " and the plaintext alerts stay empty"
)
_BLANK_OFFERED: Final = (
    "Postfix never logs 'Host offered STARTTLS', so tlslogd's 'offered STARTTLS but not used'"
    " panels, the offered-plaintext alert and the peer list are blank"
)


def _loglevel_judge(param: str, without: str) -> _Judge:
    def judge(cfg: _Config, service: Service | None) -> _Verdict:
        value = cfg.value(param, service).strip()
        described = cfg.describe(param, service)
        if not value.isdigit():
            return _Verdict(Status.FAIL, f"{described}: not a number", ((param, "1"),))
        level = int(value)
        if level < 1:
            return _Verdict(Status.FAIL, f"{described}: {without}", ((param, "1"),))
        if level > 1:
            return _Verdict(
                Status.WARN,
                f"{described}: levels above 1 are for debugging and flood the log; 1 logs the"
                " handshake summary tlslogd reads",
                ((param, "1"),),
            )
        return _Verdict(Status.PASS, f"{described}: every TLS handshake is logged")

    return judge


def _starttls_offer_judge(cfg: _Config, service: Service | None) -> _Verdict:
    param = "smtp_tls_note_starttls_offer"
    described = cfg.describe(param, service)
    if _yes(cfg.value(param, service)):
        return _Verdict(
            Status.PASS, f"{described}: servers offering STARTTLS to plaintext sessions are logged"
        )
    return _Verdict(Status.FAIL, f"{described}: {_BLANK_OFFERED}", ((param, "yes"),))


# --------------------------------------------------------------------------------------------
# Checks: protocols and ciphers


PROTOCOLS: Final = ("SSLv2", "SSLv3", "TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3")
_PROTOCOL_NUMBERS: Final = MappingProxyType(
    {"SSLv2": 0x0002, "SSLv3": 0x0300, "TLSv1": 0x0301, "TLSv1.1": 0x0302, "TLSv1.2": 0x0303}
    | {"TLSv1.3": 0x0304}
)
_PROTOCOL_NAMES: Final = MappingProxyType({name.lower(): name for name in PROTOCOLS})


def _protocol_name(token: str) -> str:
    name = _PROTOCOL_NAMES.get(token.lower())
    if name is None:
        raise ValueError(f"unknown protocol {token!r}")
    return name


def _protocol_number(token: str) -> int:
    if token.lower() in _PROTOCOL_NAMES:
        return _PROTOCOL_NUMBERS[_protocol_name(token)]
    digits = token.lower().removeprefix("0x")
    if re.fullmatch(r"[0-9a-f]{1,4}", digits) is None:
        raise ValueError(f"unknown protocol version {token!r}")
    return int(digits, 16)


def enabled_protocols(value: str, version: PostfixVersion) -> frozenset[str]:
    """The protocols a ``*_tls_protocols`` value leaves enabled. Both spellings are understood:
    names to include or ``!names`` to exclude (separated by whitespace, commas or colons), and
    the Postfix 3.6+ ``>=version`` / ``<=version`` bounds (names or hex such as ``0x0303``). An
    empty value enables every protocol. Raises ValueError for a list Postfix would reject."""
    include: set[str] = set()
    exclude: set[str] = set()
    lowest, highest = 0, 0xFFFF
    for token in re.split(r"[\s,:]+", value.strip()):
        if not token:
            continue
        if token.startswith((">=", "<=")):
            if version < (3, 6):
                raise ValueError(f"{token!r}: the >=/<= range syntax needs Postfix 3.6 or later")
            if token.startswith(">="):
                lowest = max(lowest, _protocol_number(token[2:]))
            else:
                highest = min(highest, _protocol_number(token[2:]))
        elif token.startswith("!"):
            exclude.add(_protocol_name(token[1:]))
        else:
            include.add(_protocol_name(token))
    enabled = (include or set(PROTOCOLS)) - exclude
    return frozenset(p for p in enabled if lowest <= _PROTOCOL_NUMBERS[p] <= highest)


def _protocol_judge(param: str) -> _Judge:
    def judge(cfg: _Config, service: Service | None) -> _Verdict:
        described = cfg.describe(param, service)
        target = ">=TLSv1.2" if cfg.version >= (3, 6) else "!SSLv2, !SSLv3, !TLSv1, !TLSv1.1"
        fix = ((param, target),)
        try:
            enabled = enabled_protocols(cfg.value(param, service), cfg.version)
        except ValueError as exc:
            return _Verdict(
                Status.FAIL, f"{described}: {exc}; Postfix turns TLS off for this list", fix
            )
        ordered: list[str] = [p for p in PROTOCOLS if p in enabled]
        ssl = [p for p in ordered if p.startswith("SSL")]
        old = [p for p in ordered if p in ("TLSv1", "TLSv1.1")]
        if not ordered:
            return _Verdict(
                Status.FAIL, f"{described}: no protocol is left, every handshake fails", fix
            )
        if ssl:
            return _Verdict(
                Status.FAIL,
                f"{described}: allows {', '.join(ssl + old)} (SSLv2 and SSLv3 are broken:"
                " DROWN, POODLE)",
                fix,
            )
        if old:
            return _Verdict(
                Status.WARN,
                f"{described}: allows {', '.join(old)}, deprecated by RFC 8996",
                fix,
            )
        return _Verdict(Status.PASS, f"{described}: allows only {', '.join(ordered)}")

    return judge


_GRADES: Final = ("export", "low", "medium", "high", "null")
_WEAK_GRADES: Final = MappingProxyType(
    {
        "export": "export-grade ciphers (40- and 56-bit keys)",
        "low": "low-grade ciphers such as single DES (56-bit keys)",
        "null": "NULL ciphers, which authenticate but do not encrypt",
    }
)
_STRONG_GRADES: Final = MappingProxyType(
    {"medium": "128-bit or stronger ciphers", "high": "HIGH-grade ciphers only"}
)
# Weak cipher families, by the OpenSSL cipher-string keywords that add or remove them.
_ALL_WEAK: Final = frozenset({"RC4", "eNULL", "EXPORT", "DES", "MD5", "LOW"})
_ADDS: Final = MappingProxyType(
    {
        "ALL": _ALL_WEAK - {"eNULL"},
        "COMPLEMENTOFALL": frozenset({"eNULL"}),
        "LOW": frozenset({"LOW", "DES"}),
        "RC4": frozenset({"RC4"}),
        "ENULL": frozenset({"eNULL"}),
        "NULL": frozenset({"eNULL"}),
        "EXPORT": frozenset({"EXPORT"}),
        "EXP": frozenset({"EXPORT"}),
        "EXPORT40": frozenset({"EXPORT"}),
        "EXPORT56": frozenset({"EXPORT"}),
        "DES": frozenset({"DES"}),
        "MD5": frozenset({"MD5"}),
    }
)
# "!MEDIUM" removes RC4, which OpenSSL 1.0.x grades MEDIUM (1.1.0 and later do not build it).
_REMOVES: Final = MappingProxyType({**_ADDS, "ALL": _ALL_WEAK, "MEDIUM": frozenset({"RC4"})})
_CIPHER_NAME_FAMILIES: Final = (
    (re.compile(r"(?:^|-)RC4(?:-|$)"), "RC4"),
    (re.compile(r"^EXP"), "EXPORT"),
    (re.compile(r"(?:^|-)NULL(?:-|$)"), "eNULL"),
    (re.compile(r"(?:^|-)DES-CBC-"), "DES"),
    (re.compile(r"-MD5$"), "MD5"),
)
# Common hardening advice. The SMTP client keeps anonymous ciphers: opportunistic TLS to a
# server without a certificate is still better than plaintext.
_SERVER_EXCLUDES: Final = (
    "aNULL, eNULL, EXPORT, DES, RC4, MD5, PSK, aECDH, EDH-DSS-DES-CBC3-SHA, EDH-RSA-DES-CBC3-SHA,"
    " KRB5-DES, CBC3-SHA"
)
_CLIENT_EXCLUDES: Final = (
    "eNULL, EXPORT, DES, RC4, MD5, PSK, EDH-DSS-DES-CBC3-SHA, EDH-RSA-DES-CBC3-SHA, KRB5-DES,"
    " CBC3-SHA"
)


def _added(element: str) -> frozenset[str]:
    """Weak families a cipher-string element adds: a keyword, or a single cipher's name."""
    if element.upper() in _ADDS:
        return _ADDS[element.upper()]
    return frozenset(family for pattern, family in _CIPHER_NAME_FAMILIES if pattern.search(element))


def weak_cipher_families(cipherlist: str, excludes: Iterable[str] = ()) -> list[str]:
    """The weak cipher families (RC4, eNULL, EXPORT, DES, MD5, LOW) an OpenSSL cipher string
    still enables after Postfix appends ``!exclude`` for each ``*_exclude_ciphers`` element."""
    elements = [e for e in re.split(r"[\s:,]+", cipherlist) if e]
    elements += [f"!{exclude}" for exclude in excludes]
    enabled: set[str] = set()
    banned: set[str] = set()
    for element in elements:
        prefix = element[0] if element[0] in "!-+" else ""
        body = element[len(prefix) :]
        if prefix == "+" or body.startswith("@"):
            continue
        if prefix:
            # "!A+B" removes only ciphers that are both A and B: no whole family goes.
            removed = frozenset() if "+" in body else _REMOVES.get(body.upper(), frozenset())
            if prefix == "!":
                banned |= removed
            enabled -= removed
        else:
            for part in body.split("+"):
                enabled |= _added(part) - banned
    return sorted(enabled - banned)


def _cipher_judge(param: str) -> _Judge:
    side = param.split("_", 1)[0]
    mandatory = "_mandatory_" in param

    def judge(cfg: _Config, service: Service | None) -> _Verdict:
        described = cfg.describe(param, service)
        grade = cfg.value(param, service).strip().lower()
        if grade not in _GRADES:
            return _Verdict(
                Status.FAIL,
                f"{described}: not a cipher grade (export, low, medium, high, null), so Postfix"
                " cannot set up TLS",
                ((param, "medium"),),
            )
        if grade in _WEAK_GRADES and grade != "null" and cfg.version >= (3, 8):
            return _Verdict(
                Status.WARN,
                f"{described}: Postfix {cfg.version} treats '{grade}' as 'medium' (3.8 dropped"
                " the export and low grades); say medium so the setting means what it does",
                ((param, "medium"),),
            )
        if grade in _WEAK_GRADES:
            return _Verdict(
                Status.WARN,
                f"{described}: admits {_WEAK_GRADES[grade]}; use medium or high",
                ((param, "medium"),),
            )
        list_param = f"tls_{grade}_cipherlist"
        cipherlist = cfg.value(list_param, service)
        exclude_param = f"{side}_tls_exclude_ciphers"
        excludes = _split_list(cfg.value(exclude_param, service))
        if mandatory:
            excludes += _split_list(cfg.value(f"{side}_tls_mandatory_exclude_ciphers", service))
        weak = weak_cipher_families(cipherlist, excludes)
        if weak:
            current = _split_list(cfg.value(exclude_param, service))
            advice = _split_list(_SERVER_EXCLUDES if side == "smtpd" else _CLIENT_EXCLUDES)
            merged = current + [item for item in advice if item not in current]
            return _Verdict(
                Status.WARN,
                f"{described}, but {list_param} = {cipherlist} enables {', '.join(weak)} ciphers",
                ((exclude_param, ", ".join(merged)),),
            )
        custom = f" (custom {list_param} checked)" if cfg.explicit(list_param, service) else ""
        return _Verdict(Status.PASS, f"{described}: {_STRONG_GRADES[grade]}{custom}")

    return judge


def _cipher_params(param: str) -> tuple[str, ...]:
    side = param.split("_", 1)[0]
    return (
        param,
        f"{side}_tls_exclude_ciphers",
        f"{side}_tls_mandatory_exclude_ciphers",
        *(f"tls_{grade}_cipherlist" for grade in _GRADES),
    )


# --------------------------------------------------------------------------------------------
# Checks: OpenSSL options, DH parameters, cipher preference, Received: header


_NO_RENEGOTIATION_BIT: Final = 0x40000000
_NO_COMPRESSION_BIT: Final = 0x00020000


def _ssl_options_judge(cfg: _Config, service: Service | None) -> _Verdict:
    param, version = "tls_ssl_options", cfg.version
    described = cfg.describe(param, service)
    if version < (2, 11):
        return _Verdict(
            Status.WARN,
            f"Postfix {version} has no tls_ssl_options (added in 2.11), so client-initiated"
            " renegotiation cannot be disabled; upgrade Postfix",
        )
    tokens = _split_list(cfg.value(param, service))
    names = {token.upper() for token in tokens if not token.lower().startswith("0x")}
    mask = 0
    for token in tokens:
        if token.lower().startswith("0x"):
            mask |= int(token, 16) if re.fullmatch(r"0[xX][0-9a-fA-F]+", token) else 0
    has_renegotiation = "NO_RENEGOTIATION" in names or bool(mask & _NO_RENEGOTIATION_BIT)
    has_compression = "NO_COMPRESSION" in names or bool(mask & _NO_COMPRESSION_BIT)
    named_too_early = version < (3, 4) and "NO_RENEGOTIATION" in names
    problems: list[str] = []
    if not has_renegotiation or named_too_early:
        problems.append(
            "client-initiated renegotiation stays allowed (a cheap way to make the server burn CPU)"
        )
    if named_too_early:
        problems.append(
            "Postfix before 3.4 does not know the name NO_RENEGOTIATION; use the OpenSSL bit"
            " mask 0x40000000 (OpenSSL 1.1.0h or later)"
        )
    if version < (3, 6) and not has_compression:
        problems.append(
            f"TLS compression is not disabled: Postfix {version} may be linked with OpenSSL"
            " 1.0.x, where compression enables CRIME-style attacks (Postfix 3.6 requires"
            " OpenSSL 1.1.1, which disables it)"
        )
    if not problems:
        return _Verdict(Status.PASS, f"{described}: client-initiated renegotiation is refused")
    kept = [t for t in tokens if not (named_too_early and t.upper() == "NO_RENEGOTIATION")]
    wanted = list(kept)
    if version < (3, 6) and not has_compression:
        wanted.append("NO_COMPRESSION")
    if not has_renegotiation or named_too_early:
        wanted.append("NO_RENEGOTIATION" if version >= (3, 4) else f"0x{_NO_RENEGOTIATION_BIT:X}")
    return _Verdict(
        Status.WARN, f"{described}: {'; '.join(problems)}", ((param, ", ".join(wanted)),)
    )


_DH_FILE: Final = "${config_directory}/dh2048.pem"
_DH_COMMAND: Final = "openssl dhparam -out /etc/postfix/dh2048.pem 2048"


def _dh_judge(cfg: _Config, service: Service | None) -> _Verdict:
    param, version = "smtpd_tls_dh1024_param_file", cfg.version
    described = cfg.describe(param, service)
    value = cfg.value(param, service).strip()
    if version >= (3, 9) and value:
        return _Verdict(
            Status.WARN,
            f"{described}: deprecated since Postfix 3.9; leave it unset and OpenSSL 3 negotiates"
            " RFC 7919 FFDHE groups",
            ((param, None),),
        )
    if version >= (3, 7) and value in ("", "auto"):
        return _Verdict(
            Status.PASS,
            f"{described}: Postfix {version} with OpenSSL 3 negotiates RFC 7919 FFDHE groups,"
            " no parameter file needed",
        )
    if value == "auto":
        return _Verdict(
            Status.WARN,
            f"{described}: 'auto' needs Postfix 3.7; Postfix {version} reads it as a file name",
            ((param, _DH_FILE),),
        )
    if not value:
        bits = 2048 if version >= (3, 1) else 1024
        return _Verdict(
            Status.WARN,
            f"{described}: Postfix {version} uses its compiled-in {bits}-bit group for DHE;"
            f" generate your own 2048-bit parameters with '{_DH_COMMAND}'",
            ((param, _DH_FILE),),
        )
    if cfg.config_dir is not None and (problem := _inspect_dh_file(value)) is not None:
        return _Verdict(
            Status.WARN,
            f"{described}: {problem.message}; Postfix logs a warning and falls back to its"
            " built-in group",
            ((param, "auto" if version >= (3, 7) else _DH_FILE),),
        )
    preferred = " ('auto' is preferred with OpenSSL 3)" if version >= (3, 7) else ""
    return _Verdict(Status.PASS, f"{described}: custom DHE parameters{preferred}")


def _preempt_judge(cfg: _Config, service: Service | None) -> _Verdict:
    param = "tls_preempt_cipherlist"
    described = cfg.describe(param, service)
    if _yes(cfg.value(param, service)):
        return _Verdict(
            Status.PASS,
            f"{described}: the server's cipher order wins, so the strongest shared cipher is used",
        )
    return _Verdict(
        Status.WARN,
        f"{described}: the client's cipher preference wins; common hardening advice is to let"
        " the server choose",
        ((param, "yes"),),
    )


def _check_received_header(cfg: _Config) -> CheckResult:
    check = "smtpd_tls_received_header"
    described = cfg.describe(check)
    if _yes(cfg.value(check)):
        return CheckResult(
            check,
            Status.PASS,
            f"{described}: Received: headers record the TLS protocol and cipher of each"
            " inbound session",
        )
    return CheckResult(
        check,
        Status.PASS,
        f"{described}: informational only, Received: headers carry no TLS details (optional)",
        (Fix(f"{check} = yes"),),
    )


# --------------------------------------------------------------------------------------------
# Checks: submission services


def _submission_verdict(cfg: _Config, service: Service | None) -> _Verdict:
    """Port 587: STARTTLS must be required, and AUTH only offered after it."""
    level, described, _ = _server_level(cfg, service)
    wrapper = _yes(cfg.value("smtpd_tls_wrappermode", service))
    sasl = _yes(cfg.value("smtpd_sasl_auth_enable", service))
    auth_only = _yes(cfg.value("smtpd_tls_auth_only", service))
    encrypted = wrapper or level in _SERVER_ENCRYPT_LEVELS
    problems: list[tuple[Status, str, tuple[str, str]]] = []
    if not encrypted:
        authenticate = " and authenticate" if sasl else ""
        problems.append(
            (
                Status.FAIL,
                f"{described}: TLS is optional, so mail clients can submit{authenticate} in"
                " plaintext",
                ("smtpd_tls_security_level", "encrypt"),
            )
        )
    if sasl and not auth_only:
        if encrypted:
            problems.append(
                (
                    Status.WARN,
                    "SASL is on without smtpd_tls_auth_only=yes: 'encrypt' implies it, but set it"
                    " as Postfix's master.cf template does, so AUTH stays TLS-only should the"
                    " level ever be relaxed",
                    ("smtpd_tls_auth_only", "yes"),
                )
            )
        else:
            problems.append(
                (
                    Status.FAIL,
                    "SASL AUTH is offered before STARTTLS, so passwords can cross the network in"
                    " plaintext",
                    ("smtpd_tls_auth_only", "yes"),
                )
            )
    if not problems:
        sasl_note = ", AUTH only after STARTTLS" if sasl else ""
        return _Verdict(Status.PASS, f"{described}: TLS is required{sasl_note}")
    return _Verdict(
        _worst(status for status, _, _ in problems),
        "; ".join(reason for _, reason, _ in problems),
        tuple(setting for _, _, setting in problems),
    )


def _submissions_verdict(cfg: _Config, service: Service | None) -> _Verdict:
    """Port 465: implicit TLS (RFC 8314), so the whole session, AUTH included, is encrypted."""
    described = cfg.describe("smtpd_tls_wrappermode", service)
    if _yes(cfg.value("smtpd_tls_wrappermode", service)):
        return _Verdict(
            Status.PASS, f"{described}: implicit TLS, the whole session (AUTH too) is encrypted"
        )
    return _Verdict(
        Status.FAIL,
        f"{described}: port-465 clients expect implicit TLS (RFC 8314) and cannot talk to this"
        " plaintext service",
        (("smtpd_tls_wrappermode", "yes"),),
    )


def _check_mail_submission(cfg: _Config, check: str, port: int) -> CheckResult:
    services = [
        s for s in cfg.services or () if s.type == "inet" and _is_smtpd(s) and s.port == port
    ]
    public = [s for s in services if cfg.public(s)]
    if not services and not cfg.all_services:
        return CheckResult(
            check,
            Status.WARN,
            f"not checked: the input does not list the master.cf services; add the output of"
            f" postconf -M to check the port-{port} service",
        )
    if not public:
        if services:
            keys = ", ".join(s.key for s in services)
            return CheckResult(
                check, Status.PASS, f"{keys} listens on loopback only, not for remote clients"
            )
        return CheckResult(check, Status.PASS, f"no {check} service (port {port}) in master.cf")
    judge = _submission_verdict if port == _SUBMISSION_PORT else _submissions_verdict
    return _combine(check, [_Finding(judge(cfg, s), s, s.key) for s in public])


# --------------------------------------------------------------------------------------------
# Running the audit


def _run_checks(cfg: _Config) -> list[CheckResult]:
    servers, clients = cfg.smtpd_services(), cfg.client_services()
    results = [
        _scoped(cfg, "smtpd_tls_cert", _cert_judge, _CERT_PARAMS, servers),
        _check_server_level(cfg),
        _scoped(cfg, "smtp_tls_security_level", _client_level_judge, _CLIENT_LEVEL_PARAMS, clients),
        _scoped(
            cfg,
            "smtpd_tls_loglevel",
            _loglevel_judge("smtpd_tls_loglevel", _BLANK_INBOUND),
            ("smtpd_tls_loglevel",),
            servers,
        ),
        _scoped(
            cfg,
            "smtp_tls_loglevel",
            _loglevel_judge("smtp_tls_loglevel", _BLANK_OUTBOUND),
            ("smtp_tls_loglevel",),
            clients,
        ),
        _scoped(
            cfg,
            "smtp_tls_note_starttls_offer",
            _starttls_offer_judge,
            ("smtp_tls_note_starttls_offer",),
            clients,
        ),
    ]
    for param in _PROTOCOL_PARAMS:
        scope = servers if param.startswith("smtpd_") else clients
        results.append(_scoped(cfg, param, _protocol_judge(param), (param,), scope))
    for param in _CIPHER_PARAMS:
        scope = servers if param.startswith("smtpd_") else clients
        results.append(_scoped(cfg, param, _cipher_judge(param), _cipher_params(param), scope))
    results += [
        _scoped(
            cfg, "tls_ssl_options", _ssl_options_judge, ("tls_ssl_options",), servers + clients
        ),
        _scoped(
            cfg,
            "smtpd_tls_dh1024_param_file",
            _dh_judge,
            ("smtpd_tls_dh1024_param_file",),
            servers,
        ),
        _scoped(
            cfg, "tls_preempt_cipherlist", _preempt_judge, ("tls_preempt_cipherlist",), servers
        ),
        _check_received_header(cfg),
        _check_mail_submission(cfg, "submission", _SUBMISSION_PORT),
        _check_mail_submission(cfg, "submissions", _SUBMISSIONS_PORT),
    ]
    return results


def _installed_version() -> PostfixVersion | None:
    """``postconf -d mail_version`` of the installed Postfix, if there is one."""
    postconf = shutil.which("postconf")
    if postconf is None:
        return None
    try:
        done = subprocess.run(
            [postconf, "-d", "mail_version"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    match = re.search(r"^mail_version\s*=\s*(\S+)", done.stdout, re.MULTILINE)
    try:
        return PostfixVersion.parse(match[1]) if match else None
    except ValueError:
        return None


class _ResolvedVersion(NamedTuple):
    version: PostfixVersion
    source: str
    note: str | None = None


def _resolve_version(
    requested: PostfixVersion | str | None, main: Mapping[str, str]
) -> _ResolvedVersion:
    """The version whose defaults apply: as requested, else ``mail_version`` in the input, else
    the installed Postfix, else :data:`ASSUMED_VERSION` (said so in a note)."""
    if isinstance(requested, str):
        requested = PostfixVersion.parse(requested)
    if requested is not None:
        return _ResolvedVersion(requested, "requested")
    try:
        return _ResolvedVersion(
            PostfixVersion.parse(main["mail_version"]), "mail_version in the input"
        )
    except (KeyError, ValueError):
        pass
    installed = _installed_version()
    if installed is not None:
        return _ResolvedVersion(installed, "installed Postfix (postconf -d mail_version)")
    return _ResolvedVersion(
        ASSUMED_VERSION,
        "assumed",
        f"Postfix version unknown (no --postfix-version, no mail_version in the input, no"
        f" postconf command): assuming Postfix {ASSUMED_VERSION}, the current stable release",
    )


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise AuditInputError(f"cannot read {path}: {exc.strerror or exc}") from exc


def audit_config_dir(
    path: str | Path = DEFAULT_CONFIG_DIR, version: PostfixVersion | str | None = None
) -> AuditReport:
    """Audit ``main.cf`` and ``master.cf`` in ``path``; certificate files are inspected too.
    Raises :class:`AuditInputError` when main.cf cannot be read or parsed."""
    directory = Path(path).absolute()
    main = parse_main_cf(_read(directory / "main.cf"))
    notes: list[str] = []
    services: tuple[Service, ...] | None = None
    master = directory / "master.cf"
    if master.exists():
        services = tuple(parse_master_cf(_read(master)))
    else:
        notes.append(f"{master} does not exist: per-service overrides are not checked")
    resolved = _resolve_version(version, main)
    if resolved.note:
        notes.append(resolved.note)
    cfg = _Config(main, services, services is not None, resolved.version, directory)
    return AuditReport(
        _run_checks(cfg), resolved.version, resolved.source, str(directory), tuple(notes)
    )


def audit_postconf_text(text: str, version: PostfixVersion | str | None = None) -> AuditReport:
    """Audit the output of ``postconf -n``, ``postconf -M`` and/or ``postconf -P`` (in any mix).
    Files named in it are not inspected. Raises :class:`AuditInputError` for other input."""
    parsed = _parse_postconf_output(text)
    notes = [f"in the input: {message}" for message in parsed.messages]
    notes.append(
        "certificate and parameter files are not inspected when reading postconf output; audit"
        " with --config-dir on the mail host to check them"
    )
    if parsed.services is None:
        notes.append(
            "no master.cf services in the input (postconf -M or -P output): per-service"
            " overrides and the submission services are not checked"
        )
    elif not parsed.all_services:
        notes.append(
            "only services with -o overrides are known (postconf -P output without postconf -M):"
            " main.cf is judged as what the port-25 listener inherits"
        )
    resolved = _resolve_version(version, parsed.main)
    if resolved.note:
        notes.append(resolved.note)
    cfg = _Config(parsed.main, parsed.services, parsed.all_services, resolved.version, None)
    return AuditReport(
        _run_checks(cfg), resolved.version, resolved.source, "postconf output", tuple(notes)
    )


# --------------------------------------------------------------------------------------------
# Output and command line


def render_table(report: AuditReport, width: int = 100) -> str:
    """The report for a terminal: one row per check (status, check, reason) and its fix lines."""
    lines = [
        f"Postfix TLS audit of {report.source}: Postfix {report.version} ({report.version_source})"
    ]
    for note in report.notes:
        lines += textwrap.wrap(note, width, initial_indent="note: ", subsequent_indent="      ")
    check_width = max(len("CHECK"), *(len(result.check) for result in report.results))
    indent = " " * (len("STATUS") + 2 + check_width + 2)
    lines += ["", f"{'STATUS':<6}  {'CHECK':<{check_width}}  REASON / FIX"]
    for result in report.results:
        reason = textwrap.wrap(
            result.reason,
            max(40, width - len(indent)),
            break_long_words=False,
            break_on_hyphens=False,
        ) or [""]
        lines.append(f"{result.status.upper():<6}  {result.check:<{check_width}}  {reason[0]}")
        lines += [indent + line for line in reason[1:]]
        lines += [f"{indent}fix: {fix}" for fix in result.fixes]
    counts = report.counts()
    lines += ["", ", ".join(f"{counts[str(status)]} {status}" for status in _STATUS_ORDER)]
    return "\n".join(lines) + "\n"


def render_json(report: AuditReport) -> str:
    return json.dumps(report.to_dict(), indent=2) + "\n"


def _version_argument(text: str) -> PostfixVersion:
    try:
        return PostfixVersion.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``tlslogd audit``."""
    source = parser.add_mutually_exclusive_group()
    source.add_argument(
        "--config-dir",
        metavar="DIR",
        default=DEFAULT_CONFIG_DIR,
        help="Postfix configuration directory with main.cf and master.cf (default: %(default)s)",
    )
    source.add_argument(
        "--stdin",
        action="store_true",
        help="read the output of 'postconf -n', 'postconf -M' and/or 'postconf -P' from stdin",
    )
    source.add_argument("input", nargs="?", choices=["-"], help="'-' is the same as --stdin")
    parser.add_argument(
        "--postfix-version",
        metavar="X.Y[.Z]",
        type=_version_argument,
        help="judge defaults as of this Postfix version (default: mail_version in the input,"
        " else the installed postconf, else the current stable release)",
    )
    parser.add_argument(
        "--format",
        choices=("table", "json"),
        default="table",
        help="output format (default: %(default)s)",
    )


def run(args: argparse.Namespace, stdin: TextIO, stdout: TextIO) -> int:
    """Run ``tlslogd audit``: 0 when no check fails, 1 when one does, 2 when the input cannot be
    read (the reason goes to stderr)."""
    try:
        if args.stdin or args.input == "-":
            report = audit_postconf_text(stdin.read(), args.postfix_version)
        else:
            report = audit_config_dir(args.config_dir, args.postfix_version)
    except (AuditInputError, OSError, UnicodeDecodeError) as exc:
        print(f"tlslogd audit: {exc}", file=sys.stderr)
        return 2
    stdout.write(render_json(report) if args.format == "json" else render_table(report))
    return 1 if report.failed else 0
