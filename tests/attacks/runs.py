"""Attack cases: run directories: one writer per run, run names that stay inside log.out_dir, destinations
that are not LatBot's, and the quickstart's / a study's --out."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

from tests.attacks import Trial, attack, latbot_command
from tests.attacks._fixtures import fixtures, hold_lock, reopen, train_args


@attack("runs", "two `latbot train --resume RUN` at once: the second is refused with the first one's pid")
def _(t: Trial):
    _, run = fixtures(t.work)
    reopen(run)
    with hold_lock(run):  # the first resume, mid-way
        r = t.cli("train", "--resume", run, owns=[run])
    t.expect_refused(r, mentions=[f"pid {os.getpid()}", "another LatBot process"])


@attack(
    "runs", "two real training processes with the same run name: the second stops at once", fast=False, timeout_s=180
)
def _(t: Trial):
    store, _ = fixtures(t.work)
    out = t.work / "runs"
    first = subprocess.Popen(
        [*latbot_command(t.tree), *train_args(store, out, "same", steps=400)],
        cwd=t.work, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 40
        while not (out / "same" / "metrics.jsonl").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        r = t.command(*train_args(store, out, "same", steps=400), owns=[out])
        r2 = t.command("train", "--resume", out / "same", owns=[out])
    finally:
        first.kill()
        first.wait()
    t.expect_refused(r, mentions=["already holds a run"])
    t.expect_refused(r2, mentions=[f"pid {first.pid}"])


@attack("runs", "log.run_name=../escaped writes nothing outside log.out_dir")
def _(t: Trial):
    store, _ = fixtures(t.work)
    out = t.work / "runs"
    r = t.cli(*train_args(store, out, "../escaped", steps=1), owns=[out])
    t.expect_refused(r, mentions=["run_name"])


@attack("runs", "log.run_name as an absolute path writes nothing outside log.out_dir")
def _(t: Trial):
    store, _ = fixtures(t.work)
    out = t.work / "runs"
    r = t.cli(*train_args(store, out, str(t.tmp / "elsewhere"), steps=1), owns=[out])
    t.expect_refused(r, mentions=["run_name"])


@attack("runs", "a run name that is a folder of someone's files is refused, untouched")
def _(t: Trial):
    store, _ = fixtures(t.work)
    out = t.work / "runs"
    (out / "mine").mkdir(parents=True)
    (out / "mine" / "thesis.tex").write_text("years of work")
    r = t.cli(*train_args(store, out, "mine", steps=1))
    t.expect_refused(r, mentions=["thesis.tex"])


@attack("runs", "a run name that is an episode store is refused, untouched")
def _(t: Trial):
    store, _ = fixtures(t.work)
    r = t.cli(*train_args(store, t.work, "store", steps=1))
    t.expect_refused(r)


@attack("runs", "resume of a folder that is not a run (an episode store)")
def _(t: Trial):
    store, _ = fixtures(t.work)
    r = t.cli("train", "--resume", store)
    t.expect_refused(r, mentions=["episode_store"])


def _quickstart_into(t: Trial, dest: Path):
    return t.cli("quickstart", "--out", dest)


@attack("runs", "quickstart --out onto a folder of someone's files is refused, untouched")
def _(t: Trial):
    dest = t.work / "papers"
    dest.mkdir()
    (dest / "draft.md").write_text("x")
    (dest / "runs").mkdir()
    t.expect_refused(_quickstart_into(t, dest), mentions=["draft.md"])


@attack("runs", "quickstart --out onto an episode store is refused, untouched")
def _(t: Trial):
    store, _ = fixtures(t.work)
    t.expect_refused(_quickstart_into(t, store), mentions=["episode_store"])


@attack("runs", "study --out onto a run directory is refused, untouched")
def _(t: Trial):
    _, run = fixtures(t.work)
    study = Path(__file__).resolve().parents[2] / "tests" / "fixtures"
    files = sorted(study.glob("**/*study*.yaml")) or sorted(
        (Path(__file__).resolve().parents[2] / "recipes" / "studies").glob("*.yaml")
    )
    r = t.cli("study", files[0], "--out", run)
    t.expect_refused(r, mentions=["lam"])


@attack("runs", "a run whose command fails is marked failed with the error, and a rerun replaces it")
def _(t: Trial):
    import json
    import shutil

    store, _ = fixtures(t.work)
    pristine = t.work / "pristine"
    shutil.copytree(store, pristine)
    for shard in (store / "frames").rglob("*"):
        if shard.is_file() and "c" in shard.relative_to(store).parts:  # damaged bytes: checksums fail on read
            data = bytearray(shard.read_bytes())
            data[len(data) // 2 : len(data) // 2 + 64] = b"\xff" * 64
            shard.write_bytes(bytes(data))
    out = t.work / "runs"
    r = t.cli(*train_args(store, out, "r", steps=2), owns=[out])
    t.expect(r.exit_code not in (0, None), "training on a damaged store did not fail", r)
    manifest = json.loads((out / "r" / "latbot.json").read_text())
    t.expect(manifest["status"] == "failed", f"the run says {manifest['status']!r}, not 'failed'")
    t.expect("checksum" in manifest["extra"].get("error", "").lower(), f"no error recorded: {manifest['extra']}")
    shutil.rmtree(store)
    shutil.copytree(pristine, store)
    r = t.cli(*train_args(store, out, "r", steps=2), owns=[out])
    manifest = json.loads((out / "r" / "latbot.json").read_text())
    t.expect(r.exit_code == 0 and manifest["status"] == "complete", "the rerun did not replace the failed run", r)
    t.handled()


def _resume_refused(t: Trial, plant, mentions: list[str]) -> None:
    _, run = fixtures(t.work)
    reopen(run)
    plant(t, run)
    r = t.cli("train", "--resume", run, owns=[run])
    t.expect_refused(r, mentions=mentions)


@attack("runs", "resume of a run whose metrics.jsonl is a link to someone's file: refused, the file untouched")
def _(t: Trial):
    def plant(t: Trial, run: Path) -> None:
        victim = t.tmp / "victim.txt"
        victim.write_text("precious user data\n")
        (run / "metrics.jsonl").unlink()
        (run / "metrics.jsonl").symlink_to(victim)

    _resume_refused(t, plant, ["metrics.jsonl is a link"])


@attack("runs", "resume of a run whose metrics.jsonl is a FIFO: refused at once")
def _(t: Trial):
    def plant(t: Trial, run: Path) -> None:
        (run / "metrics.jsonl").unlink()
        os.mkfifo(run / "metrics.jsonl")

    _resume_refused(t, plant, ["metrics.jsonl"])


@attack("runs", "resume of a run whose weights/ is a link to another folder: refused, that folder untouched")
def _(t: Trial):
    import shutil

    def plant(t: Trial, run: Path) -> None:
        victim = t.tmp / "models"
        victim.mkdir()
        (victim / "model.safetensors").write_text("precious\n")
        shutil.rmtree(run / "weights")
        (run / "weights").symlink_to(victim)

    _resume_refused(t, plant, ["weights is a link"])
