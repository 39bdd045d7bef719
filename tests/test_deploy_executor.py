"""The executor is chosen by ASSAY_EXECUTOR when the code location loads."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from resources.executor import celery_settings, executor_from_env

REPO = Path(__file__).resolve().parent.parent


def test_unset_keeps_dagsters_default(monkeypatch):
    monkeypatch.delenv("ASSAY_EXECUTOR", raising=False)
    assert executor_from_env() is None
    monkeypatch.setenv("ASSAY_EXECUTOR", "multiprocess")
    assert executor_from_env() is None
    monkeypatch.setenv("ASSAY_EXECUTOR", "in_process")
    assert executor_from_env().name == "in_process"


def test_unknown_executor_and_missing_broker_are_refused_by_name(monkeypatch):
    monkeypatch.setenv("ASSAY_EXECUTOR", "spark")
    with pytest.raises(ValueError, match=r"'spark'.*multiprocess, in_process, celery, k8s"):
        executor_from_env()
    monkeypatch.setenv("ASSAY_EXECUTOR", "celery")
    monkeypatch.delenv("ASSAY_CELERY_BROKER", raising=False)
    with pytest.raises(ValueError, match="ASSAY_CELERY_BROKER"):
        executor_from_env()


def test_celery_settings_hand_a_dead_workers_step_back(monkeypatch):
    monkeypatch.setenv("ASSAY_CELERY_VISIBILITY_TIMEOUT", "45")
    settings = celery_settings()
    assert settings["task_acks_late"] and settings["task_reject_on_worker_lost"]
    assert settings["broker_transport_options"]["visibility_timeout"] == 45


def test_the_code_location_runs_steps_on_celery_when_asked():
    pytest.importorskip("dagster_celery", reason="the deploy extra is not installed")
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "ASSAY_EXECUTOR": "celery",
        "ASSAY_CELERY_BROKER": "redis://user:s3cret@127.0.0.1:1/0",
    }
    probe = (
        "from definitions import defs\n"
        "job = defs.resolve_implicit_global_asset_job_def()\n"
        "print(job.executor_def.name)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=REPO, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split()[-1] == "celery"


def test_the_code_location_runs_steps_as_kubernetes_jobs_when_asked():
    # No cluster runs here: this checks the wiring and the step jobs' configuration only.
    pytest.importorskip("dagster_k8s", reason="the k8s extra is not installed")
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "ASSAY_EXECUTOR": "k8s",
        "ASSAY_K8S_NAMESPACE": "assay-eval",
        "ASSAY_K8S_IMAGE": "registry.example/assay:1",
        "ASSAY_K8S_ENV_SECRETS": "assay-secrets, hub-token",
    }
    probe = (
        "import json\n"
        "from definitions import defs\n"
        "job = defs.resolve_implicit_global_asset_job_def()\n"
        "print(job.executor_def.name)\n"
        "resolved = job.executor_def.config_schema.resolve_config({})\n"
        "print(json.dumps(resolved.value))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=REPO, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-2000:]
    name, config = done.stdout.strip().splitlines()[-2:]
    assert name == "k8s"
    # The step jobs' settings as Dagster resolves them (defaults filled in).
    resolved = json.loads(config)["config"]
    assert resolved["job_namespace"] == "assay-eval"
    assert resolved["job_image"] == "registry.example/assay:1"
    assert resolved["env_secrets"] == ["assay-secrets", "hub-token"]
    assert resolved["max_concurrent"] == 4
