"""Secrets come from environment variables and never land in stored rows or the UI."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from assay.registry import Registry, RegistryError

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize(
    ("source", "named"),
    [
        ("openai:https://user:hunter2@api.example/v1#m", "a user or password"),
        ("openai:https://api.example/v1?api_key=hunter2#m", "'api_key'"),
        ("openai:https://api.example/v1?x=1&access_token=hunter2#m", "'access_token'"),
        ("hf:/models/m?X-Amz-Signature=hunter2", "'X-Amz-Signature'"),
        ("openai:https://api.example/v1?org=sk-hunter2hunter2#m", "key-shaped"),
    ],
)
def test_source_with_credentials_is_refused_and_nothing_written(registry_url, source, named):
    registry = Registry.open(registry_url)
    registry.create_model("m")
    with pytest.raises(RegistryError, match="credentials") as caught:
        registry.create_version("m", source)
    assert named in str(caught.value)
    assert "hunter2" not in str(caught.value)
    assert registry.list_versions("m") == []
    assert all("hunter2" not in str(e.payload) for e in registry.events())


def test_database_urls_reach_dagster_as_env_var_names_only():
    secret = "postgresql+psycopg://assay:hunter2@127.0.0.1:9/registry"
    env = {**os.environ, "ASSAY_REGISTRY_URL": secret, "ASSAY_REQUEST_CACHE_URL": secret}
    shown = subprocess.run(
        [
            sys.executable,
            "-W",
            "ignore",
            "-c",
            "from definitions import defs\n"
            "print(repr(defs.resources['registry'].url))\n"
            "print(repr(defs.resources['models'].request_cache_url))",
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "hunter2" not in shown
    assert "ASSAY_REGISTRY_URL" in shown and "ASSAY_REQUEST_CACHE_URL" in shown
