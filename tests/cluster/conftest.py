"""The `cluster` suite's set-up: the local cluster of deploy/cluster/cluster.py (three RabbitMQ nodes, a Redis
primary with one replica and three Sentinels), started once per session and taken down at its end, also when a
test fails (a finalizer, and `atexit` should the session die first). It cannot start: the suite is skipped, or
under CI=true failed.

The service fixtures of tests/conftest.py are pointed at it: `amqp_url` lists the three nodes, `redis_url`
names the Sentinels (their `redis` and `amqp` connect through `smsfleet.connect`, as the processes do). The books'
rows (`tests.chaos.harness.Books`) join the chaos suite's accounting table.
"""

from __future__ import annotations

import atexit
import importlib.util
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from tests.chaos import conftest as chaos
from tests.conftest import CI

SCRIPT = Path(__file__).resolve().parents[2] / "deploy" / "cluster" / "cluster.py"


def _load_harness() -> ModuleType:
    spec = importlib.util.spec_from_file_location("smsfleet_cluster_harness", SCRIPT)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # before running it: its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


harness = _load_harness()

# the chaos suite's books: the fixture, and its rows in the same table at the end of the run
books = chaos.books
pytest_runtest_logreport = chaos.pytest_runtest_logreport


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if chaos not in terminalreporter.config.pluginmanager.get_plugins():  # the chaos suite did not run: print it here
        chaos.pytest_terminal_summary(terminalreporter)


@pytest.fixture(scope="session")
def cluster() -> Iterator[Any]:
    """The running cluster (`cluster.Cluster`), up once for the session."""
    cluster = harness.Cluster()
    atexit.register(cluster.down)
    try:
        took = cluster.up()
    except (RuntimeError, SystemExit, OSError, subprocess.SubprocessError) as exc:
        cluster.down()
        message = f"the local cluster did not start: {exc}"
        if CI:
            pytest.fail(message + " (CI=true: the cluster cases must run)", pytrace=False)
        pytest.skip(message)
    print(f"cluster up in {took:.1f} s")  # shown with -s: the start-up time the docs quote
    try:
        yield cluster
    finally:
        cluster.down()


@pytest.fixture(scope="session")
def amqp_url(cluster: Any) -> str:
    return str(cluster.amqp_url)


@pytest.fixture(scope="session")
def redis_url(cluster: Any) -> str:
    return str(cluster.redis_url)
