"""Write the Grafana dashboard `smsfleet.json` from the panel list below (Grafana's JSON is long and repetitive).

    .venv/bin/python deploy/grafana/generate.py            # rewrite smsfleet.json
    .venv/bin/python deploy/grafana/generate.py --check    # exit 1 when it is out of date

Every query uses metrics of `smsfleet/metrics.py`; tests/deploy/test_grafana.py checks that, the labels, the
PromQL (promtool) and that the file is up to date. Variables: `datasource` (a Prometheus), `gateway`
(multi-select, from `smsfleet_jobs_consumed_total`). Queue metrics are per queue name
(`<namespace>.send.<gateway>`), so they match any namespace. A queue's depth and oldest age are reported by
every worker that consumes it: `max by (queue)`, never a sum.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
OUTPUT = HERE / "smsfleet.json"
UID = "smsfleet-overview"
RATE = "$__rate_interval"
GW = 'gateway=~"$gateway"'
SEND_QUEUES = 'queue=~".+\\\\.send\\\\.$gateway"'  # in PromQL: queue=~".+\\.send\\.$gateway"


@dataclass(frozen=True)
class Panel:
    title: str
    targets: tuple[tuple[str, str], ...]  # (PromQL, legend)
    unit: str = "short"
    description: str = ""
    kind: str = "timeseries"  # or "stat"
    stack: bool = False
    width: int = 8


def _quantiles(metric: str, by: str, quantiles: tuple[float, ...]) -> tuple[tuple[str, str], ...]:
    return tuple(
        (
            f"histogram_quantile({q}, sum by ({by}, le) (rate({metric}_bucket{{{GW}}}[{RATE}])))",
            f"{{{{{by}}}}} p{round(q * 100)}",
        )
        for q in quantiles
    )


SUMMARY = (
    Panel("Jobs finished / s", ((f"sum(rate(smsfleet_jobs_total{{{GW}}}[{RATE}]))", "final"),), "ops", kind="stat",
          width=6),
    Panel("Delivered share of final states", (
        (f'sum(rate(smsfleet_jobs_total{{{GW},state="delivered"}}[{RATE}])) / '
         f"sum(rate(smsfleet_jobs_total{{{GW}}}[{RATE}]))", "delivered"),), "percentunit", kind="stat", width=6),
    Panel("Jobs waiting in send queues", ((f"sum(max by (queue) (smsfleet_queue_depth{{{SEND_QUEUES}}}))", "ready"),),
          kind="stat", width=6),
    Panel("Dead-lettered (1 h)", (("sum(increase(smsfleet_dead_lettered_total[1h]))", "dead-lettered"),),
          kind="stat", width=6),
)  # fmt: skip

PER_GATEWAY = (
    Panel("Consumed vs finished", (
        (f"sum by (gateway) (rate(smsfleet_jobs_consumed_total{{{GW}}}[{RATE}]))", "{{gateway}} consumed"),
        (f"sum by (gateway) (rate(smsfleet_jobs_total{{{GW}}}[{RATE}]))", "{{gateway}} final")),
        "ops", "Jobs taken from the gateway's queue, and jobs that reached a final state (sends and reports)"),
    Panel("Final states", ((f"sum by (state) (rate(smsfleet_jobs_total{{{GW}}}[{RATE}]))", "{{state}}"),),
          "ops", stack=True),
    Panel("Final states by sender (top 10)", (
        (f"topk(10, sum by (sender, state) (rate(smsfleet_jobs_total{{{GW}}}[{RATE}])))", "{{sender}} {{state}}"),),
        "ops"),
    Panel("Provider requests by outcome", (
        (f"sum by (gateway, outcome) (rate(smsfleet_provider_requests_total{{{GW}}}[{RATE}]))",
         "{{gateway}} {{outcome}}"),), "reqps", "ok, permanent, transient, ambiguous, rate_limited", stack=True),
    Panel("Provider latency p50 / p99", _quantiles("smsfleet_provider_latency_seconds", "gateway", (0.5, 0.99)), "s"),
    Panel("Rate-limit wait p50 / p95", _quantiles("smsfleet_rate_limit_wait_seconds", "gateway", (0.5, 0.95)), "s",
          "Time a request waited for the fleet-wide limit of its sender: long waits mean senders at their limit"),
    Panel("Send queue depth", ((f"max by (queue) (smsfleet_queue_depth{{{SEND_QUEUES}}})", "{{queue}}"),),
          description="Ready jobs per send queue"),
    Panel("Oldest job's age", (
        (f"max by (queue) (smsfleet_queue_oldest_message_age_seconds{{{SEND_QUEUES}}})", "{{queue}}"),), "s",
        "How long the job last taken from the head of the queue had waited"),
    Panel("Retries by delay tier", (
        (f"sum by (gateway, tier) (rate(smsfleet_retries_total{{{GW}}}[{RATE}]))", "{{gateway}} {{tier}} s"),),
        "ops"),
    Panel("Suppression hits", (
        (f"sum by (gateway) (rate(smsfleet_suppression_hits_total{{{GW}}}[{RATE}]))", "{{gateway}}"),), "ops"),
    Panel("Status rechecks by result", (
        (f"sum by (result) (rate(smsfleet_rechecks_total{{{GW}}}[{RATE}]))", "{{result}}"),), "ops",
        "final, pending, failed, horizon", stack=True),
    Panel("Callbacks by HTTP status", (
        (f"sum by (gateway, status) (rate(smsfleet_callbacks_total{{{GW}}}[{RATE}]))", "{{gateway}} {{status}}"),),
        "reqps", "401: a wrong token in a receiving URL; 503: the broker refused the publish"),
)  # fmt: skip

FLEET = (
    Panel("Dead-lettered by reason", (
        (f"sum by (reason) (increase(smsfleet_dead_lettered_total[{RATE}]))", "{{reason}}"),), "short",
        "Parked by the workers (invalid, refused, malformed); `smsfleet dead list` shows them", stack=True),
    Panel("Dead queue depth", (('max by (queue) (smsfleet_queue_depth{queue=~".+\\\\.dead"})', "{{queue}}"),),
          description="Includes what the broker dead-lettered (delivery limit)"),
    Panel("Delivery reports matched / unmatched", (
        (f"sum by (result) (rate(smsfleet_reports_total{{{GW}}}[{RATE}]))", "{{result}}"),), "ops",
        "Unmatched: a report for no job we know (a wrong receiving URL, another system on the account)",
        stack=True),
    Panel("Deliveries handled again: the broker did not take a publish", (
        (f"sum by (role, why) (rate(smsfleet_publish_retries_total[{RATE}]))", "{{role}} {{why}}"),), "ops",
        "nacked, or not confirmed within 10 s: a broker alarm or a stalled disk; nothing is lost, but it waits",
        stack=True),
    Panel("Internal queues", (
        ('max by (queue) (smsfleet_queue_depth{queue=~".+\\\\.(status|inbound)"})', "{{queue}} depth"),
        ('max by (queue) (smsfleet_queue_oldest_message_age_seconds{queue=~".+\\\\.(status|inbound)"})',
         "{{queue}} oldest (s)")), description="Reports, rechecks and inbound SMS waiting for the status and "
        "suppression workers"),
)  # fmt: skip


def _panel(panel: Panel, pid: int, x: int, y: int) -> dict[str, Any]:
    custom = {"stacking": {"mode": "normal" if panel.stack else "none"}, "fillOpacity": 20 if panel.stack else 0}
    return {
        "id": pid,
        "type": panel.kind,
        "title": panel.title,
        "description": panel.description,
        "datasource": {"type": "prometheus", "uid": "${datasource}"},
        "gridPos": {"h": 4 if panel.kind == "stat" else 8, "w": panel.width, "x": x, "y": y},
        "fieldConfig": {"defaults": {"unit": panel.unit, **({"custom": custom} if panel.kind != "stat" else {})},
                        "overrides": []},
        "options": {"legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
                    "tooltip": {"mode": "multi", "sort": "desc"}} if panel.kind != "stat" else
                   {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                    "graphMode": "area", "colorMode": "value"},
        "targets": [
            {"refId": chr(ord("A") + i), "expr": expr, "legendFormat": legend,
             "datasource": {"type": "prometheus", "uid": "${datasource}"}}
            for i, (expr, legend) in enumerate(panel.targets)
        ],
    }  # fmt: skip


def dashboard() -> dict[str, Any]:
    panels: list[dict[str, Any]] = []
    y = 0
    for row, group in (("Summary", SUMMARY), ("Per gateway: $gateway", PER_GATEWAY), ("Fleet", FLEET)):
        panels.append({"id": len(panels) + 1, "type": "row", "title": row, "collapsed": False, "panels": [],
                       "gridPos": {"h": 1, "w": 24, "x": 0, "y": y}})  # fmt: skip
        y += 1
        x = 0
        for panel in group:
            if x + panel.width > 24:
                x, y = 0, y + 8
            panels.append(_panel(panel, len(panels) + 1, x, y))
            x += panel.width
        y += 8
    datasource = {"type": "datasource", "name": "datasource", "label": "Prometheus", "query": "prometheus",
                  "current": {}, "hide": 0}  # fmt: skip
    gateway = {
        "type": "query", "name": "gateway", "label": "gateway",
        "datasource": {"type": "prometheus", "uid": "${datasource}"},
        "query": {"query": "label_values(smsfleet_jobs_consumed_total, gateway)", "refId": "gateways"},
        "definition": "label_values(smsfleet_jobs_consumed_total, gateway)",
        "multi": True, "includeAll": True, "allValue": ".*", "current": {}, "refresh": 2, "sort": 1, "hide": 0,
    }  # fmt: skip
    return {
        "uid": UID,
        "title": "smsfleet",
        "description": "SMS delivery fleet: per gateway and fleet-wide (generated by deploy/grafana/generate.py)",
        "tags": ["smsfleet"],
        "timezone": "",
        "editable": True,
        "graphTooltip": 1,
        "schemaVersion": 39,
        "version": 1,
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "annotations": {"list": []},
        "links": [],
        "templating": {"list": [datasource, gateway]},
        "panels": panels,
    }


def render() -> str:
    return json.dumps(dashboard(), indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only check that the file is up to date")
    args = parser.parse_args(argv)
    text = render()
    if OUTPUT.exists() and OUTPUT.read_text(encoding="utf-8") == text:
        return 0
    if args.check:
        print("out of date: smsfleet.json; run deploy/grafana/generate.py", file=sys.stderr)
        return 1
    OUTPUT.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
