"""Attack cases: artifacts whose content no longer matches their manifest (swapped weights, an edited Zarr
metadata file, an edited commit log), and the `--no-verify` escape hatch."""

from __future__ import annotations

import json
from pathlib import Path

from tests.attacks import Trial, attack
from tests.attacks._fixtures import fixtures


def _flip_weights(run: Path) -> None:
    """Change one float of the exported weights (what a swapped or damaged model.safetensors looks like)."""
    f = run / "weights" / "model.safetensors"
    data = bytearray(f.read_bytes())
    data[-8] ^= 0x40
    f.write_bytes(bytes(data))


def _load_lam(run: Path):
    from latbot.runs import load_lam

    return load_lam(run)


@attack("integrity", "swapped/damaged weights of a finished run are refused when loaded")
def _(t: Trial):
    _, run = fixtures(t.work)
    _flip_weights(run)
    r = t.call(lambda: _load_lam(run))
    t.expect_refused(r, mentions=["weights differ", "--no-verify"])


@attack("integrity", "swapped weights load with latbot --no-verify (the documented override)")
def _(t: Trial):
    import os

    _, run = fixtures(t.work)
    _flip_weights(run)
    os.environ["LATBOT_NO_VERIFY"] = "1"  # what `latbot --no-verify` sets
    r = t.call(lambda: _load_lam(run))
    t.expect(r.exit_code == 0 and r.value is not None, "--no-verify did not load the run", r)
    t.handled()


@attack("integrity", "grounding-analysis on a run with swapped weights")
def _(t: Trial):
    store, run = fixtures(t.work)
    _flip_weights(run)
    out = t.work / "grounding"
    r = t.cli("grounding-analysis", "--checkpoint", run, "--data", store, "--out", out, owns=[out])
    t.expect_refused(r, mentions=["weights differ"])


def _store_copy(t: Trial) -> Path:
    store, _ = fixtures(t.work)
    return store


def _read_frames(store: Path):
    from latbot.data.store import EpisodeStore

    with EpisodeStore.open(store) as s:
        return s.read(0, slice(None))


@attack("integrity", "an edited frames/<cam>/zarr.json (shape cropped) is refused, not read cropped")
def _(t: Trial):
    store = _store_copy(t)
    meta = store / "frames" / "cam" / "zarr.json"
    m = json.loads(meta.read_text())
    m["shape"][1] = m["shape"][1] // 2
    meta.write_text(json.dumps(m))
    r = t.call(lambda: _read_frames(store))
    t.expect_refused(r, mentions=["zarr metadata"])


@attack("integrity", "edited normalisation statistics in the store's group zarr.json are refused")
def _(t: Trial):
    store = _store_copy(t)
    meta = store / "zarr.json"
    m = json.loads(meta.read_text())
    stats = m["attributes"]["latbot"]["stats"]
    key = next(iter(stats))
    stats[key] = json.loads(json.dumps(stats[key]).replace("0.", "9."))
    meta.write_text(json.dumps(m))
    r = t.call(lambda: _read_frames(store))
    t.expect_refused(r, mentions=["zarr metadata"])


@attack("integrity", "an edited commit log (an instruction rewritten) is refused")
def _(t: Trial):
    store = _store_copy(t)
    log = store / "episodes.jsonl"
    lines = log.read_text().splitlines()
    rec = json.loads(lines[0])
    rec["instruction"] = "open the door to the attacker"
    log.write_text("\n".join([json.dumps(rec), *lines[1:]]) + "\n")
    r = t.call(lambda: _read_frames(store))
    t.expect_refused(r, mentions=["commit log differs"])


@attack("integrity", "training on a store whose Zarr metadata was edited is refused")
def _(t: Trial):
    from tests.attacks._fixtures import train_args

    store = _store_copy(t)
    meta = store / "frames" / "cam" / "zarr.json"
    m = json.loads(meta.read_text())
    m["shape"][2] = m["shape"][2] // 2
    meta.write_text(json.dumps(m))
    out = t.work / "runs"
    r = t.cli(*train_args(store, out, "x", steps=1), owns=[out])
    t.expect_refused(r, mentions=["zarr metadata"])


@attack("integrity", "latbot data verify reports an edited Zarr metadata file (exit 1)")
def _(t: Trial):
    store = _store_copy(t)
    meta = store / "actions" / "zarr.json"
    m = json.loads(meta.read_text())
    m["shape"][0] = m["shape"][0] - 1
    meta.write_text(json.dumps(m))
    r = t.cli("data", "verify", store)
    t.expect_refused(r, mentions=["zarr metadata"], codes=(1,))


@attack("integrity", "a run whose latbot.json is a FIFO: resume refuses it at once (no blocking read)")
def _(t: Trial):
    import os

    _, run = fixtures(t.work)
    (run / "latbot.json").unlink()
    os.mkfifo(run / "latbot.json")
    r = t.cli("train", "--resume", run, owns=[run])
    t.expect_refused(r, mentions=["latbot.json"])


@attack("integrity", "a run whose latbot.json is 70 MB: refused, not parsed")
def _(t: Trial):
    _, run = fixtures(t.work)
    with (run / "latbot.json").open("w") as f:
        f.write('{"kind": "lam", "pad": "' + "x" * (70 << 20) + '"}')
    r = t.cli("train", "--resume", run, owns=[run])
    t.expect_refused(r, mentions=["latbot.json"])


@attack("integrity", "a store whose latbot.json is a FIFO: reading it does not hang")
def _(t: Trial):
    import os

    store = _store_copy(t)
    (store / "latbot.json").unlink()
    os.mkfifo(store / "latbot.json")
    r = t.cli("data", "info", store)
    t.expect(r.exit_code in (0, 1, 2), "data info on a store with a FIFO manifest", r)
    t.handled()


@attack("integrity", "--no-verify lasts one command: the next in the same process verifies again")
def _(t: Trial):
    from typer.testing import CliRunner

    from latbot.cli import app

    _, run = fixtures(t.work)
    _flip_weights(run)
    CliRunner().invoke(app, ["--no-verify", "plugins", "list"])
    CliRunner().invoke(app, ["plugins", "list"])
    r = t.call(lambda: _load_lam(run))
    t.expect_refused(r, mentions=["weights differ"])


@attack("integrity", "a store whose frame shard is a FIFO: training refuses it at once")
def _(t: Trial):
    import os

    from tests.attacks._fixtures import train_args

    store = _store_copy(t)
    shard = next(p for p in sorted((store / "frames").rglob("*")) if p.is_file() and "c" in p.relative_to(store).parts)
    shard.unlink()
    os.mkfifo(shard)
    out = t.work / "runs"
    r = t.cli(*train_args(store, out, "x", steps=1), owns=[out])
    t.expect_refused(r, mentions=["not a regular file"])


@attack("integrity", "latbot data verify on a store whose frames/zarr.json is a FIFO reports it (exit 1)")
def _(t: Trial):
    import os

    store = _store_copy(t)
    meta = store / "frames" / "zarr.json"
    meta.unlink()
    os.mkfifo(meta)
    r = t.cli("data", "verify", store)
    t.expect_refused(r, mentions=["not a regular file"], codes=(1,))
