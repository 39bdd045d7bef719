"""lm-eval's chat-templated prompts (``--apply_chat_template``, ``--fewshot_as_multiturn``,
``--system_instruction``) for ``scenario: lm_eval`` entries.

lm-eval renders a task's messages (system instruction and description, few-shot turns, the
document) with its model's ``apply_chat_template`` (``HFLM.apply_chat_template``:
``tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=...,
continue_final_message=not add_generation_prompt)``, retried without the system turn when
the template refuses one). assay builds requests per scenario, not per model version, so the
tokenizer whose template renders them is named by the entry (``chat_template_from``, a
transformers model source: ``bundled:<name>``, ``hf:<directory>``, ``gguf:<file>``), and
every model version of the suite is sent the same templated prompts. The template's text
(with the tokenizer's special tokens it may print) enters the scenario's revision, so a
changed template marks the task's tables stale.

A template name (``apply_chat_template: <name>``) picks one of a tokenizer's named templates.
lm-eval 0.4.13 checks such a name but still renders with the tokenizer's default template;
assay renders with the named one (the same text whenever the name is ``default``).
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from assay.core.digests import digest_json

CHAT_SOURCE_HINT = "a transformers model source: bundled:<name>, hf:<directory> or gguf:<file>"


class ChatTemplateError(ValueError):
    """A chat-template setting that cannot be used (no template, unknown name, bad source)."""


@dataclass(frozen=True)
class ChatSettings:
    """How an entry's lm-eval prompts are rendered: lm-eval's three chat options."""

    apply_chat_template: bool | str = False  # False, True, or a template name
    fewshot_as_multiturn: bool = False
    system_instruction: str | None = None
    chat_template_from: str | None = None  # the tokenizer's model source

    @property
    def chat(self) -> bool:
        return self.apply_chat_template is not False

    @property
    def template_name(self) -> str | None:
        value = self.apply_chat_template
        return value if isinstance(value, str) else None

    @property
    def changes_prompts(self) -> bool:
        """Whether the prompts differ from lm-eval's plain ones."""
        return self.chat or self.system_instruction is not None


def resolve_settings(
    apply_chat_template: bool | str,
    fewshot_as_multiturn: bool | None,
    system_instruction: str | None,
    chat_template_from: str | None,
    where: str,
) -> ChatSettings:
    """The entry's chat settings as lm-eval's CLI resolves them (``fewshot_as_multiturn``
    defaults to on with a chat template; on without one is an error), checked: ``where`` is
    the entry's ``args`` path for error messages."""
    if isinstance(apply_chat_template, str) and not apply_chat_template.strip():
        raise ChatTemplateError(
            f"{where}.apply_chat_template: an empty template name; give true (the "
            "tokenizer's template) or the name of one of its templates"
        )
    chat = apply_chat_template is not False
    if fewshot_as_multiturn and not chat:
        raise ChatTemplateError(
            f"{where}.fewshot_as_multiturn: needs apply_chat_template (few-shot turns are "
            "chat messages), as in lm-eval"
        )
    if chat and not chat_template_from:
        raise ChatTemplateError(
            f"{where}.chat_template_from: apply_chat_template needs the tokenizer whose "
            f"template renders the prompts ({CHAT_SOURCE_HINT}); requests are built once per "
            "task for every model version, so the entry names it"
        )
    if chat_template_from and not chat:
        raise ChatTemplateError(
            f"{where}.chat_template_from: given without apply_chat_template, so no template "
            "would be applied; set apply_chat_template: true"
        )
    if chat_template_from:
        from assay.models.transformers_loading import resolve_source

        try:
            resolve_source(chat_template_from)
        except (ValueError, FileNotFoundError) as exc:
            raise ChatTemplateError(f"{where}.chat_template_from: {exc}") from None
    if system_instruction is not None and not system_instruction.strip():
        raise ChatTemplateError(f"{where}.system_instruction: empty; leave it out instead")
    return ChatSettings(
        apply_chat_template=apply_chat_template,
        fewshot_as_multiturn=chat if fewshot_as_multiturn is None else fewshot_as_multiturn,
        system_instruction=system_instruction,
        chat_template_from=chat_template_from,
    )


@functools.cache
def load_tokenizer(source: str) -> Any:
    """The tokenizer of a transformers model source (loaded once per process, offline)."""
    from assay.models.transformers_loading import import_transformers, resolve_source

    resolved = resolve_source(source)
    transformers = import_transformers()
    if resolved.kind == "gguf":
        return transformers.AutoTokenizer.from_pretrained(
            resolved.path.parent, gguf_file=resolved.path.name, local_files_only=True
        )
    return transformers.AutoTokenizer.from_pretrained(resolved.path, local_files_only=True)


def _select(tokenizer: Any, name: str | None, where: str) -> str:
    """The template text used: ``HFLM.chat_template``'s choice (the default of a dict of
    templates, the single one otherwise), or the named one."""
    templates = getattr(tokenizer, "chat_template", None)
    if not templates:
        raise ChatTemplateError(f"{where}: the tokenizer has no chat template")
    if isinstance(templates, Mapping):
        key = name or "default"
        if key not in templates:
            raise ChatTemplateError(
                f"{where}: the tokenizer has no template named {key!r}; its templates: "
                f"{', '.join(sorted(templates))}"
            )
        return str(templates[key])
    if name is not None and name != "default":
        raise ChatTemplateError(
            f"{where}: the tokenizer has one chat template, not named ones, so "
            f"{name!r} names nothing; give apply_chat_template: true"
        )
    return str(templates)


@dataclass(frozen=True)
class ChatTemplate:
    """A tokenizer's chat template as lm-eval's HF model applies it."""

    source: str
    name: str | None
    text: str
    tokenizer: Any

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.text.encode("utf-8")).hexdigest()

    @property
    def special_tokens(self) -> dict[str, str]:
        """The special tokens a template may print (``bos_token``, ``eos_token``, ...)."""
        return {str(k): str(v) for k, v in sorted(self.tokenizer.special_tokens_map.items())}

    def render(self, messages: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
        """``HFLM.apply_chat_template``: the messages as the model's prompt text."""
        import jinja2

        kwargs: dict[str, Any] = {
            "tokenize": False,
            "add_generation_prompt": add_generation_prompt,
            "continue_final_message": not add_generation_prompt,
            "chat_template": self.text,
        }
        try:
            return self.tokenizer.apply_chat_template(messages, **kwargs)
        except jinja2.exceptions.TemplateError:
            # lm-eval's fallback: a template that refuses a system turn gets none.
            without = [m for m in messages if m["role"] != "system"]
            return self.tokenizer.apply_chat_template(without, **kwargs)


@functools.cache
def load_chat_template(source: str, name: str | None, where: str) -> ChatTemplate:
    """The template of ``source``'s tokenizer (``name``: one of its named templates)."""
    try:
        tokenizer = load_tokenizer(source)
    except (OSError, ValueError) as exc:
        raise ChatTemplateError(
            f"{where}: the tokenizer of {source!r} could not be loaded: {exc}"
        ) from None
    text = _select(tokenizer, name, f"{where} ({source!r})")
    return ChatTemplate(source, name, text, tokenizer)


def settings_digest(settings: ChatSettings, template: ChatTemplate | None) -> str:
    """Digest (16 hex digits) of what the chat options put in the prompts: the template's
    text and special tokens, multi-turn few-shot, the system instruction; not the source's
    path (the same template read from elsewhere renders the same prompts)."""
    return digest_json(
        {
            "template_sha256": template.sha256 if template else None,
            "special_tokens": template.special_tokens if template else None,
            "fewshot_as_multiturn": settings.fewshot_as_multiturn,
            "system_instruction": settings.system_instruction,
        }
    )[:16]
