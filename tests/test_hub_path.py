"""The Hugging Face Hub path, against a loopback stand-in for the Hub (``tests/hub_server.py``).

The Hub cannot be reached here, so every other test reads local files. These point the
clients at a real HTTP server on 127.0.0.1 that answers the Hub's API for a dataset
repository built from the fixture slices, at one commit: lm-eval tasks read it through
``datasets.load_dataset(..., revision=...)`` in a child interpreter (``huggingface_hub`` and
``datasets`` read ``HF_ENDPOINT`` when imported), the native loaders through ``HF_ENDPOINT``.
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from acl_imdb import acl_imdb_hub_rows
from hub_server import HubRepo, LoopbackHub

from assay.core.digests import digest_json
from assay.scenarios import DataSourceError, get_scenario
from assay.scenarios.public import IMDB

REPO = Path(__file__).resolve().parent.parent
DATA = REPO / "tests" / "fixtures" / "datasets"
GSM8K = DATA / "openai__gsm8k" / "main"
# The dataset card of openai/gsm8k as the Hub has it: config "main", a file pattern a split.
GSM8K_CARD = """---
configs:
- config_name: main
  data_files:
  - split: train
    path: main/train-*
  - split: test
    path: main/test-*
---
# GSM8K (a slice, served by the tests' loopback hub)
"""

# Builds each lm_eval entry (argv[1]: a JSON list of args) and prints, per entry, its
# revision and instances or the error it raised. argv[2] == "no-backoff": huggingface_hub's
# sleeps between retries (1, 2, 4, 8, 8 s) are skipped; its tries still go to the hub.
CHILD = r"""
import dataclasses, json, sys, types
from pathlib import Path
if sys.argv[2] == "no-backoff":
    import huggingface_hub.utils._http as http
    http.time = types.SimpleNamespace(sleep=lambda seconds: None)
from assay.evaluate.suite import parse_suite
out = []
for args in json.loads(sys.argv[1]):
    entry = {"scenario": "lm_eval", "args": args}
    try:
        config = parse_suite({"scenarios": {"x": entry}}, "s.yaml", Path(".")).scenarios["x"]
        data = config.build().load()
        instances = [dataclasses.asdict(i) for i in data.instances]
        out.append({"revision": data.revision, "instances": instances})
    except Exception as exc:
        out.append({"error": f"{type(exc).__name__}: {exc}"})
print("RESULTS " + json.dumps(out))
"""

# lm-eval (the ``lmeval`` extra) brings datasets and huggingface_hub; the native loaders need
# neither.
needs_lm_eval = pytest.mark.skipif(
    importlib.util.find_spec("lm_eval") is None, reason="the lmeval extra is not installed"
)


def _gsm8k_repo() -> HubRepo:
    return HubRepo.from_files(
        "openai/gsm8k",
        {
            "README.md": GSM8K_CARD,
            "main/test-00000-of-00001.jsonl": GSM8K / "test.jsonl",
            "main/train-00000-of-00001.jsonl": GSM8K / "train.jsonl",
        },
    )


def _hub_env(endpoint: str, home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGING"))}
    return {
        **env,
        "PYTHONPATH": str(REPO),
        "HF_ENDPOINT": endpoint,
        "HF_HOME": str(home / "hf"),
        "HF_DATASETS_CACHE": str(home / "hf" / "datasets"),
        "HF_HUB_OFFLINE": "0",
        "HF_DATASETS_OFFLINE": "0",
        "HF_HUB_DISABLE_TELEMETRY": "1",
    }


def _build_in_child(
    endpoint: str, home: Path, entries: list[dict], backoff: bool = True
) -> list[dict[str, Any]]:
    done = subprocess.run(
        [sys.executable, "-c", CHILD, json.dumps(entries), "backoff" if backoff else "no-backoff"],
        env=_hub_env(endpoint, home),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULTS ")]
    assert done.returncode == 0 and lines, done.stderr[-4000:]
    return json.loads(lines[-1][len("RESULTS ") :])


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line]


# huggingface_hub's own client on the stand-in: what it makes of each answer (argv[1]: the
# repository, argv[2]: its commit).
CLIENT = r"""
import json, sys
from huggingface_hub import HfApi, hf_hub_download
from huggingface_hub.errors import (
    EntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError,
)
repo, commit = sys.argv[1], sys.argv[2]
api, out = HfApi(), {}
out["sha"] = api.dataset_info(repo, revision=commit).sha
tree = api.list_repo_tree(repo, revision=commit, repo_type="dataset", recursive=True)
out["tree"] = sorted(e.path for e in tree)
info = api.get_paths_info(repo, ["main", "main/train-00000-of-00001.jsonl", "nope"],
                          revision=commit, repo_type="dataset")
out["paths"] = [[e.path, getattr(e, "size", None), getattr(e, "blob_id", None)] for e in info]
path = hf_hub_download(repo, "main/train-00000-of-00001.jsonl", repo_type="dataset",
                       revision=commit)
out["download"] = open(path, encoding="utf-8").read()
for name, call in [
    ("revision", lambda: api.dataset_info(repo, revision="0" * 40)),
    ("repo", lambda: api.dataset_info("nobody/nothing", revision=commit)),
    ("file", lambda: hf_hub_download(repo, "absent.jsonl", repo_type="dataset", revision=commit)),
]:
    try:
        call()
        out[name] = "no error"
    except (RevisionNotFoundError, RepositoryNotFoundError, EntryNotFoundError) as exc:
        out[name] = type(exc).__name__
print("RESULTS " + json.dumps(out))
"""


@needs_lm_eval
def test_the_stand_in_answers_huggingface_hubs_client_as_the_hub_does(tmp_path: Path) -> None:
    repo = _gsm8k_repo()
    train = GSM8K / "train.jsonl"
    blob = subprocess.run(
        ["git", "hash-object", str(train)], capture_output=True, text=True, check=True
    ).stdout.strip()
    with LoopbackHub(repo) as hub:
        done = subprocess.run(
            [sys.executable, "-c", CLIENT, repo.repo_id, repo.commit],
            env=_hub_env(hub.endpoint, tmp_path),
            capture_output=True,
            text=True,
            timeout=120,
        )
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULTS ")]
    assert done.returncode == 0 and lines, done.stderr[-4000:]
    out = json.loads(lines[-1][len("RESULTS ") :])
    assert out["sha"] == repo.commit
    assert out["tree"] == [
        "README.md",
        "main",
        "main/test-00000-of-00001.jsonl",
        "main/train-00000-of-00001.jsonl",
    ]
    size = len(train.read_bytes())
    assert out["paths"][1] == ["main/train-00000-of-00001.jsonl", size, blob]
    assert [p[0] for p in out["paths"]] == ["main", "main/train-00000-of-00001.jsonl"]
    assert out["download"] == train.read_text(encoding="utf-8")
    assert out["revision"] == "RevisionNotFoundError"
    assert out["repo"] == "RepositoryNotFoundError"
    assert out["file"] == "RemoteEntryNotFoundError"  # an EntryNotFoundError from the Hub


@pytest.fixture(scope="module")
def gsm8k_from_hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """gsm8k built four ways in one child: from the loopback hub at its commit, from the
    same files through ``data_files``, at a revision the hub does not have, and from the hub
    without a revision."""
    repo = _gsm8k_repo()
    home = tmp_path_factory.mktemp("hub")
    local = {"test": str(GSM8K / "test.jsonl"), "train": str(GSM8K / "train.jsonl")}
    entries = [
        {"task": "gsm8k", "num_fewshot": 2, "revision": repo.commit},
        {"task": "gsm8k", "num_fewshot": 2, "data_files": local},
        {"task": "gsm8k", "num_fewshot": 2, "revision": "0" * 40},
        {"task": "gsm8k", "num_fewshot": 2},
    ]
    with LoopbackHub(repo) as hub:
        hub_read, files_read, unknown, unpinned = _build_in_child(hub.endpoint, home, entries)
    yield {
        "repo": repo,
        "endpoint": hub.endpoint,
        "requests": hub.requests,
        "hub": hub_read,
        "files": files_read,
        "unknown": unknown,
        "unpinned": unpinned,
    }


@needs_lm_eval
def test_a_task_read_from_the_hub_at_its_commit_is_the_task_read_from_its_files(
    gsm8k_from_hub: dict[str, Any],
) -> None:
    repo, hub, files = gsm8k_from_hub["repo"], gsm8k_from_hub["hub"], gsm8k_from_hub["files"]
    assert "error" not in hub, hub.get("error")
    assert "error" not in files, files.get("error")
    assert hub["instances"] == files["instances"]
    rows = _rows(GSM8K / "test.jsonl")
    assert len(hub["instances"]) == len(rows) == 51
    for instance, row in zip(hub["instances"], rows, strict=True):
        assert row["question"] in instance["input"]
    # The revision: the same task config, the data named by the hub dataset and its commit.
    hub_head, _, hub_data = hub["revision"].partition(";data=")
    files_head, _, files_data = files["revision"].partition(";data=")
    assert hub_head == files_head
    assert hub_data.startswith(f"hub:openai/gsm8k/main@{repo.commit}#")
    assert len(hub_data.split("#")[1]) == 16 and files_data.startswith("files[")
    # The files came from the hub, at that commit.
    fetched = {path for method, path in gsm8k_from_hub["requests"] if method == "GET"}
    for file in ("main/test-00000-of-00001.jsonl", "main/train-00000-of-00001.jsonl"):
        assert f"/datasets/openai/gsm8k/resolve/{repo.commit}/{file}" in fetched


@needs_lm_eval
def test_a_task_without_a_revision_reads_and_records_the_commit_its_branch_is_at(
    gsm8k_from_hub: dict[str, Any],
) -> None:
    """An entry without ``revision`` asks the hub where the dataset's default branch is,
    reads every file at that commit (never at the moving branch), and its revision names the
    commit: the same documents and the same revision as an entry pinned to that commit."""
    repo, unpinned, pinned = (
        gsm8k_from_hub["repo"],
        gsm8k_from_hub["unpinned"],
        gsm8k_from_hub["hub"],
    )
    assert "error" not in unpinned, unpinned.get("error")
    assert unpinned["instances"] == pinned["instances"]
    assert unpinned["revision"] == pinned["revision"]
    assert f"hub:openai/gsm8k/main@{repo.commit}#" in unpinned["revision"]
    asked = [path for _, path in gsm8k_from_hub["requests"]]
    assert "/api/datasets/openai/gsm8k" in asked  # the default branch's info
    at_branch = re.compile(r"/(resolve|revision|tree|paths-info)/main(/|$|\?)")
    assert not [path for path in asked if at_branch.search(path)]


@needs_lm_eval
def test_an_unknown_revision_names_the_dataset_the_hub_and_the_override(
    gsm8k_from_hub: dict[str, Any],
) -> None:
    message = gsm8k_from_hub["unknown"].get("error", "")
    assert message.startswith("LmEvalTaskError: lm-eval task 'gsm8k': the Hugging Face hub at ")
    assert f"hub at {gsm8k_from_hub['endpoint']} has no revision '{'0' * 40}'" in message
    assert "of dataset 'openai/gsm8k/main'" in message
    assert "give args.revision: a commit of that dataset" in message
    assert "args.data_files: {test: <test.jsonl>, train: <train.jsonl>}" in message
    assert "args.data_dir: a folder with openai__gsm8k/main/<split>.jsonl" in message
    # The hub was asked for that revision (and answered that it has none).
    asked = [path for _, path in gsm8k_from_hub["requests"]]
    assert any(f"/resolve/{'0' * 40}/" in path for path in asked)


@needs_lm_eval
def test_an_unreachable_hub_names_the_dataset_the_hub_and_the_override(tmp_path: Path) -> None:
    repo = _gsm8k_repo()
    with LoopbackHub(repo) as hub:
        endpoint = hub.endpoint
    # The server is stopped: its port is closed. Pinned, the task's load fails; unpinned,
    # asking for the branch's commit does.
    entries = [{"task": "gsm8k", "revision": repo.commit}, {"task": "gsm8k"}]
    results = _build_in_child(endpoint, tmp_path, entries, backoff=False)
    for result in results:
        message = result.get("error", "")
        assert message.startswith(
            "LmEvalTaskError: lm-eval task 'gsm8k' reads dataset 'openai/gsm8k/main' from the "
            "Hugging Face hub, which is not reachable here"
        )
        # The cause as the client raised it (datasets' ConnectionError, httpx's ConnectError).
        assert re.search(rf"\({re.escape(endpoint)} cannot be reached: Connect\w*Error: ", message)
        assert "args.data_files: {test: <test.jsonl>, train: <train.jsonl>}" in message


IMDB_FILES = IMDB.files  # the Hub's two Parquet files, one per split


def _parquet(rows: list[dict]) -> bytes:
    out = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows), out)
    return out.getvalue()


def _imdb_repo(tamper: bool = False) -> HubRepo:
    """stanfordnlp/imdb at the commit the loader pins, its files the fixture's reviews as
    Parquet (as the Hub ships them); ``tamper`` flips the first test review's label."""
    test = acl_imdb_hub_rows("test")
    if tamper:
        test[0]["label"] = 1 - test[0]["label"]
    files = {
        IMDB_FILES["test"]: _parquet(test),
        IMDB_FILES["train"]: _parquet(acl_imdb_hub_rows("train")),
    }
    return HubRepo("stanfordnlp/imdb", files, commit=IMDB.default_revision)


def test_a_native_loader_reads_the_hub_at_hf_endpoint_with_its_digests_checked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = _imdb_repo()
    digests = {s: hashlib.sha256(repo.files[f]).hexdigest() for s, f in IMDB_FILES.items()}
    local = {}
    for split in ("test", "train"):
        local[split] = str(tmp_path / f"{split}.jsonl")
        Path(local[split]).write_text(
            "".join(json.dumps(r) + "\n" for r in acl_imdb_hub_rows(split))
        )
    expected = get_scenario("imdb", data_files=local).load().instances
    commit = IMDB.default_revision
    for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):  # the suite's conftest sets one
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("ASSAY_DATA_CACHE", str(tmp_path / "cache"))
    # The stand-in serves the fixture's reviews, not the Hub's files: the loader's own pinned
    # digests refuse them, so the test pins the bytes served.
    assert all(IMDB.sha256s[f] != digests[s] for s, f in IMDB_FILES.items())
    with LoopbackHub(repo) as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.endpoint + "/")
        data = get_scenario("imdb", sha256=digests).load()
    assert data.instances == expected
    assert data.revision == f"{commit}:files-{digest_json(digests)[:16]}"
    assert sorted(hub.requests) == [
        ("GET", f"/datasets/stanfordnlp/imdb/resolve/{commit}/{IMDB_FILES['test']}"),
        ("GET", f"/datasets/stanfordnlp/imdb/resolve/{commit}/{IMDB_FILES['train']}"),
    ]

    # A mirror serving other bytes is refused by the pinned digests.
    monkeypatch.setenv("ASSAY_DATA_CACHE", str(tmp_path / "cache2"))
    tampered = _imdb_repo(tamper=True)
    bad = hashlib.sha256(tampered.files[IMDB_FILES["test"]]).hexdigest()
    assert bad != digests["test"]
    with LoopbackHub(tampered) as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.endpoint)
        with pytest.raises(DataSourceError) as caught:
            get_scenario("imdb", sha256=digests).load()
    message = str(caught.value)
    url = f"{hub.endpoint}/datasets/stanfordnlp/imdb/resolve/{commit}/{IMDB_FILES['test']}"
    assert message.startswith(f"imdb: {url}: checksum mismatch: ")
    assert f"expected sha256 {digests['test']}, got {bad}" in message
    assert message.endswith("give data_files (test: <path>, train: <path>)")
    # Refused bytes never enter the cache: the same cache then loads from a sound mirror.
    cached = [f.name for f in (tmp_path / "cache2").rglob("*") if f.is_file()]
    assert IMDB_FILES["test"].split("/")[-1] not in cached
    with LoopbackHub(repo) as sound:
        monkeypatch.setenv("HF_ENDPOINT", sound.endpoint)
        assert get_scenario("imdb", sha256=digests).load().instances == expected
    monkeypatch.setenv("HF_ENDPOINT", hub.endpoint)

    # The mirror stopped: one sentence with its URL and the override.
    monkeypatch.setenv("ASSAY_DATA_CACHE", str(tmp_path / "cache3"))
    with pytest.raises(DataSourceError) as caught:
        get_scenario("imdb").load()
    message = str(caught.value)
    assert message.startswith(f"imdb: cannot download {url}: ")
    assert "refused" in message.lower() and "give data_files (test: <path>" in message
    # Offline, a mirror's URL is the Hub's too: refused before any connection.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DataSourceError, match=r"^imdb: the Hugging Face Hub is offline"):
        get_scenario("imdb").load()


def test_the_native_loaders_default_hub_is_huggingface_co(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HF_ENDPOINT", raising=False)
    url = get_scenario("imdb").data_files["test"]
    assert url == (
        f"https://huggingface.co/datasets/stanfordnlp/imdb/resolve/{IMDB.default_revision}/"
        f"{IMDB_FILES['test']}"
    )
    # Loaders on the authors' Git repository or download site do not move with HF_ENDPOINT.
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    assert (
        get_scenario("gsm8k")
        .data_files["test"]
        .startswith("https://raw.githubusercontent.com/openai/grade-school-math/")
    )
    assert get_scenario("mmlu").data_files["test"].startswith("https://people.eecs.berkeley.edu/")
    assert get_scenario("imdb").data_files["test"].startswith("http://127.0.0.1:9/datasets/")
