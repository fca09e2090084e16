"""deploy/ against the code, so that the two cannot drift apart.

Every YAML file parses; the generated manifests are up to date; every environment variable is one that
`smsfleet/settings.py` reads (and Kubernetes sets them all); every command is one the CLI parser accepts;
queue names come from `topology.Names`; ports and probe paths are the ones the receiver and the workers
serve; terminationGracePeriodSeconds covers `--grace`; the alert rules use the metrics `smsfleet.metrics`
exports, with their labels. The Kubernetes objects are validated against the API schemas with
`kubernetes-validate` (the `dev` extra), the rules with promtool (Debian's `prometheus`; `.ci/run` installs it).
Where either is missing those tests are skipped, except under CI=true, where they fail.
"""

from __future__ import annotations

import ast
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tomllib
from argparse import Namespace
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import urlsplit

import prometheus_client
import pytest
import yaml

from cli import UserError, build_parser
from smsfleet import metrics
from smsfleet.contracts import State
from smsfleet.kinds import KINDS
from smsfleet.metrics import metrics_app
from smsfleet.settings import Settings
from smsfleet.topology import Names
from webhooks import MAX_BODY, Receiver, build_app

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
COMPOSE = DEPLOY / "docker-compose.yml"
ALERTS = DEPLOY / "prometheus" / "alerts.yml"
CUSTOM_API_GROUPS = ("keda.sh/", "monitoring.coreos.com/", "kustomize.config.k8s.io/")
#: the earliest and the latest Kubernetes the manifests must be valid for
K8S_VERSIONS = ("1.28.0", None)
CI = os.environ.get("CI", "").lower() == "true"


def require_tool(found: object, what: str) -> None:
    """Skip the test when a validating tool is missing, except under CI=true: there it fails (no silent skips)."""
    if found:
        return
    if CI:
        pytest.fail(f"{what} is not installed (CI=true: a missing tool is a failure)", pytrace=False)
    pytest.skip(f"{what} is not installed")


# -- helpers ------------------------------------------------------------------------------------------


def load_all(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d is not None]


@cache
def k8s_docs() -> tuple[tuple[str, dict[str, Any]], ...]:
    return tuple((p.name, d) for p in sorted(K8S.glob("*.yaml")) for d in load_all(p) if d["kind"] != "Kustomization")


def k8s(kind: str) -> list[dict[str, Any]]:
    return [d for _, d in k8s_docs() if d["kind"] == kind]


def k8s_one(kind: str, name: str) -> dict[str, Any]:
    found = [d for d in k8s(kind) if d["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name}, found {len(found)}"
    return found[0]


@cache
def compose() -> dict[str, Any]:
    doc = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    assert isinstance(doc, dict)
    return doc


def smsfleet_services() -> dict[str, dict[str, Any]]:
    """Compose services that run the smsfleet image."""
    return {n: s for n, s in compose()["services"].items() if s.get("image", "").startswith("smsfleet")}


def parse(argv: list[str]) -> Namespace:
    """Parse a command line of `smsfleet` exactly as the CLI does; a mistake fails the test."""
    try:
        return build_parser().parse_args(argv)
    except UserError as exc:
        pytest.fail(f"smsfleet {' '.join(argv)}: {exc}")


def containers() -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    """(Deployment, container) for every container of every Deployment."""
    for deployment in k8s("Deployment"):
        for container in deployment["spec"]["template"]["spec"]["containers"]:
            yield deployment, container


def worker_deployments() -> list[tuple[dict[str, Any], dict[str, Any], Namespace]]:
    out = []
    for deployment, container in containers():
        if container["args"][0] == "worker":
            out.append((deployment, container, parse(container["args"])))
    return out


@cache
def settings_env_vars() -> frozenset[str]:
    """The variables `Settings.from_env` reads: the names given to `get`, `number` and `listed` in settings.py."""
    tree = ast.parse((ROOT / "smsfleet" / "settings.py").read_text(encoding="utf-8"))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            func = node.func
            called = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""
            value = node.args[0].value
            reader = called in ("get", "number", "listed")
            if reader and isinstance(value, str) and re.fullmatch(r"[A-Z][A-Z0-9_]+", value):
                names.add(value)
    assert "SMSFLEET_AMQP_URL" in names, "settings.py no longer reads variables through get(...): update this test"
    return frozenset(names)


def is_ours(var: str) -> bool:
    return var.startswith(("SMSFLEET_", "PLAY_MOBILE_"))


def worker_routes() -> set[str]:
    app = metrics_app(live=lambda: True, ready=lambda: True)
    return {r.resource.canonical for r in app.router.routes() if r.method == "GET" and r.resource is not None}


def webhooks_routes() -> set[str]:
    app = build_app(Receiver(Settings()))
    return {r.resource.canonical for r in app.router.routes() if r.method == "GET" and r.resource is not None}


def load_generator(path: Path = K8S / "generate.py") -> ModuleType:
    """A generator script of deploy/ (not a package) as a module."""
    name = "deploy_" + "_".join(path.relative_to(DEPLOY).with_suffix("").parts)
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def broker_names() -> Names:
    config = k8s_one("ConfigMap", "smsfleet-config")
    return Names(config["data"].get("SMSFLEET_NAMESPACE") or "smsfleet")


# -- every file ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    sorted([*DEPLOY.rglob("*.yaml"), *DEPLOY.rglob("*.yml")]),
    ids=lambda p: str(p.relative_to(DEPLOY)),
)
def test_every_yaml_file_parses(path: Path) -> None:
    docs = load_all(path)
    assert docs, f"{path} holds no document"
    assert all(isinstance(d, dict) for d in docs)


def test_generated_manifests_are_up_to_date() -> None:
    generator = load_generator()
    for name, text in generator.render().items():
        on_disk = (K8S / name).read_text(encoding="utf-8")
        assert on_disk == text, f"deploy/k8s/{name} is out of date: run .venv/bin/python deploy/k8s/generate.py"


def test_kustomization_lists_every_manifest() -> None:
    (kustomization,) = load_all(K8S / "kustomization.yaml")
    files = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kustomization["resources"]) == files
    assert {i["name"] for i in kustomization["images"]} == {c["image"] for _, c in containers()}


# -- environment variables ----------------------------------------------------------------------------


def test_kubernetes_sets_exactly_the_variables_settings_reads() -> None:
    config = k8s_one("ConfigMap", "smsfleet-config")["data"]
    secret = k8s_one("Secret", "smsfleet-secrets")["stringData"]
    assert not set(config) & set(secret), "a variable is in both the ConfigMap and the Secret"
    assert set(config) | set(secret) == settings_env_vars()
    assert {"SMSFLEET_AMQP_URL", "SMSFLEET_REDIS_URL", "SMSFLEET_SECRET_KEY"} <= set(secret)
    assert all(isinstance(v, str) for v in [*config.values(), *secret.values()]), "ConfigMap values are strings"
    for _, container in containers():
        refs = {(next(iter(r)), next(iter(r.values()))["name"]) for r in container["envFrom"]}
        assert refs == {("configMapRef", "smsfleet-config"), ("secretRef", "smsfleet-secrets")}
        assert not container.get("env"), "configuration goes through the ConfigMap and the Secret"


def test_compose_and_dockerfile_set_only_known_variables() -> None:
    known = settings_env_vars()
    for name, service in smsfleet_services().items():
        env = service["environment"]
        assert {"SMSFLEET_AMQP_URL", "SMSFLEET_REDIS_URL", "SMSFLEET_NAMESPACE"} <= set(env), name
        unknown = {v for v in env if is_ours(v)} - known
        assert not unknown, f"compose service {name} sets variables smsfleet does not read: {unknown}"
    dockerfile_vars = set(re.findall(r"\b((?:SMSFLEET|PLAY_MOBILE)_[A-Z0-9_]+)=", (ROOT / "Dockerfile").read_text()))
    assert dockerfile_vars <= known


def test_compose_urls_point_at_its_services() -> None:
    env = next(iter(smsfleet_services().values()))["environment"]
    services = compose()["services"]
    amqp, redis = urlsplit(env["SMSFLEET_AMQP_URL"]), urlsplit(env["SMSFLEET_REDIS_URL"])
    assert (amqp.scheme, amqp.hostname, amqp.port) == ("amqp", "rabbitmq", 5672)
    assert (redis.scheme, redis.hostname, redis.port) == ("redis", "redis", 6379)
    assert amqp.username == services["rabbitmq"]["environment"]["RABBITMQ_DEFAULT_USER"]


# -- commands -----------------------------------------------------------------------------------------


def test_every_compose_command_is_accepted_by_the_cli() -> None:
    for name, service in smsfleet_services().items():
        if service["command"] == ["--help"]:
            continue
        args = parse(service["command"])
        assert callable(args.func), name


def test_every_kubernetes_command_is_accepted_by_the_cli() -> None:
    for deployment, container in containers():
        assert "command" not in container, "the image's entrypoint (tini -- smsfleet) must stay"
        args = parse(container["args"])
        assert callable(args.func), deployment["metadata"]["name"]


def test_dockerfile_cmd_is_accepted_by_the_cli() -> None:
    text = (ROOT / "Dockerfile").read_text()
    (cmd,) = re.findall(r"^CMD (.+)$", text, re.M)
    assert yaml.safe_load(cmd) == ["--help"] or parse(yaml.safe_load(cmd))


# -- compose ------------------------------------------------------------------------------------------


def test_compose_runs_the_topology_first_and_every_role() -> None:
    services = compose()["services"]
    assert "management" in services["rabbitmq"]["image"]
    assert services["rabbitmq"]["healthcheck"]["test"]
    assert services["redis"]["healthcheck"]["test"]
    redis_cmd = services["redis"]["command"]
    assert redis_cmd[redis_cmd.index("--appendonly") + 1] == "yes"

    topology = parse(services["topology"]["command"])
    assert (topology.command, topology.action) == ("topology", "declare")
    assert services["topology"]["restart"] == "no"
    assert services["topology"]["depends_on"]["rabbitmq"]["condition"] == "service_healthy"

    roles: set[str] = set()
    gateways: list[str] = []
    for name, service in smsfleet_services().items():
        if name == "topology":
            continue
        depends = service["depends_on"]
        assert depends["topology"]["condition"] == "service_completed_successfully", name
        assert depends["rabbitmq"]["condition"] == depends["redis"]["condition"] == "service_healthy", name
        args = parse(service["command"]) if service["command"] != ["--help"] else None
        if args is not None and args.command == "worker":
            roles.add(args.role)
            gateways += args.gateway or []
            stop = int(str(service["stop_grace_period"]).removesuffix("s"))
            assert stop >= args.grace + 5, f"{name}: stop_grace_period must cover --grace {args.grace}"
            assert args.metrics_port is not None
            assert f":{args.metrics_port}/livez" in " ".join(service["healthcheck"]["test"])
            assert "/livez" in worker_routes()
        if args is not None and args.command == "webhooks":
            roles.add("webhooks")
            assert any(str(p).endswith(f":{args.port}") for p in service["ports"])
            assert f":{args.port}/readyz" in " ".join(service["healthcheck"]["test"])
            assert "/readyz" in webhooks_routes()
    assert roles == {"send", "status", "suppression", "webhooks"}
    assert sorted(gateways) == sorted(KINDS), "every gateway kind needs a send worker service (active or profile)"
    for kind in ("sandbox", "smsc", "infobip"):
        assert "profiles" not in services[f"send-{kind}"], f"send-{kind} runs by default"


# -- Kubernetes: workers ------------------------------------------------------------------------------


def test_a_send_worker_deployment_and_scaled_object_per_gateway() -> None:
    names = broker_names()
    sends = {args.gateway[0]: (d, c, args) for d, c, args in worker_deployments() if args.role == "send"}
    assert sorted(sends) == sorted(KINDS)
    trigger_auths = {t["metadata"]["name"]: t for t in k8s("TriggerAuthentication")}
    secret = k8s_one("Secret", "smsfleet-secrets")["stringData"]
    scaled = {s["spec"]["scaleTargetRef"]["name"]: s for s in k8s("ScaledObject")}
    assert len(scaled) == len(KINDS) == len(k8s("ScaledObject"))
    for kind, (deployment, _, args) in sends.items():
        name = deployment["metadata"]["name"]
        assert args.gateway == [kind], f"{name}: one gateway per Deployment"
        assert deployment["spec"]["template"]["metadata"]["labels"]["smsfleet/gateway"] == kind
        assert "replicas" not in deployment["spec"], f"{name}: KEDA owns the replica count"
        spec = scaled[name]["spec"]
        assert 0 <= spec["minReplicaCount"] <= spec["maxReplicaCount"]
        (trigger,) = spec["triggers"]
        assert trigger["type"] == "rabbitmq"
        assert trigger["metadata"]["queueName"] == names.send_queue(kind)
        assert trigger["metadata"]["mode"] == "QueueLength"
        assert all(isinstance(v, str) for v in trigger["metadata"].values()), "KEDA metadata values are strings"
        auth = trigger_auths[trigger["authenticationRef"]["name"]]
        (ref,) = auth["spec"]["secretTargetRef"]
        assert ref["parameter"] == "host"
        assert ref["name"] == "smsfleet-secrets"
        assert ref["key"] in secret


def test_status_and_suppression_workers() -> None:
    roles = sorted(args.role for _, _, args in worker_deployments() if args.role != "send")
    assert roles == ["status", "suppression"]


def test_workers_drain_within_the_termination_grace_period_and_have_probes() -> None:
    routes = worker_routes()
    for deployment, container, args in worker_deployments():
        name = deployment["metadata"]["name"]
        pod = deployment["spec"]["template"]["spec"]
        assert pod["terminationGracePeriodSeconds"] == args.grace + 5, f"{name}: --grace {args.grace} + 5 s"
        (port,) = container["ports"]
        assert (port["name"], port["containerPort"]) == ("metrics", args.metrics_port), name
        assert container["livenessProbe"]["httpGet"]["path"] == "/livez"
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
        assert container["startupProbe"]["httpGet"]["path"] == "/livez"
        for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
            get = container[probe]["httpGet"]
            assert get["path"] in routes, f"{name}: the worker serves no {get['path']}"
            assert get["port"] == "metrics"
        annotations = deployment["spec"]["template"]["metadata"]["annotations"]
        assert annotations["prometheus.io/port"] == str(args.metrics_port)
        assert annotations["prometheus.io/path"] in routes


def test_every_container_has_resources_and_runs_as_non_root() -> None:
    for deployment, container in containers():
        name = deployment["metadata"]["name"]
        assert {"cpu", "memory"} <= set(container["resources"]["requests"]), name
        assert "memory" in container["resources"]["limits"], name
        pod = deployment["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] != 0
        assert container["securityContext"]["allowPrivilegeEscalation"] is False


# -- Kubernetes: webhooks -----------------------------------------------------------------------------


def test_webhooks_ports_probes_service_and_ingress() -> None:
    routes = webhooks_routes()
    deployment = k8s_one("Deployment", "smsfleet-webhooks")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    args = parse(container["args"])
    assert args.command == "webhooks"
    port, metrics_port = container["ports"]
    assert (port["name"], port["containerPort"]) == ("http", args.port)
    assert (metrics_port["name"], metrics_port["containerPort"]) == ("metrics", args.metrics_port)
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        assert container[probe]["httpGet"]["path"] in routes
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == str(args.metrics_port), "/metrics is not on the public port"
    assert annotations["prometheus.io/path"] in worker_routes()  # `--metrics-port` serves the same app

    service = k8s_one("Service", "smsfleet-webhooks")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    (service_port,) = service["spec"]["ports"]
    assert service_port["targetPort"] == port["name"]

    ingress = k8s_one("Ingress", "smsfleet-webhooks")
    public = urlsplit(k8s_one("ConfigMap", "smsfleet-config")["data"]["SMSFLEET_PUBLIC_URL"])
    (rule,) = ingress["spec"]["rules"]
    assert rule["host"] == public.hostname, "SMSFLEET_PUBLIC_URL must name the Ingress host"
    assert public.scheme == "https"
    assert public.hostname in ingress["spec"]["tls"][0]["hosts"]
    paths = rule["http"]["paths"]
    for path in paths:
        backend = path["backend"]["service"]
        assert backend == {"name": service["metadata"]["name"], "port": {"name": service_port["name"]}}
    public_routes = [r for r in routes if r.startswith(("/smslistener/", "/l/"))]
    assert any(r.startswith("/smslistener/") for r in public_routes), "the receiver has no callback route"
    assert all(any(r.startswith(p["path"]) for p in paths) for r in public_routes)
    private = routes - set(public_routes)
    assert not any(r.startswith(p["path"]) for r in private for p in paths), "probes and /metrics stay private"
    size = ingress["metadata"]["annotations"]["nginx.ingress.kubernetes.io/proxy-body-size"]
    assert int(size.removesuffix("k")) * 1024 >= MAX_BODY, "the Ingress must let the receiver answer 413 itself"


# -- Kubernetes: references between objects -----------------------------------------------------------


def test_every_deployment_has_a_disruption_budget_and_selectors_match() -> None:
    budgets = k8s("PodDisruptionBudget")
    for deployment in k8s("Deployment"):
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        selector = deployment["spec"]["selector"]["matchLabels"]
        assert selector.items() <= labels.items()
        matching = [b for b in budgets if b["spec"]["selector"]["matchLabels"].items() <= labels.items()]
        assert len(matching) == 1, f"{deployment['metadata']['name']}: {len(matching)} PodDisruptionBudgets"
    for budget in budgets:
        selector = budget["spec"]["selector"]["matchLabels"].items()
        assert sum(selector <= d["spec"]["template"]["metadata"]["labels"].items() for d in k8s("Deployment")) == 1


def test_namespaces_and_references_resolve() -> None:
    for _, doc in k8s_docs():
        if doc["kind"] != "Namespace":
            assert doc["metadata"]["namespace"] == "smsfleet", f"{doc['kind']} {doc['metadata']['name']}"
    service_accounts = {s["metadata"]["name"] for s in k8s("ServiceAccount")}
    for deployment in k8s("Deployment"):
        assert deployment["spec"]["template"]["spec"]["serviceAccountName"] in service_accounts
    ports = {p["name"] for _, c in containers() for p in c["ports"]}
    for monitor in k8s("PodMonitor"):
        assert {e["port"] for e in monitor["spec"]["podMetricsEndpoints"]} <= ports


@pytest.mark.parametrize("version", K8S_VERSIONS, ids=lambda v: v or "latest")
def test_kubernetes_objects_validate_against_the_api_schemas(version: str | None) -> None:
    require_tool(importlib.util.find_spec("kubernetes_validate"), "kubernetes-validate (pip install -e '.[dev]')")
    import kubernetes_validate  # noqa: PLC0415 - only with the optional tool
    from kubernetes_validate.utils import latest_version  # noqa: PLC0415 - only with the optional tool

    checked = 0
    for file, doc in k8s_docs():
        if doc["apiVersion"].startswith(CUSTOM_API_GROUPS):
            continue  # KEDA and Prometheus Operator resources: checked structurally above
        try:
            kubernetes_validate.validate(doc, version or latest_version(), strict=True)
        except kubernetes_validate.ValidationError as exc:
            path = ".".join(str(p) for p in exc.path)
            pytest.fail(f"{file}: {doc['kind']} {doc['metadata']['name']}: {path}: {exc.message}")
        checked += 1
    assert checked >= len(KINDS) * 2


# -- the image ----------------------------------------------------------------------------------------


def test_dockerfile_slim_non_root_exec_form_one_image_for_every_role() -> None:
    text = (ROOT / "Dockerfile").read_text()
    bases = re.findall(r"^FROM (\S+)", text, re.M)
    assert bases
    assert all("-slim" in b for b in bases)
    runtime = text[text.rindex("\nFROM ") :]
    (user,) = re.findall(r"^USER (\S+)", runtime, re.M)
    assert user.split(":")[0] not in ("0", "root")
    assert user.split(":")[0].isdigit(), "numeric, so that runAsNonRoot can check it"
    (entrypoint,) = re.findall(r"^ENTRYPOINT (.+)$", runtime, re.M)
    argv = yaml.safe_load(entrypoint)
    assert isinstance(argv, list), "exec form: a JSON array, no shell in between"
    assert argv[0].endswith("tini")
    assert argv[-1] == "smsfleet"
    exposed = {int(p) for line in re.findall(r"^EXPOSE (.+)$", runtime, re.M) for p in line.split()}
    ports = {p["containerPort"] for _, c in containers() for p in c["ports"]}
    assert ports <= exposed
    run_as = {d["spec"]["template"]["spec"]["securityContext"]["runAsUser"] for d in k8s("Deployment")}
    assert run_as == {int(user.split(":")[0])}


def test_dockerignore_lets_in_every_package_pyproject_ships() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    packages = {p.rstrip("*").rstrip(".") for p in project["tool"]["setuptools"]["packages"]["find"]["include"]}
    allowed = {
        line[1:].rstrip("/") for line in (ROOT / ".dockerignore").read_text().splitlines() if line.startswith("!")
    }
    assert packages | {"pyproject.toml", project["project"]["readme"]} <= allowed


# -- alert rules --------------------------------------------------------------------------------------

#: label values the alerts may match on, per metric and label (the metrics contract of the issue)
LABEL_VALUES = {
    ("smsfleet_provider_requests_total", "outcome"): {"ok", "permanent", "transient", "ambiguous", "rate_limited"},
    ("smsfleet_reports_total", "result"): {"matched", "unmatched", "ignored"},
    ("smsfleet_rechecks_total", "result"): {"final", "pending", "failed", "horizon"},
    ("smsfleet_jobs_total", "state"): {s.value for s in State if s.final},
}
#: each concern of the issue has an alert on this metric
MUST_ALERT_ON = {
    "smsfleet_queue_oldest_message_age_seconds",
    "smsfleet_dead_lettered_total",
    "smsfleet_reports_total",
    "smsfleet_provider_requests_total",
    "smsfleet_rate_limit_wait_seconds_bucket",
}
_SELECTOR = re.compile(r"\b(smsfleet_[a-z_]+)\b(?:\s*\{([^}]*)\})?")
_MATCHER = re.compile(r'([a-z_]+)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"')


@cache
def exported_series() -> dict[str, frozenset[str]]:
    """Series name -> label names, for every metric in smsfleet.metrics (as Prometheus will see them)."""
    series: dict[str, frozenset[str]] = {}
    for value in vars(metrics).values():
        if not isinstance(value, prometheus_client.metrics.MetricWrapperBase):
            continue
        # the collector's name, type and label names are not public API; they have been stable for years
        name, kind, labels = value._name, value._type, frozenset(value._labelnames)
        if kind == "counter":
            series[f"{name}_total"] = labels
        elif kind == "histogram":
            for suffix in ("_count", "_sum"):
                series[name + suffix] = labels
            series[f"{name}_bucket"] = labels | {"le"}
        else:
            series[name] = labels
    return series


def known_queues() -> set[str]:
    names = Names()  # alerts.yml is written for the default namespace
    return {names.send_queue(k) for k in KINDS} | {names.status_queue, names.inbound_queue, names.dead_queue}


def alert_rules() -> list[dict[str, Any]]:
    return [rule for group in load_all(ALERTS)[0]["groups"] for rule in group["rules"]]


def test_alert_rules_are_complete() -> None:
    rules = alert_rules()
    names = [r["alert"] for r in rules]
    assert len(names) == len(set(names)), "alert names are unique"
    for rule in rules:
        assert rule["labels"]["severity"] in ("warning", "critical"), rule["alert"]
        assert rule["annotations"]["summary"]
        assert rule["annotations"]["description"]
    used = {m for rule in rules for m, _ in _SELECTOR.findall(rule["expr"])}
    assert used >= MUST_ALERT_ON


def test_alert_rules_use_exported_metrics_and_labels() -> None:
    series = exported_series()
    queues = known_queues()
    for rule in alert_rules():
        expr, alert = rule["expr"], rule["alert"]
        labels_in_expr: set[str] = set()
        for metric, matchers in _SELECTOR.findall(expr):
            assert metric in series, f"{alert}: {metric} is not exported by smsfleet.metrics"
            labels_in_expr |= series[metric]
            for label, op, value in _MATCHER.findall(matchers):
                assert label in series[metric], f"{alert}: {metric} has no label {label}"
                allowed = queues if label == "queue" else LABEL_VALUES.get((metric, label))
                if allowed is None:
                    continue
                pattern = value.replace("\\\\", "\\")
                hits = {v for v in allowed if re.fullmatch(pattern if "~" in op else re.escape(pattern), v)}
                assert hits, f"{alert}: {label}{op}{value!r} matches no known value of {metric}"
        if "label_replace" in expr:
            labels_in_expr |= set(re.findall(r'label_replace\([^"]*"([a-z_]+)"', expr, re.S))
        for group in re.findall(r"\b(?:by|on|without)\s*\(([^)]*)\)", expr):
            for label in filter(None, (x.strip() for x in group.split(","))):
                assert label in labels_in_expr, f"{alert}: groups by {label}, which its metrics do not have"


def test_send_queue_alerts_cover_every_send_queue_and_nothing_else() -> None:
    names = Names()
    for rule in alert_rules():
        for _, matchers in _SELECTOR.findall(rule["expr"]):
            for label, op, value in _MATCHER.findall(matchers):
                if label == "queue" and op == "=~" and "send" in value:
                    pattern = value.replace("\\\\", "\\")
                    assert all(re.fullmatch(pattern, names.send_queue(k)) for k in KINDS)
                    others = (names.status_queue, names.inbound_queue, names.dead_queue, names.delay_queue("send", 5))
                    assert not any(re.fullmatch(pattern, q) for q in others)


def test_alert_rules_pass_promtool(tmp_path: Path) -> None:
    """`promtool check rules`, then unit tests of the main alerts on synthetic series."""
    promtool = shutil.which("promtool")
    require_tool(promtool, "promtool (Debian: apt-get install prometheus)")
    assert promtool is not None
    check = subprocess.run([promtool, "check", "rules", str(ALERTS)], capture_output=True, text=True, check=False)  # noqa: S603
    assert check.returncode == 0, check.stdout + check.stderr
    # annotations are templates; the unit tests compare labels only
    doc = load_all(ALERTS)[0]
    for group in doc["groups"]:
        for rule in group["rules"]:
            rule.pop("annotations", None)
    rules = tmp_path / "rules.yml"
    rules.write_text(yaml.safe_dump(doc))
    tests = tmp_path / "tests.yml"
    tests.write_text(yaml.safe_dump(PROMTOOL_TESTS | {"rule_files": [str(rules)]}))
    result = subprocess.run([promtool, "test", "rules", str(tests)], capture_output=True, text=True, check=False)  # noqa: S603
    assert result.returncode == 0, result.stdout + result.stderr


PROMTOOL_TESTS: dict[str, Any] = {
    "evaluation_interval": "1m",
    "tests": [
        {
            "interval": "1m",
            "input_series": [
                # smsc: a backlog, nothing consumed; infobip: a backlog being consumed
                {"series": 'smsfleet_queue_depth{queue="smsfleet.send.smsc",pod="a"}', "values": "100x40"},
                {"series": 'smsfleet_queue_depth{queue="smsfleet.send.smsc",pod="b"}', "values": "100x40"},
                {"series": 'smsfleet_jobs_consumed_total{gateway="smsc",pod="a"}', "values": "5x40"},
                {"series": 'smsfleet_queue_depth{queue="smsfleet.send.infobip",pod="c"}', "values": "100x40"},
                {"series": 'smsfleet_jobs_consumed_total{gateway="infobip",pod="c"}', "values": "0+60x40"},
                {
                    "series": 'smsfleet_queue_oldest_message_age_seconds{queue="smsfleet.send.infobip",pod="c"}',
                    "values": "400x40",
                },
                # smsc: half of the requests fail transiently; infobip: all fine
                {"series": 'smsfleet_provider_requests_total{gateway="smsc",outcome="ok"}', "values": "0+60x40"},
                {
                    "series": 'smsfleet_provider_requests_total{gateway="smsc",outcome="transient"}',
                    "values": "0+60x40",
                },
                {"series": 'smsfleet_provider_requests_total{gateway="infobip",outcome="ok"}', "values": "0+60x40"},
                # infobip: 10% of the reports unmatched
                {"series": 'smsfleet_reports_total{gateway="infobip",result="matched"}', "values": "0+54x40"},
                {"series": 'smsfleet_reports_total{gateway="infobip",result="unmatched"}', "values": "0+6x40"},
                # smsc: every request waits 1-2 s for the rate limit
                {"series": 'smsfleet_rate_limit_wait_seconds_bucket{gateway="smsc",le="1"}', "values": "0x40"},
                {"series": 'smsfleet_rate_limit_wait_seconds_bucket{gateway="smsc",le="2"}', "values": "0+60x40"},
                {"series": 'smsfleet_rate_limit_wait_seconds_bucket{gateway="smsc",le="+Inf"}', "values": "0+60x40"},
                # send workers: the broker stops confirming at minute 10, for 20 minutes
                {
                    "series": 'smsfleet_publish_retries_total{role="send",why="timed_out"}',
                    "values": "0x10 50+50x19 1000x30",
                },
                # 3 invalid jobs dead-lettered at minute 41; the dead queue grows
                {"series": 'smsfleet_dead_lettered_total{reason="invalid"}', "values": "0x40 3x20"},
                {"series": 'smsfleet_queue_depth{queue="smsfleet.dead",pod="s"}', "values": "0x40 3x20"},
            ],
            "alert_rule_test": [
                {
                    "eval_time": "30m",
                    "alertname": "SmsfleetSendQueueStalled",
                    "exp_alerts": [
                        {"exp_labels": {"severity": "critical", "queue": "smsfleet.send.smsc", "gateway": "smsc"}}
                    ],
                },
                {
                    "eval_time": "30m",
                    "alertname": "SmsfleetSendQueueOldMessages",
                    "exp_alerts": [{"exp_labels": {"severity": "warning", "queue": "smsfleet.send.infobip"}}],
                },
                {"eval_time": "30m", "alertname": "SmsfleetSendQueueOldMessagesCritical", "exp_alerts": []},
                {
                    "eval_time": "30m",
                    "alertname": "SmsfleetProviderErrors",
                    "exp_alerts": [{"exp_labels": {"severity": "warning", "gateway": "smsc"}}],
                },
                {"eval_time": "30m", "alertname": "SmsfleetProviderDown", "exp_alerts": []},
                {
                    "eval_time": "30m",
                    "alertname": "SmsfleetUnmatchedReports",
                    "exp_alerts": [{"exp_labels": {"severity": "warning", "gateway": "infobip"}}],
                },
                {
                    "eval_time": "30m",
                    "alertname": "SmsfleetRateLimitSaturated",
                    "exp_alerts": [{"exp_labels": {"severity": "warning", "gateway": "smsc"}}],
                },
                {
                    "eval_time": "45m",
                    "alertname": "SmsfleetDeadLettered",
                    "exp_alerts": [{"exp_labels": {"severity": "warning", "reason": "invalid"}}],
                },
                {"eval_time": "45m", "alertname": "SmsfleetDeadLetterBurst", "exp_alerts": []},
                {"eval_time": "12m", "alertname": "SmsfleetBrokerNotTakingPublishes", "exp_alerts": []},
                {
                    "eval_time": "25m",
                    "alertname": "SmsfleetBrokerNotTakingPublishes",
                    "exp_alerts": [{"exp_labels": {"severity": "warning", "role": "send", "why": "timed_out"}}],
                },
                {"eval_time": "45m", "alertname": "SmsfleetBrokerNotTakingPublishes", "exp_alerts": []},
                {
                    "eval_time": "45m",
                    "alertname": "SmsfleetDeadQueueGrowing",
                    "exp_alerts": [{"exp_labels": {"severity": "warning", "queue": "smsfleet.dead"}}],
                },
                {"eval_time": "58m", "alertname": "SmsfleetDeadLettered", "exp_alerts": []},
            ],
        }
    ],
}
