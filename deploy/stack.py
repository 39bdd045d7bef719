"""The deployment of deploy/README.md on one machine: every service a real process on loopback.

PostgreSQL (a throwaway cluster: Dagster instance, registry, request cache), Redis (the Celery
broker), an S3 API server (moto in server mode; Parquet partitions and the dashboard), model
replicas (``assay serve``), Celery workers, ``dagster-daemon`` and ``dagster-webserver``. Used by
tests/test_deploy_e2e.py, tests/test_deploy_stack.py and benchmarks/bench_deploy.py; each service
is started on a free port with its data under one temporary directory and stopped (its whole
process tree) at the end.

Not imported by the library or the code location.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from deploy.registry_roles import OWNER, SERVICE, prepare_registry_database

REPO = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
BUCKET = "assay-deploy"
MODEL = "smollm2-135m-instruct"


class ServiceError(RuntimeError):
    """A service did not start, or stopped answering; the message quotes its log."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(what: str, check, timeout_s: float, log: Path | None = None) -> None:
    """Poll ``check`` (truthy = ready) every 0.25 s, at most ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            if check():
                return
        time.sleep(0.25)
    tail = log.read_text(errors="replace")[-3000:] if log and log.exists() else ""
    raise ServiceError(f"{what} not ready after {timeout_s:.0f} s\n{tail}")


def http_ok(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=2) as response:  # loopback only
        return response.status < 400


def port_open(port: int) -> bool:
    with socket.create_connection(("127.0.0.1", port), timeout=1):
        return True


def pg_bindir() -> Path | None:
    for candidate in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if (Path(candidate) / "initdb").is_file():
            return Path(candidate)
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def missing_parts() -> list[str]:
    """What this machine lacks to run the deployment (empty: everything is there)."""
    missing = []
    if pg_bindir() is None:
        missing.append("PostgreSQL server binaries (apt-get install postgresql)")
    if shutil.which("redis-server") is None:
        missing.append("redis-server (apt-get install redis-server)")
    for module in ("dagster_postgres", "dagster_celery", "redis", "s3fs", "moto", "boto3"):
        try:
            __import__(module)
        except ImportError:
            missing.append(f"python package {module} (pip install -e '.[deploy]')")
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            missing.append("a 'postgres' user to run the server as (running as root)")
    return missing


class PostgresServer:
    """A throwaway PostgreSQL cluster on 127.0.0.1 (initdb + pg_ctl, trust authentication for
    the ``assay`` user), under its own directory in /tmp, which the server's user can enter. It
    can be stopped and started again on the same port and data; ``remove()`` ends it."""

    def __init__(self, *, max_connections: int = 100) -> None:
        bindir = pg_bindir()
        if bindir is None:
            raise ServiceError("PostgreSQL server binaries are not installed")
        self._pg_ctl = str(bindir / "pg_ctl")
        self._prefix: list[str] = []
        self.root = Path(tempfile.mkdtemp(prefix="assay-pg-"))
        if os.geteuid() == 0:  # the server refuses to run as root
            user = pwd.getpwnam("postgres")
            os.chown(self.root, user.pw_uid, user.pw_gid)
            self._prefix = ["runuser", "-u", "postgres", "--"]
        self.port = free_port()
        self._max_connections = max_connections
        initdb = [str(bindir / "initdb"), "-D", str(self.root / "data"), "-U", "assay"]
        self._run(*initdb, "-A", "trust", "--no-sync")
        self.start()

    def url(self, database: str = "postgres", *, driver: bool = True, user: str = "assay") -> str:
        """The database's URL: SQLAlchemy's (psycopg 3), or libpq's with ``driver=False``; as
        ``user`` (default: the cluster's superuser)."""
        scheme = "postgresql+psycopg" if driver else "postgresql"
        return f"{scheme}://{user}@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        import psycopg

        with psycopg.connect(self.url(driver=False), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def start(self) -> None:
        """Start (or restart, same data and port) the cluster."""
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off"
        options += f" -c max_connections={self._max_connections}"
        self._ctl("-l", str(self.root / "log"), "-o", options, "start")

    def stop(self, mode: str = "fast") -> None:
        self._ctl("stop", "-m", mode)

    def remove(self) -> None:
        """Stop the server at once and delete its data."""
        with contextlib.suppress(ServiceError, subprocess.SubprocessError):
            self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)

    def _ctl(self, *args: str) -> None:
        self._run(self._pg_ctl, "-D", str(self.root / "data"), "-w", *args)

    def _run(self, *command: str) -> None:
        done = subprocess.run(
            [*self._prefix, *command], capture_output=True, text=True, timeout=120, check=False
        )
        if done.returncode != 0:
            shown = " ".join([Path(command[0]).name, *command[1:]])
            raise ServiceError(f"{shown} failed: {done.stdout}{done.stderr}")


# Every process the stack starts carries these in its environment, and so does everything it
# starts in turn (code servers, run workers, step processes): the stop finds them by it, also
# those that left the service's process group or were re-parented when their parent died.
STACK_ID_VAR = "ASSAY_STACK_ID"
SERVICE_ID_VAR = "ASSAY_STACK_SERVICE"


def _environment_var(process, name: str) -> str | None:
    try:
        return process.environ().get(name)
    except Exception:  # gone, a zombie, or not ours to read: psutil's errors
        return None


def processes_marked(name: str, value: str) -> list:
    """Every live process (psutil) whose environment has ``name=value``, this one excepted."""
    import psutil

    found = []
    for process in psutil.process_iter():
        if process.pid != os.getpid() and _environment_var(process, name) == value:
            found.append(process)
    return found


def _running(process) -> bool:
    """Alive and not a zombie (a zombie has exited; its parent has yet to collect it)."""
    import psutil

    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def end_processes(processes: list, timeout_s: float, also=None) -> list:
    """SIGTERM to ``processes`` (psutil), at most ``timeout_s`` for them to exit, then SIGKILL
    to the survivors and at most 10 s more. ``also`` (called again and again) returns processes
    found since (descendants started during the shutdown), which get the same. Returns those
    still alive at the end (none, unless a process cannot be killed). Collects no exit status:
    a child of the caller is left for its ``Popen`` to reap."""
    import psutil

    pending = {p.pid: p for p in processes}
    signalled: dict[int, int] = {}

    def look_again() -> None:
        for process in also() if also else []:
            pending.setdefault(process.pid, process)

    for sig, wait_s in ((signal.SIGTERM, timeout_s), (signal.SIGKILL, 10.0)):
        deadline = time.monotonic() + wait_s
        while True:
            look_again()
            pending = {pid: p for pid, p in pending.items() if _running(p)}
            for pid, process in pending.items():
                if signalled.get(pid) != sig:
                    with contextlib.suppress(psutil.Error):
                        process.send_signal(sig)  # psutil checks the pid is still this process
                    signalled[pid] = sig
            if not pending or time.monotonic() >= deadline:
                break
            time.sleep(0.25)
        if not pending:
            break
    return list(pending.values())


@dataclass
class Service:
    name: str
    process: subprocess.Popen
    log: Path
    marker: str = ""  # the value of SERVICE_ID_VAR in its processes' environment

    def alive(self) -> bool:
        return self.process.poll() is None

    def signal(self, sig: int) -> None:
        """Signal the service's whole process group (it leads its own session)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, sig)

    def processes(self) -> list:
        """The service's process and every descendant (psutil), wherever their process group:
        its children, theirs, and those carrying its marker that are no longer in its tree."""
        import psutil

        found = {}
        if self.alive():  # else its pid, collected, may be another process's now
            with contextlib.suppress(psutil.Error):
                leader = psutil.Process(self.process.pid)
                for process in [leader, *leader.children(recursive=True)]:
                    found[process.pid] = process
        if self.marker:
            for process in processes_marked(SERVICE_ID_VAR, self.marker):
                found.setdefault(process.pid, process)
                with contextlib.suppress(psutil.Error):
                    for child in process.children(recursive=True):
                        found.setdefault(child.pid, child)
        return list(found.values())

    def stop(self, timeout_s: float = 20) -> None:
        """SIGTERM to every process of the service's tree (a code server, a run's process and
        its step processes included), at most ``timeout_s`` for all of them to exit, then
        SIGKILL to what is left. Not only the leader is waited for: a code server with a run
        in flight outlived ``dagster-daemon`` by minutes."""
        left = end_processes(self.processes(), timeout_s, also=self.processes)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(10)  # collect the leader's exit status
        if left:
            raise ServiceError(f"{self.name}: processes {[p.pid for p in left]} survived SIGKILL")

    def tail(self, chars: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""


@dataclass
class LocalDeployment:
    """One deployment under ``root``; ``start()`` brings it up, ``stop()`` takes it down."""

    root: Path
    suite_yaml: str
    model_cache: Path  # where the bundled GGUF is converted once (shared with the tests)
    workers: int = 2
    replicas: int = 2
    executor: str = "celery"
    daemon: bool = True
    webserver: bool = True
    visibility_timeout_s: int = 3600
    extra_env: dict[str, str] = field(default_factory=dict)
    services: dict[str, Service] = field(default_factory=dict)
    ports: dict[str, int] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    postgres: PostgresServer | None = None
    stack_id: str = field(default_factory=lambda: uuid.uuid4().hex)

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> LocalDeployment:
        self.root.mkdir(parents=True, exist_ok=True)
        try:
            self._start_postgres()
            self._start_redis()
            self._start_s3()
            self._start_replicas()
            self._write_instance()
            for i in range(self.workers):
                self.start_worker(i)
            if self.daemon:
                self.start_daemon()
            if self.webserver:
                self._start_webserver()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop every service and whatever they started (see ``Service.stop``), then whatever
        else carries this deployment's marker (the orphans of a service killed and started
        again), then PostgreSQL."""
        failures = []
        try:
            for name in reversed(list(self.services)):
                try:
                    self.services[name].stop()
                except ServiceError as exc:
                    failures.append(str(exc))
            left = end_processes(processes_marked(STACK_ID_VAR, self.stack_id), 20)
            failures += [f"processes {[p.pid for p in left]} survived SIGKILL"] if left else []
        finally:
            if self.postgres is not None:
                self.postgres.remove()
        if failures:
            raise ServiceError("; ".join(failures))

    def __enter__(self) -> LocalDeployment:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _spawn(self, name: str, command: list[str], env: dict[str, str] | None = None) -> Service:
        log = self.root / "logs" / f"{name}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        marker = f"{self.stack_id}/{name}/{uuid.uuid4().hex[:8]}"
        env = {**(env or self.env), STACK_ID_VAR: self.stack_id, SERVICE_ID_VAR: marker}
        with open(log, "ab") as out:
            process = subprocess.Popen(
                command,
                cwd=REPO,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # its own process group, stopped as one
            )
        service = Service(name, process, log, marker)
        self.services[name] = service
        return service

    # -- PostgreSQL: the Dagster instance, the registry and the request cache ----------------

    def _start_postgres(self) -> None:
        self.postgres = PostgresServer(max_connections=200)
        self.ports["postgres"] = self.postgres.port
        for name in ("dagster", "assay"):
            self.postgres.create_database(name)
        # The registry's tables and triggers belong to the owner role, which migrates them;
        # the deployment's processes connect as the service role (deploy/README.md).
        prepare_registry_database(self.pg_url("assay"), self.pg_url("assay", user=OWNER))

    def start_postgres(self) -> None:
        """Start the cluster again (same data and port) after ``stop_postgres``."""
        assert self.postgres is not None
        self.postgres.start()

    def stop_postgres(self) -> None:
        assert self.postgres is not None
        self.postgres.stop()

    def pg_url(self, database: str, *, driver: bool = True, user: str = "assay") -> str:
        """A database's URL, as the cluster's superuser unless ``user`` says otherwise."""
        assert self.postgres is not None
        return self.postgres.url(database, driver=driver, user=user)

    # -- Redis, S3 -------------------------------------------------------------------------

    def _start_redis(self) -> None:
        port = self.ports.setdefault("redis", free_port())
        (self.root / "redis").mkdir()
        command = ["redis-server", "--bind", "127.0.0.1", "--port", str(port), "--save", ""]
        command += ["--appendonly", "no", "--dir", str(self.root / "redis")]
        service = self._spawn("redis", command, env=dict(os.environ))
        wait_until("redis", lambda: port_open(port), 30, service.log)

    def start_s3(self) -> None:
        """Start (or restart, same port) the S3 API server."""
        port = self.ports.setdefault("s3", free_port())
        command = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
        service = self._spawn("s3", command, env=dict(os.environ))
        wait_until(
            "moto S3 server", lambda: http_ok(f"{self.s3_endpoint}/moto-api/"), 60, service.log
        )

    def _start_s3(self) -> None:
        self.start_s3()
        self.s3_client().create_bucket(Bucket=BUCKET)

    @property
    def s3_endpoint(self) -> str:
        return f"http://127.0.0.1:{self.ports['s3']}"

    def s3_client(self):
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.s3_endpoint,
            aws_access_key_id="deploy-test",
            aws_secret_access_key="deploy-test",
            region_name="us-east-1",
        )

    def s3_keys(self, prefix: str = "") -> list[str]:
        listing = self.s3_client().list_objects_v2(Bucket=BUCKET, Prefix=prefix)
        return sorted(o["Key"] for o in listing.get("Contents", []))

    # -- model replicas --------------------------------------------------------------------

    def _start_replicas(self) -> None:
        for i in range(self.replicas):
            self.start_replica(i)
        for i in range(self.replicas):
            port = self.ports[f"replica{i}"]
            wait_until(
                f"replica {i}",
                lambda port=port: http_ok(f"http://127.0.0.1:{port}/v1/models"),
                300,
                self.services[f"replica{i}"].log,
            )

    def start_replica(self, i: int) -> Service:
        port = self.ports.setdefault(f"replica{i}", free_port())
        command = [str(VENV_BIN / "assay"), "serve", f"bundled:{MODEL}", "--name", MODEL]
        command += ["--port", str(port), "--device", "cpu", "--cache-dir", str(self.model_cache)]
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
        return self._spawn(f"replica{i}", command, env=env)

    def model_source(self, replicas: int | None = None) -> str:
        n = self.replicas if replicas is None else replicas
        urls = ",".join(f"http://127.0.0.1:{self.ports[f'replica{i}']}/v1" for i in range(n))
        return f"openai:{urls}#{MODEL}"

    # -- the Dagster instance and its processes --------------------------------------------

    def _write_instance(self) -> None:
        home = self.root / "dagster_home"
        home.mkdir()
        shutil.copy(REPO / "deploy" / "dagster.yaml", home / "dagster.yaml")
        (self.root / "suite.yaml").write_text(self.suite_yaml)
        self.env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "deploy" / "celery")]),
            "DAGSTER_HOME": str(home),
            # dagster-postgres speaks psycopg2; SQLAlchemy 2.1 would pick psycopg 3 for a bare
            # postgresql:// URL, whose server-side parameters break its NOTIFY statements.
            "ASSAY_DAGSTER_PG_URL": self.pg_url("dagster", driver=False).replace(
                "postgresql://", "postgresql+psycopg2://"
            ),
            "ASSAY_REGISTRY_URL": self.pg_url("assay", user=SERVICE),
            "ASSAY_REQUEST_CACHE_URL": self.pg_url("assay", user=SERVICE),
            "ASSAY_STORAGE_URL": f"s3://{BUCKET}/assay",
            "ASSAY_SUITE": str(self.root / "suite.yaml"),
            "ASSAY_HOME": str(self.root / "assay_home"),
            "ASSAY_EXECUTOR": self.executor,
            "ASSAY_CELERY_BROKER": f"redis://127.0.0.1:{self.ports['redis']}/0",
            "ASSAY_CELERY_BACKEND": f"redis://127.0.0.1:{self.ports['redis']}/1",
            "ASSAY_CELERY_VISIBILITY_TIMEOUT": str(self.visibility_timeout_s),
            "AWS_ENDPOINT_URL": self.s3_endpoint,
            "AWS_ACCESS_KEY_ID": "deploy-test",
            "AWS_SECRET_ACCESS_KEY": "deploy-test",
            "AWS_DEFAULT_REGION": "us-east-1",
            "HF_HUB_OFFLINE": "1",
            "TOKENIZERS_PARALLELISM": "false",
            "DAGSTER_DISABLE_TELEMETRY": "1",
            # A range run's materializations (one per partition) go to Postgres in batches
            # instead of one INSERT and NOTIFY each (benchmarks/bench_rescoring.py).
            "DAGSTER_EVENT_BATCH_SIZE": "100",
            **self.extra_env,
        }
        # Create the instance's tables once, then give the model pool its limit.
        self.dagster("instance", "migrate")
        self.dagster("instance", "concurrency", "set", "model-inference", "2")

    def dagster(self, *args: str, timeout_s: float = 600) -> subprocess.CompletedProcess:
        """Run the ``dagster`` CLI against this deployment; raises with its output on failure."""
        done = subprocess.run(
            [str(VENV_BIN / "dagster"), *args],
            cwd=REPO,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout_s,
        )
        if done.returncode != 0:
            raise ServiceError(
                f"dagster {' '.join(args)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
            )
        return done

    def assay(self, *args: str) -> str:
        """Run the ``assay`` CLI (registry commands) against this deployment."""
        done = subprocess.run(
            [str(VENV_BIN / "assay"), *args],
            cwd=REPO,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if done.returncode != 0:
            raise ServiceError(f"assay {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
        return done.stdout

    def start_worker(self, i: int) -> Service:
        """One Celery worker process (the solo pool: a step runs in the worker's own process,
        so killing the worker kills the step)."""
        command = [str(VENV_BIN / "celery"), "-A", "dagster_celery.app", "worker", "-Q", "dagster"]
        command += ["--pool", "solo", "-n", f"w{i}-{uuid.uuid4().hex[:6]}@%h", "-l", "INFO"]
        service = self._spawn(f"worker{i}", command)
        wait_until(f"celery worker {i}", lambda: "ready." in service.tail(100000), 120, service.log)
        return service

    def start_daemon(self) -> Service:
        command = [str(VENV_BIN / "dagster-daemon"), "run", "-w", "workspace.yaml"]
        service = self._spawn("daemon", command)
        wait_until("dagster-daemon", lambda: self._daemon_healthy(), 180, service.log)
        return service

    def _daemon_healthy(self) -> bool:
        done = subprocess.run(
            [str(VENV_BIN / "dagster-daemon"), "liveness-check"],
            cwd=REPO,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        return done.returncode == 0

    def _start_webserver(self) -> None:
        # No authentication of its own: loopback only, as every service here. A team reaches
        # it through deploy/nginx/assay.conf (TLS and a sign-in) on the same machine.
        port = self.ports.setdefault("webserver", free_port())
        command = [str(VENV_BIN / "dagster-webserver"), "-w", "workspace.yaml"]
        command += ["-h", "127.0.0.1", "-p", str(port)]
        service = self._spawn("webserver", command)
        wait_until(
            "dagster-webserver",
            lambda: http_ok(f"http://127.0.0.1:{port}/server_info"),
            180,
            service.log,
        )

    def graphql(self, query: str, variables: dict | None = None) -> dict:
        """One query to the webserver's GraphQL endpoint."""
        body = json.dumps({"query": query, "variables": variables or {}}).encode()
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.ports['webserver']}/graphql",
            data=body,
            headers={"Content-Type": "application/json"},
        )
        # The webserver answers 500 for a moment after its database restarts (its pooled
        # connections are dropped on first use); a few tries ride that out.
        for attempt in range(5):
            try:
                with urllib.request.urlopen(request, timeout=60) as response:
                    payload = json.loads(response.read())
                break
            except urllib.error.HTTPError as exc:
                if exc.code < 500 or attempt == 4:
                    raise
                time.sleep(3)
        if payload.get("errors"):
            raise ServiceError(f"GraphQL errors: {payload['errors']}")
        return payload["data"]

    def logs(self) -> str:
        """The end of every service's log, for a failing test's message."""
        return "\n".join(f"== {n}\n{s.tail(1500)}" for n, s in self.services.items())
