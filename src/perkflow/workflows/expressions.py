"""Expressions in workflow parameters: sandboxed Jinja2 templates over event, customer, reward, coupon.

A string parameter containing `{{ ... }}` is a template. When the whole string is one `{{ expression }}`
its value keeps its type (`{{ event.total }}` is an integer, `{{ event.items }}` a list); otherwise the
template renders to a string. Every reference is checked when the workflow is saved, so a typo such as
`customer.frist_name` is refused then rather than failing at run time.

Templates run inside ingestion transactions, so they must not be able to stall or exhaust the process:
on top of Jinja2's sandbox (no Python internals, no `eval`) only `{{ expressions }}` are allowed (no
`{% for %}` loops), dots and brackets read only dictionary keys and list positions (no methods such
as `"x".ljust(10**9)`), filters are a short list that cannot amplify their input, `*`, `**` and `%`
refuse results beyond fixed sizes, and a rendered value must be plain JSON of bounded size.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from jinja2 import StrictUndefined, TemplateSyntaxError, nodes
from jinja2.exceptions import SecurityError, UndefinedError
from jinja2.sandbox import SandboxedEnvironment

ROOTS = ("event", "customer", "reward", "coupon", "now")
MAX_TEMPLATE = 4000
MAX_STRING = 10_000  # characters of one rendered string
MAX_ITEMS = 1_000  # elements of one rendered list or object
MAX_POWER_BASE = 10**6
MAX_EXPONENT = 64
INT64 = 2**63


class ExpressionError(ValueError):
    """A template that cannot be used; the message says why."""


class RenderError(ValueError):
    """A template that failed for this run (a missing value, a bad operation)."""


def _iso(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat().replace("+00:00", "Z")
    if isinstance(value, date):
        return value.isoformat()
    return value


def _to_int(value: Any, default: int = 0) -> int:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return default
    return int(number) if math.isfinite(number) else default


def _to_float(value: Any, default: float = 0.0) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return default
    return number if math.isfinite(number) else default


def _date(value: Any, fmt: str = "%Y-%m-%d") -> Any:
    """Format a datetime, a date or an ISO string; anything else is returned unchanged."""
    if len(fmt) > 64:
        raise SecurityError("date formats are limited to 64 characters")
    moment: Any = value
    if isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return value
    if isinstance(moment, datetime | date):
        return moment.strftime(fmt)
    return value


def _size_of(value: Any) -> int:
    if isinstance(value, str | list | tuple | dict):
        return len(value)
    return 0


class _Environment(SandboxedEnvironment):
    """Dots and brackets read dictionary keys and list positions only (`event.items` is the checkout's
    items, not dict.items), and the operators that could build huge values are bounded."""

    intercepted_binops = frozenset({"*", "**", "%"})

    def getattr(self, obj: Any, attribute: str) -> Any:
        if isinstance(obj, Mapping):
            try:
                return obj[attribute]
            except KeyError:
                return self.undefined(obj=obj, name=attribute)
        return self.undefined(obj=obj, name=attribute)

    def getitem(self, obj: Any, argument: Any) -> Any:
        if isinstance(obj, Mapping):
            try:
                return obj[argument]
            except (KeyError, TypeError):
                return self.undefined(obj=obj, name=str(argument))
        if isinstance(obj, list | tuple | str) and (
            (isinstance(argument, int) and not isinstance(argument, bool)) or isinstance(argument, slice)
        ):
            try:
                return obj[argument]
            except IndexError:
                return self.undefined(obj=obj, name=str(argument))
        return self.undefined(obj=obj, name=str(argument))

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if operator == "**":
            if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in (left, right)):
                raise SecurityError("** takes numbers")
            if abs(left) > MAX_POWER_BASE or not 0 <= right <= MAX_EXPONENT:
                raise SecurityError(f"** is limited to bases up to {MAX_POWER_BASE} and exponents 0-64")
            return left**right
        if operator == "%":
            if isinstance(left, str):
                raise SecurityError("% string formatting is not available; use ~ to join strings")
            return left % right
        # "*": repeating a string or a list is bounded; numbers multiply freely.
        count = right if isinstance(right, int) else left if isinstance(left, int) else None
        sequence = left if _size_of(left) else right if _size_of(right) else None
        if sequence is not None and count is not None and _size_of(sequence) * max(count, 0) > MAX_STRING:
            raise SecurityError(f"the result would be longer than {MAX_STRING}")
        return left * right


SAFE_FILTERS = (
    "abs",
    "capitalize",
    "count",
    "d",
    "default",
    "first",
    "join",
    "last",
    "length",
    "lower",
    "max",
    "min",
    "round",
    "string",
    "sum",
    "title",
    "trim",
    "truncate",
    "upper",
)


def _environment() -> _Environment:
    env = _Environment(undefined=StrictUndefined, autoescape=False)
    builtin = env.filters
    filters: dict[str, Callable[..., Any]] = {name: builtin[name] for name in SAFE_FILTERS}
    filters.update(iso=_iso, int=_to_int, float=_to_float, date=_date)
    env.filters = filters
    env.globals = {}
    env.tests = {name: env.tests[name] for name in ("defined", "undefined", "none", "number", "string")}
    return env


ENV = _environment()


@dataclass(frozen=True, slots=True)
class References:
    """What a template reads: root names, and (root, first attribute) pairs."""

    roots: frozenset[str]
    attributes: frozenset[tuple[str, str]]


def _single_expression(source: str) -> str | None:
    """The expression of a string that is exactly one `{{ ... }}`, else None."""
    stripped = source.strip()
    if not (stripped.startswith("{{") and stripped.endswith("}}")):
        return None
    inner = stripped[2:-2]
    if "{{" in inner or "}}" in inner:
        return None
    return inner.strip("- ").strip()


def is_template(value: Any) -> bool:
    return isinstance(value, str) and ("{{" in value or "{%" in value)


def _parse(source: str) -> nodes.Template:
    if len(source) > MAX_TEMPLATE:
        raise ExpressionError(f"templates are limited to {MAX_TEMPLATE} characters")
    if "{%" in source:
        raise ExpressionError("templates hold {{ expressions }} only; {% statements %} are not available")
    try:
        return ENV.parse(source)
    except TemplateSyntaxError as exc:
        raise ExpressionError(f"template syntax error: {exc.message}") from exc


def references(source: str) -> References:
    """Parse a template and list what it reads; ExpressionError if it cannot be used."""
    tree = _parse(source)
    for name in (n.name for n in tree.find_all(nodes.Filter)):
        if name not in ENV.filters:
            raise ExpressionError(f"unknown filter {name!r}; filters: {', '.join(sorted(ENV.filters))}")
    for name in (n.name for n in tree.find_all(nodes.Test)):
        if name not in ENV.tests:
            raise ExpressionError(f"unknown test {name!r}; tests: {', '.join(sorted(ENV.tests))}")
    if any(True for _ in tree.find_all(nodes.Call)):
        raise ExpressionError("templates cannot call functions; use filters, e.g. {{ event.total | int }}")
    roots = {n.name for n in tree.find_all(nodes.Name) if n.ctx == "load"}
    pairs: set[tuple[str, str]] = set()
    for node in tree.find_all((nodes.Getattr, nodes.Getitem)):
        target = getattr(node, "node", None)
        if isinstance(target, nodes.Name) and target.ctx == "load":
            if isinstance(node, nodes.Getattr):
                pairs.add((target.name, node.attr))
            elif isinstance(node, nodes.Getitem):
                arg = node.arg
                if isinstance(arg, nodes.Const) and isinstance(arg.value, str):
                    pairs.add((target.name, arg.value))
    return References(frozenset(roots), frozenset(pairs))


SIMPLE_PATH = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z0-9_]+)*$")


def _follow(scope: Mapping[str, Any], path: tuple[str, ...], source: str) -> Any:
    """A dotted path read as the sandbox reads it (keys of mappings, positions in lists), without
    Jinja: most templates are one such path, and a Jinja call costs a fresh context each time."""
    current: Any = scope
    for part in path:
        # type() first: most steps are plain dicts, and an ABC isinstance check costs several times more.
        if type(current) is dict or isinstance(current, Mapping):
            try:
                current = current[part]
                continue
            except KeyError:
                pass
        elif isinstance(current, list | tuple) and part.isdigit() and int(part) < len(current):
            current = current[int(part)]
            continue
        raise RenderError(f"{source}: {part!r} is undefined")
    return current


@dataclass(frozen=True, slots=True)
class Template:
    source: str
    typed: bool  # True: one expression, value keeps its type
    _compiled: Any
    path: tuple[str, ...] | None = None  # a plain dotted path, read without Jinja

    def render(self, scope: Mapping[str, Any]) -> Any:
        try:
            if self.path is not None:
                return _plain(_follow(scope, self.path, self.source))
            if self.typed:
                return _plain(self._compiled(**scope))
            return _plain(self._compiled.render(**scope))
        except UndefinedError as exc:
            raise RenderError(f"{self.source}: {exc.message}") from exc
        except SecurityError as exc:
            raise RenderError(f"{self.source}: not allowed ({exc})") from exc
        except (TypeError, ValueError, ArithmeticError, LookupError, RecursionError) as exc:
            raise RenderError(f"{self.source}: {exc}") from exc


def _plain(value: Any, depth: int = 0) -> Any:
    """A rendered value as bounded, JSON-safe data (strict undefined values raise here, not later)."""
    kind = type(value)
    # Most values are a short text or a number: answered before the general checks below.
    if kind is str and len(value) <= MAX_STRING:
        return value
    if kind is int and -INT64 <= value < INT64:
        return value
    if isinstance(value, StrictUndefined):
        str(value)  # raises UndefinedError with the missing name
    if depth > 20:
        raise ValueError("the value is nested too deeply")
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        if not -INT64 <= value < INT64:
            raise ValueError("the number does not fit in 64 bits")
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError("the number is not finite")
        return value
    if isinstance(value, str):
        if len(value) > MAX_STRING:
            raise ValueError(f"the text is longer than {MAX_STRING} characters")
        return value
    if isinstance(value, datetime | date):
        return _iso(value)
    if isinstance(value, Mapping):
        if len(value) > MAX_ITEMS:
            raise ValueError(f"the object has more than {MAX_ITEMS} entries")
        return {str(k): _plain(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple):
        if len(value) > MAX_ITEMS:
            raise ValueError(f"the list has more than {MAX_ITEMS} elements")
        return [_plain(v, depth + 1) for v in value]
    return _plain(str(value), depth)


def compile_template(source: str) -> Template:
    references(source)  # the same checks as on save, whoever compiles it
    expression = _single_expression(source)
    try:
        if expression is not None:
            compiled = ENV.compile_expression(expression, undefined_to_none=False)
            path = tuple(expression.split(".")) if SIMPLE_PATH.match(expression) else None
            return Template(source, True, compiled, path)
        return Template(source, False, ENV.from_string(source))
    except TemplateSyntaxError as exc:
        raise ExpressionError(f"template syntax error: {exc.message}") from exc


class CompiledValue:
    """A parameter value (string, number, list, object) with its templates compiled once."""

    __slots__ = ("_render_value", "_templates", "_value", "is_static")

    def __init__(self, value: Any) -> None:
        self._value = value
        self._templates: dict[str, Template] = {}
        self._collect(value)
        self.is_static = not self._templates
        # The value as one function of the scope, built once: rendering then does no type dispatch.
        self._render_value = self._compile(value)

    def _collect(self, value: Any) -> None:
        if is_template(value):
            if value not in self._templates:
                self._templates[value] = compile_template(value)
        elif isinstance(value, Mapping):
            for item in value.values():
                self._collect(item)
        elif isinstance(value, list):
            for item in value:
                self._collect(item)

    def render(self, scope: Mapping[str, Any]) -> Any:
        if self.is_static:
            return self._value
        return self._render_value(scope)

    def _compile(self, value: Any) -> Callable[[Mapping[str, Any]], Any]:
        if isinstance(value, str):
            template = self._templates.get(value)
            if template is not None:
                return template.render
        elif isinstance(value, Mapping):
            items = [(k, self._compile(v)) for k, v in value.items()]
            return lambda scope: {k: render(scope) for k, render in items}
        elif isinstance(value, list):
            renders = [self._compile(v) for v in value]
            return lambda scope: [render(scope) for render in renders]
        return lambda scope: value


def template_strings(value: Any) -> list[str]:
    """Every template string inside a parameter value."""
    found: list[str] = []
    if is_template(value):
        found.append(value)
    elif isinstance(value, Mapping):
        for item in value.values():
            found.extend(template_strings(item))
    elif isinstance(value, list):
        for item in value:
            found.extend(template_strings(item))
    return found
