"""`base: latbot:_base/NAME.yaml`: fragments shipped inside the package, reachable from a recipe anywhere."""

from __future__ import annotations

import importlib.resources
import os
import subprocess
import sys
from pathlib import Path

import pytest

from latbot.errors import RecipeError
from latbot.recipes import load_recipe, to_dict
from latbot.recipes.loader import shipped_bases
from latbot.yamlio import bounded
from tests.conftest import REPO

PACKAGE_BASES = importlib.resources.files("latbot.recipes") / "_base"
PAPER_OPTIM = "latbot:_base/paper_optim.yaml"
RECIPE = """\
stage: lam
model:
  encoder: {type: tiny_conv, width: 32}
  decoder: {type: tiny_mlp}
train: {steps: 5}
"""


def recipe_with_base(directory: Path, base: str) -> Path:
    path = directory / "r.yaml"
    path.write_text(f"base: {base}\n{RECIPE}")
    return path


def error_of(path: Path) -> str:
    with pytest.raises(RecipeError) as e:
        load_recipe(path)
    return str(e.value)


def test_the_shipped_bases_are_found_through_the_package():
    names = shipped_bases()
    assert PAPER_OPTIM in names
    assert names == sorted(f"latbot:_base/{f.name}" for f in PACKAGE_BASES.iterdir() if f.name.endswith(".yaml"))


def test_the_repositorys_recipes_base_is_the_package_copy_not_a_second_one():
    for name in shipped_bases():
        file = name.removeprefix("latbot:")
        assert (REPO / "recipes" / file).resolve() == Path(str(PACKAGE_BASES / Path(file).name)).resolve()


def test_a_recipe_outside_the_repository_includes_a_shipped_base(tmp_path):
    shipped = recipe_with_base(tmp_path, PAPER_OPTIM)
    proc = subprocess.run(
        [sys.executable, "-m", "latbot", "recipe", "validate", shipped.name],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        timeout=120,
    )
    assert proc.returncode == 0 and "ok:" in proc.stdout, proc.stderr

    copy = tmp_path / "relative"
    (copy / "_base").mkdir(parents=True)
    (copy / "_base/paper_optim.yaml").write_text((PACKAGE_BASES / "paper_optim.yaml").read_text())
    relative = recipe_with_base(copy, "_base/paper_optim.yaml")
    recipe = load_recipe(shipped)
    assert recipe == load_recipe(relative) and to_dict(recipe) == to_dict(load_recipe(relative))
    assert recipe.train.warmup_steps == 2000 and recipe.train.steps == 5  # the base's value, the recipe's own


@pytest.mark.parametrize("name", ["latbot:_base/paper_optim.yml", "latbot:_base/nope.yaml", "latbot:../loader.py"])
def test_an_unknown_shipped_base_is_one_line_naming_file_line_name_and_the_shipped_ones(tmp_path, name):
    path = tmp_path / "r.yaml"
    path.write_text(f"{RECIPE}base:\n  - {PAPER_OPTIM}\n  - {name}\n")
    msg = error_of(path)
    assert "\n" not in msg
    assert msg.startswith(f"{path}:8: base: '{name}' is not a base shipped with latbot")
    assert f"(shipped: {', '.join(shipped_bases())})" in msg


def test_a_close_miss_suggests_the_shipped_name_and_a_far_one_does_not(tmp_path):
    assert f"did you mean '{PAPER_OPTIM}'?" in error_of(recipe_with_base(tmp_path, "latbot:_base/paper_optm.yaml"))
    assert "did you mean" not in error_of(recipe_with_base(tmp_path, "latbot:_base/nope.yaml"))


def test_a_shipped_base_is_read_within_the_bounds(tmp_path, monkeypatch):
    path = tmp_path / "r.yaml"
    path.write_text(f"base: {PAPER_OPTIM}\n")  # within the lowered bound; the shipped file (~500 bytes) is not
    monkeypatch.setattr(bounded, "MAX_FILE_BYTES", 64)
    msg = error_of(path)
    assert msg.startswith(f"{Path(str(PACKAGE_BASES / 'paper_optim.yaml'))}: larger than")
