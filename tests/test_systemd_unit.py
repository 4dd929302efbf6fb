"""The shipped systemd unit, user and tmpfiles fragments, checked with systemd's own tools."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SYSTEMD_DIR = Path(__file__).resolve().parent.parent / "systemd"
UNIT = SYSTEMD_DIR / "tlslogd.service"
DROP_IN = SYSTEMD_DIR / "tlslogd-prometheus-access.conf"
SYSUSERS = SYSTEMD_DIR / "tlslogd.sysusers"
TMPFILES = SYSTEMD_DIR / "tlslogd.tmpfiles"
MAX_EXPOSURE = 1.5


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is not installed (Debian package systemd)")
    return path


def _run(*args: str | Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "LC_ALL": "C.UTF-8", "SYSTEMD_COLORS": "0", "SYSTEMD_PAGER": "cat"}
    return subprocess.run(
        [str(a) for a in args], capture_output=True, text=True, env=env, timeout=120
    )


def _settings(unit: Path) -> dict[str, list[str]]:
    """Every ``Key=value`` assignment of a unit file, in order (keys may repeat)."""
    settings: dict[str, list[str]] = {}
    for line in unit.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";", "[")):
            continue
        key, _, value = line.partition("=")
        settings.setdefault(key.strip(), []).append(value.strip())
    return settings


def _installed_copy(tmp_path: Path, *, with_drop_in: bool) -> Path:
    """The unit as an admin installs it, with ExecStart pointing at a binary that exists here
    (verify checks that it does), and optionally the Prometheus access drop-in beside it."""
    unit = tmp_path / "tlslogd.service"
    unit.write_text(UNIT.read_text().replace("/usr/local/bin/tlslogd", sys.executable))
    if with_drop_in:
        drop_ins = tmp_path / "tlslogd.service.d"
        drop_ins.mkdir()
        shutil.copy(DROP_IN, drop_ins / "prometheus-access.conf")
    return unit


def _exposure(unit: Path) -> float:
    analyze = _tool("systemd-analyze")
    result = _run(analyze, "security", "--offline=true", "--no-pager", unit)
    match = re.search(r"Overall exposure level for tlslogd\.service: (\d+\.\d+)", result.stdout)
    assert match, f"no overall exposure in:\n{result.stdout}\n{result.stderr}"
    return float(match[1])


def _verify_findings(unit: Path) -> list[str]:
    analyze = _tool("systemd-analyze")
    result = _run(analyze, "verify", "--man=no", unit)
    assert result.returncode == 0, result.stderr
    output = (result.stdout + result.stderr).splitlines()
    return [line for line in output if "tlslogd" in line or str(unit.parent) in line]


def test_security_exposure_is_at_most_1_5() -> None:
    assert _exposure(UNIT) <= MAX_EXPOSURE


def test_security_exposure_with_the_prometheus_drop_in(tmp_path: Path) -> None:
    assert _exposure(_installed_copy(tmp_path, with_drop_in=True)) <= MAX_EXPOSURE


def test_verify_is_clean(tmp_path: Path) -> None:
    unit = _installed_copy(tmp_path, with_drop_in=True)
    assert _verify_findings(unit) == []


def test_verify_would_report_a_mistake(tmp_path: Path) -> None:
    unit = _installed_copy(tmp_path, with_drop_in=False)
    unit.write_text(unit.read_text().replace("ProtectHome=yes", "ProtectHome=yes\nProtectHom=yes"))
    findings = _verify_findings(unit)
    assert any("ProtectHom" in line for line in findings), findings


def test_the_service_is_a_watched_notify_service_with_log_access() -> None:
    settings = _settings(UNIT)
    assert settings["Type"] == ["notify"]
    assert settings["NotifyAccess"] == ["main"]
    assert settings["WatchdogSec"] and settings["WatchdogSec"] != ["0"]
    assert settings["Restart"] == ["on-failure"]
    assert settings["StateDirectory"] == ["tlslogd"]
    assert settings["ExecStart"][0].split()[:2] == ["/usr/local/bin/tlslogd", "run"]
    assert "-HUP" in settings["ExecReload"][0].split()
    assert set(settings["SupplementaryGroups"][0].split()) == {"adm", "systemd-journal"}
    # Supplementary groups are not mapped into a user namespace: the log would be unreadable.
    assert settings.get("PrivateUsers", ["no"]) == ["no"]
    assert settings["IPAddressDeny"] == ["any"]
    assert settings["IPAddressAllow"] == ["localhost"]


def test_sysusers_creates_the_service_user(tmp_path: Path) -> None:
    sysusers = _tool("systemd-sysusers")
    (tmp_path / "etc").mkdir()
    result = _run(sysusers, f"--root={tmp_path}", SYSUSERS)
    assert result.returncode == 0, result.stderr
    users = {line.split(":")[0]: line.split(":") for line in (tmp_path / "etc/passwd").open()}
    user = _settings(UNIT)["User"][0]
    assert user in users
    assert users[user][5:] == ["/var/lib/tlslogd", "/usr/sbin/nologin\n"]


@pytest.mark.skipif(os.geteuid() != 0, reason="systemd-tmpfiles needs root to chown")
def test_tmpfiles_creates_a_config_directory_the_service_can_read(tmp_path: Path) -> None:
    sysusers = _tool("systemd-sysusers")
    tmpfiles = _tool("systemd-tmpfiles")
    (tmp_path / "etc").mkdir()
    assert _run(sysusers, f"--root={tmp_path}", SYSUSERS).returncode == 0
    result = _run(tmpfiles, f"--root={tmp_path}", "--create", TMPFILES)
    assert result.returncode == 0, result.stderr
    groups = {
        line.split(":")[0]: int(line.split(":")[2]) for line in (tmp_path / "etc/group").open()
    }
    config_dir = (tmp_path / "etc/tlslogd").stat()
    assert oct(config_dir.st_mode & 0o7777) == "0o750"
    assert config_dir.st_uid == 0
    assert config_dir.st_gid == groups["tlslogd"]
