"""Real artifacts for the attack cases, made once per checkout of `latbot/` and copied into each case: a small
episode store and a 3-step LAM run with a checkpoint after every step."""

from __future__ import annotations

import fcntl
import hashlib
import json
import shutil
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
RECIPE = REPO / "recipes" / "tiny" / "lam.yaml"


def _cache_dir() -> Path:
    import latbot

    code = Path(latbot.__file__).parent
    key = hashlib.sha1(str(code).encode() + (code / "train" / "checkpoint.py").read_bytes()).hexdigest()[:12]
    return Path(tempfile.gettempdir()) / f"latbot-attack-fixtures-{key}"


def _build(cache: Path) -> None:
    from typer.testing import CliRunner

    from latbot.cli import app
    from latbot.data.convert import finalize
    from latbot.data.store import EpisodeStore
    from tests.test_store import episode

    shutil.rmtree(cache, ignore_errors=True)  # a build cut short
    tmp = cache
    with EpisodeStore.create(tmp / "store", cameras=["cam"], image_size=(32, 32)) as s:
        for i in range(3):
            s.append(episode(f"e{i}", steps=14, size=32, seed=i))
        finalize(s)
    r = CliRunner().invoke(app, train_args(tmp / "store", tmp / "runs", "r", steps=3), catch_exceptions=False)
    assert r.exit_code == 0, r.output
    (cache / "done").write_text("")


def train_args(store: Path, out: Path, name: str, steps: int = 3) -> list[str]:
    sets = {
        "data.sources": f"[{{store: {store}}}]",
        "train.steps": steps,
        "train.checkpoint_every": 1,
        "train.keep_last": 3,
        "log.out_dir": out,
        "log.run_name": name,
        "data.num_workers": 0,
        "log.progress": "false",
        "log.tensorboard": "false",
    }
    return ["train", str(RECIPE), *(x for k, v in sets.items() for x in ("--set", f"{k}={v}"))]


def fixtures(dest: Path) -> tuple[Path, Path]:
    """(store, finished run) copied under `dest` (the run's recipe reads the cached store, which no case
    changes)."""
    cache = _cache_dir()
    cache.parent.mkdir(parents=True, exist_ok=True)
    with open(str(cache) + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (cache / "done").is_file():
            _build(cache)
    shutil.copytree(cache / "store", dest / "store")
    shutil.copytree(cache / "runs" / "r", dest / "run", symlinks=True)
    return dest / "store", dest / "run"


def reopen(run: Path) -> None:
    """Mark a finished run as running again (what a run killed before its export looks like)."""
    path = run / "latbot.json"
    m = json.loads(path.read_text())
    m["status"] = "running"
    path.write_text(json.dumps(m))


def rehash(ckpt: Path) -> None:
    """Re-record every file's hash in a checkpoint's meta.json (an attacker who edits the run does that too)."""
    meta_path = ckpt / "meta.json"
    meta = json.loads(meta_path.read_text())
    if "files" in meta:
        meta["files"] = {
            p.name: "sha256:" + hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(ckpt.iterdir())
            if p.is_file() and p.name != "meta.json"
        }
        meta_path.write_text(json.dumps(meta))


class Payload:
    """Unpickling this runs `open(marker, 'w')`: proof that code ran."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


class hold_lock:
    """Hold `directory/.latbot.lock` the way a running LatBot writer does (flock + its pid), with fcntl alone so
    that the case also runs against a checkout that has no lock."""

    def __init__(self, directory: Path):
        self.path = Path(directory) / ".latbot.lock"

    def __enter__(self):
        import os

        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.f = open(self.path, "w")
        fcntl.flock(self.f, fcntl.LOCK_EX)
        self.f.write(f"{os.getpid()}\n")
        self.f.flush()
        return self

    def __exit__(self, *exc):
        fcntl.flock(self.f, fcntl.LOCK_UN)
        self.f.close()


class hold_store_lock(hold_lock):
    """The lock a store's writer holds (`.writer.lock`)."""

    def __init__(self, directory: Path):
        self.path = Path(directory) / ".writer.lock"
