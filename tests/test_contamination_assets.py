"""``training_corpora``, ``corpus_index`` and ``contamination`` as Dagster assets: the sensor
records a version's declared corpora, a step indexes each corpus once, the table flags the
planted items, and a changed corpus marks exactly its version's partitions stale (checked
with Dagster's own staleness resolver)."""

from __future__ import annotations

import json
import string
from pathlib import Path

import pytest
from dagster import (
    AssetKey,
    AssetSelection,
    DagsterEventType,
    EventRecordsFilter,
    SensorResult,
    build_sensor_context,
    instance_for_test,
    materialize,
)
from dagster._core.definitions.data_version import StaleStatus
from dagster._utils.test.data_versions import get_stale_status_resolver

from assay.contamination.check import instance_text
from assay.contamination.declared import declare, index_url, read_training_corpora
from assay.contamination.table import SCHEMA, validate_contamination
from assay.core.records import Instance
from assay.evaluate.run import select_instances
from assay.evaluate.suite import load_suite
from assay.registry import EventKind, Registry
from assay.registry.training_data import TrainingCorpus
from assay.storage.parquet import ParquetStore
from assets import all_assets
from resources import ModelsResource, SuiteResource, assay_resources
from sensors.promotion import EVALUATION_KEYS, model_promotion_sensor

MODEL = "m"
DOCS, PRONOUNS = "tiny-docs", "pronouns"
UNRELATED = (
    "Quarterly rainfall in the northern valley exceeded the long term average by a wide "
    "margin, and the irrigation board postponed its meeting until the reservoir survey was "
    "complete and the engineers had filed their final report on the spillway repairs."
)


def _eval_instances(scenario: str) -> list[Instance]:
    entry = load_suite()[scenario]
    return select_instances(entry, entry.build().load().instances, None)[0]


def _grams(text: str, n: int) -> set[tuple[str, ...]]:
    """Word n-grams after lm-eval's normalization (lower case, ASCII punctuation dropped)."""
    words = text.lower().translate(str.maketrans("", "", string.punctuation)).split()
    return {tuple(words[i : i + n]) for i in range(len(words) - n + 1)}


def _write_jsonl(path: Path, texts: list[str]) -> None:
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))


@pytest.fixture
def setup(tmp_path: Path, model_cache_dir: Path, monkeypatch: pytest.MonkeyPatch):
    root = tmp_path / "corpora"
    root.mkdir()
    monkeypatch.setenv("ASSAY_CORPUS_ROOTS", str(root))
    docs = _eval_instances(DOCS)
    planted = [docs[0], docs[3], docs[5]]
    # Corpus A: three tiny-docs items verbatim (input and references, as checked) among
    # unrelated text; corpus B: unrelated text only.
    _write_jsonl(root / "a.jsonl", [UNRELATED, *(instance_text(i) for i in planted)])
    _write_jsonl(root / "b.jsonl", [UNRELATED, UNRELATED.upper()])
    registry_url = f"sqlite:///{tmp_path / 'registry.db'}"
    registry = Registry.open(registry_url)
    registry.create_model(MODEL)
    for name in ("a", "b"):
        registry.create_version(
            MODEL,
            "bundled:smollm2-135m-instruct",
            training_data=[
                {"name": f"corpus-{name}", "url": str(root / f"{name}.jsonl"), "format": "jsonl"}
            ],
        )
    registry.create_version(MODEL, "bundled:smollm2-135m-instruct")  # declares nothing
    resources = assay_resources(
        storage_url=str(tmp_path / "storage"),
        registry_url=registry_url,
        suite=SuiteResource(),
        models=ModelsResource(
            cache_dir=str(model_cache_dir),
            request_cache_url=f"sqlite:///{tmp_path / 'requests.db'}",
        ),
    )
    with instance_for_test() as instance:
        yield {
            "registry": registry,
            "root": root,
            "resources": resources,
            "instance": instance,
            "store": ParquetStore(str(tmp_path / "storage")),
            "planted": {i.id for i in planted},
            "docs": docs,
        }
    registry.close()


def _tick(setup, cursor):
    """One sensor evaluation, applied the way the daemon applies it."""
    instance = setup["instance"]
    context = build_sensor_context(instance=instance, cursor=cursor, resources=setup["resources"])
    result = model_promotion_sensor(context)
    assert isinstance(result, SensorResult), result
    for request in result.dynamic_partitions_requests:
        instance.add_dynamic_partitions(request.partitions_def_name, request.partition_keys)
    for event in result.asset_events:
        instance.report_runless_asset_event(event)
    return result


def _materialize(setup, asset: str, partition: str) -> None:
    result = materialize(
        all_assets,
        selection=AssetSelection.assets(asset),
        partition_key=partition,
        instance=setup["instance"],
        resources=setup["resources"],
    )
    assert result.success


def _index_builds(instance) -> dict[str, int]:
    """corpus_index materializations recorded, by digest."""
    records = instance.get_event_records(
        EventRecordsFilter(DagsterEventType.ASSET_MATERIALIZATION, AssetKey("corpus_index"))
    )
    counts: dict[str, int] = {}
    for record in records:
        partition = record.event_log_entry.dagster_event.partition
        counts[partition] = counts.get(partition, 0) + 1
    return counts


def test_contamination_flags_planted_items_and_a_changed_corpus_stales_its_version(setup):
    instance, store, registry = setup["instance"], setup["store"], setup["registry"]
    first = _tick(setup, None)
    versions = [f"{MODEL}@v{n}" for n in (1, 2, 3)]
    declared = {v: read_training_corpora(store, v) for v in versions}
    assert [d.name for d in declared[versions[0]]] == ["corpus-a"]
    assert declared[versions[2]] == []
    digest_a, digest_b = declared[versions[0]][0].digest, declared[versions[1]][0].digest
    assert sorted(instance.get_dynamic_partitions("corpus_digest")) == sorted([digest_a, digest_b])

    for scenario in (DOCS, PRONOUNS):
        _materialize(setup, "scenario_instances", scenario)
    partitions = [f"{v}|{s}" for v in versions for s in (DOCS, PRONOUNS)]
    for key in partitions:
        _materialize(setup, "contamination", key)
    # Each corpus was indexed once, by the first step that needed it.
    assert _index_builds(instance) == {digest_a: 1, digest_b: 1}

    def table(version: str, scenario: str):
        return validate_contamination(
            store.read("contamination", {"model_version": version, "scenario": scenario})
        )

    docs = table(versions[0], DOCS)
    assert docs.schema == SCHEMA
    # One row per instance × detector for the one declared corpus.
    assert docs.num_rows == 3 * len(setup["docs"])
    by_detector: dict[str, set[str]] = {}
    for row in docs.to_pylist():
        assert row["corpus"] == "corpus-a" and row["corpus_digest"] == digest_a
        if row["flagged"]:
            by_detector.setdefault(row["detector"], set()).add(row["instance_id"])
    # The planted items are exactly what the 13-gram and 70%-of-8-grams rules flag; Llama 2's
    # span rule also flags items sharing 11-word spans with a planted one (the generated docs
    # reuse phrases), and only those.
    assert by_detector["gpt3_13gram"] == setup["planted"]
    assert by_detector["palm_8gram"] == setup["planted"]
    planted_spans = {
        g for i in setup["docs"] if i.id in setup["planted"] for g in _grams(instance_text(i), 11)
    }
    sharing = {i.id for i in setup["docs"] if _grams(instance_text(i), 11) & planted_spans}
    assert setup["planted"] <= by_detector["llama2_span"] <= sharing
    for row in docs.to_pylist():
        if row["instance_id"] in setup["planted"]:
            assert row["score"] == 1.0 and row["label"] in ("", "dirty")
    # Corpus B holds nothing of the suite; version 3 declares no corpus: not checked.
    assert not any(table(versions[1], DOCS)["flagged"].to_pylist())
    assert table(versions[2], DOCS).num_rows == 0

    resolver = get_stale_status_resolver(instance, all_assets)
    key = AssetKey("contamination")
    assert {p: resolver.get_status(key, p) for p in partitions} == dict.fromkeys(
        partitions, StaleStatus.FRESH
    )

    # Corpus A changes (new bytes, new digest); the manifests themselves do not. Recording
    # every version's corpora again stales exactly version 1's partitions.
    with (setup["root"] / "a.jsonl").open("a") as handle:
        handle.write(json.dumps({"text": "one more document"}) + "\n")
    for version in versions:
        _materialize(setup, "training_corpora", version)
    new_a = read_training_corpora(store, versions[0])[0].digest
    assert new_a != digest_a
    resolver = get_stale_status_resolver(instance, all_assets)
    stale = {p for p in partitions if resolver.get_status(key, p) == StaleStatus.STALE}
    assert stale == {f"{versions[0]}|{DOCS}", f"{versions[0]}|{PRONOUNS}"}

    # Version 2's unchanged corpus is not indexed again when its partitions rerun; version 1's
    # new digest gets its own index, and its partitions are fresh again.
    index_b = Path(index_url(store, digest_b))
    before = sorted((p.name, p.stat().st_mtime_ns) for p in index_b.iterdir())
    for key_ in partitions[:4]:
        _materialize(setup, "contamination", key_)
    assert sorted((p.name, p.stat().st_mtime_ns) for p in index_b.iterdir()) == before
    assert _index_builds(instance) == {digest_a: 1, digest_b: 1, new_a: 1}
    resolver = get_stale_status_resolver(instance, all_assets)
    assert all(resolver.get_status(key, p) == StaleStatus.FRESH for p in partitions)

    # The sensor records a new manifest (training_data_set) on its own.
    registry.set_training_data(
        versions[2], [{"name": "b", "url": str(setup["root"] / "b.jsonl"), "format": "jsonl"}]
    )
    _tick(setup, first.cursor)
    assert read_training_corpora(store, versions[2])[0].digest == digest_b
    resolver = get_stale_status_resolver(instance, all_assets)
    assert resolver.get_status(key, f"{versions[2]}|{DOCS}") == StaleStatus.STALE
    assert [e.kind for e in registry.events()][-1] is EventKind.TRAINING_DATA_SET


def test_the_promotion_run_includes_contamination(setup):
    assert AssetKey("contamination") in EVALUATION_KEYS


def test_an_unreadable_corpus_refuses_the_event_naming_the_corpus(setup):
    (setup["root"] / "a.jsonl").unlink()
    _tick(setup, None)
    refused = [e for e in setup["registry"].events() if e.kind is EventKind.PROMOTION_REFUSED]
    assert len(refused) == 1 and refused[0].version == 1
    assert "corpus-a" in refused[0].payload["reason"]
    # The other versions were recorded.
    assert read_training_corpora(setup["store"], f"{MODEL}@v2") is not None


def test_without_a_corpus_the_suite_can_ask_for_min_k_prob(setup, tmp_path: Path):
    """Version 3 declares nothing: with ``model_based: true`` its partition holds one Min-K%
    row per instance (the paired difference), computed with the bundled model."""
    suite = tmp_path / "suite.yaml"
    suite.write_text(
        "scenarios:\n"
        f"  {PRONOUNS}:\n"
        "    scenario: pronoun_resolution\n"
        "    adapter: {method: multiple_choice_separate}\n"
        "    max_instances: 5\n"
        "contamination: {model_based: true, flag_detectors: [min_k_prob]}\n"
    )
    resources = {**setup["resources"], "suite": SuiteResource(path=str(suite))}
    _tick(setup, None)
    version = f"{MODEL}@v3"
    for asset, partition in (
        ("scenario_instances", PRONOUNS),
        ("registered_models", version),
        ("contamination", f"{version}|{PRONOUNS}"),
    ):
        assert materialize(
            all_assets,
            selection=AssetSelection.assets(asset),
            partition_key=partition,
            instance=setup["instance"],
            resources=resources,
        ).success
    table = validate_contamination(
        setup["store"].read("contamination", {"model_version": version, "scenario": PRONOUNS})
    )
    evaluated = [i.id for i in _eval_instances(PRONOUNS)[:5]]
    assert sorted(table["instance_id"].to_pylist()) == sorted(evaluated)
    assert set(table["detector"].to_pylist()) == {"min_k_prob"}
    assert set(table["corpus"].to_pylist()) == {""}
    # Versions that declare a corpus keep the overlap path, model_based or not.
    _materialize_with(setup, resources, "contamination", f"{MODEL}@v2|{PRONOUNS}")
    v2 = setup["store"].read(
        "contamination", {"model_version": f"{MODEL}@v2", "scenario": PRONOUNS}
    )
    assert set(v2["detector"].to_pylist()) == {"gpt3_13gram", "palm_8gram", "llama2_span"}


def _materialize_with(setup, resources, asset: str, partition: str) -> None:
    assert materialize(
        all_assets,
        selection=AssetSelection.assets(asset),
        partition_key=partition,
        instance=setup["instance"],
        resources=resources,
    ).success


def test_a_link_out_of_the_corpus_root_is_refused_before_it_is_read(tmp_path: Path, monkeypatch):
    root = tmp_path / "root"
    (root / "folder").mkdir(parents=True)
    secret = tmp_path / "secret.jsonl"
    secret.write_text(json.dumps({"text": "not for the workers"}) + "\n")
    _write_jsonl(root / "folder" / "a.jsonl", [UNRELATED])
    (root / "folder" / "b.jsonl").symlink_to(secret)
    monkeypatch.setenv("ASSAY_CORPUS_ROOTS", str(root))
    corpus = TrainingCorpus("c", str(root / "folder"), "jsonl")
    with pytest.raises(ValueError, match=r"corpus 'c': file: local path .*b.jsonl.* outside"):
        declare([corpus])
    (root / "folder" / "b.jsonl").unlink()
    (declared,) = declare([corpus])
    assert len(declared.digest) == 64
