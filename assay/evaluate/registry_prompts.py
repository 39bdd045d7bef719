"""Suite layouts taken from the prompt registry.

An adapter (or a variant) may name a registry prompt instead of spelling its text::

    adapter:
      instructions: prompts:/terse-instructions@production   # a template without variables
      input_template: prompts:/qa-layout/3                     # declares one variable, input

The references are checked for shape when the suite is read and resolved when a partition is
evaluated (``resolve_prompts``), so moving a prompt alias changes what the next evaluation
sends. ``instructions`` becomes the rendered text; ``input_template`` is rendered with a
marker for ``input`` (which must appear exactly once, unfiltered) and becomes
``input_prefix``/``input_suffix``. The resolved layout's template id is a digest of the
resolved text, and every request records the registry versions it came from
(``Request.prompt_templates``: field, name, version and the template's SHA-256).

Only pinned references are allowed: an alias (``@production``) or a version (``/3``). A bare
``prompts:/name`` ("latest") would change meaning with every new version without any event
the promotion sensor re-evaluates on.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from assay.adapters import AdapterSpec, Method
from assay.core.digests import digest_bytes
from assay.core.records import TemplateVersion
from assay.registry.entities import Event, EventKind, PromptVersion
from assay.registry.errors import RegistryError
from assay.registry.names import parse_reference, version_key
from assay.registry.promotion import Promotion, PromotionPolicy

if TYPE_CHECKING:
    from assay.evaluate.suite import ScenarioConfig, Suite
    from assay.registry import Registry

PROMPT_SCHEME = "prompts"
PROMPT_FIELDS = ("instructions", "input_template")
INPUT_VARIABLE = "input"
# Stands in for the input while an input template renders; a private-use character pair no
# template writes by accident.
_MARK = "\ue000assay-input\ue000"


def is_prompt_reference(value: str) -> bool:
    return value.startswith(f"{PROMPT_SCHEME}:")


@dataclass(frozen=True, slots=True)
class PromptUse:
    """One registry reference in a suite entry: where it is and what it names."""

    where: str  # e.g. "suite.yaml: scenarios.quiz.variants[0].instructions"
    adapter: int  # 0 the base adapter, i the (i-1)-th variant
    field: str
    uri: str
    name: str
    alias: str | None
    version: int | None


def check_reference(value: str, where: str) -> PromptUse:
    """Parse a pinned ``prompts:/name@alias`` or ``prompts:/name/N``; errors name ``where``."""
    if not is_prompt_reference(value) or not value.startswith(f"{PROMPT_SCHEME}:/"):
        raise ValueError(
            f"{where}: expected a prompt reference like 'prompts:/name@alias' or "
            f"'prompts:/name/3', got {value!r}"
        )
    try:
        ref = parse_reference(value, PROMPT_SCHEME)
    except RegistryError as exc:
        raise ValueError(f"{where}: bad prompt reference {value!r}: {exc.message}") from None
    if ref.alias is None and ref.version is None:
        raise ValueError(
            f"{where}: prompt reference {value!r} names no alias or version; pin it as "
            f"'prompts:/{ref.name}@<alias>' or 'prompts:/{ref.name}/<N>'"
        )
    return PromptUse(where, 0, "", value, ref.name, ref.alias, ref.version)


def adapter_uses(adapter: AdapterSpec, index: int, where: str) -> list[PromptUse]:
    """The registry references of one adapter; ``input_template`` must be one."""
    uses = []
    for field in PROMPT_FIELDS:
        value = getattr(adapter, field)
        if field == "instructions" and not is_prompt_reference(value):
            continue
        if not value:
            continue
        use = check_reference(value, f"{where}.{field}")
        uses.append(replace(use, adapter=index, field=field))
    return uses


def _adapter_where(config: ScenarioConfig, index: int) -> str:
    base = f"{config.source}: scenarios.{config.key}" if config.source else config.key
    return f"{base}.adapter" if index == 0 else f"{base}.variants[{index - 1}]"


def prompt_uses(config: ScenarioConfig) -> list[PromptUse]:
    """Every registry reference of a suite entry, base adapter first."""
    return [
        use
        for index, adapter in enumerate(config.adapters)
        for use in adapter_uses(adapter, index, _adapter_where(config, index))
    ]


def uses_prompt_alias(config: ScenarioConfig, name: str, alias: str) -> bool:
    """Whether the entry reads prompt ``name`` through ``alias`` (so a move re-evaluates it)."""
    return any(u.name == name and u.alias == alias for u in prompt_uses(config))


def rubric_uses(config: ScenarioConfig, suite: Suite) -> list[PromptUse]:
    """The judge rubrics that score an entry's outputs: its own judges' rubric, and the
    suite's toxicity judge rubric when the entry generates text."""
    uses = []
    if config.judging is not None:
        uses.append(check_reference(config.judging.rubric, f"{config.key}.judge_rubric"))
    toxicity = suite.toxicity
    generates = any(a.method is Method.GENERATION for a in config.adapters)
    if toxicity is not None and toxicity.rubric and generates:
        uses.append(check_reference(toxicity.rubric, "toxicity.rubric"))
    return uses


def reads_rubric_alias(config: ScenarioConfig, suite: Suite, name: str, alias: str) -> bool:
    """Whether a judge scores the entry with prompt ``name`` read through ``alias``."""
    return any(u.name == name and u.alias == alias for u in rubric_uses(config, suite))


def template_digest(template: str) -> str:
    return digest_bytes(template.encode("utf-8"))


def _resolved_adapter(
    adapter: AdapterSpec, uses: list[PromptUse], get: Callable[[PromptUse], PromptVersion]
) -> tuple[AdapterSpec, tuple[TemplateVersion, ...]]:
    values: dict[str, str] = {}
    versions = []
    for use in uses:
        prompt = get(use)
        try:
            if use.field == "instructions":
                values["instructions"] = _instructions(prompt)
            else:
                values.update(_input_layout(prompt))
        except (ValueError, RegistryError) as exc:
            message = exc.message if isinstance(exc, RegistryError) else str(exc)
            raise ValueError(f"{use.where}: prompt reference {use.uri!r}: {message}") from None
        digest = template_digest(prompt.template)
        versions.append(TemplateVersion(use.field, prompt.name, prompt.version, digest))
    return replace(adapter, **values), tuple(versions)


def _instructions(prompt: PromptVersion) -> str:
    if prompt.variables:
        raise ValueError(
            f"instructions take a template without variables; {prompt.key} declares "
            f"{', '.join(prompt.variables)}"
        )
    return prompt.render({})


def _input_layout(prompt: PromptVersion) -> dict[str, str]:
    if tuple(prompt.variables) != (INPUT_VARIABLE,):
        raise ValueError(
            f"an input template declares exactly one variable, {INPUT_VARIABLE!r}; "
            f"{prompt.key} declares {', '.join(prompt.variables) or 'none'}"
        )
    text = prompt.render({INPUT_VARIABLE: _MARK})
    if text.count(_MARK) != 1:
        raise ValueError(
            f"{prompt.key} must place {{{{ {INPUT_VARIABLE} }}}} exactly once and unchanged "
            "(no filters or loops over it)"
        )
    prefix, _, suffix = text.partition(_MARK)
    return {"input_prefix": prefix, "input_suffix": suffix, "input_template": ""}


def resolve_prompts(config: ScenarioConfig, registry: Registry) -> ScenarioConfig:
    """The entry with every registry reference replaced by the text it names now.

    An unknown prompt or alias, or a template that does not fit its field, is a ValueError
    naming the suite entry's field and the reference. Entries without references come back
    unchanged.
    """
    uses = prompt_uses(config)
    if not uses:
        return config
    fetched: dict[str, PromptVersion] = {}

    def get(use: PromptUse) -> PromptVersion:
        if use.uri not in fetched:
            try:
                fetched[use.uri] = registry.get_prompt(use.uri)
            except RegistryError as exc:
                raise ValueError(
                    f"{use.where}: prompt reference {use.uri!r}: {exc.message}"
                ) from None
        return fetched[use.uri]

    adapters, templates = [], {}
    for index, adapter in enumerate(config.adapters):
        resolved, versions = _resolved_adapter(
            adapter, [u for u in uses if u.adapter == index], get
        )
        adapters.append(resolved)
        if versions:
            templates[resolved.template_id] = versions
    return replace(
        config, adapter=adapters[0], variants=tuple(adapters[1:]), prompt_templates=templates
    )


def prompt_alias_move(event: Event) -> tuple[str, str] | None:
    """(prompt, alias) when ``event`` set or moved a prompt alias."""
    if event.kind is not EventKind.PROMPT_ALIAS_SET or event.prompt is None:
        return None
    return event.prompt, str(event.payload.get("alias"))


def prompt_promotions(
    event: Event, suite: Suite, registry: Registry, policy: PromotionPolicy
) -> list[Promotion]:
    """A prompt promotion: moving a prompt alias the suite reads re-evaluates the entries that
    read it, for every model version that holds a promotion alias now (``policy``).

    A judge's rubric is read when outputs are scored, not when they are produced: entries
    whose only use of the prompt is a rubric are re-scored (``rescore_only``), with judge
    calls and no call to the evaluated model. Empty when the event moves no prompt alias, or
    one no suite entry reads.
    """
    moved = prompt_alias_move(event)
    if moved is None:
        return []
    name, alias = moved
    prompted = [key for key, c in suite.scenarios.items() if uses_prompt_alias(c, name, alias)]
    judged = [
        key
        for key, c in suite.scenarios.items()
        if key not in prompted and reads_rubric_alias(c, suite, name, alias)
    ]
    entries = tuple(prompted + judged)
    if not entries:
        return []
    holders = promotion_holders(registry, policy)
    what = "judge rubric" if not prompted else "prompt"
    reason = f"{what} alias {name}@{alias} → v{event.version} ({', '.join(entries)})"
    return [Promotion(event.id, key, reason, entries, rescore_only=not prompted) for key in holders]


def promotion_holders(registry: Registry, policy: PromotionPolicy) -> list[str]:
    """The model versions that hold a promotion alias now (``policy``), sorted: what a prompt
    promotion re-evaluates and a prompt's candidate version is judged on."""
    return sorted(
        {
            version_key(model.name, number)
            for model in registry.list_models()
            for a, number in model.aliases.items()
            if policy.holds_promotion_alias([a])
        }
    )
