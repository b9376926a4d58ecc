"""latbot.ownership: destinations a writer may claim, and the writer lock (one holder, its pid in the error,
released with its process even while forked children live on)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from latbot.ownership import LOCK_NAME, OwnershipError, claim, held_by_other, writer_lock


def test_claim_accepts_new_empty_and_own_and_refuses_the_rest(tmp_path):
    assert claim(tmp_path / "new", {"eval"}) is False
    (tmp_path / "empty").mkdir()
    assert claim(tmp_path / "empty", {"eval"}) is False
    own = tmp_path / "own"
    own.mkdir()
    (own / "latbot.json").write_text(json.dumps({"kind": "eval"}))
    assert claim(own, {"eval"}) is True
    with pytest.raises(OwnershipError, match="holds a 'eval' artifact, not a 'lam'"):
        claim(own, {"lam"})
    (tmp_path / "theirs").mkdir()
    (tmp_path / "theirs" / "thesis.tex").write_text("x")
    with pytest.raises(OwnershipError, match=r"thesis\.tex"):
        claim(tmp_path / "theirs", {"eval"})
    (tmp_path / "file").write_text("x")
    with pytest.raises(OwnershipError, match="not a directory"):
        claim(tmp_path / "file", {"eval"})


def test_a_second_writer_is_refused_with_the_holders_pid(tmp_path):
    with writer_lock(tmp_path, "run"):
        assert held_by_other(tmp_path) == os.getpid()
        with (
            pytest.raises(OwnershipError, match=rf"pid {os.getpid()}\) is writing this run"),
            writer_lock(tmp_path, "run"),
        ):
            pass
    assert held_by_other(tmp_path) is None
    with writer_lock(tmp_path, "run"):  # free again
        pass


def test_the_lock_dies_with_its_process_even_while_a_forked_child_lives(tmp_path):
    code = f"""
import os, time
from latbot.ownership import writer_lock
with writer_lock({str(tmp_path)!r}, "run"):
    if os.fork() == 0:
        time.sleep(30)  # a DataLoader worker winding down long after its parent died
        os._exit(0)
    print("locked", flush=True)
    time.sleep(60)
"""
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        assert proc.stdout.readline().strip() == "locked"
        assert held_by_other(tmp_path) == proc.pid
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        deadline = time.monotonic() + 5
        while held_by_other(tmp_path) is not None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert held_by_other(tmp_path) is None  # the child still runs, but holds no lock
        with writer_lock(tmp_path, "run"):
            pass
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
    assert (tmp_path / LOCK_NAME).is_file()
