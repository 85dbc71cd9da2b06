"""The package's folders are the layers of the data flow (../shared/DESIGN.md): imports only point down them.

Read from the source with ``ast`` (imports inside functions count too), so the test needs none of the package's
dependencies and names the file, line and both layers of each import that runs back up.
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


def upward_imports(package: Path) -> list[str]:
    """One line per import, in any module under ``package``, of a layer above the importing module's own."""
    problems = []
    for path in sorted(package.rglob("*.py")):
        folders = path.relative_to(package).parents  # the module's folders, relative to the package
        if any(not (package / folder / "__init__.py").is_file() for folder in folders):
            continue  # not a module of the package (e.g. a .py inside ranker/zoo/npm/node_modules)
        rel = path.relative_to(package.parent).with_suffix("")
        module = ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)
        if module == package.name:
            continue  # the package's own __init__ imports nothing
        own = LAYERS.index(layer_of(module))
        for line, target in imported_modules(ast.parse(path.read_text(), str(path))):
            if target.split(".")[0] == "data":
                problems.append(f"{rel}.py:{line} ({layer_of(module)}) imports {target} (scripts, above the package)")
            elif LAYERS.index(layer_of(target)) > own:
                problems.append(f"{rel}.py:{line} ({layer_of(module)}) imports {target} ({layer_of(target)})")
    return problems


def test_imports_only_point_down_the_layers() -> None:
    assert (PACKAGE / "__init__.py").read_text().count("import") == 0
    assert upward_imports(PACKAGE) == []


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
