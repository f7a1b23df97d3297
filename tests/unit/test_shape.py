"""The source keeps its shape: no module over 400 lines, no function over 60, unless it says why.

A module may be longer, or hold a longer function, only if its docstring has a paragraph
starting ``Size:`` that says why (for a function, naming it). This keeps one idea per module
and one step per function, as docs/architecture.md describes, and makes an exception a
decision someone wrote down rather than drift.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SOURCE = Path(__file__).resolve().parents[2] / "operator" / "dbquota"
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60
MODULES = sorted(SOURCE.rglob("*.py"))


def size_note(tree: ast.Module) -> str:
    """The docstring's ``Size:`` paragraph, or an empty string."""
    doc = ast.get_docstring(tree) or ""
    paragraphs = [p.strip() for p in doc.split("\n\n")]
    return next((p for p in paragraphs if p.startswith("Size:")), "")


def long_functions(tree: ast.Module) -> list[tuple[str, int]]:
    """Functions and methods (at any depth) longer than the limit, with their length."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            assert node.end_lineno is not None
            length = node.end_lineno - node.lineno + 1
            if length > MAX_FUNCTION_LINES:
                found.append((node.name, length))
    return found


def test_the_source_is_where_the_test_looks() -> None:
    assert len(MODULES) > 50


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(SOURCE)))
def test_modules_and_functions_are_short_or_say_why(path: Path) -> None:
    text = path.read_text()
    tree = ast.parse(text)
    note = size_note(tree)
    lines = len(text.splitlines())
    assert lines <= MAX_MODULE_LINES or note, (
        f"{path.name} has {lines} lines (> {MAX_MODULE_LINES}): split it by idea, or say why "
        "in a 'Size:' paragraph of its docstring"
    )
    unexplained = [(name, n) for name, n in long_functions(tree) if f"``{name}``" not in note]
    assert not unexplained, (
        f"{path.name}: functions over {MAX_FUNCTION_LINES} lines {unexplained}: split them, "
        "or name each in a 'Size:' paragraph of the module docstring (``name``) with why"
    )
