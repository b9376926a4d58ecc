"""Attack cases: writers pointed at destinations they did not create (convert, gen-sim, viz, grounding), and
a second source converted into a store."""

from __future__ import annotations

import json
from pathlib import Path

from tests.attacks import Trial, attack
from tests.attacks._fixtures import fixtures


def _source(t: Trial, name: str = "src", episodes: int = 2) -> Path:
    from latbot.testing.samples import make_lerobot_v21

    return make_lerobot_v21(t.work / name, episodes=episodes, steps=6, size=16, codec="libx264")


def _convert(t: Trial, src: Path, out: Path, owns=()):
    return t.cli("data", "convert", src, "--format", "lerobot", "--out", out, "--image-size", "16", owns=owns)


def _foreign(t: Trial, *names: str) -> Path:
    """A folder of someone's files, named like a store's parts."""
    d = t.work / "mine"
    d.mkdir()
    for name in names:
        if "." in name:
            (d / name).write_text(json.dumps({"mine": True}))
        else:
            (d / name).mkdir()
            (d / name / "data.bin").write_bytes(b"precious")
    return d


@attack("writers", "convert --out onto a folder with its own latbot.json, actions/ and frames/")
def _(t: Trial):
    src = _source(t)
    out = _foreign(t, "latbot.json", "actions", "frames")
    t.expect_refused(_convert(t, src, out), mentions=[str(out)])


@attack("writers", "convert --out onto a folder with a foreign zarr.json, actions/ and frames/")
def _(t: Trial):
    src = _source(t)
    out = _foreign(t, "zarr.json", "actions", "frames")
    t.expect_refused(_convert(t, src, out), mentions=["not a LatBot episode store"])


@attack("writers", "convert --out onto a folder of other files")
def _(t: Trial):
    src = _source(t)
    out = _foreign(t, "notes.txt", "results")
    t.expect_refused(_convert(t, src, out), mentions=["notes.txt"])


@attack("writers", "convert --out onto a finished training run")
def _(t: Trial):
    _, run = fixtures(t.work)
    src = _source(t)
    t.expect_refused(_convert(t, src, run), mentions=["'lam' artifact"])


@attack("writers", "convert --out onto an existing file")
def _(t: Trial):
    src = _source(t)
    f = t.work / "notes.txt"
    f.write_text("x")
    t.expect_refused(_convert(t, src, f))


@attack("writers", "convert source B into the finished store of source A: refused naming both")
def _(t: Trial):
    a, b = _source(t, "a"), _source(t, "b", episodes=3)
    out = t.work / "store"
    r = _convert(t, a, out, owns=[out])
    t.expect(r.exit_code == 0, "the first conversion failed", r)
    r = _convert(t, b, out)
    t.expect_refused(r, mentions=[str(a.resolve()), str(b.resolve())])


@attack("writers", "convert again into its own store resumes (nothing added, nothing lost)")
def _(t: Trial):
    src = _source(t)
    out = t.work / "store"
    r = _convert(t, src, out, owns=[out])
    t.expect(r.exit_code == 0, "the first conversion failed", r)
    r = _convert(t, src, out, owns=[out])
    t.expect(r.exit_code == 0 and "0 added" in r.output.replace("0 episode(s) added", "0 added"), "rerun", r)
    t.handled()


@attack("writers", "gen-sim --out onto a folder of other files")
def _(t: Trial):
    out = _foreign(t, "notes.txt")
    r = t.cli("data", "gen-sim", "--sim", "metaworld", "--tasks", "reach", "--episodes", "1", "--out", out)
    t.expect_refused(r, mentions=[str(out)])


@attack("writers", "gen-sim --out onto a converted store of another source")
def _(t: Trial):
    store, _ = fixtures(t.work)
    r = t.cli("data", "gen-sim", "--sim", "metaworld", "--tasks", "reach", "--episodes", "1", "--out", store)
    t.expect_refused(r, mentions=["metaworld"])


@attack("writers", "viz --out STORE/latbot.json (the store's manifest)")
def _(t: Trial):
    store, _ = fixtures(t.work)
    r = t.cli("viz", "episode", store, "--out", store / "latbot.json")
    t.expect_refused(r)


@attack("writers", "viz --out a .rrd inside a store")
def _(t: Trial):
    store, _ = fixtures(t.work)
    r = t.cli("viz", "episode", store, "--out", store / "episode.rrd")
    t.expect_refused(r, mentions=["inside the 'episode_store' artifact"])


@attack("writers", "viz --out onto an existing directory")
def _(t: Trial):
    store, _ = fixtures(t.work)
    d = _foreign(t, "notes.txt")
    d.rename(t.work / "out.rrd")
    r = t.cli("viz", "episode", store, "--out", t.work / "out.rrd")
    t.expect_refused(r)


@attack("writers", "viz --out onto an existing file that is not a recording")
def _(t: Trial):
    store, _ = fixtures(t.work)
    f = t.work / "thesis.tex"
    f.write_text("years of work")
    r = t.cli("viz", "episode", store, "--out", f)
    t.expect_refused(r, mentions=[".rrd"])


@attack("writers", "viz with a bad --episode leaves no half-written recording")
def _(t: Trial):
    store, _ = fixtures(t.work)
    out = t.work / "ep.rrd"
    r = t.cli("viz", "episode", store, "--episode", "99", "--out", out, owns=[])
    t.expect_refused(r, mentions=["--episode 99"])


@attack("writers", "grounding-analysis --out onto a folder of other files")
def _(t: Trial):
    store, run = fixtures(t.work)
    d = _foreign(t, "notes.txt")
    r = t.cli("grounding-analysis", "--checkpoint", run, "--data", store, "--out", d, "--samples", "1")
    t.expect_refused(r, mentions=["notes.txt"])


@attack("writers", "grounding-analysis --out inside a run")
def _(t: Trial):
    store, run = fixtures(t.work)
    r = t.cli("grounding-analysis", "--checkpoint", run, "--data", store, "--out", run / "g", "--samples", "1")
    t.expect_refused(r, mentions=["inside the 'lam' artifact"])


def _interrupted(t: Trial, src: Path, out: Path) -> None:
    """A conversion of `src` into `out` that failed after its first committed episode (no manifest yet)."""
    second = src / "data/chunk-000/episode_000001.parquet"
    good = second.read_bytes()
    second.write_bytes(b"garbage")
    r = _convert(t, src, out, owns=[out])
    second.write_bytes(good)
    t.expect(r.exit_code == 2 and (out / "episodes.jsonl").stat().st_size > 0, "the first conversion", r)
    t.expect(not (out / "latbot.json").exists(), "the interrupted store has a manifest", r)


@attack("writers", "convert source B into the interrupted store of source A (no manifest yet): refused naming both")
def _(t: Trial):
    a, b = _source(t, "a", episodes=3), _source(t, "b")
    out = t.work / "store"
    _interrupted(t, a, out)
    t.expect_refused(_convert(t, b, out), mentions=[str(a.resolve()), str(b.resolve())])


@attack("writers", "convert again into its own interrupted store resumes it")
def _(t: Trial):
    src = _source(t, episodes=3)
    out = t.work / "store"
    _interrupted(t, src, out)
    r = _convert(t, src, out, owns=[out])
    t.expect(r.exit_code == 0 and "2 episode(s) added, 1 already present" in r.output, "resume", r)
    t.handled()


@attack("writers", "convert a LeRobot source into a gen-sim store: refused naming the simulator")
def _(t: Trial):
    from latbot.data.convert import finalize
    from latbot.data.store import EpisodeStore
    from tests.test_store import episode

    store = t.work / "sim"
    with EpisodeStore.create(store, cameras=["cam"], image_size=(16, 16), source_format="metaworld") as s:
        s.append(episode("reach/seed0"))
        finalize(s)
    t.expect_refused(_convert(t, _source(t), store), mentions=["metaworld", "lerobot"])


@attack("writers", "a failed first convert into an existing empty folder leaves it as it was")
def _(t: Trial):
    src = _source(t)
    (src / "data/chunk-000/episode_000000.parquet").write_bytes(b"garbage")
    out = t.work / "empty"
    out.mkdir()
    t.expect_refused(_convert(t, src, out), mentions=["episode_000000"])


@attack("writers", "data stats --out STORE/latbot.json (the store's manifest)")
def _(t: Trial):
    store, _ = fixtures(t.work)
    r = t.cli("data", "stats", store, "--out", store / "latbot.json")
    t.expect_refused(r, mentions=["inside the 'episode_store' artifact"])


@attack("writers", "data stats --out onto an existing file that is not JSON")
def _(t: Trial):
    store, _ = fixtures(t.work)
    f = t.work / "thesis.tex"
    f.write_text("years of work")
    t.expect_refused(t.cli("data", "stats", store, "--out", f), mentions=[".json"])
