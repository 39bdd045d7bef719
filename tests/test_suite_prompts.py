"""Suite layouts from the prompt registry: references checked at load, resolved when a
partition is evaluated, recorded with every request, and a moved prompt alias re-evaluates
the entries that read it for the versions holding promotion aliases."""

from pathlib import Path

import pyarrow.compute as pc
import pytest
import yaml
from dagster import (
    AssetSelection,
    DagsterInstance,
    SensorResult,
    build_sensor_context,
    instance_for_test,
    materialize,
)

from assay.core.records import Instance, ModelOutput, Reference
from assay.evaluate.registry_prompts import resolve_prompts, template_digest
from assay.evaluate.suite import load_suite, parse_suite
from assay.registry import EventKind, Registry
from assay.storage.parquet import ParquetStore
from assets import all_assets
from resources import ModelsResource, SuiteResource, assay_resources
from sensors.promotion import RANGE_END, RANGE_START, model_promotion_sensor

MODEL = "smollm2-135m-instruct"
TERSE_V1 = "Reply with the number only."
TERSE_V2 = "You are a calculator. Reply with the number only."
LAYOUT = "Q: {{ input }}\n"


def _suite(adapter: dict) -> dict:
    return {"scenarios": {"quiz": {"scenario": "arithmetic_qa", "adapter": adapter}}}


@pytest.fixture
def registry(registry_url) -> Registry:
    reg = Registry.open(registry_url)
    reg.create_prompt("terse")
    reg.create_prompt_version("terse", TERSE_V1, [])
    reg.create_prompt_version("terse", TERSE_V2, [])
    reg.set_prompt_alias("terse", "production", 1)
    reg.create_prompt("layout")
    reg.create_prompt_version("layout", LAYOUT, ["input"])
    return reg


@pytest.mark.parametrize(
    ("adapter", "message"),
    [
        ({"instructions": "prompts:/terse"}, "names no alias or version"),
        ({"instructions": "prompts:terse@production"}, "expected a prompt reference"),
        ({"input_template": "Q: {{ input }}"}, "expected a prompt reference"),
        ({"instructions": "prompts:/bad name@x"}, "bad prompt reference"),
    ],
)
def test_bad_references_are_refused_at_load_naming_the_entry(adapter, message):
    with pytest.raises(ValueError) as err:
        parse_suite(_suite(adapter), "s.yaml")
    assert f"s.yaml: scenarios.quiz.adapter.{next(iter(adapter))}" in str(err.value)
    assert message in str(err.value)


@pytest.mark.parametrize(
    ("reference", "message"),
    [
        ("prompts:/missing@production", "prompt 'missing'"),
        ("prompts:/terse@staging", "alias 'staging' of prompt 'terse' does not exist"),
        ("prompts:/terse/9", "prompt version 'terse@v9'"),
        ("prompts:/layout/1", "instructions take a template without variables"),
    ],
)
def test_unresolvable_references_name_the_entry_and_the_reference(registry, reference, message):
    suite = parse_suite(
        {
            "scenarios": {
                "quiz": {
                    "scenario": "arithmetic_qa",
                    "variants": [{"variant": "terse", "instructions": reference}],
                }
            }
        },
        "s.yaml",
    )
    with pytest.raises(ValueError) as err:
        resolve_prompts(suite["quiz"], registry)
    text = str(err.value)
    assert f"s.yaml: scenarios.quiz.variants[0].instructions: prompt reference {reference!r}" in (
        text
    )
    assert message in text


def test_an_unresolved_entry_builds_no_requests(registry):
    config = parse_suite(_suite({"instructions": "prompts:/terse@production"}), "s.yaml")["quiz"]
    with pytest.raises(ValueError, match="is not resolved"):
        config.build_requests([_instance()])


def test_an_input_template_must_place_the_input_once(registry):
    registry.create_prompt_version("layout", "{{ input }} / {{ input }}", ["input"])
    config = parse_suite(_suite({"input_template": "prompts:/layout/2"}), "s.yaml")["quiz"]
    with pytest.raises(ValueError, match="exactly once"):
        resolve_prompts(config, registry)


def _instance() -> Instance:
    return Instance(id="i1", input="2+2", references=(Reference("4", True),), split="test")


def test_resolved_layout_is_the_registry_text_and_every_request_records_its_version(registry):
    config = parse_suite(
        _suite(
            {"instructions": "prompts:/terse@production", "input_template": "prompts:/layout/1"}
        ),
        "s.yaml",
    )["quiz"]
    first = resolve_prompts(config, registry).build_requests([_instance()])[0]
    assert first.prompt == f"{TERSE_V1}\nQ: 2+2\nAnswer:"
    assert [(t.field, t.name, t.version) for t in first.prompt_templates] == [
        ("instructions", "terse", 1),
        ("input_template", "layout", 1),
    ]
    assert first.prompt_templates[0].digest == template_digest(TERSE_V1)

    # The request digest is the request cache's key: a new prompt version is a new request.
    registry.set_prompt_alias("terse", "production", 2)
    second = resolve_prompts(config, registry).build_requests([_instance()])[0]
    assert second.prompt.startswith(TERSE_V2)
    assert second.prompt_templates[0].version == 2
    assert second.digest != first.digest and second.template_id != first.template_id
    # The same text under another version asks the model the same thing: the cache may answer.
    registry.create_prompt_version("terse", TERSE_V1, [])
    registry.set_prompt_alias("terse", "production", 3)
    third = resolve_prompts(config, registry).build_requests([_instance()])[0]
    assert third.digest == first.digest and third.prompt_templates[0].version == 3

    # model_outputs keeps the versions per row, and old partitions without the column read.
    table = ModelOutput.to_table([ModelOutput(third, _completion())])
    assert ModelOutput.from_table(table)[0].request.prompt_templates == third.prompt_templates
    old = table.drop_columns(["prompt_templates"])
    assert ModelOutput.from_table(old)[0].request.prompt_templates == ()


def _completion():
    from assay.core.records import Completion

    return Completion(text="4")


# ---------------------------------------------------------------- the sensor and the asset


@pytest.fixture
def deployed(tmp_path, registry, registry_url, model_cache_dir):
    registry.create_model(MODEL)
    registry.create_version(MODEL, "bundled:smollm2-135m-instruct", serving={"chat_template": True})
    registry.create_version(MODEL, "bundled:smollm2-135m-instruct", serving={})
    registry.set_alias(MODEL, "champion", 1)
    # Keys of the shipped suite (the static scenario partitions); arithmetic and pattern read
    # the prompt, facts-mc between them and facts-joint after them do not.
    default = load_suite()
    entries = {}
    for key in ("arithmetic", "facts-mc", "pattern", "facts-joint"):
        config = default[key]
        adapter = {"method": config.adapter.method.value, "variant": config.adapter.variant}
        if key in ("arithmetic", "pattern"):
            adapter |= {"instructions": "prompts:/terse@production", "max_tokens": 4}
        entries[key] = {"scenario": config.scenario, "args": config.args, "adapter": adapter}
    suite_path = tmp_path / "suite.yaml"
    suite_path.write_text(yaml.safe_dump({"scenarios": entries}, sort_keys=False))
    resources = assay_resources(
        storage_url=str(tmp_path / "storage"),
        registry_url=registry_url,
        suite=SuiteResource(path=str(suite_path), max_instances=1),
        models=ModelsResource(
            cache_dir=str(model_cache_dir),
            request_cache_url=f"sqlite:///{tmp_path / 'requests.db'}",
        ),
    )
    with instance_for_test() as instance:
        yield instance, resources, registry, tmp_path / "storage"


def _tick(instance: DagsterInstance, resources, cursor):
    context = build_sensor_context(instance=instance, cursor=cursor, resources=resources)
    result = model_promotion_sensor(context)
    if isinstance(result, SensorResult):
        for request in result.dynamic_partitions_requests:
            instance.add_dynamic_partitions(request.partitions_def_name, request.partition_keys)
        for event in result.asset_events:
            instance.report_runless_asset_event(event)
    return result


def test_a_prompt_promotion_reevaluates_the_entries_that_read_it(deployed):
    instance, resources, registry, storage = deployed
    first = _tick(instance, resources, None)
    assert [r.tags["assay/model_version"] for r in first.run_requests] == [f"{MODEL}@v1"]
    for scenario in ("arithmetic", "pattern"):
        materialize(
            all_assets,
            selection=AssetSelection.assets("scenario_instances"),
            partition_key=scenario,
            instance=instance,
            resources=resources,
        )
    evaluated = materialize(
        all_assets,
        selection=AssetSelection.assets("model_outputs"),
        partition_key=f"{MODEL}@v1|arithmetic",
        instance=instance,
        resources=resources,
    )
    assert evaluated.success
    store = ParquetStore(str(storage))
    partition = {"model_version": f"{MODEL}@v1", "scenario": "arithmetic"}
    before = store.read("model_outputs", partition)
    assert pc.all(pc.starts_with(before["prompt"], TERSE_V1)).as_py()
    assert {t["version"] for ts in before["prompt_templates"].to_pylist() for t in ts} == {1}

    # A prompt alias no entry reads, and a model version with no promotion alias, do nothing.
    registry.set_prompt_alias("terse", "staging", 2)
    registry.set_prompt_alias("terse", "production", 2)
    moved = _tick(instance, resources, first.cursor)
    assert isinstance(moved, SensorResult)
    assert len(moved.run_requests) == 1  # v1 holds champion, v2 holds nothing
    request = moved.run_requests[0]
    assert request.tags["assay/model_version"] == f"{MODEL}@v1"
    assert request.tags[RANGE_START] == f"{MODEL}@v1|arithmetic"
    assert request.tags[RANGE_END] == f"{MODEL}@v1|pattern"
    assert "prompt alias terse@production" in request.tags["assay/reason"]

    # Resolution happens when the partition is evaluated: the new run sends version 2.
    again = materialize(
        all_assets,
        selection=AssetSelection.assets("model_outputs"),
        partition_key=f"{MODEL}@v1|arithmetic",
        instance=instance,
        resources=resources,
    )
    assert again.success
    after = store.read("model_outputs", partition)
    assert pc.all(pc.starts_with(after["prompt"], TERSE_V2)).as_py()
    assert {t["version"] for ts in after["prompt_templates"].to_pylist() for t in ts} == {2}
    assert not any(after["cached"].to_pylist())  # new prompts: the cache had no answer


def test_a_prompt_promotion_joins_a_model_promotion_of_the_same_version(deployed):
    instance, resources, registry, _ = deployed
    first = _tick(instance, resources, None)
    registry.set_alias(MODEL, "challenger", 2)
    registry.set_prompt_alias("terse", "production", 2)
    result = _tick(instance, resources, first.cursor)
    by_version = {r.tags["assay/model_version"]: r for r in result.run_requests}
    # v2's model promotion covers the whole suite; v1 only the entries reading the prompt.
    assert set(by_version) == {f"{MODEL}@v1", f"{MODEL}@v2"}
    assert by_version[f"{MODEL}@v2"].tags[RANGE_START].endswith("|arithmetic")
    assert by_version[f"{MODEL}@v2"].tags[RANGE_END].endswith("|facts-joint")
    assert by_version[f"{MODEL}@v1"].tags[RANGE_END].endswith("|pattern")
    assert len({r.run_key for r in result.run_requests}) == 2
    kinds = [e.kind for e in registry.events()]
    assert EventKind.PROMOTION_REFUSED not in kinds


def test_suite_file_paths_stay_in_the_error(tmp_path: Path):
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(_suite({"instructions": "prompts:/terse"})))
    with pytest.raises(ValueError, match=f"{path}: scenarios.quiz.adapter.instructions"):
        load_suite(path)


def test_a_holder_that_cannot_be_evaluated_is_refused_alone(deployed):
    instance, resources, registry, _ = deployed
    registry.create_model("broken")
    registry.create_version("broken", "hf:/does/not/exist")
    registry.set_alias("broken", "champion", 1)
    first = _tick(instance, resources, None)
    registry.set_prompt_alias("terse", "production", 2)
    moved = registry.events()[-1]
    result = _tick(instance, resources, first.cursor)
    assert [r.tags["assay/model_version"] for r in result.run_requests] == [f"{MODEL}@v1"]
    refused = [
        e
        for e in registry.events(after_id=moved.id)
        if e.kind is EventKind.PROMOTION_REFUSED and e.payload["event_id"] == moved.id
    ]
    assert len(refused) == 1
    assert refused[0].payload["reason"].startswith("broken@v1: ")
    assert int(result.cursor) >= moved.id  # the cursor moved past the event
