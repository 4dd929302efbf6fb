"""Configuration: precedence, validation messages, and the shipped example."""

from __future__ import annotations

import socket
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from tlslogd.config import Settings, load_settings, split_listen
from tlslogd.errors import ConfigError

EXAMPLE = Path(__file__).parent.parent / "tlslogd" / "data" / "tlslogd.example.toml"


def test_the_example_documents_every_key_and_loads_to_the_defaults() -> None:
    text = EXAMPLE.read_text()
    for key in Settings.model_fields:
        assert f"\n{key} = " in text or f"\n# {key} = " in text, f"{key} is not documented"
    assert load_settings(EXAMPLE, {}).model_dump() == Settings().model_dump()
    assert set(tomllib.loads(text)) <= set(Settings.model_fields)


def test_flags_beat_environment_beat_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "t.toml"
    config.write_text('listen = "127.0.0.1:1"\nlabel_cap = 7\ntop_peers = 3\n')
    monkeypatch.setenv("TLSLOGD_LABEL_CAP", "9")
    monkeypatch.setenv("TLSLOGD_TOP_PEERS", "5")
    s = load_settings(config, {"top_peers": 11, "listen": None})
    assert (s.listen, s.label_cap, s.top_peers) == ("127.0.0.1:1", 9, 11)


def test_invalid_values_name_key_source_value_and_expectation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TLSLOGD_LOCAL_NETWORKS", '["10.0.0.0/33"]')
    with pytest.raises(ConfigError) as err:
        load_settings(None, {"listen": "localhost"})
    message = str(err.value)
    assert "listen = 'localhost' (from --listen)" in message and "HOST:PORT" in message
    assert "local_networks" in message and "TLSLOGD_LOCAL_NETWORKS" in message
    assert "10.0.0.0/33" in message


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("TLSLOGD_LOG", "", "log = '' (from environment variable TLSLOGD_LOG): empty; expected"),
        ("TLSLOGD_STATE_DIR", " ", "state_dir = ' ' (from environment variable"),
        ("TLSLOGD_SESSION_TTL", "nan", "session_ttl = 'nan' (from environment variable"),
        ("TLSLOGD_POLL_INTERVAL", "inf", "finite number"),
    ],
)
def test_empty_paths_and_numbers_that_are_not_numbers_are_refused(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, expected: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError, match=expected.replace("(", r"\(").replace(")", r"\)")):
        load_settings(None, {})


def test_a_toml_boolean_is_not_taken_for_a_number(tmp_path: Path) -> None:
    config = tmp_path / "t.toml"
    config.write_text("label_cap = true\n")
    with pytest.raises(ConfigError) as err:
        load_settings(config, {})
    assert f"label_cap = True (from {config}): expected a number, not true or false" in str(
        err.value
    )


def test_a_validators_message_is_the_users_not_pydantics() -> None:
    with pytest.raises(ConfigError) as err:
        load_settings(None, {"listen": "127.0.0.1:99999"})
    assert str(err.value).endswith("(from --listen): the port must be between 1 and 65535")


def test_a_config_file_that_is_not_utf8_or_not_a_file_is_named(tmp_path: Path) -> None:
    config = tmp_path / "t.toml"
    config.write_bytes(b'log = "\xff"\n')
    with pytest.raises(ConfigError, match=r"t\.toml: not UTF-8 \(byte 0xff at offset 7\)"):
        load_settings(config, {})
    with pytest.raises(ConfigError, match="a directory, expected a TOML file"):
        load_settings(tmp_path, {})


def test_a_misspelt_environment_variable_is_named_in_a_warning_not_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # not refused: Kubernetes sets TLSLOGD_PORT and the like for a Service named tlslogd
    monkeypatch.setenv("TLSLOGD_LISTN", "0.0.0.0:10154")
    monkeypatch.setenv("TLSLOGD_SERVICE_HOST", "10.0.0.7")
    monkeypatch.setenv("tlslogd_label_cap", "9")  # pydantic reads either case: a setting
    assert load_settings(None, {}).label_cap == 9
    result = subprocess.run(
        [sys.executable, "-m", "tlslogd", "check-config"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0
    assert "warning: ignoring TLSLOGD_LISTN, TLSLOGD_SERVICE_HOST: no such setting" in (
        result.stderr
    )
    assert "TLSLOGD_LISTEN" in result.stderr


def test_the_demo_names_a_misspelt_environment_variable_too(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TLSLOGD_LISTN", "0.0.0.0:10154")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "tlslogd", "demo", "--listen", f"127.0.0.1:{port}"],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None
        first = proc.stderr.readline()
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        assert proc.stderr is not None
        proc.stderr.close()
    assert "warning: ignoring TLSLOGD_LISTN: no such setting" in first


@pytest.mark.parametrize(
    ("value", "want"),
    [
        ("127.0.0.0/8", ["127.0.0.0/8"]),
        ("127.0.0.0/8, ::1/128", ["127.0.0.0/8", "::1/128"]),  # as --local-networks takes it
        ('["10.0.0.0/8", "::1/128"]', ["10.0.0.0/8", "::1/128"]),
        ("", []),
    ],
)
def test_list_settings_from_the_environment_as_json_or_comma_separated(
    monkeypatch: pytest.MonkeyPatch, value: str, want: list[str]
) -> None:
    monkeypatch.setenv("TLSLOGD_LOCAL_NETWORKS", value)
    assert load_settings(None, {}).local_networks == want


def test_a_list_setting_that_is_broken_json_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TLSLOGD_JOURNAL_UNITS", '["postfix.service"')
    with pytest.raises(
        ConfigError, match=r"journal_units .*TLSLOGD_JOURNAL_UNITS.*not a JSON list"
    ):
        load_settings(None, {})


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("127.0.0.1:10154", ("127.0.0.1", 10154)),
        ("[::1]:80", ("::1", 80)),
        ("0.0.0.0:1", ("0.0.0.0", 1)),
    ],
)
def test_listen_addresses(text: str, want: tuple[str, int]) -> None:
    assert split_listen(text) == want


@pytest.mark.parametrize("text", ["::1:80", "host", "127.0.0.1:0", "127.0.0.1:99999", ":80"])
def test_bad_listen_addresses(text: str) -> None:
    with pytest.raises(ValueError):
        split_listen(text)
