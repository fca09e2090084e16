"""The chaos suite's report: each case's row of the books (`harness.Books`), collected from its test report,
printed as a table at the end of the run and, when `SMSFLEET_CHAOS_REPORT` names a file, written there as JSON.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import aio_pika
import pytest
import redis.asyncio as aioredis

from smsfleet.settings import Settings
from smsfleet.topology import Names
from tests.chaos.harness import ROW_KEY, Books, Case

COLUMNS: tuple[str, ...] = ("case", "jobs", "published", "final", "lost", "duplicated", "misattributed", "unknown")
COLUMNS += ("resends", "states", "notes")

_rows: list[dict[str, Any]] = []


@pytest.fixture
def books(request: pytest.FixtureRequest) -> Books:
    return Books(request.node.name.removeprefix("test_"), request.node.user_properties)


@pytest.fixture
def case(  # noqa: PLR0917 - fixtures
    settings: Settings,
    names: Names,
    redis: aioredis.Redis,
    amqp: aio_pika.abc.AbstractRobustConnection,
    books: Books,
    tmp_path: Path,
) -> Case:
    return Case(settings, names, redis, amqp, books, tmp_path)


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.when == "call":
        rows = [row for key, row in report.user_properties if key == ROW_KEY and isinstance(row, dict)]
        _rows.extend({**row, "outcome": report.outcome} for row in rows)


def _cell(row: dict[str, Any], column: str) -> str:
    value = row[column]
    if column == "states":
        return ", ".join(f"{state} {n}" for state, n in value.items())
    if column == "case" and row["outcome"] != "passed":
        return f"{value} ({row['outcome'].upper()})"
    return str(value)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not _rows:
        return
    cells = [[_cell(row, c) for c in COLUMNS] for row in _rows]
    widths = [max(len(c), *(len(line[i]) for line in cells)) for i, c in enumerate(COLUMNS)]
    terminalreporter.write_sep("=", "chaos: loss and duplicate accounting")
    for line in [list(COLUMNS), *cells]:
        terminalreporter.write_line(" | ".join(v.ljust(w) for v, w in zip(line, widths, strict=True)).rstrip())
    if path := os.environ.get("SMSFLEET_CHAOS_REPORT"):
        Path(path).write_text(json.dumps(_rows, indent=2) + "\n")
        terminalreporter.write_line(f"written to {path}")
