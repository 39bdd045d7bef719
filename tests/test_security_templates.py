"""Hostile prompt templates: refused at registration or failing fast, as a RegistryError.

Each is stored through the registry and rendered as an evaluation would render it. Without
limits, each of these renders for minutes or takes gigabytes; with them each fails at once.
"""

from __future__ import annotations

import pytest

from assay.registry import ErrorCode, Registry, RegistryError


@pytest.fixture
def reg(registry_url: str) -> Registry:
    registry = Registry.open(registry_url)
    registry.create_prompt("p")
    return registry


def _render_fails(reg: Registry, template: str, reason: str) -> None:
    version = reg.create_prompt_version("p", template, [])
    with pytest.raises(RegistryError) as caught:
        version.render({})
    assert caught.value.code is ErrorCode.INVALID_PARAMETER_VALUE
    message = caught.value.message
    assert f"prompt 'p' version {version.version}" in message and version.uri in message
    assert reason in message


@pytest.mark.parametrize("tag", ['{% include "x" %}', '{% import "x" as y %}', '{% extends "x" %}'])
def test_include_import_and_extends_are_refused_at_registration(reg, tag):
    with pytest.raises(RegistryError, match=r"prompt 'p': .* is not allowed"):
        reg.create_prompt_version("p", "Q: " + tag, [])
    assert reg.list_prompt_versions("p") == []


def test_a_huge_range_fails_fast(reg):
    _render_fails(reg, "{% for i in range(10**9) %}x{% endfor %}", "range()")


def test_nested_loops_run_out_of_their_iteration_budget(reg):
    loops = "{% for i in range(10000) %}{% for j in range(10000) %}{% endfor %}{% endfor %}"
    _render_fails(reg, loops, "iterations")


def test_string_repetition_is_capped(reg):
    _render_fails(reg, "{{ 'a' * 10**8 }}", "repetition")


def test_padding_through_a_format_width_is_capped(reg):
    _render_fails(reg, "{{ '{:>999999999}'.format(1) }}", "format width")


def test_output_past_the_limit_stops(reg):
    _render_fails(reg, "{% for i in range(2000) %}{{ 'x' * 1000 }}{% endfor %}", "output over")


def test_runaway_integers_are_capped(reg):
    square = "{% set ns = namespace(x=3) %}{% for i in range(64) %}{% set ns.x = ns.x * ns.x %}"
    _render_fails(reg, square + "{% endfor %}{{ ns.x }}", "bits")


def test_any_render_error_is_a_registry_error_naming_the_template(reg):
    # A type error inside the template, not a limit: still the template's fault, still named.
    _render_fails(reg, "{{ 1 + 'a' }}", "TypeError")


def test_a_render_failure_names_the_prompt_and_its_version(reg):
    reg.create_prompt_version("p", "ok", [])
    reg.set_prompt_alias("p", "production", 1)
    moved = reg.create_prompt_version("p", "{{ 1 + 'a' }}", [])
    reg.set_prompt_alias("p", "production", moved.version)
    held = reg.get_prompt("prompts:/p@production")
    with pytest.raises(RegistryError) as caught:
        held.render({})
    assert caught.value.message.startswith("prompt 'p' version 2 (prompts:/p/2): ")
    assert "rendering failed: TypeError" in caught.value.message


def test_ordinary_templates_still_render(reg):
    version = reg.create_prompt_version(
        "p",
        "{% for w in words.split() %}{{ loop.index }}:{{ w|upper }} {% endfor %}{{ '%s!' % end }}",
        ["words", "end"],
    )
    assert version.render({"words": "a b", "end": "ok"}) == "1:A 2:B ok!"
