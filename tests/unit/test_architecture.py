"""The rooms of the house, checked from the source: which part may import which.

Read from every module's AST (every import, also those inside functions and under
``TYPE_CHECKING``), so a new import that runs the wrong way fails here, not in review:

* the layers below, each importing only its own layer and the layers under it (no arrow up);
* no import cycle between packages of the same layer, and none between modules;
* the application (:mod:`qx_actors.app`) apart: nothing of the library imports it (the one
  exception is the ``qx_actors.cli`` shim that keeps the console script's path).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2] / "qx_actors"

#: Bottom first. A module belongs to the first entry whose name is its name or a prefix of it.
LAYERS: list[tuple[str, ...]] = [
    # the vocabulary: values, errors, pure domain logic, statuses and update variants
    (
        "qx_actors.errors",
        "qx_actors.redact",
        "qx_actors.domain",
        "qx_actors.status",
        "qx_actors.updates",
        "qx_actors._loop_thread",
    ),
    # the outside world: configuration (and logging by it), the exchange's protocol, the database
    ("qx_actors.config", "qx_actors.logs", "qx_actors.lnmarkets", "qx_actors.storage"),
    # what a run tells its operator (fed by the actors)
    ("qx_actors.observability",),
    # the actor system and the mode programs it runs
    ("qx_actors.actors", "qx_actors.modes"),
    # the public surface
    ("qx_actors.sync_engine", "qx_actors"),
    # a local exchange and test support, built on the public surface
    ("qx_actors.simulator", "qx_actors.testing"),
    # the application
    ("qx_actors.app", "qx_actors.cli"),
]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(ROOT.rglob("*.py"))}


def imported(name: str, path: Path) -> Iterator[str]:
    """Every qx_actors module ``name`` imports (relative imports resolved)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            yield base
            # ``from package import module`` names a module too
            yield from (f"{base}.{alias.name}" for alias in node.names)


def graph() -> dict[str, set[str]]:
    known = modules()
    edges: dict[str, set[str]] = {}
    for name, path in known.items():
        edges[name] = {
            target
            for target in imported(name, path)
            if target in known and target != name and target.startswith("qx_actors")
        }
    return edges


def layer_of(module: str) -> int:
    best: tuple[int, int] | None = None  # (prefix length, layer)
    for index, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            matches = module == prefix or module.startswith(prefix + ".")
            if matches and (best is None or len(prefix) > best[0]):
                best = (len(prefix), index)
    assert best is not None, f"{module} is in no layer: add it to LAYERS"
    return best[1]


def test_every_module_has_a_layer() -> None:
    for name in modules():
        layer_of(name)


def test_no_import_runs_up_a_layer() -> None:
    upward = [
        f"{source} (layer {layer_of(source)}) imports {target} (layer {layer_of(target)})"
        for source, targets in graph().items()
        for target in sorted(targets)
        # a package's __init__ re-exporting its own modules is not an arrow up
        if layer_of(target) > layer_of(source) and not target.startswith(source + ".")
    ]
    assert upward == []


def test_the_library_never_imports_the_application() -> None:
    offenders = [
        f"{source} imports {target}"
        for source, targets in graph().items()
        if not source.startswith("qx_actors.app") and source != "qx_actors.cli"
        for target in targets
        if target.startswith("qx_actors.app")
    ]
    assert offenders == []


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one member (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in edges.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def test_no_import_cycle_between_modules() -> None:
    # a package's __init__ and its own modules import each other by design (re-exports)
    edges = {
        source: {t for t in targets if not source.startswith(t + ".")}
        for source, targets in graph().items()
    }
    assert _cycles(edges) == []


def _package(module: str) -> str:
    """The package a module is in, at the depth the rooms are: ``qx_actors.<room>``."""
    parts = module.split(".")
    return ".".join(parts[:2])


def test_no_import_cycle_between_rooms() -> None:
    edges: dict[str, set[str]] = {}
    for source, targets in graph().items():
        if source == "qx_actors":  # the public surface re-exports every room
            continue
        for target in targets:
            if target == "qx_actors":
                continue
            a, b = _package(source), _package(target)
            if a != b:
                edges.setdefault(a, set()).add(b)
    assert _cycles(edges) == []


@pytest.mark.parametrize(
    ("edges", "expected"),
    [
        ({"a": {"b"}, "b": {"a"}}, [["a", "b"]]),
        ({"a": {"b"}, "b": {"c"}, "c": set()}, []),
    ],
)
def test_the_cycle_finder_finds_cycles(
    edges: dict[str, set[str]], expected: list[list[str]]
) -> None:
    assert _cycles(edges) == expected
