"""A finished store's manifest vouches for its content: the commit log (`content_hash`) and the Zarr metadata
of every array (`extra.metadata_hash`: shapes, chunking, codecs, the group's attributes with the
normalisation statistics). Opening a local store to read checks both against the files, so an edited
`frames/<cam>/zarr.json` (which would crop every episode's frames) or a swapped log is refused instead of
read. `latbot --no-verify` skips the check; stores at URLs are not checked (it would read every array's
metadata over the network on each open)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from latbot.errors import LatBotError

_checked: dict[tuple, None] = {}  # (path, stat of the log, manifest and metadata files) already verified here


def scan(root: Path) -> tuple[list[Path], list[Path]]:
    """One walk of the store (links to folders are not followed): (entries that are neither regular files nor
    folders — FIFOs, sockets, devices, or links to them, which a read would hang on —, every `zarr.json`, the
    group's and each array's, in a fixed order)."""
    import stat

    special: list[Path] = []
    metadata: list[Path] = []
    stack = [Path(root)]
    while stack:
        try:
            entries = list(os.scandir(stack.pop()))
        except OSError:
            continue
        for entry in entries:
            try:
                mode = os.stat(entry.path).st_mode  # follows a link: what a read would open
            except OSError:
                continue  # a dangling link reads as missing, which the store reports itself
            if stat.S_ISDIR(mode):
                if not entry.is_symlink():
                    stack.append(Path(entry.path))
            elif not stat.S_ISREG(mode):
                special.append(Path(entry.path))
            elif entry.name == "zarr.json":
                metadata.append(Path(entry.path))
    return sorted(special), sorted(metadata)


def metadata_digest(root: Path, files: list[Path] | None = None) -> str:
    """sha256 over every `zarr.json` of the store (`files`, when the caller has scanned already)."""
    digest = hashlib.sha256()
    for path in scan(root)[1] if files is None else files:
        digest.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return "sha256:" + digest.hexdigest()


def log_digest(root: Path, log_name: str) -> str:
    return "sha256:" + hashlib.sha256((Path(root) / log_name).read_bytes()).hexdigest()


def refuse_special(special: list[Path], error: type[LatBotError]) -> None:
    if special:
        raise error(
            f"{special[0]}: not a regular file (a FIFO, socket or device, or a link to one) inside the store; "
            "reading it would hang; the store is damaged or was tampered with: re-convert it"
        )


def check_store(root: Path, log_name: str, error: type[LatBotError], writer_lock: str) -> None:
    """Refuse (`error`) a store whose log or metadata differ from what its manifest recorded. A store without
    a manifest (being written for the first time) or one a writer holds open is not checked."""
    from latbot.ownership import MANIFEST_NAME, verification_enabled

    root = Path(root)
    special, metadata = scan(root)
    refuse_special(special, error)
    manifest_path = root / MANIFEST_NAME
    if not verification_enabled() or not manifest_path.is_file() or not (root / log_name).is_file():
        return  # no manifest (being written) or no log (opening the store says what is missing)
    files = [manifest_path, root / log_name, *metadata]
    key = (str(root.resolve()), *((str(p), p.stat().st_mtime_ns, p.stat().st_size) for p in files if p.exists()))
    if key in _checked:
        return
    if _writer_active(root / writer_lock):
        return
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        recorded_log, recorded_meta = manifest["content_hash"], manifest.get("extra", {}).get("metadata_hash")
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise error(f"{manifest_path}: damaged ({type(e).__name__}); re-convert the store") from None
    fix = "re-convert it, or read it anyway with `latbot --no-verify ...`"
    try:
        log_hash, meta_hash = log_digest(root, log_name), metadata_digest(root, metadata)
    except OSError as e:
        raise error(f"{root}: cannot read the store to check it ({e.strerror or e}); {fix}") from None
    if log_hash != recorded_log:
        raise error(
            f"{root / log_name}: the commit log differs from the hash in {MANIFEST_NAME} (edited, swapped, or an "
            f"unfinished append); finish the conversion that was appending (rerun it), {fix}"
        )
    if recorded_meta is not None and meta_hash != recorded_meta:
        raise error(
            f"{root}: the Zarr metadata (zarr.json of the group or an array: shapes, chunks, codecs, statistics) "
            f"differs from the hash in {MANIFEST_NAME}; it was edited after the store was written; {fix}"
        )
    _checked[key] = None


def _writer_active(lock: Path) -> bool:
    from latbot.ownership import held_by_other

    return held_by_other(lock.parent, lock.name) is not None
