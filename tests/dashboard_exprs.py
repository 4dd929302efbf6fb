"""The PromQL of the shipped Grafana dashboards, with Grafana's variables replaced by values that
Prometheus accepts, so that tests can check every expression with promtool or evaluate it
against a real Prometheus (``[e.expr for e in dashboard_exprs()]``)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, NamedTuple

ROOT = Path(__file__).resolve().parent.parent
GRAFANA_DIR = ROOT / "dashboards" / "grafana"
PROMETHEUS_DIR = ROOT / "dashboards" / "prometheus"

# What Grafana puts in place of its variables (``$instance`` is a regex: "All" is ``.*``;
# ``$job`` is the job of the example Prometheus configuration and of the end-to-end suite).
VARIABLES: dict[str, str] = {
    "job": "tlslogd",
    "instance": ".*",
    "__rate_interval": "5m",
    "__interval": "1m",
    "__range": "1h",
    "__interval_ms": "60000",
    "__range_s": "3600",
    "__range_ms": "3600000",
}

_VARIABLE = re.compile(r"\$\{(\w+)(?::[^}]*)?\}|\$(\w+)|\[\[(\w+)\]\]")


class DashboardExpr(NamedTuple):
    dashboard: str  # uid
    panel: str  # title
    ref_id: str
    instant: bool
    raw: str  # as written in the dashboard
    expr: str  # with the variables substituted


def dashboard_files() -> list[Path]:
    return sorted(GRAFANA_DIR.glob("*.json"))


def load_dashboard(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def iter_panels(dashboard: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, including those inside collapsed rows."""
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


def substitute(expr: str, variables: Mapping[str, str] = VARIABLES) -> str:
    """Replace ``$var``, ``${var}``, ``${var:format}`` and ``[[var]]``; an unknown variable
    raises KeyError."""

    def value(match: re.Match[str]) -> str:
        name = next(group for group in match.groups() if group is not None)
        return variables[name]

    return _VARIABLE.sub(value, expr)


def dashboard_exprs() -> list[DashboardExpr]:
    """Every query target of every dashboard, in file and panel order."""
    found = []
    for path in dashboard_files():
        dashboard = load_dashboard(path)
        for panel in iter_panels(dashboard):
            for target in panel.get("targets", []):
                raw = target["expr"]
                found.append(
                    DashboardExpr(
                        dashboard=dashboard["uid"],
                        panel=panel.get("title", ""),
                        ref_id=target.get("refId", ""),
                        instant=bool(target.get("instant", False)),
                        raw=raw,
                        expr=substitute(raw),
                    )
                )
    return found
