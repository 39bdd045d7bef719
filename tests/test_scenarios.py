"""Scenario plug-in API, the shipped and generated scenarios, and custom-file scenarios."""

from __future__ import annotations

import csv
import json
import sys
import textwrap
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from assay.core.records import Instance
from assay.scenarios import (
    ColumnMapping,
    DataFileError,
    Scenario,
    ScenarioData,
    get_scenario,
    iter_instances,
    scenario_names,
)
from assay.scenarios import base as scenario_base
from assay.scoring.metrics.bias import gender_words, professions, race_names
from assay.scoring.metrics.tokenize import word_tokenize

# -- plug-in API ------------------------------------------------------------------------------


def test_third_party_scenario_registers_through_an_installed_entry_point(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A real (tiny) installed distribution: a module plus a dist-info declaring the entry point.
    (tmp_path / "acme_quiz.py").write_text(
        textwrap.dedent(
            """
            from assay.core.records import Instance, Reference
            from assay.scenarios import Scenario, ScenarioData

            class AcmeQuiz(Scenario):
                def __init__(self, n=2):
                    self.n = n

                def load(self):
                    items = [Instance(f"q{i}", f"{i}+{i}?", (Reference(str(2 * i), True),))
                             for i in range(self.n)]
                    return ScenarioData(items, revision="acme-1")
            """
        )
    )
    dist = tmp_path / "acme_quiz-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-quiz\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[assay.scenarios]\nacme_quiz = acme_quiz:AcmeQuiz\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(scenario_base, "_SCENARIOS", dict(scenario_base._SCENARIOS))
    monkeypatch.delitem(sys.modules, "acme_quiz", raising=False)

    assert "acme_quiz" in scenario_names()
    data = get_scenario("acme_quiz", n=3).load()
    assert [i.gold_texts for i in data.instances] == [["0"], ["2"], ["4"]]
    assert data.revision == "acme-1"


def test_unknown_scenario_and_bad_arguments_are_clear() -> None:
    with pytest.raises(KeyError, match=r"unknown scenario 'nope'.*facts_mc"):
        get_scenario("nope")
    with pytest.raises(ValueError, match="scenario 'facts_mc': bad arguments"):
        get_scenario("facts_mc", colour="red")


def test_digest_tracks_instance_content() -> None:
    a = ScenarioData([Instance("x", "in", ())], revision="r")
    b = ScenarioData([Instance("x", "in", ())], revision="other")
    c = ScenarioData([Instance("x", "in", (), groups={"g": "1"})], revision="r")
    assert a.digest == b.digest  # the digest is of the data, not its label
    assert a.digest != c.digest


# -- shipped and generated scenarios ------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "arithmetic_qa",
        "facts_mc",
        "pattern_induction",
        "pronoun_resolution",
        "tiny_documents",
        "profession_stories",
    ],
)
def test_shipped_scenarios_are_deterministic_with_unique_ids(name: str) -> None:
    first, second = get_scenario(name).load(), get_scenario(name).load()
    assert first.digest == second.digest and first.revision == second.revision
    ids = [i.id for i in first.instances]
    assert len(ids) == len(set(ids))


def test_pattern_induction_answer_continues_the_period() -> None:
    for instance in get_scenario("pattern_induction", n_test=20).load().instances:
        words = instance.input.split()
        period = int(instance.sub_split.removeprefix("period-"))
        # The next word of a repeating sequence is the word one period back.
        assert instance.gold_texts == [words[len(words) - period]]
        assert all(word == words[i % period] for i, word in enumerate(words))
        assert len(set(words[:period])) == period


def test_pronoun_resolution_groups_are_matched_pairs() -> None:
    instances = get_scenario("pronoun_resolution").load().instances
    assert len(instances) <= 40
    assert Counter(i.groups["gender"] for i in instances) == {"female": 16, "male": 16}
    for instance in instances:
        (gold,) = instance.gold_texts
        assert instance.input.startswith(gold)  # the subject is the referent
        assert len(instance.references) == 2
    positions = Counter(i.correct_indices[0] for i in instances)
    assert positions[0] == positions[1]


def test_profession_stories_name_professions_and_no_demographic_word() -> None:
    """The demographic words the bias figures count must come from the model: no prompt holds
    one, and each prompt's profession is a target word the association figures read back."""
    instances = get_scenario("profession_stories", n_professions=8).load().instances
    assert len(instances) == 8 * 3
    assert Counter(i.sub_split for i in instances) == {f"template-{t}": 8 for t in range(3)}
    demographic = {w for words in gender_words().values() for w in words}
    demographic |= {w for words in race_names().values() for w in words}
    for instance in instances:
        assert instance.references == () and instance.split == "test"
        profession = instance.id.split("-", 1)[1]
        words = set(word_tokenize(instance.input.lower()))
        assert profession in words and profession in professions()
        assert not words & demographic, instance.input
    with pytest.raises(ValueError, match="n_professions"):
        get_scenario("profession_stories", n_professions=0)


# -- custom files -------------------------------------------------------------------------------

ROWS = [
    {"qid": "a", "q": "2+2?", "opts": ["3", "4"], "label": 1, "dialect": "us", "part": "test"},
    {"qid": "b", "q": "3+3?", "opts": ["6", "7"], "label": 0, "dialect": "uk", "part": "train"},
]
MAPPING = {
    "id": "qid",
    "input": "q",
    "choices": "opts",
    "answer_index": "label",
    "groups": ["dialect"],
    "split": "part",
}


def _write(tmp_path: Path, fmt: str, rows: list[dict]) -> Path:
    path = tmp_path / f"data.{fmt}"
    if fmt == "jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    elif fmt == "parquet":
        pq.write_table(pa.Table.from_pylist(rows), path)
    else:
        with path.open("w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            for row in rows:
                writer.writerow({**row, "opts": json.dumps(row["opts"])})
    return path


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "parquet"])
def test_custom_file_maps_columns_in_every_format(tmp_path: Path, fmt: str) -> None:
    path = _write(tmp_path, fmt, ROWS)
    data = get_scenario("custom_file", path=str(path), columns=MAPPING).load()
    a, b = data.instances
    assert (a.id, a.input, a.split, a.groups) == ("a", "2+2?", "test", {"dialect": "us"})
    assert a.gold_texts == ["4"] and b.gold_texts == ["6"] and b.split == "train"
    assert data.revision.startswith("sha256:")


def test_custom_file_answer_text_and_generation_references(tmp_path: Path) -> None:
    path = tmp_path / "gen.jsonl"
    path.write_text(
        json.dumps({"q": "Capital of France?", "a": ["Paris", "paris"]})
        + "\n"
        + json.dumps({"q": "Pick", "c": "x|y|z", "a": "y"})
        + "\n"
    )
    generation = get_scenario(
        "custom_file", path=str(path), columns={"input": "q", "answer_text": "a"}
    )
    first, _ = generation.load().instances
    assert first.gold_texts == ["Paris", "paris"] and first.id == "row-0000001"
    csv_path = tmp_path / "pick.csv"
    csv_path.write_text("q,c,a\nPick,x|y|z,y\n")
    (pick,) = (
        get_scenario(
            "custom_file",
            path=str(csv_path),
            columns={"input": "q", "choices": "c", "answer_text": "a"},
        )
        .load()
        .instances
    )
    assert [r.text for r in pick.references] == ["x", "y", "z"] and pick.correct_indices == [1]


@pytest.mark.parametrize(
    ("bad_row", "field", "problem"),
    [
        ({"qid": "c", "opts": ["1", "2"], "label": 0}, "q", "missing"),
        ({"qid": "c", "q": ["not", "text"], "opts": ["1"], "label": 0}, "q", "expected text"),
        ({"qid": "c", "q": "?", "opts": ["1", "2"], "label": 2}, "label", "out of range"),
        ({"qid": "c", "q": "?", "opts": ["1", "2"], "label": "first"}, "label", "integer"),
        ({"qid": "c", "q": "?", "opts": [], "label": 0}, "opts", "no choices"),
    ],
)
def test_malformed_row_names_file_row_and_field(
    tmp_path: Path, bad_row: dict, field: str, problem: str
) -> None:
    mapping = {k: v for k, v in MAPPING.items() if k not in ("groups", "split")}
    path = _write(tmp_path, "jsonl", [ROWS[0], ROWS[1], bad_row])
    with pytest.raises(DataFileError) as caught:
        get_scenario("custom_file", path=str(path), columns=mapping).load()
    message = str(caught.value)
    assert message.startswith(f"{path}: row 3: field '{field}': ")
    assert problem in message


def test_non_utf8_rows_are_refused_with_row_number(tmp_path: Path) -> None:
    jsonl = tmp_path / "bad.jsonl"
    jsonl.write_bytes(b'{"input": "ok"}\n{"input": "caf\xe9"}\n')
    with pytest.raises(DataFileError, match=r"bad\.jsonl: row 2: not valid UTF-8"):
        get_scenario("custom_file", path=str(jsonl)).load()
    bad_csv = tmp_path / "bad.csv"
    bad_csv.write_bytes(b"input\nfine\ncaf\xe9\n")
    with pytest.raises(DataFileError, match=r"bad\.csv: row 2: not valid UTF-8"):
        get_scenario("custom_file", path=str(bad_csv)).load()


def test_bad_mapping_and_duplicate_ids_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown key"):
        ColumnMapping.from_dict({"input": "q", "answer": "a"})
    with pytest.raises(ValueError, match="answer_index needs a choices column"):
        ColumnMapping.from_dict({"answer_index": "a"})
    path = _write(tmp_path, "jsonl", [ROWS[0], ROWS[0]])
    with pytest.raises(DataFileError, match="duplicate id 'a'"):
        get_scenario("custom_file", path=str(path), columns=MAPPING).load()


def test_custom_file_reads_any_fsspec_url() -> None:
    import fsspec

    with fsspec.open("memory://suite-data/quiz.jsonl", "w") as f:
        f.write(json.dumps({"input": "hello"}) + "\n")
    (instance,) = (
        get_scenario("custom_file", path="memory://suite-data/quiz.jsonl").load().instances
    )
    assert instance.input == "hello" and instance.references == ()


def test_instances_stream_one_at_a_time(tmp_path: Path) -> None:
    # The iterator yields the first instance before the (bad) last row is read, which shows
    # rows are streamed rather than read whole; load() still fails as a whole.
    path = _write(tmp_path, "jsonl", [ROWS[0], {"oops": 1}])
    mapping = ColumnMapping.from_dict({"input": "q"})
    stream = iter_instances(str(path), mapping)
    assert next(stream).input == "2+2?"
    with pytest.raises(DataFileError, match="row 2"):
        next(stream)
    assert issubclass(type(get_scenario("custom_file", path=str(path))), Scenario)
