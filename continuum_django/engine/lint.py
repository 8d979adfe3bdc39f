"""The determinism lint: workflow code is read at registration for calls that break replay.

Pure and best-effort: it parses the function's own source with `ast` and resolves each
dotted name through the function's imports, closure and globals (so ``import datetime as
dt`` and ``from time import time`` are both seen). Helpers the function calls are not
followed, and whatever is passed to ``ctx.side_effect(...)`` is allowed: that is where
non-deterministic code belongs.
"""

from __future__ import annotations

import ast
import builtins
import inspect
import os
import textwrap
import types
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True, kw_only=True)
class Rule:
    """One kind of non-deterministic call, the dotted names that make it, and what to use."""

    id: str
    names: tuple[str, ...]
    hint: str

    def matches(self, dotted: str) -> bool:
        return any(dotted == name or dotted.startswith(name + ".") for name in self.names)


RULES: tuple[Rule, ...] = (
    Rule(
        id="time.time",
        names=("time.time", "time.time_ns", "time.monotonic", "time.perf_counter"),
        hint="use ctx.now(), which replays the same time",
    ),
    Rule(
        id="datetime.now",
        names=(
            "datetime.datetime.now",
            "datetime.datetime.utcnow",
            "datetime.datetime.today",
            "datetime.date.today",
            "django.utils.timezone.now",
        ),
        hint="use ctx.now(), which replays the same time",
    ),
    Rule(
        id="random",
        names=("random",),
        hint="use ctx.random() (or ctx.uuid4() for ids), drawn from the run's seeded generator",
    ),
    Rule(
        id="uuid",
        names=("uuid.uuid1", "uuid.uuid4"),
        hint="use ctx.uuid4(), drawn from the run's seeded generator",
    ),
    Rule(
        id="time.sleep",
        names=("time.sleep",),
        hint="use ctx.sleep(seconds), a durable timer",
    ),
    Rule(
        id="os.environ",
        names=("os.environ", "os.environb", "os.getenv"),
        hint="pass the value as workflow input, or read it in ctx.side_effect(lambda: ...)",
    ),
    Rule(
        id="orm",
        names=("django.db",),
        hint="query the database in an activity and call it with ctx.activity(...)",
    ),
    Rule(
        id="network",
        names=(
            "requests",
            "httpx",
            "urllib",
            "urllib3",
            "http.client",
            "socket",
            "smtplib",
            "django.core.mail",
        ),
        hint="do network I/O in an activity and call it with ctx.activity(...)",
    ),
    Rule(
        id="threading",
        names=("threading", "_thread", "concurrent.futures", "multiprocessing"),
        hint="run work concurrently with ctx.start_activity(...) and ctx.wait_all(...)",
    ),
)
RULE_IDS = frozenset(rule.id for rule in RULES)


@dataclass(frozen=True, slots=True, kw_only=True)
class LintFinding:
    """A call in workflow code that would not replay the same way."""

    rule: str
    call: str
    line: int
    hint: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.call} breaks replay; {self.hint}"


def lint_workflow(fn: Callable[..., Any]) -> tuple[LintFinding, ...]:
    """The findings in ``fn``'s own body, in source order (none when its source is unavailable)."""
    try:
        lines, first_line = inspect.getsourcelines(fn)
        tree = ast.parse(textwrap.dedent("".join(lines)))
    except (OSError, TypeError, SyntaxError):
        return ()
    function = next(
        (n for n in tree.body if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)), None
    )
    if function is None:
        return ()
    resolver = _Resolver(fn, function)
    found: dict[tuple[int, str], tuple[int, LintFinding]] = {}
    for node in _chains(function):
        dotted = resolver.dotted(node)
        rule = _rule_for(dotted) if dotted else None
        if rule is None or dotted is None:
            continue
        line = first_line + node.lineno - 1
        finding = LintFinding(rule=rule.id, call=dotted, line=line, hint=rule.hint)
        key = (line, rule.id)
        if key not in found or node.col_offset < found[key][0]:
            found[key] = (node.col_offset, finding)
    ordered = sorted(found.values(), key=lambda pair: (pair[1].line, pair[0]))
    return tuple(finding for _, finding in ordered)


def _rule_for(dotted: str) -> Rule | None:
    return next((rule for rule in RULES if rule.matches(dotted)), None)


def _chains(function: ast.FunctionDef | ast.AsyncFunctionDef) -> Iterator[ast.expr]:
    """Every maximal ``a.b.c`` chain in the body, outside what ``side_effect`` is given."""
    allowed = _side_effect_code(function)
    inner: set[int] = set()
    stack: list[ast.AST] = list(function.body)
    while stack:
        node = stack.pop()
        if id(node) in allowed:
            continue
        if isinstance(node, ast.Attribute):
            inner.add(id(node.value))
        if isinstance(node, ast.Name | ast.Attribute) and id(node) not in inner:
            yield node
        if isinstance(node, ast.AnnAssign):
            stack.extend(n for n in (node.target, node.value) if n is not None)
            continue
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            stack.extend(node.body)  # skip annotations and decorators of nested functions
            continue
        stack.extend(ast.iter_child_nodes(node))


def _side_effect_code(function: ast.AST) -> set[int]:
    """Nodes passed to ``ctx.side_effect(...)``, and nested functions passed to it by name."""
    allowed: set[int] = set()
    named: set[str] = set()
    for node in ast.walk(function):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "side_effect"
        ):
            for arg in [*node.args, *(k.value for k in node.keywords)]:
                allowed.add(id(arg))
                if isinstance(arg, ast.Name):
                    named.add(arg.id)
    for node in ast.walk(function):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name in named:
            allowed.add(id(node))
    return allowed


class _Resolver:
    """Turns ``dt.datetime.now`` into ``datetime.datetime.now`` using the function's names."""

    def __init__(
        self, fn: Callable[..., Any], function: ast.FunctionDef | ast.AsyncFunctionDef
    ) -> None:
        self.imports: dict[str, str] = {}
        self.local: set[str] = {a.arg for a in ast.walk(function.args) if isinstance(a, ast.arg)}
        for node in ast.walk(function):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    self.imports[alias.asname or alias.name.split(".")[0]] = (
                        alias.name if alias.asname else alias.name.split(".")[0]
                    )
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                for alias in node.names:
                    self.imports[alias.asname or alias.name] = f"{node.module}.{alias.name}"
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                self.local.add(node.id)
        code = getattr(fn, "__code__", None)
        cells = getattr(fn, "__closure__", None) or ()
        self.closure: dict[str, Any] = {}
        for name, cell in zip(code.co_freevars if code else (), cells, strict=False):
            try:
                self.closure[name] = cell.cell_contents
            except ValueError:  # an empty cell: the variable is not bound yet
                continue
        self.globals: dict[str, Any] = getattr(fn, "__globals__", {})

    def dotted(self, node: ast.expr) -> str | None:
        attrs: list[str] = []
        while isinstance(node, ast.Attribute):
            attrs.append(node.attr)
            node = node.value
        if not isinstance(node, ast.Name):
            return None
        attrs.reverse()
        root = node.id
        if root in self.imports:
            base: str | None = self.imports[root]
        elif root in self.local:
            return None
        elif root in self.closure:
            base = _canonical(self.closure[root], attrs)
        elif root in self.globals:
            base = _canonical(self.globals[root], attrs)
        elif hasattr(builtins, root):
            return None
        else:
            return None
        return ".".join([base, *attrs]) if base else None


def _canonical(obj: Any, attrs: list[str]) -> str | None:
    """The dotted name of an object a workflow refers to, as the rules spell it."""
    if isinstance(obj, types.ModuleType):
        return obj.__name__
    if obj is os.environ or obj is getattr(os, "environb", None):
        return "os.environ"
    if isinstance(obj, type) and hasattr(obj, "_meta") and attrs[:1] == ["objects"]:
        return "django.db.models"  # a Django model's manager: an ORM query
    target = obj if callable(obj) and hasattr(obj, "__qualname__") else type(obj)
    module = getattr(target, "__module__", None)
    qualname = getattr(target, "__qualname__", None)
    if isinstance(module, str) and isinstance(qualname, str):
        return f"{module}.{qualname}"
    return None


def signal_names_waited(fn: Callable[..., Any]) -> frozenset[str] | None:
    """The signal names ``fn``'s own body waits for with ``wait_signal("name", ...)``.

    ``None`` when that cannot be known: the source is unavailable, or a wait's name is
    not a string literal (computed at run time).
    """
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(fn)))
    except (OSError, TypeError, SyntaxError):
        return None
    names: set[str] = set()
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
        if called != "wait_signal":
            continue
        given = node.args[0] if node.args else None
        for keyword in node.keywords:
            if keyword.arg == "name":
                given = keyword.value
        if not (isinstance(given, ast.Constant) and isinstance(given.value, str)):
            return None
        names.add(given.value)
    return frozenset(names)
