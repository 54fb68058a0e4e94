"""The docs cite tests by name (RELIABILITY, SECURITY, PROTOCOL, ...): every ``file.py::test_name`` they cite exists.

A renamed or removed test leaves a claim without its evidence; this finds it. ``::test_other`` after a cited file
on the same line is a further test of that file; ``test_prefix_*`` (or ``...``) stands for any test so named.
Paths are relative to tests/ or to the repository.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCS = sorted((ROOT / "docs").glob("*.md")) + [ROOT / "README.md"]
_CITE = re.compile(r"([\w./-]*\w\.py)?::(test_\w+)(\*|\.\.\.)?")  # test_prefix_* or test_prefix_... : any such


def _resolve(path: str) -> Path | None:
    for base in (ROOT / "tests", ROOT):
        if (base / path).is_file():
            return base / path
    return None


def cited_tests(text: str) -> list[tuple[int, str, str]]:
    """(line, file, test) for every cited test, a bare ``::test`` taking the file cited before it on its line."""
    found = []
    for number, line in enumerate(text.splitlines(), 1):
        current = None
        for match in _CITE.finditer(line):
            current = match.group(1) or current
            if current is not None:
                found.append((number, current, match.group(2) + ("*" if match.group(3) else "")))
    return found


def test_every_test_the_docs_cite_exists() -> None:
    missing = []
    for doc in DOCS:
        for number, path, test in cited_tests(doc.read_text()):
            source = _resolve(path)
            name = re.escape(test[:-1]) + r"\w*" if test.endswith("*") else re.escape(test) + r"\b"
            defined = source is not None and re.search(rf"^\s*(?:async )?def {name}", source.read_text(), re.M)
            if not defined:
                missing.append(f"{doc.relative_to(ROOT)}:{number}: {path}::{test}")
    assert missing == []


def test_a_bare_citation_belongs_to_the_file_before_it_on_its_line() -> None:
    line = "`unit/test_a.py::test_one`, `::test_two`, `node_actors/test_b.py::test_three_*`"
    assert cited_tests(line) == [(1, "unit/test_a.py", "test_one"), (1, "unit/test_a.py", "test_two"),
                                 (1, "node_actors/test_b.py", "test_three_*")]
