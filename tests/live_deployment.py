"""A real Dagster deployment for tests and benchmarks: a temporary instance, the repository's
workspace.yaml, ``dagster-daemon run`` as a subprocess, the ``assay`` and ``dagster`` CLIs, and
an OpenAI-compatible model server on loopback whose answers are known in advance.

Every wait is bounded; ``Deployment.stop`` ends the daemon's whole process group (the code
server and any run it launched), which is the only group it ever signals.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from dagster import DagsterInstance, DagsterRun, DagsterRunStatus, RunsFilter
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from assay.registry import Event, EventKind, Registry

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
T = TypeVar("T")

# One small scenario: arithmetic questions with a known answer, no few-shot examples.
TINY_SUITE = """
scenarios:
  arithmetic:
    scenario: arithmetic_qa
    args: {n_test: 8, n_train: 0}
    adapter: {method: generation, max_tokens: 4, stop: ["\\n"]}
    max_instances: 8
    primary_metric: exact_match
"""

# The promotion sensor, and the settings that gate its aliases and stages.
PROMOTION_SENSOR = "model_promotion_sensor"
GATE_VARIABLES = ("ASSAY_GATED_ALIASES", "ASSAY_GATED_STAGES", "ASSAY_GATED_PROMPT_ALIASES")
# TINY_SUITE with promotion criteria: a version must answer half the sums right.
GATED_SUITE = (
    TINY_SUITE
    + """
promotion:
  margin: 0.1
  criteria:
    - {scenario: arithmetic, metric: exact_match, at_least: 0.5}
"""
)
TERMINAL = {DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED}


_QUESTION = re.compile(r"What is (\d+) ([-+]) (\d+)\?")


def _answer(prompt: str, model: str) -> str:
    """``right`` computes the last question of the prompt; ``wrong`` never does."""
    if model != "right":
        return " banana"
    a, op, b = _QUESTION.findall(prompt)[-1]
    return f" {int(a) + int(b) if op == '+' else int(a) - int(b)}"


def arithmetic_app(calls: list[str] | None = None, delay_s: float = 0.0) -> Starlette:
    """An OpenAI-compatible server with two models, ``right`` and ``wrong``. Each completion
    call appends its model to ``calls`` and takes ``delay_s`` (a stand-in for model time),
    one call at a time, as one accelerator without batching would serve them."""
    busy = asyncio.Lock()

    async def completions(request: Request) -> JSONResponse:
        body = await request.json()
        prompts = body["prompt"] if isinstance(body["prompt"], list) else [body["prompt"]]
        if calls is not None:
            calls.append(body["model"])
        if delay_s:
            async with busy:
                await asyncio.sleep(delay_s)
        choices = [
            {
                "text": _answer(p, body["model"]),
                "index": i,
                "logprobs": None,
                "finish_reason": "stop",
            }
            for i, p in enumerate(prompts)
        ]
        usage = {"prompt_tokens": 10 * len(prompts), "completion_tokens": len(prompts)}
        return JSONResponse({"choices": choices, "usage": usage})

    async def models(request: Request) -> JSONResponse:
        return JSONResponse({"data": [{"id": "right"}, {"id": "wrong"}]})

    return Starlette(
        routes=[
            Route("/v1/completions", completions, methods=["POST"]),
            Route("/v1/models", models, methods=["GET"]),
        ]
    )


def finished(runs: list[DagsterRun]) -> list[DagsterRun] | None:
    """``runs`` once there are some and every one has ended (a ``wait_for`` predicate)."""
    return runs if runs and all(r.status in TERMINAL for r in runs) else None


def wait_for(predicate: Callable[[], T], timeout_s: float, what: str, log: Path | None = None) -> T:
    """Poll ``predicate`` every half second until it returns something truthy, at most
    ``timeout_s``; the failure names what was awaited and shows the daemon's log tail."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            tail = log.read_text(errors="replace")[-4000:] if log and log.exists() else ""
            raise AssertionError(f"waited {timeout_s:.0f}s for {what}\n{tail}")
        time.sleep(0.5)


class Deployment:
    """A Dagster home, a registry and storage under ``root``, driven through the CLIs."""

    def __init__(self, root: Path, model_cache_dir: Path, *, max_concurrent_runs: int) -> None:
        self.root = root
        home = root / "assay-home"
        (home / "cache").mkdir(parents=True)
        for name in ("models", "digests"):  # reuse converted models, not the request cache
            (model_cache_dir / name).mkdir(parents=True, exist_ok=True)
            (home / "cache" / name).symlink_to(model_cache_dir / name)
        self.dagster_home = root / "dagster"
        self.dagster_home.mkdir()
        (self.dagster_home / "dagster.yaml").write_text(
            "telemetry:\n  enabled: false\n"
            "run_coordinator:\n"
            "  module: dagster.core.run_coordinator\n"
            "  class: QueuedRunCoordinator\n"
            "  config:\n"
            f"    max_concurrent_runs: {max_concurrent_runs}\n"
            "    dequeue_interval_seconds: 1\n"
            "sensors:\n  use_threads: true\n  num_workers: 4\n"
            "schedules:\n  use_threads: true\n  num_workers: 2\n"
        )
        suite = root / "suite.yaml"
        suite.write_text(TINY_SUITE)
        self.env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
            "DAGSTER_HOME": str(self.dagster_home),
            "ASSAY_HOME": str(home),
            "ASSAY_STORAGE_URL": str(root / "storage"),
            "ASSAY_REGISTRY_URL": f"sqlite:///{root / 'registry.db'}",
            "ASSAY_SUITE": str(suite),
            "ASSAY_SENSOR_INTERVAL_S": "1",
            "ASSAY_ACTOR": "test",
            "HF_HUB_OFFLINE": "1",
            "HF_DATASETS_OFFLINE": "1",
            "TOKENIZERS_PARALLELISM": "false",
        }
        self.log = root / "daemon.log"
        self._daemon: subprocess.Popen | None = None
        self._instance: DagsterInstance | None = None

    @property
    def instance(self) -> DagsterInstance:
        if self._instance is None:
            self._instance = DagsterInstance.from_config(str(self.dagster_home))
        return self._instance

    def run(self, *command: str, timeout_s: float = 300) -> subprocess.CompletedProcess:
        return subprocess.run(
            list(command),
            cwd=REPO,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout_s,
        )

    def assay(self, *args: str, ok: bool = True) -> subprocess.CompletedProcess:
        """``assay registry ...``; ``ok`` asserts it exits 0."""
        done = self.run(str(BIN / "assay"), "registry", *args, timeout_s=120)
        if ok:
            assert done.returncode == 0, f"assay registry {' '.join(args)}: {done.stderr}"
        return done

    def dagster(self, *args: str) -> None:
        done = self.run(str(BIN / "dagster"), *args, "-w", "workspace.yaml", timeout_s=180)
        assert done.returncode == 0, f"dagster {' '.join(args)}: {done.stdout}{done.stderr}"

    def start(self) -> None:
        """``dagster-daemon run`` on this home and the repository's workspace.yaml."""
        # Create the instance's SQLite storages first: the daemon and a CLI creating them at
        # once on a fresh home race on their schema tables.
        self.instance.get_runs(limit=1)
        self.instance.all_instigator_state()
        with self.log.open("w") as out:
            self._daemon = subprocess.Popen(
                [str(BIN / "dagster-daemon"), "run", "-w", "workspace.yaml"],
                cwd=REPO,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: stop() ends it and its runs
            )

    def stop(self) -> None:
        if self._daemon is None:
            return
        group = self._daemon.pid  # the session leader's pid is the group id
        for sig, wait_s in ((signal.SIGTERM, 20), (signal.SIGKILL, 10)):
            try:
                os.killpg(group, sig)
            except ProcessLookupError:
                break
            try:
                self._daemon.wait(timeout=wait_s)
                break
            except subprocess.TimeoutExpired:
                continue
        with contextlib.suppress(ProcessLookupError):  # children that outlived the leader
            os.killpg(group, signal.SIGKILL)
        self._daemon = None

    # -- what the instance says

    def runs(self, **tags: str) -> list[DagsterRun]:
        return list(self.instance.get_runs(RunsFilter(tags=tags)))

    def ticks(self, name: str) -> list[Any]:
        """The instigator's ticks, newest first."""
        from dagster._core.definitions.run_request import InstigatorType

        ticks = []
        for kind in (InstigatorType.SENSOR, InstigatorType.SCHEDULE):
            for state in self.instance.all_instigator_state(instigator_type=kind):
                if state.instigator_name == name:
                    ticks += self.instance.get_ticks(state.instigator_origin_id, state.selector_id)
        return sorted(ticks, key=lambda t: t.timestamp, reverse=True)

    def sensor_cursor(self, name: str) -> int:
        done = [t for t in self.ticks(name) if t.cursor is not None]
        return int(done[0].cursor) if done else 0

    def registry(self) -> Registry:
        """The deployment's registry, opened (the caller closes it)."""
        return Registry.open(self.env["ASSAY_REGISTRY_URL"])

    def champion(self, model: str) -> int | None:
        """The version number ``model``'s ``champion`` alias holds now."""
        registry = self.registry()
        try:
            return registry.get_model(model).aliases.get("champion")
        finally:
            registry.close()

    def verdict(self, candidate: str) -> Event | None:
        """The latest gate verdict (approved or refused) on ``candidate`` (``<model>@v<N>``)."""
        registry = self.registry()
        try:
            found = [
                e
                for e in registry.decisions(model=candidate.split("@")[0])
                if e.kind in (EventKind.GATE_APPROVED, EventKind.GATE_REFUSED)
                and e.payload.get("candidate") == candidate
            ]
        finally:
            registry.close()
        return found[-1] if found else None

    def sensor_caught_up(self, name: str = PROMOTION_SENSOR) -> bool | None:
        """True once the sensor's cursor has passed the registry's last event (a ``wait_for``
        predicate); the sensor's own refusals, logged after its cursor, need no handling."""
        registry = self.registry()
        try:
            last = registry.events()[-1].id
        finally:
            registry.close()
        return self.sensor_cursor(name) >= last or None


@contextmanager
def deployment(
    root: Path, model_cache_dir: Path, *, max_concurrent_runs: int
) -> Iterator[Deployment]:
    deployed = Deployment(root, model_cache_dir, max_concurrent_runs=max_concurrent_runs)
    try:
        yield deployed
    finally:
        deployed.stop()
        if deployed._instance is not None:
            deployed._instance.dispose()
