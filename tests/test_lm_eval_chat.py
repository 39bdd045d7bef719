"""lm-eval's chat options on ``scenario: lm_eval`` entries: the prompts are the tokenizer's
template applied to lm-eval's messages, built by hand here from the fixture rows; bad
settings fail naming the entry and field; the template's text enters the revision."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from assay.core.records import Request
from assay.core.security import MODEL_ROOTS_ENV
from assay.evaluate.run import select_instances
from assay.evaluate.suite import ScenarioConfig, parse_suite
from assay.models.bundled import BUNDLED_SOURCE, bundled_gguf_path
from assay.models.transformers_loading import converted_model_dir, import_transformers

pytest.importorskip("lm_eval")

REPO = Path(__file__).resolve().parent.parent
DATA = REPO / "tests" / "fixtures" / "datasets"
SYSTEM = "Answer with the number only."


def _entry(args: dict[str, Any], n: int = 2, base_dir: Path = REPO) -> ScenarioConfig:
    entry = {"scenario": "lm_eval", "args": {"data_dir": str(DATA), **args}, "max_instances": n}
    return parse_suite({"scenarios": {"x": entry}}, "s.yaml", base_dir).scenarios["x"]


def _requests(config: ScenarioConfig) -> tuple[list[Request], str]:
    data = config.build().load()
    instances, train = select_instances(config, data.instances)
    return config.build_requests(instances, train), data.revision


def _rows(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


@pytest.fixture(scope="module")
def model_dir(model_cache_dir: Path) -> Path:
    """The bundled model as the transformers client loads it (its converted directory)."""
    return converted_model_dir(bundled_gguf_path(), model_cache_dir)


@pytest.fixture(scope="module")
def tokenizer(model_dir: Path) -> Any:
    """The tokenizer the model client uses: loaded here on its own, not through assay's
    chat-template module (which reads the GGUF file)."""
    return import_transformers().AutoTokenizer.from_pretrained(model_dir, local_files_only=True)


def _chat(tokenizer: Any, messages: list[dict[str, str]]) -> str:
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def test_multiple_choice_prompt_is_the_template_of_lm_evals_messages(tokenizer: Any) -> None:
    config = _entry(
        {"task": "mmlu_anatomy", "apply_chat_template": True, "chat_template_from": BUNDLED_SOURCE}
    )
    requests, _ = _requests(config)
    rows = _rows(DATA / "cais__mmlu" / "anatomy" / "test.jsonl")[:2]
    assert len(requests) == 2
    for request, row in zip(requests, rows, strict=True):
        # mmlu's YAML: the description is the system turn, the question the user turn.
        letters = "".join(f"\n{x}. {c}" for x, c in zip("ABCD", row["choices"], strict=True))
        messages = [
            {
                "role": "system",
                "content": "The following are multiple choice questions (with answers) "
                "about anatomy.\n\n",
            },
            {"role": "user", "content": f"{row['question'].strip()}{letters}\nAnswer:"},
        ]
        rendered = _chat(tokenizer, messages)
        assert rendered.endswith("<|im_start|>assistant\n")
        # Under a chat template lm-eval drops the target delimiter (" A" becomes "A"); its
        # models score the newline ending the context with each choice (_encode_pair).
        assert request.prompt == rendered[:-1]
        assert request.continuations == ("\nA", "\nB", "\nC", "\nD")
    plain, _ = _requests(_entry({"task": "mmlu_anatomy"}))
    assert plain[0].continuations == (" A", " B", " C", " D")
    assert "<|im_start|>" not in plain[0].prompt


def _fewshot_rows(plain_prompt: str, train: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The training rows whose questions the (parity-tested) plain prompt shows, in order."""
    found = [(plain_prompt.find(f"Question: {r['question']}\n"), r) for r in train]
    return [r for at, r in sorted((x for x in found if x[0] >= 0), key=lambda x: x[0])]


def test_fewshot_as_turns_or_one_turn_with_a_system_instruction(tokenizer: Any) -> None:
    base = {"task": "gsm8k", "num_fewshot": 2}
    chat = {"apply_chat_template": True, "chat_template_from": BUNDLED_SOURCE}
    plain, _ = _requests(_entry(base))
    multi, _ = _requests(_entry({**base, **chat, "system_instruction": SYSTEM}))
    single, _ = _requests(
        _entry({**base, **chat, "system_instruction": SYSTEM, "fewshot_as_multiturn": False})
    )
    test = _rows(DATA / "openai__gsm8k" / "main" / "test.jsonl")
    train = _rows(DATA / "openai__gsm8k" / "main" / "train.jsonl")
    for i, doc in enumerate(test[:2]):
        shots = _fewshot_rows(plain[i].prompt, train)
        assert len(shots) == 2
        turns = [{"role": "system", "content": SYSTEM}]
        for shot in shots:
            turns.append({"role": "user", "content": f"Question: {shot['question']}\nAnswer:"})
            turns.append({"role": "assistant", "content": shot["answer"]})
        turns.append({"role": "user", "content": f"Question: {doc['question']}\nAnswer:"})
        assert multi[i].prompt == _chat(tokenizer, turns)
        one = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": plain[i].prompt}]
        assert single[i].prompt == _chat(tokenizer, one)
        # lm-eval's stop sequences and budget are unchanged by the template.
        assert multi[i].stop == plain[i].stop and multi[i].max_tokens == plain[i].max_tokens


@pytest.mark.parametrize(
    ("args", "field", "says"),
    [
        ({"fewshot_as_multiturn": True}, "fewshot_as_multiturn", "needs apply_chat_template"),
        ({"apply_chat_template": True}, "chat_template_from", "needs the tokenizer"),
        ({"chat_template_from": BUNDLED_SOURCE}, "chat_template_from", "without apply_chat"),
        (
            {"apply_chat_template": True, "chat_template_from": "hf:nowhere/model"},
            "chat_template_from",
            "not a Hugging Face model directory",
        ),
        (
            {"apply_chat_template": True, "chat_template_from": "openai:gpt"},
            "chat_template_from",
            "not a transformers source",
        ),
        ({"apply_chat_template": " "}, "apply_chat_template", "empty template name"),
        ({"apply_chat_template": 3}, "apply_chat_template", ""),
        ({"system_instruction": ""}, "system_instruction", "empty"),
    ],
)
def test_bad_chat_settings_name_the_entry_and_field(args: dict, field: str, says: str) -> None:
    with pytest.raises(ValueError) as caught:
        _entry({"task": "gsm8k", **args})
    message = str(caught.value)
    assert f"s.yaml: scenarios.x.args.{field}" in message, message
    assert says in message


def test_a_template_name_the_tokenizer_lacks_is_refused_when_the_task_loads() -> None:
    config = _entry(
        {"task": "gsm8k", "apply_chat_template": "tool_use", "chat_template_from": BUNDLED_SOURCE}
    )
    with pytest.raises(ValueError) as caught:
        config.build().load()
    message = str(caught.value)
    assert "lm-eval task 'gsm8k': args.apply_chat_template" in message
    assert "'tool_use' names nothing" in message


def _tokenizer_dir(model_dir: Path, folder: Path, template: str | None = None) -> Path:
    """An HF directory with the bundled model's config and tokenizer files only."""
    folder.mkdir()
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        shutil.copy(model_dir / name, folder / name)
    if template is not None:
        (folder / "chat_template.jinja").write_text(template, encoding="utf-8")
    return folder


def test_the_templates_text_enters_the_revision(
    model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(MODEL_ROOTS_ENV, str(tmp_path))
    # gsm8k without shots: no description, so the template's own default system turn shows.
    task = {"task": "gsm8k", "num_fewshot": 0}
    base = {**task, "apply_chat_template": True}
    text = (model_dir / "chat_template.jinja").read_text(encoding="utf-8")
    same = _tokenizer_dir(model_dir, tmp_path / "same")
    other = _tokenizer_dir(model_dir, tmp_path / "other", text.replace("helpful", "careful"))
    _, plain = _requests(_entry(task))
    bundled_requests, bundled = _requests(_entry({**base, "chat_template_from": BUNDLED_SOURCE}))
    copied_requests, copied = _requests(
        _entry({**base, "chat_template_from": f"hf:{same}"}, base_dir=tmp_path)
    )
    changed_requests, changed = _requests(
        _entry({**base, "chat_template_from": f"hf:{other}"}, base_dir=tmp_path)
    )
    assert ";chat=" not in plain and plain == bundled.split(";chat=")[0]
    # The same template read from another place: same prompts, same revision.
    assert copied == bundled and copied_requests == bundled_requests
    # A changed template: other prompts (the default system turn) and another revision.
    assert changed != bundled
    assert "careful AI assistant" in changed_requests[0].prompt
    assert "helpful AI assistant" not in changed_requests[0].prompt
    # The prompts' other chat settings enter it too.
    _, instructed = _requests(
        _entry({**base, "chat_template_from": BUNDLED_SOURCE, "system_instruction": SYSTEM})
    )
    assert instructed not in (bundled, plain)


def test_a_version_served_with_its_chat_template_is_refused_before_any_request(
    tmp_path: Path,
) -> None:
    """lm-eval's chat prompts are already templated: a version served with ``chat_template:
    true`` would wrap them again, so the entry is refused, naming it and the fix; the same
    weights served plain are evaluated (the loopback server counts the calls)."""
    from live_deployment import arithmetic_app

    from assay.evaluate.run import evaluate
    from assay.models.base import ModelSpec, ServingConfig
    from assay.serving import asgi_in_background
    from resources import ModelsResource

    config = _entry(
        {"task": "gsm8k", "apply_chat_template": True, "chat_template_from": BUNDLED_SOURCE}
    )
    data = config.build().load()
    instances, train = select_instances(config, data.instances)
    models = ModelsResource(cache_dir=str(tmp_path / "cache"))
    calls: list[str] = []
    with asgi_in_background(arithmetic_app(calls)) as server:
        source = f"openai:{server.base_url}#right"
        templated = ModelSpec("m@v1", source, ServingConfig(chat_template=True))
        with pytest.raises(ValueError) as caught:
            evaluate(models.client(templated), config, instances, train)
        message = str(caught.value)
        assert "scenario 'x': args.apply_chat_template" in message
        assert "--serving chat_template=false" in message
        assert calls == []
        plain = ModelSpec("m@v2", source, ServingConfig(chat_template=False))
        run = evaluate(models.client(plain), config, instances, train)
    assert len(run.outputs) == 2 and calls
    assert all(o.request.prompt.startswith("<|im_start|>") for o in run.outputs)
