"""The deployment's run launcher tells run monitoring whether a run's process is alive.

Real processes and a real (SQLite) Dagster instance; the live path, the daemon's monitoring
failing a run whose process died and run retries relaunching it, is in
tests/test_deploy_e2e.py (``make test-deploy``).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid

import pytest
from dagster import DagsterRun
from dagster._core.events import EngineEventData
from dagster._core.launcher.base import WorkerStatus
from dagster._core.test_utils import instance_for_test

from deploy.run_launcher import (
    RUN_WORKER_HOST_TAG,
    HostProcessRunLauncher,
    process_state,
    run_worker_pid,
)

LAUNCHER = {"module": "deploy.run_launcher", "class": "HostProcessRunLauncher"}


@pytest.fixture
def sleeper():
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    yield process
    if process.poll() is None:
        process.kill()
        process.wait(10)


def test_a_live_process_is_the_runs_and_a_dead_or_zombie_one_is_not(sleeper):
    reported_at = time.time()
    assert process_state(sleeper.pid, reported_at) is None
    os.kill(sleeper.pid, signal.SIGKILL)
    # Killed and not yet reaped by its parent: a zombie, gone all the same.
    deadline = time.monotonic() + 10
    while process_state(sleeper.pid, reported_at) is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert process_state(sleeper.pid, reported_at) == f"its process (pid {sleeper.pid}) has exited"
    sleeper.wait(10)
    assert process_state(sleeper.pid, reported_at) == f"its process (pid {sleeper.pid}) has exited"


def test_a_pid_now_held_by_a_newer_process_is_not_the_runs(sleeper):
    # The run's process reported this pid an hour before the process holding it was created.
    state = process_state(sleeper.pid, time.time() - 3600)
    assert state == (
        f"its process (pid {sleeper.pid}) has exited and the pid belongs to another process"
    )


def _run(instance, host: str | None) -> DagsterRun:
    tags = {RUN_WORKER_HOST_TAG: host} if host else {}
    return instance.add_run(DagsterRun(job_name="evaluation", run_id=str(uuid.uuid4()), tags=tags))


def _report_started(instance, run: DagsterRun, pid: int) -> None:
    # What the code server's run process reports first (dagster/_grpc/impl.py).
    instance.report_engine_event(
        f"Started process for run (pid: {pid}).", run, EngineEventData.in_process(pid)
    )


def test_the_instance_judges_a_run_by_the_process_it_reported(sleeper):
    with instance_for_test(overrides={"run_launcher": LAUNCHER}) as instance:
        launcher = instance.run_launcher
        assert isinstance(launcher, HostProcessRunLauncher)
        assert launcher.supports_check_run_worker_health

        run = _run(instance, socket.gethostname())
        # Before its process has reported, the run is given the benefit of the doubt.
        assert launcher.check_run_worker_health(run).status == WorkerStatus.RUNNING
        instance.report_engine_event("Submitting step", run, EngineEventData.in_process(1))
        _report_started(instance, run, sleeper.pid)
        assert run_worker_pid(instance, run.run_id)[0] == sleeper.pid
        assert launcher.check_run_worker_health(run).status == WorkerStatus.RUNNING

        sleeper.kill()
        sleeper.wait(10)
        health = launcher.check_run_worker_health(run)
        assert health.status == WorkerStatus.FAILED
        assert f"pid {sleeper.pid}" in health.msg and socket.gethostname() in health.msg


def test_a_run_on_another_host_or_of_unknown_host_is_not_judged(sleeper):
    with instance_for_test(overrides={"run_launcher": LAUNCHER}) as instance:
        launcher = instance.run_launcher
        sleeper.kill()
        sleeper.wait(10)
        for host in ("gpu-node-7", None):
            run = _run(instance, host)
            _report_started(instance, run, sleeper.pid)  # a dead pid, but not on this host
            health = launcher.check_run_worker_health(run)
            assert health.status == WorkerStatus.RUNNING
            assert health.msg.startswith("not judged")
