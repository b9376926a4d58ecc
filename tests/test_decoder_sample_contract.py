"""The decoder `sample` contract (`latbot.models.decoders.base.Decoder.sample`) is the one its callers use:
`latbot viz episode --checkpoint` runs on a LAM whose decoder is the example plugin's `tiny_mlp`, the
`plugins new decoders` skeleton meets it, and the contract check rejects a decoder whose `sample` breaks
it, in one line that names the plugin and the expected signature."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import types
from pathlib import Path
from typing import Literal

import pytest
import torch
from latbot_example_plugin.tiny_mlp import TinyMlpDecoder
from typer.testing import CliRunner

from latbot import registry
from latbot.cli import app
from latbot.models.decoders.base import SAMPLE_SIGNATURE
from latbot.testing.contracts import check_class
from tests.conftest import REPO

runner = CliRunner()


def cli(*args) -> str:
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, (args, result.output, result.exception)
    return result.stdout


# -- viz on a LAM with a plugin decoder ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def plugin_lam(tmp_path_factory):
    """A store of 3 episodes and a LAM trained on it for 2 steps: tiny_conv encoder + tiny_mlp decoder."""
    from latbot.data.convert import finalize
    from latbot.data.store import EpisodeStore
    from tests.test_store import episode

    root = tmp_path_factory.mktemp("plugin_lam")
    store = root / "store"
    with EpisodeStore.create(store, cameras=["cam"], image_size=(32, 32)) as s:
        for i in range(3):
            s.append(episode(f"e{i}", steps=10, size=32, seed=i))
        finalize(s)
    sets = [f"data.sources=[{{store: {store}}}]", "train.steps=2", "train.checkpoint_every=2", f"log.out_dir={root}",
            "log.run_name=lam", "log.progress=false", "log.tensorboard=false", "data.num_workers=0"]  # fmt: skip
    cli("train", REPO / "recipes/examples/lam_example_plugin.yaml", *[x for s in sets for x in ("--set", s)])
    return store, root / "lam"


def entities(rrd: Path) -> set[str]:
    rerun = str(Path(sys.executable).with_name("rerun"))
    env = {**os.environ, "RERUN_ANALYTICS": "false"}
    out = subprocess.run([rerun, "rrd", "print", str(rrd)], capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode == 0, out.stderr
    return set(re.findall(r"episode_\d+/[A-Za-z_/]+", out.stdout))


def test_viz_episode_runs_on_a_lam_with_the_example_plugins_decoder(plugin_lam, tmp_path):
    store, run = plugin_lam
    from latbot import runs

    assert runs.open_run(run).manifest.recipe["model"]["decoder"]["type"] == "tiny_mlp"
    rrd = tmp_path / "ep.rrd"
    cli("viz", "episode", store, "--episode", "0", "--checkpoint", run, "--out", rrd)
    found = entities(rrd)
    # the generated frame and the generated actions of the right arm (the one the episodes fill)
    assert {"episode_0/lam/future_predicted", "episode_0/lam/actions_predicted/right_pos"} <= found, sorted(found)


# -- the contract check ----------------------------------------------------------------------------------------
class OldSignatureDecoder(TinyMlpDecoder):  # the signature docs/plugins.md used to show: no keywords
    class Config(TinyMlpDecoder.Config):
        type: Literal["old_signature"] = "old_signature"

    def sample(self, z_sce, z_mot, frame_t):
        return self.predict(z_sce, z_mot, frame_t)


class NoSampleDecoder(TinyMlpDecoder):
    class Config(TinyMlpDecoder.Config):
        type: Literal["no_sample"] = "no_sample"

    sample = None


class AlwaysActionsDecoder(TinyMlpDecoder):  # ignores with_actions=False
    class Config(TinyMlpDecoder.Config):
        type: Literal["always_actions"] = "always_actions"

    def sample(self, z_sce, z_mot, frame_t, with_actions=True, generator=None):
        return super().sample(z_sce, z_mot, frame_t)


class UnseededDecoder(TinyMlpDecoder):  # draws noise from the global RNG, not from `generator`
    class Config(TinyMlpDecoder.Config):
        type: Literal["unseeded"] = "unseeded"

    def sample(self, z_sce, z_mot, frame_t, with_actions=True, generator=None):
        frame, actions = super().sample(z_sce, z_mot, frame_t, with_actions, generator)
        return (frame + 0.01 * torch.rand_like(frame)).clamp(0, 1), actions


BROKEN = {
    OldSignatureDecoder: "has sample(z_sce, z_mot, frame_t), which cannot take the arguments `latbot viz` and the "
    "diagnostics pass (got an unexpected keyword argument 'with_actions'); expected " + SAMPLE_SIGNATURE,
    NoSampleDecoder: f"needs a method {SAMPLE_SIGNATURE}",
    AlwaysActionsDecoder: "sample(z_sce, z_mot, frame_t, with_actions=False, generator=...) must return None for "
    "the actions",
    UnseededDecoder: "sample(z_sce, z_mot, frame_t, with_actions=True, generator=...) twice with one generator "
    "seed gave different results",
}


@pytest.mark.parametrize("cls", BROKEN, ids=lambda c: c.__name__)
def test_the_contract_check_rejects_a_broken_sample_in_one_rule(cls):
    report = check_class("decoders", cls)
    assert [f.rule for f in report.failures] == ["sample"], report.failures
    assert report.failures[0].message.startswith(BROKEN[cls]), report.failures[0].message


def test_plugins_check_names_the_plugin_and_the_expected_signature():
    registry.register("decoders", "old_signature", OldSignatureDecoder)
    try:
        result = runner.invoke(app, ["plugins", "check", "old_signature"])
    finally:
        registry.unregister("decoders", "old_signature")
    assert result.exit_code == 1, result.output
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1, result.stdout
    assert lines[0] == f"FAIL  decoders/old_signature (<registered at runtime>) [sample]: {BROKEN[OldSignatureDecoder]}"


def test_the_scaffold_decoder_meets_the_sample_contract(monkeypatch):
    """The `latbot plugins new decoders` skeleton, as the file it writes (installing it: tests/test_plugins.py)."""
    from latbot.cli.plugins import scaffold

    module = types.ModuleType("latbot_my_decoder_skeleton")
    monkeypatch.setitem(sys.modules, module.__name__, module)  # pydantic resolves the Config's names there
    source = scaffold("decoders", "my_decoder")["src/latbot_my_decoder/my_decoder.py"]
    exec(compile(source, "my_decoder.py", "exec"), module.__dict__)
    report = check_class("decoders", module.MyDecoderDecoder)
    assert "sample" in report.passed and report.ok, report.failures
