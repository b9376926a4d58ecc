"""Fuzzing recipe loading: random YAML structures and values, random edits of a real recipe and random
bytes must load or end in one `RecipeError` — never another exception, a hang or a silent bool→int."""

from __future__ import annotations

import shutil

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from latbot.errors import RecipeError
from latbot.recipes import load_recipe
from tests.conftest import REPO
from tests.fuzz_settings import fast, slow

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
)
keys = st.sampled_from(["stage", "data", "model", "train", "steps", "lr", "image_size", "base", "type", "x"])
trees = st.recursive(scalars, lambda c: st.lists(c, max_size=4) | st.dictionaries(keys, c, max_size=4), max_leaves=30)
FIELDS = [
    ("train", "steps"),
    ("train", "lr"),
    ("train", "global_batch_size"),
    ("train", "micro_batch_size"),
    ("train", "warmup_steps"),
    ("train", "betas"),
    ("data", "image_size"),
    ("data", "num_frames"),
    ("model", "action_horizon"),
    ("model", "student"),
    ("log", "every_steps"),
]


@pytest.fixture(scope="module")
def recipes(tmp_path_factory):
    root = tmp_path_factory.mktemp("recipes")
    shutil.copytree(REPO / "recipes", root / "recipes")
    return root / "recipes" / "tiny"


def load(path):
    try:
        return load_recipe(path)
    except RecipeError:
        return None


def check_tree(folder, tree):
    path = folder / "fuzz.yaml"
    path.write_text(yaml.safe_dump(tree, allow_unicode=True))
    load(path)


def check_edit(folder, field, value):
    path = folder / "fuzz_edit.yaml"
    path.write_text(yaml.safe_dump({"base": "finetune.yaml", field[0]: {field[1]: value}}))
    recipe = load(path)
    if recipe is not None and isinstance(value, bool):
        pytest.fail(f"{field}: the boolean {value} was accepted")


def check_bytes(folder, data):
    path = folder / "fuzz_bytes.yaml"
    path.write_bytes(data)
    load(path)


@fast(40)
@given(trees)
def test_random_yaml_structures(recipes, tree):
    check_tree(recipes, tree)


@fast(40)
@given(st.sampled_from(FIELDS), trees)
def test_random_values_in_a_real_recipe(recipes, field, value):
    check_edit(recipes, field, value)


@fast(40)
@given(st.binary(max_size=300) | st.text(max_size=300).map(lambda t: ("stage: lam\n" + t).encode("utf-8", "replace")))
def test_random_bytes(recipes, data):
    check_bytes(recipes, data)


@pytest.mark.slow
@slow(3000)
@given(trees)
def test_random_yaml_structures_many(recipes, tree):
    check_tree(recipes, tree)


@pytest.mark.slow
@slow(3000)
@given(st.sampled_from(FIELDS), trees)
def test_random_values_in_a_real_recipe_many(recipes, field, value):
    check_edit(recipes, field, value)


@pytest.mark.slow
@slow(3000)
@given(st.binary(max_size=2000))
def test_random_bytes_many(recipes, data):
    check_bytes(recipes, data)
