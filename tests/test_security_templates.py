"""Hostile prompt templates: refused at registration or failing fast, as a RegistryError.

Each is stored through the registry and rendered as an evaluation would render it. Without
limits, each of these renders for minutes or takes gigabytes; with them each fails at once,
with an error naming the prompt, its version and the limit.
"""

from __future__ import annotations

import time

import jinja2
import pytest
from jinja2.sandbox import ImmutableSandboxedEnvironment

from assay.registry import ErrorCode, Registry, RegistryError

# A bomb that escaped would run for minutes: this only guards against one that escaped.
FAST_SECONDS = 10.0

BIG = "{% set a = 'x' * 999999 %}"
HUGE_INT = "{% set ns = namespace(x=7) %}{% for i in range(15) %}{% set ns.x = ns.x * ns.x %}"
DAG = "{% set ns = namespace(x=[1], y=[1]) %}{% for i in range(60) %}"
LOOP = "{% for i in range(10000) %}{% for j in range(10) %}"  # 100,000 times
END = "{% endfor %}{% endfor %}"


@pytest.fixture
def reg(registry_url: str) -> Registry:
    registry = Registry.open(registry_url)
    registry.create_prompt("p")
    return registry


def _render_fails(reg: Registry, template: str, reason: str) -> RegistryError:
    version = reg.create_prompt_version("p", template, [])
    started = time.monotonic()
    with pytest.raises(RegistryError) as caught:
        version.render({})
    assert time.monotonic() - started < FAST_SECONDS
    assert caught.value.code is ErrorCode.INVALID_PARAMETER_VALUE
    message = caught.value.message
    assert f"prompt 'p' version {version.version}" in message and version.uri in message
    # "a|b": either limit may stop it first (the CPU-time backstop under a loaded machine).
    assert any(part in message for part in reason.split("|")), message
    return caught.value


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


# Each: a template the registry accepts, whose render would run for minutes or take
# gigabytes, and the words of the error that now stops it.
BOMBS = {
    # ~ joins its operands before anything measures them
    "tilde": (BIG + LOOP + "{% set b = a ~ a %}" + END, "'~'"),
    # join: n - 1 copies of the separator
    "join-separator": ("{{ range(10000)|map('string')|join('x' * 900000) }}", "filter 'join'"),
    "str-join": ("{{ ('x' * 900000).join(range(10000)|map('string')) }}", "str.join()"),
    # sum of lists copies the growing total each time
    "sum-of-lists": (
        "{{ ((range(10000)|list) * 10)|batch(1)|sum(start=[])|length }}",
        "numbers only",
    ),
    # a cheap repetition of a big list, then sorting or printing it
    "sort-a-repeated-list": ("{{ ((range(10000)|list) * 100)|sort|length }}", "repetition"),
    "print-a-shared-list": (
        "{% set a = 'x' * 100000 %}{{ ([a] * 999999)|string }}",
        "repetition",
    ),
    # two structurally equal DAGs of 2**60 leaves compare leaf by leaf
    "compare-shared-structure": (
        DAG + "{% set ns.x = [ns.x, ns.x] %}{% set ns.y = [ns.y, ns.y] %}{% endfor %}"
        "{{ ns.x == ns.y }}",
        "list literal",
    ),
    "nested-ten-thousand-deep": (
        "{% set ns = namespace(x=1) %}{% for i in range(10000) %}{% set ns.x = [ns.x] %}"
        "{% endfor %}{{ ns.x }}",
        "nested more than 100 levels",
    ),
    # lists grown one item at a time copy themselves each time
    "grow-a-list-in-a-loop": (
        "{% set ns = namespace(x=[]) %}" + LOOP + "{% set ns.x = ns.x + [j] %}" + END,
        "built more than",
    ),
    # mutating methods, reached where registration cannot see them
    "list-append-by-subscript": ("{% set l = [] %}{{ l['append'](l) }}", "SecurityError"),
    "int-to-bytes": ("{{ (1).to_bytes(10**9, 'big') }}", "not allowed"),
    "dict-fromkeys": (
        "{{ dict.fromkeys(range(10000), 'x' * 100000)|string }}",
        "not allowed",
    ),
    # text captured in blocks, macros and filter blocks, never output
    "filter-block": (
        BIG + "{% filter upper %}{% for i in range(10000) %}{{ a }}{% endfor %}{% endfilter %}",
        "built more than",
    ),
    "set-block": (
        BIG + "{% set b %}{% for i in range(10000) %}{{ a }}{% endfor %}{% endset %}{{ b|length }}",
        "built more than",
    ),
    "macro-text": (
        "{% macro m() %}{% for i in range(10000) %}" + "y" * 100000 + "{% endfor %}{% endmacro %}"
        "{{ m()|length }}",
        "built more than",
    ),
    # recursion
    "exponential-macro": (
        "{% macro m(n) %}{% if n %}{{ m(n - 1) }}{{ m(n - 1) }}{% endif %}{% endmacro %}"
        "{{ m(30) }}",
        "operations|CPU time",
    ),
    "endless-macro": ("{% macro m(n) %}{{ m(n + 1) }}{% endmacro %}{{ m(0) }}", "nested more"),
    "recursive-loop": (
        "{% for x in range(10) recursive %}{{ loop(range(10)) }}{% endfor %}",
        "nested more",
    ),
    # string methods and formatting
    "expandtabs": ("{{ ('\\t' * 100000).expandtabs(1000000) }}", "str.expandtabs()"),
    "nested-format-width": ("{{ '{:{}}'.format('x', 10**9) }}", "format width"),
    "format-fields": ("{{ ('{0}' * 300000).format('x' * 100000) }}", "built more than"),
    "percent-mapping": ("{{ ('%(k)s' * 100000) % {'k': 'x' * 100000} }}", "'%' formatting"),
    "format-filter": ("{{ ('%999999s' * 100)|format(*range(100)) }}", "'%' formatting"),
    # filters whose output grows with an argument
    "indent": ("{{ ('x\\n' * 100000)|indent(999999) }}", "filter 'indent'"),
    "replace-filter": ("{{ ('a' * 100000)|replace('a', 'b' * 100000) }}", "filter 'replace'"),
    "tojson-indent": ("{{ (range(10000)|list)|tojson(indent=999999) }}", "filter 'tojson'"),
    "batch": ("{{ [1]|batch(10 ** 9, 0)|list|length }}", "filter 'batch'"),
    "slice": ("{{ [1]|slice(10 ** 8)|list|length }}", "filter 'slice'"),
    "round": ("{{ 5|round(-1000000000) }}", "filter 'round'"),
    "int-from-hex": (
        "{% set x = ('f' * 999999)|int(base=16) %}{% set h = ('f' * 499999)|int(base=16) %}"
        "{% for i in range(100) %}{% set r = x % h %}{% endfor %}",
        "bits",
    ),
    # work in a loop: copying, searching, arithmetic on large integers
    "slice-copies": (
        BIG + LOOP + "{% set b = a[1:] %}" + END,
        "built more than",
    ),
    "search-in-a-loop": (
        BIG + LOOP + "{% if 'y' in a %}{% endif %}" + END,
        "operations|CPU time",
    ),
    "big-integer-arithmetic": (
        HUGE_INT + "{% endfor %}{% for i in range(10000) %}{% for j in range(9) %}"
        "{{ (ns.x * 3) % 7 }}" + END,
        "CPU time",
    ),
}


@pytest.mark.parametrize("template, reason", BOMBS.values(), ids=BOMBS.keys())
def test_bombs_fail_fast_naming_prompt_version_and_limit(reg, template, reason):
    _render_fails(reg, template, reason)


REFUSED = {
    "lipsum": ("{{ lipsum(10**6) }}", "'lipsum' at line 1 is not available"),
    "cycler": ("{% set c = cycler(1, 2) %}{{ c.next() }}", "'cycler' at line 1"),
    "joiner": ("{% set j = joiner() %}{{ j() }}", "'joiner' at line 1"),
    "list-append": (
        "{% set l = [] %}{% for i in range(10000) %}\n{% set _ = l.append(l) %}{% endfor %}",
        "'.append' at line 2 is not allowed",
    ),
    "dict-update": ("{% set d = {} %}{{ d.update(a=1) }}", "'.update' at line 1"),
    "translate": ("{{ 'x'.translate({120: 'y' * 100000}) }}", "'.translate' at line 1"),
    "wordwrap": ("{{ ('x' * 100000)|wordwrap(1) }}", "filter 'wordwrap' at line 1"),
    "striptags": ("{{ ('<!---->' * 140000)|striptags }}", "filter 'striptags'"),
    "pprint": ("{{ range(10)|pprint }}", "filter 'pprint'"),
    "urlize": ("{{ 'x'|urlize }}", "filter 'urlize'"),
    "unknown-filter": ("{{ 'x'|nosuch }}", "filter 'nosuch' at line 1 is not available"),
    "unknown-test": ("{{ 'x' is nosuch }}", "test 'nosuch' at line 1"),
    "too-many-nodes": ("{{ 1 }}" * 10001, "syntax nodes"),
    "too-deep": ("{{ " + "(" * 500 + "1" + ")" * 500 + " }}", "nested too deeply"),
}


@pytest.mark.parametrize("template, reason", REFUSED.values(), ids=REFUSED.keys())
def test_what_a_template_cannot_use_is_refused_at_registration(reg, template, reason):
    with pytest.raises(RegistryError) as caught:
        reg.create_prompt_version("p", template, [])
    assert caught.value.code is ErrorCode.INVALID_PARAMETER_VALUE
    assert caught.value.message.startswith("prompt 'p': ") and reason in caught.value.message
    assert reg.list_prompt_versions("p") == []


def test_a_declared_variable_may_be_called_lipsum(reg):
    version = reg.create_prompt_version("p", "{{ lipsum }}", ["lipsum"])
    assert version.render({"lipsum": "text"}) == "text"


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


VALUES = {
    "q": "Why is the sky blue?",
    "doc": "Line one.\nLine two\twith tab.\n",
    "items": ["b", "a", "c"],
    "rows": [{"name": "x", "score": 2}, {"name": "y", "score": 1}],
    "n": 7,
    "d": {"k": "v", "a": 1},
}
ORDINARY = [
    "{% for w in q.split() %}{{ loop.index }}:{{ w|upper }}{% if not loop.last %}, {% endif %}"
    "{% endfor %}",
    "{{ items|sort|join(', ') }} {{ items|length }} {{ items|first }} {{ items|reverse|list }}",
    "{% for r in rows|sort(attribute='score') %}{{ r.name }}={{ r['score'] }};{% endfor %}",
    "{{ rows|map(attribute='name')|join('|') }} {{ rows|selectattr('score', 'gt', 1)|list }}",
    "{{ doc|indent(2) }}|{{ doc|trim }}|{{ doc|wordcount }}|{{ doc|truncate(9) }}"
    "|{{ doc|replace('Line', 'L') }}",
    "{{ '%s has %d items' % (q, n) }} {{ '{0} and {1:>4}'.format(q, n) }} {{ '%(k)s' % d }}",
    "{{ q ~ ' / ' ~ n }} {{ (q ~ '!')[:5] }} {{ q[::-1] }} {{ q[3] }}",
    "{% set ns = namespace(total=0, parts=[]) %}{% for i in range(5) %}"
    "{% set ns.total = ns.total + i %}{% set ns.parts = ns.parts + [i * 2] %}{% endfor %}"
    "{{ ns.total }} {{ ns.parts }}",
    "{% macro show(x, sep='-') %}[{{ x }}{{ sep }}]{% endmacro %}"
    "{% macro wrap() %}<{{ caller() }}>{% endmacro %}"
    "{{ show(q) }}{% call wrap() %}in{{ show(n, sep='+') }}{% endcall %}",
    "{% set block %}Hello {{ q|lower }}{% endset %}{{ block|title }} "
    "{% filter upper %}shout {{ n }}{% endfilter %}",
    "{{ d|dictsort }} {{ d.items()|list }} {{ d.get('k') }} {{ d|tojson }} "
    "{{ rows|tojson(indent=2) }}",
    "{{ rows|groupby('score')|list }} {{ items|unique|list }} {{ [3, 1, 2]|max }} "
    "{{ [3, 1, 2]|sum }} {{ [1, 2, 3]|batch(2)|list }} {{ [1, 2, 3, 4]|slice(2)|list }}",
    "{{ n is odd }} {{ n is divisibleby 7 }} {{ 'ab' is lower }} {{ 'a' in q }} "
    "{{ n > 3 and n < 10 }} {{ 1 < n < 10 }} {{ items is sequence }}",
    "{{ n * 3 }} {{ n / 2 }} {{ n // 2 }} {{ n % 3 }} {{ n ** 2 }} {{ -n }} {{ 2.5|round }} "
    "{{ '42'|int + 1 }} {{ '3.5'|float }} {{ -3|abs }}",
    "{{ q|center(30) }}|{{ q.zfill(25) }}|{{ 'a\tb'.expandtabs(4) }}"
    "|{{ q.replace('sky', 'sea') }}|{{ '-'.join(items) }}",
    "{% for a, b in d.items() %}{{ a }}:{{ b }} {% endfor %}{% for x in [] %}x{% else %}none"
    "{% endfor %}",
    "{{ dict(a=1, b=2)|dictsort }} {{ (1, 2) + (3,) }} {{ [1] * 3 }} {{ 'ab' * 3 }} "
    "{{ {'a': [1, 2]} }}",
    "{% for x in [[1, [2]], [3]] recursive %}({{ x if x is number else loop(x) }}){% endfor %} "
    "{% for i in range(3) %}{{ loop.cycle('a', 'b') }}{{ loop.changed(i) }}{% endfor %}",
    "{% autoescape true %}{{ '<b>' ~ q }}{{ q|safe ~ '<u>' }}{% endautoescape %} {{ '<x>'|e }}"
    " {{ q|urlencode }} {{ d|urlencode }}",
    "{{ doc.splitlines() }} {{ doc|capitalize }} {{ q.title() }} {{ q.startswith('Why') }} "
    "{{ q.count('s') }} {{ q.find('sky') }} {{ q|string|length }}",
    "{{ items|select('equalto', 'a')|list }} {{ items|reject('in', ['a'])|list }} "
    "{{ items|map('upper')|list }} {{ none|default('dflt') }} {{ 1048576|filesizeformat }}",
    "{{ '%-10s|%5.2f|%x|%c|%%' % ('ab', 3.14159, 255, 65) }} {{ '{:,}'.format(1234567) }} "
    "{{ '{!r}'.format(q) }} {{ '{a[k]}'.format(a=d) }}",
    "{{ n|string ~ items|string }} {{ range(1, 10, 3)|list }} {{ (range(5)|list)[1:3] }}",
]


def test_the_features_prompt_templates_use_render_as_jinja_renders_them(reg):
    plain = ImmutableSandboxedEnvironment(
        undefined=jinja2.StrictUndefined, autoescape=False, keep_trailing_newline=True
    )
    for template in ORDINARY:
        version = reg.create_prompt_version("p", template, list(VALUES))
        assert version.render(VALUES) == plain.from_string(template).render(VALUES), template
