"""deploy/: the Grafana dashboard loads (valid JSON, every panel with a query), every query
names only metrics GhostLLM exports (ghostllm.metrics.families), with labels those metrics
have; the Prometheus scrape config points at the metrics port's path."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

from ghostllm.metrics import families

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
DASHBOARD = DEPLOY / "grafana" / "ghostllm.json"
# A metric name in PromQL: followed by a selector, a range or the end of a function argument.
METRIC = re.compile(r"\b((?:ghostllm|envoy)_[a-zA-Z0-9_]+)\b")
# Labels in `by (...)` / `ignoring(...)` clauses and in {selectors}.
GROUPING = re.compile(r"\b(?:by|without|ignoring|on)\s*\(([^)]*)\)")
SELECTOR = re.compile(r"\{([^}]*)\}")
SUFFIXES = ("_bucket", "_sum", "_count")


def exported() -> dict[str, tuple[str, ...]]:
    """Every series name a query may use, with the labels it carries."""
    out: dict[str, tuple[str, ...]] = {}
    for f in (*families.WORKER_FAMILIES, families.ENVOY_UP):
        if f.kind == families.HISTOGRAM:
            for s in SUFFIXES:
                out[f.name + s] = (*f.labels, "le") if s == "_bucket" else f.labels
        else:
            out[f.name] = f.labels
    assert set(families.metric_names()) <= {n.removesuffix(s) for n in out for s in ("", *SUFFIXES)}
    return out


def targets(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    found = []
    for panel in dashboard["panels"]:
        for t in panel.get("targets", ()):
            found.append((panel["title"], t["expr"]))
    return found


def test_the_dashboard_loads_and_every_panel_has_a_query() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] and dashboard["title"] == "GhostLLM"
    graphs = [p for p in dashboard["panels"] if p["type"] != "row"]
    assert graphs and all(p.get("targets") for p in graphs)
    assert len({p["id"] for p in dashboard["panels"]}) == len(dashboard["panels"])
    # The sections: traffic, latency and overhead, errors, tokens and cost, limits and
    # budgets, provider health, ledger health.
    rows = {p["title"] for p in dashboard["panels"] if p["type"] == "row"}
    assert {"Traffic", "Latency and gateway overhead", "Errors", "Tokens and cost", "Limits and budgets",
            "Providers", "Ledger and auth"} <= rows  # fmt: skip


def test_every_query_names_a_metric_we_export_with_its_labels() -> None:
    names = exported()
    dashboard = json.loads(DASHBOARD.read_text())
    used: set[str] = set()
    for title, expr in targets(dashboard):
        metrics = METRIC.findall(expr)
        assert metrics, f"{title}: {expr} names no metric"
        for m in metrics:
            assert m in names, f"{title}: {m} is not a metric GhostLLM exports"
            used.add(m.removesuffix("_bucket"))
        labels = {name.strip() for group in GROUPING.findall(expr) for name in group.split(",") if name.strip()}
        for selector in SELECTOR.findall(expr):
            labels |= {part.split("=")[0].rstrip("!~").strip() for part in selector.split(",") if "=" in part}
        allowed = {label for m in metrics for label in names[m]}
        assert labels <= allowed, f"{title}: labels {sorted(labels - allowed)} are on none of {metrics}"
    # Every family the issue names is on the dashboard.
    for f in families.WORKER_FAMILIES:
        assert f.name in used or f.name + "_bucket" in used, f"{f.name} is on no panel"


def test_the_scrape_config_reads_the_metrics_path() -> None:
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    [job] = config["scrape_configs"]
    assert job["metrics_path"] == "/metrics"
    assert all(t.endswith(":9090") for c in job["static_configs"] for t in c["targets"])
