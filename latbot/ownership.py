"""Who may write where: every writer owns its destination and holds a lock on it.

Two rules that every command that writes (convert, gen-sim, eval, viz, train, study, quickstart) follows
before it touches anything:

- `claim(dest, kinds)`: the destination is new, an empty folder, or an artifact of one of `kinds` that
  LatBot wrote (its `latbot.json` says so). Anything else (a folder of someone's files, a store when a run
  is expected, a file) is refused with one line naming the folder and what it holds, and nothing is
  changed. A writer that fails cleans up only what it created itself.
- `writer_lock(dir, what)`: an advisory `fcntl.flock` on `dir/.latbot.lock`, held for the whole command, so
  a second writer of the same run or store stops at once with the holder's pid instead of racing it. The
  lock file is not part of the artifact (hashes and `verify` skip it); the kernel drops the lock when the
  holder exits, even after SIGKILL, so a stale lock file never blocks anyone.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from latbot.errors import LatBotError

LOCK_NAME = ".latbot.lock"
MANIFEST_NAME = "latbot.json"  # the same name as latbot.artifacts.MANIFEST_NAME (a test keeps them equal)


_VERIFY_ENV = "LATBOT_NO_VERIFY"


def verification_enabled() -> bool:
    """Whether artifacts' content hashes are checked when they are opened (on unless `latbot --no-verify`,
    which sets LATBOT_NO_VERIFY=1 so that torchrun's ranks and subprocesses skip them too)."""
    return os.environ.get(_VERIFY_ENV, "") in ("", "0")


def set_verification(enabled: bool) -> None:
    if enabled:
        os.environ.pop(_VERIFY_ENV, None)
    else:
        os.environ[_VERIFY_ENV] = "1"


class OwnershipError(LatBotError):
    """A destination LatBot did not create, or one that another process is writing."""


def manifest_kind(directory: Path) -> str | None:
    """The `kind` a folder's `latbot.json` declares, without validating the rest; None if there is none."""
    path = Path(directory) / MANIFEST_NAME
    if not path.is_file() or path.is_symlink():
        return None
    try:
        if path.stat().st_size > 64 << 20:
            return None
        kind = json.loads(path.read_text(encoding="utf-8")).get("kind")
    except (OSError, ValueError, AttributeError):
        return None
    return kind if isinstance(kind, str) else None


def claim(dest: str | Path, kinds: Iterable[str], *, option: str = "--out", fix: str = "choose another --out") -> bool:
    """Check that `dest` may be written by a command making an artifact of one of `kinds`. Returns True when
    it exists already as such an artifact (the command continues or rewrites its own), False when it is new
    or empty. Never changes anything."""
    dest = Path(dest)
    kinds = set(kinds)
    if dest.is_symlink():
        raise OwnershipError(f"{option} {dest}: is a symbolic link; {fix}")
    if not dest.exists():
        return False
    if not dest.is_dir():
        raise OwnershipError(f"{option} {dest}: exists and is not a directory; {fix}")
    names = [p.name for p in dest.iterdir() if p.name != LOCK_NAME]
    if not names:
        return False
    kind = manifest_kind(dest)
    if kind is None:
        shown = ", ".join(sorted(names)[:3]) + (", …" if len(names) > 3 else "")
        raise OwnershipError(
            f"{option} {dest}: holds files LatBot did not write ({shown}) and no {MANIFEST_NAME}; "
            f"nothing was changed; {fix}"
        )
    if kind not in kinds:
        wanted = f"not a '{' or '.join(sorted(kinds))}'" if kinds else "and is not empty"
        raise OwnershipError(f"{option} {dest}: holds a '{kind}' artifact, {wanted}; nothing was changed; {fix}")
    return True


def enclosing_artifact(path: str | Path) -> tuple[Path, str] | None:
    """(folder, kind) of the LatBot artifact that `path` lies in or is (a store, a run, ...), or None. Outputs
    of `viz`, `grounding-analysis` and the like never go there: they would change what its hash covers."""
    here = Path(path).absolute()
    for folder in [here, *here.parents]:
        kind = manifest_kind(folder)
        if kind is not None and kind != "workspace":  # a workspace holds artifacts and other outputs
            return folder, kind
    return None


def check_output_file(out: str | Path, suffix: str, option: str = "--out") -> Path:
    """An output file a command may write: ends with `suffix`, is not a folder or a link, and lies in no
    LatBot artifact. Returns it; refuses with an `OwnershipError` otherwise (nothing is touched)."""
    out = Path(out)
    if out.suffix != suffix:
        raise OwnershipError(f"{option} {out}: expected a {suffix} file name (e.g. {out.stem or 'out'}{suffix})")
    if out.is_symlink() or (out.exists() and not out.is_file()):
        raise OwnershipError(f"{option} {out}: exists and is not a regular file; choose another {option}")
    inside = enclosing_artifact(out.parent)
    if inside is not None:
        raise OwnershipError(
            f"{option} {out}: lies inside the '{inside[1]}' artifact {inside[0]}; writing there would change it; "
            f"choose a path outside it"
        )
    return out


_HELD: set[int] = set()  # lock file descriptors this process holds


def _close_in_child() -> None:
    for fd in list(_HELD):
        try:
            os.close(fd)
        except OSError:
            pass
    _HELD.clear()


os.register_at_fork(after_in_child=_close_in_child)


def held(fd: int, holding: bool = True) -> None:
    """Record (or forget) a lock's descriptor. A forked child (a DataLoader worker, a pool process) closes the
    ones it inherited, so the lock lives exactly as long as the process that took it: a writer killed with
    SIGKILL releases it at once even while its children are still winding down."""
    if holding:
        _HELD.add(fd)
    else:
        _HELD.discard(fd)


def take_lock(path: Path, what: str, error: type[LatBotError] = OwnershipError) -> int:
    """Lock the file `path` (exclusive, non-blocking, created if missing, never through a link), write this
    pid into it and return its descriptor; a held lock is `error` naming the holder's pid. Release with
    `release_lock`. `what` names the artifact in the message (e.g. "run", "store")."""
    import fcntl

    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK, 0o644)
    except OSError as e:
        raise error(f"{path}: cannot be used as a lock file ({e.strerror}); it is not LatBot's") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 64, 0).decode("ascii", "replace").strip() or "unknown"
        os.close(fd)
        raise error(
            f"{path.parent}: another LatBot process (pid {holder}) is writing this {what}; wait for it to "
            f"finish or stop it, then run the command again"
        ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    held(fd)
    return fd


def release_lock(fd: int) -> None:
    import fcntl

    held(fd, False)
    fcntl.flock(fd, fcntl.LOCK_UN)
    os.close(fd)


@contextmanager
def writer_lock(directory: str | Path, what: str) -> Iterator[None]:
    """Hold `directory/.latbot.lock` exclusively while the block runs; `what` names the artifact in the
    error a second writer gets (e.g. "run", "store")."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    fd = take_lock(directory / LOCK_NAME, what)
    try:
        yield
    finally:
        release_lock(fd)


def held_by_other(directory: str | Path, name: str = LOCK_NAME) -> int | None:
    """The pid of another process holding `directory`'s writer lock (the lock file `name`), or None (for
    readers that want to skip or warn); -1 when the holder wrote no pid."""
    import fcntl

    path = Path(directory) / name
    if path.is_symlink() or not path.is_file():
        return None
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            text = os.pread(fd, 64, 0).decode("ascii", "replace").strip()
            return int(text) if text.isdigit() else -1
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)
