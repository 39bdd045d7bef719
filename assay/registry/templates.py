"""Prompt templates: ``{{var}}`` placeholders rendered by a sandboxed Jinja2 environment.

Undefined variables raise (StrictUndefined) instead of rendering as empty text, and the
sandbox keeps a stored template from reaching Python internals. A template is written by any
registry user and rendered by every evaluation that uses it, so rendering is also bounded:

- ``include``, ``import`` and ``extends`` are refused at registration (templates stand alone);
- ``range`` yields at most ``MAX_RANGE`` numbers, and all ``for`` loops of one render together
  run at most ``MAX_LOOP_ITERATIONS`` iterations;
- ``*``, ``**`` and ``+`` refuse results over ``MAX_OUTPUT_CHARS`` characters (or items),
  exponents over ``MAX_EXPONENT`` and integers over ``MAX_INT_BITS`` bits; string padding,
  ``replace`` and format widths are checked the same way before they run;
- the rendered text is cut off with an error past ``MAX_OUTPUT_CHARS``.

Every failure while rendering is a ``RegistryError`` naming the template.
"""

from __future__ import annotations

import contextvars
import re
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import jinja2
from jinja2 import meta, nodes
from jinja2.sandbox import SandboxedEnvironment

from assay.registry.errors import invalid
from assay.registry.limits import TEMPLATE_MAX_BYTES, check_prose

MAX_OUTPUT_CHARS = 1_000_000
MAX_RANGE = 10_000
MAX_LOOP_ITERATIONS = 100_000
MAX_EXPONENT = 64
MAX_INT_BITS = 100_000

_REFUSED_TAGS = {
    nodes.Include: "include",
    nodes.Import: "import",
    nodes.FromImport: "import",
    nodes.Extends: "extends",
}
_PADDING_METHODS = frozenset({"ljust", "rjust", "center", "zfill"})
_FORMAT_WIDTH = re.compile(r"\d{7,}")


class TemplateLimitError(jinja2.TemplateError):
    """A render went past one of the limits in the module docstring."""


_loop_budget: contextvars.ContextVar[list[int]] = contextvars.ContextVar("assay_loop_budget")


def _charge(n: int = 1) -> None:
    budget = _loop_budget.get(None)
    if budget is None:
        return
    budget[0] -= n
    if budget[0] < 0:
        raise TemplateLimitError(f"loops ran more than {MAX_LOOP_ITERATIONS} iterations")


def _bounded_loop(iterable: Any) -> Iterator[Any]:
    for item in iterable:
        _charge()
        yield item


def _bounded_range(*args: int) -> range:
    numbers = range(*args)
    if len(numbers) > MAX_RANGE:
        raise TemplateLimitError(f"range() of {len(numbers)} numbers, over {MAX_RANGE}")
    return numbers


def _size(value: Any) -> int | None:
    return len(value) if isinstance(value, str | list | tuple | bytes) else None


class _BoundedEnvironment(SandboxedEnvironment):
    intercepted_binops = frozenset({"*", "**", "+", "%"})

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if operator == "**":
            if isinstance(right, int | float) and abs(right) > MAX_EXPONENT:
                raise TemplateLimitError(f"exponent {right} over {MAX_EXPONENT}")
            both_int = isinstance(left, int) and isinstance(right, int)
            if both_int and left.bit_length() * abs(right) > MAX_INT_BITS:
                raise TemplateLimitError(f"a power over {MAX_INT_BITS} bits")
        elif operator == "%":
            if isinstance(left, str) and _FORMAT_WIDTH.search(left):
                raise TemplateLimitError("a format width or precision over 6 digits")
        elif operator == "*":
            both_int = isinstance(left, int) and isinstance(right, int)
            if both_int and left.bit_length() + right.bit_length() > MAX_INT_BITS:
                raise TemplateLimitError(f"a product over {MAX_INT_BITS} bits")
            for seq, times in ((left, right), (right, left)):
                n = _size(seq)
                if n is not None and isinstance(times, int) and n * times > MAX_OUTPUT_CHARS:
                    raise TemplateLimitError(f"repetition of {n * times} items")
        elif operator == "+":
            a, b = _size(left), _size(right)
            if a is not None and b is not None and a + b > MAX_OUTPUT_CHARS:
                raise TemplateLimitError(f"concatenation of {a + b} items")
        return super().call_binop(context, operator, left, right)

    def wrap_str_format(self, value: Any) -> Any:
        wrapped = super().wrap_str_format(value)
        if wrapped is not None and _FORMAT_WIDTH.search(value.__self__):

            def refuse(*args: Any, **kwargs: Any) -> str:
                raise TemplateLimitError("a format width or precision over 6 digits")

            return refuse
        return wrapped

    def call(self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        owner = getattr(__obj, "__self__", None)
        name = getattr(__obj, "__name__", "")
        if isinstance(owner, str):
            _check_str_method(owner, name, args, kwargs)
        return super().call(__context, __obj, *args, **kwargs)


def _check_str_method(text: str, name: str, args: tuple[Any, ...], kwargs: dict) -> None:
    if name in _PADDING_METHODS and args and isinstance(args[0], int):
        if args[0] > MAX_OUTPUT_CHARS:
            raise TemplateLimitError(f"str.{name}() to {args[0]} characters")
    elif name == "replace" and len(args) >= 2 and isinstance(args[0], str):
        old, new = args[0], args[1]
        if isinstance(new, str):
            grows = (len(text) + 1 if not old else text.count(old)) * max(len(new) - len(old), 0)
            if len(text) + grows > MAX_OUTPUT_CHARS:
                raise TemplateLimitError(f"str.replace() to over {MAX_OUTPUT_CHARS} characters")


def _checked_filter(name: str, original: Any, width_arg: int) -> Any:
    def checked(*args: Any, **kwargs: Any) -> Any:
        width = args[width_arg] if len(args) > width_arg else kwargs.get("width")
        if isinstance(width, int) and width > MAX_OUTPUT_CHARS:
            raise TemplateLimitError(f"filter {name} to {width} characters")
        text = args[0] if name == "format" and args else None
        if isinstance(text, str) and _FORMAT_WIDTH.search(text):
            raise TemplateLimitError("a format width or precision over 6 digits")
        return original(*args, **kwargs)

    return checked


_ENV = _BoundedEnvironment(
    undefined=jinja2.StrictUndefined, autoescape=False, keep_trailing_newline=True
)
_ENV.globals["range"] = _bounded_range
_ENV.globals["_assay_bounded_loop"] = _bounded_loop
for _name, _index in (("center", 1), ("indent", 1), ("format", 0)):
    _ENV.filters[_name] = _checked_filter(_name, _ENV.filters[_name], _index)


def _bounded_ast(ast: nodes.Template) -> nodes.Template:
    """Every ``for`` loop's iterable, wrapped so each iteration draws on the render's budget."""
    for loop in ast.find_all(nodes.For):
        loop.iter = nodes.Call(
            nodes.Name("_assay_bounded_loop", "load"), [loop.iter], [], None, None
        )
    return ast


def check_template(template: object, variables: Iterable[object], where: str) -> tuple[str, ...]:
    """Validate a template against its declared variables; return them, sorted and unique.

    Raises INVALID_PARAMETER_VALUE naming ``where`` when the template does not parse, uses
    ``include``/``import``/``extends``, a placeholder is not declared, or a declared name is
    not an identifier.
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
    for kind, tag in _REFUSED_TAGS.items():
        found = next(iter(ast.find_all(kind)), None)
        if found is not None:
            raise invalid(
                f"{where}: '{tag}' at line {found.lineno} is not allowed; a prompt template "
                "stands alone"
            )
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
    token = _loop_budget.set([MAX_LOOP_ITERATIONS])
    try:
        compiled = _ENV.from_string(_bounded_ast(_ENV.parse(template)))
        out: list[str] = []
        size = 0
        for chunk in compiled.generate(**values):
            size += len(chunk)
            if size > MAX_OUTPUT_CHARS:
                raise TemplateLimitError(f"output over {MAX_OUTPUT_CHARS} characters")
            out.append(chunk)
        return "".join(out)
    except Exception as exc:  # any failure of a stored template is the template's fault
        raise invalid(f"{where}: rendering failed: {type(exc).__name__}: {exc}") from exc
    finally:
        _loop_budget.reset(token)
