"""Dispatch on types, never on class-name strings (docs/ARCHITECTURE.md): an AST walk of the installed folders.

A class's ``__name__`` may appear in text for people (an f-string in a log line or an error message); compared,
concatenated into a counter or metric name, or used as a key, it would make a rename change behaviour silently.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FOLDERS = ("axiomnet", "ops", "actors", "lab", "tools")


def _class_name_uses(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, context) of every ``type(x).__name__`` / ``x.__class__.__name__`` not inside an f-string field."""
    parents: dict[ast.AST, ast.AST] = {}
    for node in ast.walk(tree):
        for child in ast.iter_child_nodes(node):
            parents[child] = node
    found = []
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Attribute) and node.attr == "__name__"):
            continue
        value = node.value
        of_type = isinstance(value, ast.Call) and isinstance(value.func, ast.Name) and value.func.id == "type"
        of_class = isinstance(value, ast.Attribute) and value.attr == "__class__"
        if not (of_type or of_class):
            continue
        parent = parents.get(node)
        while isinstance(parent, (ast.IfExp, ast.BoolOp)):  # f"{a if b else type(e).__name__}" is still text
            parent = parents.get(parent)
        if isinstance(parent, ast.FormattedValue):
            continue
        found.append((node.lineno, type(parent).__name__))
    return found


def test_no_module_dispatches_or_counts_on_a_class_name() -> None:
    offenders = []
    for folder in FOLDERS:
        for path in sorted((ROOT / folder).rglob("*.py")):
            for line, context in _class_name_uses(ast.parse(path.read_text(), str(path))):
                offenders.append(f"{path.relative_to(ROOT)}:{line} ({context})")
    assert offenders == []


def test_the_walk_finds_the_patterns_it_forbids() -> None:
    source = '''
kind = type(event).__name__
if event.__class__.__name__ == "Established": pass
counters["rx_" + type(exc).__name__] += 1
log(f"unexpected {type(message).__name__}")
'''
    assert [line for line, _ in _class_name_uses(ast.parse(source))] == [2, 3, 4]
