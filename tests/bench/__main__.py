"""Every benchmark, one after the other: `.venv/bin/python -m tests.bench [--quick] [--only NAME ...]`.

Each scenario is its own script (and process: no event loop, connection or memory carries over); this runs
them with their defaults, or with smaller counts under `--quick`, and prints each one's table as it comes.
The Celery peer runs when Celery is installed (`pip install -e '.[bench]'`), and is skipped with a note
otherwise. `docs/benchmarks.md` holds the tables of a full run on the reference machine.
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import time

#: name -> (arguments of a full run, arguments of a quick one)
SCENARIOS: dict[str, tuple[list[str], list[str]]] = {
    "throughput": ([], ["--rounds", "1", "--jobs", "2000", "--slow-jobs", "2000"]),
    "slow_provider": ([], ["--quick"]),
    "scaling": ([], ["--rounds", "1", "--jobs", "4000"]),
    "rate_precision": ([], ["--seconds", "8"]),
    "memory": ([], ["--jobs", "4000"]),
    "stop_latency": ([], ["--stops", "100"]),
    "receiver": ([], ["--posts", "1000", "--rounds", "1"]),
    "reports": ([], ["--jobs", "2000", "--rounds", "1"]),
    "publish": ([], ["--jobs", "5000", "--rounds", "1"]),
    "acks": ([], ["--messages", "5000", "--rounds", "1"]),
    "events": ([], ["--events", "5000", "--rounds", "2"]),
    "batching": ([], ["--rounds", "1", "--jobs", "2000", "--slow-jobs", "2000", "--pm-jobs", "4000"]),
    "celery_peer": ([], ["--rounds", "1", "--jobs", "1000"]),
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smaller counts: a smoke run, not figures to quote")
    parser.add_argument("--only", nargs="+", choices=sorted(SCENARIOS), metavar="NAME", help="these scenarios only")
    args = parser.parse_args()
    failed = []
    for name in args.only or SCENARIOS:
        if name == "celery_peer" and importlib.util.find_spec("celery") is None:
            print(f"\n== {name}: skipped (Celery is not installed: pip install -e '.[bench]')", flush=True)
            continue
        full, quick = SCENARIOS[name]
        argv = [sys.executable, "-m", f"tests.bench.{name}", *(quick if args.quick else full)]
        print(f"\n== {name}: {' '.join(argv[1:])}", flush=True)
        started = time.monotonic()
        code = subprocess.call(argv)  # noqa: S603 - our own scripts
        print(f"== {name}: exit {code} after {time.monotonic() - started:.0f} s", flush=True)
        if code:
            failed.append(name)
    if failed:
        print(f"\nfailed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
