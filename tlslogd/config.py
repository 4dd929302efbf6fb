"""Configuration: command-line flags > environment (``TLSLOGD_*``) > TOML file > defaults.

Validated by pydantic-settings; an invalid value stops start-up with one message naming the key,
where it came from, the value and what was expected. ``tlslogd check-config`` prints the
effective configuration. ``data/tlslogd.example.toml`` (shipped in the package) documents every
key.
"""

from __future__ import annotations

import ipaddress
import json
import os
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal, cast

from pydantic import Field, ValidationError, ValidationInfo, field_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from tlslogd.errors import ConfigError

DEFAULT_CONFIG = Path("/etc/tlslogd/tlslogd.toml")
ENV_PREFIX = "TLSLOGD_"


def split_listen(value: str) -> tuple[str, int]:
    """``HOST:PORT`` or ``[IPV6]:PORT`` -> (host, port)."""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise ValueError("expected HOST:PORT, e.g. 127.0.0.1:10154 or [::1]:10154")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ValueError("put an IPv6 address in brackets: [::1]:10154")
    number = int(port)
    if not 0 < number < 65536:
        raise ValueError("the port must be between 1 and 65535")
    return host, number


class Settings(BaseSettings):
    """Every key of tlslogd's configuration (see tlslogd.example.toml for what each does)."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        extra="forbid",
        frozen=True,
        validate_default=True,
        allow_inf_nan=False,
    )

    log: str = Field(
        default="/var/log/mail.log", description="the maillog to follow, or 'journald'"
    )
    listen: str = Field(default="127.0.0.1:10154", description="HOST:PORT of the HTTP endpoint")
    state_dir: Path = Field(
        default=Path("/var/lib/tlslogd"), description="where the state database lives"
    )
    from_start: bool = Field(
        default=False, description="with no saved position, read an existing log from its beginning"
    )
    web_config: Path | None = Field(
        default=None,
        description="exporter-toolkit web-config.yml: TLS and basic auth for the endpoint",
    )
    poll_interval: float = Field(
        default=2.0, gt=0, le=60, description="seconds between safety-net polls"
    )
    checkpoint_interval: float = Field(
        default=1.0, gt=0, le=300, description="seconds between durable checkpoints"
    )
    batch_bytes: int = Field(
        default=128 << 10,
        ge=4096,
        le=64 << 20,
        description="at most this many bytes per processing turn",
    )
    local_networks: Annotated[list[str], NoDecode] = Field(
        default=["127.0.0.0/8", "::1/128"],
        description="relays in these networks (and UNIX sockets) are local: content filters, LMTP",
    )
    label_cap: int = Field(
        default=64, ge=1, le=10_000, description="distinct values per metric label"
    )
    top_peers: int = Field(default=20, ge=0, le=1000, description="peers per category on /metrics")
    max_peers: int = Field(default=10_000, ge=10, le=10_000_000, description="peer table size")
    max_sessions: int = Field(
        default=10_000, ge=10, le=10_000_000, description="session table size"
    )
    session_ttl: float = Field(
        default=3600.0,
        ge=60,
        le=7 * 86400,
        description="seconds of log time a session may stay open",
    )
    journal_units: Annotated[list[str], NoDecode] = Field(
        default=["postfix.service", "postfix@*.service"],
        description="systemd units to follow (journald)",
    )
    journal_identifiers: Annotated[list[str], NoDecode] = Field(
        default=[],
        description="syslog identifiers to follow (journald); with units, both must match",
    )
    journal_directory: Path | None = Field(
        default=None,
        description="journal files to read instead of the system journal (journald)",
    )
    advise_window_days: int = Field(
        default=30, ge=1, le=90, description="days of evidence for the policy candidates gauge"
    )
    advise_min_deliveries: int = Field(
        default=20, ge=1, description="deliveries a destination needs before enforcement"
    )
    advise_min_days: int = Field(
        default=7, ge=1, le=90, description="days with deliveries needed before enforcement"
    )
    audit_config_dir: Path | None = Field(
        default=None, description="Postfix config dir to audit and export as tlslogd_config_check"
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        default="info", description="tlslogd's own log level"
    )

    @field_validator("log", "state_dir", mode="before")
    @classmethod
    def _not_empty(cls, value: Any, info: ValidationInfo) -> Any:
        if isinstance(value, str) and not value.strip():
            expected = "a log file or 'journald'" if info.field_name == "log" else "a directory"
            raise ValueError(f"empty; expected the path of {expected}")
        return value

    @field_validator(
        "poll_interval",
        "checkpoint_interval",
        "batch_bytes",
        "label_cap",
        "top_peers",
        "max_peers",
        "max_sessions",
        "session_ttl",
        "advise_window_days",
        "advise_min_deliveries",
        "advise_min_days",
        mode="before",
    )
    @classmethod
    def _number(cls, value: Any) -> Any:
        if isinstance(value, bool):  # TOML's true would otherwise be taken as 1
            raise ValueError("expected a number, not true or false")
        return value

    @field_validator("listen")
    @classmethod
    def _listen(cls, value: str) -> str:
        split_listen(value)
        return value

    @field_validator("local_networks", "journal_units", "journal_identifiers", mode="before")
    @classmethod
    def _list(cls, value: Any) -> Any:
        """A list from the environment: JSON (``'["a", "b"]'``) or comma-separated (``a,b``),
        like the command line's --local-networks."""
        if not isinstance(value, str):
            return value
        text = value.strip()
        if text.startswith("["):
            try:
                return json.loads(text)
            except json.JSONDecodeError as exc:
                raise ValueError(f"not a JSON list ({exc})") from None
        return [item.strip() for item in text.split(",") if item.strip()]

    @field_validator("local_networks")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        for item in value:
            try:
                ipaddress.ip_network(item, strict=False)
            except ValueError as exc:
                raise ValueError(f"{item!r} is not a network like 127.0.0.0/8 or ::1/128") from exc
        return value

    @field_validator("journal_directory")
    @classmethod
    def _journal_directory(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_absolute():
            raise ValueError("expected an absolute path, e.g. /var/log/journal/remote")
        return value

    @property
    def host_port(self) -> tuple[str, int]:
        return split_listen(self.listen)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: tuple[PydanticBaseSettingsSource, ...] = (init_settings, env_settings)
        toml_file = settings_cls.model_config.get("toml_file")
        if toml_file:
            sources += (TomlConfigSettingsSource(settings_cls, toml_file=toml_file),)
        return sources


def _origin(key: str, flags: dict[str, Any], config_file: Path | None) -> str:
    if key in flags:
        return "--" + key.replace("_", "-")
    if ENV_PREFIX + key.upper() in os.environ:
        return f"environment variable {ENV_PREFIX}{key.upper()}"
    if config_file is not None:
        return f"{config_file}"
    return "defaults"


def unknown_environment() -> list[str]:
    """``TLSLOGD_*`` variables that name no setting: a typo, most likely, which would otherwise
    go unnoticed (they are not refused: container platforms set ``TLSLOGD_PORT`` and the like
    for a service of that name)."""
    return sorted(
        name
        for name in os.environ
        if name.upper().startswith(ENV_PREFIX)
        and name[len(ENV_PREFIX) :].lower() not in Settings.model_fields
    )


def load_settings(config: Path | None = None, flags: dict[str, Any] | None = None) -> Settings:
    """Settings from flags (only those given), the environment and the TOML file.

    ``config`` None means the default file when it exists. Raises :class:`ConfigError`."""
    flags = {k: v for k, v in (flags or {}).items() if v is not None}
    config_file = config
    if config_file is None and DEFAULT_CONFIG.exists():
        config_file = DEFAULT_CONFIG
    if config_file is not None:
        if config_file.is_dir():
            raise ConfigError(f"config file {config_file}: a directory, expected a TOML file")
        if not config_file.is_file():
            raise ConfigError(f"config file {config_file}: no such file")
        try:
            with config_file.open("rb") as f:
                tomllib.load(f)
        except UnicodeDecodeError as exc:
            raise ConfigError(
                f"config file {config_file}: not UTF-8 (byte 0x{exc.object[exc.start]:02x} at "
                f"offset {exc.start}); TOML files are UTF-8"
            ) from exc
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"config file {config_file}: {exc}") from exc
    model: type[Settings] = Settings
    if config_file is not None:
        file_config = SettingsConfigDict(**{**Settings.model_config, "toml_file": config_file})
        model = cast(
            type[Settings], type("FileSettings", (Settings,), {"model_config": file_config})
        )
    try:
        return model(**flags)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            key = ".".join(str(p) for p in err["loc"]) or "?"
            top = str(err["loc"][0]) if err["loc"] else key
            where = _origin(top, flags, config_file)
            if err["type"] == "extra_forbidden":
                problems.append(f"unknown key {key!r} in {where}")
            else:
                value = err.get("input")
                message = err["msg"].removeprefix("Value error, ")
                problems.append(f"{key} = {value!r} (from {where}): {message}")
        raise ConfigError("invalid configuration: " + "; ".join(problems)) from None


def effective(settings: Settings) -> dict[str, Any]:
    """The configuration as TOML-friendly data (``check-config``)."""
    data = settings.model_dump(mode="json")
    return {k: v for k, v in data.items() if v is not None}
