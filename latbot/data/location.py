"""Where an episode store lives: a local directory, or an fsspec URL (`s3://`, `gs://`, `file://`, `memory://`).

A local store is a `Path` and is read and written with the operating system's file API: atomic renames,
an fsynced append to the commit log, a `flock` writer lock, and the fast reader (latbot.data.fastread).
A URL store is a `str` (a `Path` would collapse `s3://bucket` to `s3:/bucket`) and goes through fsspec:
zarr's `FsspecStore` for the arrays, fsspec's file API for the commit log and the manifest. What changes on
object storage (no rename, no append, no lock) is said in `StoreDir` and docs/data.md ("Stores on object
storage").

Credentials and endpoints are fsspec's and the backend's own: nothing is passed by LatBot. For S3 (s3fs)
that is the AWS chain (`AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`, `AWS_PROFILE`, instance roles) and
`AWS_ENDPOINT_URL` for an S3-compatible server; any backend option can also be set with fsspec's config
(`FSSPEC_S3_ENDPOINT_URL=...`, or ~/.config/fsspec/conf.json).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from latbot.atomic import replace_file

URL_RE = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*://")
BACKENDS = {"s3": "s3fs", "s3a": "s3fs", "gs": "gcsfs", "gcs": "gcsfs", "az": "adlfs", "abfs": "adlfs"}


def is_url(path: Any) -> bool:
    """True for an fsspec URL (`scheme://...`); a local path (relative, absolute, `~`) is False."""
    return isinstance(path, str) and bool(URL_RE.match(path))


def store_location(path: str | Path) -> Path | str:
    """A store's location as LatBot keeps it: a URL string (without a trailing '/'), or a `Path`."""
    if is_url(path):
        scheme, rest = path.split("://", 1)
        return f"{scheme}://{rest.rstrip('/')}" if rest.strip("/") else path
    return Path(path)


def join(base: str | Path, *parts: str) -> Path | str:
    """`base / part / ...` for a path or a URL."""
    if is_url(base):
        return "/".join([str(base).rstrip("/"), *(p.strip("/") for p in parts)])
    return Path(base).joinpath(*parts)


class LocationError(OSError):
    """A URL whose filesystem cannot be used here (backend not installed, unknown scheme, bad options)."""


def filesystem(url: str) -> tuple[Any, str]:
    """(fsspec filesystem, path within it) of a URL; a missing backend says which package to install."""
    import fsspec

    scheme = url.split("://", 1)[0].lower()
    try:
        return fsspec.core.url_to_fs(url)
    except ImportError as e:
        package = BACKENDS.get(scheme, "the fsspec backend for this scheme")
        extra = " (pip install 'latbot[s3]')" if package == "s3fs" else ""
        raise LocationError(f"{url}: {scheme}:// needs {package}{extra}: {e}") from e
    except ValueError as e:  # fsspec: "Protocol not known"
        raise LocationError(f"{url}: {e}") from e


def _is_local_fs(fs: Any) -> bool:
    from fsspec.implementations.local import LocalFileSystem

    return isinstance(fs, LocalFileSystem)


class StoreDir:
    """The files of a store directory, local or at a URL, relative to its root.

    Local: pathlib and os (writes are temp file + fsync + rename; the log is appended with O_APPEND + fsync).
    URL: fsspec. A write is one `pipe` of the whole object, which object stores (S3, GCS) make atomic: a
    reader sees the old object or the new one, never part of one. There is no rename and no append on an
    object store, so `write_atomic` is a single PUT there (on a `file://` URL: temp file + rename)."""

    def __init__(self, location: str | Path):
        self.location = store_location(location)
        self.is_url = is_url(self.location)
        self._fs: Any = None
        self._root = ""

    def __str__(self) -> str:
        return str(self.location)

    @property
    def fs(self) -> Any:
        if self._fs is None:
            self._fs, self._root = filesystem(str(self.location))
        return self._fs

    def _path(self, rel: str) -> str:
        self.fs  # noqa: B018 (resolves the root)
        return f"{self._root.rstrip('/')}/{rel}" if rel else self._root

    def child(self, rel: str) -> Path | str:
        """The location of `rel` inside the store (for messages and for nested stores)."""
        return join(self.location, rel) if rel else self.location

    def refresh(self) -> None:
        """Forget cached listings (another process may have written since this filesystem listed the store)."""
        if self.is_url:
            self.fs.invalidate_cache(self._path(""))

    # -- queries ---------------------------------------------------------------------------------------------
    def exists(self, rel: str = "") -> bool:
        if not self.is_url:
            return (self.location / rel).exists() if rel else self.location.exists()
        return bool(self.fs.exists(self._path(rel)))

    def is_file(self, rel: str) -> bool:
        if not self.is_url:
            return (self.location / rel).is_file()
        return bool(self.fs.isfile(self._path(rel)))

    def size(self, rel: str) -> int | None:
        """Bytes of file `rel`, or None where there is no such file."""
        if not self.is_url:
            p = self.location / rel
            return p.stat().st_size if p.is_file() else None
        try:
            info = self.fs.info(self._path(rel))
        except FileNotFoundError:
            return None
        return int(info.get("size") or 0) if info.get("type") == "file" else None

    def is_dir(self) -> bool:
        """The store's root is a directory (on object storage: a prefix, which "exists" once it holds objects)."""
        if not self.is_url:
            return self.location.is_dir()
        return bool(self.fs.isdir(self._path("")))

    def names(self) -> list[str]:
        """The entries directly under the root ([] when there is none)."""
        if not self.is_url:
            return sorted(p.name for p in self.location.iterdir()) if self.location.is_dir() else []
        try:
            return sorted(p.rstrip("/").rsplit("/", 1)[-1] for p in self.fs.ls(self._path(""), detail=False))
        except FileNotFoundError:
            return []

    def has_block_files(self) -> bool:
        """True when any array of the store holds a chunk/shard file (a `c/` directory somewhere)."""
        if not self.is_url:
            return any(self.location.rglob("c"))
        root = self._path("").rstrip("/") + "/"
        return any("/c/" in "/" + p[len(root) :] for p in self.fs.find(root))

    # -- reads and writes ------------------------------------------------------------------------------------
    def read_bytes(self, rel: str) -> bytes:
        if not self.is_url:
            return (self.location / rel).read_bytes()
        return self.fs.cat_file(self._path(rel))

    def write_atomic(self, rel: str, data: bytes) -> None:
        """Replace file `rel` with `data` so that no reader ever sees a part of it."""
        if not self.is_url:
            replace_file(self.location / rel, data)
        elif _is_local_fs(self.fs):
            replace_file(Path(self._path(rel)), data)
        else:
            self.fs.pipe_file(self._path(rel), data)  # one PUT: atomic on object stores

    def mkdir(self) -> None:
        if not self.is_url:
            self.location.mkdir(parents=True, exist_ok=True)
        else:
            self.fs.makedirs(self._path(""), exist_ok=True)  # a no-op on object stores (no directories)

    def remove(self, rel: str) -> None:
        """Remove file or directory `rel` (recursively) where it exists."""
        if not self.is_url:
            import shutil

            p = self.location / rel
            if p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
            elif p.exists():
                p.unlink()
            return
        path = self._path(rel)
        if self.fs.exists(path):
            self.fs.rm(path, recursive=True)

    def remove_root_if_empty(self) -> None:
        if not self.is_url:
            try:
                self.location.rmdir()
            except OSError:
                pass  # something else is in there: leave it
        elif _is_local_fs(self.fs) and not self.names():
            self.fs.rmdir(self._path(""))

    def zarr_store(self, read_only: bool) -> Any:
        """What `zarr.open_group` takes: the directory (local) or a `zarr.storage.FsspecStore` (URL)."""
        if not self.is_url:
            return str(self.location)
        from zarr.storage import FsspecStore

        # a local filesystem (file://) does not create the parents of a file it writes unless asked
        options = {"auto_mkdir": True} if _is_local_fs(self.fs) else None
        return FsspecStore.from_url(str(self.location), storage_options=options, read_only=read_only)


def exists(location: str | Path) -> bool:
    """A file or directory exists at a path or URL (a URL that cannot be reached raises `OSError`)."""
    if not is_url(location):
        return Path(location).exists()
    d = StoreDir(location)
    return d.exists()


def glob(pattern: str) -> list[str]:
    """The URLs matching a URL pattern (`s3://bucket/fractal/shard-*`), sorted."""
    fs, path = filesystem(pattern)
    return sorted(fs.unstrip_protocol(p) for p in fs.glob(path))
