"""The layout of monitor/ and eventsite/: module and function sizes, no import
cycle, and no import that runs up the layers named in pyproject.toml.

Read from the source with ``ast``: every import counts, including one inside
a function or under ``if TYPE_CHECKING:``, since either can hide a cycle.
"""

from __future__ import annotations

import ast
import tomllib
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("monitor", "eventsite")
MAX_MODULE_LINES = 300
MAX_FUNCTION_LINES = 60


def source_files() -> Iterator[Path]:
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            if "migrations" not in path.parts:
                yield path


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {module_name(path): path for path in source_files()}


def imported_modules(path: Path) -> set[str]:
    """The project modules ``path`` imports, each resolved to the module itself
    (``from a.b import c`` names ``a.b.c`` when that is a module, else ``a.b``)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([node.module] if node.module else [])])
            for alias in node.names:
                child = f"{base}.{alias.name}"
                found.add(child if child in MODULES else base)
    return {target for target in found if target in MODULES and target != name}


GRAPH = {name: imported_modules(path) for name, path in MODULES.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle, as the list of modules around it, or None."""
    state: dict[str, str] = {}  # "open" while on the current path, then "done"
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = "open"
        path.append(node)
        for target in sorted(graph[node]):
            if state.get(target) == "open":
                return [*path[path.index(target) :], target]
            if target not in state:
                cycle = visit(target)
                if cycle:
                    return cycle
        path.pop()
        state[node] = "done"
        return None

    for start in sorted(graph):
        if start not in state:
            cycle = visit(start)
            if cycle:
                return cycle
    return None


def test_it_finds_a_cycle_when_there_is_one() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a"}}) is None


def test_the_import_graph_has_no_cycle() -> None:
    cycle = find_cycle(GRAPH)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def layers() -> list[list[tuple[str, bool]]]:
    """The layers of pyproject.toml's layers contract, top first: each a list of
    (package, independent of its siblings)."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    (contract,) = [c for c in config["contracts"] if c["type"] == "layers"]
    parsed = []
    for line in contract["layers"]:
        independent = "|" in line
        names = [part.strip() for part in line.replace("|", ":").split(":")]
        parsed.append([(name, independent) for name in names])
    return parsed


def layer_of(module: str, table: list[list[tuple[str, bool]]]) -> tuple[int, str, bool] | None:
    for index, layer in enumerate(table):
        for package, independent in layer:
            if module == package or module.startswith(package + "."):
                return index, package, independent
    return None


def test_no_import_runs_up_the_layers_or_between_independent_siblings() -> None:
    table = layers()
    wrong = []
    for source, targets in GRAPH.items():
        here = layer_of(source, table)
        if here is None:
            continue
        for target in targets:
            there = layer_of(target, table)
            if there is None or there[1] == here[1]:
                continue
            if there[0] < here[0]:
                wrong.append(f"{source} -> {target} (up the layers)")
            elif there[0] == here[0] and here[2]:
                wrong.append(f"{source} -> {target} (between independent siblings)")
    assert not wrong, "\n".join(sorted(wrong))


def test_the_app_never_imports_the_project() -> None:
    wrong = [
        f"{source} -> {target}"
        for source, targets in GRAPH.items()
        for target in targets
        if source.startswith("monitor") and target.startswith("eventsite")
    ]
    assert not wrong, "\n".join(wrong)


def test_no_module_is_over_300_lines() -> None:
    long = [
        f"{path.relative_to(ROOT)}: {lines}"
        for path in MODULES.values()
        if (lines := len(path.read_text().splitlines())) > MAX_MODULE_LINES
    ]
    assert not long, "\n".join(long)


def test_no_function_is_over_60_lines() -> None:
    long = []
    for path in MODULES.values():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = (node.end_lineno or node.lineno) - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name}: {lines}")
    assert not long, "\n".join(long)


def test_every_module_starts_with_a_docstring_and_future_annotations() -> None:
    missing = []
    for path in MODULES.values():
        tree = ast.parse(path.read_text(), str(path))
        has_future = any(
            isinstance(node, ast.ImportFrom)
            and node.module == "__future__"
            and any(alias.name == "annotations" for alias in node.names)
            for node in tree.body
        )
        if ast.get_docstring(tree) is None or (tree.body[1:] and not has_future):
            missing.append(str(path.relative_to(ROOT)))
    assert not missing, "\n".join(missing)
