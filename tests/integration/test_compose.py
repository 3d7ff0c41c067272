"""docker-compose.yml and the Dockerfile checked against the code (no Docker engine here): every
setting exists, every command's target imports, ports, healthchecks, GPU, start-up order."""
from __future__ import annotations

import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

from testkit.env import service_env

REPO = Path(__file__).resolve().parents[2]
API_PORT = 8000


class ComposeLoader(yaml.SafeLoader):
    """YAML plus compose's merge tags (!reset, !override) used in override files."""


ComposeLoader.add_constructor("!reset", lambda loader, node: None)
ComposeLoader.add_multi_constructor("!override", lambda loader, suffix, node: loader.construct_object(node))


def load_compose(name: str = "docker-compose.yml") -> dict:
    return yaml.load((REPO / name).read_text(), Loader=ComposeLoader)


COMPOSE = load_compose()
SERVICES = COMPOSE["services"]
OUR_SERVICES = {name: s for name, s in SERVICES.items() if "build" in s}


def command(service: str) -> list[str]:
    cmd = SERVICES[service]["command"]
    return shlex.split(cmd) if isinstance(cmd, str) else list(cmd)


def env_names(service: dict) -> set[str]:
    env = service.get("environment") or {}
    return set(env) if isinstance(env, dict) else {item.split("=", 1)[0] for item in env}


def run_python(code: str, tmp_path) -> subprocess.CompletedProcess:
    # In a subprocess on the embedded default: importing a service must not need its servers.
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=180,
                          cwd=REPO, env=service_env(tmp_path))


def test_the_expected_services_exist():
    assert {"redis", "postgres", "minio", "minio-init", "migrate", "api", "worker", "trainer", "sweeper"} <= set(SERVICES)
    assert {"api", "worker", "trainer", "sweeper", "migrate", "minio-init"} <= set(OUR_SERVICES)


def test_every_nucleus_variable_is_a_setting():
    from shared.infra.settings import Settings

    known = {f"NUCLEUS_{name.upper()}" for name in Settings.model_fields}
    used = {name for service in SERVICES.values() for name in env_names(service) if name.startswith("NUCLEUS_")}
    assert used, "compose sets no NUCLEUS_* variable"
    assert used <= known, f"not fields of shared.infra.settings.Settings: {sorted(used - known)}"
    referenced = set(re.findall(r"\$\{(NUCLEUS_[A-Z0-9_]+)", (REPO / "docker-compose.yml").read_text()))
    assert referenced <= known, f"interpolated but unknown: {sorted(referenced - known)}"


def test_production_settings_point_at_the_compose_servers():
    from shared.infra.settings import Settings

    for name, service in OUR_SERVICES.items():
        env = service["environment"]
        settings = Settings(**{k.removeprefix("NUCLEUS_").lower(): v for k, v in env.items()
                               if k.startswith("NUCLEUS_") and "${" not in str(v)})
        assert not settings.embedded, f"{name} would run on the embedded broker"
        assert settings.database_url.startswith("postgresql+psycopg2://"), name
        pg = SERVICES["postgres"]["environment"]
        assert f"{pg['POSTGRES_USER']}:{pg['POSTGRES_PASSWORD']}@postgres:5432/{pg['POSTGRES_DB']}" in settings.database_url
        assert settings.broker_url.startswith("redis://redis:6379")
        assert settings.s3_endpoint == "minio:9000"
    minio_env = SERVICES["minio"]["environment"]
    api_env = SERVICES["api"]["environment"]
    assert minio_env["MINIO_ROOT_USER"] == api_env["NUCLEUS_S3_ACCESS_KEY"]
    assert minio_env["MINIO_ROOT_PASSWORD"] == api_env["NUCLEUS_S3_SECRET_KEY"]


def test_api_runs_the_wsgi_app_under_gunicorn_on_its_port(tmp_path):
    cmd = command("api")
    assert cmd[0] == "gunicorn" and "services.api.wsgi:app" in cmd
    bind = cmd[cmd.index("--bind") + 1]
    assert bind == f"0.0.0.0:{API_PORT}"
    assert f"{API_PORT}:{API_PORT}" in [str(p) for p in SERVICES["api"]["ports"]]
    health = " ".join(SERVICES["api"]["healthcheck"]["test"])
    assert f"127.0.0.1:{API_PORT}/healthz" in health
    result = run_python("from services.api.wsgi import app; assert callable(app) and hasattr(app, 'url_map')", tmp_path)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("service, queue, task", [("worker", "segment", "nucleus.segment"),
                                                  ("trainer", "train", "nucleus.train")])
def test_celery_services_consume_their_queue_with_their_task(service, queue, task, tmp_path):
    cmd = command(service)
    assert cmd[:2] == ["celery", "-A"] and "worker" in cmd
    module = cmd[2]
    assert cmd[cmd.index("-Q") + 1] == queue
    assert cmd[cmd.index("--pool") + 1] == "solo"
    code = (f"import importlib; from celery import Celery; m = importlib.import_module({module!r}); "
            f"app = m.celery_app; assert isinstance(app, Celery); app.loader.import_default_modules(); "
            f"assert {task!r} in app.tasks, sorted(app.tasks)")
    result = run_python(code, tmp_path)
    assert result.returncode == 0, result.stderr


def test_sweeper_runs_as_a_module(tmp_path):
    cmd = command("sweeper")
    assert cmd[:3] == ["python", "-m", "services.sweeper"]
    code = ("import importlib.util as u; s = u.find_spec('services.sweeper'); assert s, 'no services.sweeper'; "
            "assert s.submodule_search_locations is None or u.find_spec('services.sweeper.__main__'), 'no __main__'")
    result = run_python(code, tmp_path)
    assert result.returncode == 0, result.stderr


def test_one_shot_jobs_run_commands_that_exist(tmp_path):
    assert command("migrate") == ["nucleus", "db", "upgrade"]
    nucleus = Path(sys.executable).parent / "nucleus"
    result = subprocess.run([str(nucleus), "db", "upgrade", "--help"], capture_output=True, text=True,
                            env=service_env(tmp_path), timeout=120)
    assert result.returncode == 0, result.stderr
    init = command("minio-init")
    assert init[:2] == ["python", "-c"]
    code = init[2]
    imports = "; ".join(line for line in code.split("; ") if line.startswith(("from ", "import ")))
    result = run_python(f"{imports}; from shared.infra.storage import S3Store; assert hasattr(S3Store, 'ensure_bucket')", tmp_path)
    assert result.returncode == 0, result.stderr


def test_servers_and_api_have_healthchecks():
    for name in ("redis", "postgres", "minio", "api"):
        assert SERVICES[name].get("healthcheck", {}).get("test"), f"{name} has no healthcheck"


def test_start_up_waits_for_healthy_servers_and_finished_one_shots():
    for name, service in SERVICES.items():
        for dependency in service.get("depends_on", {}):
            assert dependency in SERVICES, f"{name} depends on unknown {dependency}"
    assert SERVICES["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert SERVICES["minio-init"]["depends_on"]["minio"]["condition"] == "service_healthy"
    for name in ("api", "worker", "trainer", "sweeper"):
        depends = SERVICES[name]["depends_on"]
        assert depends["migrate"]["condition"] == "service_completed_successfully", name
        assert depends["minio-init"]["condition"] == "service_completed_successfully", name
        assert depends["redis"]["condition"] == "service_healthy", name


def test_server_state_lives_in_volumes():
    volumes = set(COMPOSE["volumes"])
    for name, path in (("postgres", "/var/lib/postgresql/data"), ("minio", "/data")):
        mounts = [str(v) for v in SERVICES[name]["volumes"]]
        assert any(m.split(":")[0] in volumes and m.split(":")[1] == path for m in mounts), f"{name}: {mounts}"


def test_worker_reserves_a_gpu_and_the_cpu_override_drops_it():
    devices = SERVICES["worker"]["deploy"]["resources"]["reservations"]["devices"]
    assert any(d["driver"] == "nvidia" and "gpu" in d["capabilities"] for d in devices)
    cpu = load_compose("docker-compose.cpu.yml")["services"]["worker"]
    assert cpu["deploy"] is None and cpu["environment"]["NUCLEUS_DEVICE"] == "cpu"


def test_dockerfile_installs_the_project():
    dockerfile = (REPO / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11", dockerfile, re.M)
    assert re.search(r"^RUN pip install \.", dockerfile, re.M)
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    packages = [p.rstrip("*") for p in pyproject["tool"]["setuptools"]["packages"]["find"]["include"]]
    copied = re.findall(r"^COPY (.+) \S+$", dockerfile, re.M)
    sources = {src for line in copied for src in line.split()}
    for needed in [*packages, "pyproject.toml", pyproject["project"]["readme"]]:
        assert needed in sources, f"the Dockerfile does not copy {needed}"
        assert (REPO / needed).exists(), needed
    ignored = {line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()}
    assert not ignored & set(packages), "a package is in .dockerignore"


def test_readme_starts_with_the_two_commands_and_ci_runs_the_second():
    lines = (REPO / "README.md").read_text().splitlines()
    block = lines[lines.index("```sh") + 1:lines.index("```")]
    assert len(block) == 2 and lines.index("```sh") <= 3, "the README's first lines are exactly two commands"
    install, test = block
    assert install.startswith("python3 -m venv .venv") and "pip install" in install and install.endswith("nucleus up")
    ci = [line.strip() for line in (REPO / ".ci" / "run").read_text().splitlines()
          if line.strip() and not line.startswith("#") and not line.startswith(("set ", "cd "))]
    assert ci == [test], f".ci/run must run exactly {test!r}, runs {ci}"
