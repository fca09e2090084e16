"""One worker against the 3-node cluster vs the single node, and what Redis WAIT costs a message.

    .venv/bin/python -m tests.bench.cluster [--jobs 5000] [--rounds 3] [--concurrency 100]

(from the project root; needs rabbitmq-server and redis-server: the local cluster of deploy/cluster/cluster.py is
started for the run and taken down after it)

Three set-ups, the same `worker_round` of tests/bench/throughput.py (send role for `smsc`, every check on, the
fake SMSC in a child process, latency 0; msg/s from the first to the last `accepted` event), rounds alternating
so that drift hits all three:

- single: the machine's default RabbitMQ node and Redis (SMSFLEET_TEST_AMQP_URL / SMSFLEET_TEST_REDIS_URL);
- cluster: the three nodes (SMSFLEET_AMQP_URL listing them; quorum queues with 3 replicas, leaders balanced)
  and Redis through its Sentinels;
- cluster+WAIT: the same with SMSFLEET_REDIS_WAIT_REPLICAS=1: every claim waits for the replica.

Medians are printed, with the cost of WAIT per message (µs, from the msg/s of the two cluster set-ups).
Numbers only: nothing is asserted.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import statistics
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgspec

from cli.common import run
from smsfleet.connect import connect_amqp, redis_client
from smsfleet.settings import Settings
from smsfleet.topology import Names, declare, delete
from tests.bench.throughput import add_service_args, create_sender, fake_smsc, make_jobs, worker_round

SCRIPT = Path(__file__).resolve().parents[2] / "deploy" / "cluster" / "cluster.py"


def load_cluster() -> Any:
    spec = importlib.util.spec_from_file_location("smsfleet_cluster_harness", SCRIPT)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module.Cluster()


@contextlib.asynccontextmanager
async def namespace(settings: Settings, url: str) -> AsyncIterator[tuple[Settings, Any]]:
    """A throw-away namespace on `settings`' broker and Redis, with sender `s1` on the fake at `url`."""
    names = Names(f"bench{uuid.uuid4().hex[:8]}")
    settings = msgspec.structs.replace(settings, namespace=names.ns)
    connection = await connect_amqp(settings.amqp_url)
    redis = redis_client(settings.redis_url)
    try:
        async with connection.channel() as channel:
            await declare(channel, names, settings.queue_limits)
        await create_sender(redis, names, "s1", url)
        yield settings, connection
    finally:
        with contextlib.suppress(Exception):
            async with connection.channel() as channel:
                await delete(channel, names)
        await connection.close()
        keys = [k async for k in redis.scan_iter(match=f"{names.ns}:*", count=1000)]
        if keys:
            await redis.delete(*keys)
        await redis.aclose()


async def bench(args: argparse.Namespace, cluster: Any) -> None:
    single = Settings(amqp_url=args.amqp_url, redis_url=args.redis_url)
    on_cluster = Settings.from_env(
        {
            "SMSFLEET_AMQP_URL": cluster.amqp_url,
            "SMSFLEET_REDIS_URL": cluster.redis_url,
            "SMSFLEET_QUORUM_GROUP_SIZE": "3",
            "SMSFLEET_QUEUE_LEADER_LOCATOR": "balanced",
        }
    )
    setups = {
        "single": single,
        "cluster": on_cluster,
        "cluster+WAIT": msgspec.structs.replace(on_cluster, redis_wait_replicas=1),
    }
    rates: dict[str, list[float]] = {name: [] for name in setups}
    cpu: dict[str, list[float]] = {name: [] for name in setups}
    async with fake_smsc(0.0, in_process=False) as url:
        for r in range(args.rounds):
            for name, settings in setups.items():
                async with namespace(settings, url) as (ns_settings, connection):
                    jobs = make_jobs(f"r{r}", "s1", args.jobs)
                    rate, ms = await worker_round(ns_settings, connection, jobs, args.concurrency)
                rates[name].append(rate)
                cpu[name].append(ms)
                print(f"round {r + 1} {name:13} {rate:8.0f} msg/s  {ms:5.2f} CPU ms/msg", flush=True)
    print(f"\n{args.jobs} jobs, concurrency {args.concurrency}, median of {args.rounds}:")
    for name in setups:
        print(
            f"  {name:13} {statistics.median(rates[name]):8.0f} msg/s  {statistics.median(cpu[name]):5.2f} CPU ms/msg"
        )
    plain, waiting = statistics.median(rates["cluster"]), statistics.median(rates["cluster+WAIT"])
    print(f"  WAIT 1 costs {1e6 / waiting - 1e6 / plain:.0f} µs of worker time a message at this concurrency")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=100)
    add_service_args(parser)
    args = parser.parse_args()
    cluster = load_cluster()
    print(f"cluster up in {cluster.up():.1f} s", flush=True)
    try:
        run(bench(args, cluster))
    finally:
        cluster.down()


if __name__ == "__main__":
    main()
