"""The package's shape: imports go one way (no circles, lazy imports included), the kernels import nothing of the
project, and every exception class of the project lives in fm4npp_data/errors.py."""

import ast
import importlib
import inspect
from pathlib import Path

import click
import pytest

ROOT = Path(__file__).parents[1]
#: import name -> folder of the source tree
PACKAGES = {"fm4npp_data": ROOT / "fm4npp_data", "fm4npp_models": ROOT / "fm4npp_models", "fm4npp_cli": ROOT / "cli"}


def _modules() -> dict[str, Path]:
    found = {}
    for package, folder in PACKAGES.items():
        for path in folder.rglob("*.py"):
            parts = [package, *path.relative_to(folder).with_suffix("").parts]
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


MODULES = _modules()


def imports_of(name: str, path: Path) -> set[str]:
    """The project modules `name` imports anywhere in its file (at the top or inside a function): `from . import x`
    counts as an import of the module x, not of the package."""
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            parts = package[: len(package) - node.level + 1] if node.level else []
            base = ".".join([*parts, *([node.module] if node.module else [])])
            found |= {f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names}
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
    return {m for m in found if m in MODULES and m != name}


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm, iterative)."""
    index, low, stack, on_stack, out, counter = {}, {}, [], set(), [], 0
    for start in graph:
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    out.append(sorted(component))
    return out


GRAPH = {name: imports_of(name, path) for name, path in MODULES.items()}


def test_the_circle_finder_finds_a_circle():
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert circles({"a": {"b"}, "b": set()}) == []


def test_no_import_circles():
    assert circles(GRAPH) == []


def test_arrows_go_one_way():
    """cli -> fm4npp_models -> fm4npp_data; the kernels import nothing of the project."""
    wrong = [
        f"{m} -> {t}"
        for m, targets in GRAPH.items()
        for t in targets
        if (m.startswith("fm4npp_data") and not t.startswith("fm4npp_data"))
        or (m.startswith("fm4npp_models") and t.startswith("fm4npp_cli"))
        or (m.startswith("fm4npp_data.kernels") and not t.startswith("fm4npp_data.kernels"))
    ]
    assert wrong == []


def test_no_module_imports_its_package_root():
    """A module imports what it uses from the module that defines it, not from the package's lazy root."""
    assert [m for m, targets in GRAPH.items() if targets & set(PACKAGES)] == []


@pytest.mark.parametrize("name", sorted(MODULES))
def test_exceptions_live_in_errors_py(name):
    """Every exception class the project defines is defined in fm4npp_data/errors.py (others import it from there).
    The command line's `Failed` is click's way to print a message and exit 2, not an error of the project."""
    module = importlib.import_module(name)
    own = [
        n
        for n, obj in vars(module).items()
        if inspect.isclass(obj)
        and issubclass(obj, BaseException)
        and not issubclass(obj, click.ClickException)
        and obj.__module__ == name
    ]
    assert name == "fm4npp_data.errors" or own == []


REGISTRY = ROOT / "fm4npp_data" / "tasks.py"
#: Calls of pa.int8() / pa.bool_() outside the task registry that type no task column, with the reason.
OTHER_TYPE_CALLS = {("fm4npp_data/schema.py", "bool_"): "particle_primary, a truth particle's flag"}


def _source_trees() -> dict[str, ast.AST]:
    """The syntax tree of each package file but the registry, by its path in the repository."""
    paths = sorted(path for folder in PACKAGES.values() for path in folder.rglob("*.py") if path != REGISTRY)
    return {path.relative_to(ROOT).as_posix(): ast.parse(path.read_text()) for path in paths}


def test_task_names_are_written_only_in_the_registry():
    """The heads, finetune, predict, the leaderboard and the command line read fm4npp_data/tasks.py, not copies.
    Checked for the task names that name no column too ("pid" and "noise" also name truth columns and batch keys)."""
    from fm4npp_data.tasks import TASKS

    columns = {name for task in TASKS.values() for name in (task.column, task.truth)}
    names = set(TASKS) - columns
    assert names == {"tracking"}
    found = [
        f"{path}:{node.lineno}: {node.value!r}"
        for path, tree in _source_trees().items()
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and node.value in names
    ]
    assert found == []


def test_task_column_types_are_written_only_in_the_registry():
    """A predictions column's type (pa.int8() for pid, pa.bool_() for noise) is Task.dtype, read by the predictions
    schema, the truth label fields, predict, the loader and the leaderboard's type check."""
    found = {}
    for path, tree in _source_trees().items():
        for node in ast.walk(tree):
            func = node.func if isinstance(node, ast.Call) else None
            if (
                isinstance(func, ast.Attribute)
                and isinstance(func.value, ast.Name)
                and func.value.id == "pa"
                and func.attr in ("int8", "bool_")
            ):
                found[(path, func.attr)] = found.get((path, func.attr), 0) + 1
    assert found == dict.fromkeys(OTHER_TYPE_CALLS, 1)
