"""Paths in recipes: written in a recipe file → relative to that file (like `base:`); given with `--set` →
relative to the current directory; absolute → unchanged; `log.out_dir` → always the current directory.
`latbot recipe validate` and `latbot train` report every missing store / parent run with file:line and
the dotted field."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from latbot.cli import app
from latbot.recipes import load_recipe
from tests.conftest import REPO

runner = CliRunner()

RECIPE = """\
base: ../_base/optim.yaml
stage: distill
data:
  sources:
    - {store: ../stores/a}
    - {store: /abs/b}
model:
  student: {type: tiny_cnn}
  teacher: runs/lam
log: {out_dir: runs}
"""


def write_recipe(root: Path) -> Path:
    (root / "recipes" / "_base").mkdir(parents=True)
    (root / "recipes" / "_base" / "optim.yaml").write_text("model:\n  teacher_cache: ../caches/c\n")
    path = root / "recipes" / "mine" / "r.yaml"
    path.parent.mkdir()
    path.write_text(RECIPE)
    return path


def test_paths_follow_the_file_that_wrote_them(tmp_path, monkeypatch):
    path = write_recipe(tmp_path)
    monkeypatch.chdir(tmp_path / "recipes")  # anywhere: the recipe's own paths do not depend on it
    r = load_recipe(path)
    assert r.data.sources[0].store == tmp_path / "recipes/stores/a"  # relative to recipes/mine/r.yaml
    assert r.data.sources[1].store == Path("/abs/b")  # absolute: unchanged
    assert r.model.teacher == tmp_path / "recipes/mine/runs/lam"
    assert r.model.teacher_cache == tmp_path / "recipes/caches/c"  # written in the base file: relative to it
    assert r.log.out_dir == Path("runs")  # where runs are written: the current directory, always
    r = load_recipe(path, ["data.sources=[{store: stores/x}]", "model.teacher=runs/t"])
    assert r.data.sources[0].store == Path("stores/x") and r.model.teacher == Path("runs/t")  # --set: the cwd


def test_repository_recipes_name_their_files_relative_to_themselves(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    r = load_recipe(REPO / "recipes/lam_internvl.yaml")  # data.mixture: mixtures/table6.yaml
    assert r.data.sources[0].store == REPO / "data/stores/fractal"
    r = load_recipe(REPO / "recipes/finetune_libero.yaml")
    assert r.data.sources[0].store == REPO / "stores/libero"


def test_validate_reports_every_missing_store_and_run_with_file_line_and_field(tmp_path, monkeypatch):
    path = write_recipe(tmp_path)
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["recipe", "validate", str(path)])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert lines == [
        f"error: {path}:5: data.sources[0].store: '{tmp_path}/recipes/stores/a' does not exist",
        f"error: {path}:6: data.sources[1].store: '/abs/b' does not exist",
        f"error: {path}:9: model.teacher: '{tmp_path}/recipes/mine/runs/lam' does not exist",
    ]
    (tmp_path / "recipes/stores/a").mkdir(parents=True)
    result = runner.invoke(app, ["recipe", "validate", str(path), "--set", "data.sources=[{store: nope}]"])
    assert (
        result.stderr.splitlines()[0]
        == "error: --set data.sources=[{store: nope}]: data.sources[0].store: 'nope' does not exist"
    )
    assert runner.invoke(app, ["recipe", "validate", str(path), "--no-check-paths"]).exit_code == 0
    result = runner.invoke(app, ["recipe", "validate", str(REPO / "recipes/lam_internvl.yaml")])
    first = result.stderr.splitlines()[0]
    assert result.exit_code == 2 and "recipes/lam_internvl.yaml:9: data.mixture: store" in first
    assert "of source 'fractal' (listed in mixtures/table6.yaml) does not exist" in first


def test_train_refuses_a_missing_store_before_anything_is_written(tmp_path):
    runs = tmp_path / "runs"
    result = runner.invoke(app, ["train", str(REPO / "recipes/tiny/lam.yaml"), "--set", f"log.out_dir={runs}",
                                 "--set", "data.sources=[{store: no/such/store}]"])  # fmt: skip
    assert result.exit_code == 2 and "data.sources[0].store: 'no/such/store' does not exist" in result.stderr
    assert not runs.exists()
    result = runner.invoke(app, ["train", str(REPO / "recipes/tiny/lam.yaml"), "--set", f"log.out_dir={runs}"])
    assert result.exit_code == 2  # a stage-time error names the recipe it is about
    assert f"error: {REPO / 'recipes/tiny/lam.yaml'}: data.sources is empty" in result.stderr
