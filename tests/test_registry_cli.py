"""``assay registry`` and ``assay prompts`` through their ``main(argv)``."""

from __future__ import annotations

from pathlib import Path

import pytest

from assay.cli import prompts as prompts_cli
from assay.cli import registry as registry_cli
from assay.registry import Prices, Registry, Stage


@pytest.fixture
def url(tmp_path: Path, monkeypatch) -> str:
    monkeypatch.setenv("ASSAY_ACTOR", "tester")
    return f"sqlite:///{tmp_path / 'registry.db'}"


def reg(url: str, *argv: str) -> int:
    return registry_cli.main([*argv, "--registry-url", url])


def test_register_alias_stage_and_show(url: str, capsys) -> None:
    assert reg(url, "create", "smol", "--description", "tiny", "--tag", "team=eval") == 0
    args = ["--serving", "batch_size=8", "--serving", "chat_template=true"]
    args += ["--serving", '{"system_prompt": "Be brief."}', "--price-prompt", "0.25"]
    assert reg(url, "register", "smol", "bundled:smollm2-135m-instruct", *args) == 0
    assert reg(url, "register", "smol", "hf:/models/smol", "--tag", "note=second") == 0
    assert capsys.readouterr().out.splitlines() == ["created model smol", "smol@v1", "smol@v2"]

    assert reg(url, "alias", "set", "smol", "champion", "1") == 0
    assert reg(url, "alias", "set", "smol", "champion", "2") == 0
    assert reg(url, "stage", "smol", "1", "production") == 0
    assert reg(url, "tag", "smol@v1", "reviewed", "yes") == 0
    capsys.readouterr()

    with Registry.open(url) as registry:
        v1 = registry.get_version("smol@v1")
        assert v1.serving["batch_size"] == 8 and v1.serving["chat_template"] is True
        assert v1.serving["system_prompt"] == "Be brief."
        assert v1.prices.prompt_per_1k == 0.25 and v1.stage is Stage.PRODUCTION
        assert v1.tags == {"reviewed": "yes"}
        assert registry.resolve("smol@champion").version == 2

    assert reg(url, "show", "models:/smol@champion") == 0
    shown = capsys.readouterr().out
    assert "smol@v2" in shown and "hf:/models/smol" in shown and "tag note" in shown

    assert reg(url, "list", "smol") == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["VERSION", "SOURCE", "STAGE", "ALIASES", "CREATED"]
    assert [line.split()[0] for line in lines[1:]] == ["smol@v1", "smol@v2"]
    # Aligned: every row's STAGE cell starts where the header's does.
    column = lines[0].index("STAGE")
    assert lines[1][column:].startswith("Production") and lines[2][column:].startswith("None")


def test_prices_command_sets_prices_and_history_shows_the_change(url: str, capsys) -> None:
    assert reg(url, "create", "smol") == 0
    assert reg(url, "register", "smol", "hf:/s", "--price-prompt", "0.5") == 0
    args = ["--price-prompt", "1", "--price-completion", "2.5"]
    assert reg(url, "prices", "smol@v1", *args) == 0
    with Registry.open(url) as registry:
        assert registry.get_version("smol@v1").prices == Prices(1.0, 2.5)
    capsys.readouterr()
    assert reg(url, "history", "--model", "smol") == 0
    assert "prices per 1k prompt/completion: 0.5/- -> 1/2.5" in capsys.readouterr().out
    assert reg(url, "prices", "smol@v1", "--price-prompt", "-1") == 2
    assert "prompt_per_1k" in capsys.readouterr().err


def test_history_is_an_aligned_table_filterable_by_model(url: str, capsys) -> None:
    reg(url, "create", "a")
    reg(url, "create", "b")
    reg(url, "register", "a", "hf:/a")
    reg(url, "alias", "set", "a", "champion", "1")
    reg(url, "alias", "remove", "a", "champion")
    capsys.readouterr()

    assert reg(url, "history", "--model", "a") == 0
    lines = capsys.readouterr().out.splitlines()
    header = lines[0]
    assert header.split() == ["ID", "TIME", "ACTOR", "EVENT", "SUBJECT", "DETAILS"]
    kinds = [line[header.index("EVENT") :].split()[0] for line in lines[1:]]
    assert kinds == ["model_created", "version_created", "alias_set", "alias_removed"]
    assert all(line[header.index("ACTOR") :].startswith("tester") for line in lines[1:])
    assert lines[3].endswith("champion: - -> v1") and lines[4].endswith("champion: v1 -> -")

    assert reg(url, "history", "--after", "2", "--limit", "1") == 0
    rows = capsys.readouterr().out.splitlines()[1:]
    assert len(rows) == 1 and rows[0].split()[0] == "3"


def test_as_of_lookup(url: str, capsys) -> None:
    reg(url, "create", "m")
    reg(url, "register", "m", "hf:/a")
    reg(url, "alias", "set", "m", "champion", "1")
    capsys.readouterr()
    assert reg(url, "as-of", "m", "champion", "2999-01-01") == 0
    assert capsys.readouterr().out.strip() == "m@v1"
    # Before anything happened the alias was unset: a plain answer, exit status 1.
    assert reg(url, "as-of", "m", "champion", "2000-01-01T00:00:00Z") == 1
    assert "was not set" in capsys.readouterr().out
    assert reg(url, "as-of", "m", "champion", "yesterday") == 2
    assert "ERROR INVALID_PARAMETER_VALUE: date 'yesterday'" in capsys.readouterr().err


def test_errors_print_code_and_message_and_exit_2(url: str, capsys) -> None:
    reg(url, "create", "m")
    capsys.readouterr()
    cases = [
        (["alias", "set", "m", "champion", "3"], "ERROR RESOURCE_DOES_NOT_EXIST: ", "'m@v3'"),
        (["create", "m"], "ERROR RESOURCE_ALREADY_EXISTS: ", "'m'"),
        (["create", "a|b"], "ERROR INVALID_PARAMETER_VALUE: ", "'a|b'"),
        (["stage", "ghost", "1", "Staging"], "ERROR RESOURCE_DOES_NOT_EXIST: ", "'ghost'"),
        (
            ["register", "m", "hf:/a", "--serving", "batch_size"],
            "ERROR INVALID_PARAMETER_VALUE",
            "",
        ),
        (["register", "m", "hf:/a", "--serving", "{bad"], "ERROR INVALID_PARAMETER_VALUE", "JSON"),
        (
            ["register", "m", "hf:/a", "--serving", "dtype=1"],
            "ERROR INVALID_PARAMETER_VALUE",
            "dtype",
        ),
    ]
    for argv, prefix, named in cases:
        assert reg(url, *argv) == 2, argv
        captured = capsys.readouterr()
        assert captured.err.startswith(prefix) and named in captured.err, (argv, captured.err)
        assert "Traceback" not in captured.err and captured.out == ""
    with Registry.open(url) as registry:
        assert registry.get_model("m").latest_version is None


def test_registry_url_defaults_to_the_environment(url: str, monkeypatch, capsys) -> None:
    monkeypatch.setenv("ASSAY_REGISTRY_URL", url)
    assert registry_cli.main(["create", "from-env"]) == 0
    with Registry.open(url) as registry:
        assert [m.name for m in registry.list_models()] == ["from-env"]


def test_prompts_commands(url: str, tmp_path: Path, capsys) -> None:
    def run(*argv: str) -> int:
        return prompts_cli.main([*argv, "--registry-url", url])

    template = tmp_path / "qa.txt"
    template.write_text("Context: {{context}}\nQ: {{question}}\n", encoding="utf-8")
    assert run("create", "qa") == 0
    assert run("register", "qa", "--template", "Q: {{question}}", "--var", "question") == 0
    assert run("register", "qa", "--template-file", str(template), "--var", "question") == 2
    assert "placeholder(s) not declared as variables: context" in capsys.readouterr().err
    assert (
        run(
            "register",
            "qa",
            "--template-file",
            str(template),
            "--var",
            "question",
            "--var",
            "context",
        )
        == 0
    )
    assert run("alias", "qa", "production", "1") == 0
    capsys.readouterr()

    assert run("render", "prompts:/qa@production", "--var", "question=Why?") == 0
    assert capsys.readouterr().out == "Q: Why?\n"
    assert run("render", "prompts:/qa/2", "--var", "question=Why?", "--var", "context=Sky") == 0
    assert capsys.readouterr().out == "Context: Sky\nQ: Why?\n"
    assert run("render", "prompts:/qa/2", "--var", "question=Why?") == 2
    assert capsys.readouterr().err.startswith(
        "ERROR INVALID_PARAMETER_VALUE: prompt 'qa' version 2 (prompts:/qa/2): missing"
    )

    assert run("list", "qa") == 0
    rows = capsys.readouterr().out.splitlines()[1:]
    assert [r.split()[0] for r in rows] == ["prompts:/qa/1", "prompts:/qa/2"]
    assert run("show", "qa@production") == 0
    assert "Q: {{question}}" in capsys.readouterr().out
    assert run("show", "prompts:/qa@staging") == 2
    assert (
        "ERROR RESOURCE_DOES_NOT_EXIST: alias 'staging' of prompt 'qa'" in capsys.readouterr().err
    )


def test_add_parser_plugs_into_a_parent_parser(url: str) -> None:
    import argparse

    parser = argparse.ArgumentParser(prog="assay")
    subparsers = parser.add_subparsers(dest="command", required=True)
    registry_cli.add_parser(subparsers)
    prompts_cli.add_parser(subparsers)
    args = parser.parse_args(["registry", "create", "plugged", "--registry-url", url])
    assert args.func(args) == 0
    args = parser.parse_args(["prompts", "create", "p", "--registry-url", url])
    assert args.func(args) == 0
    with Registry.open(url) as registry:
        assert [m.name for m in registry.list_models()] == ["plugged"]
        assert [p.name for p in registry.list_prompts()] == ["p"]


@pytest.mark.parametrize("key", ["gate.qa", "eval.accuracy", "GATE.qa", "Eval.x"])
def test_reserved_tags_are_refused_by_every_command_in_any_case(url: str, capsys, key) -> None:
    reg(url, "create", "m")
    reg(url, "register", "m", "hf:/a")
    capsys.readouterr()
    for argv in (
        ["create", "other", "--tag", f"{key}=passed"],
        ["register", "m", "hf:/b", "--tag", f"{key}=passed"],
        ["tag", "m@v1", key, "failed"],
    ):
        assert reg(url, *argv) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith("ERROR INVALID_PARAMETER_VALUE") and "is reserved" in err, argv
    with Registry.open(url) as registry:
        assert [m.name for m in registry.list_models()] == ["m"]
        assert registry.get_model("m").latest_version == 1
        assert registry.get_version("m@v1").tags == {}


def test_a_gate_tag_in_another_case_is_not_a_verdict(url: str) -> None:
    # Written past the checks (an old row, or a direct database write): the gate reads only
    # its own spelling, so this neither blocks the alias nor stands in for a verdict.
    with Registry.open(url) as registry:
        registry.create_model("m")
        registry.create_version("m", "hf:/a")
        registry.set_tag("m", "GATE.qa", "failed", version=1)
        assert registry.set_alias("m", "champion", 1).aliases == ("champion",)
