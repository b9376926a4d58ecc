"""`latbot.api`, the public API for plugin authors: every exported name exists and is documented in
docs/plugins.md ("The public API"), and nothing else is documented there; the templates of `latbot plugins new`
ship with the package (one per plugin kind) and import from LatBot only through `latbot.api`."""

from __future__ import annotations

import ast
import re
import tomllib
from importlib.resources import files
from string import Template

import pytest

import latbot.api
from latbot.cli.plugins import scaffold
from latbot.registry import KINDS
from tests.conftest import REPO

SECTION = "## The public API"


def documented_names() -> list[str]:
    """The names docs/plugins.md's "The public API" section lists, one per line as ``- `NAME`: what it is``."""
    text = (REPO / "docs" / "plugins.md").read_text()
    assert text.count(f"\n{SECTION}\n") == 1, f"docs/plugins.md needs exactly one '{SECTION}' section"
    section = text.split(f"\n{SECTION}\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"^[-*] `([A-Za-z_][A-Za-z0-9_]*)`", section, flags=re.MULTILINE)


def templates() -> list:
    """Every template file under latbot/cli/templates/, as the installed package has them."""
    out, todo = [], [files("latbot.cli") / "templates"]
    while todo:
        for entry in todo.pop().iterdir():
            if entry.is_dir():
                todo.append(entry)
            elif entry.name.endswith(".tmpl"):
                out.append(entry)
    return sorted(out, key=lambda e: str(e))


def latbot_imports(source: str) -> list[str]:
    """The LatBot modules `source` imports from (anywhere in it, function bodies included)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append(node.module)
        elif isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
    return [m for m in found if m == "latbot" or m.startswith("latbot.")]


# -- (a) the exported names, and their documentation -----------------------------------------------------------
def test_every_exported_name_exists_once():
    assert len(latbot.api.__all__) == len(set(latbot.api.__all__)), "a name is listed twice in latbot.api.__all__"
    missing = [n for n in latbot.api.__all__ if not hasattr(latbot.api, n)]
    assert not missing, f"latbot.api.__all__ names what the module lacks: {missing}"


def test_the_public_api_section_documents_exactly_the_exported_names():
    documented, exported = documented_names(), set(latbot.api.__all__)
    assert len(documented) == len(set(documented)), "a name is listed twice in docs/plugins.md's public API"
    undocumented = sorted(exported - set(documented))
    assert not undocumented, f"add to docs/plugins.md, '{SECTION}' (one line each): {undocumented}"
    not_exported = sorted(set(documented) - exported)
    assert not not_exported, f"docs/plugins.md, '{SECTION}', lists names latbot.api does not export: {not_exported}"


# -- (b) the templates import LatBot only through latbot.api ----------------------------------------------------
PY_TEMPLATES = [t for t in templates() if t.name.endswith(".py.tmpl")]


@pytest.mark.parametrize("template", PY_TEMPLATES, ids=lambda t: t.name)
def test_a_template_imports_latbot_only_through_latbot_api(template):
    text = Template(template.read_text())
    # every placeholder ($name, $cls, ...) replaced by an identifier: valid in a name, a class or a string
    source = text.substitute({key: f"placeholder_{key}" for key in text.get_identifiers()})
    imports = latbot_imports(source)
    assert set(imports) <= {"latbot.api"}, f"{template.name} imports {sorted(set(imports) - {'latbot.api'})}"
    if template.name.removesuffix(".py.tmpl") in KINDS:  # a plugin skeleton: it needs LatBot's base classes
        assert imports, f"{template.name} imports nothing from latbot.api"


@pytest.mark.parametrize("kind", KINDS)
def test_the_scaffold_of_every_kind_renders_and_its_python_imports_only_latbot_api(kind):
    written = scaffold(kind, f"my_{kind}")
    python = {path: text for path, text in written.items() if path.endswith(".py")}
    assert {f"src/latbot_my_{kind}/my_{kind}.py", f"tests/test_my_{kind}.py"} <= set(python), sorted(written)
    for path, text in python.items():
        assert "$" not in text, f"{path}: a placeholder was left"
        assert set(latbot_imports(text)) <= {"latbot.api"}, (path, latbot_imports(text))


# -- (c) the templates ship with the package ---------------------------------------------------------------------
def test_the_template_directory_has_one_template_per_plugin_kind():
    names = {t.name for t in (files("latbot.cli") / "templates").iterdir()}
    assert {f"{kind}.py.tmpl" for kind in KINDS} <= names, sorted(names)


def test_every_template_is_declared_as_package_data():
    """So `pip install .` (a wheel, not an editable install) and the sdist carry them."""
    data = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    root = REPO / "latbot" / "cli"
    declared = {path for pattern in data.get("latbot.cli", []) for path in root.glob(pattern)}  # as setuptools does
    undeclared = sorted(
        path.relative_to(root).as_posix()
        for path in (root / "templates").rglob("*")
        if path.is_file() and path not in declared
    )
    assert not undeclared, f"add to [tool.setuptools.package-data] 'latbot.cli' in pyproject.toml: {undeclared}"
