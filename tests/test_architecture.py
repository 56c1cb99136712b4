"""The shape of the package, checked: small modules, short functions, imports at the top.

These are the limits the codebase keeps so a newcomer finds each idea in one place (see the
README's "Layout" section). Each check names the offending file and line, so a failure says
what to split or move."""

from __future__ import annotations

import ast
import io
import tokenize
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "atomlib"
MODULES = sorted(p for p in PACKAGE.rglob("*.py"))
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60
STAGES = ("data", "model", "training", "generation", "evaluation", "apps")


def _rel(p: Path) -> str:
    return str(p.relative_to(PACKAGE.parent))


def _functions(tree):
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield node


def test_every_stage_is_a_subpackage_with_a_map():
    for stage in STAGES:
        init = PACKAGE / stage / "__init__.py"
        assert init.is_file(), f"atomlib/{stage}/ is not a package"
        doc = ast.get_docstring(ast.parse(init.read_text()))
        assert doc, f"atomlib/{stage}/__init__.py has no docstring map"
        for mod in sorted((PACKAGE / stage).glob("*.py")):
            if mod.name != "__init__.py":
                assert mod.stem in doc, f"atomlib/{stage}/__init__.py does not mention {mod.name}"


@pytest.mark.parametrize("path", MODULES, ids=_rel)
def test_module_is_small(path):
    n = len(path.read_text().splitlines())
    assert n <= MAX_MODULE_LINES, f"{_rel(path)} has {n} lines (limit {MAX_MODULE_LINES}): split it by idea"


@pytest.mark.parametrize("path", MODULES, ids=_rel)
def test_functions_are_short(path):
    long = [f"{_rel(path)}:{f.lineno} {f.name} ({f.end_lineno - f.lineno + 1} lines)"
            for f in _functions(ast.parse(path.read_text()))
            if f.end_lineno - f.lineno + 1 > MAX_FUNCTION_LINES]
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines: " + ", ".join(long)


def _comments(src: str) -> dict[int, str]:
    out = {}
    for tok in tokenize.generate_tokens(io.StringIO(src).readline):
        if tok.type == tokenize.COMMENT:
            out[tok.start[0]] = tok.string
    return out


@pytest.mark.parametrize("path", MODULES, ids=_rel)
def test_imports_are_at_the_top_unless_a_reason_is_given(path):
    """An import inside a function is allowed only with a `# lazy: <why>` comment on its line
    (an optional dependency, or a measured import-time cost), so every exception explains itself."""
    src = path.read_text()
    comments = _comments(src)
    bad = []
    for f in _functions(ast.parse(src)):
        for node in ast.walk(f):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                if "lazy:" not in comments.get(node.lineno, "") and "lazy:" not in comments.get(node.end_lineno, ""):
                    bad.append(f"{_rel(path)}:{node.lineno}")
    assert not bad, "imports inside functions without a '# lazy: why' comment: " + ", ".join(bad)


def test_the_checks_can_fail(tmp_path):
    """The three checks above, run on a planted module that breaks each of them."""
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_FUNCTION_LINES + 1))
    src = f"def long():\n    import os\n{body}\n" + "\n" * MAX_MODULE_LINES
    tree = ast.parse(src)
    assert any(f.end_lineno - f.lineno + 1 > MAX_FUNCTION_LINES for f in _functions(tree))
    assert len(src.splitlines()) > MAX_MODULE_LINES
    node = next(n for n in ast.walk(tree) if isinstance(n, ast.Import))
    assert "lazy:" not in _comments(src).get(node.lineno, "")
