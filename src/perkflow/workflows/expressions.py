"""Expressions in workflow parameters: sandboxed Jinja2 templates over event, customer, reward, coupon.

A string parameter containing `{{ ... }}` is a template. When the whole string is one `{{ expression }}`
its value keeps its type (`{{ event.total }}` is an integer, `{{ event.items }}` a list); otherwise the
template renders to a string. Templates run in Jinja2's sandbox (no attribute access to Python
internals, no `eval`) with strict undefined values, and every reference is checked when the workflow
is saved, so a typo such as `customer.frist_name` is refused then rather than failing at run time.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from jinja2 import StrictUndefined, TemplateSyntaxError, nodes
from jinja2.exceptions import SecurityError, UndefinedError
from jinja2.sandbox import SandboxedEnvironment

ROOTS = ("event", "customer", "reward", "coupon", "now")
MAX_TEMPLATE = 4000


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


class _Environment(SandboxedEnvironment):
    """Dots read dictionary keys first, so `event.items` is the checkout's items, not dict.items."""

    def getattr(self, obj: Any, attribute: str) -> Any:
        if isinstance(obj, Mapping):
            try:
                return obj[attribute]
            except KeyError:
                return self.undefined(obj=obj, name=attribute)
        return super().getattr(obj, attribute)


ENV = _Environment(undefined=StrictUndefined, autoescape=False)
ENV.filters["iso"] = _iso
ENV.filters["int"] = _to_int


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
    if "{{" in inner or "}}" in inner or "{%" in inner:
        return None
    return inner.strip("- ").strip()


def is_template(value: Any) -> bool:
    return isinstance(value, str) and ("{{" in value or "{%" in value)


def references(source: str) -> References:
    """Parse a template and list what it reads; ExpressionError if it does not parse."""
    if len(source) > MAX_TEMPLATE:
        raise ExpressionError(f"templates are limited to {MAX_TEMPLATE} characters")
    try:
        tree = ENV.parse(source)
    except TemplateSyntaxError as exc:
        raise ExpressionError(f"template syntax error: {exc.message}") from exc
    assigned = {n.name for n in tree.find_all(nodes.Name) if n.ctx in ("store", "param")}
    roots = {n.name for n in tree.find_all(nodes.Name) if n.ctx == "load" and n.name not in assigned}
    pairs: set[tuple[str, str]] = set()
    for node in tree.find_all((nodes.Getattr, nodes.Getitem)):
        target = getattr(node, "node", None)
        if isinstance(target, nodes.Name) and target.ctx == "load" and target.name not in assigned:
            if isinstance(node, nodes.Getattr):
                pairs.add((target.name, node.attr))
            elif isinstance(node, nodes.Getitem):
                arg = node.arg
                if isinstance(arg, nodes.Const) and isinstance(arg.value, str):
                    pairs.add((target.name, arg.value))
    return References(frozenset(roots), frozenset(pairs))


@dataclass(frozen=True, slots=True)
class Template:
    source: str
    typed: bool  # True: one expression, value keeps its type
    _compiled: Any

    def render(self, scope: Mapping[str, Any]) -> Any:
        try:
            if self.typed:
                return _plain(self._compiled(**scope))
            return self._compiled.render(**scope)
        except UndefinedError as exc:
            raise RenderError(f"{self.source}: {exc.message}") from exc
        except SecurityError as exc:
            raise RenderError(f"{self.source}: not allowed ({exc})") from exc
        except (TypeError, ValueError, ArithmeticError, LookupError) as exc:
            raise RenderError(f"{self.source}: {exc}") from exc


def _plain(value: Any) -> Any:
    """A rendered value as JSON-friendly data (strict undefined values raise here, not later)."""
    if isinstance(value, StrictUndefined):
        str(value)  # raises UndefinedError with the missing name
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, datetime | date):
        return _iso(value)
    return value


def compile_template(source: str) -> Template:
    expression = _single_expression(source)
    try:
        if expression is not None:
            return Template(source, True, ENV.compile_expression(expression, undefined_to_none=False))
        return Template(source, False, ENV.from_string(source))
    except TemplateSyntaxError as exc:
        raise ExpressionError(f"template syntax error: {exc.message}") from exc


class CompiledValue:
    """A parameter value (string, number, list, object) with its templates compiled once."""

    __slots__ = ("_templates", "_value", "is_static")

    def __init__(self, value: Any) -> None:
        self._value = value
        self._templates: dict[str, Template] = {}
        self._collect(value)
        self.is_static = not self._templates

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
        return self._render(self._value, scope)

    def _render(self, value: Any, scope: Mapping[str, Any]) -> Any:
        if isinstance(value, str):
            template = self._templates.get(value)
            return template.render(scope) if template is not None else value
        if isinstance(value, Mapping):
            return {k: self._render(v, scope) for k, v in value.items()}
        if isinstance(value, list):
            return [self._render(v, scope) for v in value]
        return value


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
