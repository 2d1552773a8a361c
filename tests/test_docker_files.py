"""docker-compose.yml as Compose itself reads it (the real Compose v2 binary from the dev
tools; no Docker engine needed), and the sandbox recipe in its header."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from app.auth.exposure import WELL_KNOWN_KEYS, public_key_problem
from app.core.config import Settings, load_settings, unknown_settings

ROOT = Path(__file__).resolve().parents[1]
COMPOSE_FILE = ROOT / "docker-compose.yml"
POLLHOOK_SERVICES = {"migrate", "api", "worker", "sandbox"}
PASSED_THROUGH = [
    "POLLHOOK_API_KEYS",
    "POLLHOOK_WEBHOOK_ALLOW_NETWORKS",
    "POLLHOOK_PROVIDERS__MINIMAX__API_KEY",
    "POLLHOOK_PROVIDERS__MINIMAX__BASE_URL",
    "POLLHOOK_PROVIDERS__JIMMY__API_KEY",
    "POLLHOOK_PROVIDERS__JIMMY__BASE_URL",
    "POLLHOOK_ARCHIVE__URL",
    "POLLHOOK_PUBLIC_URL",
    "AWS_ENDPOINT_URL",
    "AWS_REGION",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
]


def _path() -> str:
    return f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"


@pytest.fixture(scope="module")
def compose_binary() -> str:
    found = subprocess.run(
        [ROOT / "scripts" / "check-docker", "--compose-binary"],
        env={**os.environ, "PATH": _path()},
        capture_output=True,
        text=True,
        check=False,
    )
    assert found.returncode == 0, found.stderr
    return found.stdout.strip()


def compose_config(binary: str, project: Path, env: dict[str, str] | None = None) -> dict[str, Any]:
    """The file as Compose resolves it, in a clean environment plus `env`."""
    home = project / ".home"
    home.mkdir(exist_ok=True)
    result = subprocess.run(
        [binary, "-f", project / "docker-compose.yml", "config", "--format", "json"],
        cwd=project,
        env={"PATH": os.environ.get("PATH", ""), "HOME": str(home), **(env or {})},
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    config: dict[str, Any] = json.loads(result.stdout)
    for service in config["services"].values():
        # A variable listed without a value resolves to null when it is not set anywhere,
        # and Compose then leaves it out of the container.
        environment = service.get("environment", {})
        service["environment"] = {k: v for k, v in environment.items() if v is not None}
    return config


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A copy of the compose file in a folder of its own (Compose reads .env from there)."""
    shutil.copy(COMPOSE_FILE, tmp_path / "docker-compose.yml")
    return tmp_path


def test_check_docker_passes() -> None:
    result = subprocess.run(
        [ROOT / "scripts" / "check-docker"],
        env={**os.environ, "PATH": _path()},
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_one_image_built_once_for_every_role(compose_binary: str, project: Path) -> None:
    services = compose_config(compose_binary, project)["services"]
    built = [name for name, service in services.items() if "build" in service]
    assert len(built) == 1, built
    image = services[built[0]]["image"]
    assert {name for name, s in services.items() if s.get("image") == image} == POLLHOOK_SERVICES


def test_settings_pass_through_only_when_set(compose_binary: str, project: Path) -> None:
    unset = compose_config(compose_binary, project)["services"]
    for name in ("migrate", "api", "worker"):
        environment = unset[name]["environment"]
        assert not set(PASSED_THROUGH) & set(environment), name
        assert not unknown_settings(environment), name
        assert not WELL_KNOWN_KEYS & set(environment.values()), name

    shell = {name: f"value-of-{name}" for name in PASSED_THROUGH}
    set_ = compose_config(compose_binary, project, shell)["services"]
    for name in ("migrate", "api", "worker"):
        assert set_[name]["environment"].items() >= shell.items(), name


def test_worker_serves_metrics_and_is_health_checked(compose_binary: str, project: Path) -> None:
    worker = compose_config(compose_binary, project)["services"]["worker"]
    port = worker["environment"]["POLLHOOK_METRICS_PORT"]
    assert [p["target"] for p in worker["ports"]] == [int(port)]
    assert all(p.get("published") in (None, "") for p in worker["ports"])  # scalable
    assert "disable" not in worker["healthcheck"]
    assert f"http://127.0.0.1:{port}/metrics" in " ".join(worker["healthcheck"]["test"])


def sandbox_recipe() -> dict[str, str]:
    """The `VAR=value` lines of the header's sandbox recipe, exactly as written."""
    header = COMPOSE_FILE.read_text().split("\n\n", 1)[0]
    recipe = header[header.index("sandbox` service") :]
    return dict(
        line.split("=", 1) for line in re.findall(r"^#\s+(POLLHOOK_\w+=\S+)$", recipe, re.M)
    )


def test_sandbox_recipe_works_as_written(
    compose_binary: str, project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    recipe = sandbox_recipe()
    assert set(recipe) == {
        "POLLHOOK_PROVIDERS__MINIMAX__BASE_URL",
        "POLLHOOK_PROVIDERS__MINIMAX__API_KEY",
        "POLLHOOK_PROVIDERS__JIMMY__BASE_URL",
        "POLLHOOK_PROVIDERS__JIMMY__API_KEY",
    }
    (project / ".env").write_text("".join(f"{k}={v}\n" for k, v in recipe.items()))
    services = compose_config(compose_binary, project)["services"]
    sandbox_port = services["sandbox"]["environment"]["POLLHOOK_SANDBOX_PORT"]
    for name in ("api", "worker"):
        environment = services[name]["environment"]
        assert environment.items() >= recipe.items(), name
        settings = settings_in(environment, monkeypatch)
        for instance in ("minimax", "jimmy"):
            provider = settings.providers[instance]
            assert provider.base_url == f"http://sandbox:{sandbox_port}"
            assert provider.api_key is not None
            assert not provider.api_key.get_secret_value().startswith("bad")


def test_api_in_its_container_refuses_a_well_known_key(
    compose_binary: str, project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The image sets POLLHOOK_HOST=0.0.0.0, so the API checks its static keys.
    assert re.search(r"^\s*POLLHOOK_HOST=0\.0\.0\.0", (ROOT / "Dockerfile").read_text(), re.M)
    key = next(iter(WELL_KNOWN_KEYS))
    services = compose_config(compose_binary, project, {"POLLHOOK_API_KEYS": f"acme:{key}"})
    settings = settings_in(services["services"]["api"]["environment"], monkeypatch)
    assert public_key_problem("0.0.0.0", settings.api_keys) is not None


def settings_in(environment: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The Settings a container with this environment builds, read the way pollhook reads
    its environment."""
    for name in [n for n in os.environ if n.startswith("POLLHOOK_")]:
        monkeypatch.delenv(name)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    return load_settings()
