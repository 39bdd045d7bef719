"""The process that computed something: its packages, hardware and host.

``model_outputs`` partitions carry ``runtime_environment()`` of the process that called the
model (a Celery worker or a Kubernetes pod in a deployment, not the orchestrator), in the
Parquet file's metadata under ``ENVIRONMENT_KEY``, so a result can be traced to the machine
and the library versions that produced it.
"""

from __future__ import annotations

import json
import os
import platform
import socket
import sys
from importlib import metadata
from typing import Any

import pyarrow as pa

# Packages whose versions can change a model's outputs.
PACKAGES = (
    "assay",
    "torch",
    "transformers",
    "tokenizers",
    "gguf",
    "llama-cpp-python",
    "numpy",
    "httpx",
)
ENVIRONMENT_KEY = b"assay.environment"


def package_versions() -> dict[str, str]:
    """Python and the installed versions of ``PACKAGES`` (absent ones left out)."""
    versions = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def runtime_environment() -> dict[str, Any]:
    """This process: host, pid, packages, CPU, memory and the accelerators torch sees."""
    return {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "packages": package_versions(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "memory_gib": _memory_gib(),
        "accelerators": _accelerators(),
    }


def with_environment(table: pa.Table, environment: dict[str, Any]) -> pa.Table:
    """``table`` with ``environment`` in its schema metadata (kept by Parquet files)."""
    held = dict(table.schema.metadata or {})
    held[ENVIRONMENT_KEY] = json.dumps(environment, sort_keys=True).encode()
    return table.replace_schema_metadata(held)


def environment_of(table: pa.Table) -> dict[str, Any] | None:
    """The environment ``with_environment`` stored on ``table``, or None."""
    raw = (table.schema.metadata or {}).get(ENVIRONMENT_KEY)
    return None if raw is None else json.loads(raw)


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _memory_gib() -> float | None:
    try:
        return round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        return None


def _accelerators() -> list[str]:
    # Only when the process already loaded torch: an HTTP client never needs it.
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_available():
        return []
    return [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
