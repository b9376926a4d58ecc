"""One writer per store, and a writer that cleans up removes only what the store layout defines
(latbot.data.store.writing, latbot.data.convert._remove_store)."""

from __future__ import annotations

import fcntl
import os

import pytest

from latbot.data.convert import _remove_store
from latbot.data.location import StoreDir
from latbot.data.store import LOCK_NAME, EpisodeStore, StoreError, writing


def _other_process_could_lock(path) -> bool:
    fd = os.open(path / LOCK_NAME, os.O_RDWR)  # a second open file description: what another process has
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    finally:
        os.close(fd)


def test_the_lock_is_held_for_the_whole_block_and_used_by_create_and_append(tmp_path):
    path = tmp_path / "store"
    with writing(path):
        with EpisodeStore.create(path, cameras=["cam"], image_size=(8, 8)):
            assert not _other_process_could_lock(path)
        assert not _other_process_could_lock(path)  # closing the store does not end the command's lock
        EpisodeStore.open(path, mode="a").close()
        with pytest.raises(StoreError, match=f"pid {os.getpid()}"):
            with writing(path):  # a second writer (here: a second block) is refused with the holder's pid
                pass
    assert _other_process_could_lock(path)


def test_a_block_that_created_nothing_leaves_nothing(tmp_path):
    with writing(tmp_path / "new"):
        pass
    assert not (tmp_path / "new").exists()
    (tmp_path / "empty").mkdir()
    with writing(tmp_path / "empty"):
        pass
    assert list((tmp_path / "empty").iterdir()) == []


def test_a_store_dropped_without_close_releases_its_lock(tmp_path):
    path = tmp_path / "store"
    EpisodeStore.create(path, cameras=["cam"], image_size=(8, 8))  # never closed, no reference kept
    EpisodeStore.open(path, mode="a").close()


def test_cleanup_removes_the_store_layout_and_nothing_else(tmp_path):
    path = tmp_path / "store"
    EpisodeStore.create(path, cameras=["cam"], image_size=(8, 8)).close()
    (path / "frames" / "notes.txt").write_text("mine")
    (path / "actions" / "c").mkdir()
    (path / "actions" / "c" / "0").write_bytes(b"chunk")
    (path / "mine.txt").write_text("mine")
    _remove_store(StoreDir(path), keep_dir=True)
    left = sorted(str(p.relative_to(path)) for p in path.rglob("*"))
    assert left == [LOCK_NAME, "frames", "frames/notes.txt", "mine.txt"]
