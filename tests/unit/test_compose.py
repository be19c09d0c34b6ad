"""docker-compose.yml, checked without a Docker engine: it parses, it is valid under the Compose
specification's JSON schema, it has every service the system needs, wired by health, with pinned
images, no inline secrets, and only real settings."""

from __future__ import annotations

import copy
import inspect
import json
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml  # type: ignore[import-untyped, unused-ignore]
from starlette.routing import Match

from api.main import create_app
from core.settings import Settings
from recsys.commands.archive import run_command as archive_run_command
from recsys.commands.retrain import retrain_command
from recsys.commands.serve import serve_command
from recsys.commands.worker import worker_command
from tests.unit.test_docs import deployment_variables, environment_reads, settings_variables

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
README = (ROOT / "README.md").read_text()

# The images the project builds itself (from ./Dockerfile); every other image is pulled.
OWN_SERVICES = {"api", "worker", "archiver", "retrainer", "train", "simulator"}
REQUIRED = {"kafka", "redis", "qdrant", "jaeger", "prometheus", "grafana"} | OWN_SERVICES
ONE_SHOTS = {"kafka-init", "train"}
SECRET_NAME = re.compile(r"(PASSWORD|SECRET|API_KEY|TOKEN|CREDENTIAL)", re.I)
# A value that only interpolates a variable, with an optional default: ${NAME} or ${NAME:-x}.
FROM_VARIABLE = re.compile(r"^\$\{[A-Z0-9_]+(:?-[^}]*)?\}$")
# What Compose substitutes in a value: ${NAME}, ${NAME:-default}, ${NAME?err}, ... or $NAME.
INTERPOLATION = re.compile(r"\$(?:\{([A-Za-z_][A-Za-z0-9_]*)|([A-Za-z_][A-Za-z0-9_]*))")
PROBED_URL = re.compile(r"http://(?:127\.0\.0\.1|localhost):(\d+)(/[^'\"\s]*)")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded = yaml.safe_load(COMPOSE_FILE.read_text())
    assert isinstance(loaded, dict)
    return loaded


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = compose["services"]
    return found


def validate(path: Path) -> subprocess.CompletedProcess[str]:
    """check-jsonschema with the Compose specification's schema it vendors (no network)."""
    return subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.compose-spec",
         str(path)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def test_compose_file_is_valid_under_the_compose_specification() -> None:
    result = validate(COMPOSE_FILE)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_schema_check_rejects_an_invalid_file(tmp_path: Path) -> None:
    """The validator really bites: an unknown depends_on condition is refused."""
    broken = COMPOSE_FILE.read_text().replace(
        "condition: service_healthy", "condition: service_happy", 1
    )
    path = tmp_path / "docker-compose.yml"
    path.write_text(broken)
    result = validate(path)
    assert result.returncode != 0
    assert "service_happy" in result.stdout + result.stderr


def test_every_service_the_system_needs_is_present(services: dict[str, Any]) -> None:
    assert services.keys() >= REQUIRED
    assert "simulator" in services["simulator"].get("profiles", [])


def test_project_services_share_one_dockerfile(services: dict[str, Any]) -> None:
    builds = {name: services[name].get("build") for name in OWN_SERVICES}
    images = {services[name].get("image") for name in OWN_SERVICES}
    assert all(b == {"context": ".", "dockerfile": "Dockerfile"} for b in builds.values()), builds
    assert len(images) == 1
    assert (ROOT / "Dockerfile").is_file()


def test_every_image_is_pinned(services: dict[str, Any]) -> None:
    for name, service in services.items():
        if "build" in service:
            continue
        image = service["image"]
        repository, _, tag = image.rpartition(":")
        assert repository, f"{name}: {image} has no tag"
        assert "/" not in tag, f"{name}: {image} has no tag"
        assert tag != "latest", f"{name}: {image} is not pinned"
        assert re.search(r"\d+\.\d+", tag), f"{name}: {image} is not pinned to a version"


def test_dependencies_wait_for_health_or_completion(services: dict[str, Any]) -> None:
    for name, service in services.items():
        for dependency, spec in (service.get("depends_on") or {}).items():
            assert isinstance(spec, dict), f"{name}: depends_on {dependency} has no condition"
            condition = spec["condition"]
            if dependency in ONE_SHOTS:
                assert condition == "service_completed_successfully", (name, dependency)
            else:
                assert condition == "service_healthy", (name, dependency)
                assert "healthcheck" in services[dependency], f"{dependency} has no healthcheck"
    for name in ("api", "worker"):
        assert {"kafka-init", "redis", "train"} <= services[name]["depends_on"].keys()


def test_long_running_services_have_healthchecks(services: dict[str, Any]) -> None:
    for name in ("kafka", "redis", "qdrant", "jaeger", "api", "worker", "prometheus", "grafana"):
        assert "healthcheck" in services[name], name
        assert not services[name]["healthcheck"].get("disable"), name


def test_jaeger_is_probed_where_its_config_serves_health(services: dict[str, Any]) -> None:
    """The healthcheck asks the healthcheckv2 extension of infra/jaeger/config.yaml, on the
    port it listens on by default (compose sets no JAEGER_HEALTH_PORT)."""
    config = yaml.safe_load((ROOT / "infra" / "jaeger" / "config.yaml").read_text())
    assert "healthcheckv2" in config["service"]["extensions"]
    extension = config["extensions"]["healthcheckv2"]
    assert extension["use_v2"] is True
    default_port = re.search(r"JAEGER_HEALTH_PORT:-(\d+)", extension["http"]["endpoint"])
    assert default_port is not None
    path = extension["http"].get("status", {}).get("path", "/status")  # the extension's default
    jaeger = services["jaeger"]
    assert "JAEGER_HEALTH_PORT" not in jaeger.get("environment", {})
    probe = PROBED_URL.search(" ".join(jaeger["healthcheck"]["test"]))
    assert probe is not None
    assert probe.groups() == (default_port.group(1), path)


def own_services(services: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """The services built from the project's Dockerfile, so inheriting its HEALTHCHECK."""
    for name, service in services.items():
        if "build" in service:
            yield name, service


def dockerfile_instruction(keyword: str) -> str:
    """The last such instruction of the Dockerfile, continuation lines joined."""
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    found = re.findall(rf"^{keyword} (.*)$", text, re.M)
    assert found, f"the Dockerfile has no {keyword}"
    return str(found[-1])


def probe(service: dict[str, Any]) -> tuple[int, str] | None:
    """(port, path) the container's effective healthcheck requests; None when disabled. A
    service without its own test inherits the Dockerfile's HEALTHCHECK."""
    healthcheck = service.get("healthcheck") or {}
    if healthcheck.get("disable") or healthcheck.get("test") in (["NONE"], "NONE"):
        return None
    test = healthcheck.get("test") or dockerfile_instruction("HEALTHCHECK")
    test = test if isinstance(test, str) else " ".join(map(str, test))
    url = PROBED_URL.search(test)
    assert url is not None, f"no http://127.0.0.1:PORT/PATH in the healthcheck {test!r}"
    return int(url.group(1)), url.group(2)


def api_answers_get(path: str) -> bool:
    """Whether one of the API's routes answers GET on this path (the app is only built)."""
    app = create_app(Settings())
    scope = {"type": "http", "method": "GET", "path": path, "root_path": "", "headers": []}
    return any(route.matches(scope)[0] == Match.FULL for route in app.router.routes)


# The project's commands that serve HTTP: the command function (for its default port), its
# port parameter, and what answers GET there. The worker's only page is /metrics
# (streams/app.py), as are the archiver's and the retraining loop's (prometheus_client's server;
# the loop serves it with --every only).
def metrics_only(path: str) -> bool:
    return path == "/metrics"


SERVERS: dict[str, tuple[Callable[..., Any], str, Callable[[str], bool]]] = {
    "serve": (serve_command, "port", api_answers_get),
    "worker": (worker_command, "web_port", metrics_only),
    "archive run": (archive_run_command, "metrics_port", metrics_only),
    "retrain --every": (retrain_command, "metrics_port", metrics_only),
}


def server_of(command: list[str]) -> str | None:
    """Which of SERVERS a `recsys ...` command line is, if any."""
    if command[:1] != ["recsys"] or len(command) < 2:
        return None
    if command[1] == "archive":
        return "archive run" if command[2:3] == ["run"] else None
    if command[1] == "retrain":
        return "retrain --every" if "--every" in command else None
    return command[1] if command[1] in SERVERS else None


def served(command: list[str]) -> tuple[int, Callable[[str], bool]] | None:
    """(port, whether a path is answered there) if the command serves HTTP, else None."""
    server = server_of(command)
    if server is None:
        return None
    function, parameter, answers = SERVERS[server]
    option = "--" + parameter.replace("_", "-")
    port = inspect.signature(function).parameters[parameter].default
    if option in command:
        port = command[command.index(option) + 1]
    return int(port), answers


def healthcheck_problems(services: dict[str, Any]) -> list[str]:
    """A container built from the project's image probes what its command serves, or has its
    healthcheck disabled if it serves nothing; a server never goes unchecked."""
    default_command = json.loads(dockerfile_instruction("CMD"))
    problems = []
    for name, service in own_services(services):
        command = [str(part) for part in service.get("command") or default_command]
        probed, serving = probe(service), served(command)
        if probed is None and serving is not None:
            problems.append(f"{name}: serves HTTP on {serving[0]} but its healthcheck is off")
        elif probed is not None and serving is None:
            problems.append(f"{name}: probes {probed} but `{' '.join(command)}` serves no HTTP")
        elif probed is not None and serving is not None:
            port, answers = serving
            if probed[0] != port or not answers(probed[1]):
                problems.append(f"{name}: probes {probed}, not a path it serves on port {port}")
    return problems


def test_project_containers_probe_what_they_serve(services: dict[str, Any]) -> None:
    assert {name for name, _ in own_services(services)} == OWN_SERVICES
    assert healthcheck_problems(services) == []


def test_the_probe_check_catches_an_inherited_healthcheck(services: dict[str, Any]) -> None:
    broken = copy.deepcopy(services)
    del broken["train"]["healthcheck"]  # would inherit the API's probe on :8000
    broken["api"]["healthcheck"] = {"disable": True}
    broken["worker"]["healthcheck"]["test"] = [
        "CMD", "python", "-c", "urlopen('http://127.0.0.1:6066/health/live')"
    ]  # fmt: skip
    problems = healthcheck_problems(broken)
    assert [problem.split(":")[0] for problem in problems] == ["api", "worker", "train"], problems


def test_the_worker_scales(services: dict[str, Any]) -> None:
    worker = services["worker"]
    # A fixed host port or container name makes `--scale worker=N` fail for N > 1.
    assert "ports" not in worker
    assert "container_name" not in worker
    prometheus = yaml.safe_load((ROOT / "infra/prometheus/prometheus.yml").read_text())
    names = [
        sd["names"] for job in prometheus["scrape_configs"] for sd in job.get("dns_sd_configs", [])
    ]
    assert ["worker"] in names


def test_kafka_topics_are_created(services: dict[str, Any]) -> None:
    script = " ".join(map(str, services["kafka-init"]["command"]))
    for topic in ("events.view", "events.click", "events.purchase", "events.dlq"):
        assert topic in script
    assert "--partitions" in script


def test_redis_keeps_aof_and_the_listpack_limit(services: dict[str, Any]) -> None:
    command = [str(part) for part in services["redis"]["command"]]
    assert command[command.index("--appendonly") + 1] == "yes"
    assert command[command.index("--hash-max-listpack-value") + 1] == "1024"


def test_writes_need_an_api_key_from_a_variable(services: dict[str, Any]) -> None:
    key = services["api"]["environment"]["RECSYS_API_KEY"]
    assert FROM_VARIABLE.match(key), key
    assert "dev" in key  # the default is visibly a development one


def test_no_secret_is_written_inline(services: dict[str, Any]) -> None:
    for name, service in services.items():
        environment = service.get("environment") or {}
        assert isinstance(environment, dict), f"{name}: use the mapping form"
        for variable, value in environment.items():
            if SECRET_NAME.search(variable):
                assert FROM_VARIABLE.match(str(value)), f"{name}: {variable} is set inline"


def test_named_volumes_only(compose: dict[str, Any], services: dict[str, Any]) -> None:
    declared = set(compose["volumes"])
    for name, service in services.items():
        for volume in service.get("volumes", []):
            source = str(volume).split(":", 1)[0]
            if source.startswith("./"):  # configuration from the repository, read-only
                assert str(volume).endswith(":ro"), f"{name}: {volume}"
                assert (ROOT / source).exists(), f"{name}: {source} is missing"
            else:
                assert source in declared, f"{name}: {source} is not a named volume"


def test_recsys_variables_are_real_settings(services: dict[str, Any]) -> None:
    fields = {f"RECSYS_{name.upper()}" for name in Settings.model_fields}
    for name, service in services.items():
        for variable in service.get("environment") or {}:
            if variable.startswith("RECSYS_"):
                assert variable in fields, f"{name}: {variable} is not a setting"


def test_every_setting_is_set_in_compose_or_documented(services: dict[str, Any]) -> None:
    in_compose = {v for s in services.values() for v in (s.get("environment") or {})}
    missing = [
        variable
        for variable in (f"RECSYS_{name.upper()}" for name in Settings.model_fields)
        if variable not in in_compose and variable not in README
    ]
    assert missing == []


def interpolated(value: Any) -> set[str]:
    """Every variable Compose substitutes somewhere in a loaded compose file (`$$` is a literal
    dollar sign, not a substitution)."""
    if isinstance(value, dict):
        return set().union(*map(interpolated, value.values())) if value else set()
    if isinstance(value, list):
        return set().union(*map(interpolated, value)) if value else set()
    if isinstance(value, str):
        return {a or b for a, b in INTERPOLATION.findall(value.replace("$$", ""))}
    return set()


def undocumented_variables(compose: dict[str, Any]) -> list[str]:
    """Variables the file interpolates or sets for the project's containers that are neither
    a setting nor in the README's table of deployment variables."""
    used = interpolated(compose)
    for _, service in own_services(compose["services"]):
        used |= set(service.get("environment") or {})
    return sorted(used - settings_variables() - deployment_variables())


def test_every_variable_compose_uses_is_documented(compose: dict[str, Any]) -> None:
    assert {"RECSYS_IMAGE_TAG", "GRAFANA_ADMIN_USER", "RECSYS_API_KEY"} <= interpolated(compose)
    assert "topic" not in interpolated(compose)  # $$topic is the shell's, not Compose's
    assert undocumented_variables(compose) == []


def test_the_documentation_check_catches_an_undocumented_variable(
    compose: dict[str, Any],
) -> None:
    broken = copy.deepcopy(compose)
    broken["services"]["worker"]["environment"]["WORKER_EXTRA"] = "1"
    broken["services"]["grafana"]["environment"]["GF_X"] = "$UNDOCUMENTED_A"
    broken["services"]["train"]["command"].append("${UNDOCUMENTED_B:-x}")
    assert undocumented_variables(broken) == ["UNDOCUMENTED_A", "UNDOCUMENTED_B", "WORKER_EXTRA"]


def test_every_deployment_variable_is_used(compose: dict[str, Any]) -> None:
    """The README's table lists nothing stale: each variable is interpolated by the compose
    file or read by the app's code."""
    stale = deployment_variables() - interpolated(compose) - environment_reads().keys()
    assert stale == set()


def test_the_settings_the_containers_need_are_set_and_parse(
    services: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Defaults point at 127.0.0.1 or the embedded engine: wrong inside a container. Each
    value (with its interpolation default) must also be accepted by Settings, as the
    containers will read it: from the environment."""
    for name in OWN_SERVICES:
        environment = services[name]["environment"]
        assert environment["RECSYS_KAFKA_BOOTSTRAP_SERVERS"] == "kafka:9092"
        assert environment["RECSYS_REDIS_URL"].startswith("redis://redis:")
        assert environment["RECSYS_QDRANT_URL"].startswith("http://qdrant:")
        assert environment["RECSYS_OTLP_ENDPOINT"].startswith("http://jaeger:")
        with monkeypatch.context() as env:
            for variable, value in environment.items():
                env.setenv(variable, with_defaults(str(value)))
            settings = Settings()
        assert settings.api_key is not None


def with_defaults(value: str) -> str:
    """What Compose substitutes when none of the variables is set: `${X:-d}` -> d."""
    return re.sub(r"\$\{[A-Z0-9_]+(?::?-([^}]*))?\}", lambda m: m.group(1) or "", value)


def test_dockerfile_is_multi_stage_non_root_with_a_healthcheck() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert len(re.findall(r"^FROM ", dockerfile, re.M)) >= 2
    assert "COPY --from=builder" in dockerfile
    users = re.findall(r"^USER (\S+)", dockerfile, re.M)
    assert users
    assert not users[-1].startswith(("root", "0"))
    assert re.search(r"^HEALTHCHECK ", dockerfile, re.M)
    assert re.search(r'^CMD \["recsys", "serve", "--host", "0.0.0.0"', dockerfile, re.M)
