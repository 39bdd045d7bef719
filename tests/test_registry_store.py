"""Registry store behaviour through its public API (SQLite file per test)."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import create_engine, inspect, text

from assay.models.base import ServingConfig
from assay.registry import (
    ErrorCode,
    EventKind,
    Prices,
    Registry,
    RegistryError,
    Stage,
    default_registry_url,
)
from assay.registry.names import check_name

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


class Clock:
    """A settable clock: every registry write is stamped with ``now``."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "registry.db"


@pytest.fixture
def clock() -> Clock:
    return Clock(T0)


@pytest.fixture
def reg(db_path: Path, clock: Clock):
    with Registry.open(f"sqlite:///{db_path}", clock=clock) as registry:
        yield registry


def snapshot(db_path: Path) -> dict[str, list[tuple]]:
    """Every row of every table, read with a separate engine."""
    engine = create_engine(f"sqlite:///{db_path}")
    try:
        with engine.connect() as conn:
            return {
                table: sorted(map(tuple, conn.execute(text(f'SELECT * FROM "{table}"'))), key=repr)
                for table in inspect(conn).get_table_names()
            }
    finally:
        engine.dispose()


def expect_error(code: ErrorCode, *fragments: str):
    """Context manager asserting a RegistryError with ``code`` whose message names fragments."""

    class _Check:
        def __enter__(self):
            self._raises = pytest.raises(RegistryError)
            self.info = self._raises.__enter__()
            return self.info

        def __exit__(self, *exc):
            handled = self._raises.__exit__(*exc)
            assert self.info.value.code == code, self.info.value
            for fragment in fragments:
                assert fragment in self.info.value.message, self.info.value.message
            return handled

    return _Check()


# --------------------------------------------------------------------------- models, versions


def test_versions_are_numbered_per_model_and_carry_their_fields(reg: Registry) -> None:
    reg.create_model("alpha", "first", {"team": "eval"})
    reg.create_model("beta")
    a1 = reg.create_version(
        "alpha",
        "bundled:smollm2-135m-instruct",
        {"chat_template": True, "batch_size": 4},
        description="d1",
        tags={"k": "v"},
        prices={"prompt_per_1k": 0.5, "completion_per_1k": 1.5},
    )
    b1 = reg.create_version("beta", "hf:/models/beta")
    a2 = reg.create_version("alpha", "openai:http://localhost:8000/v1#smol")

    assert (a1.key, b1.key, a2.key) == ("alpha@v1", "beta@v1", "alpha@v2")
    expected_serving = ServingConfig(chat_template=True, batch_size=4).to_dict()
    assert a1.serving == expected_serving
    assert a1.tags == {"k": "v"} and a1.description == "d1"
    assert a1.prices == Prices(0.5, 1.5)
    assert a1.stage is Stage.NONE and a1.created_at == T0
    assert reg.get_version("alpha@v1") == a1
    model = reg.get_model("alpha")
    assert model.latest_version == 2 and model.tags == {"team": "eval"}
    assert [m.name for m in reg.list_models()] == ["alpha", "beta"]
    assert [v.key for v in reg.list_versions()] == ["alpha@v1", "alpha@v2", "beta@v1"]
    assert [v.key for v in reg.list_versions("beta")] == ["beta@v1"]


def test_price_cost_estimate() -> None:
    # 1200 prompt tokens at 0.5/1k = 0.6; 300 completion tokens at 2.0/1k = 0.6.
    assert Prices(0.5, 2.0).cost(1200, 300) == pytest.approx(1.2)
    assert Prices(0.5, None).cost(1200, 300) is None
    assert Prices(0.5, None).cost(1200, 0) == pytest.approx(0.6)


def test_set_prices_replaces_them_and_logs_the_change(reg: Registry, db_path: Path) -> None:
    reg.create_model("m")
    reg.create_version("m", "hf:/1", prices={"prompt_per_1k": 0.5, "completion_per_1k": 1.5})
    last = reg.events()[-1].id
    changed = reg.set_prices("m@v1", {"prompt_per_1k": 2.0, "completion_per_1k": 4.0}, "ops")
    assert changed.prices == reg.get_version("m@v1").prices == Prices(2.0, 4.0)
    (event,) = reg.events(after_id=last)
    assert event.kind is EventKind.PRICES_SET and event.key == "m@v1" and event.actor == "ops"
    assert event.payload == {
        "before": {"prompt_per_1k": 0.5, "completion_per_1k": 1.5},
        "after": {"prompt_per_1k": 2.0, "completion_per_1k": 4.0},
    }
    reg.set_prices("m@v1", Prices(2.0, 4.0))  # unchanged: no event
    assert reg.events()[-1].id == event.id
    before = snapshot(db_path)
    with expect_error(ErrorCode.INVALID_PARAMETER_VALUE, "prompt_per_1k"):
        reg.set_prices("m@v1", {"prompt_per_1k": -1.0})
    with expect_error(ErrorCode.INVALID_PARAMETER_VALUE, "m@champion"):
        reg.set_prices("m@champion", {"prompt_per_1k": 1.0})
    with expect_error(ErrorCode.RESOURCE_DOES_NOT_EXIST, "m@v9"):
        reg.set_prices("m@v9", {"prompt_per_1k": 1.0})
    assert snapshot(db_path) == before


def test_find_version_matches_normalized_serving(reg: Registry) -> None:
    reg.create_model("m")
    v1 = reg.create_version("m", "hf:/a", {"batch_size": 8})
    reg.create_version("m", "hf:/a", {"batch_size": 4})
    # Spelling out a default value is the same serving config.
    assert reg.find_version("m", "hf:/a", {"batch_size": 8, "dtype": "float32"}) == v1
    assert reg.find_version("m", "hf:/a", {"batch_size": 2}) is None
    assert reg.find_version("m", "hf:/b", {"batch_size": 8}) is None
    assert reg.find_version("missing", "hf:/a") is None


def test_get_or_create_model_is_idempotent(reg: Registry) -> None:
    first = reg.get_or_create_model("m", "desc")
    again = reg.get_or_create_model("m", "other description")
    assert again.description == "desc" and again.created_at == first.created_at
    assert [e.kind for e in reg.events()] == [EventKind.MODEL_CREATED]


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "a/b",
        "a|b",
        "a,b",
        "a[1]",
        "x]",
        "a...b",
        "tab\there",
        "nl\n",
        "a@b",
        " lead",
        "x" * 129,
        "a:b",  # once accepted here and unparseable afterwards (looked like a URI scheme)
        "a b",
        "café",
        "-lead",
    ],
)
def test_names_that_would_break_partition_keys_are_refused(
    reg: Registry, db_path: Path, bad: str
) -> None:
    before = snapshot(db_path)
    with expect_error(ErrorCode.INVALID_PARAMETER_VALUE, "model name"):
        reg.create_model(bad)
    assert snapshot(db_path) == before


def test_every_accepted_name_parses_back(reg: Registry) -> None:
    # One rule for registration and parsing: what create_model accepts, resolve can read.
    for name in ("m", "a.b", "a-b_c", "A1", "x" * 128):
        reg.create_model(name)
        reg.create_version(name, "hf:/a")
        reg.set_alias(name, "champion", 1)
        assert reg.resolve(f"{name}@v1").key == f"{name}@v1"
        assert reg.resolve(f"models:/{name}@champion").key == f"{name}@v1"
        assert reg.resolve(f"models:/{name}/1").key == f"{name}@v1"


def test_suite_keys_follow_the_registry_name_rule() -> None:
    from assay.evaluate.suite import validate_key

    for bad in ("a:b", "a b", "a/b", "a|b", "a...b", "-a"):
        with pytest.raises(ValueError, match="invalid scenario key"):
            validate_key(bad, "scenario key")
        with pytest.raises(RegistryError, match="model name"):
            check_name(bad, "model name")
    assert validate_key("mmlu-anatomy") == check_name("mmlu-anatomy", "model name")


def test_aliases_and_tag_keys_are_checked_too(reg: Registry, db_path: Path) -> None:
    reg.create_model("m")
    reg.create_version("m", "hf:/a")
    before = snapshot(db_path)
    for alias in ("a/b", "v2", "latest", "x...y", ""):
        with expect_error(ErrorCode.INVALID_PARAMETER_VALUE, "alias"):
            reg.set_alias("m", alias, 1)
    with expect_error(ErrorCode.INVALID_PARAMETER_VALUE, "tag key"):
        reg.set_tag("m", "a|b", "v")
    with expect_error(ErrorCode.INVALID_PARAMETER_VALUE, "tag key"):
        reg.create_version("m", "hf:/b", tags={"a,b": "v"})
    with expect_error(ErrorCode.INVALID_PARAMETER_VALUE, "prompt name"):
        reg.create_prompt("p/q")
    assert snapshot(db_path) == before
    assert len("a" * 128) == 128 and reg.create_model("a" * 128).name == "a" * 128


def test_bad_version_inputs_are_refused_and_nothing_is_written(
    reg: Registry, db_path: Path
) -> None:
    reg.create_model("m")
    before = snapshot(db_path)
    cases = [
        ({"source": "no-scheme"}, "source"),
        ({"source": "hf:/a", "serving": {"batch_size": "8"}}, "batch_size"),
        ({"source": "hf:/a", "serving": {"batch_size": 0}}, "batch_size"),
        ({"source": "hf:/a", "serving": {"chat_template": 1}}, "chat_template"),
        ({"source": "hf:/a", "serving": {"temperature": 0.1}}, "temperature"),
        ({"source": "hf:/a", "prices": {"prompt_per_1k": -1.0}}, "prompt_per_1k"),
        ({"source": "hf:/a", "prices": {"per_token": 1.0}}, "per_token"),
    ]
    for kwargs, named in cases:
        with expect_error(ErrorCode.INVALID_PARAMETER_VALUE, named):
            reg.create_version("m", **kwargs)
    with expect_error(ErrorCode.RESOURCE_DOES_NOT_EXIST, "'nope'"):
        reg.create_version("nope", "hf:/a")
    assert snapshot(db_path) == before


def test_duplicate_model_is_refused_and_nothing_is_written(reg: Registry, db_path: Path) -> None:
    reg.create_model("m", "original")
    before = snapshot(db_path)
    with expect_error(ErrorCode.RESOURCE_ALREADY_EXISTS, "'m'"):
        reg.create_model("m", "again")
    assert snapshot(db_path) == before


def test_failure_late_in_a_transaction_rolls_back_every_row(reg: Registry, db_path: Path) -> None:
    # The actor is checked when the event row is built, after the version row, its tags and
    # the model's counter were already changed in the transaction: all of it must roll back.
    reg.create_model("m")
    reg.create_version("m", "hf:/a")
    reg.create_version("m", "hf:/b")
    reg.transition_stage("m", 1, "Production")
    before = snapshot(db_path)
    too_long = "x" * 300
    with expect_error(ErrorCode.INVALID_PARAMETER_VALUE, "actor"):
        reg.create_version("m", "hf:/c", tags={"t": "v"}, actor=too_long)
    with expect_error(ErrorCode.INVALID_PARAMETER_VALUE, "actor"):
        reg.set_alias("m", "champion", 1, actor=too_long)
    with expect_error(ErrorCode.INVALID_PARAMETER_VALUE, "actor"):
        reg.transition_stage("m", 2, "Production", archive_existing_versions=True, actor=too_long)
    with expect_error(ErrorCode.INVALID_PARAMETER_VALUE, "actor"):
        reg.record_evaluation("m@v1", "boolq", {"acc": 1.0}, actor=too_long)
    assert snapshot(db_path) == before
    # The number the failed attempt used is handed out again: nothing of it was kept.
    assert reg.create_version("m", "hf:/c").version == 3


# --------------------------------------------------------------------------- aliases, resolve


def test_aliases_move_resolve_and_are_removed(reg: Registry, db_path: Path) -> None:
    reg.create_model("m")
    for source in ("hf:/1", "hf:/2", "hf:/3"):
        reg.create_version("m", source)
    assert reg.set_alias("m", "champion", 1).aliases == ("champion",)
    reg.set_alias("m", "challenger", 3)
    for ref in ("m@champion", "models:/m@champion", "m@v1", "models:/m/1"):
        assert reg.resolve(ref).key == "m@v1", ref
    assert reg.resolve("m").key == "m@v3"
    assert reg.resolve("m@latest").key == "m@v3"
    assert reg.resolve("models:/m").key == "m@v3"

    reg.set_alias("m", "champion", 2)
    assert reg.resolve("m@champion").key == "m@v2"
    assert reg.get_version("m@v1").aliases == ()
    assert reg.get_model("m").aliases == {"challenger": 3, "champion": 2}

    reg.delete_alias("m", "champion")
    with expect_error(ErrorCode.RESOURCE_DOES_NOT_EXIST, "'champion'", "'m'"):
        reg.resolve("m@champion")

    before = snapshot(db_path)
    with expect_error(ErrorCode.RESOURCE_DOES_NOT_EXIST, "m@v7"):
        reg.set_alias("m", "champion", 7)
    with expect_error(ErrorCode.RESOURCE_DOES_NOT_EXIST, "'champion'"):
        reg.delete_alias("m", "champion")
    with expect_error(ErrorCode.RESOURCE_DOES_NOT_EXIST, "'ghost'"):
        reg.set_alias("ghost", "champion", 1)
    with expect_error(ErrorCode.INVALID_PARAMETER_VALUE, "version"):
        reg.set_alias("m", "champion", 0)
    assert snapshot(db_path) == before


def test_resolve_refuses_malformed_references(reg: Registry) -> None:
    reg.create_model("m")
    reg.create_version("m", "hf:/1")
    for ref in ("models:/m/0", "models:/m/x", "prompts:/m/1", "m@v0", ""):
        with expect_error(ErrorCode.INVALID_PARAMETER_VALUE):
            reg.resolve(ref)
    with expect_error(ErrorCode.INVALID_PARAMETER_VALUE, "version key"):
        reg.get_version("m@champion")
    with expect_error(ErrorCode.RESOURCE_DOES_NOT_EXIST, "m@v2"):
        reg.get_version("m@v2")


def test_setting_an_alias_to_where_it_is_writes_no_event(reg: Registry) -> None:
    reg.create_model("m")
    reg.create_version("m", "hf:/1")
    reg.set_alias("m", "champion", 1)
    count = len(reg.events())
    reg.set_alias("m", "champion", 1)
    assert len(reg.events()) == count


# --------------------------------------------------------------------------- stages and tags


def test_stage_transitions_archive_existing_versions(reg: Registry) -> None:
    reg.create_model("m")
    for source in ("hf:/1", "hf:/2", "hf:/3"):
        reg.create_version("m", source)
    reg.transition_stage("m", 1, "production")
    reg.transition_stage("m", 2, Stage.PRODUCTION)
    assert [v.stage for v in reg.list_versions("m")] == [
        Stage.PRODUCTION,
        Stage.PRODUCTION,
        Stage.NONE,
    ]
    reg.transition_stage("m", 3, "Production", archive_existing_versions=True)
    assert [v.stage for v in reg.list_versions("m")] == [
        Stage.ARCHIVED,
        Stage.ARCHIVED,
        Stage.PRODUCTION,
    ]
    stage_events = [e for e in reg.events() if e.kind is EventKind.STAGE_CHANGED]
    assert [(e.version, e.payload["before"], e.payload["after"]) for e in stage_events] == [
        (1, "None", "Production"),
        (2, "None", "Production"),
        (3, "None", "Production"),
        (1, "Production", "Archived"),
        (2, "Production", "Archived"),
    ]
    with expect_error(ErrorCode.INVALID_PARAMETER_VALUE, "Shipping"):
        reg.transition_stage("m", 1, "Shipping")
    with expect_error(ErrorCode.INVALID_PARAMETER_VALUE, "archive_existing_versions"):
        reg.transition_stage("m", 1, "Archived", archive_existing_versions=True)
    with expect_error(ErrorCode.RESOURCE_DOES_NOT_EXIST, "'ghost'"):
        reg.transition_stage("ghost", 1, "Staging")


def test_tags_on_models_and_versions(reg: Registry) -> None:
    reg.create_model("m")
    reg.create_version("m", "hf:/1")
    reg.set_tag("m", "owner", "team-a")
    reg.set_tag("m", "note", "first", version=1)
    reg.set_tag("m", "note", "second", version=1)
    assert reg.get_model("m").tags == {"owner": "team-a"}
    assert reg.get_version("m@v1").tags == {"note": "second"}
    tag_events = [e for e in reg.events() if e.kind is EventKind.TAG_SET]
    assert [(e.version, e.payload["value"], e.payload["before"]) for e in tag_events] == [
        (None, "team-a", None),
        (1, "first", None),
        (1, "second", "first"),
    ]
    with expect_error(ErrorCode.RESOURCE_DOES_NOT_EXIST, "m@v5"):
        reg.set_tag("m", "note", "x", version=5)


def test_record_evaluation_logs_and_tags(reg: Registry) -> None:
    reg.create_model("m")
    reg.create_version("m", "hf:/1")
    reg.set_alias("m", "champion", 1)
    event = reg.record_evaluation("m@champion", "mmlu-anatomy", {"exact_match": 0.25}, "run-7")
    assert event.kind is EventKind.EVALUATION_RECORDED and event.key == "m@v1"
    assert event.payload == {
        "scenario": "mmlu-anatomy",
        "metrics": {"exact_match": 0.25},
        "run_id": "run-7",
    }
    assert reg.get_version("m@v1").tags == {"eval.mmlu-anatomy.exact_match": "0.25"}
    assert reg.events(after_id=event.id - 1) == [event]
    for metrics in ({"acc": float("nan")}, {"acc": "high"}, {}):
        with expect_error(ErrorCode.INVALID_PARAMETER_VALUE):
            reg.record_evaluation("m@v1", "boolq", metrics)
    with expect_error(ErrorCode.INVALID_PARAMETER_VALUE, "scenario"):
        reg.record_evaluation("m@v1", "a|b", {"acc": 1.0})


# --------------------------------------------------------------------------- event log


def test_event_log_is_monotonic_paged_and_filtered(reg: Registry, monkeypatch) -> None:
    monkeypatch.setenv("ASSAY_ACTOR", "ci-bot")
    reg.create_model("m")
    reg.create_model("n")
    reg.create_version("m", "hf:/1")
    reg.set_alias("m", "champion", 1, actor="alice")
    events = reg.events()
    ids = [e.id for e in events]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert [e.kind for e in events] == [
        EventKind.MODEL_CREATED,
        EventKind.MODEL_CREATED,
        EventKind.VERSION_CREATED,
        EventKind.ALIAS_SET,
    ]
    assert [e.actor for e in events] == ["ci-bot", "ci-bot", "ci-bot", "alice"]
    assert all(e.ts == T0 for e in events)
    assert reg.events(after_id=ids[1]) == events[2:]
    assert reg.events(after_id=ids[0], limit=2) == events[1:3]
    assert reg.events(model="n") == [events[1]]
    assert reg.events(after_id=ids[-1]) == []


def test_event_log_refuses_updates_and_deletes_in_the_database(
    reg: Registry, db_path: Path
) -> None:
    reg.create_model("m")
    conn = sqlite3.connect(db_path)
    try:
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):
            conn.execute("UPDATE events SET actor = 'mallory'")
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):
            conn.execute("DELETE FROM events")
    finally:
        conn.close()
    assert [e.actor for e in reg.events()] != ["mallory"] and len(reg.events()) == 1


def test_as_of_answers_replay_alias_moves(reg: Registry, clock: Clock) -> None:
    day = timedelta(days=1)
    reg.create_model("m")
    for source in ("hf:/1", "hf:/2", "hf:/3"):
        reg.create_version("m", source)  # all at T0
    # Timeline written out by hand:
    #   T0+1d set champion→1; T0+2d move →2; T0+3d remove; T0+4d set →3.
    clock.now = T0 + 1 * day
    reg.set_alias("m", "champion", 1)
    clock.now = T0 + 2 * day
    reg.set_alias("m", "champion", 2)
    clock.now = T0 + 3 * day
    reg.delete_alias("m", "champion")
    clock.now = T0 + 4 * day
    reg.set_alias("m", "champion", 3)

    def holder(at: datetime) -> str | None:
        version = reg.alias_holder("m", "champion", at)
        return None if version is None else version.key

    assert holder(T0 + 0.5 * day) is None
    assert holder(T0 + 1.5 * day) == "m@v1"
    assert holder(T0 + 2 * day) == "m@v2"  # the boundary is inclusive
    assert holder(T0 + 2 * day - timedelta(microseconds=1)) == "m@v1"
    assert holder(T0 + 3.5 * day) is None
    assert holder(T0 + 9 * day) == "m@v3"
    assert reg.alias_holder("m", "challenger", T0 + 9 * day) is None
    # Naive datetimes are read as UTC.
    assert holder((T0 + 1.5 * day).replace(tzinfo=None)) == "m@v1"
    with expect_error(ErrorCode.RESOURCE_DOES_NOT_EXIST, "'ghost'"):
        reg.alias_holder("ghost", "champion", T0)


def test_versions_as_of_lists_what_was_registered_by_then(reg: Registry, clock: Clock) -> None:
    reg.create_model("a")
    reg.create_model("b")
    clock.now = T0 + timedelta(days=1)
    reg.create_version("a", "hf:/a1")
    clock.now = T0 + timedelta(days=3)
    reg.create_version("b", "hf:/b1")
    reg.create_version("a", "hf:/a2")
    assert [v.key for v in reg.versions(as_of=T0)] == []
    assert [v.key for v in reg.versions(as_of=T0 + timedelta(days=2))] == ["a@v1"]
    assert [v.key for v in reg.versions(as_of=T0 + timedelta(days=3))] == [
        "a@v1",
        "a@v2",
        "b@v1",
    ]
    assert [v.key for v in reg.list_versions("b", as_of=T0 + timedelta(days=2))] == []
    assert len(reg.versions()) == 3


# --------------------------------------------------------------------------- prompts


def test_prompt_versions_aliases_and_rendering(reg: Registry) -> None:
    reg.create_prompt("qa", "question answering")
    v1 = reg.create_prompt_version("qa", "Q: {{ question }}\nA:", ["question"])
    v2 = reg.create_prompt_version(
        "qa", "{{context}}\nQ: {{question}}\nA:", ["question", "context"], description="ctx"
    )
    assert (v1.uri, v2.uri, v2.key) == ("prompts:/qa/1", "prompts:/qa/2", "qa@v2")
    assert v2.variables == ("context", "question")
    reg.set_prompt_alias("qa", "production", 1)
    assert reg.get_prompt("prompts:/qa@production") == reg.get_prompt("prompts:/qa/1")
    assert reg.get_prompt("prompts:/qa").version == 2
    assert reg.get_prompt("qa@v2").description == "ctx"
    reg.set_prompt_alias("qa", "production", 2)
    prod = reg.get_prompt("prompts:/qa@production")
    assert prod.render({"question": "Why?", "context": "Sky."}) == "Sky.\nQ: Why?\nA:"
    with expect_error(ErrorCode.INVALID_PARAMETER_VALUE, "missing", "context"):
        prod.render({"question": "Why?"})
    with expect_error(ErrorCode.INVALID_PARAMETER_VALUE, "unknown", "extra"):
        prod.render({"question": "Why?", "context": "c", "extra": "x"})
    alias_events = [e for e in reg.events(prompt="qa") if e.kind is EventKind.PROMPT_ALIAS_SET]
    assert [(e.payload["before"], e.payload["after"]) for e in alias_events] == [(None, 1), (1, 2)]


def test_bad_templates_are_refused_naming_the_fault(reg: Registry, db_path: Path) -> None:
    reg.create_prompt("qa")
    before = snapshot(db_path)
    with expect_error(ErrorCode.INVALID_PARAMETER_VALUE, "'qa'", "context"):
        reg.create_prompt_version("qa", "{{context}} {{question}}", ["question"])
    with expect_error(ErrorCode.INVALID_PARAMETER_VALUE, "'qa'", "malformed", "line 2"):
        reg.create_prompt_version("qa", "ok\n{{ question ", ["question"])
    with expect_error(ErrorCode.INVALID_PARAMETER_VALUE, "not an identifier"):
        reg.create_prompt_version("qa", "{{question}}", ["question", "two words"])
    with expect_error(ErrorCode.RESOURCE_DOES_NOT_EXIST, "'nope'"):
        reg.create_prompt_version("nope", "{{q}}", ["q"])
    with expect_error(ErrorCode.RESOURCE_ALREADY_EXISTS, "'qa'"):
        reg.create_prompt("qa")
    with expect_error(ErrorCode.RESOURCE_DOES_NOT_EXIST, "qa@v1"):
        reg.set_prompt_alias("qa", "prod", 1)
    assert snapshot(db_path) == before


def test_templates_render_in_a_sandbox(reg: Registry) -> None:
    reg.create_prompt("evil")
    version = reg.create_prompt_version("evil", "{{ x.__class__.__mro__ }}", ["x"])
    with expect_error(ErrorCode.INVALID_PARAMETER_VALUE, "rendering failed"):
        version.render({"x": "s"})


# --------------------------------------------------------------------------- configuration


def test_default_registry_url(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("ASSAY_REGISTRY_URL", raising=False)
    monkeypatch.chdir(tmp_path)
    assert default_registry_url() == f"sqlite:///{tmp_path.resolve() / '.assay' / 'registry.db'}"
    monkeypatch.setenv("ASSAY_REGISTRY_URL", "sqlite:///elsewhere.db")
    assert default_registry_url() == "sqlite:///elsewhere.db"
    # Opening the default creates the directory and the schema.
    monkeypatch.delenv("ASSAY_REGISTRY_URL")
    with Registry.open() as registry:
        registry.create_model("m")
    assert (tmp_path / ".assay" / "registry.db").is_file()


def test_in_memory_store_works(clock: Clock) -> None:
    with Registry.open("sqlite://", clock=clock) as registry:
        registry.create_model("m")
        assert registry.create_version("m", "hf:/x").key == "m@v1"
        assert [e.kind for e in registry.events()] == [
            EventKind.MODEL_CREATED,
            EventKind.VERSION_CREATED,
        ]
