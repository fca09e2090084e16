"""deploy/grafana/smsfleet.json against the code: it is what deploy/grafana/generate.py writes, every query
is valid PromQL (promtool) over metrics `smsfleet.metrics` exports, with their labels, and the dashboard
charts what the README's operations section promises."""

from __future__ import annotations

import itertools
import json
import re
import shutil
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from smsfleet.kinds import KINDS
from tests.deploy.test_manifests import (
    _MATCHER,
    _SELECTOR,
    DEPLOY,
    LABEL_VALUES,
    exported_series,
    load_generator,
    require_tool,
)

GRAFANA = DEPLOY / "grafana"
DASHBOARD = GRAFANA / "smsfleet.json"
#: what the dashboard must chart (README, Operations: per gateway and fleet-wide)
MUST_CHART = {
    "smsfleet_jobs_consumed_total",
    "smsfleet_jobs_total",
    "smsfleet_provider_latency_seconds_bucket",
    "smsfleet_provider_requests_total",
    "smsfleet_queue_depth",
    "smsfleet_queue_oldest_message_age_seconds",
    "smsfleet_rate_limit_wait_seconds_bucket",
    "smsfleet_dead_lettered_total",
    "smsfleet_reports_total",
    "smsfleet_callbacks_total",
}
#: Grafana's variables, replaced by values a real query could have before promtool reads the expression
EXAMPLES = {"$__rate_interval": "5m", "$gateway": "(smsc|infobip)"}


@cache
def dashboard() -> dict[str, Any]:
    doc = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    assert isinstance(doc, dict)
    return doc


def panels() -> list[dict[str, Any]]:
    return [p for p in dashboard()["panels"] if p["type"] != "row"]


def queries() -> list[tuple[str, str]]:
    """(panel title, PromQL) for every query, including the template variables'."""
    found = [(p["title"], t["expr"]) for p in panels() for t in p["targets"]]
    for var in dashboard()["templating"]["list"]:
        if var["type"] == "query":
            (inner,) = re.findall(r"label_values\((.+)\)", var["definition"])
            found.append((f"variable {var['name']}", inner.rsplit(",", 1)[0]))
    return found


def example(expr: str) -> str:
    for name, value in EXAMPLES.items():
        expr = expr.replace(name, value)
    assert "$" not in expr, f"a variable without an example value: {expr}"
    return expr


def test_the_dashboard_is_what_the_generator_writes() -> None:
    generator = load_generator(GRAFANA / "generate.py")
    assert DASHBOARD.read_text(encoding="utf-8") == generator.render(), (
        "run .venv/bin/python deploy/grafana/generate.py"
    )


def test_every_query_uses_exported_metrics_and_their_labels() -> None:
    series = exported_series()
    queues = {f"smsfleet.{q}.{k}" for q, k in itertools.product(("send",), KINDS)} | {
        "smsfleet.dead", "smsfleet.status", "smsfleet.inbound"
    }  # fmt: skip
    for title, expr in queries():
        metrics = _SELECTOR.findall(expr)
        assert metrics, f"{title}: no smsfleet metric in {expr}"
        labels: set[str] = set()
        for metric, matchers in metrics:
            assert metric in series, f"{title}: {metric} is not exported by smsfleet.metrics"
            labels |= series[metric]
            for label, op, value in _MATCHER.findall(matchers):
                assert label in series[metric], f"{title}: {metric} has no label {label}"
                pattern = example(value).replace("\\\\", "\\")
                allowed = queues if label == "queue" else LABEL_VALUES.get((metric, label)) or set()
                if label == "gateway":
                    allowed = set(KINDS)
                if allowed:
                    hits = {v for v in allowed if re.fullmatch(pattern if "~" in op else re.escape(pattern), v)}
                    assert hits, f"{title}: {label}{op}{value!r} matches no {label} of {metric}"
        for group in re.findall(r"\b(?:by|without)\s*\(([^)]*)\)", expr):
            for label in filter(None, (x.strip() for x in group.split(","))):
                assert label in labels, f"{title}: groups by {label}, which its metrics do not have"


def test_it_charts_what_the_readme_promises_per_gateway() -> None:
    used = {metric for _, expr in queries() for metric, _ in _SELECTOR.findall(expr)}
    assert used >= MUST_CHART, f"not charted: {MUST_CHART - used}"
    (gateway,) = [v for v in dashboard()["templating"]["list"] if v["name"] == "gateway"]
    assert gateway["multi"]
    assert gateway["includeAll"]
    assert gateway["allValue"] == ".*"
    per_gateway = [p for p in panels() if any("$gateway" in t["expr"] for t in p["targets"])]
    assert len(per_gateway) >= 10
    latency = [expr for _, expr in queries() if "smsfleet_provider_latency_seconds" in expr]
    quantiles = {float(q) for expr in latency for q in re.findall(r"histogram_quantile\(([\d.]+),", expr)}
    assert {0.5, 0.99} <= quantiles


def test_panels_are_laid_out_without_overlap() -> None:
    all_panels = dashboard()["panels"]
    assert len({p["id"] for p in all_panels}) == len(all_panels)
    cells: set[tuple[int, int]] = set()
    for panel in all_panels:
        pos = panel["gridPos"]
        assert pos["x"] >= 0, panel["title"]
        assert pos["x"] + pos["w"] <= 24, panel["title"]
        mine = {(pos["x"] + dx, pos["y"] + dy) for dx in range(pos["w"]) for dy in range(pos["h"])}
        assert not cells & mine, f"{panel['title']} overlaps another panel"
        cells |= mine
        if panel["type"] != "row":
            assert panel["targets"], panel["title"]
            assert panel["datasource"]["uid"] == "${datasource}"


def test_every_query_passes_promtool(tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    require_tool(promtool, "promtool (Debian: apt-get install prometheus)")
    assert promtool is not None
    rules = [
        {"record": f"smsfleet:dashboard_query_{i}", "expr": example(expr)} for i, (_, expr) in enumerate(queries())
    ]
    path = tmp_path / "queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    check = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True, check=False)  # noqa: S603
    assert check.returncode == 0, check.stdout + check.stderr
