"""docker-compose.yml, checked without a Docker engine: it parses, it is valid under the Compose
specification's JSON schema, it has every service the system needs, wired by health, with pinned
images, no inline secrets, and only real settings."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml  # type: ignore[import-untyped, unused-ignore]

from recsys.settings import Settings

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
README = (ROOT / "README.md").read_text()

# The images the project builds itself (from ./Dockerfile); every other image is pulled.
OWN_SERVICES = {"api", "worker", "train", "simulator"}
REQUIRED = {"kafka", "redis", "qdrant", "jaeger", "prometheus", "grafana"} | OWN_SERVICES
ONE_SHOTS = {"kafka-init", "train"}
SECRET_NAME = re.compile(r"(PASSWORD|SECRET|API_KEY|TOKEN|CREDENTIAL)", re.I)
# A value that only interpolates a variable, with an optional default: ${NAME} or ${NAME:-x}.
FROM_VARIABLE = re.compile(r"^\$\{[A-Z0-9_]+(:?-[^}]*)?\}$")


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
            elif dependency != "jaeger":  # tracing is best effort: the exporter retries
                assert condition == "service_healthy", (name, dependency)
                assert "healthcheck" in services[dependency], f"{dependency} has no healthcheck"
    for name in ("api", "worker"):
        assert {"kafka-init", "redis", "train"} <= services[name]["depends_on"].keys()


def test_long_running_services_have_healthchecks(services: dict[str, Any]) -> None:
    for name in ("kafka", "redis", "qdrant", "api", "worker", "prometheus", "grafana"):
        assert "healthcheck" in services[name], name


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
