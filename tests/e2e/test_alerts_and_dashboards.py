"""The shipped alert rules and Grafana dashboards against the Prometheus that scraped the run."""

from __future__ import annotations

import re
import time

import pytest
import yaml

from tests.dashboard_exprs import (
    VARIABLES,
    dashboard_exprs,
    dashboard_files,
    load_dashboard,
    substitute,
)
from tests.e2e.conftest import RULES, Run
from tests.e2e.harness import PromQLError, settle

pytestmark = pytest.mark.e2e

PLAINTEXT_ALERT = "TlslogdPlaintextDeliveries"  # any plaintext delivery to a remote server
OFFERED_ALERT = "TlslogdPlaintextToStarttlsServer"  # plaintext although the server offered TLS
LEGACY_ALERTS = ("TlslogdLegacyTlsInbound", "TlslogdLegacyTlsOutbound")

# Grafana's variables, as a dashboard would expand them over this short run
E2E_VARIABLES = {**VARIABLES, "__rate_interval": "1m", "__interval": "15s", "__range": "1h"}


def rule_alerts() -> set[str]:
    if not RULES.exists():
        pytest.skip(f"{RULES.relative_to(RULES.parents[2])} does not exist")
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return {rule["alert"] for group in groups for rule in group["rules"] if "alert" in rule}


def firing(run: Run, at: float | None = None) -> set[str]:
    result = run.prometheus.query('ALERTS{alertstate="firing"}', at)["result"]
    return {sample["metric"]["alertname"] for sample in result}


def test_every_rule_loads_and_evaluates_without_error(run: Run) -> None:
    assert rule_alerts(), "the rules file defines no alert"
    groups = run.prometheus.api("rules")["groups"]
    assert groups, "Prometheus loaded no rule group"
    broken = {
        rule["name"]: rule.get("lastError")
        for group in groups
        for rule in group["rules"]
        if rule["health"] != "ok"
    }
    assert broken == {}


def test_plaintext_alerts_fire_after_plaintext_deliveries(run: Run) -> None:
    expected = {PLAINTEXT_ALERT, OFFERED_ALERT}
    missing = expected - rule_alerts()
    if missing:
        pytest.skip(f"the rules define no alert {', '.join(sorted(missing))}")
    # before the restart: in-plaintext went to the plain peer, policy-none to the offering one
    assert firing(run, run.first_process_scrape) & expected == expected
    # at the end: in-ipv6-plaintext, policy-none-again and the fallback, in the new process
    assert settle(lambda: firing(run) & expected, expected) == expected


def test_plaintext_alerts_keep_firing_across_the_restart(run: Run) -> None:
    expected = {PLAINTEXT_ALERT, OFFERED_ALERT}
    if expected - rule_alerts():
        pytest.skip("the rules lack a plaintext alert")
    names = "|".join(sorted(expected))
    end = time.time()
    series = run.prometheus.api(
        "query_range",
        query=f'count(ALERTS{{alertstate="firing",alertname=~"{names}"}})',
        start=f"{run.first_process_scrape:.3f}",
        end=f"{end:.3f}",
        step="1",
    )["result"]
    assert len(series) == 1, "the alerts never fired"
    # a step without both alerts firing is either missing or counts fewer than two
    values = series[0]["values"]
    assert [t for t, v in values if v != "2"] == []
    assert len(values) >= int(end - run.first_process_scrape)


def test_mail_held_back_by_tls_is_counted_and_alerted_by_reason(run: Run) -> None:
    # encrypt-not-offered's deferrals (not_offered), verify-fails' (certificate), the fallback's
    # first attempts (protocol) and plaintext-refused's bounce (rejected)
    held = {}
    for line in run.log_lines():
        if " postfix/smtp[" not in line or "status=sent" in line or " to=<" not in line:
            continue
        for needle, reason in (
            ("TLS is required, but was not offered", "not_offered"),
            ("Server certificate not verified", "certificate"),
            ("Cannot start TLS: handshake failure", "protocol"),
            ("Must issue a STARTTLS command first", "rejected"),
        ):
            if needle in line:
                held[reason] = held.get(reason, 0) + 1
    assert set(held) == {"not_offered", "certificate", "protocol", "rejected"}
    for reason, n in held.items():
        metric = f'tlslogd_tls_held_deliveries_total{{reason="{reason}"}}'
        assert run.wait_total(metric, n) == n, reason
    if "TlslogdTlsHeldDeliveries" in rule_alerts():
        result = run.prometheus.query(
            'ALERTS{alertstate="firing",alertname="TlslogdTlsHeldDeliveries"}'
        )["result"]
        assert {s["metric"]["reason"] for s in result} <= set(held)
        assert result, "no held-back mail alert is firing"


def test_legacy_protocol_alerts_stay_silent(run: Run) -> None:
    names = rule_alerts()
    # TLSv1 and TLSv1.1 clients were refused: no legacy handshake ever happened
    assert firing(run, run.first_process_scrape) & set(LEGACY_ALERTS) & names == set()
    assert firing(run) & set(LEGACY_ALERTS) & names == set()


_LABEL_VALUES = re.compile(r"label_values\((.+),\s*(\w+)\)")


def test_dashboard_variables_offer_the_scraped_daemon(run: Run) -> None:
    """Each query variable, resolved as Grafana resolves ``label_values(series, label)``,
    offers this run's job and target, so the dashboards show data without editing."""
    expected = {"job": {"tlslogd"}, "instance": {run.prometheus.target}}
    for path in dashboard_files():
        for var in load_dashboard(path)["templating"]["list"]:
            if var["type"] != "query":
                continue
            match = _LABEL_VALUES.fullmatch(var["definition"])
            assert match, f"{path.stem} / {var['name']}: {var['definition']}"
            series, label = match.groups()
            values = run.prometheus.api(
                f"label/{label}/values", **{"match[]": substitute(series, E2E_VARIABLES)}
            )
            assert set(values) == expected[var["name"]], f"{path.stem} / {var['name']}"


def test_every_dashboard_expression_evaluates(run: Run) -> None:
    exprs = dashboard_exprs()
    if not exprs:
        pytest.skip("no Grafana dashboard in dashboards/grafana")
    end = time.time()
    errors = []
    for e in exprs:
        expr = substitute(e.raw, E2E_VARIABLES)
        try:
            if e.instant:
                run.prometheus.query(expr)
            else:  # a time series panel: a range query over the run, as Grafana would ask
                run.prometheus.api(
                    "query_range", query=expr, start=f"{end - 300:.3f}", end=f"{end:.3f}", step="15"
                )
        except PromQLError as exc:
            errors.append(f"{e.dashboard} / {e.panel} ({e.ref_id}): {expr!r}: {exc}")
    assert errors == []
