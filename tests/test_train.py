"""The training engine: the paper's schedule, exact resume after SIGKILL (one process, and two FSDP2
processes over gloo), checkpoints that survive an interrupted save, NaN detection, exported weights."""

from __future__ import annotations

import itertools
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from latbot.data.convert import finalize
from latbot.data.store import EpisodeStore
from latbot.ownership import held_by_other
from latbot.train import checkpoint
from latbot.train.distributed import World
from latbot.train.schedule import lr_at
from tests.conftest import REPO
from tests.test_store import episode


def test_schedule_has_the_papers_shape():
    peak, floor, warmup, total = 1e-4, 2.5e-6, 2000, 100_000
    assert lr_at(0, peak, floor, warmup, total) == pytest.approx(peak / warmup)
    assert lr_at(warmup - 1, peak, floor, warmup, total) == pytest.approx(peak)  # warmup ends at the peak
    assert lr_at(warmup, peak, floor, warmup, total) == pytest.approx(peak)
    mid = warmup + (total - warmup - 1) // 2
    assert lr_at(mid, peak, floor, warmup, total) == pytest.approx((peak + floor) / 2, rel=1e-3)  # cosine midpoint
    assert lr_at(total - 1, peak, floor, warmup, total) == pytest.approx(floor)  # the floor at the last step
    lrs = [lr_at(s, peak, floor, warmup, total) for s in range(warmup, total, 997)]
    assert all(a >= b for a, b in itertools.pairwise(lrs))  # monotone decay


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    path = tmp_path_factory.mktemp("train") / "store"
    with EpisodeStore.create(path, cameras=["cam"], image_size=(32, 32)) as s:
        for i in range(6):
            s.append(episode(f"e{i}", steps=14, size=32, seed=i))
        finalize(s)
    return path


def command(store, out, name, steps, every, extra=(), launcher=None):
    args = [
        "train",
        str(REPO / "recipes/tiny/lam.yaml"),
        "--set",
        f"data.sources=[{{store: {store}}}]",
        "--set",
        f"train.steps={steps}",
        "--set",
        f"train.checkpoint_every={every}",
        "--set",
        f"log.out_dir={out}",
        "--set",
        f"log.run_name={name}",
        "--set",
        "data.num_workers=0",
        "--set",
        "log.every_steps=1",
        "--set",
        "log.progress=false",
        "--set",
        "log.tensorboard=false",
        *extra,
    ]
    return [*(launcher or [sys.executable, "-m", "latbot"]), *args]


def losses(run: Path) -> dict[int, float]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in rows}


def run_killed_then_resumed(cmd, resume_cmd, run: Path, kill_after: int):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    deadline = time.monotonic() + 300
    metrics = run / "metrics.jsonl"
    while time.monotonic() < deadline and proc.poll() is None:
        if metrics.is_file() and max(losses(run), default=0) >= kill_after:
            break
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)  # the launcher and every rank, mid-run
    proc.wait()
    # proc.wait() reaps only the launcher: the killed ranks exit (and drop the run's writer lock) a moment
    # later, and a resume that starts before then is refused, rightly, as a second writer
    deadline = time.monotonic() + 60
    while held_by_other(run) is not None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert checkpoint.latest(run) is not None, "the kill must come after a checkpoint"
    done = subprocess.run(resume_cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[:1500] + "\n...\n" + done.stderr[-1500:]


@pytest.mark.parametrize("processes", [1, 2], ids=["single", "fsdp2x2"])
def test_sigkill_then_resume_gives_exactly_the_uninterrupted_losses(store, tmp_path, processes):
    steps, every = 10, 3
    launcher = None
    extra: list[str] = []
    if processes == 2:
        launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "-m", "latbot"]
        extra = ["--set", "dist.strategy=fsdp", "--set", "train.micro_batch_size=4"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    ref = subprocess.run(
        command(store, tmp_path, "ref", steps, every, extra, launcher),
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert ref.returncode == 0, ref.stderr[-3000:]
    kill_after = random.Random(processes).randint(every + 1, steps - 2)
    run = tmp_path / "killed"
    resume = [
        *(launcher or [sys.executable, "-m", "latbot"]),
        "train",
        str(REPO / "recipes/tiny/lam.yaml"),
        "--resume",
        str(run),
    ]
    run_killed_then_resumed(command(store, tmp_path, "killed", steps, every, extra, launcher), resume, run, kill_after)
    expected, got = losses(tmp_path / "ref"), losses(run)
    assert sorted(got) == list(range(1, steps + 1))
    assert got == expected  # bit-exact: same floats at every step, before and after the kill
    assert (run / "latbot.json").is_file() and (run / "weights/model.safetensors").is_file()


class _Linear(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.w = torch.nn.Linear(3, 1)

    def forward(self, batch):
        return {"loss": self.w(batch).pow(2).mean()}


def test_an_interrupted_save_leaves_the_previous_checkpoint_loadable(tmp_path, monkeypatch):
    world = World()
    model = _Linear()
    opt = torch.optim.AdamW(model.parameters(), lr=0.1)
    model(torch.ones(2, 3))["loss"].backward()
    opt.step()
    checkpoint.save(tmp_path, 1, model, opt, world, {"samples": 8}, keep_last=3)
    saved = {k: v.clone() for k, v in model.state_dict().items()}

    import torch.distributed.checkpoint as dcp

    def dies_midway(state, checkpoint_id):
        (Path(checkpoint_id) / "__0_0.distcp").write_bytes(b"half a file")
        raise KeyboardInterrupt("killed during the save")

    monkeypatch.setattr(dcp, "save", dies_midway)
    with torch.no_grad():
        model.w.weight.add_(1.0)
    with pytest.raises(KeyboardInterrupt):
        checkpoint.save(tmp_path, 2, model, opt, world, {"samples": 16}, keep_last=3)
    monkeypatch.undo()
    assert checkpoint.latest(tmp_path).name == "step_00000001"
    fresh, fresh_opt = _Linear(), torch.optim.AdamW(_Linear().parameters(), lr=0.1)
    fresh_opt = torch.optim.AdamW(fresh.parameters(), lr=0.1)
    state = checkpoint.load(tmp_path, fresh, fresh_opt, world)
    assert state["step"] == 1 and state["samples"] == 8
    for k, v in fresh.state_dict().items():
        torch.testing.assert_close(v, saved[k])
    assert fresh_opt.state_dict()["state"], "optimizer moments restored too"
    checkpoint.save(tmp_path, 3, fresh, fresh_opt, world, {"samples": 24}, keep_last=1)  # cleans the stale temp dir
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == ["latest", "step_00000003"]


def test_a_non_finite_loss_stops_training_and_names_the_last_good_checkpoint(tmp_path):
    from latbot.data.clips import MixtureSampler
    from latbot.recipes import load_recipe
    from latbot.train.loop import TrainingError, train

    class Exploding(_Linear):
        calls = 0

        def forward(self, batch):
            Exploding.calls += 1
            out = super().forward(batch["x"])
            return {"loss": out["loss"] * (float("nan") if Exploding.calls > 4 else 1.0)}

    recipe = load_recipe(
        REPO / "recipes/tiny/lam.yaml",
        [
            "train.steps=10",
            "train.checkpoint_every=2",
            "data.num_workers=0",
            "log.tensorboard=false",
            "log.progress=false",
            "train.micro_batch_size=2",
            "train.global_batch_size=2",
        ],
    )
    data = [{"x": torch.ones(3)} for _ in range(4)]
    with pytest.raises(TrainingError, match=r"loss became nan at step 5.*step_00000004"):
        step = lambda model, batch: model(batch)  # noqa: E731
        train(recipe, tmp_path, Exploding, lambda w: (data, MixtureSampler([4], [1.0])), step, World(), resume=False)
    assert checkpoint.latest(tmp_path).name == "step_00000004"


def test_exported_lam_loads_back_for_encoding(store, tmp_path):
    from latbot import runs

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        command(store, tmp_path, "export", 2, 2), cwd=REPO, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    run = tmp_path / "export"
    manifest = json.loads((run / "latbot.json").read_text())
    assert manifest["kind"] == "lam" and manifest["parents"][0]["kind"] == "episode_store"
    assert {"versions", "git_commit", "world_size"} <= set(json.loads((run / "env.json").read_text()))
    model = runs.load_lam(run)
    z_sce, z_mot = model.encode(torch.zeros(1, 4, 3, 32, 32, dtype=torch.uint8), ["reach"])
    assert z_sce.shape == (1, 8, model.encoder.width) and np.isfinite(z_mot.detach().numpy()).all()
    from latbot.analysis.diagnostics import diagnose_checkpoint

    report = diagnose_checkpoint(run, store, samples=24)
    assert report["samples"] == 24 and report["effective_rank"]["z_mot"] >= 1
    assert set(report["action_mse"]) == {"right_pos", "right_gripper"}  # the store's embodiment fills these
    assert np.isfinite([report["psnr_db"], *report["probe_r2"].values()]).all()
    stream = report["action_stream_r2"]  # the action stream against the constant and persistence references
    assert (
        stream["draws"] == 8 and np.isfinite([stream[k] for k in ("one_sample", "mean_of_samples", "copy_first")]).all()
    )
    assert stream["constant"] <= 0.0 + 1e-9  # zeros: at best the mean
    shutil.rmtree(run / "checkpoints")
    again = subprocess.run(
        [sys.executable, "-m", "latbot", "train", str(REPO / "recipes/tiny/lam.yaml"), "--resume", str(run)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert again.returncode == 2 and "no checkpoint here" in again.stderr


def test_activation_checkpointing_and_trainable_globs():
    from latbot.models.lam import LatentActionModel
    from latbot.recipes import load_recipe
    from latbot.train.distributed import checkpoint_activations
    from latbot.train.loop import TrainingError, select_trainable

    recipe = load_recipe(REPO / "recipes/tiny/lam.yaml")
    batch = {
        "frames": torch.randint(0, 255, (2, 4, 3, 32, 32), dtype=torch.uint8),
        "instruction": ["a", "b"],
        "actions": torch.randn(2, 3, 44),
        "action_mask": torch.ones(2, 44, dtype=torch.bool),
    }
    grads = []
    for with_ac in (False, True):
        torch.manual_seed(0)
        model = LatentActionModel(recipe.model, 4)
        if with_ac:
            assert checkpoint_activations(model) > 0
        torch.manual_seed(1)
        model(batch)["loss"].backward()
        grads.append(model.encoder.scene_queries.grad.clone())
    torch.testing.assert_close(grads[0], grads[1])  # recomputation changes memory, not results

    torch.manual_seed(0)
    model = LatentActionModel(recipe.model, 4)
    frozen_vision = sum(p.numel() for p in model.encoder.vlm.vision_tower.parameters())
    n = select_trainable(model, ["*"], ["decoder.*"])
    assert all(not p.requires_grad for p in model.decoder.parameters())
    assert not any(p.requires_grad for p in model.encoder.vlm.vision_tower.parameters())  # never unfrozen
    assert n == sum(p.numel() for p in model.encoder.parameters()) - frozen_vision
    with pytest.raises(TrainingError, match="no parameter to train"):
        select_trainable(model, ["nothing.*"], [])


def test_a_parameter_without_gradients_yet_does_not_break_resume(tmp_path):
    """A trainable parameter no batch has reached (a head used only by some samples, a layer a model skips)
    has no AdamW state when a checkpoint is written; loading into a fresh optimizer must still work, and the
    resumed run must step exactly as the uninterrupted one, including once that parameter gets gradients."""

    class TwoHeads(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = torch.nn.Linear(3, 1), torch.nn.Linear(3, 1)

        def forward(self, x, use_b):
            return (self.a(x) + (self.b(x) if use_b else 0)).pow(2).mean()

    def steps(model, opt, schedule):
        for use_b in schedule:
            model(torch.ones(2, 3), use_b).backward()
            opt.step()
            opt.zero_grad(set_to_none=True)

    torch.manual_seed(0)
    reference = TwoHeads()
    ref_opt = torch.optim.AdamW(reference.parameters(), lr=0.1)
    steps(reference, ref_opt, [False, False, True, True])

    torch.manual_seed(0)
    model = TwoHeads()
    opt = torch.optim.AdamW(model.parameters(), lr=0.1)
    steps(model, opt, [False, False])
    checkpoint.save(tmp_path, 2, model, opt, World(), {"samples": 4}, keep_last=2)
    resumed = TwoHeads()
    resumed_opt = torch.optim.AdamW(resumed.parameters(), lr=0.1)
    checkpoint.load(tmp_path, resumed, resumed_opt, World())
    steps(resumed, resumed_opt, [True, True])
    for (name, p), q in zip(reference.named_parameters(), resumed.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=0, atol=0, msg=name)
