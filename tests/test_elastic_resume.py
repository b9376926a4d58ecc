"""Elastic resume: a run checkpointed on N processes continues on M. The sampler is indexed by the global
sample (each optimizer step takes the same examples at any world size), DCP reshards model and optimizer,
and the RNG of a rank that has no saved state of its own is re-derived from (seed, step, rank)."""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from latbot.data.clips import MixtureSampler
from latbot.train import checkpoint
from latbot.train.distributed import World
from tests.conftest import REPO

STEPS, CUT = 12, 6  # the runs train 12 steps; the resumed copies stop after the step-6 checkpoint


# -- the sampler: a step's samples do not depend on the world size ------------------------------------------
def step_batches(world_size: int, steps: int, global_batch: int = 8, micro: int = 2, start_step: int = 0):
    """Per optimizer step, the sorted dataset indices all ranks take, consumed as the loop does: each rank
    draws global_batch / (micro × world_size) micro-batches of `micro` per step."""
    accum = global_batch // (micro * world_size)
    ranks = [
        MixtureSampler([100, 37, 5], [3.0, 1.0, 0.5], seed=11, rank=r, world_size=world_size) for r in range(world_size)
    ]
    for s in ranks:
        s.global_position = start_step * global_batch  # what the loop sets on resume, from the global count
    streams = [iter(s) for s in ranks]
    out = []
    for _ in range(steps):
        taken = [next(it) for it in streams for _ in range(accum * micro)]
        out.append(sorted(taken))
    return out


def test_each_global_batch_is_the_same_samples_for_any_world_size():
    batches = {w: step_batches(w, steps=40) for w in (1, 2, 4)}
    assert batches[1] == batches[2] == batches[4]
    # single process: the global stream in order (the order recorded runs were trained with)
    one = MixtureSampler([100, 37, 5], [3.0, 1.0, 0.5], seed=11, num_samples=320)
    assert list(one) == [one.global_index(k) for k in range(320)]
    # a resume at step 17 on any world size continues with the same batches
    for w in (1, 2, 4):
        assert step_batches(w, steps=10, start_step=17) == batches[1][17:27]


def test_sampler_state_moves_between_world_sizes():
    two = [MixtureSampler([50], [1.0], seed=3, rank=r, world_size=2) for r in range(2)]
    for s in two:
        it = iter(s)
        for _ in range(12):
            next(it)
    state = two[0].state_dict()
    assert state == {"position": 12, "seed": 3, "world_size": 2}
    four = [MixtureSampler([50], [1.0], seed=3, rank=r, world_size=4) for r in range(4)]
    for s in four:
        s.load_state_dict(state)
    assert [s.position for s in four] == [6] * 4 and four[0].global_position == 24
    nxt = sorted(next(iter(s)) for s in four)
    assert nxt == sorted(four[0].global_index(k) for k in range(24, 28))
    legacy = MixtureSampler([50], [1.0], seed=3)
    legacy.load_state_dict({"position": 5, "seed": 3})  # a state without world_size: this sampler's
    assert legacy.position == 5
    with pytest.raises(ValueError, match="multiple of the world size"):
        four[0].global_position = 6
    with pytest.raises(ValueError, match="rank"):
        MixtureSampler([50], [1.0], rank=2, world_size=2)


# -- the checkpoint: another world size re-derives the RNG, reads the global sample count ---------------------
class _Linear(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.w = torch.nn.Linear(3, 1)

    def forward(self, x):
        return self.w(x).pow(2).mean()


def _saved(tmp_path: Path, extra: dict, world_size: int):
    """A one-process checkpoint at step 2 whose meta.json says it was written by `world_size` processes
    (meta.json is not among the hashed files, so the checkpoint still verifies)."""
    model = _Linear()
    opt = torch.optim.AdamW(model.parameters(), lr=0.1)
    model(torch.ones(2, 3)).backward()
    opt.step()
    path = checkpoint.save(tmp_path, 2, model, opt, World(), extra, keep_last=2)
    meta = json.loads((path / "meta.json").read_text())
    (path / "meta.json").write_text(json.dumps(meta | {"world_size": world_size}))
    return model


def test_another_world_size_rederives_the_rng_and_reads_the_global_count(tmp_path):
    saved = _saved(tmp_path, {"global_samples": 16}, world_size=2)
    fresh = _Linear()
    opt = torch.optim.AdamW(fresh.parameters(), lr=0.1)
    torch.manual_seed(123)
    state = checkpoint.load(tmp_path, fresh, opt, World(), seed=7)
    assert state["step"] == 2 and state["global_samples"] == 16
    torch.testing.assert_close(fresh.w.weight, saved.w.weight, rtol=0, atol=0)
    drawn = (torch.rand(4), np.random.random(3), random.random())
    checkpoint.derive_rng(7, 2, 0)
    assert torch.equal(drawn[0], torch.rand(4))
    assert np.array_equal(drawn[1], np.random.random(3)) and drawn[2] == random.random()
    checkpoint.derive_rng(7, 2, 1)
    other_rank = torch.rand(4)
    checkpoint.derive_rng(7, 3, 0)
    assert not torch.equal(drawn[0], other_rank) and not torch.equal(drawn[0], torch.rand(4))


def test_an_older_checkpoint_counts_samples_per_rank(tmp_path):
    _saved(tmp_path, {"samples": 12}, world_size=2)  # an older LatBot: each rank's count
    fresh = _Linear()
    state = checkpoint.load(tmp_path, fresh, torch.optim.AdamW(fresh.parameters(), lr=0.1), World())
    assert state["global_samples"] == 24


# -- end to end: 2 → 1 and 1 → 2 processes, against the same run continued on its own world size ------------
def launcher(processes: int) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(processes)]


def latbot(processes: int, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [*launcher(processes), "-m", "latbot", "train", *args]
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    return done


def losses(run: Path) -> dict[int, float]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in rows}


def stopped_copy(run: Path, to: Path, step: int) -> Path:
    """The run as a kill right after its step-`step` checkpoint leaves it: later checkpoints gone, `latest`
    naming step `step`, the manifest "running"."""
    shutil.copytree(run, to)
    for ckpt in (to / "checkpoints").glob("step_*"):
        if int(ckpt.name.removeprefix("step_")) > step:
            shutil.rmtree(ckpt)
    (to / "checkpoints" / "latest").write_text(f"step_{step:08d}")
    manifest = json.loads((to / "latbot.json").read_text())
    (to / "latbot.json").write_text(json.dumps(manifest | {"status": "running"}))
    return to


@pytest.fixture(scope="module")
def references(tmp_path_factory):
    """Uninterrupted 12-step runs of the example plugin's curve_fit stage (FSDP2 over gloo, global batch 8
    in micro-batches of 2) on 1 and on 2 processes, checkpointed every 3 steps."""
    root = tmp_path_factory.mktemp("elastic")
    recipe = root / "curve.yaml"
    recipe.write_text(
        "stage: curve_fit\nmodel: {width: 3, samples: 64}\n"
        f"train: {{steps: {STEPS}, global_batch_size: 8, micro_batch_size: 2, lr: 0.05, warmup_steps: 2, "
        "min_lr: 0.005, precision: fp32, checkpoint_every: 3, keep_last: 10}\n"
        "dist: {strategy: fsdp, backend: gloo}\n"
        f"data: {{num_workers: 0}}\nlog: {{out_dir: {root / 'runs'}, progress: false, tensorboard: false, "
        "every_steps: 1}\n"
    )
    runs = {}
    for processes in (1, 2):
        latbot(processes, str(recipe), "--set", f"log.run_name=ref{processes}")
        runs[processes] = root / "runs" / f"ref{processes}"
    return root, runs


@pytest.mark.parametrize(("before", "after"), [(2, 1), (1, 2)], ids=["2to1", "1to2"])
def test_a_run_continues_on_another_number_of_processes(references, before, after):
    root, runs = references
    ref = runs[before]
    run = stopped_copy(ref, root / f"resumed_{before}to{after}", CUT)
    done = latbot(after, "--resume", str(run))
    assert f"written by {before} process(es), on {after}" in done.stdout
    assert f"steps {CUT}→{STEPS}" in done.stdout
    expected, got = losses(ref), losses(run)
    assert sorted(got) == list(range(1, STEPS + 1))
    assert [got[s] for s in range(1, CUT + 1)] == [expected[s] for s in range(1, CUT + 1)]
    after_cut = list(range(CUT + 1, STEPS + 1))
    torch.testing.assert_close(
        torch.tensor([got[s] for s in after_cut], dtype=torch.float64),
        torch.tensor([expected[s] for s in after_cut], dtype=torch.float64),
        rtol=1e-5,  # measured: 1.5e-7 (fp32 rounding of the gradient reduction order)
        atol=0,
    )
    weights, ref_weights = (load_file(r / "weights/model.safetensors") for r in (run, ref))
    assert weights.keys() == ref_weights.keys()
    for k in weights:
        torch.testing.assert_close(weights[k], ref_weights[k], rtol=1e-4, atol=1e-6)
    last = json.loads((checkpoint.latest(run) / "meta.json").read_text())
    assert last["world_size"] == after and last["global_samples"] == STEPS * 8
    assert json.loads((run / "latbot.json").read_text())["status"] == "complete"
