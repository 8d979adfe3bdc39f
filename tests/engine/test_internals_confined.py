"""Django's undocumented API is used only in ``continuum_django/journal/internals.py``:
every other module of the package is read (its syntax tree, not its text) for the names
that adapter wraps."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import continuum_django

PACKAGE = Path(continuum_django.__file__).parent
ADAPTER = PACKAGE / "journal" / "internals.py"

# Modules whose contents Django does not document; importing from them is the adapter's.
PRIVATE_MODULES = ("django.db.models.sql", "django.db.models.base", "django.db.backends.utils")
# Imported only for annotations (``if TYPE_CHECKING:``), which no upgrade can break at run time.
ANNOTATION_ONLY = ("django.db.backends.base",)
# Attributes of connections, cursors, fields, signals and models that Django does not document.
PRIVATE_ATTRIBUTES = frozenset(
    {
        "__new__",  # a model built without __init__
        "atomic_blocks",
        "auto_field",
        "cast_db_type",
        "compiler",
        "ensure_connection",
        "features",
        "force_debug_cursor",
        "get_col",
        "get_compiler",
        "get_db_converters",
        "get_default",
        "has_listeners",
        "in_atomic_block",
        "make_cursor",
        "ops",
        "queries_log",
        "queries_logged",
        "target_field",
        "wrap_database_errors",
    }
)
# Undocumented only on a database connection (a model may have a field of the same name).
CONNECTION_ATTRIBUTES = frozenset({"timezone"})


def _name(node: ast.AST) -> str:
    """The trailing name of an expression (``connections[x]`` counts as ``connections``)."""
    if isinstance(node, ast.Subscript):
        return _name(node.value)
    if isinstance(node, ast.Attribute):
        return node.attr
    if isinstance(node, ast.Name):
        return node.id
    return ""


def _type_checking(tree: ast.Module) -> set[int]:
    """The ids of the import nodes under ``if TYPE_CHECKING:``."""
    inside: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and _name(node.test) == "TYPE_CHECKING":
            inside.update(id(child) for stmt in node.body for child in ast.walk(stmt))
    return inside


def findings(source: str) -> list[str]:
    """Each use of Django's undocumented API in ``source``, as ``line: what``."""
    tree = ast.parse(source)
    typing_only = _type_checking(tree)
    found = []
    for node in ast.walk(tree):
        line = getattr(node, "lineno", 0)
        if isinstance(node, ast.ImportFrom | ast.Import):
            modules = (
                [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else [alias.name for alias in node.names]
            )
            for module in modules:
                if module.startswith(PRIVATE_MODULES) or (
                    module.startswith(ANNOTATION_ONLY) and id(node) not in typing_only
                ):
                    found.append(f"{line}: imports {module}")
        elif isinstance(node, ast.Attribute):
            receiver = _name(node.value)
            if receiver == "internals":
                continue  # the adapter's own functions
            if node.attr in PRIVATE_ATTRIBUTES:
                found.append(f"{line}: .{node.attr}")
            elif node.attr in CONNECTION_ATTRIBUTES and receiver.endswith(
                ("connection", "connections")
            ):
                found.append(f"{line}: .{node.attr} of a connection")
            elif node.attr == "connection" and receiver.endswith(("connection", "connections")):
                found.append(f"{line}: the raw connection (.connection of a connection)")
            elif node.attr in ("cursor", "db") and "cursor" in receiver:
                found.append(f"{line}: .{node.attr} of a Django cursor wrapper")
            elif isinstance(node.ctx, ast.Store) and "_state" in (node.attr, receiver):
                found.append(f"{line}: writes a model's _state")
    return found


def _modules() -> list[Path]:
    # The engine imports no Django at all (tests/engine/test_purity.py).
    return sorted(
        path
        for path in PACKAGE.rglob("*.py")
        if path != ADAPTER and "engine" not in path.relative_to(PACKAGE).parts
    )


@pytest.mark.parametrize("path", _modules(), ids=lambda path: str(path.relative_to(PACKAGE)))
def test_undocumented_django_api_is_used_only_in_the_adapter(path: Path) -> None:
    used = findings(path.read_text())
    assert not used, (
        f"{path.relative_to(PACKAGE)} uses Django API outside its documentation: {used}; "
        "go through continuum_django/journal/internals.py (and pin the assumption in "
        "tests/django/test_internals.py)"
    )


@pytest.mark.parametrize(
    "source",
    [
        "from django.db.models.sql import Query",
        "from django.db.models.base import ModelState",
        "from django.db.backends.utils import CursorDebugWrapper",
        "from django.db.backends.base.base import BaseDatabaseWrapper",
        "row = WorkflowRun.__new__(WorkflowRun)",
        "quote = connection.ops.quote_name",
        "raw = connections['default'].connection",
        "raw = self.connection.connection",
        "logs = connection.queries_logged",
        "cursor.cursor.connection",
        "owner = cursor.db",
        "instance._state.adding = False",
        "instance._state = state",
        "len(connection.atomic_blocks)",
        "field.get_col(table)",
    ],
)
def test_the_check_finds_each_kind_of_use(source: str) -> None:
    assert findings(source), f"the confinement check misses {source!r}"


def test_the_check_allows_documented_api() -> None:
    allowed = """
from typing import TYPE_CHECKING
if TYPE_CHECKING:
    from django.db.backends.base.base import BaseDatabaseWrapper
using = run._state.db
with connection.cursor() as cursor:
    cursor.execute("SELECT 1")
    psycopg_connection = cursor.connection
fields = WorkflowRun._meta.concrete_fields
"""
    assert findings(allowed) == []


def test_the_adapter_is_what_the_check_exempts() -> None:
    assert findings(ADAPTER.read_text()), "the adapter no longer uses what the check looks for"
