"""latbot.yamlio.bounded: YAML read within bounds (size, nesting, aliases, integers, file kind), each
refusal a one-line `RecipeError` naming the file or `--set` item and the bound; and `log.run_name` is a
plain folder name."""

from __future__ import annotations

import json
import os
import time

import pytest

from latbot.errors import RecipeError
from latbot.recipes.loader import load_recipe, parse_override
from latbot.yamlio import bounded as by
from tests.conftest import REPO

TINY = REPO / "recipes" / "tiny" / "lam.yaml"


def refusal(fn, *args) -> str:
    with pytest.raises(RecipeError) as e:
        fn(*args)
    msg = str(e.value)
    assert "\n" not in msg, msg
    return msg


def aliases(levels: int, fan: int) -> str:
    """`levels` anchors, each a list of `fan` aliases of the one before: fan**levels values expanded."""
    out = [f"a0: &a0 [{', '.join(['x'] * fan)}]"]
    out += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * fan) + "]" for i in range(1, levels + 1)]
    return "{" + ", ".join(out) + "}"


# -- within the bounds: what real recipes use still loads --------------------------------------------------
def test_anchors_aliases_and_merge_keys_within_the_bounds_load():
    text = "base: &b {lr: 0.1, steps: 3}\nrun: {<<: *b, steps: 5}\nlist: [*b, *b]\nbig: " + "9" * 100
    data, node = by.parse(text, "r.yaml")
    assert data["run"] == {"lr": 0.1, "steps": 5} and data["list"] == [data["base"]] * 2
    assert data["big"] == int("9" * 100) and node is not None


def test_exactly_at_the_bounds_loads():
    assert by.parse("[" * by.MAX_DEPTH + "]" * by.MAX_DEPTH, "r")[0] is not None
    assert len(by.parse("a: &a 1\nb: [" + ", ".join(["*a"] * by.MAX_ALIASES) + "]", "r")[0]["b"]) == 100


# -- past the bounds: refused while composing, fast -----------------------------------------------------
@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("x: " + aliases(9, 9), "more than 100,000 values once aliases are expanded"),  # 81 aliases, 9**10 values
        ("a: &a 1\nb: [" + ", ".join(["*a"] * 101) + "]", "more than 100 aliases"),
        ("x: &x [1, *x]", "recursive alias"),
        ("x: " + "[" * 10_000 + "]" * 10_000, "nested deeper than 64 levels"),
        ("x:\n" + "".join("  " * i + f"k{i}:\n" for i in range(1, 100)), "nested deeper than 64 levels"),
        ("x: " + "9" * 101, "an integer of 101 characters (at most 100)"),
        ("x: " + "9" * 5000, "an integer of 5000 characters"),
        ("x: 0x" + "f" * 200, "an integer of 202 characters"),
    ],
)
def test_past_a_bound_is_refused_quickly_naming_the_bound(text, says):
    t0 = time.perf_counter()
    msg = refusal(by.parse, text, "r.yaml")
    assert msg.startswith("r.yaml:") and says in msg, msg
    assert time.perf_counter() - t0 < 2


def test_a_constructor_error_is_a_recipe_error():
    assert "month must be in 1..12" in refusal(by.parse, "d: 2024-13-45", "r.yaml")


# -- files: only regular files, of bounded size ---------------------------------------------------------
def test_special_files_are_refused_without_blocking(tmp_path):
    os.mkfifo(tmp_path / "fifo.yaml")
    (tmp_path / "dir").mkdir()
    assert "a FIFO (named pipe); a recipe file must be a regular file" in refusal(by.read_text, tmp_path / "fifo.yaml")
    assert "a character device" in refusal(by.read_text, "/dev/zero")
    assert "a directory" in refusal(by.read_text, tmp_path / "dir")
    assert refusal(by.read_text, tmp_path / "nope.yaml").endswith("nope.yaml: recipe file not found")


def test_a_file_over_the_size_bound_is_refused(tmp_path):
    big = tmp_path / "big.yaml"
    with big.open("wb") as f:
        f.truncate(by.MAX_FILE_BYTES + 1)
    assert "larger than 1 MiB" in refusal(by.read_text, big)
    (tmp_path / "ok.yaml").write_text("a: 1\n" + "#" * (by.MAX_FILE_BYTES - 10))
    assert by.load_file(tmp_path / "ok.yaml") == {"a": 1}


def test_recipe_base_and_mixture_files_go_through_the_bounds(tmp_path):
    os.mkfifo(tmp_path / "base.yaml")
    (tmp_path / "r.yaml").write_text("base: base.yaml\nstage: lam\n")
    assert "`base:` file must be a regular file" in refusal(load_recipe, tmp_path / "r.yaml")
    os.mkfifo(tmp_path / "mix.yaml")
    msg = refusal(load_recipe, TINY, [f"data.mixture={tmp_path / 'mix.yaml'}"])
    assert "mix.yaml: a FIFO (named pipe); a mixture file must be a regular file" in msg


# -- `--set` values and keys ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("x=" + aliases(9, 9), "more than 100,000 values"),
        ("x=" + "[" * 10_000, "nested deeper than 64 levels"),
        ("train.steps=" + "9" * 5000, "an integer of 5000 characters"),
        ("a" + ".a" * 9_999 + "=1", "the key has 10000 parts (at most 64)"),
        ("data.sources." + "9" * 5000 + ".weight=1", "has more than 9 digits"),
    ],
)
def test_override_past_a_bound_is_refused_in_one_short_line(text, says):
    msg = refusal(parse_override, text)
    assert msg.startswith("--set ") and says in msg and len(msg) < 300, msg


def test_override_label_is_one_line():
    assert refusal(parse_override, "x=[1,\n2").startswith("--set x=[1, 2: ")


# -- log.run_name -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["../x", "/abs/path", "a/b", "a\\b", "..", ".hidden", "", "x" * 129, "a\x00b"])
def test_run_name_must_be_a_plain_folder_name(name):
    msg = refusal(load_recipe, TINY, ["log.run_name=" + json.dumps(name)])  # a YAML string, escapes and all
    assert msg.startswith("--set log.run_name=") and ": log.run_name: must" in msg, msg


@pytest.mark.parametrize("name", ["lam", "lam_mt10-seed.1", "x" * 128, "ünïcode"])
def test_plain_run_names_are_kept(name):
    assert load_recipe(TINY, [f"log.run_name={name}"]).log.run_name == name
