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
