"""The layer order of docs/architecture.md ("## Layers") holds on the source: no import cycles, no upward
imports, every module placed (tools/import_graph.py). The check is itself checked: every kind of break in
tools/import_graph.PLANTED_BREAKS is planted into a clean synthetic package and must be reported, and three
breaks planted into a copy of the real package must show up as exactly three new problems."""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys

import pytest

from tests.conftest import REPO

_spec = importlib.util.spec_from_file_location("import_graph", REPO / "tools" / "import_graph.py")
import_graph = importlib.util.module_from_spec(_spec)
sys.modules["import_graph"] = import_graph  # dataclasses look their module up there
_spec.loader.exec_module(import_graph)

LATBOT = REPO / "latbot"
LAYERS = REPO / "docs" / "architecture.md"


def test_the_package_has_no_cycles_and_no_upward_imports():
    report = import_graph.check(LATBOT, LAYERS)
    assert report.ok, "\n".join(
        [report.summary(), *report.lines(), "(docs/architecture.md, '## Layers': the order and the rules)"]
    )


def test_the_layer_table_is_parsed_from_the_docs():
    layers = import_graph.parse_layers(LAYERS.read_text(encoding="utf-8"))
    assert [(layer.index, layer.name) for layer in layers] == [
        (0, "core"),
        (1, "data"),
        (2, "models"),
        (3, "recipes"),
        (4, "runs"),
        (5, "train"),
        (6, "stages"),
        (7, "apps"),
        (8, "front ends"),
    ]

    def placed(module):
        layer = import_graph.layer_of(module, layers)
        return layer.name if layer else None

    assert placed("latbot") == "core"  # the root's __init__ only: `latbot` is an exact entry
    assert placed("latbot.somethingnew") is None
    assert placed("latbot.data.adapters.lerobot") == "data"
    assert placed("latbot.datasets") is None  # a prefix ends at a dot
    assert placed("latbot.recipes.schema") == "recipes"
    assert placed("latbot.__main__") == "front ends"


def test_the_synthetic_package_is_clean(tmp_path):
    root, layers = import_graph.write_synthetic(tmp_path)
    report = import_graph.check(root, layers)
    assert report.ok, "\n".join(report.lines())
    assert report.modules == len(import_graph.SYNTHETIC_PACKAGE)


@pytest.mark.parametrize("planted", import_graph.PLANTED_BREAKS, ids=lambda b: b.name)
def test_a_planted_break_is_caught(tmp_path, planted):
    root, layers = import_graph.write_synthetic(tmp_path)
    import_graph.plant(tmp_path, planted.plants)
    report = import_graph.check(root, layers)
    problems = "\n".join(report.lines()) or "nothing reported"
    assert import_graph.caught(report, planted), f"{planted.name}: no {planted.kind} naming {planted.files}\n{problems}"
    assert {p.kind for p in report.problems} == {planted.kind, *planted.also}, problems
    for problem in report.problems:  # nothing reported that the break did not cause
        assert problem.files & planted.files, f"{planted.name}: unrelated problem\n{problem}"
        assert any(file in str(problem) for file in planted.files), problem  # the message names the file


def test_the_planted_table_reports_every_break_caught(capsys):
    assert import_graph.main(["--planted"]) == 0
    out = capsys.readouterr().out
    n = len(import_graph.PLANTED_BREAKS)
    assert n >= 15
    assert out.count("| yes |") == n and "**no**" not in out
    assert out.rstrip().endswith(f"{n}/{n} caught")


def test_messages_name_file_line_and_layers(tmp_path):
    root, layers = import_graph.write_synthetic(tmp_path)
    (tmp_path / "latbot/data/mixture.py").write_text("from latbot.data.spaces import DIM\nimport latbot.runs\n")
    (tmp_path / "latbot/data/rotations.py").write_text("from . import clips\n")
    lines = import_graph.check(root, layers).lines()
    assert lines == [
        "cycle of 2: latbot.data.clips (latbot/data/clips.py:5) -> latbot.data.rotations "
        "(latbot/data/rotations.py:1) -> latbot.data.clips",
        "upward: latbot/data/mixture.py:2 latbot.data.mixture (1 data) imports latbot.runs (4 runs)",
    ]


def test_json_output_and_exit_codes(tmp_path, capsys):
    root, layers = import_graph.write_synthetic(tmp_path)
    args = ["--root", str(root), "--layers", str(layers)]
    assert import_graph.main([*args, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["ok"] is True

    import_graph.plant(tmp_path, import_graph.PLANTED_BREAKS[0].plants)  # `import latbot.cli` in latbot/errors.py
    assert import_graph.main([*args, "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["upward"][0] | {"line": 0} == {
        "from": "latbot.errors",
        "to": "latbot.cli",
        "file": "latbot/errors.py",
        "line": 0,
        "from_layer": "0 core",
        "to_layer": "7 front ends",
    }
    assert report["cycles"] and report["cycles"][0]["path"][0]["file"]
    assert import_graph.main(args) == 1
    assert capsys.readouterr().out.splitlines()[-1].endswith(": 1 cycle, 1 upward import, 0 unplaced modules")
    assert import_graph.main(["--root", str(root), "--layers", str(tmp_path / "missing.md")]) == 2


def test_three_breaks_planted_into_a_copy_of_the_real_tree(tmp_path):
    """Whatever the real package's state, planting three breaks adds exactly three problems."""
    shutil.copytree(LATBOT, tmp_path / "latbot", ignore=shutil.ignore_patterns("__pycache__"))
    root = tmp_path / "latbot"

    def keys(report):
        return (
            {frozenset(c.modules) for c in report.cycles}
            | {(u.edge.file, u.edge.line, u.edge.target) for u in report.upward}
            | {u.module for u in report.unplaced}
        )

    before = keys(import_graph.check(root, LAYERS))
    plants = [
        # an upward import in the entry-point adapter, which no module imports (so it closes no loop)
        ("latbot/data/adapters/egodex.py", "def _planted():\n    from latbot.stages.base import Stage\n"),
        # ownership imports errors: back the other way is a loop within the core layer
        ("latbot/errors.py", "def _planted():\n    from latbot import ownership\n"),
        ("latbot/newthing.py", '"""In no layer."""\n'),
    ]
    import_graph.plant(tmp_path, [import_graph.Plant(file, code) for file, code in plants])
    after = import_graph.check(root, LAYERS)
    egodex_lines = (root / "data/adapters/egodex.py").read_text().splitlines()
    stage_line = max(n for n, text in enumerate(egodex_lines, 1) if "from latbot.stages.base import Stage" in text)

    assert keys(after) - before == {
        ("latbot/data/adapters/egodex.py", stage_line, "latbot.stages.base"),
        frozenset({"latbot.errors", "latbot.ownership"}),
        "latbot.newthing",
    }, "\n".join(after.lines())
    assert before - keys(after) == set()


def test_a_long_cycle_needs_no_recursion():
    n = 5 * sys.getrecursionlimit()
    graph = {f"m{i}": [f"m{(i + 1) % n}"] for i in range(n)}
    components = import_graph.strongly_connected(graph)
    assert len(components) == 1 and len(components[0]) == n
