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
