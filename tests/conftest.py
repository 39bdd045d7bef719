"""Shared fixtures: a persistent model conversion cache, temp registries and stores."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def model_cache_dir() -> Path:
    """Where the bundled GGUF is converted once; kept across runs (git-ignored)."""
    path = REPO / ".assay" / "test-cache"
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture
def registry_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'registry.db'}"
