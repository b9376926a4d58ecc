"""Attack cases: locks (see tests/attacks/__init__.py for how a case is written and judged)."""

from __future__ import annotations

import os

from tests.attacks import Trial, attack


@attack("locks", "two writers of one folder: the second is refused with the holder's pid")
def _(t: Trial):
    from latbot.ownership import writer_lock

    target = t.work / "run"
    with writer_lock(target, "run"):
        r = t.call(lambda: writer_lock(target, "run").__enter__())
    t.expect_refused(r, mentions=[str(os.getpid()), "another LatBot process"])


@attack("locks", "a second convert into a store another process is writing: refused with its pid")
def _(t: Trial):
    from tests.attacks._fixtures import hold_store_lock
    from tests.attacks.writers import _convert, _source

    src = _source(t)
    out = t.work / "store"
    r = _convert(t, src, out, owns=[out])
    t.expect(r.exit_code == 0, "the first conversion failed", r)
    with hold_store_lock(out):
        r = _convert(t, src, out)
    t.expect_refused(r, mentions=[f"pid {os.getpid()}"])


@attack("locks", "gen-sim into a store another process is writing: refused with its pid")
def _(t: Trial):
    from tests.attacks._fixtures import hold_store_lock

    out = t.work / "store"
    r = t.cli("data", "gen-sim", "--sim", "metaworld", "--tasks", "reach", "--episodes", "1", "--out", out,
              "--image-size", "32", owns=[out])  # fmt: skip
    t.expect(r.exit_code == 0, "the first gen-sim failed", r)
    with hold_store_lock(out):
        r = t.cli("data", "gen-sim", "--sim", "metaworld", "--tasks", "reach", "--episodes", "2", "--out", out,
                  "--image-size", "32")  # fmt: skip
    t.expect_refused(r, mentions=[f"pid {os.getpid()}"])


@attack("locks", "a second convert while another process is creating the store (no log yet): refused, nothing removed")
def _(t: Trial):
    import shutil

    from latbot.data.store import EpisodeStore
    from tests.attacks._fixtures import hold_store_lock
    from tests.attacks.writers import _convert, _source

    out = t.work / "store"
    EpisodeStore.create(out, cameras=["top"], image_size=(16, 16)).close()
    (out / "episodes.jsonl").unlink()  # what the first writer's store looks like between its first two files
    for p in out.iterdir():
        if p.is_dir():
            shutil.rmtree(p)
    src = _source(t)
    with hold_store_lock(out):
        r = _convert(t, src, out)
    t.expect_refused(r, mentions=[f"pid {os.getpid()}"])


@attack("locks", "a second convert into a new folder whose first writer holds only the lock yet: refused")
def _(t: Trial):
    from tests.attacks._fixtures import hold_store_lock
    from tests.attacks.writers import _convert, _source

    src, out = _source(t), t.work / "store"
    with hold_store_lock(out):
        r = _convert(t, src, out)
    t.expect_refused(r, mentions=[f"pid {os.getpid()}"])


@attack("locks", "convert as a second process while this one writes the store (latbot.data.store.writing)")
def _(t: Trial):
    from latbot.data.store import writing
    from tests.attacks.writers import _source

    src, out = _source(t), t.work / "store"
    with writing(out):
        r = t.command("data", "convert", src, "--format", "lerobot", "--out", out, "--image-size", "16")
    t.expect_refused(r, mentions=[f"pid {os.getpid()}", "another LatBot process"])


@attack("locks", "data stats on a store another process is writing: refused with its pid")
def _(t: Trial):
    from tests.attacks._fixtures import fixtures, hold_store_lock

    store, _ = fixtures(t.work)
    with hold_store_lock(store):
        r = t.cli("data", "stats", store)
    t.expect_refused(r, mentions=[f"pid {os.getpid()}"])


@attack("locks", "a run whose lock file is a link: a one-line refusal, not a traceback")
def _(t: Trial):
    from tests.attacks._fixtures import fixtures, reopen

    _, run = fixtures(t.work)
    reopen(run)
    (run / ".latbot.lock").unlink(missing_ok=True)
    (run / ".latbot.lock").symlink_to(t.tmp / "elsewhere.lock")
    r = t.cli("train", "--resume", run, owns=[run])
    t.expect_refused(r, mentions=[".latbot.lock"])
