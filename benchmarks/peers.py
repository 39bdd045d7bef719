"""Shared helpers of the peer benchmarks (HELM, lm-evaluation-harness) and the adapter benchmark.

Peers run in their own virtual environments outside the repository (both pin many packages),
named by environment variables; a benchmark whose peer is absent prints one "skipped" line and
exits 0, so ``make bench`` works on a fresh machine. Peers load a plain Hugging Face directory,
not a GGUF, so the bundled model is exported once as one (see ``peer_model_dir``).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from assay.models.bundled import bundled_gguf_path
from assay.models.transformers_loading import converted_model_dir

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CACHE = REPO / ".assay" / "bench-cache"
# The directory's name is the model's name in HELM ("huggingface/<dirname>").
PEER_MODEL_NAME = "smollm2-135m-instruct"
# HELM refuses a local model whose tokenizer does not state its maximum length.
MODEL_MAX_LENGTH = 2048
# Every peer run is offline: nothing may reach the Hugging Face hub.
OFFLINE_ENV = {
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
}


@dataclass(frozen=True, slots=True)
class Peer:
    """A peer tool installed in its own virtual environment."""

    name: str
    venv: Path

    @property
    def python(self) -> Path:
        return self.venv / "bin" / "python"

    def bin(self, program: str) -> Path:
        return self.venv / "bin" / program


def find_peer(name: str, env_var: str, default: Path, probe_module: str) -> Peer | None:
    """The peer's venv from ``$env_var`` (else ``default``), or None after printing why not.

    A venv counts as installed when its python imports ``probe_module``.
    """
    venv = Path(os.environ.get(env_var) or default).expanduser()
    python = venv / "bin" / "python"
    if not python.is_file():
        print(f"{name}: peer not installed at {venv} (set {env_var}); skipped")
        return None
    probe = subprocess.run(
        [str(python), "-c", f"import {probe_module}"], capture_output=True, text=True
    )
    if probe.returncode != 0:
        last = (probe.stderr.strip().splitlines() or ["?"])[-1]
        print(f"{name}: {venv} cannot import {probe_module} ({last}); skipped")
        return None
    return Peer(name, venv)


def peer_model_dir(cache_dir: Path = DEFAULT_CACHE) -> Path:
    """An HF directory of the bundled model that HELM and lm-eval can load, built once.

    It holds the same dequantized fp32 weights the transformers client loads (hard links to
    its converted directory where the file system allows, copies otherwise), plus
    ``model_max_length`` in ``tokenizer_config.json``. Built in a temporary sibling and
    renamed into place, so an interrupted build is never mistaken for a finished one.
    """
    source = converted_model_dir(bundled_gguf_path(), cache_dir)
    target = cache_dir / "peers" / source.name / PEER_MODEL_NAME
    if (target / "tokenizer_config.json").is_file():
        return target
    partial = target.with_name(f".{PEER_MODEL_NAME}.{os.getpid()}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    try:
        for path in source.iterdir():
            if path.is_file() and path.name != "tokenizer_config.json":
                try:
                    os.link(path, partial / path.name)
                except OSError:
                    shutil.copy2(path, partial / path.name)
        config = json.loads((source / "tokenizer_config.json").read_text())
        config["model_max_length"] = MODEL_MAX_LENGTH
        (partial / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
        partial.rename(target)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return target


@dataclass(frozen=True, slots=True)
class PeerRun:
    """A finished peer command: its wall time and output."""

    wall_s: float
    stdout: str
    stderr: str


def run_peer(peer: Peer, argv: list[str], cwd: Path, timeout_s: float = 3600) -> PeerRun:
    """Run a peer command offline in ``cwd``; raise with the output's tail when it fails."""
    env = {**os.environ, **OFFLINE_ENV}
    env.pop("PYTHONPATH", None)  # the peer must not see assay's tree
    start = time.perf_counter()
    done = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout_s)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-30:])
        raise RuntimeError(f"{peer.name} failed (exit {done.returncode}): {' '.join(argv)}\n{tail}")
    return PeerRun(wall, done.stdout, done.stderr)


def print_header(title: str) -> None:
    """One line on what ran where, so figures from different machines are not confused."""
    load = os.getloadavg()[0]
    print(f"{title}  (python {sys.version.split()[0]}, {os.cpu_count()} CPUs, load {load:.1f})")
