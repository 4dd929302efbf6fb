"""``tlslogd audit`` on real Postfix configurations: what Debian installs, a hardened one, and
copies of the hardened one that each break one rule. See tests/data/audit/README.md."""

from __future__ import annotations

import argparse
import io
import json
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from tlslogd.audit import (
    ASSUMED_VERSION,
    AuditReport,
    PostfixVersion,
    Status,
    add_arguments,
    audit_config_dir,
    audit_postconf_text,
    enabled_protocols,
    parse_main_cf,
    parse_master_cf,
    run,
    weak_cipher_families,
)

DATA = Path(__file__).parent / "data" / "audit"
DEBIAN_DEFAULT = DATA / "debian-default"
HARDENED = DATA / "hardened"
# Debian 12's Postfix. Auditing against a fixed version keeps the expectations independent of the
# Postfix installed (or not) where the tests run.
DEBIAN_12 = "3.7.11"
SNAKEOIL_CERT = Path("/etc/ssl/certs/ssl-cert-snakeoil.pem")
CHAIN_FILE = "tls/mail.example.org.pem"
CHECKS = [
    "smtpd_tls_cert",
    "smtpd_tls_security_level",
    "smtp_tls_security_level",
    "smtpd_tls_loglevel",
    "smtp_tls_loglevel",
    "smtp_tls_note_starttls_offer",
    "smtpd_tls_protocols",
    "smtpd_tls_mandatory_protocols",
    "smtp_tls_protocols",
    "smtp_tls_mandatory_protocols",
    "smtpd_tls_ciphers",
    "smtpd_tls_mandatory_ciphers",
    "smtp_tls_ciphers",
    "smtp_tls_mandatory_ciphers",
    "tls_ssl_options",
    "smtpd_tls_dh1024_param_file",
    "tls_preempt_cipherlist",
    "smtpd_tls_received_header",
    "submission",
    "submissions",
]
PASS, WARN, FAIL = Status.PASS, Status.WARN, Status.FAIL

needs_postconf = pytest.mark.skipif(
    shutil.which("postconf") is None, reason="postconf is missing (Debian package postfix)"
)


def statuses(report: AuditReport) -> dict[str, Status]:
    return {result.check: result.status for result in report.results}


def not_passing(report: AuditReport) -> dict[str, Status]:
    return {check: status for check, status in statuses(report).items() if status is not PASS}


def postconf(confdir: Path, *options: str) -> str:
    done = subprocess.run(
        ["postconf", "-c", str(confdir), *options], capture_output=True, text=True, check=True
    )
    return done.stdout


def audit_command(*argv: str, stdin: str = "") -> tuple[int, str]:
    parser = argparse.ArgumentParser(prog="tlslogd audit")
    add_arguments(parser)
    out = io.StringIO()
    code = run(parser.parse_args(argv), io.StringIO(stdin), out)
    return code, out.getvalue()


@pytest.fixture(scope="session")
def server_pem(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A throw-away private key followed by its self-signed certificate, made by openssl."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is missing (Debian package openssl)")
    work = tmp_path_factory.mktemp("pki")
    request = "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2"
    files = ["-keyout", str(work / "key.pem"), "-out", str(work / "cert.pem")]
    subprocess.run(
        [*request.split(), "-subj", "/CN=mail.example.org", *files],
        capture_output=True,
        check=True,
    )
    return (work / "key.pem").read_text() + (work / "cert.pem").read_text()


@pytest.fixture
def hardened(tmp_path: Path, server_pem: str) -> Path:
    """A copy of the hardened configuration directory, with its key and certificate file."""
    confdir = tmp_path / "postfix"
    shutil.copytree(HARDENED, confdir)
    (confdir / "tls").mkdir()
    (confdir / CHAIN_FILE).write_text(server_pem)
    return confdir


# --------------------------------------------------------------------------------------------
# Changes that break one rule of the hardened configuration

Change = Callable[[Path], None]


def main_cf(**settings: str) -> Change:
    """Append main.cf lines: like ``postconf -e``, the last setting of a parameter wins."""

    def change(confdir: Path) -> None:
        with (confdir / "main.cf").open("a") as main:
            main.writelines(f"{name} = {value}\n" for name, value in settings.items())

    return change


def master_cf(old: str, new: str) -> Change:
    def change(confdir: Path) -> None:
        text = (confdir / "master.cf").read_text()
        assert text.count(old) == 1, old
        (confdir / "master.cf").write_text(text.replace(old, new))

    return change


def remove_chain_file(confdir: Path) -> None:
    (confdir / CHAIN_FILE).unlink()


def certificate_before_key(confdir: Path) -> None:
    key, _, cert = (confdir / CHAIN_FILE).read_text().partition("-----BEGIN CERTIFICATE-----")
    (confdir / CHAIN_FILE).write_text("-----BEGIN CERTIFICATE-----" + cert + key)


SMTP_INET = "smtp      inet  n       -       y       -       -       smtpd\n"
RELAY_OVERRIDE = "        -o syslog_name=postfix/$service_name\n"
CLIENT_EXCLUDES = (
    "eNULL, EXPORT, DES, RC4, MD5, PSK, EDH-DSS-DES-CBC3-SHA, EDH-RSA-DES-CBC3-SHA, KRB5-DES,"
    " CBC3-SHA"
)
BREAKS = [
    pytest.param(
        "smtpd_tls_cert",
        main_cf(smtpd_tls_chain_files=""),
        FAIL,
        "smtpd_tls_chain_files = ${config_directory}/tls/server-key-and-chain.pem",
        id="no-certificate",
    ),
    pytest.param("smtpd_tls_cert", remove_chain_file, FAIL, "", id="certificate-file-missing"),
    pytest.param("smtpd_tls_cert", certificate_before_key, FAIL, "", id="key-after-certificate"),
    pytest.param(
        "smtpd_tls_security_level",
        main_cf(smtpd_tls_security_level="none"),
        FAIL,
        "smtpd_tls_security_level = may",
        id="inbound-plaintext",
    ),
    pytest.param(
        "smtpd_tls_security_level",
        main_cf(smtpd_tls_security_level="encrypt"),
        FAIL,
        "smtpd_tls_security_level = may",
        id="port-25-requires-tls",
    ),
    pytest.param(
        "smtpd_tls_security_level",
        master_cf(SMTP_INET, SMTP_INET + "  -o smtpd_tls_security_level=encrypt\n"),
        FAIL,
        "smtp/inet: -o smtpd_tls_security_level=may",
        id="port-25-requires-tls-in-master.cf",
    ),
    pytest.param(
        "smtpd_tls_security_level",
        main_cf(smtpd_tls_security_level="", smtpd_enforce_tls="yes"),
        FAIL,
        "smtpd_tls_security_level = may",
        id="port-25-requires-tls-legacy-spelling",
    ),
    pytest.param(
        "smtp_tls_security_level",
        main_cf(smtp_tls_security_level="none"),
        FAIL,
        "smtp_tls_security_level = may",
        id="outbound-plaintext",
    ),
    pytest.param(
        "smtp_tls_security_level",
        master_cf(RELAY_OVERRIDE, RELAY_OVERRIDE + "        -o smtp_tls_security_level=none\n"),
        FAIL,
        "relay/unix: -o smtp_tls_security_level=may",
        id="relay-transport-plaintext",
    ),
    pytest.param(
        "smtp_tls_security_level",
        main_cf(smtp_tls_security_level="", smtp_use_tls="yes"),
        WARN,
        "smtp_tls_security_level = may",
        id="outbound-legacy-spelling",
    ),
    pytest.param(
        "smtpd_tls_loglevel",
        main_cf(smtpd_tls_loglevel="0"),
        FAIL,
        "smtpd_tls_loglevel = 1",
        id="inbound-handshakes-not-logged",
    ),
    pytest.param(
        "smtpd_tls_loglevel",
        main_cf(smtpd_tls_loglevel="3"),
        WARN,
        "smtpd_tls_loglevel = 1",
        id="inbound-debug-logging",
    ),
    pytest.param(
        "smtp_tls_loglevel",
        main_cf(smtp_tls_loglevel="0"),
        FAIL,
        "smtp_tls_loglevel = 1",
        id="outbound-handshakes-not-logged",
    ),
    pytest.param(
        "smtp_tls_note_starttls_offer",
        main_cf(smtp_tls_note_starttls_offer="no"),
        FAIL,
        "smtp_tls_note_starttls_offer = yes",
        id="starttls-offers-not-logged",
    ),
    pytest.param(
        "smtpd_tls_protocols",
        main_cf(smtpd_tls_protocols="!SSLv2, !SSLv3"),
        WARN,
        "smtpd_tls_protocols = >=TLSv1.2",
        id="inbound-tls-1.0",
    ),
    pytest.param(
        "smtpd_tls_mandatory_protocols",
        main_cf(smtpd_tls_mandatory_protocols="!SSLv2"),
        FAIL,
        "smtpd_tls_mandatory_protocols = >=TLSv1.2",
        id="inbound-sslv3",
    ),
    pytest.param(
        "smtp_tls_protocols",
        main_cf(smtp_tls_protocols=">=TLSv1"),
        WARN,
        "smtp_tls_protocols = >=TLSv1.2",
        id="outbound-tls-1.0",
    ),
    pytest.param(
        "smtp_tls_mandatory_protocols",
        main_cf(smtp_tls_mandatory_protocols="!SSLv2:!SSLv3:!TLSv1"),
        WARN,
        "smtp_tls_mandatory_protocols = >=TLSv1.2",
        id="outbound-tls-1.1",
    ),
    pytest.param(
        "smtpd_tls_ciphers",
        main_cf(smtpd_tls_ciphers="export"),
        WARN,
        "smtpd_tls_ciphers = medium",
        id="inbound-export-grade",
    ),
    pytest.param(
        "smtpd_tls_mandatory_ciphers",
        main_cf(smtpd_tls_mandatory_ciphers="low"),
        WARN,
        "smtpd_tls_mandatory_ciphers = medium",
        id="inbound-low-grade",
    ),
    pytest.param(
        "smtp_tls_ciphers",
        main_cf(smtp_tls_ciphers="null"),
        WARN,
        "smtp_tls_ciphers = medium",
        id="outbound-null-grade",
    ),
    pytest.param(
        "smtp_tls_mandatory_ciphers",
        main_cf(smtp_tls_mandatory_ciphers="strong"),
        FAIL,
        "smtp_tls_mandatory_ciphers = medium",
        id="outbound-invalid-grade",
    ),
    pytest.param(
        # the server excludes RC4, so only the (medium-grade) opportunistic client is hit
        "smtp_tls_ciphers",
        main_cf(tls_medium_cipherlist="aNULL:-aNULL:HIGH:MEDIUM:RC4:@STRENGTH"),
        WARN,
        f"smtp_tls_exclude_ciphers = {CLIENT_EXCLUDES}",
        id="medium-cipherlist-with-rc4",
    ),
    pytest.param(
        "tls_ssl_options",
        main_cf(tls_ssl_options="NO_COMPRESSION"),
        WARN,
        "tls_ssl_options = NO_COMPRESSION, NO_RENEGOTIATION",
        id="renegotiation-allowed",
    ),
    pytest.param(
        "smtpd_tls_dh1024_param_file",
        main_cf(smtpd_tls_dh1024_param_file="${config_directory}/dh2048.pem"),
        WARN,
        "smtpd_tls_dh1024_param_file = auto",
        id="dh-parameter-file-missing",
    ),
    pytest.param(
        "tls_preempt_cipherlist",
        main_cf(tls_preempt_cipherlist="no"),
        WARN,
        "tls_preempt_cipherlist = yes",
        id="client-cipher-order",
    ),
    pytest.param(
        "submission",
        master_cf("  -o smtpd_tls_security_level=encrypt\n", ""),
        FAIL,
        "submission/inet: -o smtpd_tls_security_level=encrypt",
        id="submission-tls-optional",
    ),
    pytest.param(
        "submission",
        master_cf("  -o smtpd_tls_auth_only=yes\n", ""),
        WARN,
        "submission/inet: -o smtpd_tls_auth_only=yes",
        id="submission-auth-only-implicit",
    ),
    pytest.param(
        "submission",
        master_cf(
            "  -o smtpd_tls_security_level=encrypt\n  -o smtpd_sasl_auth_enable=yes\n"
            "  -o smtpd_tls_auth_only=yes\n",
            "  -o smtpd_tls_security_level=may\n  -o smtpd_sasl_auth_enable=yes\n",
        ),
        FAIL,
        "submission/inet: -o smtpd_tls_security_level=encrypt\n"
        "submission/inet: -o smtpd_tls_auth_only=yes",
        id="submission-passwords-in-plaintext",
    ),
    pytest.param(
        "submissions",
        master_cf("  -o smtpd_tls_wrappermode=yes\n", ""),
        FAIL,
        "submissions/inet: -o smtpd_tls_wrappermode=yes",
        id="submissions-without-implicit-tls",
    ),
]


# --------------------------------------------------------------------------------------------
# Debian's default configuration


def test_debian_default_findings() -> None:
    report = audit_config_dir(DEBIAN_DEFAULT, DEBIAN_12)
    found = statuses(report)
    assert list(found) == CHECKS
    assert report.failed
    assert report.version == PostfixVersion(3, 7, 11)
    assert report.version_source == "requested"

    # tlslogd's own needs: none of the logging is on by default
    assert found["smtpd_tls_loglevel"] is FAIL
    assert "inbound protocol/cipher census is blank" in report.result("smtpd_tls_loglevel").reason
    assert "starttls=' counters still works" in report.result("smtpd_tls_loglevel").reason
    assert report.result("smtpd_tls_loglevel").fix == "smtpd_tls_loglevel = 1"
    assert found["smtp_tls_loglevel"] is FAIL
    assert "cannot tell a TLS delivery from a" in report.result("smtp_tls_loglevel").reason
    assert report.result("smtp_tls_loglevel").fix == "smtp_tls_loglevel = 1"
    assert found["smtp_tls_note_starttls_offer"] is FAIL
    offer = report.result("smtp_tls_note_starttls_offer")
    assert "offered-plaintext alert and the peer list are blank" in offer.reason
    assert offer.fix == "smtp_tls_note_starttls_offer = yes"

    # Debian's main.cf.tls turns opportunistic TLS on in both directions
    assert found["smtpd_tls_security_level"] is PASS
    assert found["smtp_tls_security_level"] is PASS

    # the 3.6+ default ">=TLSv1" still allows TLS 1.0 and 1.1
    for param in (
        "smtpd_tls_protocols",
        "smtpd_tls_mandatory_protocols",
        "smtp_tls_protocols",
        "smtp_tls_mandatory_protocols",
    ):
        assert found[param] is WARN
        assert "default: '>=TLSv1'" in report.result(param).reason
        assert "TLSv1, TLSv1.1" in report.result(param).reason
        assert report.result(param).fix == f"{param} = >=TLSv1.2"

    # cipher grades default to medium: fine
    for param in ("smtpd_tls_ciphers", "smtp_tls_ciphers", "smtp_tls_mandatory_ciphers"):
        assert found[param] is PASS
    assert found["tls_ssl_options"] is WARN
    assert report.result("tls_ssl_options").fix == "tls_ssl_options = NO_RENEGOTIATION"
    assert found["smtpd_tls_dh1024_param_file"] is PASS  # 3.7: FFDHE groups, no file needed
    assert found["tls_preempt_cipherlist"] is WARN
    assert found["smtpd_tls_received_header"] is PASS  # informational
    assert "informational" in report.result("smtpd_tls_received_header").reason
    # master.cf.dist ships submission and submissions commented out
    assert found["submission"] is PASS
    assert "no submission service" in report.result("submission").reason
    assert found["submissions"] is PASS

    cert = report.result("smtpd_tls_cert")
    assert "smtpd_tls_cert_file = /etc/ssl/certs/ssl-cert-snakeoil.pem" in cert.reason
    if not SNAKEOIL_CERT.exists():
        assert cert.status is FAIL
        assert "/etc/ssl/certs/ssl-cert-snakeoil.pem does not exist" in cert.reason
        assert "/etc/ssl/private/ssl-cert-snakeoil.key does not exist" in cert.reason
    else:
        assert cert.status in (PASS, WARN)  # the key is only readable by root and ssl-cert


def test_debian_default_command_exits_1_and_prints_the_fixes() -> None:
    code, output = audit_command("--config-dir", str(DEBIAN_DEFAULT), "--postfix-version", "3.7")
    assert code == 1
    lines = output.splitlines()
    assert lines[0].startswith(f"Postfix TLS audit of {DEBIAN_DEFAULT}: Postfix 3.7.0")
    assert any(line.startswith("FAIL    smtp_tls_loglevel ") for line in lines)
    assert any(line.startswith("WARN    smtpd_tls_protocols ") for line in lines)
    assert any(line.startswith("PASS    smtpd_tls_security_level ") for line in lines)
    assert any(line.strip() == "fix: smtp_tls_loglevel = 1" for line in lines)
    assert any(line.strip() == "fix: smtpd_tls_protocols = >=TLSv1.2" for line in lines)
    # 4 failures with no snakeoil certificate; 3 where ssl-cert is installed
    assert lines[-1] in (
        "10 pass, 6 warn, 4 fail",
        "11 pass, 6 warn, 3 fail",
        "10 pass, 7 warn, 3 fail",
    )


# --------------------------------------------------------------------------------------------
# The hardened configuration and its one-rule breakages


def test_hardened_configuration_passes_every_check(hardened: Path) -> None:
    report = audit_config_dir(hardened, DEBIAN_12)
    assert list(statuses(report)) == CHECKS
    assert not_passing(report) == {}
    assert not report.failed
    assert "private key and certificate found" in report.result("smtpd_tls_cert").reason
    assert str(hardened / CHAIN_FILE) in report.result("smtpd_tls_cert").reason
    assert "AUTH only after STARTTLS" in report.result("submission").reason
    assert "implicit TLS" in report.result("submissions").reason
    code, output = audit_command("--config-dir", str(hardened), "--postfix-version", DEBIAN_12)
    assert code == 0
    assert output.splitlines()[-1] == f"{len(CHECKS)} pass, 0 warn, 0 fail"


@pytest.mark.parametrize(("check", "change", "expected", "fix"), BREAKS)
def test_breaking_one_rule_flags_exactly_that_check(
    hardened: Path, check: str, change: Change, expected: Status, fix: str
) -> None:
    change(hardened)
    report = audit_config_dir(hardened, DEBIAN_12)
    assert not_passing(report) == {check: expected}, report.result(check).reason
    assert report.result(check).fix == fix
    assert report.failed is (expected is FAIL)


def test_fixes_applied_with_postconf_make_the_audit_pass(hardened: Path) -> None:
    """The fix lines are what an administrator would type: applying them restores a pass."""
    if shutil.which("postconf") is None:
        pytest.skip("postconf is missing (Debian package postfix)")
    for setting in ("smtpd_tls_loglevel=0", "smtp_tls_protocols=!SSLv2", "tls_ssl_options="):
        subprocess.run(["postconf", "-c", str(hardened), "-e", setting], check=True)
    master_cf("  -o smtpd_tls_auth_only=yes\n", "")(hardened)
    broken = audit_config_dir(hardened, DEBIAN_12)
    assert set(not_passing(broken)) == {
        "smtpd_tls_loglevel",
        "smtp_tls_protocols",
        "tls_ssl_options",
        "submission",
    }
    for result in broken.results:
        for fix in result.fixes:
            if fix.file == "main.cf":
                subprocess.run(["postconf", "-c", str(hardened), "-e", fix.line], check=True)
            else:
                name, _, value = fix.line.removeprefix("-o ").partition("=")
                setting = f"{fix.service}/{name}={value}"
                subprocess.run(["postconf", "-c", str(hardened), "-P", setting], check=True)
    assert not_passing(audit_config_dir(hardened, DEBIAN_12)) == {}


# --------------------------------------------------------------------------------------------
# postconf output on stdin


@needs_postconf
@pytest.mark.parametrize("source", ["hardened", "debian-default"])
def test_postconf_output_gives_the_config_dir_results(
    source: str, hardened: Path, tmp_path: Path
) -> None:
    if source == "hardened":
        confdir = hardened
    else:
        confdir = tmp_path / "debian"
        shutil.copytree(DEBIAN_DEFAULT, confdir)
    text = postconf(confdir, "-n") + postconf(confdir, "-M") + postconf(confdir, "-P")
    from_dir = audit_config_dir(confdir, DEBIAN_12)
    from_text = audit_postconf_text(text, DEBIAN_12)
    assert [r.check for r in from_text.results] == CHECKS
    for direct, piped in zip(from_dir.results, from_text.results, strict=True):
        if direct.check == "smtpd_tls_cert":
            # files named in postconf output are not inspected: it may come from another host
            assert piped.status is PASS
            assert "files not checked" in piped.reason
            continue
        assert (piped.check, piped.status, piped.fix) == (direct.check, direct.status, direct.fix)
        assert piped.reason == direct.reason
    assert any("not inspected" in note for note in from_text.notes)


@needs_postconf
def test_postconf_output_in_any_order_and_folded(hardened: Path) -> None:
    """-P lines alone carry the overrides, -Mf folds long entries, and the order is free."""
    text = postconf(hardened, "-P") + postconf(hardened, "-Mf") + postconf(hardened, "-n")
    report = audit_postconf_text(text, DEBIAN_12)
    assert not_passing(report) == {}
    master_cf("  -o smtpd_tls_wrappermode=yes\n", "")(hardened)
    only_overrides = postconf(hardened, "-n") + postconf(hardened, "-P")
    report = audit_postconf_text(only_overrides, DEBIAN_12)
    assert not_passing(report) == {"submissions": FAIL}
    assert report.result("submissions").fix == "submissions/inet: -o smtpd_tls_wrappermode=yes"
    assert any("only services with -o overrides are known" in note for note in report.notes)
    # smtp/inet has no overrides, so it is not in -P output: main.cf stands in for it
    main_cf(smtpd_tls_security_level="encrypt")(hardened)
    report = audit_postconf_text(postconf(hardened, "-n") + postconf(hardened, "-P"), DEBIAN_12)
    assert report.result("smtpd_tls_security_level").status is FAIL
    assert report.result("smtpd_tls_security_level").fix == "smtpd_tls_security_level = may"


@needs_postconf
def test_stdin_command_matches_config_dir_command(hardened: Path) -> None:
    text = postconf(hardened, "-n") + postconf(hardened, "-M")
    for argv in (["-"], ["--stdin"]):
        code, output = audit_command(
            *argv, "--postfix-version", DEBIAN_12, "--format", "json", stdin=text
        )
        assert code == 0
        piped = json.loads(output)
        assert piped["source"] == "postconf output"
        assert [r["status"] for r in piped["results"]] == ["pass"] * len(CHECKS)


def test_main_cf_alone_on_stdin_checks_what_it_can() -> None:
    """Without postconf -M output, master.cf checks say they were not done."""
    report = audit_postconf_text((HARDENED / "main.cf").read_text(), DEBIAN_12)
    assert not_passing(report) == {"submission": WARN, "submissions": WARN}
    assert "postconf -M" in report.result("submission").reason
    assert any("no master.cf services" in note for note in report.notes)


def test_unrecognised_stdin_is_an_input_error(capsys: pytest.CaptureFixture[str]) -> None:
    code, output = audit_command("-", stdin="Hello, this is not postconf output\n")
    assert (code, output) == (2, "")
    assert "line 1 is not postconf -n, -M or -P output" in capsys.readouterr().err
    code, _ = audit_command("--stdin", stdin="\n# nothing here\n")
    assert code == 2
    assert "no configuration in the input" in capsys.readouterr().err


def test_postconf_warnings_in_the_input_become_notes() -> None:
    text = "postconf: warning: /etc/postfix/main.cf: unused parameter: foo=bar\n"
    text += (HARDENED / "main.cf").read_text() + (HARDENED / "master.cf").read_text()
    report = audit_postconf_text(text, DEBIAN_12)
    assert "in the input: postconf: warning: /etc/postfix/main.cf: unused parameter: foo=bar" in (
        report.notes
    )


# --------------------------------------------------------------------------------------------
# Versions: defaults, syntax and where the version comes from


def test_defaults_before_and_after_postfix_3_6() -> None:
    """Without explicit protocols, 3.5 defaults to '!SSLv2, !SSLv3' and 3.6+ to '>=TLSv1'; both
    allow TLS 1.0/1.1, and the fix is written in the syntax the version understands."""
    old = audit_config_dir(DEBIAN_DEFAULT, "3.5.25")
    new = audit_config_dir(DEBIAN_DEFAULT, "3.7.11")
    protocols = old.result("smtpd_tls_protocols")
    assert protocols.status is WARN
    assert "default: '!SSLv2, !SSLv3'" in protocols.reason
    assert protocols.fix == "smtpd_tls_protocols = !SSLv2, !SSLv3, !TLSv1, !TLSv1.1"
    assert new.result("smtpd_tls_protocols").fix == "smtpd_tls_protocols = >=TLSv1.2"
    # 3.5 has no built-in FFDHE group selection and may run with OpenSSL 1.0.x
    assert old.result("smtpd_tls_dh1024_param_file").status is WARN
    assert "2048-bit" in old.result("smtpd_tls_dh1024_param_file").reason
    assert (
        old.result("smtpd_tls_dh1024_param_file").fix
        == "smtpd_tls_dh1024_param_file = ${config_directory}/dh2048.pem"
    )
    assert new.result("smtpd_tls_dh1024_param_file").status is PASS
    assert old.result("tls_ssl_options").fix == "tls_ssl_options = NO_COMPRESSION, NO_RENEGOTIATION"
    assert new.result("tls_ssl_options").fix == "tls_ssl_options = NO_RENEGOTIATION"


def test_defaults_before_mid_2015() -> None:
    report = audit_config_dir(DEBIAN_DEFAULT, "2.11.5")
    assert report.result("smtpd_tls_protocols").status is FAIL  # empty: SSLv2 and SSLv3 too
    assert report.result("smtp_tls_protocols").status is FAIL  # "!SSLv2": SSLv3 allowed
    assert report.result("smtpd_tls_ciphers").status is WARN  # "export"
    assert report.result("smtp_tls_mandatory_ciphers").status is PASS  # "medium"
    # no NO_RENEGOTIATION name before 3.4: the OpenSSL bit; names and bits mix in one list
    assert report.result("tls_ssl_options").fix == "tls_ssl_options = NO_COMPRESSION, 0x40000000"
    patched = audit_config_dir(DEBIAN_DEFAULT, "2.11.6")
    assert patched.result("smtpd_tls_ciphers").status is PASS
    assert "default: '!SSLv2, !SSLv3'" in patched.result("smtpd_tls_protocols").reason


def test_range_syntax_needs_postfix_3_6(hardened: Path) -> None:
    report = audit_config_dir(hardened, "3.5.25")
    for param in ("smtpd_tls_protocols", "smtp_tls_mandatory_protocols"):
        result = report.result(param)
        assert result.status is FAIL
        assert "needs Postfix 3.6" in result.reason
        assert result.fix == f"{param} = !SSLv2, !SSLv3, !TLSv1, !TLSv1.1"


def test_smtp_security_level_default_of_postfix_3_11(tmp_path: Path) -> None:
    """3.11 defaults smtp_tls_security_level to 'may', but only at compatibility_level 3.11."""
    confdir = tmp_path / "postfix"
    shutil.copytree(DEBIAN_DEFAULT, confdir)
    main = (confdir / "main.cf").read_text().replace("smtp_tls_security_level=may\n", "")
    (confdir / "main.cf").write_text(main)
    at_3_6 = audit_config_dir(confdir, "3.11.0").result("smtp_tls_security_level")
    assert at_3_6.status is FAIL
    assert "compatibility_level >= 3.11" in at_3_6.reason
    (confdir / "main.cf").write_text(
        main.replace("compatibility_level = 3.6", "compatibility_level = 3.11")
    )
    at_3_11 = audit_config_dir(confdir, "3.11.0").result("smtp_tls_security_level")
    assert at_3_11.status is PASS
    assert "default: 'may'" in at_3_11.reason
    assert audit_config_dir(confdir, "3.10.2").result("smtp_tls_security_level").status is FAIL


def test_dh_parameter_file_is_deprecated_from_postfix_3_9(hardened: Path) -> None:
    main_cf(smtpd_tls_dh1024_param_file="${config_directory}/dh2048.pem")(hardened)
    result = audit_config_dir(hardened, "3.9.1").result("smtpd_tls_dh1024_param_file")
    assert result.status is WARN
    assert "deprecated since Postfix 3.9" in result.reason
    assert result.fix == "remove from main.cf: smtpd_tls_dh1024_param_file"


def test_low_grade_means_medium_from_postfix_3_8(hardened: Path) -> None:
    main_cf(smtpd_tls_ciphers="low")(hardened)
    result = audit_config_dir(hardened, "3.8.0").result("smtpd_tls_ciphers")
    assert result.status is WARN
    assert "treats 'low' as 'medium'" in result.reason


def test_version_from_mail_version_in_the_input() -> None:
    text = "mail_version = 3.5.9\n" + (DEBIAN_DEFAULT / "main.cf").read_text()
    report = audit_postconf_text(text)
    assert (report.version, report.version_source) == (
        PostfixVersion(3, 5, 9),
        "mail_version in the input",
    )
    assert audit_postconf_text(text, "3.7").version == PostfixVersion(3, 7, 0)  # flag wins


@needs_postconf
def test_version_from_the_installed_postfix() -> None:
    installed = postconf(DEBIAN_DEFAULT, "-d", "-h", "mail_version").strip()
    report = audit_config_dir(DEBIAN_DEFAULT)
    assert report.version == PostfixVersion.parse(installed)
    assert report.version_source == "installed Postfix (postconf -d mail_version)"


def test_version_assumed_without_postfix(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no postconf to ask
    code, output = audit_command("--config-dir", str(DEBIAN_DEFAULT), "--format", "json")
    assert code == 1
    document = json.loads(output)
    assert document["postfix_version"] == str(ASSUMED_VERSION)
    assert document["version_source"] == "assumed"
    assert any(f"assuming Postfix {ASSUMED_VERSION}" in note for note in document["notes"])


def test_invalid_version_flag_is_rejected(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        audit_command("--postfix-version", "three")
    assert exit_info.value.code == 2
    assert "not a Postfix version" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------
# Protocol and cipher syntax


TLS12_AND_13 = frozenset({"TLSv1.2", "TLSv1.3"})


@pytest.mark.parametrize(
    ("value", "enabled"),
    [
        ("!SSLv2, !SSLv3, !TLSv1, !TLSv1.1", TLS12_AND_13),
        ("!SSLv2:!SSLv3:!TLSv1:!TLSv1.1", TLS12_AND_13),
        ("!SSLv2 !SSLv3 !TLSv1 !TLSv1.1", TLS12_AND_13),
        ("!SSLv2,!SSLv3 :!TLSv1, !TLSv1.1", TLS12_AND_13),
        (">=TLSv1.2", TLS12_AND_13),
        (">=0x0303", TLS12_AND_13),
        (">=303", TLS12_AND_13),
        ("TLSv1.2, TLSv1.3", TLS12_AND_13),
        (">=TLSv1, <=TLSv1.2", frozenset({"TLSv1", "TLSv1.1", "TLSv1.2"})),
        (">=TLSv1.2, !TLSv1.3", frozenset({"TLSv1.2"})),
        ("!SSLv2, !SSLv3", frozenset({"TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3"})),
        ("", frozenset({"SSLv2", "SSLv3", "TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3"})),
        (">=TLSv1.3, <=TLSv1.2", frozenset()),
    ],
)
def test_protocol_spellings(value: str, enabled: frozenset[str]) -> None:
    assert enabled_protocols(value, PostfixVersion(3, 7, 11)) == enabled


@pytest.mark.parametrize("value", ["!SSLv2, !TLSv9", ">=TLSv1.2", "!SSLv2 >=TLSv1"])
def test_protocol_lists_postfix_3_5_rejects(value: str) -> None:
    with pytest.raises(ValueError, match=r"unknown protocol|needs Postfix 3\.6"):
        enabled_protocols(value, PostfixVersion(3, 5, 0))


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("!SSLv2, !SSLv3, !TLSv1, !TLSv1.1", PASS),
        ("!SSLv2:!SSLv3:!TLSv1:!TLSv1.1", PASS),
        (">=TLSv1.2", PASS),
        (">=TLSv1.1", WARN),
        ("!SSLv2, !SSLv3", WARN),
        ("!SSLv2", FAIL),
        (">=TLSv1.3, <=TLSv1.2", FAIL),
        ("!TLSv2.0", FAIL),
    ],
)
def test_protocol_spellings_in_main_cf(hardened: Path, value: str, expected: Status) -> None:
    main_cf(smtpd_tls_protocols=value)(hardened)
    assert audit_config_dir(hardened, DEBIAN_12).result("smtpd_tls_protocols").status is expected


@pytest.mark.parametrize(
    ("cipherlist", "excludes", "weak"),
    [
        ("aNULL:-aNULL:HIGH:MEDIUM:+RC4:@STRENGTH", [], []),  # Postfix 3.x default "medium"
        ("aNULL:-aNULL:HIGH:@STRENGTH", [], []),
        ("ALL:!EXPORT:!LOW:+RC4:@STRENGTH", [], ["MD5", "RC4"]),  # Postfix 2.x "medium"
        ("ALL:!EXPORT:!LOW:!MEDIUM:+RC4:@STRENGTH", [], ["MD5"]),
        ("HIGH:RC4-SHA", [], ["RC4"]),
        ("HIGH:MEDIUM:RC4", ["RC4"], []),
        ("HIGH:eNULL", ["aNULL"], ["eNULL"]),
        ("HIGH:EXP-RC4-MD5", ["EXPORT", "RC4", "MD5"], []),
        ("ALL", ["DES+MD5"], ["DES", "EXPORT", "LOW", "MD5", "RC4"]),
    ],
)
def test_weak_cipher_families(cipherlist: str, excludes: list[str], weak: list[str]) -> None:
    assert weak_cipher_families(cipherlist, excludes) == weak


def test_opportunistic_client_may_keep_anonymous_ciphers(hardened: Path) -> None:
    """Anonymous (aNULL) ciphers are not flagged: opportunistic TLS tolerates them by design."""
    main_cf(tls_medium_cipherlist="aNULL:HIGH:MEDIUM:@STRENGTH")(hardened)
    assert not_passing(audit_config_dir(hardened, DEBIAN_12)) == {}


# --------------------------------------------------------------------------------------------
# main.cf and master.cf syntax


def test_main_cf_syntax() -> None:
    params = parse_main_cf(
        "# comment\n"
        "alpha=1\n"
        "beta   =   two words   \n"
        "gamma =\n"
        "    first,\n"
        "  # a comment between a line and its continuation\n"
        "    second\n"
        "\n"
        "alpha = 3\n"
        "delta = value # not a comment\n"
    )
    assert params == {
        "alpha": "3",
        "beta": "two words",
        "gamma": "first, second",
        "delta": "value # not a comment",
    }


def test_master_cf_syntax() -> None:
    services = parse_master_cf(
        "# service type private unpriv chroot wakeup maxproc command\n"
        "127.0.0.1:submission inet n - y - - smtpd\n"
        "  -o smtpd_tls_security_level=encrypt\n"
        "#  -o commented=out\n"
        "  -o { smtpd_recipient_restrictions = permit_sasl_authenticated, reject }\n"
        "  -osmtpd_sasl_auth_enable=yes -v\n"
        "[::1]:25 inet n - n - - /usr/lib/postfix/sbin/smtpd\n"
        "relay unix - - y - - smtp\n"
    )
    assert [(s.key, s.host, s.port, s.command) for s in services] == [
        ("127.0.0.1:submission/inet", "127.0.0.1", 587, "smtpd"),
        ("[::1]:25/inet", "::1", 25, "smtpd"),
        ("relay/unix", "", None, "smtp"),
    ]
    assert services[0].overrides == {
        "smtpd_tls_security_level": "encrypt",
        "smtpd_recipient_restrictions": "permit_sasl_authenticated, reject",
        "smtpd_sasl_auth_enable": "yes",
    }


def test_parameter_expansion_in_overrides(hardened: Path) -> None:
    """master.cf overrides may name main.cf parameters; ${name?value} and ${name:value} too."""
    main_cf(
        submission_level="encrypt",
        tls_on="yes",
        smtp_tls_note_starttls_offer="${tls_on?{yes}}",
        smtp_tls_loglevel="${tls_off:1}",
    )(hardened)
    master_cf(
        "  -o smtpd_tls_security_level=encrypt\n",
        "  -o smtpd_tls_security_level=$submission_level\n",
    )(hardened)
    report = audit_config_dir(hardened, DEBIAN_12)
    assert not_passing(report) == {}
    assert "(= encrypt)" in report.result("submission").reason


def test_loopback_only_listeners_need_no_tls(hardened: Path) -> None:
    """A null client (inet_interfaces = loopback-only) has no public listener to protect."""
    main_cf(inet_interfaces="loopback-only", smtpd_tls_security_level="none")(hardened)
    report = audit_config_dir(hardened, DEBIAN_12)
    assert not_passing(report) == {}
    assert "no public SMTP server listener" in report.result("smtpd_tls_security_level").reason
    assert "loopback only" in report.result("submission").reason


def test_postscreen_hands_port_25_to_the_smtpd_pass_service(hardened: Path) -> None:
    master_cf(
        SMTP_INET,
        "smtp      inet  n       -       y       -       1       postscreen\n"
        "smtpd     pass  -       -       y       -       -       smtpd\n"
        "  -o smtpd_tls_security_level=encrypt\n",
    )(hardened)
    result = audit_config_dir(hardened, DEBIAN_12).result("smtpd_tls_security_level")
    assert result.status is FAIL
    assert result.fix == "smtpd/pass: -o smtpd_tls_security_level=may"


# --------------------------------------------------------------------------------------------
# Output formats and exit codes


def test_json_output(hardened: Path) -> None:
    main_cf(smtp_tls_loglevel="0", tls_preempt_cipherlist="no")(hardened)
    code, output = audit_command(
        "--config-dir", str(hardened), "--postfix-version", DEBIAN_12, "--format", "json"
    )
    assert code == 1
    document = json.loads(output)
    assert document["postfix_version"] == DEBIAN_12
    assert document["version_source"] == "requested"
    assert document["source"] == str(hardened)
    assert document["failed"] is True
    assert document["summary"] == {"pass": len(CHECKS) - 2, "warn": 1, "fail": 1}
    by_check = {result["check"]: result for result in document["results"]}
    assert list(by_check) == CHECKS
    assert by_check["smtp_tls_loglevel"]["status"] == "fail"
    assert by_check["smtp_tls_loglevel"]["fix"] == "smtp_tls_loglevel = 1"
    assert by_check["smtp_tls_loglevel"]["fixes"] == [
        {"file": "main.cf", "service": "", "action": "add", "line": "smtp_tls_loglevel = 1"}
    ]
    assert by_check["tls_preempt_cipherlist"]["status"] == "warn"
    assert by_check["smtpd_tls_loglevel"] == {
        "check": "smtpd_tls_loglevel",
        "status": "pass",
        "reason": "smtpd_tls_loglevel = 1: every TLS handshake is logged",
        "fix": "",
        "fixes": [],
    }


def test_warnings_alone_exit_0(hardened: Path) -> None:
    main_cf(tls_preempt_cipherlist="no")(hardened)
    code, output = audit_command("--config-dir", str(hardened), "--postfix-version", DEBIAN_12)
    assert code == 0
    assert "WARN    tls_preempt_cipherlist" in output
    assert output.splitlines()[-1] == f"{len(CHECKS) - 1} pass, 1 warn, 0 fail"


def test_unreadable_config_dir_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, output = audit_command("--config-dir", str(tmp_path / "nowhere"))
    assert (code, output) == (2, "")
    assert f"cannot read {tmp_path / 'nowhere' / 'main.cf'}" in capsys.readouterr().err
    (tmp_path / "main.cf").write_text("smtpd_tls_loglevel = 1\nthis line has no equals sign\n")
    code, _ = audit_command("--config-dir", str(tmp_path), "--postfix-version", DEBIAN_12)
    assert code == 2
    assert "main.cf line 2: expected 'name = value'" in capsys.readouterr().err


def test_config_dir_without_master_cf(tmp_path: Path) -> None:
    shutil.copy(DEBIAN_DEFAULT / "main.cf", tmp_path / "main.cf")
    report = audit_config_dir(tmp_path, DEBIAN_12)
    assert report.result("submission").status is WARN
    assert any("master.cf does not exist" in note for note in report.notes)


def test_config_dir_and_stdin_are_exclusive(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        audit_command("--config-dir", str(HARDENED), "-")
    assert exit_info.value.code == 2
    assert "not allowed with argument" in capsys.readouterr().err
