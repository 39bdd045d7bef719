"""The shipped suites: named from ``assay suite``, ``$ASSAY_SUITE`` and the suite resource, and
helm-classic-core's native entries built on the real dataset slices.

``open-llm-leaderboard-v2`` and ``helm-capabilities`` name ``scenario: lm_eval`` entries; here
they are read as files (their keys, their lm-eval task names against lm-eval's own task
YAMLs); that each task builds is the lm_eval scenario's business and its tests'.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest
import yaml

from assay.cli import main
from assay.evaluate.run import select_instances
from assay.evaluate.suite import load_suite
from assay.evaluate.suites import shipped_suites
from assay.scenarios import get_scenario
from resources import SuiteResource

SUITES = Path(__file__).parent.parent / "assay" / "evaluate" / "suites"
DATASETS = Path(__file__).parent / "fixtures" / "datasets"


def _raw(name: str) -> dict:
    return yaml.safe_load((SUITES / f"{name}.yaml").read_text())


def test_shipped_suites_are_the_suite_files() -> None:
    assert shipped_suites() == sorted(p.stem for p in SUITES.glob("*.yaml"))
    assert set(shipped_suites()) >= {
        "default",
        "helm-capabilities",
        "helm-classic-core",
        "open-llm-leaderboard-v2",
    }


def test_a_suite_is_chosen_by_name_in_the_env_and_the_resource(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    by_name = load_suite("helm-classic-core")
    assert by_name.source == "assay/evaluate/suites/helm-classic-core.yaml"
    assert by_name.keys == list(_raw("helm-classic-core")["scenarios"])
    assert SuiteResource(path="helm-classic-core").load().keys == by_name.keys
    monkeypatch.setenv("ASSAY_SUITE", "helm-classic-core")
    assert load_suite().keys == by_name.keys
    assert SuiteResource().load().keys == by_name.keys


def test_a_local_file_wins_over_a_shipped_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    Path("helm-classic-core").write_text(
        "scenarios:\n  only:\n    scenario: arithmetic_qa\n    args: {n_test: 5}\n"
    )
    suite = load_suite("helm-classic-core")
    assert suite.keys == ["only"] and suite.source == "helm-classic-core"


def test_an_unknown_suite_lists_the_shipped_ones() -> None:
    with pytest.raises(ValueError) as caught:
        load_suite("no-such-suite")
    assert str(caught.value) == (
        "suite 'no-such-suite': no such file and not a shipped suite "
        f"({', '.join(shipped_suites())})"
    )


def _lm_eval_tasks_dir() -> Path:
    spec = importlib.util.find_spec("lm_eval")
    if spec is None or spec.origin is None:
        pytest.skip("needs lm-eval (the lmeval extra)")
    return Path(spec.origin).parent / "tasks"


def _lm_eval_names(*folders: str) -> set[str]:
    """The task and group names lm-eval's own YAML files in ``folders`` declare."""
    names: set[str] = set()
    pattern = re.compile(r"^(?:task|group):\s*[\"']?([\w.-]+)[\"']?\s*$", re.MULTILINE)
    for folder in folders:
        for path in (_lm_eval_tasks_dir() / folder).rglob("*.yaml"):
            names.update(pattern.findall(path.read_text(errors="replace")))
    return names


def test_lm_eval_suites_name_lm_eval_tasks() -> None:
    tasks_dir = _lm_eval_tasks_dir()
    leaderboard = _raw("open-llm-leaderboard-v2")["scenarios"]
    assert all(entry["scenario"] == "lm_eval" for entry in leaderboard.values())
    # One entry per task of lm-eval's own `leaderboard` group.
    group = yaml.safe_load((tasks_dir / "leaderboard" / "leaderboard.yaml").read_text())
    tasks = {entry["args"]["task"] for entry in leaderboard.values()}
    assert tasks == set(group["task"])
    capabilities = _raw("helm-capabilities")["scenarios"]
    named = tasks | {e["args"]["task"] for e in capabilities.values() if e["scenario"] == "lm_eval"}
    known = _lm_eval_names("leaderboard", "mmlu_pro", "gpqa", "ifeval")
    assert named <= known, sorted(named - known)


def _cli(*argv: str) -> int:
    return main(["suite", *argv])


def test_cli_lists_shows_and_checks_by_name(capsys: pytest.CaptureFixture[str]) -> None:
    assert _cli("list") == 0
    rows = {line.split()[0]: line.split()[1] for line in capsys.readouterr().out.splitlines()[1:]}
    assert rows["helm-classic-core"] == str(len(_raw("helm-classic-core")["scenarios"]))
    assert rows["default"] == str(len(_raw("default")["scenarios"]))

    assert _cli("show", "helm-classic-core") == 0
    lines = capsys.readouterr().out.splitlines()
    shown = {line.split()[0]: line.split()[1] for line in lines[2:]}
    raw = _raw("helm-classic-core")["scenarios"]
    assert shown == {key: entry["scenario"] for key, entry in raw.items()}

    assert _cli("check", "helm-classic-core") == 0
    assert "valid, 17 entries" in capsys.readouterr().out
    assert _cli("check", "no-such-suite") == 2
    assert "not a shipped suite" in capsys.readouterr().err


def test_cli_check_load_reports_every_entry(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    gsm8k = DATASETS / "openai__gsm8k" / "main"
    Path("suite.yaml").write_text(
        "scenarios:\n"
        "  gsm8k:\n"
        "    scenario: gsm8k\n"
        f"    args: {{data_files: {{test: '{gsm8k / 'test.jsonl'}', "
        f"train: '{gsm8k / 'train.jsonl'}'}}}}\n"
        "  imdb:\n"
        "    scenario: imdb\n"
    )
    monkeypatch.setenv("ASSAY_DATA_ROOTS", str(DATASETS))
    assert _cli("check", "suite.yaml", "--load") == 1
    out = capsys.readouterr().out.splitlines()
    rows = {line.split()[0]: line for line in out[2:]}
    assert rows["gsm8k"].split()[1] == "ok"
    assert "test 51, train 10 (revision data_files:files-" in rows["gsm8k"]
    assert rows["imdb"].split()[1] == "FAILED"
    assert "the Hugging Face Hub is offline" in rows["imdb"] and "data_files" in rows["imdb"]


# helm-classic-core's native entries on the real slices: the suite's own adapters build
# requests from them.
_SLICES = {
    "mmlu-abstract-algebra": DATASETS / "cais__mmlu" / "anatomy" / "test.jsonl",
    "hellaswag": DATASETS / "Rowan__hellaswag" / "default" / "validation.jsonl",
    "natural-qa-closedbook": DATASETS
    / "google-research-datasets__nq_open"
    / "nq_open"
    / "validation.jsonl",
    "truthfulqa": DATASETS / "truthfulqa__truthful_qa" / "multiple_choice" / "validation.jsonl",
    "boolq": DATASETS / "google__boolq" / "default" / "validation.jsonl",
    "imdb": DATASETS / "stanfordnlp__imdb" / "aclImdb" / "test",
    "civil-comments": DATASETS / "google__civil_comments" / "jigsaw-unintended-bias" / "train.csv",
    "cnn-dailymail": DATASETS / "abisee__cnn_dailymail" / "3.0.0" / "card-example.jsonl",
}


@pytest.mark.parametrize("key", sorted(_SLICES))
def test_helm_classic_core_native_entry_builds_requests(key: str) -> None:
    config = load_suite("helm-classic-core")[key]
    path = str(_SLICES[key])
    # The slice is both the eval split and the few-shot pool (ids carry the split).
    args = {**config.args, "data_files": {"test": path, "train": path}}
    data = get_scenario(config.scenario, **args).load()
    evaluated, train = select_instances(config, data.instances)
    requests = config.build_requests(evaluated, train)
    method = config.adapter.method.value
    assert len(requests) == len(evaluated)
    by_id = {i.id: i for i in evaluated}
    for request in requests:
        instance = by_id[request.instance_id]
        if method == "multiple_choice_separate":  # one log-likelihood per choice
            assert len(request.continuations) == len(instance.references)
        assert instance.input in request.prompt
        assert request.max_tokens == config.adapter.max_tokens or method != "generation"
        if method == "multiple_choice_joint":
            # The choices lettered in the prompt, and the few-shot answers before it.
            for letter, reference in zip("ABCD", instance.references, strict=False):
                assert f"{letter}. {reference.text}" in request.prompt
            assert request.prompt.count("\nAnswer:") >= 1 + min(5, len(train) - 1)


def test_a_native_loaders_data_files_stay_under_the_data_roots(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("ASSAY_DATA_ROOTS", raising=False)
    Path("suite.yaml").write_text(
        "scenarios:\n  leak:\n    scenario: gsm8k\n    args: {data_files: {test: /etc/passwd}}\n"
    )
    with pytest.raises(ValueError, match=r"scenarios\.leak\.args\.data_files\.test: local file"):
        load_suite("suite.yaml")


def test_leaderboard_suite_expands_to_lm_evals_leaderboard_tasks() -> None:
    """Needs ``scenario: lm_eval`` (reading the suite expands each lm-eval group into its
    tasks); the expected keys come from lm-eval's own group YAML files."""
    from assay.scenarios import scenario_names

    if "lm_eval" not in scenario_names():
        pytest.skip("needs the lm_eval scenario")
    tasks_dir = _lm_eval_tasks_dir() / "leaderboard"
    groups = {}
    for path in tasks_dir.glob("*/_*.yaml"):
        document = yaml.safe_load(path.read_text())
        if isinstance(document, dict) and "group" in document:
            groups[document["group"]] = document["task"]
    expected = []
    for key, entry in _raw("open-llm-leaderboard-v2")["scenarios"].items():
        task = entry["args"]["task"]
        expected += [f"{key}.{t}" for t in groups[task]] if task in groups else [key]
    assert load_suite("open-llm-leaderboard-v2").keys == expected
