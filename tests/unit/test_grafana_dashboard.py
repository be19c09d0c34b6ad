"""The Grafana dashboard queries only what the app really exports: every metric name in every
PromQL expression is a series of a metric registered by streams.metrics, api.metrics, the
archiver's or the retraining loop's metrics, and every label it groups or filters by is one of
that metric's labels."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml  # type: ignore[import-untyped, unused-ignore]
from prometheus_client import REGISTRY
from prometheus_client.metrics import MetricWrapperBase

import api.drift
import api.metrics
import batch.retrain.metrics
import streams.archive.metrics
import streams.metrics

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "infra" / "grafana" / "dashboards" / "recsys.json"
DATASOURCES = ROOT / "infra" / "grafana" / "provisioning" / "datasources" / "prometheus.yml"

# PromQL words that are neither functions (followed by "(") nor metric names.
KEYWORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset",
    "and", "or", "unless", "inf", "nan",
}  # fmt: skip
IDENTIFIER = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")
# The series each metric type exposes, besides its `_created` timestamps.
SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"), "gauge": ("",)}


def exported_series() -> dict[str, str]:
    """Series name -> metric family name, for every family the app's modules register."""
    series: dict[str, str] = {}
    for family in REGISTRY.collect():
        if not family.name.startswith("recsys_"):
            continue
        for suffix in SUFFIXES.get(family.type, ("",)):
            series[family.name + suffix] = family.name
    return series


def family_labels() -> dict[str, set[str]]:
    """Family name -> its label names, from the metric objects the two modules define."""
    labels: dict[str, set[str]] = {}
    modules = (
        streams.metrics, api.metrics, api.drift, streams.archive.metrics, batch.retrain.metrics,
    )  # fmt: skip
    for module in modules:
        for value in vars(module).values():
            if isinstance(value, MetricWrapperBase):
                name = value._name.removesuffix("_total")
                labels[name] = set(value._labelnames)
    return labels


def expressions() -> Iterator[tuple[str, str]]:
    """(panel title, PromQL) for every query target, rows' nested panels included."""
    dashboard = json.loads(DASHBOARD.read_text())

    def walk(panels: list[dict[str, Any]]) -> Iterator[tuple[str, str]]:
        for panel in panels:
            for target in panel.get("targets", []):
                yield panel["title"], target["expr"]
            yield from walk(panel.get("panels", []))

    yield from walk(dashboard["panels"])


def parse(expr: str) -> tuple[set[str], set[str]]:
    """(metric names, label names) an expression uses."""
    labels: set[str] = set()
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # label values may look like names
    for matchers in re.findall(r"\{([^}]*)\}", text):
        labels |= set(re.findall(r"([A-Za-z_][A-Za-z0-9_]*)\s*(?:=~|!~|!=|=)", matchers))
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)  # ranges such as [$__rate_interval] or [5m]
    text = re.sub(r"\b\d+(?:\.\d+)?(?:[eE][-+]?\d+)?\b", " ", text)  # 0.95, 1e-9
    for grouping in re.findall(r"\b(?:by|without|on|ignoring)\s*\(([^)]*)\)", text):
        labels |= {label.strip() for label in grouping.split(",") if label.strip()}
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    names = set()
    for match in IDENTIFIER.finditer(text):
        word = match.group()
        if text[match.end() :].lstrip().startswith("(") or word.lower() in KEYWORDS:
            continue  # a function or aggregation, or a keyword
        names.add(word)
    return names, labels


def test_the_parser_finds_names_and_labels() -> None:
    names, labels = parse(
        'histogram_quantile(0.95, sum by (le, route) (rate(a_b_bucket{backend="x:y"}[5m])))'
        " / on (route) group_left sum(rate(c_total[1m]))"
    )
    assert names == {"a_b_bucket", "c_total"}
    assert labels == {"le", "route", "backend"}


def test_the_app_exports_what_the_dashboard_is_checked_against() -> None:
    series = exported_series()
    assert "recsys_api_requests_total" in series
    assert "recsys_stream_freshness_seconds_bucket" in series


def test_every_queried_metric_is_exported() -> None:
    series = exported_series()
    unknown = [
        (title, name)
        for title, expr in expressions()
        for name in parse(expr)[0]
        if name not in series
    ]
    assert unknown == [], f"the dashboard queries metrics the app does not export: {unknown}"


def test_every_label_used_is_a_label_of_the_queried_metrics() -> None:
    series = exported_series()
    labels_of = family_labels()
    for title, expr in expressions():
        names, labels = parse(expr)
        known = {"le"} | {
            label for name in names if name in series for label in labels_of[series[name]]
        }
        assert labels <= known, f"{title}: {expr} uses labels {labels - known}"


def test_the_issue_sections_are_covered() -> None:
    """API rate, latency and errors; sources and fallbacks; stream events, DLQ, processing
    latency and freshness; Redis and Qdrant latency."""
    queried = {name for _, expr in expressions() for name in parse(expr)[0]}
    queries = " ".join(expr for _, expr in expressions())
    assert {
        "recsys_api_requests_total",
        "recsys_api_request_duration_seconds_bucket",
        "recsys_api_recommendations_total",
        "recsys_api_fallbacks_total",
        "recsys_stream_events_total",
        "recsys_stream_dlq_total",
        "recsys_stream_batch_processing_seconds_bucket",
        "recsys_stream_freshness_seconds_bucket",
        "recsys_stream_redis_apply_seconds_bucket",
        "recsys_api_backend_duration_seconds_bucket",
    } <= queried
    assert 'status=~"5.."' in queries
    assert 'backend="redis"' in queries
    assert 'backend="qdrant"' in queries


def test_the_archive_and_the_retraining_loop_are_covered() -> None:
    """Issue 17: archive lag, rows written, the last retrain and its gate decision."""
    queried = {name for _, expr in expressions() for name in parse(expr)[0]}
    assert {
        "recsys_archive_lag_seconds",
        "recsys_archive_rows_total",
        "recsys_retrain_last_decision",
        "recsys_retrain_last_run_timestamp_seconds",
        "recsys_retrain_candidate_ndcg",
        "recsys_retrain_active_ndcg",
        "recsys_retrain_runs_total",
    } <= queried


def test_experiments_and_drift_are_covered() -> None:
    """Issue 19: per-arm CTR and counts, the sample-ratio check and input drift."""
    queried = {name for _, expr in expressions() for name in parse(expr)[0]}
    assert {
        "recsys_experiment_outcomes_total",
        "recsys_experiment_srm_p_value",
        "recsys_drift_psi",
    } <= queried


def test_panels_use_the_provisioned_datasource() -> None:
    provisioned = yaml.safe_load(DATASOURCES.read_text())["datasources"]
    uids = {source["uid"] for source in provisioned}
    dashboard = json.loads(DASHBOARD.read_text())
    for panel in dashboard["panels"]:
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] in uids, panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] in uids, panel["title"]


def test_the_alert_rules_query_exported_metrics() -> None:
    """infra/prometheus/alerts.yml names real metrics too (`up` is Prometheus' own)."""
    groups = yaml.safe_load((ROOT / "infra" / "prometheus" / "alerts.yml").read_text())["groups"]
    rules = [rule for group in groups for rule in group["rules"]]
    series = exported_series()
    assert len(rules) >= 10
    for rule in rules:
        names, _ = parse(rule["expr"])
        assert names <= series.keys() | {"up"}, f"{rule['alert']}: {names - series.keys()}"
