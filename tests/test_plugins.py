"""`latbot plugins check` runs each plugin's contract (latbot.testing.contracts) and prints one line per
broken requirement; `latbot plugins new KIND NAME` writes a package that installs, passes the check and
trains (or converts / generates) as is; a plugin's own exception during `train` names the plugin."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Literal

import pytest
from typer.testing import CliRunner

from latbot import registry
from latbot.cli import app
from latbot.testing.contracts import check_class
from tests.conftest import REPO

runner = CliRunner()
LATBOT = [sys.executable, "-m", "latbot"]


# -- three broken plugins, one line each ------------------------------------------------------------------------
def broken_plugins():
    from latbot_example_plugin.mlp_head import MlpHeadActionExpert
    from latbot_example_plugin.tiny_cnn import TinyCnnStudent
    from latbot_example_plugin.tiny_conv import TinyConvEncoder

    class NoWidthEncoder(TinyConvEncoder):  # missing property: `width`
        class Config(TinyConvEncoder.Config):
            type: Literal["no_width"] = "no_width"

        width = None

    class WrongShapeStudent(TinyCnnStudent):  # wrong output shape: one latent token short
        class Config(TinyCnnStudent.Config):
            type: Literal["wrong_shape"] = "wrong_shape"

        def forward(self, *args, **kwargs):
            out = super().forward(*args, **kwargs)
            return {**out, "latents": out["latents"][:, 1:]}

    class WrongKeysExpert(MlpHeadActionExpert):  # wrong returned keys: no "ee", no "gripper"
        class Config(MlpHeadActionExpert.Config):
            type: Literal["wrong_keys"] = "wrong_keys"

        def loss(self, *args, **kwargs):
            return {"loss": super().loss(*args, **kwargs)["loss"]}

    return {
        ("encoders", "no_width"): NoWidthEncoder,
        ("students", "wrong_shape"): WrongShapeStudent,
        ("action_experts", "wrong_keys"): WrongKeysExpert,
    }


@pytest.fixture
def broken():
    plugins = broken_plugins()
    for (kind, name), cls in plugins.items():
        registry.register(kind, name, cls)
    yield plugins
    for kind, name in plugins:
        registry.unregister(kind, name)


EXPECTED = {
    "no_width": "FAIL  encoders/no_width (<registered at runtime>) [width]: needs an int property `width`",
    "wrong_shape": 'FAIL  students/wrong_shape (<registered at runtime>) [forward]: forward(...)["latents"] must be '
    "(B, Ns + Nm, D_teacher) = (2, 8, 40), got (2, 7, 40)",
    "wrong_keys": "FAIL  action_experts/wrong_keys (<registered at runtime>) [loss]: loss must return the keys "
    '"loss", "ee", "gripper" (the stage logs all three); lacks [\'ee\', \'gripper\']',
}


@pytest.mark.parametrize("name", EXPECTED)
def test_plugins_check_catches_each_broken_plugin_in_one_line(broken, name):
    result = runner.invoke(app, ["plugins", "check", name])
    assert result.exit_code == 1, result.output
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(EXPECTED[name]), result.stdout
    assert "1 plugin(s) failed" in result.stderr


def test_a_working_plugin_is_ok_and_an_unknown_name_is_an_error():
    result = runner.invoke(app, ["plugins", "check", "tiny_mlp"])
    assert result.exit_code == 0 and result.stdout.startswith("ok    decoders/tiny_mlp (latbot-example-plugin): ")
    result = runner.invoke(app, ["plugins", "check", "no_such_plugin"])
    assert result.exit_code == 2 and "no plugin named 'no_such_plugin'" in result.stderr


def test_check_class_runs_the_contract_on_an_unregistered_class():
    from latbot_example_plugin.dot import DotEmbodiment

    assert check_class("embodiments", DotEmbodiment).ok
    report = check_class("students", broken_plugins()[("students", "wrong_shape")])
    assert [f.rule for f in report.failures] == ["forward"] and "wrong_shape" not in registry.names("students")


# -- a plugin's own exception names the plugin -----------------------------------------------------------------
def test_a_plugin_bug_during_train_names_the_plugin_and_keeps_the_traceback(tmp_path):
    from latbot_example_plugin.tiny_mlp import TinyMlpDecoder

    from latbot.data.convert import convert

    class BuggyDecoder(TinyMlpDecoder):
        class Config(TinyMlpDecoder.Config):
            type: Literal["buggy"] = "buggy"

        def forward(self, *args, **kwargs):
            return {"image": 1 / 0}

    class FailsToBuild(TinyMlpDecoder):
        class Config(TinyMlpDecoder.Config):
            type: Literal["fails_to_build"] = "fails_to_build"

        def __init__(self, config, latent_width):
            raise KeyError("no such weight")

    npz = registry.get("datasets", "npz_episodes")
    convert(npz.Config(), npz.sample_source(tmp_path / "src"), tmp_path / "store", image_size=64, progress=False)
    sets = ["--set", f"data.sources=[{{store: {tmp_path / 'store'}}}]", "--set", f"log.out_dir={tmp_path}"]
    for name, cls in (("buggy", BuggyDecoder), ("fails_to_build", FailsToBuild)):
        registry.register("decoders", name, cls)
        try:
            result = runner.invoke(
                app, ["train", str(REPO / "recipes/examples/lam_example_plugin.yaml"), "--set",
                      f"model.decoder={{type: {name}, horizon: 3}}", *sets, "--set", "log.progress=false"],
            )  # fmt: skip
        finally:
            registry.unregister("decoders", name)
        assert result.exit_code == 1, result.output
        assert f"decoders plugin '{name}' from distribution '<registered at runtime>'" in result.stderr
        assert ("ZeroDivisionError" if name == "buggy" else "KeyError") in result.stderr
        assert "Traceback (most recent call last)" in result.stderr  # the author sees where


# -- the scaffold ------------------------------------------------------------------------------------------------
KINDS = ("encoders", "decoders", "students", "action_experts", "datasets", "simulators", "embodiments", "stages")


def _run(cmd: list[str], cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([str(c) for c in cmd], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)
    assert proc.returncode == 0, (cmd, proc.stdout[-3000:], proc.stderr[-3000:])
    return proc


@pytest.fixture(scope="module")
def scaffolded(tmp_path_factory):
    """One package per kind from `latbot plugins new`, installed editable into a throwaway virtual environment
    that sees this one's packages (so the project's environment is never changed)."""
    out = tmp_path_factory.mktemp("scaffold")
    for kind in KINDS:
        result = runner.invoke(app, ["plugins", "new", kind, f"my_{kind}", "--out", str(out)])
        assert result.exit_code == 0, result.output
    roots = {kind: out / f"latbot-my-{kind.replace('_', '-')}" for kind in KINDS}
    venv = out / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", venv], out)
    python = venv / "bin" / "python"
    site = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                          capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    ours = [p for p in sys.path if p.endswith("site-packages")]
    (Path(site) / "_project.pth").write_text("".join(f"import site; site.addsitedir({p!r})\n" for p in ours))
    pip = [python, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation"]
    _run([*pip, *[x for r in roots.values() for x in ("-e", r)]], out)
    return roots, [python, "-m", "latbot"]


def _demo_store(root: Path, latbot: list, name: str = "demo", embodiment: str = "franka_panda") -> None:
    """A store converted from LIBERO-layout files (latbot.testing.samples) into the package's stores/."""
    from latbot.testing.samples import make_libero_hdf5

    make_libero_hdf5(root / "src" / "pick_demo.hdf5", demos=2, steps=10, size=32)
    _run([*latbot, "data", "convert", "src", "--format", "libero_hdf5", "--set", f"embodiment={embodiment}",
          "--camera", "agentview", "-o", f"stores/{name}", "--image-size", "32"], root)  # fmt: skip


TRAIN = ["--set", "train.steps=2", "--set", "train.checkpoint_every=2", "--set", "log.progress=false",
         "--set", "log.tensorboard=false"]  # fmt: skip


@pytest.mark.parametrize("kind", KINDS)
def test_plugins_new_installs_passes_the_check_and_trains(scaffolded, kind):
    roots, latbot = scaffolded
    root, name = roots[kind], f"my_{kind}"
    assert (root / "pyproject.toml").read_text().count(f'[project.entry-points."latbot.{kind}"]') == 1
    check = _run([*latbot, "plugins", "check", name], root)
    assert check.stdout.startswith(f"ok    {kind}/{name} (latbot-my-{kind.replace('_', '-')}): "), check.stdout
    assert "not run" not in check.stdout  # every rule of the kind ran
    if kind in ("encoders", "decoders", "students", "action_experts"):
        _demo_store(root, latbot)
    elif kind == "datasets":  # its own sample source → `latbot data convert`
        cls = f"My{kind.title()}Dataset"
        _run([latbot[0], "-c", f"from latbot_{name}.{name} import {cls}; {cls}.sample_source('src')"], root)
        _run([*latbot, "data", "convert", "src", "--format", name, "-o", f"stores/{name}", "--image-size", "32"], root)
    elif kind == "simulators":
        _run([*latbot, "data", "gen-sim", "--sim", name, "--tasks", "reach", "--episodes", "3", "-o", f"stores/{name}",
              "--image-size", "32"], root)  # fmt: skip
    elif kind == "embodiments":  # LIBERO-layout files written with the new robot
        _demo_store(root, latbot, name, embodiment=name)
    # the generated recipe, run from another directory: its store path is relative to the recipe file
    runs = root / "runs"
    start = time.perf_counter()
    _run([*latbot, "train", root / "recipes" / f"{name}.yaml", *TRAIN, "--set", f"log.out_dir={runs}",
          "--set", "log.run_name=first"], REPO)  # fmt: skip
    print(f"{kind}: latbot train (2 steps) {time.perf_counter() - start:.1f} s")
    assert (runs / "first" / "weights" / "model.safetensors").is_file()


def test_the_scaffolded_encoder_and_decoder_train_a_lam_that_viz_episode_records(scaffolded, tmp_path):
    """The `encoders` and `decoders` skeletons together in one LAM (the encoder's generated recipe, its decoder
    slot set to the scaffolded decoder), trained on a tiny store; then `latbot viz episode` on that run and
    store, which calls the skeleton decoder's `sample`. Both commands run in the throwaway environment."""
    from latbot.data.convert import finalize
    from latbot.data.store import EpisodeStore
    from tests.test_store import episode

    roots, latbot = scaffolded
    store = tmp_path / "store"
    with EpisodeStore.create(store, cameras=["cam"], image_size=(32, 32)) as s:
        for i in range(2):
            s.append(episode(f"e{i}", steps=8, size=32, seed=i))
        finalize(s)
    start = time.perf_counter()
    _run([*latbot, "train", roots["encoders"] / "recipes" / "my_encoders.yaml", *TRAIN,
          "--set", "model.decoder={type: my_decoders, horizon: 3}", "--set", f"data.sources=[{{store: {store}}}]",
          "--set", f"log.out_dir={tmp_path}", "--set", "log.run_name=lam"], tmp_path)  # fmt: skip
    run, rrd = tmp_path / "lam", tmp_path / "episode.rrd"
    assert (run / "weights" / "model.safetensors").is_file()
    viz = _run([*latbot, "viz", "episode", store, "--episode", "0", "--checkpoint", run, "--out", rrd], tmp_path)
    print(f"scaffolded LAM: train (2 steps) + viz episode {time.perf_counter() - start:.1f} s")
    assert rrd.is_file() and rrd.stat().st_size > 0, viz.stdout
    assert f"wrote {rrd}" in viz.stdout, viz.stdout


# -- the contracts over every registered plugin of the non-model kinds (models: tests/test_models_contract.py) --
OTHER = [(k, n) for k in ("datasets", "simulators", "embodiments", "stages") for n in registry.names(k)]


@pytest.mark.parametrize(("kind", "name"), OTHER)
def test_every_registered_plugin_passes_its_contract(kind, name):
    from latbot.testing.contracts import check

    report = check(kind, name)
    assert report.ok, "\n".join(map(str, report.failures))


def test_a_crash_during_eval_names_the_plugin(monkeypatch):
    import latbot_example_plugin.dot_reach as dot_reach

    monkeypatch.setattr(dot_reach, "STEP", None)  # the plugin's own step() now raises a TypeError
    result = runner.invoke(app, ["eval", "sim", "--sim", "dot_reach", "--policy", "random", "--tasks", "reach-red",
                                 "--episodes", "1", "--image-size", "32"])  # fmt: skip
    assert result.exit_code == 1, result.output  # every episode crashed: the evaluation fails
    assert "TypeError: unsupported operand type(s) for *: 'NoneType' and 'float'" in result.stderr
    assert "(in simulators plugin 'dot_reach' from 'latbot-example-plugin')" in result.stderr
