"""Attack cases: checkpoints of a run that came from elsewhere (planted pickles, damaged or edited files,
links out of the run, a torn metrics log)."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

from tests.attacks import Trial, attack
from tests.attacks._fixtures import Payload, fixtures, rehash, reopen

NEWEST, OLDER = "step_00000003", "step_00000002"


def _run(t: Trial) -> tuple[Path, Path]:
    store, run = fixtures(t.work)
    reopen(run)
    return store, run


def _steps(run: Path) -> list[int]:
    return [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]


def _plant_metadata(t: Trial, ckpt: Path, matching_hash: bool) -> Path:
    marker = t.tmp / "PWNED"
    (ckpt / ".metadata").write_bytes(pickle.dumps(Payload(marker)))
    if matching_hash:
        rehash(ckpt)
    return marker


@attack("checkpoints", "pickle payload in the newest .metadata, meta.json re-hashed to match")
def _(t: Trial):
    _, run = _run(t)
    marker = _plant_metadata(t, run / "checkpoints" / NEWEST, matching_hash=True)
    r = t.cli("train", "--resume", run, owns=[run])
    t.expect(not marker.exists(), "the planted pickle ran (PWNED written)", r)
    t.expect_refused(r, mentions=["refused to unpickle", ".metadata"])


@attack("checkpoints", "pickle payload in the newest .metadata (hash left stale): falls back, payload never runs")
def _(t: Trial):
    _, run = _run(t)
    marker = _plant_metadata(t, run / "checkpoints" / NEWEST, matching_hash=False)
    r = t.cli("train", "--resume", run, owns=[run])
    t.expect(not marker.exists(), "the planted pickle ran (PWNED written)", r)
    t.expect(r.exit_code == 0 and OLDER in r.output, f"resume did not fall back to {OLDER} and say so", r)
    t.handled()


@attack("checkpoints", "pickle payload in every checkpoint's .metadata")
def _(t: Trial):
    _, run = _run(t)
    marker = t.tmp / "PWNED"
    for ckpt in (run / "checkpoints").glob("step_*"):
        _plant_metadata(t, ckpt, matching_hash=True)
    r = t.cli("train", "--resume", run, owns=[run])
    t.expect(not marker.exists(), "the planted pickle ran (PWNED written)", r)
    t.expect_refused(r, mentions=["refused to unpickle"])


@attack("checkpoints", "pickle payload in a DCP byte entry (an optimizer hyper-parameter)")
def _(t: Trial):
    import io

    _, run = _run(t)
    ckpt = run / "checkpoints" / NEWEST
    marker = t.tmp / "PWNED"
    buf = io.BytesIO()
    import torch

    torch.save(Payload(marker), buf)
    evil = buf.getvalue()
    # DCP writes byte entries (torch.save'd objects) verbatim into the .distcp file; swap the first one that
    # holds a float (an lr / beta / eps) for the payload and point the metadata at it.
    with (ckpt / ".metadata").open("rb") as f:
        meta = pickle.load(f)  # the case's own fixture, written by LatBot a moment ago
    data = bytearray((ckpt / "__0_0.distcp").read_bytes())
    from torch.distributed.checkpoint.metadata import BytesStorageMetadata

    target = next(
        idx for idx, info in meta.storage_data.items()
        if isinstance(meta.state_dict_metadata.get(idx.fqn), BytesStorageMetadata) and "lr" in idx.fqn
    )  # fmt: skip
    info = meta.storage_data[target]
    start = len(data)
    data += evil
    (ckpt / "__0_0.distcp").write_bytes(bytes(data))
    meta.storage_data[target] = type(info)(relative_path=info.relative_path, offset=start, length=len(evil))
    with (ckpt / ".metadata").open("wb") as f:
        pickle.dump(meta, f)
    rehash(ckpt)
    r = t.cli("train", "--resume", run, owns=[run])
    t.expect(not marker.exists(), "the planted pickle ran (PWNED written)", r)
    if r.exit_code == 0:
        t.end("silent", "resumed from a checkpoint holding a pickle payload")
    t.expect_refused(r, mentions=["weights_only"])


@attack("checkpoints", "pickle payload in a rank file (rank0.pt)")
def _(t: Trial):
    import torch

    _, run = _run(t)
    marker = t.tmp / "PWNED"
    for ckpt in (run / "checkpoints").glob("step_*"):
        torch.save({"rng": Payload(marker), "samples": 1}, ckpt / "rank0.pt")
        rehash(ckpt)
    r = t.cli("train", "--resume", run, owns=[run])
    t.expect(not marker.exists(), "the planted pickle ran (PWNED written)", r)
    t.expect_refused(r, mentions=["rank0.pt"])


@attack("checkpoints", "newest checkpoint truncated: resume falls back to the previous one and says which")
def _(t: Trial):
    _, run = _run(t)
    f = run / "checkpoints" / NEWEST / "__0_0.distcp"
    f.write_bytes(f.read_bytes()[:100])
    before = _steps(run)
    r = t.cli("train", "--resume", run, owns=[run])
    t.expect(r.exit_code == 0 and OLDER in r.output, f"resume did not fall back to {OLDER} and say so", r)
    t.expect(_steps(run) == before, f"metrics steps after resume: {_steps(run)}, before: {before}")
    t.handled()


@attack("checkpoints", "every checkpoint damaged: a one-line error listing why")
def _(t: Trial):
    _, run = _run(t)
    for ckpt in (run / "checkpoints").glob("step_*"):
        (ckpt / "__0_0.distcp").write_bytes(b"\0" * 64)
    r = t.cli("train", "--resume", run, owns=[run])
    t.expect_refused(r, mentions=["no usable checkpoint"])


@attack("checkpoints", "meta.json of the newest checkpoint is not JSON")
def _(t: Trial):
    _, run = _run(t)
    (run / "checkpoints" / NEWEST / "meta.json").write_text("{not json")
    r = t.cli("train", "--resume", run, owns=[run])
    t.expect(r.exit_code == 0 and OLDER in r.output, f"resume did not fall back to {OLDER}", r)
    t.handled()


def _latest_points_out(t: Trial, point) -> None:
    """The newest checkpoint moved out of the run (with a planted pickle) and `latest` aimed at it by
    `point(latest, target)`; resume must stay inside the run and never run the pickle."""
    _, run = _run(t)
    outside = t.tmp / "outside"
    outside.mkdir()
    os.rename(run / "checkpoints" / NEWEST, outside / NEWEST)
    marker = _plant_metadata(t, outside / NEWEST, matching_hash=True)
    point(run / "checkpoints" / "latest", outside / NEWEST)
    r = t.cli("train", "--resume", run, owns=[run])
    t.expect(not marker.exists(), "followed latest out of the run and ran its pickle", r)
    t.expect(r.exit_code == 0 and OLDER in r.output, f"resume did not use {OLDER} inside the run", r)
    t.handled()


def _symlink(latest: Path, target: Path) -> None:
    latest.unlink()
    latest.symlink_to(target)


@attack("checkpoints", "checkpoints/latest is a symlink to a checkpoint outside the run")
def _(t: Trial):
    _latest_points_out(t, _symlink)


@attack("checkpoints", "checkpoints/latest names a path out of the run (../../outside/step_…)")
def _(t: Trial):
    _latest_points_out(t, lambda latest, target: latest.write_text(f"../../../outside/{target.name}"))


@attack("checkpoints", "the run's checkpoints/ folder is a symlink to another folder")
def _(t: Trial):
    _, run = _run(t)
    outside = t.tmp / "outside"
    os.rename(run / "checkpoints", outside)
    (run / "checkpoints").symlink_to(outside)
    r = t.cli("train", "--resume", run, owns=[run])
    t.expect_refused(r, mentions=["checkpoints is a link"])


@attack("checkpoints", "torn last line of metrics.jsonl (killed mid-write): resume works and drops it")
def _(t: Trial):
    _, run = _run(t)
    # the run was "killed" after step 2's checkpoint, mid-way through writing step 3's metrics line
    import shutil

    shutil.rmtree(run / "checkpoints" / NEWEST)
    (run / "checkpoints" / "latest").write_text(OLDER)
    before = _steps(run)
    lines = (run / "metrics.jsonl").read_text().splitlines()
    (run / "metrics.jsonl").write_text("\n".join(lines[:-1]) + "\n" + lines[-1][:15])  # step 3's line, torn
    r = t.cli("train", "--resume", run, owns=[run])
    t.expect(r.exit_code == 0 and _steps(run) == before, f"metrics after resume: {_steps(run)}", r)
    t.handled()


def _plant_storage_path(t: Trial, name_of) -> Path:
    """Rewrite the newest checkpoint's DCP metadata so that its first data file is `name_of(outside)`, with
    every hash re-recorded (an attacker who edits the run does that too)."""
    _, run = _run(t)
    ckpt = run / "checkpoints" / NEWEST
    with (ckpt / ".metadata").open("rb") as f:
        meta = pickle.load(f)  # the case's own fixture, written by LatBot a moment ago
    outside = t.tmp / "outside"
    outside.mkdir()
    target = name_of(outside)
    for idx, info in list(meta.storage_data.items()):
        meta.storage_data[idx] = type(info)(relative_path=target, offset=info.offset, length=info.length)
    with (ckpt / ".metadata").open("wb") as f:
        pickle.dump(meta, f)
    rehash(ckpt)
    return run


@attack("checkpoints", "DCP metadata names a FIFO outside the run as its data file (would hang)")
def _(t: Trial):
    def fifo(outside: Path) -> str:
        os.mkfifo(outside / "pipe")
        return str(outside / "pipe")

    run = _plant_storage_path(t, fifo)
    r = t.cli("train", "--resume", run, owns=[run])
    t.expect_refused(r, mentions=["not a file of this checkpoint"])


@attack("checkpoints", "DCP metadata names ../../ a file outside the checkpoint as its data file")
def _(t: Trial):
    def escape(outside: Path) -> str:
        (outside / "data.distcp").write_bytes(b"\0" * 4096)
        return "../../../../outside/data.distcp"

    run = _plant_storage_path(t, escape)
    r = t.cli("train", "--resume", run, owns=[run])
    t.expect_refused(r, mentions=["not a file of this checkpoint"])


@attack("checkpoints", "latest names a step folder that is a link to a checkpoint outside the run")
def _(t: Trial):
    import shutil

    _, run = _run(t)
    outside = t.tmp / "elsewhere"
    shutil.copytree(run / "checkpoints" / "step_00000001", outside)
    (run / "checkpoints" / "step_00000009").symlink_to(outside)
    (run / "checkpoints" / "latest").write_text("step_00000009")
    r = t.cli("train", "--resume", run, owns=[run])
    t.expect(r.exit_code == 0 and NEWEST in r.output, f"resume did not take {NEWEST} inside the run", r)
    t.handled()
