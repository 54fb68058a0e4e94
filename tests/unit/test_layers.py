"""The layers, checked rather than promised in a docstring.

``axiomnet/`` is the protocol core: no sockets, no threads, no processes, no clock (time is passed in), no
file I/O, and nothing from the layers above it. Above it, in order: ``ops/`` (axiomnet.ops, the operator
face), ``actors/`` (axiomnet.actors) and ``lab/`` (axiomnet.lab). No module imports a layer above its own,
with two named exceptions: the command line (ops/cli.py) starts the daemon and the demo, and imports them
inside the functions that do so; ``python -m axiomnet`` (axiomnet/__main__.py) runs the command line. Every import in the tree is read from the source (ast), including imports
inside functions, so a lazy import cannot slip past.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# folder -> the package it is installed as, lowest layer first
LAYERS = {"axiomnet": "axiomnet", "ops": "axiomnet.ops", "actors": "axiomnet.actors", "lab": "axiomnet.lab"}
RANK = {package: rank for rank, package in enumerate(LAYERS.values())}

# What the core must never import: I/O, concurrency and the clock belong to the actors.
FORBIDDEN_IN_CORE = {
    "socket", "ssl", "select", "selectors", "asyncio", "threading", "_thread", "multiprocessing",
    "concurrent", "subprocess", "signal", "time", "datetime", "sched", "fcntl", "shutil", "tempfile", "io",
    "logging", "loguru", "pykka", "pyroute2", "psutil", "prometheus_client", "rich", "urllib", "http",
}
# The one use of the os module the core may make: the kernel's random bytes.
OS_ALLOWED_IN_CORE = {"urandom"}
# Builtins that touch the file system or the console.
BUILTINS_FORBIDDEN_IN_CORE = {"open", "print", "input"}
# Above-layer imports allowed inside a function only: (importing module, imported package)
LAZY_UPWARD_ALLOWED = {("axiomnet.ops.cli", "axiomnet.actors"), ("axiomnet.ops.cli", "axiomnet.lab")}
# ``python -m axiomnet`` runs the command line: the entry point is the top of the stack, not part of the core.
ENTRY_POINTS = {"axiomnet.__main__"}


def modules(folder: str) -> list[tuple[str, Path]]:
    package = LAYERS[folder]
    out = []
    for path in sorted((ROOT / folder).glob("*.py")):
        name = package if path.stem == "__init__" else f"{package}.{path.stem}"
        out.append((name, path))
    return out


def imports(path: Path) -> list[tuple[str, int, bool]]:
    """(imported module, line, inside a function) for every import statement in ``path``."""
    tree = ast.parse(path.read_text(), str(path))
    found: list[tuple[str, int, bool]] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            nested = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, ast.Import):
                found.extend((alias.name, child.lineno, in_function) for alias in child.names)
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    raise AssertionError(f"{path}:{child.lineno}: relative import; name the package")
                assert child.module is not None
                found.append((child.module, child.lineno, in_function))
                found.extend((f"{child.module}.{alias.name}", child.lineno, in_function) for alias in child.names)
            visit(child, nested)

    visit(tree, False)
    return found


def layer_of(module: str) -> str | None:
    """The layer package ``module`` belongs to, or None for anything outside the tree."""
    best = None
    for package in LAYERS.values():
        if module == package or module.startswith(package + "."):
            if best is None or len(package) > len(best):
                best = package
    return best


def upward_imports(folder: str) -> list[str]:
    problems = []
    for name, path in modules(folder):
        if name in ENTRY_POINTS:
            continue
        own = RANK[LAYERS[folder]]
        for imported, line, lazy in imports(path):
            target = layer_of(imported)
            if target is None or RANK[target] <= own:
                continue
            if lazy and (name, target) in LAZY_UPWARD_ALLOWED:
                continue
            problems.append(f"{path.relative_to(ROOT)}:{line} imports {imported} (layer {target} is above {LAYERS[folder]})")
    return problems


@pytest.mark.parametrize("folder", list(LAYERS))
def test_no_layer_imports_a_layer_above_it(folder: str) -> None:
    assert upward_imports(folder) == []


def test_the_core_does_no_io_starts_no_thread_and_reads_no_clock() -> None:
    problems = []
    for name, path in modules("axiomnet"):
        for imported, line, _ in imports(path):
            if imported.split(".")[0] in FORBIDDEN_IN_CORE:
                problems.append(f"{path.relative_to(ROOT)}:{line} imports {imported}")
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "os":
                if node.attr not in OS_ALLOWED_IN_CORE:
                    problems.append(f"{path.relative_to(ROOT)}:{node.lineno} uses os.{node.attr}")
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in BUILTINS_FORBIDDEN_IN_CORE:
                problems.append(f"{path.relative_to(ROOT)}:{node.lineno} calls {node.func.id}()")
    assert problems == []


def test_the_check_catches_what_it_is_for(tmp_path: Path) -> None:
    """The walker sees a lazy import, a from-import and an os call: a check that cannot fail proves nothing."""
    sample = tmp_path / "sample.py"
    sample.write_text("import os\nfrom threading import Thread\n\ndef f():\n    import socket\n    os.listdir('.')\n")
    found = {(module, lazy) for module, _, lazy in imports(sample)}
    assert ("threading", False) in found and ("threading.Thread", False) in found and ("socket", True) in found


def test_the_source_tree_has_no_symlinks() -> None:
    links = [str(p.relative_to(ROOT)) for folder in (*LAYERS, "tools", "tests") for p in (ROOT / folder).rglob("*")
             if p.is_symlink()]
    assert links == []


def test_each_layer_folder_is_installed_under_its_package_name() -> None:
    """pyproject's package-dir maps each folder to its package, so tracebacks name the file the editor shows."""
    import importlib

    for folder, package in LAYERS.items():
        module = importlib.import_module(package)
        assert module.__file__ is not None
        assert Path(module.__file__).resolve().parent == (ROOT / folder).resolve(), (package, module.__file__)


@pytest.mark.parametrize("folder", ["ops", "actors", "lab"])
def test_a_layer_folder_refuses_to_be_imported_under_a_second_name(folder: str) -> None:
    """With the repository root on sys.path, ``import actors`` would give every class a twin."""
    import subprocess

    proc = subprocess.run([sys.executable, "-c", f"import {folder}"], cwd=ROOT, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode != 0 and f"axiomnet.{folder}" in proc.stderr
