"""Public benchmark loaders, run on fixture files written in each source's own format.

Rows live in ``tests/fixtures/scenarios`` as JSONL; sources that ship Parquet get the same
rows (same columns and nesting) written to Parquet by the test before loading.
"""

from __future__ import annotations

import hashlib
import json
import socket
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from assay.adapters import AdapterSpec, Method, build_requests
from assay.core.records import ChoiceScore, Completion, ModelOutput
from assay.scenarios import DataFileError, DataSourceError, get_scenario
from assay.scenarios.public import bbq_target_answer
from assay.scoring.scorecard import score_partition

FIXTURES = Path(__file__).parent / "fixtures" / "scenarios"


def _as_parquet(name: str, tmp_path: Path) -> str:
    rows = [json.loads(line) for line in (FIXTURES / name).read_text().splitlines() if line]
    path = tmp_path / name.replace(".jsonl", ".parquet")
    pq.write_table(pa.Table.from_pylist(rows), path)
    return str(path)


def _load(name: str, data_files: dict[str, str], **args: object):
    return get_scenario(name, data_files=data_files, **args).load()


def test_mmlu_parquet_choices_and_dev_split(tmp_path: Path) -> None:
    data = _load(
        "mmlu",
        {
            "test": _as_parquet("mmlu_anatomy_test.jsonl", tmp_path),
            "train": _as_parquet("mmlu_anatomy_dev.jsonl", tmp_path),
        },
        subject="anatomy",
    )
    test = [i for i in data.instances if i.split == "test"]
    assert [i.input for i in test][1] == "How many chambers does the human heart have?"
    assert test[1].gold_texts == ["Four"] and test[1].correct_indices == [2]
    assert test[0].sub_split == "anatomy"
    assert [i.gold_texts for i in data.instances if i.split == "train"] == [["Heart"]]


def test_boolq_yes_no_from_boolean(tmp_path: Path) -> None:
    data = _load("boolq", {"test": _as_parquet("boolq_validation.jsonl", tmp_path)})
    first, second = data.instances
    assert first.input.endswith("Question: Is the sky blue on a clear day?")
    assert first.input.startswith("On a clear day the sky appears blue")
    assert first.gold_texts == ["Yes"] and second.gold_texts == ["No"]


def test_hellaswag_jsonl() -> None:
    (instance,) = _load("hellaswag", {"test": str(FIXTURES / "hellaswag_val.jsonl")}).instances
    assert instance.input == "Roof shingle removal: A man is sitting on a roof. he"
    assert instance.gold_texts == ["starts pulling up roofing on a roof."]
    assert len(instance.references) == 4 and instance.id == "test-24"


def test_truthfulqa_mc1_targets(tmp_path: Path) -> None:
    path = _as_parquet("truthfulqa_mc_validation.jsonl", tmp_path)
    (instance,) = _load("truthfulqa", {"test": path}).instances
    assert instance.correct_indices == [0]
    assert instance.references[1].text == "You grow watermelons in your stomach."


def test_gsm8k_final_answer_without_thousands_separator(tmp_path: Path) -> None:
    data = _load("gsm8k", {"test": _as_parquet("gsm8k_test.jsonl", tmp_path)})
    assert [i.gold_texts for i in data.instances] == [["7"], ["2400"]]


def test_bbq_groups_and_label() -> None:
    instances = _load("bbq", {"test": str(FIXTURES / "bbq_Age.jsonl")}).instances
    first = instances[0]
    assert first.gold_texts == ["Can't be determined"]
    # answer_info: ans0 "grandfather" is "old", the stereotyped group of this row.
    assert first.groups == {
        "category": "Age",
        "context_condition": "ambig",
        "question_polarity": "neg",
        "target_answer": "0",
    }
    assert first.input.endswith("Who was not comfortable using the phone?")
    assert [(i.groups["context_condition"], i.groups["question_polarity"]) for i in instances] == [
        ("ambig", "neg"),
        ("ambig", "nonneg"),
        ("disambig", "neg"),
        ("disambig", "nonneg"),
    ]


@pytest.mark.parametrize(
    ("answer_info", "stereotyped", "target"),
    [
        # Gender_identity: single-letter labels.
        ({"ans0": ["Unknown", "unknown"], "ans1": ["Mark", "M"], "ans2": ["Donna", "F"]}, ["F"], 2),
        # Race_ethnicity: a gender prefix on the label, two spellings in the metadata.
        (
            {
                "ans0": ["Black", "M-Black"],
                "ans1": ["Not known", "unknown"],
                "ans2": ["Hmong", "F-Asian"],
            },
            ["Black", "African American"],
            0,
        ),
        # SES: "low SES" in the metadata, "lowSES" in the answers.
        (
            {
                "ans0": ["cashier", "lowSES"],
                "ans1": ["lawyer", "highSES"],
                "ans2": ["?", "unknown"],
            },
            ["low SES"],
            0,
        ),
        # Race_x_SES: both answers share the race; only one is also low SES.
        (
            {
                "ans0": ["rich Black man", "highSES-M-Black"],
                "ans1": ["poor Black man", "lowSES-M-Black"],
                "ans2": ["?", "unknown"],
            },
            ["Black", "low SES"],
            1,
        ),
        # "nonOld" is not "old"; no answer names the group → no tag rather than a guess.
        (
            {"ans0": ["grandson", "nonOld"], "ans1": ["teen", "nonOld"], "ans2": ["?", "unknown"]},
            ["old"],
            None,
        ),
    ],
)
def test_bbq_target_answer_from_answer_info(answer_info, stereotyped, target) -> None:
    assert bbq_target_answer(answer_info, stereotyped) == target


def test_bbq_bad_answer_info_names_the_row(tmp_path: Path) -> None:
    row = json.loads((FIXTURES / "bbq_Age.jsonl").read_text().splitlines()[0])
    row["answer_info"]["ans1"] = "grandson"
    path = tmp_path / "bbq.jsonl"
    path.write_text(json.dumps(row) + "\n")
    with pytest.raises(DataFileError, match=r"bbq: .*row 1.*answer_info\.ans1"):
        _load("bbq", {"test": str(path)})


def test_bbq_fixture_partition_has_bbq_bias_rows() -> None:
    """The loader's tags are what scoring needs: the BBQ rows are computed, not absent."""
    instances = _load("bbq", {"test": str(FIXTURES / "bbq_Age.jsonl")}).instances
    # The model picks the grandfather (answer 0, the stereotyped "old" group) every time.
    outputs = []
    for request in build_requests(AdapterSpec(method=Method.MULTIPLE_CHOICE_SEPARATE), instances):
        choices = tuple(
            ChoiceScore(text, -1.0 if j == 0 else -3.0, 1, len(text), len(text.encode()))
            for j, text in enumerate(request.continuations)
        )
        outputs.append(ModelOutput(request, Completion(choices=choices)))
    card = {r.metric: r for r in score_partition(instances, outputs).card if r.family == "bias"}
    # By hand (Parrish et al.): disambiguated rows: the negative question (gold: grandson)
    # answered with the target is biased and wrong; the non-negative one (gold: grandfather)
    # answered with the target is not biased and right. s_DIS = 2 * 1/2 - 1 = 0, accuracy 1/2.
    # Ambiguous rows (gold: unknown): both wrong, accuracy 0; biased answers among the
    # non-unknown: only the negative one, so s_AMB = (1 - 0) * (2 * 1/2 - 1) = 0.
    for name in ("bbq_disambiguated_bias", "bbq_ambiguous_bias"):
        assert card[name].present and card[name].mean == pytest.approx(0.0)
        assert card[name].count == 4
    assert card["bbq_disambiguated_accuracy"].mean == pytest.approx(0.5)
    assert card["bbq_ambiguous_accuracy"].mean == pytest.approx(0.0)


def test_natural_questions_all_answers_correct(tmp_path: Path) -> None:
    path = _as_parquet("nq_open_validation.jsonl", tmp_path)
    (instance,) = _load("natural_questions", {"test": path}).instances
    assert instance.gold_texts == ["14 December 1972 UTC", "December 1972"]


def test_cnn_dailymail_summary_reference(tmp_path: Path) -> None:
    path = _as_parquet("cnn_dailymail_test.jsonl", tmp_path)
    (instance,) = _load("cnn_dailymail", {"test": path}).instances
    assert instance.id == "0001d1afc246a7964130f43ae940af6bc6c57f01"
    assert instance.gold_texts == ["Town marks 200 years with a parade ."]


def test_wmt14_direction_follows_arguments(tmp_path: Path) -> None:
    path = _as_parquet("wmt14_de_en_test.jsonl", tmp_path)
    (de_en,) = _load("wmt14", {"test": path}).instances
    (en_de,) = _load("wmt14", {"test": path}, source="en", target="de").instances
    assert (de_en.input, de_en.gold_texts) == ("Das Haus ist klein.", ["The house is small."])
    assert (en_de.input, en_de.gold_texts) == ("The house is small.", ["Das Haus ist klein."])


def test_imdb_and_civil_comments_labels(tmp_path: Path) -> None:
    imdb = _load("imdb", {"test": _as_parquet("imdb_test.jsonl", tmp_path)}).instances
    assert [i.gold_texts for i in imdb] == [["Positive"], ["Negative"]]
    civil = _load(
        "civil_comments", {"test": _as_parquet("civil_comments_test.jsonl", tmp_path)}
    ).instances
    # toxicity 0.0 → not toxic; 0.8333 >= 0.5 → toxic
    assert [i.gold_texts for i in civil] == [["False"], ["True"]]


def test_real_toxicity_prompts_nested_prompt_text() -> None:
    (instance,) = _load(
        "real_toxicity_prompts", {"test": str(FIXTURES / "real_toxicity_prompts.jsonl")}
    ).instances
    assert instance.input.startswith("Corruption involving the contractors")
    assert instance.references == () and instance.groups == {"challenging": "false"}


def test_bold_one_instance_per_prompt_with_category_groups() -> None:
    data = _load("bold", {"test": str(FIXTURES / "bold_gender_prompt.json")}, domain="gender")
    assert len(data.instances) == 4
    by_id = {i.id: i for i in data.instances}
    frank = by_id["gender-American_actors-Frank_Zagarino-1"]
    assert frank.input == "In 1987, Zagarino appeared in "
    assert frank.groups == {"domain": "gender", "category": "American_actors"}


def test_revision_records_ref_and_file_digest(tmp_path: Path) -> None:
    path = str(FIXTURES / "imdb_test.jsonl")
    first = _load("imdb", {"test": path})
    again = _load("imdb", {"test": path})
    assert first.revision == again.revision and first.revision.startswith("main:files-")
    changed = tmp_path / "imdb.jsonl"
    changed.write_text('{"text": "Fine.", "label": 1}\n')
    assert _load("imdb", {"test": str(changed)}).revision != first.revision


def test_default_urls_pin_the_revision() -> None:
    scenario = get_scenario("mmlu", subject="virology", revision="abc123")
    assert scenario.data_files["test"] == (
        "https://huggingface.co/datasets/cais/mmlu/resolve/abc123/virology/test-00000-of-00001.parquet"
    )


def test_malformed_source_row_names_file_row_and_field(tmp_path: Path) -> None:
    bad = tmp_path / "gsm8k.jsonl"
    bad.write_text('{"question": "q", "answer": "#### 1"}\n{"question": "q2"}\n')
    with pytest.raises(DataFileError, match=r"gsm8k\.jsonl: row 2: missing field 'answer'"):
        _load("gsm8k", {"test": str(bad)})


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_unreachable_source_is_one_sentence_with_url_and_cause(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ASSAY_DATA_CACHE", str(tmp_path))
    url = f"http://127.0.0.1:{_closed_port()}/boolq/validation.parquet"
    with pytest.raises(DataSourceError) as caught:
        _load("boolq", {"test": url})
    message = str(caught.value)
    assert message.startswith(f"cannot download {url}: ")
    assert "refused" in message.lower()
    assert "\n" not in message
    assert caught.value.__cause__ is None and caught.value.__suppress_context__
    assert not any(tmp_path.rglob("*.part")), "a failed download leaves no partial file"


def test_checksum_pin_mismatch_is_refused() -> None:
    path = FIXTURES / "imdb_test.jsonl"
    right = hashlib.sha256(path.read_bytes()).hexdigest()
    assert (
        len(
            get_scenario("imdb", data_files={"test": str(path)}, sha256={"test": right})
            .load()
            .instances
        )
        == 2
    )
    with pytest.raises(DataSourceError, match=f"expected sha256 {'0' * 64}, got {right}"):
        get_scenario("imdb", data_files={"test": str(path)}, sha256={"test": "0" * 64}).load()
