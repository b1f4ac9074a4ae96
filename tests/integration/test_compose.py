"""docker-compose.yml checked without a Docker engine.

Two independent validators against the Compose specification:
- Debian's `docker-compose` (package `docker-compose`, 1.29): `docker-compose -f FILE config -q`;
- the official compose-spec JSON schema as vendored by the PyPI package `check-jsonschema`
  (`check_jsonschema/builtin_schemas/vendor/compose-spec.json`), applied with `jsonschema`.
Each is shown to reject a broken file too. Then the structural facts of the deployment: two
Celery workers, CeleryExecutor on Redis with a PostgreSQL result backend, the FAB auth manager,
healthchecks, named volumes for the state, and no secret in any committed file.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import subprocess
from importlib import resources
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
DEPLOY = ROOT / "deploy"
AIRFLOW_SERVICES = {"airflow-apiserver", "airflow-scheduler", "airflow-dag-processor", "airflow-triggerer",
                    "airflow-worker-1", "airflow-worker-2", "airflow-init"}
LONG_RUNNING = {"postgres", "redis", "simulators"} | (AIRFLOW_SERVICES - {"airflow-init"})


@pytest.fixture(scope="module")
def spec() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def _workspace(tmp_path: Path, text: str) -> Path:
    """The compose file beside a deploy/demat.env made from the example (the real one is never committed)."""
    (tmp_path / "deploy").mkdir(exist_ok=True)
    shutil.copy(DEPLOY / "demat.env.example", tmp_path / "deploy" / "demat.env")
    shutil.copy(DEPLOY / "Dockerfile", tmp_path / "deploy" / "Dockerfile")
    path = tmp_path / "docker-compose.yml"
    path.write_text(text)
    return path


def _broken_variants(spec: dict) -> dict[str, dict]:
    out = {}
    bad = copy.deepcopy(spec)
    bad["services"]["redis"]["helthcheck"] = bad["services"]["redis"].pop("healthcheck")
    out["unknown key"] = bad
    bad = copy.deepcopy(spec)
    bad["services"]["postgres"]["healthcheck"]["test"] = {"cmd": "pg_isready"}
    out["wrong type"] = bad
    bad = copy.deepcopy(spec)
    bad["services"]["airflow-worker-1"]["depends_on"]["redis"]["condition"] = "service_maybe"
    out["bad enum"] = bad
    return out


# -- validators ---------------------------------------------------------------------------------------------
def _docker_compose() -> str:
    exe = shutil.which("docker-compose")
    if exe is None:
        pytest.skip("docker-compose absent : apt-get install -y docker-compose (paquet Debian, validation sans moteur)")
    return exe


def _config_q(exe: str, path: Path) -> subprocess.CompletedProcess:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(path.parent)}
    return subprocess.run([exe, "-f", str(path), "--project-directory", str(path.parent), "config", "-q"],
                          capture_output=True, text=True, env=env, timeout=60, cwd=path.parent)


def test_debian_docker_compose_config_accepts_the_file(tmp_path):
    exe = _docker_compose()
    result = _config_q(exe, _workspace(tmp_path, COMPOSE.read_text()))
    assert result.returncode == 0, result.stderr


def test_debian_docker_compose_config_rejects_broken_files(tmp_path, spec):
    exe = _docker_compose()
    for label, bad in _broken_variants(spec).items():
        folder = tmp_path / label.replace(" ", "_")
        folder.mkdir()
        result = _config_q(exe, _workspace(folder, yaml.safe_dump(bad, sort_keys=False)))
        assert result.returncode != 0, f"docker-compose accepted a file with a {label}"


def test_docker_compose_config_needs_the_secrets_file(tmp_path):
    exe = _docker_compose()
    (tmp_path / "docker-compose.yml").write_text(COMPOSE.read_text())
    result = _config_q(exe, tmp_path / "docker-compose.yml")
    assert result.returncode != 0 and "demat.env" in (result.stderr + result.stdout)


def _compose_spec_schema() -> dict:
    try:
        files = resources.files("check_jsonschema.builtin_schemas.vendor")
    except ModuleNotFoundError:
        pytest.skip("check-jsonschema absent (paquet PyPI qui embarque le schéma compose-spec officiel)")
    return json.loads((files / "compose-spec.json").read_text())


def test_compose_spec_schema_accepts_the_file(spec):
    import jsonschema

    schema = _compose_spec_schema()
    validator_cls = jsonschema.validators.validator_for(schema)
    validator_cls.check_schema(schema)
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator_cls(schema).iter_errors(spec)]
    assert errors == []


def test_compose_spec_schema_rejects_broken_files(spec):
    import jsonschema

    schema = _compose_spec_schema()
    validator = jsonschema.validators.validator_for(schema)(schema)
    for label, bad in _broken_variants(spec).items():
        assert list(validator.iter_errors(bad)), f"the compose-spec schema accepted a file with a {label}"


# -- structure ----------------------------------------------------------------------------------------------
def _env(spec: dict, service: str) -> dict:
    return {k: str(v) for k, v in (spec["services"][service].get("environment") or {}).items()}


def test_services_follow_the_official_airflow_pattern(spec):
    services = set(spec["services"])
    assert services == AIRFLOW_SERVICES | {"postgres", "redis", "simulators"}
    assert "x-airflow-common" in spec
    for name in AIRFLOW_SERVICES:  # the anchor was merged into every Airflow service
        svc = spec["services"][name]
        assert svc["build"]["dockerfile"] == "deploy/Dockerfile", name
        assert "deploy/demat.env" in svc["env_file"], name
    commands = {n: spec["services"][n]["command"] for n in AIRFLOW_SERVICES - {"airflow-init"}}
    assert commands["airflow-apiserver"] == "api-server"
    assert commands["airflow-scheduler"] == "scheduler"
    assert commands["airflow-dag-processor"] == "dag-processor"
    assert commands["airflow-triggerer"] == "triggerer"


def test_two_celery_workers_with_distinct_hostnames(spec):
    workers = [n for n, s in spec["services"].items() if "celery worker" in str(s.get("command", ""))]
    assert sorted(workers) == ["airflow-worker-1", "airflow-worker-2"]
    names = {re.search(r"--celery-hostname\s+\"?([^\"\s]+)", spec["services"][w]["command"]).group(1) for w in workers}
    assert len(names) == 2
    for w in workers:
        assert _env(spec, w)["DUMB_INIT_SETSID"] == "0"  # warm shutdown reaches celery
        assert spec["services"][w]["depends_on"]["airflow-apiserver"]["condition"] == "service_healthy"


def test_celery_executor_redis_broker_postgres_backend_fab(spec):
    for name in AIRFLOW_SERVICES:
        env = _env(spec, name)
        assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor", name
        # FAB, with the HITL respondent check on user names (demat_airflow/fab_auth_manager.py)
        assert env["AIRFLOW__CORE__AUTH_MANAGER"] == "demat_airflow.fab_auth_manager.DematFabAuthManager"
        assert env["AIRFLOW__CELERY__BROKER_URL"].startswith("redis://redis:6379/")
        assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://airflow-apiserver:8080/execution/"
        assert env["DEMAT_DB"] == "demat" and env["POSTGRES_HOST"] == "postgres"
    entrypoint = (DEPLOY / "entrypoint.sh").read_text()
    assert "AIRFLOW__CELERY__RESULT_BACKEND" in entrypoint and "db+postgresql://" in entrypoint
    assert "DEMAT_DATABASE_URL" in entrypoint
    init = spec["services"]["airflow-init"]
    assert init["command"] == ["python", "-m", "embedded.distributed", "init"]
    assert _env(spec, "airflow-init")["_AIRFLOW_DB_MIGRATE"] == "true"
    assert init["depends_on"]["simulators"]["condition"] == "service_healthy"
    for name in AIRFLOW_SERVICES - {"airflow-init"}:
        assert spec["services"][name]["depends_on"]["airflow-init"]["condition"] == "service_completed_successfully"


def test_every_long_running_service_has_a_healthcheck(spec):
    for name in LONG_RUNNING:
        hc = spec["services"][name].get("healthcheck")
        assert hc and hc.get("test") and hc.get("interval"), name
        assert spec["services"][name].get("restart") == "always", name


def test_state_lives_in_named_volumes(spec):
    declared = set(spec["volumes"])
    assert {"postgres-db-volume", "demat-state", "demat-store", "demat-pki"} <= declared
    mounts = {}
    for name in AIRFLOW_SERVICES:
        for v in spec["services"][name]["volumes"]:
            source, target = v.split(":")[:2]
            assert source in declared, f"{name}: {source} is not a named volume"
            mounts[target] = source
    assert mounts["/opt/demat/state/store"] == "demat-store"
    # inboxes inside demat-state: claiming is a rename into state/work, impossible across volumes
    assert "/opt/demat/state/inbox" not in mounts and mounts["/opt/demat/state"] == "demat-state"
    assert mounts["/opt/demat/state/pki"] == "demat-pki"
    assert spec["services"]["postgres"]["volumes"] == ["postgres-db-volume:/var/lib/postgresql/data"]
    # the simulators' client key and endpoints.json are read by the workers at the same path
    assert "demat-state:/opt/demat/state" in spec["services"]["simulators"]["volumes"]
    ports = spec["services"]["simulators"]["ports"]
    assert [p.rsplit(":", 1)[1] for p in ports] == ["2222", "2223", "2224"]
    assert "--port-base" in spec["services"]["simulators"]["command"]


SECRET_KEY = re.compile(r"(PASSWORD|SECRET|FERNET|TOKEN|PASSPHRASE|PRIVATE)", re.I)


def _walk(node, path=()):
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _walk(v, (*path, str(k)))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _walk(v, (*path, str(i)))
    else:
        yield path, node


def test_no_secret_literal_in_committed_files(spec):
    for path, value in _walk(spec):
        key = path[-1]
        if SECRET_KEY.search(key):
            pytest.fail(f"secret-looking key {'/'.join(path)} set in docker-compose.yml")
        if isinstance(value, str):
            assert not re.search(r"://[^/\s:@]+:[^@\s$]+@", value), f"credentials in a URL at {'/'.join(path)}"
    text = COMPOSE.read_text()
    assert not re.search(r"(?i)(password|secret|fernet)[^\n]*[:=]\s*['\"]?[A-Za-z0-9_\-+/=]{12,}", text)
    example = (DEPLOY / "demat.env.example").read_text()
    for line in example.splitlines():
        if line and not line.startswith("#") and SECRET_KEY.search(line.split("=", 1)[0]):
            assert line.split("=", 1)[1] == "CHANGE_ME", line
    assert "*.env" in (DEPLOY / ".gitignore").read_text()
    if shutil.which("git") and (ROOT / ".git").exists():
        ignored = subprocess.run(["git", "check-ignore", "-q", "deploy/demat.env"], cwd=ROOT)
        assert ignored.returncode == 0, "deploy/demat.env must be git-ignored"


def test_entrypoint_builds_quoted_urls_from_the_env_file_password(tmp_path):
    """A hostile password (@ : / %) must not break or leak into another URL component."""
    script = (DEPLOY / "entrypoint.sh").read_text().replace('exec /entrypoint "$@"', "env")
    (tmp_path / "entrypoint.sh").write_text(script)
    env = {"PATH": os.environ["PATH"], "POSTGRES_PASSWORD": "p@ss:w/rd%25#", "POSTGRES_USER": "airflow"}
    out = subprocess.run(["bash", str(tmp_path / "entrypoint.sh"), "scheduler"], env=env, capture_output=True,
                         text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    got = dict(line.split("=", 1) for line in out.stdout.splitlines() if "=" in line)
    from sqlalchemy.engine import make_url

    for key, database in (("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", "airflow"), ("DEMAT_DATABASE_URL", "demat")):
        url = make_url(got[key])
        assert url.password == "p@ss:w/rd%25#" and url.host == "postgres" and url.database == database
    assert got["AIRFLOW__CELERY__RESULT_BACKEND"].startswith("db+postgresql://airflow:")
    missing = subprocess.run(["bash", str(tmp_path / "entrypoint.sh"), "scheduler"], env={"PATH": os.environ["PATH"]},
                             capture_output=True, text=True, timeout=30)
    assert missing.returncode == 64 and "demat.env" in missing.stderr


def test_dockerfile_extends_the_official_image_with_the_pinned_requirements():
    text = (DEPLOY / "Dockerfile").read_text()
    assert "ARG AIRFLOW_IMAGE=apache/airflow:3.3.2-python3.11" in text and "FROM ${AIRFLOW_IMAGE}" in text
    assert "-r /opt/demat/requirements.txt" in text and "apache-airflow==${AIRFLOW_VERSION}" in text
    assert "/opt/demat/deploy/entrypoint.sh" in text
    ignore = (DEPLOY / "Dockerfile.dockerignore").read_text().split()
    assert {".venv", ".git", ".demat", "deploy/*.env"} <= set(ignore)


def test_init_pins_host_keys_and_points_at_the_simulators_service():
    from embedded.distributed import connection_payloads

    endpoints = {
        "prefecture": {"host": "0.0.0.0", "port": 2222, "username": "demat", "key_path": "/k", "host_key": "ssh-ed25519 AAAA",
                       "upload_dir": "/depot", "reply_dir": "/retour"},
        "dgfip": {"host": "0.0.0.0", "port": 2223, "username": "demat", "key_path": "/k", "host_key": "ssh-ed25519 BBBB"},
    }
    out = connection_payloads(endpoints, "simulators")
    assert set(out) == {"demat_prefecture", "demat_dgfip"}
    assert out["demat_prefecture"]["host"] == "simulators" and out["demat_prefecture"]["port"] == 2222
    assert out["demat_dgfip"]["extra"]["host_key"] == "ssh-ed25519 BBBB"
    endpoints["sae"] = {"host": "x", "port": 1, "username": "demat", "key_path": "/k", "host_key": ""}
    with pytest.raises(ValueError, match="clé d'hôte"):
        connection_payloads(endpoints)
