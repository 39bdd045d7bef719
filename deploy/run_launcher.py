"""Dagster's default run launcher, with the run-worker health check run monitoring needs.

The default launcher starts each run in a process of the code server, and cannot tell run
monitoring whether that process is still there: a run whose process died (killed with its
daemon, out of memory, its machine's Postgres connection lost before it could report) stays
STARTED for ever, holds its ``assay/partitions`` slot in the run queue and its pool slots,
and a promotion of the same version joins it instead of evaluating. This launcher records on
which host a run's process runs, and answers monitoring's question there: the process whose
pid the run reported (its "Started process for run" event) is gone, or is another process
now, so the run has failed and run retries relaunch it.

Runs whose process is on another host (a code server reached over the network) are not
judged: monitoring's maximum runtime still bounds them. Enable in ``dagster.yaml``::

    run_launcher:
      module: deploy.run_launcher
      class: HostProcessRunLauncher
"""

from __future__ import annotations

import socket
from typing import TYPE_CHECKING

import psutil
from dagster import DagsterEventType, DagsterRun, DefaultRunLauncher
from dagster._core.launcher.base import CheckRunHealthResult, LaunchRunContext, WorkerStatus
from dagster._core.remote_origin import GrpcServerCodeLocationOrigin

if TYPE_CHECKING:
    from dagster._core.instance import DagsterInstance

# The host that runs a run's process (set at launch when the code server is on this host).
RUN_WORKER_HOST_TAG = "assay/run_worker_host"
LOOPBACK = {"localhost", "127.0.0.1", "::1"}
# The engine event a run's process reports first, with its pid.
STARTED_PROCESS = "Started process for run"


def run_worker_pid(instance: DagsterInstance, run_id: str) -> tuple[int, float] | None:
    """The pid of ``run_id``'s process and when it reported it, or ``None`` before it has."""
    records = instance.get_records_for_run(
        run_id, of_type=DagsterEventType.ENGINE_EVENT, limit=50
    ).records
    for record in records:
        event = record.event_log_entry.dagster_event
        if event is None or not (event.message or "").startswith(STARTED_PROCESS):
            continue
        pid = event.engine_event_data.metadata.get("pid")  # EngineEventData.in_process
        if pid is not None:
            return int(pid.value), record.event_log_entry.timestamp
    return None


def process_state(pid: int, reported_at: float) -> str | None:
    """Why the process ``pid`` (which reported itself at ``reported_at``) is not the run's
    live process any more, or ``None`` when it still is."""
    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return f"its process (pid {pid}) has exited"
        # A pid handed to a newer process: it was created after the run's process reported.
        if process.create_time() > reported_at + 1:
            return f"its process (pid {pid}) has exited and the pid belongs to another process"
    except psutil.NoSuchProcess:
        return f"its process (pid {pid}) has exited"
    return None


class HostProcessRunLauncher(DefaultRunLauncher):
    """Launches runs like ``DefaultRunLauncher`` and reports whether their process is alive."""

    def launch_run(self, context: LaunchRunContext) -> None:
        run = context.dagster_run
        if run.remote_job_origin is not None:
            location = run.remote_job_origin.repository_origin.code_location_origin
            # A code server this process started, or one on loopback, runs it on this host.
            remote = isinstance(location, GrpcServerCodeLocationOrigin) and (
                location.host not in LOOPBACK
            )
            if not remote:
                host = {RUN_WORKER_HOST_TAG: socket.gethostname()}
                self._instance.add_run_tags(run.run_id, host)
        super().launch_run(context)

    @property
    def supports_check_run_worker_health(self) -> bool:
        return True

    def check_run_worker_health(self, run: DagsterRun) -> CheckRunHealthResult:
        host = run.tags.get(RUN_WORKER_HOST_TAG)
        if host != socket.gethostname():
            return CheckRunHealthResult(
                WorkerStatus.RUNNING, f"not judged: its process runs on {host or 'another host'}"
            )
        started = run_worker_pid(self._instance, run.run_id)
        if started is None:
            return CheckRunHealthResult(WorkerStatus.RUNNING, "its process has not reported yet")
        gone = process_state(*started)
        if gone:
            return CheckRunHealthResult(WorkerStatus.FAILED, f"{gone} on {host}")
        return CheckRunHealthResult(WorkerStatus.RUNNING, f"pid {started[0]} on {host}")
