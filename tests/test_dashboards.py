"""The shipped Grafana dashboards and Prometheus rules: promtool checks and unit tests, dashboard
structure, and every metric and label they name exists in tlslogd's metric contract."""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.dashboard_exprs import (
    GRAFANA_DIR,
    PROMETHEUS_DIR,
    ROOT,
    VARIABLES,
    dashboard_exprs,
    dashboard_files,
    iter_panels,
    load_dashboard,
    substitute,
)
from tlslogd.metrics import METRICS

RULES = PROMETHEUS_DIR / "tlslogd.rules.yml"
RULE_TESTS = PROMETHEUS_DIR / "tlslogd.test.yml"
EXAMPLE_CONFIG = PROMETHEUS_DIR / "prometheus.example.yml"
DATASOURCE = "${datasource}"
INSTANCE_FILTER = 'job="$job", instance=~"$instance"'
# Prometheus' own series about the tlslogd target, which the health dashboard and alerts use
SCRAPE_METRICS = {"up", "scrape_duration_seconds"}

needs_promtool = pytest.mark.skipif(
    shutil.which("promtool") is None,
    reason="promtool is missing (Debian package prometheus)",
)

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_METRIC = re.compile(r"(?<![\w:$])(tlslogd_\w+)(?![\w:])")
_SELECTOR = re.compile(r"(?<![\w:$])([a-zA-Z_][\w:]*)\s*\{([^}]*)\}")
_MATCHER = re.compile(r'(\w+)\s*(?:=~|!~|!=|=)\s*"(?:[^"\\]|\\.)*"')
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
_WINDOW = re.compile(r"\[([^\]]+)\]")
_LEGEND_LABEL = re.compile(r"\{\{\s*(\w+)\s*\}\}")


def promtool(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["promtool", *args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def rules() -> list[dict[str, Any]]:
    return [rule for group in load_yaml(RULES)["groups"] for rule in group["rules"]]


def alerts() -> list[dict[str, Any]]:
    return [rule for rule in rules() if "alert" in rule]


def recordings() -> list[dict[str, Any]]:
    return [rule for rule in rules() if "record" in rule]


def metric_names(expr: str) -> set[str]:
    """The tlslogd_* metrics an expression reads (recording rule names, which hold the metric
    name between colons, and text inside strings do not count)."""
    return set(_METRIC.findall(_STRING.sub('""', expr)))


def selectors(expr: str) -> Iterator[tuple[str, str]]:
    """(metric name, matchers) of every selector with braces."""
    for match in _SELECTOR.finditer(expr):
        yield match.group(1), match.group(2)


def labels_used(expr: str) -> set[str]:
    """Label names in matchers and in by/without/on/ignoring/group_* clauses."""
    names = {m.group(1) for _, body in selectors(expr) for m in _MATCHER.finditer(body)}
    for match in _GROUPING.finditer(_STRING.sub('""', expr)):
        names.update(name.strip() for name in match.group(1).split(",") if name.strip())
    return names


def known_labels(expr: str) -> set[str]:
    """The labels the metrics of an expression can carry."""
    allowed = {"job", "instance"}
    for name in metric_names(expr):
        if name in METRICS:
            allowed.update(METRICS[name].labels)
    return allowed


def all_rule_exprs() -> list[tuple[str, str]]:
    return [(rule.get("alert") or rule["record"], rule["expr"]) for rule in rules()]


# ------------------------------------------------------------------------------------------
# Prometheus rules


@needs_promtool
def test_promtool_check_rules() -> None:
    result = promtool("check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


@needs_promtool
def test_promtool_rule_unit_tests_pass() -> None:
    result = promtool("test", "rules", RULE_TESTS.name, cwd=PROMETHEUS_DIR)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


@needs_promtool
def test_example_prometheus_config_is_valid_and_loads_the_rules() -> None:
    config = load_yaml(EXAMPLE_CONFIG)
    assert RULES.name in config["rule_files"]
    jobs = {scrape["job_name"]: scrape for scrape in config["scrape_configs"]}
    assert jobs["tlslogd"]["static_configs"][0]["targets"] == ["127.0.0.1:10154"]
    result = promtool("check", "config", EXAMPLE_CONFIG.name, cwd=PROMETHEUS_DIR)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_rule_has_unit_tests_firing_and_quiet() -> None:
    tests = load_yaml(RULE_TESTS)
    assert tests["rule_files"] == [RULES.name]
    firing: set[str] = set()
    quiet: set[str] = set()
    tested_exprs: list[str] = []
    for case in tests["tests"]:
        for check in case.get("alert_rule_test", []):
            (firing if check.get("exp_alerts") else quiet).add(check["alertname"])
        tested_exprs += [check["expr"] for check in case.get("promql_expr_test", [])]
    names = {rule["alert"] for rule in alerts()}
    assert names - firing == set(), "alerts without a firing test case"
    assert names - quiet == set(), "alerts without a quiet test case"
    for rule in recordings():
        assert any(rule["record"] in expr for expr in tested_exprs), rule["record"]


def test_alerts_carry_routing_labels_and_actionable_annotations() -> None:
    for rule in alerts():
        name = rule["alert"]
        labels, annotations = rule["labels"], rule["annotations"]
        assert labels["severity"] in {"critical", "warning", "info"}, name
        assert labels["service"] == "mail", name
        assert labels["component"] == "tls", name
        assert set(annotations) >= {"summary", "description", "runbook_url"}, name
        assert annotations["runbook_url"] == f"README.md#{name.lower()}", name
        assert len(annotations["description"]) > 100, name


# What each alert's description must tell the admin to look at.
ADVICE = {
    "TlslogdPlaintextToStarttlsServer": (
        "smtp_tls_security_level",
        "smtp_tls_policy_maps",
        "category=offered_not_used",
        'tlslogd_tls_failures_total{direction="outbound"}',  # the plaintext retry's cause
    ),
    "TlslogdPlaintextDeliveries": ("smtp_tls_policy_maps", "category=plaintext_out"),
    "TlslogdTlsHeldDeliveries": ("smtp_tls_policy_maps", "smtp_tls_protocols", "mailq"),
    "TlslogdLegacyTlsInbound": ("smtpd_tls_protocols", ">=TLSv1.2", "category=legacy_protocol"),
    "TlslogdLegacyTlsOutbound": ("smtp_tls_protocols", ">=TLSv1.2", "category=legacy_protocol"),
    "TlslogdTlsFailureSpike": ("smtpd_tls_loglevel", "smtp_tls_loglevel", "category=tls_failure"),
    "TlslogdPostfixTlsConfigCheckFailed": ("tlslogd audit",),
    "TlslogdDown": ("journalctl -u tlslogd",),
    "TlslogdAbsent": ("scrape_configs",),
    "TlslogdStalled": ("/healthz",),
    "TlslogdSourceDown": ("/healthz", "usermod -aG adm tlslogd"),
    "TlslogdLinesLost": ("journalctl -u tlslogd", "tlslogd report FILE.gz"),
    "TlslogdUnrecognisedLines": ("journalctl -u tlslogd",),
}


def test_alert_descriptions_say_what_to_do() -> None:
    by_name = {rule["alert"]: rule for rule in alerts()}
    assert set(by_name) == set(ADVICE)
    for name, phrases in ADVICE.items():
        description = by_name[name]["annotations"]["description"]
        for phrase in phrases:
            assert phrase in description, f"{name}: {phrase}"


def test_alert_severities_and_required_expressions() -> None:
    by_name = {rule["alert"]: rule for rule in alerts()}
    critical = by_name["TlslogdPlaintextToStarttlsServer"]
    assert critical["labels"]["severity"] == "critical"
    assert 'tlslogd_offered_plaintext_deliveries_total{status="sent"}' in critical["expr"]
    plaintext = by_name["TlslogdPlaintextDeliveries"]
    assert plaintext["labels"]["severity"] == "warning"
    assert 'scope="remote"' in plaintext["expr"]
    assert by_name["TlslogdDown"]["expr"].strip() == 'up{job="tlslogd"} == 0'
    assert by_name["TlslogdAbsent"]["expr"].strip() == 'absent(up{job="tlslogd"})'
    assert "tlslogd_log_lag_bytes > 0" in by_name["TlslogdStalled"]["expr"]
    assert by_name["TlslogdSourceDown"]["expr"].strip() == "tlslogd_source_up == 0"
    assert (
        by_name["TlslogdPostfixTlsConfigCheckFailed"]["expr"].strip()
        == 'tlslogd_config_check{status="fail"} == 1'
    )
    for direction in ("Inbound", "Outbound"):
        rule = by_name[f"TlslogdLegacyTls{direction}"]
        assert rule["labels"]["direction"] == direction.lower()
        assert f'direction="{direction.lower()}"' in rule["expr"]


def test_recording_rules_follow_the_level_metric_operations_convention() -> None:
    for rule in recordings():
        name = rule["record"]
        match = re.fullmatch(r"([a-z_]+):(tlslogd_[a-z0-9_]+):([a-z0-9_]+)", name)
        assert match, name
        level = set(match.group(1).split("_"))
        groupings = [
            {label.strip() for label in m.group(1).split(",")}
            for m in re.finditer(r"\bby \(([^)]*)\)", rule["expr"])
        ]
        # the first aggregation gives the result its labels; the others (denominators) may
        # aggregate further
        assert groupings and groupings[0] == level | {"job"}, f"{name}: {groupings}"
        for grouping in groupings:
            assert grouping <= level | {"job"}, f"{name} aggregates by {grouping}"


def test_readme_documents_every_alert() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    if "## Dashboards and alerts" not in readme:
        pytest.skip("the README has no 'Dashboards and alerts' section")
    anchors = {
        re.sub(r"[^\w\- ]", "", line.lstrip("#").strip().lower()).replace(" ", "-")
        for line in readme.splitlines()
        if line.startswith("#")
    }
    for rule in alerts():
        assert rule["annotations"]["runbook_url"].split("#")[1] in anchors, rule["alert"]


# ------------------------------------------------------------------------------------------
# Grafana dashboards


def test_the_three_dashboards_exist_with_stable_unique_uids() -> None:
    uids = {path.stem: load_dashboard(path)["uid"] for path in dashboard_files()}
    assert uids == {
        "tlslogd-overview": "tlslogd-overview",
        "tlslogd-peers": "tlslogd-peers",
        "tlslogd-health": "tlslogd-health",
    }
    titles = [load_dashboard(path)["title"] for path in dashboard_files()]
    assert len(set(titles)) == len(titles)


@pytest.mark.parametrize("path", dashboard_files(), ids=lambda path: path.stem)
def test_dashboard_structure(path: Path) -> None:
    dashboard = load_dashboard(path)
    assert dashboard["id"] is None
    assert dashboard["schemaVersion"] >= 39
    assert "tlslogd" in dashboard["tags"]
    variables = {var["name"]: var for var in dashboard["templating"]["list"]}
    datasource = variables["datasource"]
    assert (datasource["type"], datasource["query"]) == ("datasource", "prometheus")
    job = variables["job"]
    assert job["type"] == "query"
    assert job["datasource"]["uid"] == DATASOURCE
    assert job["definition"] == "label_values(tlslogd_build_info, job)"
    assert job["query"]["query"] == job["definition"]
    # one job at a time: "All" would make up{} and scrape_duration_seconds{} every target's
    assert not job["multi"] and not job["includeAll"]
    instance = variables["instance"]
    assert instance["type"] == "query"
    assert instance["datasource"]["uid"] == DATASOURCE
    assert instance["definition"] == 'label_values(tlslogd_build_info{job="$job"}, instance)'
    assert instance["query"]["query"] == instance["definition"]
    assert instance["multi"] and instance["includeAll"]
    assert instance["allValue"] == ".*"

    ids = [panel["id"] for panel in iter_panels(dashboard)]
    assert len(set(ids)) == len(ids), "panel ids are not unique"
    for panel in iter_panels(dashboard):
        if panel["type"] in ("row", "text"):
            continue
        title = panel["title"]
        assert panel["datasource"]["uid"] == DATASOURCE, title
        assert panel.get("description"), title
        assert panel["targets"], title
        for target in panel["targets"]:
            assert target["datasource"] == {"type": "prometheus", "uid": DATASOURCE}, title
            assert target["expr"].strip(), title


@pytest.mark.parametrize("path", dashboard_files(), ids=lambda path: path.stem)
def test_dashboard_panels_do_not_overlap(path: Path) -> None:
    boxes: list[tuple[str, dict[str, int]]] = []
    for panel in iter_panels(load_dashboard(path)):
        pos = panel["gridPos"]
        assert pos["x"] + pos["w"] <= 24, panel["title"]
        for other_title, other in boxes:
            apart = (
                pos["x"] + pos["w"] <= other["x"]
                or other["x"] + other["w"] <= pos["x"]
                or pos["y"] + pos["h"] <= other["y"]
                or other["y"] + other["h"] <= pos["y"]
            )
            assert apart, f"{panel['title']} overlaps {other_title}"
        boxes.append((panel["title"], pos))


def test_every_dashboard_query_filters_on_the_instance_variable() -> None:
    for e in dashboard_exprs():
        found = list(selectors(e.raw))
        assert found, e
        for metric, body in found:
            assert INSTANCE_FILTER in body, f"{e.dashboard} / {e.panel}: {metric}{{{body}}}"
        bare = set(_METRIC.findall(e.raw)) - {metric for metric, _ in found}
        assert not bare, f"{e.dashboard} / {e.panel}: {bare} without a selector"


def test_dashboard_windows_use_rate_interval_or_range() -> None:
    """Range queries use $__rate_interval, instant queries over the time picker use $__range."""
    for e in dashboard_exprs():
        windows = set(_WINDOW.findall(_STRING.sub('""', e.raw)))
        expected = {"$__range"} if e.instant else {"$__rate_interval"}
        assert windows <= expected, f"{e.dashboard} / {e.panel}: {windows}"
        if "offset" in e.raw:
            assert e.instant and "offset $__range" in e.raw, e


def test_dashboard_census_panels() -> None:
    """The panels an admin looks for: legacy protocols, post-quantum share, policy
    candidates, configuration audit, peers per category with the API hint."""
    exprs = dashboard_exprs()
    overview = " ".join(e.raw for e in exprs if e.dashboard == "tlslogd-overview")
    assert 'key_exchange=~"(?i).*(MLKEM|KYBER|SNTRUP).*"' in overview
    assert r'protocol=~"SSLv3|TLSv1|TLSv1\\.1"' in overview
    assert "tlslogd_policy_candidates" in overview
    assert "tlslogd_config_check" in overview
    assert "sum by (program, starttls)" in overview
    peers = load_dashboard(GRAFANA_DIR / "tlslogd-peers.json")
    tables = [p for p in iter_panels(peers) if p["type"] == "table"]
    shown = {}
    for panel in tables:
        target = panel["targets"][0]
        assert target["instant"] and target["format"] == "table", panel["title"]
        match = re.search(r'(tlslogd_top_peer_\w+)\{[^}]*?(?:category="(\w+)")?\}', target["expr"])
        assert match, panel["title"]
        shown[match.group(2) or match.group(1)] = target["expr"]
    # the top-N tables leave the folded rest out: sorted by count it would come first
    for category in ("plaintext_out", "offered_not_used", "inbound_no_starttls"):
        assert 'peer!="_other"' in shown[category] and "by (peer, domain)" in shown[category]
    # who breaks when TLSv1/1.1 go: by protocol and direction; failures by reason
    assert "by (peer, domain, protocol, direction)" in shown["tlslogd_top_peer_legacy_handshakes"]
    assert "by (peer, domain, reason)" in shown["tlslogd_top_peer_tls_failures"]
    assert len(shown) == 5
    texts = [p["options"]["content"] for p in iter_panels(peers) if p["type"] == "text"]
    assert any("/api/v1/peers?category=" in text for text in texts)
    health = " ".join(e.raw for e in exprs if e.dashboard == "tlslogd-health")
    for needle in (
        "time() - tlslogd_last_event_timestamp_seconds",
        'scrape_duration_seconds{job="$job"',
        'up{job="$job"',
    ):
        assert needle in health, needle


def test_legend_labels_exist() -> None:
    for path in dashboard_files():
        for panel in iter_panels(load_dashboard(path)):
            for target in panel.get("targets", []):
                legend = target.get("legendFormat", "")
                wanted = set(_LEGEND_LABEL.findall(legend))
                assert wanted <= known_labels(target["expr"]), (panel["title"], wanted)


# ------------------------------------------------------------------------------------------
# The metric contract: dashboards and rules name only what tlslogd exposes


def test_every_tlslogd_metric_named_is_exposed() -> None:
    named: dict[str, set[str]] = {}
    sources = [(f"rule {name}", expr) for name, expr in all_rule_exprs()]
    sources += [(f"{e.dashboard} / {e.panel}", e.raw) for e in dashboard_exprs()]
    for path in dashboard_files():
        for var in load_dashboard(path)["templating"]["list"]:
            if var["type"] == "query":
                sources.append((f"{path.stem} variable {var['name']}", var["definition"]))
    for where, expr in sources:
        for name in metric_names(expr):
            named.setdefault(name, set()).add(where)
    unknown = {name: sorted(where) for name, where in named.items() if name not in METRICS}
    assert not unknown, f"not in tlslogd.metrics.METRICS: {unknown}"
    assert named, "no tlslogd metric found at all"


def test_every_label_named_is_a_label_of_the_metric() -> None:
    sources = [(f"rule {name}", expr) for name, expr in all_rule_exprs()]
    sources += [(f"{e.dashboard} / {e.panel}", e.raw) for e in dashboard_exprs()]
    for where, expr in sources:
        for metric, body in selectors(expr):
            if metric in METRICS:
                allowed = {"job", "instance", *METRICS[metric].labels}
            else:
                assert metric in SCRAPE_METRICS, f"{where}: {metric}"
                allowed = {"job", "instance"}
            used = {m.group(1) for m in _MATCHER.finditer(body)}
            assert used <= allowed, f"{where}: {metric} has no label {used - allowed}"
        assert labels_used(expr) <= known_labels(expr), where


def test_metric_name_check_catches_unknown_names() -> None:
    """The contract check itself: a misspelt metric or a recording rule are told apart."""
    expr = (
        'sum(rate(tlslogd_tls_handshake_total{instance=~"$instance"}[5m]))'
        " / instance:tlslogd_outbound_tls_deliveries:ratio_rate1h"
        ' + tlslogd_log_lag_bytes{job="tlslogd_x"}'
    )
    assert metric_names(expr) == {"tlslogd_tls_handshake_total", "tlslogd_log_lag_bytes"}
    assert "tlslogd_tls_handshake_total" not in METRICS


def test_substitute_replaces_every_grafana_variable_form() -> None:
    assert substitute('x{instance=~"$instance"}[$__rate_interval]') == 'x{instance=~".*"}[5m]'
    assert substitute("${__range} [[__interval]] ${instance:regex}") == "1h 1m .*"
    with pytest.raises(KeyError):
        substitute("$service")
    assert {"job", "instance", "__rate_interval", "__range", "__interval"} <= set(VARIABLES)


@needs_promtool
def test_every_dashboard_expression_is_valid_promql(tmp_path: Path) -> None:
    """Each expression, with Grafana's variables substituted, as a recording rule that
    promtool must accept."""
    exprs = dashboard_exprs()
    where = {f"dashboard_expr_{i}": e for i, e in enumerate(exprs)}
    group = {
        "name": "dashboard-expressions",
        "rules": [{"record": name, "expr": e.expr} for name, e in where.items()],
    }
    rules_file = tmp_path / "dashboards.rules.yml"
    rules_file.write_text(yaml.safe_dump({"groups": [group]}), encoding="utf-8")
    result = promtool("check", "rules", str(rules_file))
    output = result.stdout + result.stderr
    for name, e in where.items():
        output = output.replace(f'"{name}"', f'"{name}" ({e.dashboard} / {e.panel} / {e.ref_id})')
    assert result.returncode == 0, output
    assert f"SUCCESS: {len(exprs)} rules found" in result.stdout
    assert all("$" not in e.expr for e in exprs)


# ------------------------------------------------------------------------------------------
# Provisioning


def test_grafana_provisioning_files() -> None:
    provisioning = GRAFANA_DIR / "provisioning"
    providers = load_yaml(provisioning / "dashboards" / "tlslogd.yml")
    assert providers["apiVersion"] == 1
    (provider,) = providers["providers"]
    assert provider["type"] == "file"
    assert provider["options"]["path"]
    sources = load_yaml(provisioning / "datasources" / "prometheus.yml")
    (source,) = sources["datasources"]
    assert source["type"] == "prometheus"
    assert source["url"].startswith("http://")
