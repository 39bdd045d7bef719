"""A model version's training-data manifest: validated, stored with the version, settable at
creation and afterwards (library, CLI, assay API), recorded in the history, and confined to
the corpus URL policy."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest
from alembic import command
from alembic.config import Config
from explorer_browser import rendered_pages

import assay.registry.store as store_module
from assay.cli import registry as registry_cli
from assay.registry import EventKind, Registry, RegistryError
from assay.registry.training_data import TrainingCorpus, check_corpus_url, check_training_data

if TYPE_CHECKING:
    from conftest import RegistryServer as Server


@pytest.fixture
def corpus_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "corpora"
    root.mkdir()
    monkeypatch.setenv("ASSAY_CORPUS_ROOTS", str(root))
    monkeypatch.delenv("ASSAY_CORPUS_HOSTS", raising=False)
    monkeypatch.delenv("ASSAY_CORPUS_SCHEMES", raising=False)
    return root


def _corpus(url: str, name: str = "web", fmt: str = "jsonl") -> dict[str, str]:
    return {"name": name, "url": url, "format": fmt}


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        (_corpus("s3://b/c.jsonl", fmt="csv"), r"training_data\[0\]: field 'format' is 'csv'"),
        (_corpus("ftp://h/c.jsonl"), r"field 'url': scheme 'ftp' is not allowed"),
        (_corpus("https://example.com/c.jsonl"), r"field 'url': host 'example.com' is not in"),
        (_corpus("/etc/passwd", fmt="text"), r"field 'url': local path '/etc/passwd' is outside"),
        (_corpus("file:///etc/x.jsonl"), r"field 'url': local path '/etc/x.jsonl' is outside"),
        (_corpus("s3://b/c.jsonl::zip://x"), r"field 'url': chained fsspec URLs"),
        (_corpus("s3://user:pw@b/c.jsonl"), r"field 'url': the URL carries a user or password"),
        (_corpus("s3://b/c.jsonl?token=x"), r"field 'url': the URL carries a credential"),
        ({"name": "web", "url": "s3://b/c"}, r"field 'format' is required"),
        ({**_corpus("s3://b/c"), "weight": 2}, r"unknown field\(s\) weight"),
        ({**_corpus("s3://b/c"), "text_field": "a b"}, r"field 'text_field' 'a b'"),
        ({**_corpus("s3://b/c"), "name": "a/b"}, r"training_data\[0\]: field 'name'"),
    ],
)
def test_a_bad_entry_is_refused_naming_the_entry_and_field(corpus_root, entry, message) -> None:
    with pytest.raises(RegistryError, match=message) as refused:
        check_training_data([entry], "model version 'm@v1'")
    assert refused.value.code.value == "INVALID_PARAMETER_VALUE"
    assert refused.value.message.startswith("model version 'm@v1': training_data[0]")


def test_the_url_policy_allows_roots_listed_hosts_and_object_stores(
    corpus_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    inside = corpus_root / "sub" / "c.jsonl"
    assert check_corpus_url(str(inside), "u") == str(inside)
    assert check_corpus_url(f"file://{inside}", "u")
    # ".." and links are resolved before the check: a link out of the root is refused.
    (corpus_root / "out").symlink_to(tmp_path)
    with pytest.raises(ValueError, match="outside the corpus roots"):
        check_corpus_url(str(corpus_root / "out" / "x.jsonl"), "u")
    with pytest.raises(ValueError, match="outside the corpus roots"):
        check_corpus_url(str(corpus_root / ".." / "x.jsonl"), "u")
    assert check_corpus_url("hf://datasets/org/corpus/*.parquet", "u")
    # http(s) only to listed hosts, and never to a metadata address even when listed.
    monkeypatch.setenv("ASSAY_CORPUS_HOSTS", "data.example.org,169.254.169.254")
    assert check_corpus_url("https://data.example.org/c.jsonl", "u")
    with pytest.raises(ValueError, match="link-local"):
        check_corpus_url("http://169.254.169.254/latest/meta-data", "u")
    # The schemes can be narrowed (or widened, e.g. memory:// in tests).
    monkeypatch.setenv("ASSAY_CORPUS_SCHEMES", "gs")
    with pytest.raises(ValueError, match="scheme 's3' is not allowed"):
        check_corpus_url("s3://b/c.jsonl", "u")


def test_a_manifest_is_kept_with_the_version_and_its_changes_are_history(
    corpus_root: Path, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'registry.db'}"
    first = [_corpus(str(corpus_root / "web.jsonl")), _corpus("s3://b/books", "books", "text")]
    with Registry.open(url) as registry:
        registry.create_model("m")
        v1 = registry.create_version("m", "hf:/a", training_data=first, actor="ann")
        assert v1.training_data == (
            TrainingCorpus("web", str(corpus_root / "web.jsonl"), "jsonl", "text"),
            TrainingCorpus("books", "s3://b/books", "text", "text"),
        )
        (created,) = registry.events(kind=EventKind.VERSION_CREATED)
        assert created.payload["training_data"][1] == {
            "name": "books",
            "url": "s3://b/books",
            "format": "text",
            "text_field": "text",
        }
        # A refused manifest registers nothing.
        before = registry.events()
        with pytest.raises(RegistryError, match=r"training_data\[1\]: field 'format'"):
            registry.create_version(
                "m", "hf:/b", training_data=[first[0], {**first[1], "format": "x"}]
            )
        assert registry.events() == before and registry.get_model("m").latest_version == 1

        second = [{**first[0], "text_field": "content"}]
        changed = registry.set_training_data("m@v1", second, actor="bob")
        assert [c.text_field for c in changed.training_data] == ["content"]
        registry.set_training_data("m@v1", second, actor="bob")  # unchanged: no event
        (event,) = registry.events(kind=EventKind.TRAINING_DATA_SET)
        assert event.actor == "bob" and event.key == "m@v1"
        assert [c["name"] for c in event.payload["before"]] == ["web", "books"]
        assert event.payload["after"][0]["text_field"] == "content"
        assert registry.set_training_data("m@v1", []).training_data == ()
        with pytest.raises(RegistryError, match="not a version key"):
            registry.set_training_data("m@champion", [])
    with Registry.open(url) as registry:  # stored, not cached
        assert registry.get_version("m@v1").training_data == ()
        assert len(registry.events(kind=EventKind.TRAINING_DATA_SET)) == 2


def test_versions_stored_before_the_migration_declare_nothing(
    corpus_root: Path, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'registry.db'}"
    with Registry.open(url) as registry:
        registry.create_model("m")
        registry.create_version("m", "hf:/a", training_data=[_corpus("s3://b/c")])
        engine = registry._write_engine
        with engine.begin() as connection:
            config = Config()
            config.set_main_option(
                "script_location", str(Path(store_module.__file__).parent / "migrations")
            )
            config.attributes["connection"] = connection
            command.downgrade(config, "0004")
    with Registry.open(url) as registry:  # migrated back to head on open
        version = registry.get_version("m@v1")
        assert version.source == "hf:/a" and version.training_data == ()
        registry.set_training_data("m@v1", [_corpus("s3://b/c")])
        assert registry.get_version("m@v1").training_data[0].url == "s3://b/c"


def test_the_cli_sets_shows_copies_and_clears_a_manifest(
    corpus_root: Path, tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ASSAY_ACTOR", "tester")
    url = f"sqlite:///{tmp_path / 'registry.db'}"
    manifest = tmp_path / "manifest.json"
    manifest.write_text(json.dumps([_corpus(str(corpus_root / "web.jsonl"))]))

    def reg(*argv: str) -> int:
        return registry_cli.main([*argv, "--registry-url", url])

    assert reg("create", "m") == 0
    assert reg("register", "m", "hf:/a", "--training-data", str(manifest)) == 0
    assert reg("register", "m", "hf:/b") == 0
    capsys.readouterr()
    assert reg("show", "m@v1") == 0
    shown = [line.split(None, 2) for line in capsys.readouterr().out.splitlines()]
    assert ["corpus", "web", f"jsonl {corpus_root / 'web.jsonl'} [text]"] in shown
    assert reg("training-data", "m@v2", "--from", "m@v1") == 0
    assert capsys.readouterr().out.strip() == "training data of m@v2: web"
    assert reg("training-data", "m@v2") == 0
    assert json.loads(capsys.readouterr().out)[0]["name"] == "web"
    assert reg("training-data", "m@v2", "--clear") == 0
    assert reg("history", "--model", "m") == 0
    history = capsys.readouterr().out
    assert "training data: - -> web" in history and "training data: web -> -" in history

    manifest.write_text(json.dumps([_corpus("http://example.com/c.jsonl")]))
    assert reg("training-data", "m@v2", "--file", str(manifest)) == 2
    err = capsys.readouterr().err
    assert "training_data[0]: field 'url': host 'example.com'" in err
    manifest.write_text("[{")
    assert reg("training-data", "m@v2", "--file", str(manifest)) == 2
    assert "training data file" in capsys.readouterr().err
    with Registry.open(url) as registry:
        assert registry.get_version("m@v2").training_data == ()


def test_the_assay_api_shows_and_replaces_a_manifest(start_registry_server) -> None:
    server: Server = start_registry_server()
    server.registry.create_model("m")
    server.registry.create_version("m", "hf:/a")

    def as_(principal: str) -> httpx.Client:
        return httpx.Client(
            base_url=f"{server.url}/api/assay/v1/models/m/versions",
            headers={"Authorization": f"Bearer {server.tokens[principal]}"},
        )

    body = {"training_data": [_corpus("s3://bucket/web/*.jsonl")]}
    assert as_("rita").post("/1/training-data", json=body).status_code == 403
    done = as_("walt").post("/1/training-data", json=body)
    assert done.status_code == 200
    assert done.json()["training_data"] == [{**body["training_data"][0], "text_field": "text"}]
    assert as_("rita").get("/1/training-data").json()["training_data"][0]["name"] == "web"
    bad = as_("walt").post(
        "/1/training-data", json={"training_data": [_corpus("http://10.0.0.1/c")]}
    )
    assert bad.status_code == 400 and "field 'url'" in bad.json()["message"]
    assert as_("walt").post("/1/training-data", json={"corpora": []}).status_code == 400
    (event,) = [
        e for e in server.registry.events(model="m") if e.kind is EventKind.TRAINING_DATA_SET
    ]
    assert event.actor == "walt"


def test_the_leaderboard_names_the_corpora_a_version_declares(tmp_path: Path) -> None:
    from datetime import UTC, datetime

    from sample_clock import held_explorer_data

    from assay.report import build_site, directory_writer
    from assay.report.sample import write_sample
    from assay.storage.parquet import ParquetStore

    registry = Registry.open(f"sqlite:///{tmp_path / 'registry.db'}")
    store = ParquetStore(str(tmp_path / "storage"))
    sample = write_sample(
        store, registry, clock=lambda _: None, n_versions=2, n_instances=6, hostile=False
    )
    newest, oldest = sample.versions
    registry.set_training_data(
        newest, [_corpus("s3://b/web.jsonl", "web-crawl"), _corpus("s3://b/books", "books", "text")]
    )
    data = held_explorer_data(store, registry, sample)
    build_site(
        data,
        directory_writer(tmp_path / "site"),
        generated_at=datetime(2026, 11, 4, tzinfo=UTC),
        n_resamples=50,
    )
    registry.close()
    drawn = rendered_pages(tmp_path / "site", ["index.html"])["index.html"]
    assert drawn.errors == []
    index = drawn.html
    rows = {v: index[index.index(f'data-version="{v}"') :] for v in (newest, oldest)}
    assert rows[newest].split("</tr>")[0].count("trained on: web-crawl, books") == 1
    assert "trained on" not in rows[oldest].split("</tr>")[0]
    # URLs stay internal: the page names the corpora only.
    assert "s3://b/web.jsonl" not in index
