"""`dist.meta_init: true`: every rank builds the model on the meta device, shards it, materialises only its
own shards and receives them from process 0's one ordinary CPU build (random initialisation + any pretrained
checkpoint, read by process 0 only; docs/real-size.md).

- One process: the same losses, bit for bit, as the ordinary fsdp path (same seed, same build).
- Two processes over gloo: the initial weights are exactly process 0's ordinary build — the weights of an
  ordinary single-process run with the same seed — with and without a pretrained InternVL checkpoint saved
  in bf16 (as tests/test_fsdp_bf16_checkpoints.py), and under hsdp (two replicas). The initial weights are
  read off the exported weights of a one-step run at lr 1e-30, below the float32 spacing of every nonzero
  weight (a zero-initialised weight moves by at most 1e-30). The ordinary 2-process fsdp path is not the
  reference here: there each rank's shard keeps that rank's own initialisation (seeded by rank), which no
  single build reproduces.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.conftest import REPO
from tests.test_train import command, losses

TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}


@pytest.fixture(scope="module")
def store(tmp_path_factory):  # as tests/test_train.py's
    from latbot.data.convert import finalize
    from latbot.data.store import EpisodeStore
    from tests.test_store import episode

    path = tmp_path_factory.mktemp("meta") / "store"
    with EpisodeStore.create(path, cameras=["cam"], image_size=(32, 32)) as s:
        for i in range(6):
            s.append(episode(f"e{i}", steps=14, size=32, seed=i))
        finalize(s)
    return path


def run(store, out, name, steps, extra, processes=None):
    launcher = [*TORCHRUN, str(processes), "-m", "latbot"] if processes else None
    cmd = command(store, out, name, steps, steps, extra, launcher)
    done = subprocess.run(cmd, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    (out / f"{name}.stdout").write_text(done.stdout)
    return out / name


READ = re.compile(r"dist\.meta_init: rank (\d+) read (\d+) bytes of (\d+) pretrained tensors \((\d+) bytes in their")


def reads(out: Path, name: str) -> dict[int, tuple[int, int, int]]:
    """{rank: (bytes it read, tensors, bytes of those tensors in the files)} from a run's printed lines."""
    text = (out / f"{name}.stdout").read_text()
    return {int(r): (int(b), int(n), int(t)) for r, b, n, t in READ.findall(text)}


FSDP = ["--set", "dist.strategy=fsdp"]


def test_one_process_gives_the_ordinary_fsdp_losses(store, tmp_path):
    ref = run(store, tmp_path, "ref", 3, [*FSDP, "--set", "dist.meta_init=false"], processes=1)
    meta = run(store, tmp_path, "meta", 3, [*FSDP, "--set", "dist.meta_init=true"], processes=1)
    assert losses(meta) == losses(ref)
    assert len(losses(ref)) == 3


@pytest.fixture(scope="module")
def internvl(tmp_path_factory) -> Path:
    """A tiny InternVL saved in bf16 by transformers `save_pretrained` (the published layout)."""
    from tests.test_fsdp_bf16_checkpoints import save_published

    root = tmp_path_factory.mktemp("hf") / "internvl"
    save_published("encoders", "internvl", root)
    return root


@pytest.mark.parametrize(
    ("strategy", "pretrained"),
    [(FSDP, False), (FSDP, True), (["--set", "dist.strategy=hsdp", "--set", "dist.shard_size=1"], False)],
    ids=["random", "pretrained_bf16", "hsdp_2_replicas"],
)
def test_two_processes_start_from_process_0s_ordinary_build(store, tmp_path, strategy, pretrained, request):
    tiny = ["--set", "train.lr=1e-30", "--set", "train.min_lr=0", "--set", "train.weight_decay=0"]
    if pretrained:
        tiny += ["--set", f"model.encoder.pretrained={request.getfixturevalue('internvl')}"]
    ref = run(store, tmp_path, "ref", 1, tiny)  # one ordinary process: the build process 0 makes
    meta = run(
        store,
        tmp_path,
        "meta",
        1,
        [*tiny, *strategy, "--set", "dist.meta_init=true", "--set", "train.micro_batch_size=4"],
        processes=2,
    )
    want = load_file(ref / "weights/model.safetensors")
    got = load_file(meta / "weights/model.safetensors")
    assert sorted(got) == sorted(want)
    for key, value in want.items():
        assert got[key].dtype == value.dtype == torch.float32, key
        assert (got[key] - value).abs().max() <= 1e-29, key  # bit-exact but for zero weights' 1e-30 step
    if pretrained:  # the checkpoint's (bf16) values, as loaded by the ordinary path
        vlm = [k for k in want if ".vlm." in f".{k}"]
        assert vlm and all(torch.equal(got[k], want[k]) for k in vlm if want[k].abs().min() > 0)
        # and each rank read only its own rows of them, straight from the safetensors file: together the two
        # ranks read every stored byte exactly once; process 0 did not read the file whole
        (b0, n0, s0), (b1, n1, s1) = reads(tmp_path, "meta")[0], reads(tmp_path, "meta")[1]
        assert n0 == n1 == len(vlm) and s0 == s1 > 0
        assert b0 + b1 == s0 and max(b0, b1) < 0.6 * s0, (b0, b1, s0)
    else:
        assert reads(tmp_path, "meta") == {}  # nothing pretrained: nothing read from files


def test_meta_init_needs_a_sharded_strategy():
    from pydantic import ValidationError

    from latbot.recipes.schema import DistConfig

    assert not DistConfig().meta_init  # opt-in
    assert DistConfig(strategy="fsdp", meta_init=True).meta_init
    with pytest.raises(ValidationError, match=r"meta_init needs dist\.strategy fsdp or hsdp"):
        DistConfig(meta_init=True)


def test_a_pi05_baseline_reads_its_checkpoint_per_rank(tmp_path):
    """The pi0.5 baseline (student + expert from LeRobot's tiny pi0.5 checkpoint, bf16 and fp32 tensors) under
    dist.meta_init on 2 processes starts from the single ordinary build's weights, and the two ranks read
    the checkpoint's tensors between them exactly once."""
    from latbot import registry
    from latbot.sim.generate import generate

    store = tmp_path / "store"
    generate(registry.get("simulators", "metaworld").Config(), ["reach"], 2, store, image_size=64, seed=0,
             progress=False)  # fmt: skip
    checkpoint = REPO / "tests/fixtures/pi05_tiny"
    sets = [f"data.sources=[{{store: {store}}}]", f"model.student.pretrained={checkpoint}",
            f"model.action_expert.pretrained={checkpoint}", "train.steps=1", "train.checkpoint_every=1",
            "train.global_batch_size=4", "train.micro_batch_size=2", "train.lr=1e-30", "train.min_lr=0",
            "train.weight_decay=0", f"log.out_dir={tmp_path}", "log.progress=false", "log.tensorboard=false",
            "data.num_workers=0"]  # fmt: skip
    recipe = str(REPO / "recipes/tiny/baseline_pi05.yaml")

    def train(name, processes, *more):
        launcher = [*TORCHRUN, str(processes), "-m", "latbot"] if processes else [sys.executable, "-m", "latbot"]
        args = [x for s in [*sets, f"log.run_name={name}", *more] for x in ("--set", s)]
        done = subprocess.run([*launcher, "train", recipe, *args], cwd=REPO, env=ENV, capture_output=True, text=True,
                              timeout=600)  # fmt: skip
        assert done.returncode == 0, done.stderr[-3000:]
        (tmp_path / f"{name}.stdout").write_text(done.stdout)
        return load_file(tmp_path / name / "weights/model.safetensors")

    want = train("ref", None)
    train("plain", 2, "dist.strategy=fsdp")  # the ordinary fsdp path too (its empty latent queries stay frozen)
    got = train("meta", 2, "dist.strategy=fsdp", "dist.meta_init=true")
    assert sorted(got) == sorted(want)
    for key, value in want.items():  # (the baseline's 0 latent queries are empty tensors)
        diff = (got[key] - value).abs()
        assert got[key].shape == value.shape and (diff.numel() == 0 or diff.max() <= 1e-29), key
    (b0, n0, s0), (b1, n1, s1) = reads(tmp_path, "meta")[0], reads(tmp_path, "meta")[1]
    assert n0 == n1 > 0 and s0 == s1 > 0 and b0 + b1 == s0 and max(b0, b1) < 0.6 * s0, (b0, b1, s0)
