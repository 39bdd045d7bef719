"""Prompt templates: ``{{var}}`` placeholders rendered by a sandboxed Jinja2 environment.

Undefined variables raise (StrictUndefined) instead of rendering as empty text, and the
sandbox keeps a stored template from reaching Python internals.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import jinja2
from jinja2 import meta
from jinja2.sandbox import SandboxedEnvironment

from assay.registry.errors import invalid
from assay.registry.limits import TEMPLATE_MAX_BYTES, check_prose

_ENV = SandboxedEnvironment(
    undefined=jinja2.StrictUndefined, autoescape=False, keep_trailing_newline=True
)


def check_template(template: object, variables: Iterable[object], where: str) -> tuple[str, ...]:
    """Validate a template against its declared variables; return them, sorted and unique.

    Raises INVALID_PARAMETER_VALUE naming ``where`` when the template does not parse, a
    placeholder is not declared, or a declared name is not an identifier.
    """
    if not isinstance(template, str) or not template:
        raise invalid(f"{where}: template must be a non-empty string")
    check_prose(template, f"{where}: template", TEMPLATE_MAX_BYTES)
    declared: set[str] = set()
    for var in variables:
        if not isinstance(var, str) or not var.isidentifier():
            raise invalid(f"{where}: variable name {var!r} is not an identifier")
        declared.add(var)
    try:
        ast = _ENV.parse(template)
    except jinja2.TemplateSyntaxError as exc:
        raise invalid(f"{where}: malformed template at line {exc.lineno}: {exc.message}") from exc
    used = meta.find_undeclared_variables(ast)
    undeclared = sorted(used - declared)
    if undeclared:
        raise invalid(f"{where}: placeholder(s) not declared as variables: {', '.join(undeclared)}")
    return tuple(sorted(declared))


def render_template(
    template: str, declared: Iterable[str], values: Mapping[str, object], where: str
) -> str:
    """Render with exactly the declared variables; unknown or missing names are refused."""
    declared_set = set(declared)
    unknown = sorted(set(values) - declared_set)
    if unknown:
        raise invalid(f"{where}: unknown variable(s): {', '.join(unknown)}")
    missing = sorted(declared_set - set(values))
    if missing:
        raise invalid(f"{where}: missing variable(s): {', '.join(missing)}")
    try:
        return _ENV.from_string(template).render(**values)
    except jinja2.TemplateError as exc:
        raise invalid(f"{where}: rendering failed: {exc}") from exc
