"""docker-compose.yml, deploy/Dockerfile and the Prometheus and Grafana files, checked against the code.

Our machines have no Docker engine, so none of these files can be run here. These tests parse
them and hold them to what the code declares: the settings (libs/yidi/platform/settings.py),
the metrics ports, and every metric with its labels (libs/yidi/platform/metrics.py). A metric or
label renamed in the code fails here until the dashboard and the alerts follow it.
"""

from __future__ import annotations

import base64
import functools
import json
import os
import re
import shutil
import subprocess
import tomllib
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml
from faststream.prometheus.container import MetricsContainer
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.metrics import MetricWrapperBase

from yidi.platform import metrics
from yidi.platform.settings import SERVICE_METRICS_PORTS, Settings, settings_for

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
PROMETHEUS = DEPLOY / "prometheus"
GRAFANA = DEPLOY / "grafana"
# Labels Prometheus adds to every scraped series.
TARGET_LABELS = {"job", "instance"}


# ---- reading the files --------------------------------------------------------------------


@functools.cache
def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def service(name: str) -> dict:
    return compose()["services"][name]


def environment(name: str) -> dict[str, str]:
    env = service(name).get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {key: str(value) for key, value in env.items()}


def yidi_services() -> set[str]:
    """The compose services built from our Dockerfile."""
    return {
        name for name, svc in compose()["services"].items()
        if (svc.get("build") or {}).get("dockerfile") == "deploy/Dockerfile"
    }


def bind_mounts(name: str) -> dict[str, str]:
    """Repository path (relative, no ./) -> path in the container, for the service's bind mounts."""
    mounts = {}
    for volume in service(name).get("volumes", []):
        source, target = volume.split(":")[:2]
        if source.startswith("./"):
            mounts[source.removeprefix("./").rstrip("/")] = target
    return mounts


@functools.cache
def dockerfile_stages() -> list[list[tuple[str, str]]]:
    """deploy/Dockerfile as stages of (INSTRUCTION, arguments), continuations joined."""
    text = re.sub(r"\\\n", " ", (DEPLOY / "Dockerfile").read_text())
    stages: list[list[tuple[str, str]]] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        instruction, _, arguments = line.partition(" ")
        if instruction.upper() == "FROM":
            stages.append([])
        stages[-1].append((instruction.upper(), arguments.strip()))
    return stages


def final_stage(instruction: str) -> list[str]:
    return [args for instr, args in dockerfile_stages()[-1] if instr == instruction]


def prometheus_jobs(config: str) -> dict[str, list[str]]:
    scrape_configs = yaml.safe_load((PROMETHEUS / config).read_text())["scrape_configs"]
    return {
        job["job_name"]: [target for static in job["static_configs"] for target in static["targets"]]
        for job in scrape_configs
    }


@functools.cache
def dashboard() -> dict:
    return json.loads((GRAFANA / "dashboards" / "yidi.json").read_text())


def dashboard_panels() -> list[dict]:
    return [p for p in dashboard()["panels"] if p["type"] != "row"]


def dashboard_targets() -> list[dict]:
    return [target for panel in dashboard_panels() for target in panel["targets"]]


def alert_rules() -> list[dict]:
    groups = yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def all_expressions() -> list[str]:
    return [t["expr"] for t in dashboard_targets()] + [rule["expr"] for rule in alert_rules()]


# ---- what the code declares ---------------------------------------------------------------

_SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
    "summary": ("", "_count", "_sum", "_created"),
}


@functools.cache
def declared_series() -> dict[str, frozenset[str]]:
    """Every series name /metrics exposes for the metrics of metrics.py (plus `up`, and the start
    time, memory and CPU prometheus_client's process collector exports), with its labels."""
    series = {name: frozenset(TARGET_LABELS) for name in (
        "up", "process_start_time_seconds", "process_resident_memory_bytes", "process_cpu_seconds_total")}
    # The feeds' failures, which FastStream's middleware (platform/service.py) counts: as its
    # installed version declares them.
    feeds = MetricsContainer(CollectorRegistry(), custom_label_names=()).received_processed_messages_exceptions_total
    series[feeds.describe()[0].name + "_total"] = frozenset(feeds._labelnames) | TARGET_LABELS
    for metric in vars(metrics).values():
        if isinstance(metric, MetricWrapperBase):
            (family,) = metric.describe()
            labels = set(metric._labelnames) | TARGET_LABELS
            for suffix in _SUFFIXES[family.type]:
                extra = {"le"} if suffix == "_bucket" else set()
                if family.type == "summary" and not suffix:
                    extra = {"quantile"}
                series[family.name + suffix] = frozenset(labels | extra)
    return series


def test_the_services_metrics_carry_their_process_start_time_memory_and_cpu():
    # YidiServiceRestarting counts the start time's changes, and the dashboard draws the memory and
    # CPU: the default registry, which serve_metrics serves, must export them.
    body = generate_latest(REGISTRY).decode()
    for name in ("process_start_time_seconds", "process_resident_memory_bytes", "process_cpu_seconds_total"):
        assert re.search(rf"^{name} \d", body, re.M), (name, body[:2000])


def declared_families() -> set[str]:
    return {m.describe()[0].name for m in vars(metrics).values() if isinstance(m, MetricWrapperBase)}


# ---- a small PromQL reader: enough for our own expressions --------------------------------

_GRAFANA_VARIABLE = re.compile(r"\$(?:\{[^}]*\}|\w+)")
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_RANGE = re.compile(r"\[[^\]]*\]")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
_SELECTOR = re.compile(r"(?<![\w:])([A-Za-z_:][\w:]*)?\s*\{([^}]*)\}")
_MATCHER_LABEL = re.compile(r"([A-Za-z_]\w*)\s*(?:=~|!~|!=|=)")
_OFFSET = re.compile(r"\boffset\s+-?\w+")
_IDENTIFIER = re.compile(r"(?<![\w.:])([A-Za-z_:][\w:]*)(\s*\()?")
_KEYWORDS = {"and", "or", "unless", "bool", "inf", "nan"}


def read_promql(expr: str) -> tuple[list[tuple[str, set[str]]], set[str]]:
    """(selectors as (metric name, labels its matchers use), labels of by/without/on clauses)."""
    text = _GRAFANA_VARIABLE.sub("5m", expr)
    text = _STRING.sub('""', text)
    text = _RANGE.sub("", text)
    grouping = {label.strip() for clause in _GROUPING.findall(text) for label in clause.split(",") if label.strip()}
    text = _GROUPING.sub(" ", text)
    selectors = [(name or "", set(_MATCHER_LABEL.findall(matchers))) for name, matchers in _SELECTOR.findall(text)]
    text = _SELECTOR.sub(lambda m: f" {m.group(1) or ''} ", text)
    text = _OFFSET.sub(" ", text)
    named = {name for name, _ in selectors}
    for name, call in _IDENTIFIER.findall(text):
        if not call and name not in _KEYWORDS and name not in named:
            selectors.append((name, set()))
    return selectors, grouping


def unknown_names(expr: str) -> list[str]:
    return [name for name, _ in read_promql(expr)[0] if name not in declared_series()]


def unknown_labels(expr: str) -> list[str]:
    selectors, grouping = read_promql(expr)
    problems = [
        f"{name}{{{label}}}" for name, labels in selectors if name in declared_series()
        for label in sorted(labels - declared_series()[name] - {"__name__"})
    ]
    available = set().union(*(declared_series().get(name, set()) for name, _ in selectors))
    problems += [f"by/without ({label})" for label in sorted(grouping - available)]
    return problems


# ---- the image -----------------------------------------------------------------------------


def test_the_image_is_python_3_11_slim_like_the_project():
    assert {stage[0][1].split()[0] for stage in dockerfile_stages()} == {"python:3.11-slim"}
    assert "3.11" in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]


def test_the_image_runs_as_an_unprivileged_user():
    users = final_stage("USER")
    assert users and users[-1] not in {"root", "0", "0:0"}


def test_the_image_copies_only_files_that_exist_and_the_build_context_lets_through():
    allowed = [line for line in (ROOT / ".dockerignore").read_text().splitlines() if line.startswith("!")]
    for stage in dockerfile_stages():
        for instruction, arguments in stage:
            if instruction == "COPY" and "--from=" not in arguments:
                *sources, _ = [a for a in arguments.split() if not a.startswith("--")]
                for source in sources:
                    assert (ROOT / source).exists(), source
                    assert f"!{source.rstrip('/')}" in {a.rstrip("/") for a in allowed}, source


def test_the_image_binds_metrics_on_every_interface():
    env = " ".join(final_stage("ENV"))
    assert "YIDI_METRICS_HOST=0.0.0.0" in env


# ---- the four services in compose ----------------------------------------------------------


def test_compose_runs_exactly_the_services_the_code_knows():
    assert yidi_services() == set(SERVICE_METRICS_PORTS)


@pytest.mark.parametrize("name", sorted(SERVICE_METRICS_PORTS))
def test_each_service_runs_as_python_m_services_name(name):
    entrypoint = service(name).get("entrypoint") or json.loads(final_stage("ENTRYPOINT")[-1])
    assert service(name)["build"]["context"] == "."
    assert [*entrypoint, *service(name)["command"]] == ["python", "-m", f"services.{name}"]


@pytest.mark.parametrize("name", sorted(SERVICE_METRICS_PORTS))
def test_each_service_serves_metrics_on_its_port_on_every_interface(name):
    port = SERVICE_METRICS_PORTS[name]
    assert environment(name)["YIDI_METRICS_PORT"] == str(port)
    assert environment(name)["YIDI_METRICS_HOST"] == "0.0.0.0"
    assert f"127.0.0.1:{port}:{port}" in service(name)["ports"]


def test_every_yidi_variable_in_compose_and_the_image_is_a_setting():
    variables = {key for name in compose()["services"] for key in environment(name) if key.startswith("YIDI_")}
    variables |= {key for env in final_stage("ENV") for key in re.findall(r"(YIDI_\w+)=", env)}
    assert variables
    assert {v.removeprefix("YIDI_").lower() for v in variables} <= set(Settings.model_fields)


@pytest.mark.parametrize("name", sorted(SERVICE_METRICS_PORTS))
def test_each_service_environment_builds_its_settings(name, monkeypatch):
    for key in [k for k in os.environ if k.startswith("YIDI_")]:
        monkeypatch.delenv(key)
    for key, value in environment(name).items():
        monkeypatch.setenv(key, value)
    settings = settings_for(name)
    assert settings.metrics_port == SERVICE_METRICS_PORTS[name]
    assert settings.metrics_host == "0.0.0.0"
    assert settings.kafka_bootstrap == environment(name)["YIDI_KAFKA_BOOTSTRAP"]
    # Two services with one instance name would fence each other's transactions.
    assert settings.instance == environment(name)["YIDI_INSTANCE"]


def test_no_two_services_share_an_instance_name():
    instances = [environment(name)["YIDI_INSTANCE"] for name in sorted(yidi_services())]
    assert len(set(instances)) == len(instances)


@pytest.mark.parametrize("name", sorted(SERVICE_METRICS_PORTS))
def test_each_service_reaches_kafka_postgres_and_redis_by_compose_names(name):
    env = environment(name)
    kafka = service("kafka")["environment"]
    advertised = {urlsplit(listener).netloc for listener in kafka["KAFKA_ADVERTISED_LISTENERS"].split(",")}
    for address in env["YIDI_KAFKA_BOOTSTRAP"].split(","):
        assert address.split(":")[0] in compose()["services"]
        assert address in advertised

    database = urlsplit(env["YIDI_DATABASE_URL"])
    postgres = service("postgres")["environment"]
    assert database.scheme in {"postgresql", "postgres"}
    assert database.hostname in compose()["services"] and service(database.hostname)["image"].startswith("postgres:")
    assert database.port == 5432
    assert database.username == postgres["POSTGRES_USER"]
    assert database.path == f"/{postgres['POSTGRES_DB']}"
    if postgres.get("POSTGRES_HOST_AUTH_METHOD") != "trust":
        assert database.password == postgres["POSTGRES_PASSWORD"]

    cache = urlsplit(env["YIDI_REDIS_URL"])
    assert cache.scheme == "redis"
    assert cache.hostname in compose()["services"] and service(cache.hostname)["image"].startswith("redis:")
    assert cache.port == 6379 and "--port" not in service(cache.hostname).get("command", [])

    brokers = [address.split(":")[0] for address in env["YIDI_KAFKA_BOOTSTRAP"].split(",")]
    for host in (database.hostname, cache.hostname, *brokers):
        assert host in service(name)["depends_on"], f"{name} does not wait for {host}"


@pytest.mark.parametrize("name", sorted(SERVICE_METRICS_PORTS))
def test_each_service_starts_after_healthy_kafka_and_postgres_and_reports_its_own_health(name):
    depends_on = service(name)["depends_on"]
    for dependency in ("kafka", "postgres"):
        assert depends_on[dependency]["condition"] == "service_healthy"
        assert service(dependency)["healthcheck"]["test"]
    check = " ".join(service(name)["healthcheck"]["test"])
    assert "YIDI_METRICS_PORT" in check
    assert metrics.SERVICE_UP.describe()[0].name in check


def test_the_host_tools_reach_the_compose_stack_with_the_default_settings():
    defaults = {f: Settings.model_fields[f].default for f in ("kafka_bootstrap", "database_url", "redis_url")}
    kafka = service("kafka")["environment"]
    advertised = {urlsplit(listener).netloc for listener in kafka["KAFKA_ADVERTISED_LISTENERS"].split(",")}
    assert defaults["kafka_bootstrap"] in advertised
    port = defaults["kafka_bootstrap"].split(":")[1]
    assert f"127.0.0.1:{port}:{port}" in service("kafka")["ports"]
    for server, url, inner in (("postgres", defaults["database_url"], 5432), ("redis", defaults["redis_url"], 6379)):
        assert f"127.0.0.1:{urlsplit(url).port}:{inner}" in service(server)["ports"]


def test_every_published_port_is_on_loopback_only():
    for name, svc in compose()["services"].items():
        for mapping in svc.get("ports", []):
            assert str(mapping).startswith("127.0.0.1:"), f"{name}: {mapping}"


def test_every_bind_mount_exists_in_the_repository():
    for name in compose()["services"]:
        for source in bind_mounts(name):
            assert (ROOT / source).exists(), f"{name}: {source}"


# ---- Kafka ---------------------------------------------------------------------------------


def kafka_properties_from_compose() -> dict[str, str]:
    """The image's rule: KAFKA_A_B -> a.b, ___ -> -, __ -> _ (KafkaDockerWrapper)."""
    return {
        key.removeprefix("KAFKA_").lower().replace("_", ".").replace("...", "-").replace("..", "_"): str(value)
        for key, value in service("kafka")["environment"].items() if key.startswith("KAFKA_")
    }


def test_kafka_is_configured_like_the_local_broker():
    template = (DEPLOY / "local" / "kafka" / "server.properties.in").read_text()
    local = dict(line.split("=", 1) for line in template.splitlines() if line.strip() and not line.startswith("#"))
    in_compose = kafka_properties_from_compose()
    # Addresses differ by design (container names, a second listener for the host).
    addresses = {"listeners", "advertised.listeners", "controller.quorum.voters", "log.dirs",
                 "listener.security.protocol.map"}
    assert {key: in_compose.get(key) for key in local if key not in addresses} == {
        key: value for key, value in local.items() if key not in addresses
    }
    protocols = "listener.security.protocol.map"
    assert set(local[protocols].split(",")) <= set(in_compose[protocols].split(","))
    for required in ("transaction.state.log.replication.factor", "transaction.state.log.min.isr",
                     "offsets.topic.replication.factor", "group.initial.rebalance.delay.ms"):
        assert in_compose[required] == {"group.initial.rebalance.delay.ms": "0"}.get(required, "1")
    assert in_compose["auto.create.topics.enable"] == "true"


def test_kafka_runs_the_version_of_the_local_broker_with_a_valid_cluster_id():
    pom = (DEPLOY / "local" / "kafka" / "pom.xml").read_text()
    version = re.search(r"<kafka\.version>([^<]+)</kafka\.version>", pom).group(1)
    assert service("kafka")["image"] == f"apache/kafka:{version}"
    cluster_id = service("kafka")["environment"]["CLUSTER_ID"]
    assert len(cluster_id) == 22 and len(base64.urlsafe_b64decode(cluster_id + "==")) == 16


# ---- Postgres ------------------------------------------------------------------------------


def test_compose_postgres_takes_the_local_clusters_settings():
    template = (DEPLOY / "local" / "postgres" / "postgresql.conf.in").read_text()
    local = {}
    for line in template.splitlines():
        if line.strip() and not line.startswith("#"):
            key, value = (part.strip() for part in line.split("=", 1))
            local[key] = value.strip("'")
    command = service("postgres")["command"]
    assert command[0] == "postgres" and command[1::2] == ["-c"] * (len(command) // 2)
    in_compose = dict(setting.split("=", 1) for setting in command[2::2])
    # The image's PostgreSQL is 15 or later: wal_compression is lz4 (the local stack picks it by version).
    local["wal_compression"] = "lz4"
    # All but where the local cluster listens and logs (the image's own: TCP in the container, stderr).
    where = ("listen_addresses", "port", "unix_socket_directories", "logging_collector", "log_line_prefix")
    assert in_compose == {key: value for key, value in local.items() if key not in where}
    postgres = service("postgres")
    assert postgres["environment"]["POSTGRES_INITDB_ARGS"] == "--no-locale -E UTF8"
    assert "-E UTF8 --no-locale" in (DEPLOY / "local" / "stack.sh").read_text()  # the local cluster's initdb
    assert postgres["shm_size"] == "256mb"


# ---- Prometheus ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("config", "host"), [("prometheus.yml", "{name}"), ("prometheus-local.yml", "127.0.0.1")]
)
def test_prometheus_scrapes_each_service_on_its_metrics_port(config, host):
    expected = {name: [f"{host.format(name=name)}:{port}"] for name, port in SERVICE_METRICS_PORTS.items()}
    assert prometheus_jobs(config) == expected


def test_the_compose_scrape_targets_are_compose_services():
    for targets in prometheus_jobs("prometheus.yml").values():
        for target in targets:
            assert target.split(":")[0] in yidi_services()


@pytest.mark.parametrize("config", ["prometheus.yml", "prometheus-local.yml"])
def test_prometheus_loads_the_alert_rules(config):
    rule_files = yaml.safe_load((PROMETHEUS / config).read_text())["rule_files"]
    assert rule_files == ["alerts.yml"]


def test_compose_prometheus_reads_the_repository_config():
    mounts = bind_mounts("prometheus")
    config = next(a.split("=", 1)[1] for a in service("prometheus")["command"] if a.startswith("--config.file="))
    assert mounts["deploy/prometheus"] == str(Path(config).parent)
    assert Path(config).name == "prometheus.yml"


# ---- Grafana -------------------------------------------------------------------------------


def grafana_datasource() -> dict:
    provisioning = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "prometheus.yml").read_text())
    (datasource,) = provisioning["datasources"]
    return datasource


def test_grafana_reads_the_compose_prometheus_at_its_scrape_interval():
    url = urlsplit(grafana_datasource()["url"])
    assert url.hostname == "prometheus" and url.hostname in compose()["services"]
    assert f"127.0.0.1:{url.port}:{url.port}" in service("prometheus")["ports"]
    scrape_interval = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())["global"]["scrape_interval"]
    assert grafana_datasource()["jsonData"]["timeInterval"] == scrape_interval


def test_grafana_loads_the_dashboards_folder_that_compose_mounts():
    mounts = bind_mounts("grafana")
    for kind in ("datasources", "dashboards"):
        assert mounts[f"deploy/grafana/provisioning/{kind}"] == f"/etc/grafana/provisioning/{kind}"
    (provider,) = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "yidi.yml").read_text())["providers"]
    assert provider["options"]["path"] == mounts["deploy/grafana/dashboards"]
    home = environment("grafana")["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert (GRAFANA / "dashboards" / Path(home).relative_to(provider["options"]["path"])).is_file()


def test_the_dashboard_is_grafana_json_on_the_provisioned_datasource():
    board = dashboard()
    assert board["uid"] and board["title"] and 36 <= board["schemaVersion"] <= 41
    ids = [panel["id"] for panel in board["panels"]]
    assert len(ids) == len(set(ids))
    for panel in board["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24 and grid["h"] > 0
    for panel in dashboard_panels():
        assert panel["targets"], panel["title"]
        for source in [panel["datasource"], *(t["datasource"] for t in panel["targets"])]:
            assert source == {"type": "prometheus", "uid": "${datasource}"}
    # Panels name their datasource through a variable (a Grafana whose Prometheus has another uid
    # can import the board); provisioned, it starts on the datasource compose provisions.
    (variable,) = board["templating"]["list"]
    assert (variable["name"], variable["type"], variable["query"]) == ("datasource", "datasource", "prometheus")
    assert variable["current"]["value"] == grafana_datasource()["uid"]


# ---- metric and label names against metrics.py ---------------------------------------------


def test_the_promql_reader_catches_a_renamed_metric_or_label():
    assert unknown_names('sum by (service) (rate(yidi_answer_total{err_code="ok"}[5m]))') == ["yidi_answer_total"]
    assert unknown_names("rate(yidi_answers[5m])") == ["yidi_answers"]
    assert unknown_labels('sum by (status) (rate(yidi_answers_total{errcode="ok"}[$__rate_interval]))') == [
        "yidi_answers_total{errcode}", "by/without (status)"
    ]
    latency = "histogram_quantile(0.99, sum by (le) (rate(yidi_settlement_latency_seconds_bucket[5m]))) > 0.25"
    assert unknown_names(latency) == []
    assert unknown_labels(latency) == []


def test_every_metric_on_the_dashboard_is_declared_in_metrics_py():
    assert {expr: unknown_names(expr) for expr in (t["expr"] for t in dashboard_targets()) if unknown_names(expr)} == {}


def test_every_metric_in_the_alerts_is_declared_in_metrics_py():
    assert {rule["alert"]: unknown_names(rule["expr"]) for rule in alert_rules() if unknown_names(rule["expr"])} == {}


def test_every_label_used_on_the_dashboard_and_in_the_alerts_exists_on_its_metric():
    assert {expr: unknown_labels(expr) for expr in all_expressions() if unknown_labels(expr)} == {}


def test_every_dashboard_legend_names_a_label_its_query_keeps():
    problems = []
    for target in dashboard_targets():
        selectors, grouping = read_promql(target["expr"])
        kept = grouping - {"le"} if grouping else set().union(*(declared_series()[n] for n, _ in selectors))
        legend_labels = re.findall(r"\{\{\s*(\w+)\s*\}\}", target["legendFormat"])
        problems += [f"{target['expr']}: {label}" for label in legend_labels if label not in kept]
    assert problems == []


def test_every_metric_of_metrics_py_is_on_the_dashboard():
    on_dashboard = {name for t in dashboard_targets() for name, _ in read_promql(t["expr"])[0]}
    families = {re.sub(r"_(total|bucket|count|sum|created)$", "", name) for name in on_dashboard}
    assert declared_families() - families == set()


def test_every_alert_has_a_severity_and_a_summary():
    for rule in alert_rules():
        expected = {"heartbeat"} if rule["alert"] == "YidiWatchdog" else {"warning", "critical"}
        assert rule["labels"]["severity"] in expected, rule["alert"]
        assert rule["annotations"]["summary"], rule["alert"]


# ---- Alertmanager ------------------------------------------------------------------------------

ALERTMANAGER = ROOT / "deploy" / "alertmanager"


def alertmanager() -> dict:
    return yaml.safe_load((ALERTMANAGER / "alertmanager.yml").read_text())


def test_compose_prometheus_sends_its_alerts_to_compose_alertmanager_with_its_config():
    (target,) = [t for am in yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())["alerting"]["alertmanagers"]
                 for c in am["static_configs"] for t in c["targets"]]
    host, port = target.split(":")
    assert host in compose()["services"] and f"127.0.0.1:{port}:{port}" in service("alertmanager")["ports"]
    assert bind_mounts("alertmanager")["deploy/alertmanager"] == "/etc/alertmanager"
    assert "--config.file=/etc/alertmanager/alertmanager.yml" in service("alertmanager")["command"]


def _tested_labels() -> dict[str, set[str]]:
    """The labels each alert fires with, as its promtool tests expect them (alerts_test.yml)."""
    tests = yaml.safe_load((PROMETHEUS / "alerts_test.yml").read_text())["tests"]
    labels: dict[str, set[str]] = {}
    for case in tests:
        for check in case.get("alert_rule_test", []):
            for alert in check.get("exp_alerts") or []:
                labels.setdefault(check["alertname"], set()).update(alert["exp_labels"])
    return labels


def test_every_alert_the_inhibit_rules_name_carries_the_labels_they_compare():
    names, fired = {rule["alert"] for rule in alert_rules()}, _tested_labels()
    for rule in alertmanager()["inhibit_rules"]:
        for matcher in (*rule["source_matchers"], *rule["target_matchers"]):
            key, _, value = matcher.partition("=")
            assert key.rstrip("~") == "alertname", matcher
            for alert in value.lstrip("~").strip('"').split("|"):
                assert alert in names, alert
                # An inhibition on a label one side lacks never matches: each alert named has a
                # promtool test, whose labels carry every label the rule compares.
                assert set(rule["equal"]) <= fired.get(alert, set()), (alert, rule["equal"], fired.get(alert))


def need_tool(tool: str, package: str) -> None:
    """Skip where ``tool`` is missing: make test installs its Debian ``package`` (deploy/local/test.sh),
    so only a bare pytest run may lack it; under CI, fail."""
    if shutil.which(tool) is None:
        if os.environ.get("CI"):
            pytest.fail(f"{tool} missing: deploy/local/test.sh installs Debian's {package} package")
        pytest.skip(f"{tool} not installed (Debian package {package}; make test installs it)")


def _amtool(*args: str) -> str:
    need_tool("amtool", "prometheus-alertmanager")
    result = subprocess.run(["amtool", *args], capture_output=True, text=True, cwd=ALERTMANAGER, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_amtool_accepts_the_config_and_routes_each_severity_to_its_receiver():
    _amtool("check-config", "alertmanager.yml")
    routes = {labels: _amtool("config", "routes", "test", "--config.file=alertmanager.yml", *labels.split()).strip()
              for labels in ("alertname=YidiServiceDown severity=critical", "alertname=YidiDeadLetters severity=warning",
                             "alertname=YidiWatchdog severity=heartbeat")}
    assert list(routes.values()) == ["pager", "channel", "heartbeat"], routes
    # The severities the alerts use are the three the routes tell apart.
    assert {rule["labels"]["severity"] for rule in alert_rules()} == {"critical", "warning", "heartbeat"}


# ---- promtool, where Prometheus is installed -----------------------------------------------


def test_promtool_accepts_the_configs_the_alerts_and_every_dashboard_query(tmp_path):
    need_tool("promtool", "prometheus")
    def promtool(*args: str) -> None:
        result = subprocess.run(["promtool", *args], capture_output=True, text=True, cwd=PROMETHEUS, check=False)
        assert result.returncode == 0, result.stdout + result.stderr

    promtool("check", "config", "prometheus.yml")
    promtool("check", "config", "prometheus-local.yml")
    promtool("test", "rules", "alerts_test.yml")
    # Dashboard queries as recording rules, so promtool parses each one.
    rules = [
        {"record": f"dashboard:query_{i}", "expr": _GRAFANA_VARIABLE.sub("1m", target["expr"])}
        for i, target in enumerate(dashboard_targets())
    ]
    queries = tmp_path / "dashboard-queries.yml"
    queries.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    promtool("check", "rules", str(queries))


def test_the_stages_running_stat_shows_a_service_killed_outright_as_down(tmp_path):
    # A range query reduced to its last value kept a service killed outright (SIGKILL, out of
    # memory: no gauge set to 0, its series stale) green for the whole time range (a review,
    # session 36). The stat reads the value now, and a target Prometheus cannot scrape counts 0.
    need_tool("promtool", "prometheus")
    panel = next(p for p in dashboard_panels() if p["title"] == "Stages running")
    (target,) = panel["targets"]
    assert target.get("instant") is True and not target.get("range")
    (tmp_path / "none.yml").write_text("groups: []\n")
    (tmp_path / "test.yml").write_text(yaml.safe_dump({
        "rule_files": ["none.yml"], "evaluation_interval": "1m",
        "tests": [{
            "interval": "1m",
            "input_series": [
                {"series": 'up{job="pricing", instance="pricing:9103"}', "values": "1 1 0 0"},
                {"series": 'yidi_service_up{job="pricing", instance="pricing:9103", service="pricing"}',
                 "values": "1 1 stale"},
                {"series": 'up{job="clearing", instance="clearing:9104"}', "values": "1 1 1 1"},
                {"series": 'yidi_service_up{job="clearing", instance="clearing:9104", service="clearing"}',
                 "values": "1 1 1 1"},
            ],
            "promql_expr_test": [
                {"expr": target["expr"], "eval_time": "1m",
                 "exp_samples": [{"labels": '{job="pricing"}', "value": 1}, {"labels": '{job="clearing"}', "value": 1}]},
                {"expr": target["expr"], "eval_time": "3m",
                 "exp_samples": [{"labels": '{job="pricing"}', "value": 0}, {"labels": '{job="clearing"}', "value": 1}]},
            ],
        }],
    }))
    result = subprocess.run(["promtool", "test", "rules", "test.yml"], capture_output=True, text=True, cwd=tmp_path,
                            check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_service_refuses_to_start_without_every_kafka_codec(monkeypatch):
    # Without cramjam, aiokafka reads gzip only: an lz4, snappy or zstd batch stopped a stage in a loop.
    import aiokafka.codec

    from yidi.platform.service import require_codecs

    require_codecs()  # the project's dependencies have them all
    monkeypatch.setattr(aiokafka.codec, "has_zstd", lambda: False)
    with pytest.raises(SystemExit, match="zstd"):
        require_codecs()


def test_make_passes_the_users_python_on_to_the_venv_script():
    # README: `PYTHON=/path/to/python3.11 make run` picks the interpreter. The Makefile's own
    # PYTHON (the venv's) replaced it in what make passed to deploy/local/python.sh, which then
    # said "no Python 3.11 found (set PYTHON=...)" (a review, session 36).
    wanted = "/opt/py311/bin/python3.11"
    database = subprocess.run(["make", "-pn", "venv"], env={**os.environ, "PYTHON": wanted}, cwd=ROOT,
                              capture_output=True, text=True, timeout=60, check=True).stdout
    assert re.search(rf"^# environment\nPYTHON = {re.escape(wanted)}$", database, re.M), \
        re.findall(r"^.*\nPYTHON :?= .*$", database, re.M)


def test_a_second_make_test_on_a_checkout_waits_for_the_first():
    # Two at once: the second counted the servers the first had started as up before it, and the
    # first stopped them at its end under the second's suite (a review, session 36). The lock is
    # held here, or by the `make test` running this suite; the second waits before it does anything.
    import fcntl

    lock_path = ROOT / ".local" / ".test.lock"
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pass  # the make test running this suite holds it
        second = subprocess.run(["timeout", "3", "bash", str(ROOT / "deploy/local/test.sh"), "--collect-only"],
                                capture_output=True, text=True, timeout=30)
    assert second.returncode == 124, (second.returncode, second.stderr[-500:])  # still waiting when stopped
    assert "another make test runs on this checkout; waiting" in second.stderr


def test_the_service_script_starts_and_stops_one_at_a_time():
    # Two starts at once both found a service stopped and its port free; one of the two processes ran
    # on with no pid file, which `make stop` never stopped (the install review, session 49). A second
    # start or stop waits for the first; status does not.
    import fcntl

    lock_path = ROOT / ".local" / "run" / ".services.lock"
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        waiting = subprocess.run(["timeout", "3", "bash", str(ROOT / "deploy/local/services.sh"), "stop", "pricing@9"],
                                 capture_output=True, text=True, timeout=30)
        status = subprocess.run(["bash", str(ROOT / "deploy/local/services.sh"), "status", "pricing@9"],
                                capture_output=True, text=True, timeout=30)
    assert waiting.returncode == 124, (waiting.returncode, waiting.stderr[-500:])  # still waiting when stopped
    assert status.returncode == 0 and "stopped" in status.stdout, status.stderr
    stop = subprocess.run(["bash", str(ROOT / "deploy/local/services.sh"), "stop", "pricing@9"],
                          capture_output=True, text=True, timeout=30)
    assert stop.returncode == 0, stop.stderr


def test_the_service_script_does_not_stop_a_process_its_stale_pid_file_names(tmp_path):
    # After a machine's restart, .local/run/<service>.pid may name a pid another process has since:
    # `services.sh stop` sent it SIGTERM, then SIGKILL. Now a pid counts only when that process is
    # the service. (An instance name no local run uses: pricing@9.)
    run_dir = ROOT / ".local" / "run"
    run_dir.mkdir(parents=True, exist_ok=True)
    pid_file = run_dir / "pricing@9.pid"
    other = subprocess.Popen(["sleep", "60"])
    try:
        pid_file.write_text(f"{other.pid}\n")
        status = subprocess.run(["bash", str(ROOT / "deploy/local/services.sh"), "status", "pricing@9"],
                                capture_output=True, text=True, timeout=60)
        assert status.returncode == 0, status.stderr
        assert "stopped" in status.stdout
        stop = subprocess.run(["bash", str(ROOT / "deploy/local/services.sh"), "stop", "pricing@9"],
                              capture_output=True, text=True, timeout=60)
        assert stop.returncode == 0, stop.stderr
        assert other.poll() is None, "the unrelated process was stopped"
        assert not pid_file.exists()
    finally:
        other.kill()
        other.wait()
        pid_file.unlink(missing_ok=True)


def test_a_service_whose_metrics_port_is_taken_is_not_started_and_says_so():
    # An orphan holding the port would answer the readiness check for the new process, which dies
    # on the port. (pricing@9's port: 9103 + 800.)
    import socket

    holder = socket.socket()
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    for n in range(9, 1, -1):  # an instance number whose port this machine has free
        try:
            holder.bind(("127.0.0.1", 9103 + 100 * (n - 1)))
            break
        except OSError:
            continue
    else:
        holder.close()
        raise AssertionError("no pricing@n metrics port free to take")
    holder.listen()
    port = holder.getsockname()[1]
    try:
        done = subprocess.run(["bash", str(ROOT / "deploy/local/services.sh"), "start", f"pricing@{n}"],
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 1, done.stderr
        assert f"{port} (pricing@{n}'s metrics) is in use" in done.stderr
        assert not (ROOT / ".local" / "run" / f"pricing@{n}.pid").exists()
    finally:
        holder.close()
