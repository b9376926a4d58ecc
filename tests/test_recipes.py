"""Recipes: every shipped YAML validates; includes, overrides, plugin slots and every error case."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from latbot.errors import RecipeError
from latbot.recipes import load_recipe, recipe_from_dict, to_dict
from latbot.recipes.jsonschema import recipe_json_schema
from latbot.recipes.loader import parse_override
from latbot.stages.lam import LamRecipe
from tests.conftest import REPO

RECIPES = REPO / "recipes"
# Fragments (`_base/`, included with `base:`) and mixture files are not whole recipes.
SHIPPED = sorted(
    p
    for p in RECIPES.rglob("*.yaml")
    if not any(part.startswith("_") for part in p.relative_to(RECIPES).parts)
    and "mixtures" not in p.parts
    and "studies" not in p.parts  # study files (tests/test_study.py), not recipes
)

MINIMAL = """\
stage: lam
model:
  encoder: {type: tiny_conv, width: 32}
  decoder: {type: tiny_mlp}
"""


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


def error_of(path, overrides=()) -> str:
    with pytest.raises(RecipeError) as e:
        load_recipe(path, overrides)
    return str(e.value)


def test_there_are_shipped_recipes():
    assert SHIPPED, "recipes/ holds no whole recipe"


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: str(p.relative_to(RECIPES)))
def test_every_shipped_recipe_validates(path):
    recipe = load_recipe(path)
    assert recipe.stage in {"lam", "distill", "finetune"}
    assert recipe_from_dict(to_dict(recipe)) == recipe  # the resolved form re-validates to the same recipe


def test_plugin_slot_is_validated_by_the_plugins_own_config(tmp_path):
    recipe = load_recipe(write(tmp_path, "r.yaml", MINIMAL))
    assert isinstance(recipe, LamRecipe)
    enc = recipe.model.encoder
    assert type(enc).__qualname__ == "TinyConvEncoder.Config"
    assert enc.width == 32 and enc.num_scene_tokens == 8  # plugin default filled in
    assert to_dict(recipe)["model"]["encoder"]["num_motion_tokens"] == 8  # serialized with plugin fields


def test_base_includes_merge_in_order_and_the_including_file_wins(tmp_path):
    write(tmp_path, "_base/a.yaml", "train: {lr: 0.001, steps: 10, betas: [0.8, 0.9]}\nlog: {every_steps: 3}\n")
    write(tmp_path, "_base/b.yaml", "train: {steps: 20}\n")
    body = "base: [../_base/a.yaml, ../_base/b.yaml]\n" + MINIMAL + "train: {lr: 0.002}\n"
    path = write(tmp_path, "exp/r.yaml", body)
    recipe = load_recipe(path)
    assert recipe.train.lr == 0.002 and recipe.train.steps == 20 and recipe.train.betas == (0.8, 0.9)
    assert recipe.log.every_steps == 3


def test_errors_in_a_base_file_name_that_file_and_line(tmp_path):
    write(tmp_path, "_base/a.yaml", "train:\n  steps: 10\n  lr: fast\n")
    msg = error_of(write(tmp_path, "r.yaml", "base: _base/a.yaml\n" + MINIMAL))
    assert msg.startswith(f"{tmp_path / '_base/a.yaml'}:3: train.lr: ")


def test_base_cycle_and_missing_base_are_errors(tmp_path):
    write(tmp_path, "a.yaml", "base: b.yaml\n")
    write(tmp_path, "b.yaml", "base: a.yaml\n")
    assert "cycle" in error_of(tmp_path / "a.yaml")
    assert "base: file 'nope.yaml' not found" in error_of(write(tmp_path, "c.yaml", "base: nope.yaml\n" + MINIMAL))


@pytest.mark.parametrize(
    ("text", "loc", "value"),
    [
        ("train.lr=3e-4", ("train", "lr"), 3e-4),
        ("train.steps=12", ("train", "steps"), 12),
        ("train.precision=fp32", ("train", "precision"), "fp32"),
        ("log.tensorboard=false", ("log", "tensorboard"), False),
        ("train.betas=[0.9, 0.99]", ("train", "betas"), [0.9, 0.99]),
        ("data.sources[0].weight=2", ("data", "sources", 0, "weight"), 2),
        ("data.sources.0.weight=2", ("data", "sources", 0, "weight"), 2),
    ],
)
def test_override_values_are_typed(text, loc, value):
    assert parse_override(text) == (loc, value)


def test_overrides_apply_and_are_validated(tmp_path):
    path = write(tmp_path, "r.yaml", MINIMAL)
    recipe = load_recipe(
        path,
        [
            "train.lr=3e-4",
            "data.sources=[{store: /data/a}, {store: /data/b, weight: 3}]",
            "data.sources[1].frame_stride=4",
            "model.encoder.heads=8",
        ],
    )
    assert recipe.train.lr == 3e-4 and recipe.model.encoder.heads == 8
    assert [s.weight for s in recipe.data.sources] == [1.0, 3.0] and recipe.data.sources[1].frame_stride == 4
    assert error_of(path, ["train.steps=many"]).startswith("--set train.steps=many: train.steps: ")
    assert "data.sources[3] does not exist" in error_of(path, ["data.sources[3].weight=1"])
    assert "expected KEY=VALUE" in error_of(path, ["train.lr"])


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (MINIMAL + "train:\n  lerning_rate: 0.1\n", ":6: train.lerning_rate: unknown field"),
        (MINIMAL.replace("width: 32", "widht: 32"), ":3: model.encoder.widht: unknown field; did you mean 'width'?"),
        (
            MINIMAL.replace("tiny_mlp", "tiny_mpl"),
            ":4: model.decoder.type: unknown decoders plugin 'tiny_mpl'; did you mean 'tiny_mlp'?",
        ),
        (MINIMAL.replace("stage: lam", "stage: lamm"), ":1: stage: is 'lamm'; did you mean 'lam'?"),
        (MINIMAL.replace("stage: lam\n", ""), ": stage: is missing (expected one of: lam, distill, finetune"),
        (MINIMAL + "train: {precision: fp16}\n", ":5: train.precision: Input should be 'fp32' or 'bf16'"),
        (MINIMAL + "train: {lr: 1.0e-5, min_lr: 1.0e-4}\n", ":5: train: min_lr (0.0001) must not exceed lr"),
        (MINIMAL + "train: {global_batch_size: 10, micro_batch_size: 4}\n", "must be a multiple of micro_batch_size"),
        ("stage: lam\nmodel:\n  encoder: {type: tiny_conv}\n", ":2: model.decoder: required field is missing"),
        (
            "stage: lam\nmodel:\n  encoder: {width: 3}\n  decoder: {type: tiny_mlp}\n",
            ":3: model.encoder.type: required field is missing",
        ),
        (
            MINIMAL + "data:\n  sources:\n    - {store: a, weight: -1}\n",
            ":7: data.sources[0].weight: Input should be greater",
        ),
        ("- just\n- a list\n", ":1: a recipe must be a YAML mapping"),
        ("stage: lam\nmodel: [1,\n", ":3:1: invalid YAML"),
    ],
)
def test_each_user_error_names_file_line_and_dotted_field(tmp_path, body, expected):
    path = write(tmp_path, "r.yaml", body)
    msg = error_of(path)
    assert msg.startswith(str(path)), msg
    assert expected in msg, msg


def test_all_problems_are_reported_together_one_line_each(tmp_path):
    body = MINIMAL.replace("width: 32", "widht: 32") + "train: {lr: fast, steps: 0}\n"
    lines = error_of(write(tmp_path, "r.yaml", body)).splitlines()
    assert len(lines) == 3
    assert {line.split(": ")[1] for line in lines} == {"train.lr", "train.steps", "model.encoder.widht"}


def test_missing_recipe_file(tmp_path):
    assert error_of(tmp_path / "nope.yaml").endswith("nope.yaml: recipe file not found")


def test_json_schema_carries_plugin_fields():
    schema = recipe_json_schema()
    assert {d["$ref"].rsplit("/", 1)[1] for d in schema["oneOf"]} >= {"LamRecipe", "DistillRecipe", "FinetuneRecipe"}
    encoder = schema["$defs"]["LamModel"]["properties"]["encoder"]
    assert {"$ref": "#/$defs/encoders.tiny_conv"} in encoder["oneOf"]
    assert "width" in schema["$defs"]["encoders.tiny_conv"]["properties"]
    assert schema["$defs"]["LamRecipe"]["additionalProperties"] is False
    json.dumps(schema)  # serialisable as is
    lam_only = recipe_json_schema("lam")
    assert lam_only["title"] == "LamRecipe" and "stage" in lam_only["properties"]


def test_generated_recipe_reference_is_up_to_date():
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, str(REPO / "tools/gen_recipe_reference.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
