"""Attack cases: bounds (see tests/attacks/__init__.py for how a case is written and judged).

Inputs that would hang LatBot, exhaust its memory or stack, or make a run write outside `log.out_dir`: a
recipe path that is a FIFO or a device, YAML bombs in a recipe or a `--set`, and run names that are paths.
Each must be refused before any work, with one line naming the file (or the `--set`) and the bound."""

from __future__ import annotations

import os
import socket

from tests.attacks import REPO, Trial, attack

RECIPE = REPO / "recipes" / "tiny" / "lam.yaml"
ALIAS_BOMB = (  # 9 levels of 9 aliases: 81 uses of `*`, 9**9 values once expanded
    "{a0: &a0 [x, x, x, x, x, x, x, x, x], "
    + ", ".join(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 10))
    + "}"
)
SETS = ("--set", "log.out_dir=runs", "--set", "log.progress=false", "--set", "log.tensorboard=false")


def validate(t: Trial, path: object, *sets: str):
    return t.cli("recipe", "validate", path, *(x for s in sets for x in ("--set", s)))


def train(t: Trial, path: object, *sets: str):
    return t.cli("train", path, *SETS, *(x for s in sets for x in ("--set", s)))


def write(t: Trial, name: str, text: str):
    path = t.work / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


# -- the recipe path is not a regular file --------------------------------------------------------------
@attack("bounds", "recipe path is a FIFO (validate): refused from stat, never opened for a blocking read")
def _(t: Trial):
    os.mkfifo(t.work / "r.yaml")
    t.expect_refused(validate(t, t.work / "r.yaml"), mentions=["r.yaml", "FIFO", "regular file"])


@attack("bounds", "recipe path is a FIFO (train)")
def _(t: Trial):
    os.mkfifo(t.work / "r.yaml")
    t.expect_refused(train(t, t.work / "r.yaml"), mentions=["r.yaml", "FIFO"])


@attack("bounds", "recipe path is a symlink to a FIFO")
def _(t: Trial):
    os.mkfifo(t.work / "pipe")
    (t.work / "r.yaml").symlink_to("pipe")
    t.expect_refused(validate(t, t.work / "r.yaml"), mentions=["r.yaml", "FIFO"])


@attack("bounds", "recipe path is /dev/zero (a device that never ends)")
def _(t: Trial):
    t.expect_refused(validate(t, "/dev/zero"), mentions=["/dev/zero", "character device"])


@attack("bounds", "recipe path is /dev/zero (train)")
def _(t: Trial):
    t.expect_refused(train(t, "/dev/zero"), mentions=["/dev/zero", "character device"])


@attack("bounds", "recipe path is a directory")
def _(t: Trial):
    (t.work / "recipes").mkdir()
    t.expect_refused(validate(t, t.work / "recipes"), mentions=["recipes", "directory"])


@attack("bounds", "recipe path is a Unix socket")
def _(t: Trial):
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(t.work / "r.yaml"))
        t.expect_refused(validate(t, t.work / "r.yaml"), mentions=["r.yaml", "socket"])


@attack("bounds", "recipe file of 50 MB (sparse): refused by size, not read whole")
def _(t: Trial):
    with (t.work / "r.yaml").open("wb") as f:
        f.truncate(50 << 20)
    t.expect_refused(validate(t, t.work / "r.yaml"), mentions=["r.yaml", "1 MiB"])


# -- `base:` and mixture files ---------------------------------------------------------------------------
@attack("bounds", "base: names a FIFO")
def _(t: Trial):
    os.mkfifo(t.work / "base.yaml")
    path = write(t, "r.yaml", "base: base.yaml\nstage: lam\n")
    t.expect_refused(validate(t, path), mentions=["base.yaml", "FIFO"])


@attack("bounds", "base: names /dev/zero")
def _(t: Trial):
    path = write(t, "r.yaml", "base: /dev/zero\nstage: lam\n")
    t.expect_refused(validate(t, path), mentions=["/dev/zero", "character device"])


@attack("bounds", "data.mixture names a FIFO (train)")
def _(t: Trial):
    os.mkfifo(t.work / "mix.yaml")
    t.expect_refused(train(t, RECIPE, f"data.mixture={t.work / 'mix.yaml'}"), mentions=["mix.yaml", "FIFO"])


@attack("bounds", "data.mixture file holds an alias bomb")
def _(t: Trial):
    mix = write(t, "mix.yaml", f"name: bomb\nsources: [{{store: s}}]\nx: {ALIAS_BOMB}\n")
    t.expect_refused(validate(t, RECIPE, f"data.mixture={mix}"), mentions=["mix.yaml", "aliases are expanded"])


# -- YAML bombs in a recipe file -------------------------------------------------------------------------
@attack("bounds", "recipe file holds an alias bomb (billion laughs, 81 aliases)")
def _(t: Trial):
    path = write(t, "r.yaml", f"stage: lam\nx: {ALIAS_BOMB}\n")
    t.expect_refused(train(t, path), mentions=["r.yaml", "100,000 values"])


@attack("bounds", "recipe file uses 1,000 aliases of one scalar")
def _(t: Trial):
    path = write(t, "r.yaml", "stage: lam\na: &a 1\nx: [" + ", ".join(["*a"] * 1000) + "]\n")
    t.expect_refused(validate(t, path), mentions=["r.yaml", "100 aliases"])


@attack("bounds", "recipe file holds a recursive alias")
def _(t: Trial):
    path = write(t, "r.yaml", "stage: lam\nx: &x [1, *x]\n")
    t.expect_refused(validate(t, path), mentions=["r.yaml:2", "recursive alias"])


@attack("bounds", "recipe file nested 10,000 deep")
def _(t: Trial):
    path = write(t, "r.yaml", "stage: lam\nx: " + "[" * 10_000 + "]" * 10_000 + "\n")
    t.expect_refused(validate(t, path), mentions=["r.yaml:2", "64 levels"])


@attack("bounds", "recipe file holds a 5,000-digit integer")
def _(t: Trial):
    path = write(t, "r.yaml", "stage: lam\ntrain: {steps: " + "9" * 5000 + "}\n")
    t.expect_refused(validate(t, path), mentions=["r.yaml:2", "at most 100"])


# -- YAML bombs in a `--set` value ----------------------------------------------------------------------
@attack("bounds", "--set value is an alias bomb")
def _(t: Trial):
    t.expect_refused(train(t, RECIPE, f"x={ALIAS_BOMB}"), mentions=["--set x=", "100,000 values"])


@attack("bounds", "--set value nested 10,000 deep")
def _(t: Trial):
    t.expect_refused(validate(t, RECIPE, "x=" + "[" * 10_000), mentions=["--set x=[[[", "64 levels"])


@attack("bounds", "--set value is a 5,000-digit integer")
def _(t: Trial):
    r = train(t, RECIPE, "train.steps=" + "9" * 5000)
    t.expect_refused(r, mentions=["--set train.steps=999", "at most 100"])


@attack("bounds", "--set value is a date that does not exist (2024-13-45)")
def _(t: Trial):
    t.expect_refused(validate(t, RECIPE, "train.seed=2024-13-45"), mentions=["--set train.seed=2024-13-45"])


@attack("bounds", "--set key of 10,000 dotted parts")
def _(t: Trial):
    t.expect_refused(validate(t, RECIPE, "a" + ".a" * 9_999 + "=1"), mentions=["--set a.a.a", "at most 64"])


@attack("bounds", "--set list index of 5,000 digits")
def _(t: Trial):
    r = validate(t, RECIPE, "data.sources." + "9" * 5000 + ".weight=1")
    t.expect_refused(r, mentions=["--set data.sources.999", "9 digits"])


# -- log.run_name is a path, not a name -----------------------------------------------------------------
def train_into(t: Trial, run_name: str):
    """`latbot train` of the tiny recipe with a store that passes the path check, named `run_name`."""
    write(t, "store/zarr.json", "{}")
    return train(t, RECIPE, f"data.sources=[{{store: {t.work / 'store'}}}]", f"log.run_name={run_name}")


@attack("bounds", "log.run_name=../x (train): would write beside log.out_dir")
def _(t: Trial):
    t.expect_refused(train_into(t, "../x"), mentions=["log.run_name", "../x"])


@attack("bounds", "log.run_name=/abs/path (train): would write anywhere")
def _(t: Trial):
    outside = t.tmp / "outside"
    t.expect_refused(train_into(t, str(outside)), mentions=["log.run_name", str(outside)])


@attack("bounds", "log.run_name=a/b (train)")
def _(t: Trial):
    t.expect_refused(train_into(t, "a/b"), mentions=["log.run_name", "a/b"])


@attack("bounds", "log.run_name: .. written in a recipe file (validate)")
def _(t: Trial):
    path = write(t, "r.yaml", f"base: {RECIPE}\nlog: {{run_name: ..}}\n")
    t.expect_refused(validate(t, path), mentions=["r.yaml:2", "log.run_name"])


# -- a plugin's options file ----------------------------------------------------------------------------
@attack("bounds", "data convert --config names a FIFO")
def _(t: Trial):
    os.mkfifo(t.work / "opts.yaml")
    r = t.cli("data", "convert", t.work, "--format", "lerobot", "--out", "store", "--config", t.work / "opts.yaml")
    t.expect_refused(r, mentions=["opts.yaml", "FIFO"])
