"""The plugin docs stay true: every ```python block of docs/plugins.md and docs/training.md either is a
file of the example plugin, copied verbatim (first line: its path as a comment) — the file itself is run
by tests/test_plugins_example.py and checked by the contracts — or runs as written; the entry points the
docs show are the example plugin's."""

from __future__ import annotations

import re
import sys
import types

import pytest

from tests.conftest import REPO

DOCS = ("docs/plugins.md", "docs/training.md")
BLOCK = re.compile(r"^```(\w+)\n(.*?)^```$", re.S | re.M)
VERBATIM = re.compile(r"# (plugins/\S+\.py)\n")


def blocks(lang: str) -> list[tuple[str, int, str]]:
    out = []
    for doc in DOCS:
        text = (REPO / doc).read_text()
        for m in BLOCK.finditer(text):
            if m.group(1) == lang:
                out.append((doc, text[: m.start()].count("\n") + 1, m.group(2)))
    return out


PYTHON = blocks("python")


def test_every_example_file_is_in_the_docs():
    shown = {VERBATIM.match(code).group(1) for _, _, code in PYTHON if VERBATIM.match(code)}
    files = {str(p.relative_to(REPO)) for p in (REPO / "plugins/latbot-example-plugin/src").rglob("*.py")}
    assert files - {f for f in files if f.endswith("__init__.py")} == shown


@pytest.mark.parametrize(("doc", "line", "code"), PYTHON, ids=[f"{d}:{n}" for d, n, _ in PYTHON])
def test_python_blocks_are_verbatim_files_or_run(doc, line, code, monkeypatch):
    verbatim = VERBATIM.match(code)
    if verbatim:
        path = REPO / verbatim.group(1)
        assert code[verbatim.end() :] == path.read_text(), (
            f"{doc}:{line}: the block differs from {verbatim.group(1)}; copy the file into the docs"
        )
        return
    module = types.ModuleType(f"docs_block_{line}")  # a module of its own: pydantic resolves names there
    monkeypatch.setitem(sys.modules, module.__name__, module)
    exec(compile(code, f"{doc}:{line}", "exec"), module.__dict__)


def test_the_entry_points_shown_are_the_example_plugins():
    pyproject = (REPO / "plugins/latbot-example-plugin/pyproject.toml").read_text()
    shown = [line for _, _, code in blocks("toml") for line in code.splitlines() if "latbot_example_plugin." in line]
    assert shown and all(line in pyproject for line in shown)
    assert pyproject.count("latbot_example_plugin.") == len(set(shown))
