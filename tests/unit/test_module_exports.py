"""Every public module of qx_actors says what it exports, and says it exactly.

A public module is one whose import path has no ``_``-prefixed part. Its public names are
those its top level binds without a leading underscore: functions, classes and assignments,
plus what it imports *as itself* (``from x import y as y``) and, in a package's
``__init__.py``, what it imports from inside the package. ``__all__`` must equal that set, so
a new public name is exported on purpose (or made private) and a stale export fails here.
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

import qx_actors

ROOT = Path(qx_actors.__file__).resolve().parent


def _dotted(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def public_modules() -> list[Path]:
    return sorted(
        path
        for path in ROOT.rglob("*.py")
        if not any(
            part.startswith("_") and part != "__init__.py"
            for part in path.relative_to(ROOT.parent).parts
        )
    )


def public_names(path: Path) -> set[str]:
    """What the module's top level binds publicly (see the module docstring)."""
    dotted = _dotted(path)
    package = path.name == "__init__.py"
    names: set[str] = set()

    def bind(target: ast.expr) -> None:
        if isinstance(target, ast.Name):
            names.add(target.id)
        elif isinstance(target, ast.Tuple | ast.List):
            for element in target.elts:
                bind(element)

    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            for target in node.targets:
                bind(target)
        elif isinstance(node, ast.AnnAssign | ast.AugAssign):
            bind(node.target)
        elif isinstance(node, ast.ImportFrom) and node.module != "__future__":
            inside = node.level > 0 or (node.module or "").startswith(dotted + ".")
            for alias in node.names:
                as_itself = alias.asname == alias.name
                if as_itself or (package and inside):
                    names.add(alias.asname or alias.name)
    return {name for name in names if not name.startswith("_") and name != "__all__"}


@pytest.mark.parametrize("path", public_modules(), ids=lambda p: _dotted(p))
def test_all_is_exactly_the_public_names(path: Path) -> None:
    module = importlib.import_module(_dotted(path))
    exported = getattr(module, "__all__", None)
    assert exported is not None, f"{module.__name__} has no __all__"
    assert len(exported) == len(set(exported)), f"{module.__name__}.__all__ has repeats"
    assert set(exported) == public_names(path)
    for name in exported:
        assert hasattr(module, name), f"{module.__name__}.__all__ names {name}, which is not there"


def test_the_check_sees_every_public_module() -> None:
    found = {_dotted(path) for path in public_modules()}
    assert {
        "qx_actors",
        "qx_actors.config",
        "qx_actors.domain.history",
        "qx_actors.app.cli",
    } <= found
    assert not any("._" in name for name in found)
