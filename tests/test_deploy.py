"""The container deployment, checked without a container engine.

The image holds exactly what the wheel holds, so the wheel is built from the Docker build
context (the tree minus .dockerignore), installed with its dependencies into a fresh venv and
run away from the source tree: the compose file's own migrate, worker and beat commands on
PostgreSQL and Redis, and one signing job through them. docker-compose.yml is checked against
the compose spec and against the CLI and settings it drives; the Dockerfile against what the
compose file expects of the image."""

from __future__ import annotations

import ast
import contextlib
import json
import os
import re
import secrets
import shlex
import shutil
import signal
import subprocess
import sys
import time
import tomllib
import zipfile
from fnmatch import fnmatch
from pathlib import Path

import pytest
from ruamel.yaml import YAML  # comes with check-jsonschema, a test dependency
from sqlalchemy import text

from scheduler.schedule import CRL_TICK_TASK

from .conftest import PASSPHRASE, _postgres_url, make_csr

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "docker-compose.yml"
REDIS_URL = os.environ.get("PKIQ_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
PKIQ_SERVICES = {"migrate", "worker", "beat", "cli"}
LONG_RUNNING = {"postgres", "redis", "worker", "beat", "web"}


def settings_class():
    """pkiq's Settings, the PKIQ_* variables. The one place that knows its module, which may
    move (to shell.settings on main)."""
    from shell.settings import Settings

    return Settings


def known_variables() -> set[str]:
    settings = settings_class()
    prefix = settings.model_config["env_prefix"]
    return {f"{prefix}{name}".upper() for name in settings.model_fields}


def run_ok(*args, **kwargs) -> subprocess.CompletedProcess:
    done = subprocess.run([str(a) for a in args], capture_output=True, text=True,
                          timeout=300, **kwargs)
    assert done.returncode == 0, f"{args}: exit {done.returncode}\n{done.stdout}{done.stderr}"
    return done


# ------------------------------------------------------------------ the build context

def dockerignore() -> list[re.Pattern]:
    """.dockerignore read as Docker reads it: paths from the context root, * and ? stop at
    a slash, ** spans folders. Negations (!) are not used, so not modelled."""
    patterns = []
    for line in (ROOT / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        assert not line.startswith("!"), "this reading of .dockerignore has no negations"
        parts = re.split(r"(\*\*/|\*\*|\*|\?|\[[^]]*\])", line.strip("/"))
        patterns.append(re.compile("".join(
            {"**/": "(?:.*/)?", "**": ".*", "*": "[^/]*", "?": "[^/]"}.get(part)
            or (part if part.startswith("[") else re.escape(part)) for part in parts)))
    return patterns


def ignored(relative: str, patterns: list[re.Pattern]) -> bool:
    return any(p.fullmatch(relative) for p in patterns)


def copy_context(dest: Path) -> Path:
    patterns = dockerignore()

    def skip(folder, names):
        rel = Path(folder).relative_to(ROOT).as_posix()
        return [n for n in names if ignored(n if rel == "." else f"{rel}/{n}", patterns)]

    shutil.copytree(ROOT, dest, ignore=skip, symlinks=True)
    return dest


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """Built as the Dockerfile's build stage builds it, from the context .dockerignore
    leaves: built in the source tree it would also pack whatever a stale build/ holds."""
    context = copy_context(tmp_path_factory.mktemp("context") / "src")
    out = tmp_path_factory.mktemp("wheel")
    run_ok(sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir", out,
           context)
    [built] = out.glob("*.whl")
    return built


@pytest.fixture(scope="module")
def venv(wheel, tmp_path_factory) -> Path:
    """A fresh venv holding the wheel and its dependencies only, as the image's final stage
    installs them (from PyPI through pip's cache). It has no pip of its own: this run's pip
    installs into it, which saves seeding one; bytecode is written on first import instead."""
    venv = tmp_path_factory.mktemp("venv")
    run_ok(sys.executable, "-m", "venv", "--without-pip", venv)
    run_ok(sys.executable, "-m", "pip", "--python", venv / "bin" / "python", "install",
           "--quiet", "--no-compile", wheel)
    return venv


def clean_env(**settings: str) -> dict[str, str]:
    """The environment of a process in the image: no PYTHONPATH, no PKIQ_* from the test
    run, only the settings given."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("PKIQ_") and k not in {"PYTHONPATH", "PYTHONDONTWRITEBYTECODE",
                                                      "VIRTUAL_ENV"}}
    return {**env, **settings}


def top_level_imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_the_wheel_holds_every_package_pyproject_lists_and_the_migrations(wheel):
    include = tomllib.loads((ROOT / "pyproject.toml").read_text())[
        "tool"]["setuptools"]["packages"]["find"]["include"]
    packages = {d.name for d in ROOT.iterdir()
                if (d / "__init__.py").is_file() and any(fnmatch(d.name, p) for p in include)}
    assert all(any(fnmatch(name, p) for name in packages) for p in include), (include, packages)
    repo_packages = {d.name for d in ROOT.iterdir() if (d / "__init__.py").is_file()}
    imported = {name for pkg in packages for f in (ROOT / pkg).rglob("*.py")
                for name in top_level_imports(f)}
    assert imported & repo_packages <= packages, "shipped code imports a package not shipped"
    names = set(zipfile.ZipFile(wheel).namelist())
    top = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert top == packages
    modules = {f.relative_to(ROOT).as_posix() for pkg in packages
               for f in (ROOT / pkg).rglob("*.py") if "__pycache__" not in f.parts}
    assert modules - names == set()
    makos = [f for pkg in packages for f in (ROOT / pkg).rglob("script.py.mako")]
    assert makos, "no Alembic migrations found in the packages"
    for mako in makos:  # the revisions themselves are modules, checked above
        assert mako.relative_to(ROOT).as_posix() in names
        assert [v for v in (mako.parent / "versions").glob("*.py") if v.name != "__init__.py"]


def test_dockerignore_keeps_local_state_and_secrets_out_of_the_context():
    patterns = dockerignore()
    for path in (".git", ".venv/bin/python", "pkiq-data/pkiq.db", "bench/results/run.json",
                 "secrets/ca.pass", ".env", "build/lib/ca/x.py", "pkiq.egg-info/PKG-INFO",
                 "ca/__pycache__/x.cpython-311.pyc", ".pytest_cache/v"):
        assert any(ignored("/".join(path.split("/")[:i]), patterns)
                   for i in range(1, path.count("/") + 2)), path
    for path in ("pyproject.toml", "README.md", "Dockerfile", "shell/migrations/script.py.mako",
                 "bench/run"):
        assert not ignored(path, patterns), path


def test_the_installed_wheel_runs_without_the_source_tree(venv, wheel, tmp_path):
    bin_ = venv / "bin"
    assert "Usage: pkiq" in run_ok(bin_ / "pkiq", "--help", cwd=tmp_path, env=clean_env()).stdout
    top = sorted({n.split("/")[0] for n in zipfile.ZipFile(wheel).namelist()
                  if "/" in n and ".dist-info" not in n})
    where = run_ok(bin_ / "python", "-c",
                   "import importlib, json, sys; print(json.dumps("
                   "[importlib.import_module(m).__file__ for m in sys.argv[1:]]))",
                   *top, cwd=tmp_path, env=clean_env(PKIQ_DATA_DIR=str(tmp_path / "data")))
    for path in json.loads(where.stdout):
        assert Path(path).is_relative_to(venv), path


# ------------------------------------------------------------------ running it

class Deployment:
    """Processes run from the fresh venv in a folder without sources, on one PostgreSQL
    schema and one Redis queue of their own; stopped at the end."""

    def __init__(self, bin_: Path, folder: Path, env: dict[str, str]):
        self.bin, self.folder, self.env, self.procs = bin_, folder, env, []

    def pkiq(self, *args, timeout=180) -> subprocess.CompletedProcess:
        return subprocess.run([str(self.bin / "pkiq"), *map(str, args)], cwd=self.folder,
                              env=self.env, capture_output=True, text=True, timeout=timeout)

    def start(self, *args) -> tuple[subprocess.Popen, Path]:
        log = self.folder / f"proc{len(self.procs)}.log"
        with log.open("w") as out:
            proc = subprocess.Popen([str(self.bin / "pkiq"), *args], cwd=self.folder,
                                    env=self.env, stdout=out, stderr=subprocess.STDOUT,
                                    start_new_session=True)
        self.procs.append(proc)
        return proc, log

    @staticmethod
    def wait_for(proc: subprocess.Popen, log: Path, pattern: str, timeout: float = 60) -> None:
        """Until the process logs a line matching the pattern; failing if it exits first."""
        deadline = time.monotonic() + timeout
        while not re.search(pattern, log.read_text()):
            assert proc.poll() is None, f"exited {proc.returncode}:\n{log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"no {pattern!r}:\n{log.read_text()[-3000:]}"
            time.sleep(0.2)

    @staticmethod
    def terminate(proc: subprocess.Popen) -> int:
        """SIGTERM to the main process only (Celery's warm shutdown stops its children)."""
        proc.send_signal(signal.SIGTERM)
        return proc.wait(timeout=30)

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


@pytest.fixture(scope="module")
def deployment(venv, postgres_admin, tmp_path_factory):
    url, schema = _postgres_url(postgres_admin)
    folder = tmp_path_factory.mktemp("deployment")
    passfile = folder / "ca.pass"  # the compose secret: the first line, mode 0600
    passfile.write_text(PASSPHRASE + "\n")
    passfile.chmod(0o600)
    env = clean_env(PKIQ_DATABASE_URL=url, PKIQ_BROKER_URL=REDIS_URL,
                    PKIQ_QUEUE=f"pkiq-deploy-{secrets.token_hex(4)}",
                    PKIQ_DATA_DIR=str(folder / "data"), PKIQ_CA_PASSPHRASE_FILE=str(passfile),
                    PKIQ_CRL_TICK_SECONDS="5")  # beat sends a CRL tick soon after it starts
    deployment = Deployment(venv / "bin", folder, env)
    yield deployment
    deployment.stop()
    with postgres_admin.connect() as conn:
        conn.execute(text(f'drop schema "{schema}" cascade'))


@pytest.fixture(scope="module")
def compose() -> dict:
    return YAML(typ="safe").load(COMPOSE.read_text())


def test_the_migrate_service_creates_the_schema_and_can_run_again(deployment, compose):
    command = compose["services"]["migrate"]["command"]
    for _ in range(2):  # compose runs it on every `up`
        done = deployment.pkiq(*command)
        assert done.returncode == 0, done.stderr
        assert "database schema at revision" in done.stdout


def test_crl_refresh_with_no_distribution_points(deployment):
    done = deployment.pkiq("crl", "refresh")
    assert done.returncode == 0, done.stderr


def test_worker_and_beat_start_stay_up_and_sign_a_job(deployment, compose):
    """The compose file's worker and beat commands, from the wheel: beat's CRL tick runs on
    the worker (the scheduler package), and a submitted request is issued."""
    worker, worker_log = deployment.start(*compose["services"]["worker"]["command"])
    beat, beat_log = deployment.start(*compose["services"]["beat"]["command"])
    deployment.wait_for(worker, worker_log, r"celery@\S+ ready\.")
    deployment.wait_for(beat, beat_log, "beat: Starting")
    created = deployment.pkiq("ca", "create", "Root", "--subject", "/CN=Deploy Root",
                              "--key-type", "ec-p256")  # reads PKIQ_CA_PASSPHRASE_FILE
    assert created.returncode == 0, created.stderr
    csr = deployment.folder / "req.pem"
    csr.write_bytes(make_csr("expe1.example.com"))
    done = deployment.pkiq("submit", csr, "--ca", "Root", "--wait", "--timeout", "120", "--json")
    assert done.returncode == 0, (done.stderr, worker_log.read_text()[-3000:])
    [job] = json.loads(done.stdout)
    assert job["state"] == "issued" and job["serial"]
    deployment.wait_for(worker, worker_log, re.escape(CRL_TICK_TASK) + r"\[\S+\] succeeded",
                        timeout=30)
    assert worker.poll() is None and beat.poll() is None
    assert deployment.terminate(beat) == 0, beat_log.read_text()[-3000:]
    assert deployment.terminate(worker) == 0, worker_log.read_text()[-3000:]


# ------------------------------------------------------------------ the compose file

def pkiq_services(compose: dict) -> dict[str, dict]:
    """The services that run the pkiq image: those built from this folder's Dockerfile."""
    return {name: svc for name, svc in compose["services"].items() if "build" in svc}


def test_the_compose_file_follows_the_compose_spec():
    run_ok(sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.compose-spec",
           COMPOSE)


def test_every_compose_command_is_a_pkiq_command(venv, compose, tmp_path):
    """Each service's command, the image's CMD where a service has none, and the commands
    the comments tell the reader to run, parsed by the wheel's own CLI: `--help` appended
    makes click resolve the subcommands and reject unknown options, and run nothing. (worker
    and beat hand unknown options to Celery; the test above runs their commands for real.)"""
    services = pkiq_services(compose)
    assert set(services) >= PKIQ_SERVICES
    default = json.loads(dockerfile_final_stage()["CMD"][-1])
    commands = [svc.get("command", default) for svc in services.values()]
    documented = re.findall(r"^#\s+docker compose run --rm cli (.+)$", COMPOSE.read_text(), re.M)
    assert documented
    commands += [shlex.split(line) for line in documented]
    script = ("import contextlib, io, json, sys\n"
              "from importlib.metadata import entry_points\n"
              "main, codes = entry_points(group='console_scripts')['pkiq'].load(), []\n"
              "for argv in json.loads(sys.argv[1]):\n"
              "    sys.argv, err = ['pkiq', *argv, '--help'], io.StringIO()\n"
              "    with contextlib.redirect_stdout(io.StringIO()), "
              "contextlib.redirect_stderr(err):\n"
              "        try:\n"
              "            main()\n"
              "        except SystemExit as exc:\n"
              "            codes.append([exc.code, err.getvalue()])\n"
              "print(json.dumps(codes))\n")
    done = run_ok(venv / "bin" / "python", "-c", script, json.dumps(commands), cwd=tmp_path,
                  env=clean_env())
    results = json.loads(done.stdout)
    assert len(results) == len(commands)
    for command, (code, err) in zip(commands, results, strict=True):
        assert code == 0, (command, err)


def test_compose_settings_secrets_dependencies_and_restarts(compose):
    services, declared = compose["services"], set(compose.get("secrets", {}))
    for name, svc in pkiq_services(compose).items():
        env = svc.get("environment", {})
        env = dict(e.split("=", 1) for e in env) if isinstance(env, list) else env
        unknown = {k for k in env if k.startswith("PKIQ_")} - known_variables()
        assert not unknown, f"{name}: not pkiq settings: {unknown}"
        used = {s if isinstance(s, str) else s["source"] for s in svc.get("secrets", [])}
        assert used <= declared, name
        if "PKIQ_CA_PASSPHRASE_FILE" in env:
            assert env["PKIQ_CA_PASSPHRASE_FILE"] in {f"/run/secrets/{s}" for s in used}, name
    for name, svc in services.items():
        assert set(svc.get("depends_on", {})) <= set(services), name
        assert svc.get("restart") == ("unless-stopped" if name in LONG_RUNNING else "no"), name
    for secret in compose.get("secrets", {}).values():
        assert Path(secret["file"]).parts[0] == "secrets"  # kept out of git and the image
    assert services["migrate"]["command"] == ["db", "upgrade"]
    for name in ("worker", "beat"):
        assert services[name]["depends_on"]["migrate"] == {
            "condition": "service_completed_successfully"}
    assert "profiles" in services["cli"]


# ------------------------------------------------------------------ the Dockerfile

def dockerfile_stages() -> list[list[tuple[str, str]]]:
    """The Dockerfile as stages of (INSTRUCTION, arguments), continuations joined."""
    lines, stages = [], []
    for raw in (ROOT / "Dockerfile").read_text().splitlines():
        if raw.strip().startswith("#"):
            continue
        if lines and lines[-1].endswith("\\"):
            lines[-1] = lines[-1][:-1] + " " + raw.strip()
        elif raw.strip():
            lines.append(raw.strip())
    for line in lines:
        word, _, args = line.partition(" ")
        if word.upper() == "FROM":
            stages.append([])
        stages[-1].append((word.upper(), args.strip()))
    return stages


def dockerfile_final_stage() -> dict[str, list[str]]:
    final: dict[str, list[str]] = {}
    for word, args in dockerfile_stages()[-1]:
        final.setdefault(word, []).append(args)
    return final


def test_the_dockerfile_installs_the_wheel_and_names_no_source_folder():
    stages = dockerfile_stages()
    assert len(stages) >= 2
    for word, args in (step for stage in stages for step in stage):
        if word in {"COPY", "ADD"} and "--from=" not in args:
            *sources, _dest = shlex.split(args)
            for source in sources:  # the whole context, or single files
                assert source == "." or (ROOT / source).is_file(), f"{word} {args}"
    assert any(w == "RUN" and "pip wheel" in a for w, a in stages[0])
    final = dockerfile_final_stage()
    assert all("--from=" in args for args in final.get("COPY", [])) and "ADD" not in final
    installs = [a for a in final["RUN"] if "pip install" in a]
    assert installs and all(re.search(r"pip install [^&;]*\.whl", a) for a in installs)


def test_the_image_runs_pkiq_as_its_user_with_the_data_dir_compose_expects(compose):
    final = dockerfile_final_stage()
    assert [json.loads(a) for a in final["ENTRYPOINT"]] == [["pkiq"]]
    [user] = final["USER"]
    assert user not in {"root", "0"} and not user.startswith("0:")
    env = dict(a.split("=", 1) for a in final["ENV"])
    assert {k for k in env if k.startswith("PKIQ_")} <= known_variables()
    data_dir = env["PKIQ_DATA_DIR"]
    [useradd] = [a for a in final["RUN"] if "useradd" in a]
    assert f"--home-dir {data_dir} --create-home" in useradd and useradd.split()[-1] == user
    assert final["WORKDIR"] == [data_dir]
    assert any(re.search(r"apt-get install .*\bopenssl\b", a) for a in final["RUN"])
    # The uid the compose file's build argument and its comments name is the image's default.
    [uid] = [a.split("=", 1)[1] for a in final["ARG"] if a.startswith("PKIQ_UID=")]
    for svc in pkiq_services(compose).values():
        assert svc["build"]["args"]["PKIQ_UID"] == f"${{PKIQ_UID:-{uid}}}"
    assert f"chown {uid}:{uid} secrets/ca.pass" in COMPOSE.read_text()
    for svc in pkiq_services(compose).values():
        assert "PKIQ_DATA_DIR" not in svc.get("environment", {})  # the image's own


def test_web_serves_the_api_with_the_broker_a_readiness_check_and_the_workers_metrics(
        compose, tmp_path):
    """The web service announces API jobs on the workers' broker, has no secret, is
    health-checked on /readyz by the image's own python (it has no curl), and reads the
    metrics folder the workers write, through the same volume at the same path."""
    services = compose["services"]
    web, worker = services["web"], services["worker"]
    assert web["environment"]["PKIQ_BROKER_URL"] == worker["environment"]["PKIQ_BROKER_URL"]
    assert web["secrets"] == [] and "PKIQ_CA_PASSPHRASE_FILE" not in web["environment"]
    folder = web["environment"]["PKIQ_METRICS_DIR"]
    assert worker["environment"]["PKIQ_METRICS_DIR"] == folder
    for svc in (web, worker):
        volumes = dict(v.rsplit(":", 1)[::-1] for v in svc["volumes"])
        assert volumes[folder] in compose["volumes"], svc
    assert f"install -d -o pkiq -g pkiq -m 0700 /var/lib/pkiq/stores {folder}" in " ".join(
        dockerfile_final_stage()["RUN"])
    check = web["healthcheck"]["test"]
    assert check[:3] == ["CMD", "python", "-c"] and "curl" not in str(check)
    port = web["command"][web["command"].index("--port") + 1]
    assert web["ports"] == [f"{port}:{port}"] and f":{port}/readyz" in check[3]
    # the check's own code, against a real pkiq web: 0 when ready, not 0 when not
    from service import ServiceContext
    from shell.settings import Settings

    from .test_web_downloads import Served

    for broker, ready in ((REDIS_URL, True), ("redis://127.0.0.1:1/0", False)):
        ctx = ServiceContext(Settings(data_dir=tmp_path / "data", broker_url=broker,
                                      database_url=f"sqlite:///{tmp_path / 'pkiq.db'}"))
        served = Served(ctx)
        try:
            done = subprocess.run([sys.executable, "-c", check[3].replace(
                f":{port}/", f":{served.port}/")], capture_output=True, timeout=30)
        finally:
            served.close()
            ctx.close()
        assert (done.returncode == 0) is ready, done.stderr
