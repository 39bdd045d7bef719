"""Prompt templates: ``{{var}}`` placeholders rendered by a sandboxed Jinja2 environment.

Undefined variables raise (StrictUndefined) instead of rendering as empty text, and the
sandbox keeps a stored template from reaching Python internals or changing a value. A
template is written by any registry user and rendered by every evaluation that uses it, so
what one render may cost is bounded, whatever the template uses:

- At registration a template is parsed and compiled. Refused there: ``include``, ``import``
  and ``extends`` (templates stand alone), more than ``MAX_TEMPLATE_NODES`` syntax nodes,
  the ``lipsum``, ``cycler`` and ``joiner`` globals, filters outside the vetted set
  (``wordwrap``, ``striptags``, ``urlize``, ``pprint`` and ``xmlattr`` are left out) and
  methods that change a value (``append``, ``update``, ...).
- Only vetted callables run: ``range``, ``dict``, ``namespace``, macros, ``loop`` and the
  read-only methods of strings, lists, tuples and dicts; anything else is a SecurityError.
- Sizes are checked before the work is done, whatever produces a value (``+``, ``*``, ``~``,
  ``%``, ``str.format``, filters, string methods, literals, ``{% set %}`` blocks, macros,
  output): no value may take more than ``MAX_OUTPUT_CHARS`` characters written out, the
  rendered text included. Containers count as ``str()`` writes them, every shared reference
  included, so comparing, hashing or printing one costs no more than its size. ``range``
  yields at most ``MAX_RANGE`` numbers, integers stay within ``MAX_INT_BITS`` bits,
  exponents within ``MAX_EXPONENT``.
- One render has budgets: ``MAX_LOOP_ITERATIONS`` loop iterations; ``MAX_OPERATIONS``
  operations (calls, filters, tests, operators, comparisons, lookups, outputs, and one per
  ``_SCAN_CHARS`` characters read or written); ``MAX_BUILT_CHARS`` characters and items in
  all it builds (memory); calls nested ``MAX_CALL_DEPTH`` deep (recursive macros and loops);
  values nested ``MAX_NESTING`` deep; and, as a last resort, ``MAX_RENDER_SECONDS`` of CPU.

Every failure while rendering is a ``RegistryError`` naming the template (for a registered
prompt, its name and version) and the limit it ran into.
"""

from __future__ import annotations

import contextvars
import functools
import itertools
import re
import time
import types
from collections.abc import Callable, ItemsView, Iterable, Iterator, KeysView, Mapping, ValuesView
from typing import Any

import jinja2
from jinja2 import meta, nodes
from jinja2.exceptions import SecurityError
from jinja2.ext import Extension
from jinja2.filters import FILTERS
from jinja2.runtime import LoopContext, Macro, Undefined, markup_join, str_join
from jinja2.sandbox import ImmutableSandboxedEnvironment, SandboxedFormatter
from jinja2.tests import TESTS
from jinja2.utils import Namespace, _PassArg
from jinja2.visitor import NodeTransformer
from markupsafe import EscapeFormatter, Markup

from assay.registry.errors import invalid
from assay.registry.limits import TEMPLATE_MAX_BYTES, check_prose

MAX_OUTPUT_CHARS = 1_000_000
MAX_BUILT_CHARS = 10_000_000
MAX_OPERATIONS = 300_000
MAX_LOOP_ITERATIONS = 100_000
MAX_RANGE = 10_000
MAX_CALL_DEPTH = 40
MAX_NESTING = 100
MAX_RENDER_SECONDS = 1.0
MAX_TEMPLATE_NODES = 10_000
MAX_EXPONENT = 64
MAX_INT_BITS = 100_000
MAX_ROUND_DIGITS = 400

_SCAN_CHARS = 4096  # characters (or items) read or written that count as one operation
_CLOCK_EVERY = 16  # operations between readings of the CPU clock (a reading costs ~1 us)
_OPAQUE_SIZE = 100  # what an object without a known written size counts as
_CONTAINER_SIZE = 16  # brackets and a type name: "dict_items([])", "<Namespace {}>"
_REMEMBERED_SIZE = 256  # smaller values are measured again rather than remembered
_FLOAT_DIGITS = 330  # the most digits %f writes for a float before its precision

_REFUSED_TAGS = {
    nodes.Include: "include",
    nodes.Import: "import",
    nodes.FromImport: "import",
    nodes.Extends: "extends",
}
_REFUSED_GLOBALS = frozenset({"lipsum", "cycler", "joiner"})
_REFUSED_ATTRIBUTES = frozenset(
    {
        "add",
        "append",
        "appendleft",
        "clear",
        "difference_update",
        "discard",
        "extend",
        "extendleft",
        "insert",
        "intersection_update",
        "maketrans",
        "pop",
        "popitem",
        "popleft",
        "remove",
        "rotate",
        "setdefault",
        "symmetric_difference_update",
        "translate",
        "update",
    }
)
_STR_METHODS = frozenset(
    {
        "capitalize",
        "casefold",
        "center",
        "count",
        "endswith",
        "expandtabs",
        "find",
        "index",
        "isalnum",
        "isalpha",
        "isascii",
        "isdecimal",
        "isdigit",
        "isidentifier",
        "islower",
        "isnumeric",
        "isprintable",
        "isspace",
        "istitle",
        "isupper",
        "join",
        "ljust",
        "lower",
        "lstrip",
        "partition",
        "removeprefix",
        "removesuffix",
        "replace",
        "rfind",
        "rindex",
        "rjust",
        "rpartition",
        "rsplit",
        "rstrip",
        "split",
        "splitlines",
        "startswith",
        "strip",
        "swapcase",
        "title",
        "upper",
        "zfill",
    }
)
_SEQUENCE_METHODS = frozenset({"count", "index"})
_MAPPING_METHODS = frozenset({"get", "items", "keys", "values"})
_LOOP_METHODS = frozenset({"changed", "cycle"})
_PADDING_METHODS = frozenset({"ljust", "rjust", "center", "zfill"})
# String methods that read all of the string and build less than it (what they build is
# charged as built).
_READING_METHODS = frozenset(
    {"count", "find", "index", "replace", "rfind", "rindex", "expandtabs"}
    | {name for name in _STR_METHODS if name.startswith("is") and name != "isascii"}
)
_FORMAT_WIDTH = re.compile(r"\d{7,}")
_FORMAT_NUMBER = re.compile(r"\d+")
_PERCENT_SPEC = re.compile(r"%(?:\([^)]*\))?[-#0 +]*(\*|\d+)?(?:\.(\*|\d+))?[hlL]?(.?)", re.S)


class TemplateLimitError(jinja2.TemplateError):
    """A render went past one of the limits in the module docstring."""


# -- the budget of one render


class _Budget:
    """What one render may still spend, and the written sizes it has measured."""

    __slots__ = ("built", "deadline", "depth", "iterations", "operations", "sizes", "ticks")

    def __init__(self) -> None:
        self.operations = MAX_OPERATIONS
        self.iterations = MAX_LOOP_ITERATIONS
        self.built = MAX_BUILT_CHARS
        self.depth = 0
        self.deadline = time.thread_time() + MAX_RENDER_SECONDS
        self.ticks = 0
        # id -> (value, written size, nesting); holding the value keeps its id from reuse.
        self.sizes: dict[int, tuple[object, int, int]] = {}

    def step(self, n: int = 1) -> None:
        self.operations -= n
        if self.operations < 0:
            raise TemplateLimitError(f"the render ran more than {MAX_OPERATIONS} operations")
        self.ticks += n
        if self.ticks >= _CLOCK_EVERY:
            self.ticks = 0
            if time.thread_time() > self.deadline:
                raise TemplateLimitError(
                    f"the render took more than {MAX_RENDER_SECONDS:g} s of CPU time"
                )

    def iterate(self) -> None:
        self.iterations -= 1
        if self.iterations < 0:
            raise TemplateLimitError(f"loops ran more than {MAX_LOOP_ITERATIONS} iterations")
        self.step()

    def build(self, n: int) -> None:
        self.built -= n
        if self.built < 0:
            raise TemplateLimitError(
                f"the render built more than {MAX_BUILT_CHARS} characters and items"
            )
        if n >= _SCAN_CHARS:
            self.step(n // _SCAN_CHARS)


_budget: contextvars.ContextVar[_Budget | None] = contextvars.ContextVar(
    "assay_template_budget", default=None
)


def _step(n: int = 1) -> None:
    budget = _budget.get()
    if budget is not None:
        budget.step(n)


def _scan(value: object) -> None:
    """One operation, and one more per ``_SCAN_CHARS`` characters or items of ``value``."""
    size = len(value) if isinstance(value, str | list | tuple | dict) else 0
    _step(1 + size // _SCAN_CHARS)


def _build(n: int) -> None:
    budget = _budget.get()
    if budget is not None:
        budget.build(n)


# -- written sizes


def _measure(value: object, nested: bool = False) -> tuple[int, int]:
    """(size, nesting): ``size`` bounds ``len(str(value))`` from above, or exceeds
    ``MAX_OUTPUT_CHARS`` when the value is larger; inside containers strings count as their
    ``repr``, and a value referenced twice counts twice, as ``str`` and ``==`` visit it."""
    budget = _budget.get()
    sizes = budget.sizes if budget is not None else {}
    return _measure_in(value, nested, MAX_OUTPUT_CHARS, sizes, budget, 0)


def _measure_in(
    value: object,
    nested: bool,
    limit: int,
    sizes: dict[int, tuple[object, int, int]],
    budget: _Budget | None,
    level: int,
) -> tuple[int, int]:
    if isinstance(value, str) and not nested:
        return len(value), 0
    known = sizes.get(id(value))
    if known is not None:
        size, depth = known[1], known[2]
    else:
        scalar = _scalar_size(value)
        if scalar is not None:
            if scalar >= _REMEMBERED_SIZE and isinstance(value, str):
                sizes[id(value)] = (value, scalar, 0)  # repr() once per long string
            return scalar, 0
        found = _parts(value)
        if found is None:
            return _OPAQUE_SIZE, 0
        if level >= MAX_NESTING:
            raise TemplateLimitError(f"a value nested more than {MAX_NESTING} levels deep")
        parts, stable = found
        size, depth, count = _CONTAINER_SIZE, 0, 0
        for part in parts:
            part_size, part_depth = _measure_in(part, True, limit - size, sizes, budget, level + 1)
            size, depth, count = size + part_size + 2, max(depth, part_depth), count + 1
            if size > limit:
                break
        depth += 1
        if budget is not None:
            budget.step(1 + count // 4)
        if stable and _REMEMBERED_SIZE <= size <= limit:
            sizes[id(value)] = (value, size, depth)
    if level + depth > MAX_NESTING:
        raise TemplateLimitError(f"a value nested more than {MAX_NESTING} levels deep")
    return size, depth


def _scalar_size(value: object) -> int | None:
    """How long ``repr(value)`` is at most, for a string, number, None or bytes."""
    if isinstance(value, str):
        return len(repr(value)) if len(value) <= MAX_OUTPUT_CHARS else len(value) + 2
    if value is None or isinstance(value, bool):
        return 5
    if isinstance(value, int):
        return value.bit_length() // 3 + 2  # log10(2) < 1/3
    if isinstance(value, float):
        return 32
    if isinstance(value, bytes | bytearray):
        return 4 * len(value) + 3
    return None


def _parts(value: object) -> tuple[Iterable[object], bool] | None:
    """What ``str(value)`` writes out of a container (a mapping's keys and values), and
    whether the container stays as it is; None for anything else."""
    if isinstance(value, Namespace):  # changes with {% set ns.x = ... %}
        attrs = object.__getattribute__(value, "_Namespace__attrs")
        return itertools.chain.from_iterable(attrs.items()), False
    if isinstance(value, Mapping):
        return itertools.chain.from_iterable(value.items()), True
    if isinstance(value, ItemsView):
        return itertools.chain.from_iterable(value), True
    if isinstance(value, list | tuple | set | frozenset | KeysView | ValuesView):
        return value, True
    return None


def _remember(value: object, size: int, depth: int) -> None:
    """Record the written size of a value built out of values already measured."""
    budget = _budget.get()
    if budget is not None and size >= _REMEMBERED_SIZE:
        budget.sizes[id(value)] = (value, size, depth)


def _written(value: object, what: str, nested: bool = False) -> int:
    """The written size of ``value``, which ``what`` is about to turn into text; refused
    over ``MAX_OUTPUT_CHARS``."""
    size = len(value) if isinstance(value, str) and not nested else _measure(value, nested)[0]
    if size > MAX_OUTPUT_CHARS:
        raise TemplateLimitError(f"{what}: a value over {MAX_OUTPUT_CHARS} characters")
    return size


def _built(value: Any, what: str) -> Any:
    """Charge a value that ``what`` built to the render's budget; refused over
    ``MAX_OUTPUT_CHARS`` characters written out, or over ``MAX_INT_BITS`` bits."""
    if isinstance(value, str):
        _build(len(value))
        if len(value) > MAX_OUTPUT_CHARS:
            raise TemplateLimitError(
                f"{what}: a text of {len(value)} characters, over {MAX_OUTPUT_CHARS}"
            )
    elif isinstance(value, list | tuple | dict | set | frozenset | Namespace):
        if not isinstance(value, Namespace):
            _build(len(value))
        if _measure(value)[0] > MAX_OUTPUT_CHARS:
            raise TemplateLimitError(f"{what}: a value over {MAX_OUTPUT_CHARS} characters")
    elif isinstance(value, int) and value.bit_length() > MAX_INT_BITS:
        raise TemplateLimitError(f"{what}: an integer over {MAX_INT_BITS} bits")
    return value


def _check_width(what: str, width: object) -> None:
    if isinstance(width, int) and width > MAX_OUTPUT_CHARS:
        raise TemplateLimitError(f"{what} to {width} characters, over {MAX_OUTPUT_CHARS}")


def _too_long(what: str) -> TemplateLimitError:
    return TemplateLimitError(f"{what} to over {MAX_OUTPUT_CHARS} characters")


# -- loops, output, ~, slices, comparisons and literals: the bounded AST calls these


def _bounded_loop(iterable: Any) -> Iterator[Any]:
    budget = _budget.get()
    for item in iterable:
        if budget is not None:
            budget.iterate()
        yield item


def _bounded_items(iterable: Iterable[Any], what: str) -> Iterator[Any]:
    """The items of a filter's lazy result, one operation each; lists are checked as built."""
    for item in iterable:
        _step()
        if type(item) is list:
            _built(item, what)
        yield item


def _bounded_range(*args: int) -> range:
    numbers = range(*args)
    if len(numbers) > MAX_RANGE:
        raise TemplateLimitError(f"range() of {len(numbers)} numbers, over {MAX_RANGE}")
    return numbers


class _Bounds(Extension):
    """The checks ``_bounded_ast`` puts into a template, reached as
    ``environment.extensions[...]``, which a template's own names cannot shadow."""

    def loop(self, iterable: Any) -> Iterator[Any]:
        return _bounded_loop(iterable)

    def out(self, value: Any) -> Any:
        """A piece of output (template text or ``{{ ... }}``), charged before it is written."""
        _build(_written(value, "output"))
        _step()
        return value

    def concat(self, context: Any, *parts: Any) -> str:
        """``~``: the written sizes of its parts are added up before they are joined."""
        _step()
        total = 0
        for part in parts:
            total += _written(part, "'~'")
            if total > MAX_OUTPUT_CHARS:
                raise _too_long("'~'")
        join = markup_join if context.eval_ctx.autoescape else str_join
        return _built(join(parts), "'~'")

    def slice(self, value: Any, start: Any, stop: Any, step: Any) -> Any:
        _step()
        part = value[start:stop:step]
        if isinstance(part, str | list | tuple):
            _build(len(part))
        return part

    def compared(self, value: Any) -> Any:
        """The first operand of a comparison."""
        _step()
        return value

    def container(self, value: Any) -> Any:
        """What ``in`` / ``not in`` searches, read in full."""
        _scan(value)
        return value

    def literal(self, value: Any) -> Any:
        _step()
        return _built(value, f"a {type(value).__name__} literal")


def _bounds_call(name: str, *args: nodes.Expr, lineno: int) -> nodes.Call:
    call = nodes.Call(
        nodes.ExtensionAttribute(_Bounds.identifier, name), list(args), [], None, None
    )
    return call.set_lineno(lineno)


class _BoundingTransformer(NodeTransformer):
    """Route loops, output, ``~``, slices, comparisons, literals and ``{% set %}`` blocks
    through ``_Bounds``."""

    def visit_For(self, node: nodes.For) -> nodes.Node:
        self.generic_visit(node)
        node.iter = _bounds_call("loop", node.iter, lineno=node.lineno)
        return node

    def visit_Output(self, node: nodes.Output) -> nodes.Node:
        self.generic_visit(node)
        node.nodes = [_bounds_call("out", child, lineno=child.lineno) for child in node.nodes]
        return node

    def visit_Concat(self, node: nodes.Concat) -> nodes.Node:
        self.generic_visit(node)
        return _bounds_call("concat", nodes.ContextReference(), *node.nodes, lineno=node.lineno)

    def visit_Getitem(self, node: nodes.Getitem) -> nodes.Node:
        self.generic_visit(node)
        if not isinstance(node.arg, nodes.Slice):
            return node  # compiled to environment.getitem, which is bounded
        bounds = (node.arg.start, node.arg.stop, node.arg.step)
        parts = [nodes.Const(None) if part is None else part for part in bounds]
        return _bounds_call("slice", node.node, *parts, lineno=node.lineno)

    def visit_Compare(self, node: nodes.Compare) -> nodes.Node:
        self.generic_visit(node)
        node.expr = _bounds_call("compared", node.expr, lineno=node.lineno)
        for operand in node.ops:
            if operand.op in ("in", "notin"):
                operand.expr = _bounds_call("container", operand.expr, lineno=node.lineno)
        return node

    def _literal(self, node: nodes.List | nodes.Tuple | nodes.Dict) -> nodes.Node:
        self.generic_visit(node)
        if isinstance(node, nodes.Tuple) and node.ctx != "load":
            return node  # an assignment target
        return _bounds_call("literal", node, lineno=node.lineno)

    visit_List = visit_Tuple = visit_Dict = _literal

    def visit_AssignBlock(self, node: nodes.AssignBlock) -> nodes.Node:
        self.generic_visit(node)
        check = nodes.Filter(node.filter, _SET_BLOCK_FILTER, [], [], None, None)
        node.filter = check.set_lineno(node.lineno)
        return node


def _bounded_ast(ast: nodes.Template) -> nodes.Template:
    """The template with its loops, output, ``~``, slices, comparisons, literals and
    ``{% set %}`` blocks drawing on the render's budget."""
    bounded = _BoundingTransformer().visit(ast)
    bounded.set_environment(_ENV)
    return bounded


# -- formatting


def _check_format_spec(spec: str) -> None:
    for number in _FORMAT_NUMBER.findall(spec):
        if len(number) > 9 or int(number) > MAX_OUTPUT_CHARS:
            raise TemplateLimitError(f"a format width or precision over {MAX_OUTPUT_CHARS}")


class _BoundedFormatter(SandboxedFormatter):
    """``str.format`` with each field's width, value and result checked and charged."""

    def convert_field(self, value: Any, conversion: str | None) -> Any:
        if conversion in ("r", "a"):
            _written(value, "str.format()", nested=True)
        return super().convert_field(value, conversion)

    def format_field(self, value: Any, format_spec: str) -> Any:
        _step()
        _check_format_spec(format_spec)
        if not isinstance(value, str | int | float):
            _written(value, "str.format()")
        text = super().format_field(value, format_spec)
        _build(len(text))
        return text


class _BoundedEscapeFormatter(_BoundedFormatter, EscapeFormatter):
    pass


class _StrFormat:
    """``str.format`` / ``str.format_map`` of one string, run by ``_BoundedFormatter``."""

    __slots__ = ("formatter", "is_map", "text")

    def __init__(self, env: jinja2.Environment, text: str, is_map: bool) -> None:
        self.text = text
        self.is_map = is_map
        self.formatter: _BoundedFormatter = (
            _BoundedEscapeFormatter(env, escape=text.escape)
            if isinstance(text, Markup)
            else _BoundedFormatter(env)
        )

    def __call__(self, *args: Any, **kwargs: Any) -> str:
        if _FORMAT_WIDTH.search(self.text):
            raise TemplateLimitError("a format width or precision over 6 digits")
        _scan(self.text)
        if self.is_map:
            if kwargs or len(args) != 1:
                raise TypeError("format_map() takes exactly one positional argument")
            args, kwargs = (), args[0]
        return type(self.text)(self.formatter.vformat(self.text, args, kwargs))


def _check_percent(fmt: str, args: Any) -> None:
    """Refuse ``fmt % args`` when its result could pass ``MAX_OUTPUT_CHARS``: each
    conversion counts as its width, its precision or the largest argument, whichever is
    largest."""
    if _FORMAT_WIDTH.search(fmt):
        raise TemplateLimitError("a format width or precision over 6 digits")
    _scan(fmt)
    if isinstance(args, tuple):
        values: tuple[Any, ...] = args
    elif isinstance(args, Mapping):
        values = tuple(args.values())
    else:
        values = (args,)
    stars = max((abs(v) for v in values if isinstance(v, int)), default=0)
    widest: dict[bool, int] = {}  # the largest argument, written with str() / repr()

    def largest(nested: bool) -> int:
        if nested not in widest:
            sizes = (_written(v, "'%' formatting", nested) for v in values)
            widest[nested] = max(sizes, default=0)
        return widest[nested]

    total = len(fmt)
    for spec in _PERCENT_SPEC.finditer(fmt):
        width, precision, conversion = spec.groups()
        w = stars if width == "*" else int(width or 0)
        p = stars if precision == "*" else int(precision or 0)
        if conversion in ("%", "c", ""):
            total += max(w, 1)
        elif conversion in "eEfFgG":
            total += max(w, p + _FLOAT_DIGITS)
        else:
            total += max(w, p, largest(conversion in ("r", "a")))
        if total > MAX_OUTPUT_CHARS:
            raise _too_long("'%' formatting")


# -- string methods


def _replaced_size(text: str, old: object, new: object, count: object = -1) -> int:
    if not isinstance(old, str) or not isinstance(new, str):
        return len(text)
    hits = len(text) + 1 if not old else text.count(old)
    if isinstance(count, int) and count >= 0:
        hits = min(hits, count)
    return len(text) + hits * max(len(new) - len(old), 0)


def _check_join(sep: str, items: Any, what: str) -> Any:
    """Refuse joining ``items`` with ``sep`` when the result would pass ``MAX_OUTPUT_CHARS``;
    return the items, as a list unless they are a string, list or tuple."""
    if isinstance(items, str):
        total = len(items) + max(len(items) - 1, 0) * len(sep)
    else:
        if not isinstance(items, list | tuple):
            items = list(items)  # a lazy filter's items are operations as they come
            _build(len(items))
        _step(1 + len(items) // 4)
        total = max(len(items) - 1, 0) * len(sep)
        for item in items:
            total += _written(item, what)
            if total > MAX_OUTPUT_CHARS:
                break
    if total > MAX_OUTPUT_CHARS:
        raise _too_long(what)
    return items


def _check_str_call(
    text: str, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> tuple[Any, ...]:
    """Refuse a string method whose result would pass ``MAX_OUTPUT_CHARS``; return the
    arguments to call it with (``join`` gets its items as a list)."""
    what = f"str.{name}()"
    if name in _READING_METHODS:
        _scan(text)
    if name in _PADDING_METHODS:
        _check_width(what, args[0] if args else kwargs.get("width"))
    elif name == "expandtabs":
        tabsize = args[0] if args else kwargs.get("tabsize", 8)
        grows = text.count("\t") * tabsize if isinstance(tabsize, int) else 0
        if len(text) + grows > MAX_OUTPUT_CHARS:
            raise _too_long(what)
    elif name == "replace" and len(args) >= 2:
        if _replaced_size(text, *args[:3]) > MAX_OUTPUT_CHARS:
            raise _too_long(what)
    elif name == "join" and len(args) == 1:
        return (_check_join(text, args[0], what),)
    return args


def _allowed_call(obj: Any) -> str:
    """What calling ``obj`` is, for messages; a SecurityError unless it is vetted."""
    if obj is _bounded_range:
        return "range()"
    if obj is dict:
        return "dict()"
    if obj is Namespace:
        return "namespace()"
    if isinstance(obj, _StrFormat):
        return "str.format()"
    if isinstance(obj, Undefined):
        return "an undefined value"  # calling it raises UndefinedError
    owner = getattr(obj, "__self__", None)
    name = getattr(obj, "__name__", "")
    if isinstance(obj, types.BuiltinMethodType | types.MethodType):
        if isinstance(owner, str) and name in _STR_METHODS:
            return f"str.{name}()"
        if isinstance(owner, list | tuple) and name in _SEQUENCE_METHODS:
            return f"{type(owner).__name__}.{name}()"
        if isinstance(owner, dict) and name in _MAPPING_METHODS:
            return f"dict.{name}()"
        if isinstance(owner, LoopContext) and name in _LOOP_METHODS:
            return f"loop.{name}()"
    kind = f"{type(owner).__name__}.{name}" if owner is not None else name or type(obj).__name__
    raise SecurityError(f"calling {kind}() is not allowed in a prompt template")


# -- operators


def _both_sequences(left: Any, right: Any) -> bool:
    return isinstance(left, str | list | tuple) and isinstance(right, str | list | tuple)


def _check_binop(operator: str, left: Any, right: Any) -> tuple[int | None, int]:
    """Refuse an operation whose result would pass a limit; for ``+`` and ``*`` on
    sequences, return the result's written size and nesting."""
    if operator == "**":
        if isinstance(right, int | float) and abs(right) > MAX_EXPONENT:
            raise TemplateLimitError(f"exponent {right} over {MAX_EXPONENT}")
        both_int = isinstance(left, int) and isinstance(right, int)
        if both_int and left.bit_length() * abs(right) > MAX_INT_BITS:
            raise TemplateLimitError(f"a power over {MAX_INT_BITS} bits")
    elif operator == "%":
        if isinstance(left, str):
            _check_percent(left, right)
    elif operator == "*":
        if isinstance(left, int) and isinstance(right, int):
            if left.bit_length() + right.bit_length() > MAX_INT_BITS:
                raise TemplateLimitError(f"a product over {MAX_INT_BITS} bits")
            return None, 0
        for seq, times in ((left, right), (right, left)):
            if isinstance(seq, str | list | tuple) and isinstance(times, int) and times > 0:
                size, depth = _measure(seq)
                if isinstance(seq, str):
                    size *= times
                else:
                    size = _CONTAINER_SIZE + (size - _CONTAINER_SIZE) * times
                if size > MAX_OUTPUT_CHARS:
                    raise TemplateLimitError(f"repetition to over {MAX_OUTPUT_CHARS} characters")
                return size, depth
    elif operator == "+" and _both_sequences(left, right):
        (a, da), (b, db) = _measure(left), _measure(right)
        size = a + b if isinstance(left, str) else a + b - _CONTAINER_SIZE
        if size > MAX_OUTPUT_CHARS:
            raise _too_long("concatenation")
        return size, max(da, db)
    return None, 0


# -- the environment


class _BoundedEnvironment(ImmutableSandboxedEnvironment):
    intercepted_binops = frozenset({"+", "-", "*", "/", "//", "%", "**"})
    intercepted_unops = frozenset({"+", "-"})

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        _step()
        size, depth = _check_binop(operator, left, right)
        result = super().call_binop(context, operator, left, right)
        if size is None:
            return _built(result, f"'{operator}'")
        _build(len(result))  # + or * of sequences, measured before
        if not isinstance(result, str):
            _remember(result, size, depth)
        return result

    def call_unop(self, context: Any, operator: str, arg: Any) -> Any:
        _step()
        return super().call_unop(context, operator, arg)

    def getattr(self, obj: Any, attribute: str) -> Any:
        _step()
        return super().getattr(obj, attribute)

    def getitem(self, obj: Any, argument: Any) -> Any:
        _step()
        return super().getitem(obj, argument)

    def wrap_str_format(self, value: Any) -> Any:
        if (
            isinstance(value, types.MethodType | types.BuiltinMethodType)
            and value.__name__ in ("format", "format_map")
            and isinstance(value.__self__, str)
        ):
            return _StrFormat(self, value.__self__, value.__name__ == "format_map")
        return None

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(getattr(__obj, "__self__", None), _Bounds):
            return __obj(*args)  # kwargs hold only Jinja's _loop_vars / _block_vars
        _step()
        if isinstance(__obj, Macro | LoopContext):
            return __self._call_nested(__context, __obj, args, kwargs)
        what = _allowed_call(__obj)
        owner = getattr(__obj, "__self__", None)
        if isinstance(owner, str):
            args = _check_str_call(owner, __obj.__name__, args, kwargs)
        return _built(super().call(__context, __obj, *args, **kwargs), what)

    def _call_nested(
        self, context: Any, obj: Macro | LoopContext, args: tuple[Any, ...], kwargs: Any
    ) -> Any:
        """A macro, ``caller`` or a recursive ``loop(...)``: calls nest at most
        ``MAX_CALL_DEPTH`` deep."""
        if isinstance(obj, LoopContext) and args:
            args = (_bounded_loop(args[0]), *args[1:])
        what = f"macro {obj.name!r}" if isinstance(obj, Macro) else "loop()"
        budget = _budget.get()
        if budget is None:
            return _built(super().call(context, obj, *args, **kwargs), what)
        if budget.depth >= MAX_CALL_DEPTH:
            raise TemplateLimitError(f"{what}: calls nested more than {MAX_CALL_DEPTH} deep")
        budget.depth += 1
        try:
            return _built(super().call(context, obj, *args, **kwargs), what)
        finally:
            budget.depth -= 1


# -- filters and tests


def _check_indent(s: Any, width: Any = 4, first: bool = False, blank: bool = False) -> None:
    text = str(s)
    pad = len(width) if isinstance(width, str) else width if isinstance(width, int) else 0
    if len(text) + (text.count("\n") + 1) * max(pad, 0) > MAX_OUTPUT_CHARS:
        raise _too_long("filter 'indent'")


def _check_center(value: Any, width: Any = 80) -> None:
    _check_width("filter 'center'", width)


def _check_format(value: Any, *args: Any, **kwargs: Any) -> None:
    _check_percent(str(value), kwargs or args)


def _check_replace(s: Any, old: Any, new: Any, count: Any = None) -> None:
    if _replaced_size(str(s), old, new, -1 if count is None else count) > MAX_OUTPUT_CHARS:
        raise _too_long("filter 'replace'")


def _check_batch(value: Any, linecount: Any, fill_with: Any = None) -> None:
    _check_width("filter 'batch'", linecount)


def _check_slice(value: Any, slices: Any, fill_with: Any = None) -> None:
    _check_width("filter 'slice'", slices)


def _check_round(value: Any, precision: Any = 0, method: Any = "common") -> None:
    if isinstance(precision, int) and abs(precision) > MAX_ROUND_DIGITS:
        raise TemplateLimitError(f"filter 'round' to {precision} digits, over {MAX_ROUND_DIGITS}")


def _check_sum(iterable: Any, attribute: Any = None, start: Any = 0) -> None:
    if not isinstance(start, int | float):
        raise SecurityError("filter 'sum' adds numbers only (its start must be a number)")


def _check_tojson(value: Any, indent: Any = None) -> None:
    size, depth = _measure(value)
    pad = len(indent) if isinstance(indent, str) else indent if isinstance(indent, int) else 0
    if pad > 0 and size + (size // 2) * (depth * pad + 1) > MAX_OUTPUT_CHARS:
        raise _too_long("filter 'tojson'")


_TEXT_FILTERS = frozenset(
    {
        "capitalize",
        "center",
        "e",
        "escape",
        "forceescape",
        "format",
        "indent",
        "lower",
        "replace",
        "safe",
        "string",
        "title",
        "tojson",
        "trim",
        "truncate",
        "upper",
        "urlencode",
        "wordcount",
    }
)
_OTHER_FILTERS = frozenset(
    {
        "abs",
        "attr",
        "batch",
        "count",
        "d",
        "default",
        "dictsort",
        "filesizeformat",
        "first",
        "float",
        "groupby",
        "int",
        "items",
        "join",
        "last",
        "length",
        "list",
        "map",
        "max",
        "min",
        "random",
        "reject",
        "rejectattr",
        "reverse",
        "round",
        "select",
        "selectattr",
        "slice",
        "sort",
        "sum",
        "unique",
    }
)
_PUBLIC_FILTERS = _TEXT_FILTERS | _OTHER_FILTERS
_FILTER_CHECKS: dict[str, Callable[..., None]] = {
    "batch": _check_batch,
    "center": _check_center,
    "format": _check_format,
    "indent": _check_indent,
    "replace": _check_replace,
    "round": _check_round,
    "slice": _check_slice,
    "sum": _check_sum,
    "tojson": _check_tojson,
}
_CONSTANT_TIME_FILTERS = frozenset(
    {"attr", "count", "d", "default", "first", "last", "length", "random"}
)
_TEXT_TESTS = frozenset({"lower", "upper"})
_SET_BLOCK_FILTER = "_assay_set_block"  # not public: _BoundingTransformer adds it


def _passed(context: Any, kind: _PassArg | None) -> tuple[Any, ...]:
    """What Jinja would pass first to a filter or test marked ``kind``."""
    if kind is _PassArg.context:
        return (context,)
    if kind is _PassArg.eval_context:
        return (context.eval_ctx,)
    if kind is _PassArg.environment:
        return (context.environment,)
    return ()


def _bounded_filter(name: str, original: Callable[..., Any]) -> Callable[..., Any]:
    """``original``, each call an operation (and one per ``_SCAN_CHARS`` of its input), its
    input checked first (when the filter writes it out, or has a check in
    ``_FILTER_CHECKS``) and its result after. Bounded filters take the context, so Jinja
    does not run them at compile time, outside any budget."""
    what = f"filter {name!r}"
    kind = _PassArg.from_obj(original)
    check = _FILTER_CHECKS.get(name)
    text = name in _TEXT_FILTERS
    reads = name not in _CONSTANT_TIME_FILTERS

    @jinja2.pass_context
    def bounded(context: Any, value: Any, *args: Any, **kwargs: Any) -> Any:
        if reads:
            _scan(value)
        else:
            _step()
        if text:
            _written(value, what)
        if check is not None:
            check(value, *args, **kwargs)
        if name == "join":
            value = _check_join(str(args[0] if args else kwargs.get("d", "")), value, what)
        result = original(*_passed(context, kind), value, *args, **kwargs)
        if isinstance(result, Iterator):
            return _bounded_items(result, what)
        return _built(result, what)

    bounded.__name__ = bounded.__qualname__ = f"bounded_{name}"
    return bounded


def _bounded_test(name: str, original: Callable[..., Any]) -> Callable[..., Any]:
    kind = _PassArg.from_obj(original)
    text = name in _TEXT_TESTS

    @jinja2.pass_context
    def bounded(context: Any, value: Any, *args: Any, **kwargs: Any) -> Any:
        _step()
        if text:
            _written(value, f"test {name!r}")
        if name == "in" and args:
            _scan(args[0])
        return original(*_passed(context, kind), value, *args, **kwargs)

    bounded.__name__ = bounded.__qualname__ = f"bounded_{name}"
    return bounded


@jinja2.pass_context
def _set_block(context: Any, value: Any) -> Any:
    return _built(value, "{% set %} block")


_ENV = _BoundedEnvironment(
    undefined=jinja2.StrictUndefined,
    autoescape=False,
    keep_trailing_newline=True,
    extensions=[_Bounds],
)
_ENV.globals.clear()
_ENV.globals.update(range=_bounded_range, dict=dict, namespace=Namespace)
_ENV.filters.clear()
_ENV.filters.update({name: _bounded_filter(name, FILTERS[name]) for name in _PUBLIC_FILTERS})
_ENV.filters[_SET_BLOCK_FILTER] = _set_block
_ENV.tests.clear()
_ENV.tests.update({name: _bounded_test(name, test) for name, test in TESTS.items()})


@functools.lru_cache(maxsize=32)
def _compiled(template: str) -> jinja2.Template:
    return _ENV.from_string(_bounded_ast(_ENV.parse(template)))


# -- registration and rendering


def _refuse_unavailable(ast: nodes.Template, declared: set[str], where: str) -> None:
    """Refuse, naming the line, what a prompt template cannot use."""
    count = sum(1 for _ in ast.find_all(nodes.Node))
    if count > MAX_TEMPLATE_NODES:
        raise invalid(
            f"{where}: template has {count} syntax nodes (placeholders, tags, literals, "
            f"operators), over {MAX_TEMPLATE_NODES}"
        )
    for kind, tag in _REFUSED_TAGS.items():
        found = next(iter(ast.find_all(kind)), None)
        if found is not None:
            raise invalid(
                f"{where}: '{tag}' at line {found.lineno} is not allowed; a prompt template "
                "stands alone"
            )
    for name in ast.find_all(nodes.Name):
        if name.ctx == "load" and name.name in _REFUSED_GLOBALS and name.name not in declared:
            raise invalid(
                f"{where}: '{name.name}' at line {name.lineno} is not available in a prompt "
                "template"
            )
    for node in ast.find_all((nodes.Filter, nodes.Test)):
        is_filter = isinstance(node, nodes.Filter)
        if node.name not in (_PUBLIC_FILTERS if is_filter else _ENV.tests):
            kind = "filter" if is_filter else "test"
            raise invalid(
                f"{where}: {kind} '{node.name}' at line {node.lineno} is not available in a "
                "prompt template"
            )
    for attr in ast.find_all(nodes.Getattr):
        if attr.attr in _REFUSED_ATTRIBUTES:
            raise invalid(
                f"{where}: '.{attr.attr}' at line {attr.lineno} is not allowed; a prompt "
                "template cannot change values"
            )


def check_template(template: object, variables: Iterable[object], where: str) -> tuple[str, ...]:
    """Validate a template against its declared variables; return them, sorted and unique.

    Raises INVALID_PARAMETER_VALUE naming ``where`` when the template does not parse or
    compile, is too large or too deeply nested, uses ``include``/``import``/``extends`` or a
    refused global, filter, test or method, a placeholder is not declared, or a declared
    name is not an identifier.
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
        _refuse_unavailable(ast, declared, where)
        used = meta.find_undeclared_variables(ast)
    except jinja2.TemplateSyntaxError as exc:
        raise invalid(f"{where}: malformed template at line {exc.lineno}: {exc.message}") from exc
    except RecursionError as exc:
        raise invalid(f"{where}: template nested too deeply") from exc
    undeclared = sorted(used - declared)
    if undeclared:
        raise invalid(f"{where}: placeholder(s) not declared as variables: {', '.join(undeclared)}")
    try:
        _compiled(template)
    except Exception as exc:  # nested too deeply for Python, an unknown loop name, ...
        raise invalid(f"{where}: template does not compile: {_brief(exc)}") from exc
    return tuple(sorted(declared))


def _brief(exc: BaseException, limit: int = 300) -> str:
    text = f"{type(exc).__name__}: {exc}"
    return text if len(text) <= limit else text[:limit] + "..."


def _collect(chunks: Iterator[str]) -> str:
    out: list[str] = []
    size = 0
    try:
        for chunk in chunks:
            size += len(chunk)
            if size > MAX_OUTPUT_CHARS:
                raise TemplateLimitError(f"output over {MAX_OUTPUT_CHARS} characters")
            out.append(chunk)
    finally:
        close = getattr(chunks, "close", None)
        if close is not None:
            close()
    return "".join(out)


def render_template(
    template: str, declared: Iterable[str], values: Mapping[str, object], where: str
) -> str:
    """Render with exactly the declared variables; unknown or missing names are refused.

    Any failure, a limit of the module docstring included, is INVALID_PARAMETER_VALUE
    naming ``where``.
    """
    declared_set = set(declared)
    unknown = sorted(set(values) - declared_set)
    if unknown:
        raise invalid(f"{where}: unknown variable(s): {', '.join(unknown)}")
    missing = sorted(declared_set - set(values))
    if missing:
        raise invalid(f"{where}: missing variable(s): {', '.join(missing)}")
    try:
        compiled = _compiled(template)  # outside the budget: compiled once, then cached
        token = _budget.set(_Budget())
        try:
            return _collect(compiled.generate(**values))
        finally:
            _budget.reset(token)
    except Exception as exc:  # any failure of a stored template is the template's fault
        raise invalid(f"{where}: rendering failed: {_brief(exc)}") from exc
