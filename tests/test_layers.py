"""The package's folders are the layers of the data flow (../shared/DESIGN.md): imports only point down them, and
no modules import each other in a circle, within a layer or across.

Read from the source with ``ast`` (imports inside functions count too), so the test needs none of the package's
dependencies and names the file, line and both layers of each import that runs back up, and the modules of each
cycle.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "ranker"

LAYERS = ("files", "zoo", "tasks", "transfer", "learn", "serve", "tune", "evaluate")
"""Lowest first: a module may import its own layer and the layers before it in this tuple, never one after it."""


def layer_of(module: str) -> str:
    """The layer of a dotted module name inside the package (``ranker.tasks.stats`` -> ``tasks``)."""
    parts = module.split(".")
    if len(parts) < 2 or parts[1] not in LAYERS:
        raise ValueError(f"{module} is in no layer; add its folder to LAYERS in tests/test_layers.py")
    return parts[1]


def imported_modules(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, dotted name) of every import of the package, or of the repository's ``data`` scripts, in a module;
    ``from ranker import x`` names ``ranker.x``."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.split(".")[0] in ("ranker", "data")]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module.split(".")[0] == "data":
                found.append((node.lineno, node.module))
            elif node.module == "ranker":
                found += [(node.lineno, f"ranker.{alias.name}") for alias in node.names]
            elif node.module.startswith("ranker."):
                found.append((node.lineno, node.module))
        elif isinstance(node, ast.ImportFrom) and node.level > 0:
            raise AssertionError(f"line {node.lineno}: relative import; write the absolute `ranker....` path")
    return found


def modules(package: Path) -> dict[str, Path]:
    """Dotted name -> file of every module of ``package`` (a package is its ``__init__.py``)."""
    found = {}
    for path in sorted(package.rglob("*.py")):
        folders = path.relative_to(package).parents  # the module's folders, relative to the package
        if any(not (package / folder / "__init__.py").is_file() for folder in folders):
            continue  # not a module of the package (e.g. a .py inside ranker/zoo/npm/node_modules)
        rel = path.relative_to(package.parent).with_suffix("")
        found[".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)] = path
    return found


def upward_imports(package: Path) -> list[str]:
    """One line per import, in any module under ``package``, of a layer above the importing module's own."""
    problems = []
    for module, path in modules(package).items():
        rel = path.relative_to(package.parent).with_suffix("")
        if module == package.name:
            continue  # the package's own __init__ imports nothing
        own = LAYERS.index(layer_of(module))
        for line, target in imported_modules(ast.parse(path.read_text(), str(path))):
            if target.split(".")[0] == "data":
                problems.append(f"{rel}.py:{line} ({layer_of(module)}) imports {target} (scripts, above the package)")
            elif LAYERS.index(layer_of(target)) > own:
                problems.append(f"{rel}.py:{line} ({layer_of(module)}) imports {target} ({layer_of(target)})")
    return problems


def import_graph(package: Path) -> dict[str, set[str]]:
    """Module -> the package's modules it imports: ``from a.b import c`` is ``a.b.c`` where that is a module, else
    ``a.b``. A package's ``__init__``, which Python runs first, is not counted as an import of its own modules."""
    known = modules(package)
    graph = {}
    for module, path in known.items():
        tree = ast.parse(path.read_text(), str(path))
        targets = {t for _, t in imported_modules(tree) if t.split(".")[0] == package.name}
        for node in ast.walk(tree):  # ``from ranker.learn import lit``: imported_modules names the package
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module in known:
                targets |= {f"{node.module}.{a.name}" for a in node.names if f"{node.module}.{a.name}" in known}
                if all(f"{node.module}.{a.name}" in known for a in node.names):
                    targets.discard(node.module)
        graph[module] = {t if t in known else t.rsplit(".", 1)[0] for t in targets} - {module}
    return graph


def import_cycles(package: Path) -> list[list[str]]:
    """Every group of modules that import each other in a circle (a strongly connected component of more than one
    module of :func:`import_graph`), each sorted, the groups sorted."""
    graph = import_graph(package)
    index, low, stack, on_stack, cycles = {}, {}, [], set(), []

    def visit(v: str) -> None:  # Tarjan's algorithm
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while not group or group[-1] != v:
                group.append(stack.pop())
                on_stack.discard(group[-1])
            if len(group) > 1:
                cycles.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(cycles)


def test_no_modules_import_each_other_in_a_circle() -> None:
    assert import_cycles(PACKAGE) == []


def test_a_cycle_inside_one_layer_is_caught(tmp_path: Path) -> None:
    package = tmp_path / "ranker"
    (package / "learn").mkdir(parents=True)
    for name in ("__init__.py", "learn/__init__.py"):
        (package / name).write_text("")
    (package / "learn" / "a.py").write_text("from ranker.learn import b\n")
    (package / "learn" / "b.py").write_text("def f():\n    from ranker.learn.c import g\n")  # a late import counts
    (package / "learn" / "c.py").write_text("import ranker.learn.a\n")
    (package / "learn" / "d.py").write_text("from ranker.learn import a, b\n")  # into the cycle, not part of it
    assert import_cycles(package) == [["ranker.learn.a", "ranker.learn.b", "ranker.learn.c"]]


def test_imports_only_point_down_the_layers() -> None:
    assert upward_imports(PACKAGE) == []


def test_importing_the_package_imports_none_of_its_modules() -> None:
    """``ranker/__init__.py`` (the top-level API, above every layer) imports its layers inside its functions only,
    so ``import ranker`` costs nothing and ``rank.py --help`` stays instant."""
    tree = ast.parse((PACKAGE / "__init__.py").read_text())
    eager = [node.lineno for node in tree.body if isinstance(node, ast.Import | ast.ImportFrom)
             and (node.module if isinstance(node, ast.ImportFrom) else node.names[0].name) not in
             ("__future__", "logging", "pathlib", "typing")]
    assert eager == []


def test_every_layer_exists() -> None:
    on_disk = {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    on_disk |= {p.stem for p in PACKAGE.glob("*.py") if p.stem != "__init__"}
    assert on_disk == set(LAYERS)


def test_an_upward_import_is_caught(tmp_path: Path) -> None:
    package = tmp_path / "ranker"
    for folder in ("tasks", "serve"):
        (package / folder).mkdir(parents=True)
        (package / folder / "__init__.py").write_text("")
    (package / "__init__.py").write_text("")
    (package / "serve" / "pipeline.py").write_text("from ranker.tasks import datasets\n")  # down: fine
    (package / "tasks" / "stats.py").write_text("import torch\n\n\ndef f():\n    from ranker.serve import pipeline\n")
    (package / "tasks" / "history.py").write_text("from ranker import evaluate\nfrom data.build_history import x\n")
    assert upward_imports(package) == [
        "ranker/tasks/history.py:1 (tasks) imports ranker.evaluate (evaluate)",
        "ranker/tasks/history.py:2 (tasks) imports data.build_history (scripts, above the package)",
        "ranker/tasks/stats.py:5 (tasks) imports ranker.serve (serve)",
    ]
