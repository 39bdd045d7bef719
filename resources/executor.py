"""Which executor runs the steps: chosen by ``ASSAY_EXECUTOR`` when the code location loads.

- unset or ``multiprocess``: Dagster's default (one process per step, or in process when a run
  asks for it in its config), as on a laptop;
- ``in_process``: every step in the run worker's process;
- ``celery``: steps go to Celery workers over a broker (the ``deploy`` extra), so a run's
  steps execute on as many worker processes or machines as listen on the queue;
- ``k8s``: each step in its own Kubernetes Job (``dagster_k8s.k8s_job_executor``, the ``k8s``
  extra), in ``ASSAY_K8S_NAMESPACE`` with the run pod's image unless ``ASSAY_K8S_IMAGE`` names
  one, and ``ASSAY_K8S_ENV_SECRETS`` (comma list) mounted as the step pods' environment.

The Celery settings live here, once, for both sides: the executor that submits steps and
the workers that run them (deploy/celery/dagster_celery_config.py imports ``celery_settings``).
"""

from __future__ import annotations

import os
from typing import Any

from dagster import ExecutorDefinition, in_process_executor, multiprocess_executor

EXECUTORS = ("multiprocess", "in_process", "celery", "k8s")


def celery_settings() -> dict[str, Any]:
    """Celery's own settings (its lowercase names) for a deployment's broker.

    A step's message is acknowledged only when the step ends and is handed back when its
    worker dies, so a killed worker's step runs again on another worker. With Redis that
    happens after ``ASSAY_CELERY_VISIBILITY_TIMEOUT`` seconds (default one hour), which must
    exceed the longest step, or a slow step would be handed to a second worker while the first
    still runs it.
    """
    visibility = int(os.environ.get("ASSAY_CELERY_VISIBILITY_TIMEOUT", "3600"))
    # Workers look for messages past their visibility timeout every few seconds (kombu's
    # default is every 100 s), so a dead worker's step is picked up soon after the timeout.
    transport = {
        "visibility_timeout": visibility,
        "unacked_restore_interval": 5,
        "unacked_restore_throttle": 1,
    }
    return {
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "broker_transport_options": transport,
        "result_backend_transport_options": {"visibility_timeout": visibility},
        "broker_connection_retry_on_startup": True,
    }


def executor_kind() -> str:
    """``$ASSAY_EXECUTOR``, normalised; unset means ``multiprocess`` (Dagster's default)."""
    return os.environ.get("ASSAY_EXECUTOR", "").strip().lower() or "multiprocess"


def chained_run_config() -> dict[str, Any]:
    """Run config for a run whose steps form one chain (an evaluation): in one process under
    Dagster's default executor, where separate step processes would only add a start-up and a
    model load each; a named executor (``in_process``, ``celery``) takes no such choice, so
    its runs get no execution config."""
    return (
        {"execution": {"config": {"in_process": {}}}} if executor_kind() == "multiprocess" else {}
    )


def executor_from_env() -> ExecutorDefinition | None:
    """The executor ``ASSAY_EXECUTOR`` names; ``None`` keeps Dagster's default."""
    kind = executor_kind()
    if kind == "multiprocess":
        return None
    if kind == "in_process":
        return in_process_executor
    if kind == "celery":
        if not os.environ.get("ASSAY_CELERY_BROKER"):
            raise ValueError(
                "ASSAY_EXECUTOR=celery needs ASSAY_CELERY_BROKER (e.g. redis://host/0)"
            )
        from dagster_celery import celery_executor

        config: dict[str, Any] = {
            # Resolved from the environment where the run starts; the UI shows only the names.
            "broker": {"env": "ASSAY_CELERY_BROKER"},
            "config_source": celery_settings(),
        }
        if os.environ.get("ASSAY_CELERY_BACKEND"):
            config["backend"] = {"env": "ASSAY_CELERY_BACKEND"}
        return celery_executor.configured(config, name="celery")
    if kind == "k8s":
        return k8s_executor()
    raise ValueError(
        f"ASSAY_EXECUTOR={kind!r} is not an executor; use one of {', '.join(EXECUTORS)}"
    )


def k8s_executor() -> ExecutorDefinition:
    """One Kubernetes Job per step. Secrets reach the step pods only as Kubernetes Secrets
    named in ``ASSAY_K8S_ENV_SECRETS``; nothing secret is written into the run config."""
    from dagster_k8s import k8s_job_executor

    config: dict[str, Any] = {
        "job_namespace": os.environ.get("ASSAY_K8S_NAMESPACE", "default"),
        "max_concurrent": int(os.environ.get("ASSAY_K8S_MAX_CONCURRENT", "4")),
    }
    if os.environ.get("ASSAY_K8S_IMAGE"):
        config["job_image"] = os.environ["ASSAY_K8S_IMAGE"]
    secrets = [s.strip() for s in os.environ.get("ASSAY_K8S_ENV_SECRETS", "").split(",")]
    if any(secrets):
        config["env_secrets"] = [s for s in secrets if s]
    return k8s_job_executor.configured(config, name="k8s")


__all__ = [
    "EXECUTORS",
    "celery_settings",
    "chained_run_config",
    "executor_from_env",
    "executor_kind",
    "k8s_executor",
    "multiprocess_executor",
]
