"""docs/operations.md: its Prometheus alert rules and scrape configuration
parse as YAML, its Grafana dashboard as JSON, and every dispatch metric they
name is one that /metrics really serves."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml
from prometheus_client.parser import text_string_to_metric_families

from dispatch import bootstrap, db, metrics

DOC = Path(__file__).resolve().parent.parent / "docs" / "operations.md"
FENCE = re.compile(r"^```(\w+)\n(.*?)^```$", re.M | re.S)
NAME = re.compile(r"\bdispatch_[a-z_]+")


def blocks(language: str) -> list[str]:
    return [body for lang, body in FENCE.findall(DOC.read_text(encoding="utf-8")) if lang == language]


def served_names(sqlite_url) -> set[str]:
    engine = db.create_engine(sqlite_url)
    bootstrap.init_database(engine)
    text = metrics.render(metrics.registry_for(engine)).decode()
    engine.dispose()
    names = set()
    # Labelled metrics have no sample until something happened: their names come from their descriptions.
    for labelled in (metrics.SENDS, metrics.SEND_SECONDS, metrics.EVENTS):
        for family in labelled.describe():
            names.update(family.name + suffix for suffix in ("", "_total", "_bucket", "_count", "_sum"))
    for family in text_string_to_metric_families(text):
        names.add(family.name)
        names.update(s.name for s in family.samples)
    return names


def test_the_alert_rules_parse_and_cover_the_three_alerts(sqlite_url):
    documents = [yaml.safe_load(b) for b in blocks("yaml")]
    (rules_doc,) = [d for d in documents if "groups" in d]
    rules = [r for group in rules_doc["groups"] for r in group["rules"]]
    for rule in rules:
        assert {"alert", "expr", "for", "labels", "annotations"} <= rule.keys(), rule
    alerts = {r["alert"]: r for r in rules}
    assert {"DispatchQueueStale", "DispatchFailureRate", "DispatchNoPlanner"} <= alerts.keys()
    assert "> 600" in alerts["DispatchQueueStale"]["expr"]  # older than ten minutes
    assert any("scrape_configs" in d for d in documents)
    served = served_names(sqlite_url)
    for rule in rules:
        for name in NAME.findall(rule["expr"]):
            assert name in served, f"{rule['alert']} uses {name}, which /metrics does not serve"


def test_the_grafana_dashboard_parses_and_names_served_metrics(sqlite_url):
    (dashboard,) = [json.loads(b) for b in blocks("json")]
    assert dashboard["title"] == "dispatch" and dashboard["panels"]
    served = served_names(sqlite_url)
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            for name in NAME.findall(target["expr"]):
                assert name in served, f"panel {panel['title']!r} uses {name}, which /metrics does not serve"


def test_every_metric_in_the_table_is_served(sqlite_url):
    served = served_names(sqlite_url)
    table = [line for line in DOC.read_text(encoding="utf-8").splitlines() if line.startswith("| `dispatch_")]
    named = {n for line in table for n in NAME.findall(line.split("|")[1])}
    assert len(named) >= 15
    assert named <= served, named - served
