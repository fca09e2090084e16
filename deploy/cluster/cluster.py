#!/usr/bin/env python3
"""A local cluster for trying smsfleet beyond one machine: three RabbitMQ nodes clustered with `join_cluster`,
and a Redis primary, one replica and three Sentinels, all on this host, no containers.

    python deploy/cluster/cluster.py up              start everything (about 15 s), print the URLs
    python deploy/cluster/cluster.py status [--json] who runs, the RabbitMQ cluster, the Redis primary
    python deploy/cluster/cluster.py env             the SMSFLEET_AMQP_URL / SMSFLEET_REDIS_URL lines to export
    python deploy/cluster/cluster.py kill NODE       kill -9 one member (rabbit-1..3, redis-primary,
                                                     redis-replica, sentinel-1..3)
    python deploy/cluster/cluster.py stop NODE       stop one member cleanly (a RabbitMQ node: `rabbitmqctl stop`)
    python deploy/cluster/cluster.py start NODE      start a member again (a RabbitMQ node rejoins by itself; a
                                                     Redis, as a replica of the primary the Sentinels name)
    python deploy/cluster/cluster.py down            kill everything it started and remove its data

    rabbit-N    node smsfleet-cN@localhost, AMQP 127.0.0.1:570N, distribution port 2570N, no plugins
    redis-*     primary 6391, replica 6392 (`--save "" --appendonly no`), Sentinels 26391-26393 (service
                `smsfleet`, quorum 2, down after 1 s)

It leaves the machine's own RabbitMQ (rabbit@..., 5672/25672/15672) and Redis (6379) alone: the nodes have
their own names, ports, data, config file (the system's one would bind 5672) and an empty plugin list (the
management plugin would want 15672). Everything lives under one directory (`--dir`, else
$SMSFLEET_CLUSTER_DIR, else /tmp/smsfleet-cluster): data, logs, the generated config files, the pids, and an
Erlang cookie of its own (HOME points there), so the user's ~/.erlang.cookie is not touched either.

`down` works from the pid files alone, so it cleans up after a crashed run too; the tests call it from a
session finalizer and `atexit`. Needs rabbitmq-server (3.10 or newer) and redis-server (6.2 or newer).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

SERVICE = "smsfleet"  # the Sentinel service name
HOST = "127.0.0.1"
BOOT_TIMEOUT_S = 90
#: RabbitMQ's `dead_letter_worker_publisher_confirm_timeout` (ms; the broker's default is 180,000)
DLX_CONFIRM_TIMEOUT_MS = 10_000


@dataclass(frozen=True)
class Member:
    name: str  # rabbit-1, redis-primary, sentinel-2, ...
    kind: str  # rabbit | redis | sentinel
    port: int

    @property
    def node(self) -> str:
        """The Erlang node name of a RabbitMQ member."""
        return f"smsfleet-c{self.name[-1]}@localhost"


RABBITS = tuple(Member(f"rabbit-{i}", "rabbit", 5700 + i) for i in (1, 2, 3))
PRIMARY = Member("redis-primary", "redis", 6391)
REPLICA = Member("redis-replica", "redis", 6392)
SENTINELS = tuple(Member(f"sentinel-{i}", "sentinel", 26390 + i) for i in (1, 2, 3))
MEMBERS = {m.name: m for m in (*RABBITS, PRIMARY, REPLICA, *SENTINELS)}


def _rabbit_bin(tool: str) -> str:
    """RabbitMQ's own scripts: Debian's /usr/sbin wrappers switch to the rabbitmq user, which could not
    write our directory, so the real ones are used where they are."""
    home = os.environ.get("RABBITMQ_HOME")
    for where in ([f"{home}/sbin"] if home else []) + ["/usr/lib/rabbitmq/bin"]:
        if os.access(f"{where}/{tool}", os.X_OK):
            return f"{where}/{tool}"
    found = shutil.which(tool)
    if found is None:
        raise SystemExit(f"cluster: {tool} not found (install RabbitMQ, or set RABBITMQ_HOME)")
    return found


class Cluster:
    def __init__(self, base: Path | str | None = None) -> None:
        self.base = Path(base or os.environ.get("SMSFLEET_CLUSTER_DIR") or "/tmp/smsfleet-cluster")  # noqa: S108 - a directory of our own, removed by `down`
        self._procs: dict[str, subprocess.Popen[bytes]] = {}

    # -- URLs -----------------------------------------------------------------------------------------

    @property
    def amqp_url(self) -> str:
        """Every node, comma-separated: SMSFLEET_AMQP_URL."""
        return ",".join(self.amqp_node_url(m.name) for m in RABBITS)

    @staticmethod
    def amqp_node_url(name: str) -> str:
        return f"amqp://guest:guest@{HOST}:{MEMBERS[name].port}/"

    @property
    def redis_url(self) -> str:
        """The Sentinels: SMSFLEET_REDIS_URL."""
        return f"redis+sentinel://{','.join(f'{HOST}:{s.port}' for s in SENTINELS)}/{SERVICE}/0"

    # -- processes ------------------------------------------------------------------------------------

    def _dir(self, member: Member) -> Path:
        return self.base / member.name

    def _pid_file(self, member: Member) -> Path:
        return self._dir(member) / "launcher.pid"

    def pid(self, name: str) -> int | None:
        """The member's process (group) id, while it runs."""
        proc = self._procs.get(name)
        if proc is not None and proc.poll() is not None:  # started by us and exited: reaped, not a zombie
            return None
        try:
            pid = int(self._pid_file(MEMBERS[name]).read_text())
            os.kill(pid, 0)
        except (OSError, ValueError):
            return None
        return pid

    def _rabbit_env(self, member: Member) -> dict[str, str]:
        home = self.base / "home"
        d = self._dir(member)
        return {
            **os.environ,
            "HOME": str(home),  # its .erlang.cookie: one for the three nodes and rabbitmqctl
            "RABBITMQ_NODENAME": member.node,
            "RABBITMQ_NODE_IP_ADDRESS": HOST,
            "RABBITMQ_NODE_PORT": str(member.port),
            "RABBITMQ_DIST_PORT": str(member.port + 20000),
            "RABBITMQ_MNESIA_BASE": str(d / "mnesia"),
            "RABBITMQ_LOG_BASE": str(d / "log"),
            "RABBITMQ_CONFIG_FILE": str(d / "rabbitmq.conf"),
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(d / "advanced.config"),
            "RABBITMQ_CONF_ENV_FILE": str(home / "rabbitmq-env.conf"),  # empty: not the system's NODENAME
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(home / "enabled_plugins"),
            "RABBITMQ_PID_FILE": str(d / "rabbit.pid"),
            "ERL_EPMD_ADDRESS": HOST,
        }

    def _write_files(self) -> None:
        home = self.base / "home"
        home.mkdir(parents=True, exist_ok=True)
        cookie = home / ".erlang.cookie"
        if not cookie.exists():
            cookie.write_text(secrets.token_hex(16).upper())
            cookie.chmod(0o400)
        (home / "rabbitmq-env.conf").write_text("")
        (home / "enabled_plugins").write_text("[].\n")
        for m in RABBITS:
            d = self._dir(m)
            d.mkdir(exist_ok=True)
            (d / "rabbitmq.conf").write_text(
                f"listeners.tcp.default = {HOST}:{m.port}\n"
                "queue_leader_locator = balanced\n"
                "log.console = false\nlog.file.level = warning\n"
            )
            # a delay tier's dead-lettering (at least once) resends what a target did not confirm after this long:
            # 3 minutes by default, when a node's restart lost the confirms (see deploy/README.md)
            (d / "advanced.config").write_text(
                f"[{{rabbit, [{{dead_letter_worker_publisher_confirm_timeout, {DLX_CONFIRM_TIMEOUT_MS}}}]}}].\n"
            )
        for m in (PRIMARY, REPLICA):
            d = self._dir(m)
            d.mkdir(exist_ok=True)
            lines = [f"port {m.port}", f"bind {HOST}", 'save ""', "appendonly no", f"dir {d}"]
            lines += [f"logfile {d / 'redis.log'}"]
            if m is REPLICA:
                lines.append(f"replicaof {HOST} {PRIMARY.port}")
            else:  # killed and started again, it comes back empty (no persistence here): a second failover that
                # picked it before its sync would leave no key at all (seen once, the Sentinels' 1 s down-after
                # under a concurrent test load). Never promoted, it only ever replicates once demoted.
                lines.append("replica-priority 0")
            (d / "redis.conf").write_text("\n".join(lines) + "\n")
        for m in SENTINELS:
            d = self._dir(m)
            d.mkdir(exist_ok=True)
            (d / "sentinel.conf").write_text(
                f"port {m.port}\nbind {HOST}\ndir {d}\nlogfile {d / 'sentinel.log'}\n"
                f"sentinel monitor {SERVICE} {HOST} {PRIMARY.port} 2\n"
                f"sentinel down-after-milliseconds {SERVICE} 1000\n"
                f"sentinel failover-timeout {SERVICE} 10000\n"
                f"sentinel parallel-syncs {SERVICE} 1\n"
            )

    def _launch(self, member: Member, *args: str) -> None:
        d = self._dir(member)
        if member.kind == "rabbit":
            argv, env = [_rabbit_bin("rabbitmq-server")], self._rabbit_env(member)
        elif member.kind == "redis":
            argv, env = ["redis-server", str(d / "redis.conf"), *args], dict(os.environ)
        else:
            argv, env = ["redis-server", str(d / "sentinel.conf"), "--sentinel"], dict(os.environ)
        with (d / "stdout.log").open("ab") as out:
            # a session of its own: `kill` and `down` signal the whole group (erl's helpers too)
            proc = subprocess.Popen(argv, env=env, cwd=d, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)  # noqa: S603 - our own argv
        self._pid_file(member).write_text(str(proc.pid))
        self._procs[member.name] = proc

    def ctl(self, member: Member, *args: str, timeout: float = 60) -> str:
        """`rabbitmqctl -n <node> args...` as the member's environment has it; its output."""
        done = subprocess.run(  # noqa: S603 - our own argv
            [_rabbit_bin("rabbitmqctl"), "-n", member.node, *args],
            env=self._rabbit_env(member),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"rabbitmqctl -n {member.node} {' '.join(args)}: {done.stderr.strip()[-500:]}")
        return done.stdout

    def _await_port(self, member: Member, timeout: float = BOOT_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                with socket.create_connection((HOST, member.port), timeout=1):
                    return
            except OSError:
                if self.pid(member.name) is None:
                    raise RuntimeError(f"{member.name} exited; see {self._dir(member)}") from None
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{member.name} not listening on {member.port} after {timeout:g} s") from None
                time.sleep(0.1)

    def _await_rabbit(self, member: Member) -> None:
        self._await_port(member)
        self.ctl(member, "await_startup", "--timeout", str(BOOT_TIMEOUT_S), timeout=BOOT_TIMEOUT_S + 5)

    # -- verbs ----------------------------------------------------------------------------------------

    def up(self) -> float:
        """Start everything; the seconds it took. A cluster already up is taken down first."""
        started = time.monotonic()
        self.down()
        self._write_files()
        for member in MEMBERS.values():
            self._launch(member)
        with concurrent.futures.ThreadPoolExecutor(len(RABBITS)) as pool:  # the nodes boot in parallel
            list(pool.map(self._await_rabbit, RABBITS))
        for member in RABBITS[1:]:
            self.ctl(member, "stop_app")
            self.ctl(member, "join_cluster", RABBITS[0].node)
            self.ctl(member, "start_app")
        for member in (PRIMARY, REPLICA, *SENTINELS):
            self._await_port(member)
        self.await_replica()
        return time.monotonic() - started

    def await_replica(self, timeout: float = 30) -> None:
        """Until the Sentinels agree on a primary, and it has a replica in sync."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            primary = self.primary()  # the Sentinels agree on it
            if primary is not None:
                info = _redis_cli(MEMBERS[primary].port, "INFO", "replication")
                if "connected_slaves:1" in info and ",state=online," in info:
                    return
            time.sleep(0.1)
        raise RuntimeError(f"the Redis replica or the Sentinels not ready after {timeout:g} s")

    def kill(self, name: str) -> None:
        """kill -9 the member (its whole process group)."""
        pid = self.pid(name)
        if pid is None:
            raise RuntimeError(f"{name} is not running")
        with_children(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while self.pid(name) is not None and time.monotonic() < deadline:
            time.sleep(0.05)

    def stop(self, name: str) -> None:
        """Stop a member cleanly (a RabbitMQ node with `rabbitmqctl stop`, the others with SIGTERM), until gone."""
        member, pid = MEMBERS[name], self.pid(name)
        if pid is None:
            raise RuntimeError(f"{name} is not running")
        if member.kind == "rabbit":
            self.ctl(member, "stop")
        else:
            with_children(pid, signal.SIGTERM)
        deadline = time.monotonic() + 30
        while self.pid(name) is not None:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name} still running 30 s after being stopped")
            time.sleep(0.05)
        with_children(pid, signal.SIGKILL)  # what is left of its group (epmd is not in it)

    def start(self, name: str) -> None:
        """Start a member again and wait until it serves (a RabbitMQ node: until it has booted). A Redis starts
        as a replica of the primary the Sentinels name: without persistence it comes back empty, and as a
        primary it would be one a Sentinel may promote (a Sentinel learns its replica-priority, 0 or not, only
        from a replica's INFO), and so empty the data, should a second failover follow the first (seen under CI
        load with the Sentinels' 1-s down-after: 976 of 1,500 jobs `rejected` for an unknown sender)."""
        member = MEMBERS[name]
        if self.pid(name) is not None:
            raise RuntimeError(f"{name} is running already")
        primary = self.primary() if member.kind == "redis" else None
        if primary is not None and primary != name:
            self._launch(member, "--replicaof", HOST, str(MEMBERS[primary].port))
        else:
            self._launch(member)
        if member.kind == "rabbit":
            self._await_rabbit(member)
        else:
            self._await_port(member)

    def down(self) -> None:
        """Kill whatever runs from the pid files, then remove the directory."""
        for name in MEMBERS:
            pid = self.pid(name)
            if pid is not None:
                with_children(pid, signal.SIGKILL)
        shutil.rmtree(self.base, ignore_errors=True)

    def primary(self) -> str | None:
        """The member every running Sentinel names as the Redis primary; None while they disagree (right after a
        failover, only its leader may know)."""
        replies = [
            _redis_cli(s.port, "SENTINEL", "get-master-addr-by-name", SERVICE).split()
            for s in SENTINELS
            if self.pid(s.name) is not None
        ]
        ports = {reply[-1] if reply else "" for reply in replies}
        if len(ports) != 1:
            return None
        port = ports.pop()
        return next((m.name for m in (PRIMARY, REPLICA) if str(m.port) == port), None)

    def leader(self, queue: str) -> str:
        """The RabbitMQ member leading a quorum queue (asked of a running node)."""
        member = next(m for m in RABBITS if self.pid(m.name) is not None)
        for line in self.ctl(member, "list_queues", "name", "leader", "--quiet", "--no-table-headers").splitlines():
            name, _, node = line.partition("\t")
            if name == queue:
                return next(m.name for m in RABBITS if m.node == node.strip())
        raise RuntimeError(f"no queue {queue!r}")

    def queues(self, prefix: str) -> str:
        """The queues whose names start with `prefix` that hold messages, as {name, ready, unacknowledged,
        dead-lettered but not yet moved (at-least-once: invisible to `list_queues`), consumers}."""
        member = next(m for m in RABBITS if self.pid(m.name) is not None)
        info = "I <- [rabbit_amqqueue:info(Q)]" + "".join(
            f", {var} <- [proplists:get_value({key}, I, 0)]"
            for var, key in (
                ("R", "messages_ready"),
                ("U", "messages_unacknowledged"),
                ("D", "messages_dlx"),
                ("C", "consumers"),
            )
        )
        expr = (
            '[{N, R, U, D, C} || Q <- rabbit_amqqueue:list(<<"/">>), '
            "{resource, _, queue, N} <- [amqqueue:get_name(Q)], "
            f'binary:longest_common_prefix([N, <<"{prefix}">>]) =:= {len(prefix.encode())}, {info}, R + U + D > 0].'
        )
        return self.ctl(member, "eval", expr, timeout=30).strip()

    def status(self) -> dict[str, object]:
        members = {
            name: {"kind": m.kind, "port": m.port, "pid": self.pid(name), "running": self.pid(name) is not None}
            for name, m in MEMBERS.items()
        }
        running = [m for m in RABBITS if self.pid(m.name) is not None]
        cluster: object = None
        if running:
            try:
                cluster = json.loads(self.ctl(running[0], "cluster_status", "--formatter", "json", timeout=15))
                cluster = {k: cluster[k] for k in ("disk_nodes", "running_nodes") if k in cluster}
            except (RuntimeError, subprocess.TimeoutExpired, ValueError) as exc:
                cluster = f"unknown: {exc}"
        return {
            "dir": str(self.base),
            "amqp_url": self.amqp_url,
            "redis_url": self.redis_url,
            "members": members,
            "rabbitmq": cluster,
            "redis_primary": self.primary(),
        }


def with_children(pgid: int, sig: signal.Signals) -> None:
    """Signal a process group (each member runs in a session of its own)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, sig)


def _redis_cli(port: int, *args: str) -> str:
    """`redis-cli` against a member; "" when it does not answer."""
    try:
        argv = ["redis-cli", "-h", HOST, "-p", str(port), *args]  # from the PATH, as redis-server
        done = subprocess.run(argv, capture_output=True, text=True, timeout=5, check=False)  # noqa: S603 - our own argv
    except subprocess.TimeoutExpired:
        return ""
    return done.stdout if done.returncode == 0 and not done.stdout.startswith(("Could not connect", "ERR")) else ""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="cluster.py", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--dir", help="where everything lives (default: $SMSFLEET_CLUSTER_DIR or /tmp/smsfleet-cluster)"
    )
    parser.add_argument("verb", choices=("up", "down", "kill", "stop", "start", "status", "env"))
    parser.add_argument("node", nargs="?", choices=sorted(MEMBERS), help="for kill, stop and start")
    parser.add_argument("--json", action="store_true", help="status as JSON")
    args = parser.parse_args(argv)
    cluster = Cluster(args.dir)
    if args.verb in ("kill", "stop", "start") and not args.node:
        parser.error(f"{args.verb} needs a NODE: {', '.join(MEMBERS)}")
    try:
        if args.verb == "up":
            took = cluster.up()
            print(f"up in {took:.1f} s")
            print(f"SMSFLEET_AMQP_URL={cluster.amqp_url}\nSMSFLEET_REDIS_URL={cluster.redis_url}")
        elif args.verb == "down":
            cluster.down()
        elif args.verb == "kill":
            cluster.kill(args.node)
        elif args.verb == "stop":
            cluster.stop(args.node)
        elif args.verb == "start":
            cluster.start(args.node)
        elif args.verb == "env":
            print(f"export SMSFLEET_AMQP_URL='{cluster.amqp_url}'\nexport SMSFLEET_REDIS_URL='{cluster.redis_url}'")
        else:
            status = cluster.status()
            if args.json:
                print(json.dumps(status, indent=2))
            else:
                for name, m in status["members"].items():  # type: ignore[attr-defined]
                    print(f"{name:14} {m['port']:>6}  {'running, pid ' + str(m['pid']) if m['running'] else 'down'}")
                print(f"rabbitmq: {status['rabbitmq']}\nredis primary: {status['redis_primary']}")
    except (RuntimeError, subprocess.TimeoutExpired) as exc:
        print(f"cluster: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
