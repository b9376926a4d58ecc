"""The `latbot` command line: exit codes, one-line errors, plugin listing, completion, import cost."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from latbot import __version__
from latbot.cli import app
from tests.conftest import PLUGIN_SOURCE, REPO, make_distribution

EXAMPLE = REPO / "recipes/examples/lam_example_plugin.yaml"
LATBOT = [sys.executable, "-m", "latbot"]
runner = CliRunner()


def latbot(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run the real console entry point in a fresh process (real exit codes, real stderr)."""
    return subprocess.run(
        [*LATBOT, *args], capture_output=True, text=True, env={**os.environ, **(env or {})}, cwd=REPO, timeout=120
    )


def test_version():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.stdout.strip() == f"latbot {__version__}"


def test_validate_typo_prints_one_line_with_file_and_dotted_path_and_exits_2(tmp_path):
    bad = tmp_path / "typo.yaml"
    bad.write_text(EXAMPLE.read_text().replace("num_motion_tokens: 8", "num_motion_tokns: 8"))  # latbot: base
    proc = latbot("recipe", "validate", str(bad))
    assert proc.returncode == 2
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"error: {bad}:") and "model.encoder.num_motion_tokns: unknown field" in lines[0]
    assert "did you mean 'num_motion_tokens'?" in lines[0] and "Traceback" not in proc.stderr


def test_validate_and_show_a_good_recipe():
    result = runner.invoke(app, ["recipe", "validate", str(EXAMPLE)])
    assert result.exit_code == 0 and "ok:" in result.stdout and "(stage lam)" in result.stdout
    result = runner.invoke(app, ["recipe", "show", str(EXAMPLE), "--set", "train.steps=7"])
    assert result.exit_code == 0
    assert result.stdout.startswith("stage: lam\nmodel:\n  encoder:\n    type: tiny_conv")
    assert "steps: 7" in result.stdout


def test_schema_command_writes_json(tmp_path):
    out = tmp_path / "recipe.schema.json"
    result = runner.invoke(app, ["recipe", "schema", "--out", str(out)])
    assert result.exit_code == 0
    assert "encoders.tiny_conv" in json.loads(out.read_text())["$defs"]
    result = runner.invoke(app, ["recipe", "schema", "--stage", "lamm"])
    assert result.exit_code == 2 and "not a stage" in result.stderr


def test_plugins_list_shows_every_kind_and_the_example_plugin():
    proc = latbot("plugins", "list")
    assert proc.returncode == 0
    for kind in ("encoders:", "decoders:", "students:", "action_experts:", "datasets:", "simulators:"):
        assert kind in proc.stdout
    assert "tiny_conv  latbot-example-plugin  latbot_example_plugin.tiny_conv:TinyConvEncoder" in proc.stdout
    rows = json.loads(latbot("plugins", "list", "--json").stdout)
    assert {
        "kind": "decoders",
        "name": "tiny_mlp",
        "distribution": "latbot-example-plugin",
        "target": "latbot_example_plugin.tiny_mlp:TinyMlpDecoder",
        "builtin": False,
        "conflict": False,
    } in rows


def test_plugins_check_fails_on_a_broken_plugin_and_autoload_switch_hides_it(tmp_path):
    site = make_distribution(
        tmp_path,
        "fake-cli",
        {"latbot.students": {"good_one": "fakeplug_cli.good:Good", "bad_one": "fakeplug_cli.bad:Bad"}},
        {"fakeplug_cli.good": PLUGIN_SOURCE.format(cls="Good", name="good_one"), "fakeplug_cli.bad": "1/0\n"},
    )
    env = {"PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}
    proc = latbot("plugins", "check", "--quick", "--kind", "students", env=env)  # import only (contracts: test_plugins)
    assert proc.returncode == 1
    assert "ok    students/good_one" in proc.stdout
    assert "FAIL  students/bad_one [import]: students plugin 'bad_one' from distribution 'fake-cli'" in proc.stdout
    assert "ZeroDivisionError" in proc.stdout
    hidden = latbot("plugins", "check", "--quick", env={**env, "LATBOT_DISABLE_PLUGIN_AUTOLOAD": "1"})
    assert hidden.returncode == 0 and "bad_one" not in hidden.stdout


def test_train_errors_are_one_line_and_create_nothing(tmp_path, monkeypatch):
    out = ["--set", f"log.out_dir={tmp_path / 'runs'}"]
    proc = latbot("train", str(REPO / "recipes/tiny/lam.yaml"), *out)
    assert proc.returncode == 2 and "data.sources is empty" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "runs").exists()  # nothing half-written
    bad = latbot("train", str(EXAMPLE), "--set", "train.lr=-1")
    assert bad.returncode == 2 and "--set train.lr=-1: train.lr: Input should be greater than 0" in bad.stderr
    missing = latbot("train", str(EXAMPLE), "--resume", str(tmp_path / "nope"))
    assert missing.returncode == 2 and "no such run directory" in missing.stderr
    # a stage no installed package registers (stages are plugins of kind `stages`)
    unknown = EXAMPLE.parent / f"unknown_stage_{os.getpid()}.yaml"  # next to the example: its base: resolves
    unknown.write_text(EXAMPLE.read_text().replace("stage: lam", "stage: pretrain"))
    try:
        result = runner.invoke(app, ["train", str(unknown)])
    finally:
        unknown.unlink()
    assert result.exit_code == 2 and "stage: is 'pretrain'" in result.stderr
    assert "expected one of: lam, distill, finetune" in result.stderr


def test_shell_completion_completes_commands_and_options():
    env = {"_LATBOT_COMPLETE": "complete_bash", "COMP_WORDS": "latbot rec", "COMP_CWORD": "1"}
    proc = subprocess.run(
        ["latbot"],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=60,
        executable=str(Path(sys.executable).with_name("latbot")),
    )
    assert proc.returncode == 0 and "recipe" in proc.stdout.split()
    env.update(COMP_WORDS="latbot recipe ", COMP_CWORD="2")
    proc = subprocess.run(
        ["latbot"],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=60,
        executable=str(Path(sys.executable).with_name("latbot")),
    )
    assert {"show", "validate", "schema"} <= set(proc.stdout.split())


@pytest.mark.parametrize("statement", ["import latbot", "from latbot.cli import app; app(['--help'])"])
def test_import_and_help_load_no_model_library(statement):
    code = (
        f"import sys\ntry:\n    {statement}\nexcept SystemExit:\n    pass\n"
        "heavy = [m for m in ('torch', 'transformers', 'diffusers', 'zarr', 'rerun', 'av', 'h5py') "
        "if m in sys.modules]\nprint('HEAVY:' + ','.join(heavy))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "HEAVY:"
