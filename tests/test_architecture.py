"""The package boundaries of docs/architecture.md, checked on the source: model code is single-device and
I/O-free, and only `latbot.runs` reads run directories."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from tests.conftest import REPO

LATBOT = REPO / "latbot"

# What model code (latbot/models/) must never import: the engine, run/artifact I/O, the recipe loader,
# the front ends, and libraries whose only use would be reading or writing files.
FORBIDDEN_IN_MODELS = (
    "latbot.train",
    "latbot.runs",
    "latbot.artifacts",
    "latbot.recipes.loader",
    "latbot.cli",
    "latbot.viz",
    "latbot.serve",
    "latbot.quickstart",
    "latbot.stages",
    "safetensors",
    "pickle",
    "json",
    "yaml",
    "h5py",
    "zarr",
    "tempfile",
    "shutil",
)
FILE_METHODS = {"read_text", "write_text", "read_bytes", "write_bytes", "mkdir", "unlink", "rmdir", "touch"}
# Pretrained weights named in a plugin's Config are loaded in these files, the sanctioned file access of
# model code: loading.py (the library that defines the architecture, `from_pretrained`, which checks a
# local path exists first) and pi05/checkpoint.py (pi0.5's safetensors checkpoints, which the stages load
# into the pi05 student and expert), and deferred.py (the per-rank reads of dist.meta_init). They may
# access files and import what reading weights needs (LOADER_IMPORTS); every other forbidden import stays
# forbidden for them.
PRETRAINED_LOADERS = frozenset(
    {
        LATBOT / "models" / "loading.py",
        LATBOT / "models" / "pi05" / "checkpoint.py",
        LATBOT / "models" / "deferred.py",  # dist.meta_init: reads each rank's rows of the pretrained files
    }
)
LOADER_IMPORTS = frozenset({"safetensors", "json"})


def _imports(tree: ast.AST, path: Path) -> list[str]:
    """Every module a file imports, at the top or inside functions, relative imports resolved."""
    package = ".".join(path.relative_to(REPO).with_suffix("").parts[:-1])
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{parent}.{base}" if base else parent
            out += [base] + [f"{base}.{a.name}" for a in node.names]
    return out


def _forbidden_imports(tree: ast.AST, path: Path) -> list[str]:
    """The imports of FORBIDDEN_IN_MODELS in a model file (LOADER_IMPORTS allowed in PRETRAINED_LOADERS)."""
    forbidden = [f for f in FORBIDDEN_IN_MODELS if path not in PRETRAINED_LOADERS or f not in LOADER_IMPORTS]
    return sorted({m for m in _imports(tree, path) if any(m == f or m.startswith(f + ".") for f in forbidden)})


def _file_access(tree: ast.AST) -> list[str]:
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        f = node.func
        if isinstance(f, ast.Name) and f.id == "open":
            found.append(f"open() at line {node.lineno}")
        elif isinstance(f, ast.Attribute) and f.attr in FILE_METHODS:
            found.append(f".{f.attr}() at line {node.lineno}")
        elif isinstance(f, ast.Attribute) and f.attr in {"load", "save"} and getattr(f.value, "id", "") == "torch":
            found.append(f"torch.{f.attr}() at line {node.lineno}")
    return found


MODEL_FILES = sorted((LATBOT / "models").rglob("*.py"))


def test_the_check_sees_model_files():
    assert len(MODEL_FILES) >= 15 and any(p.name == "lam.py" for p in MODEL_FILES)


@pytest.mark.parametrize("path", MODEL_FILES, ids=lambda p: str(p.relative_to(LATBOT)))
def test_model_code_imports_no_engine_or_io_module(path):
    bad = _forbidden_imports(ast.parse(path.read_text()), path)
    assert not bad, f"{path.relative_to(REPO)} imports {bad}: model code stays I/O-free"


@pytest.mark.parametrize("path", MODEL_FILES, ids=lambda p: str(p.relative_to(LATBOT)))
def test_model_code_does_no_file_io(path):
    if path in PRETRAINED_LOADERS:
        return
    found = _file_access(ast.parse(path.read_text()))
    assert not found, f"{path.relative_to(REPO)} accesses files: {found}"


def test_the_checks_catch_a_violation(tmp_path):
    """The two checks above, on a model file that breaks both rules."""
    bad = LATBOT / "models" / "_violation.py"
    source = "from latbot.runs import load_lam\nimport json\n\ndef f(p):\n    return open(p).read() + p.read_text()\n"
    tree = ast.parse(source)
    imports = _imports(tree, bad)
    assert "latbot.runs" in imports and "json" in imports
    assert sorted(_file_access(tree)) == [".read_text() at line 5", "open() at line 5"]
    assert _forbidden_imports(tree, bad) == ["json", "latbot.runs", "latbot.runs.load_lam"]


def test_the_loader_exemption_is_narrow():
    """The exempt files exist (a moved loader must not leave the exemption pointing at nothing), and in
    them only the weight-reading imports are allowed: the engine, run I/O and pickle stay forbidden."""
    assert PRETRAINED_LOADERS <= set(MODEL_FILES)
    source = "import json\nimport pickle\nfrom safetensors import safe_open\nfrom latbot.runs import load_lam\n"
    for loader in PRETRAINED_LOADERS:
        assert _forbidden_imports(ast.parse(source), loader) == ["latbot.runs", "latbot.runs.load_lam", "pickle"]
    other = LATBOT / "models" / "pi05" / "keys.py"
    assert _forbidden_imports(ast.parse(source), other) == [
        "json", "latbot.runs", "latbot.runs.load_lam", "pickle", "safetensors", "safetensors.safe_open",
    ]  # fmt: skip


def test_only_latbot_runs_reads_run_directories():
    """Run weights and recipes are read in one place: no other module opens a run's exported weights,
    rebuilds a model from a saved recipe, or checks a manifest of a training stage's kind."""
    stage_kinds = ('"lam"', '"distill"', '"finetune"')
    readers = []
    for path in sorted(LATBOT.rglob("*.py")):
        if path.parent == LATBOT and path.name in ("runs.py", "artifacts.py"):
            continue
        for n, line in enumerate(path.read_text().splitlines(), 1):
            found = [m for m in ("weights/model.safetensors", '"weights" /', "recipe.yaml") if m in line]
            if "recipe_from_dict(" in line and path.name != "loader.py":
                found.append("recipe_from_dict(")
            if re.search(r"read_manifest\([^)]*(" + "|".join(stage_kinds) + r")", line):
                found.append("read_manifest(<stage kind>)")
            readers += [f"{path.relative_to(REPO)}:{n}: {m}" for m in found]
    assert not readers, readers


def test_the_reader_check_catches_a_second_reader(tmp_path):
    line = 'state = load_file(str(Path(run) / "weights" / "model.safetensors"))'
    assert '"weights" /' in line  # the marker the check above looks for
