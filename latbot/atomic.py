"""The one way LatBot replaces a file: write a temporary file beside it, fsync, rename over it. A reader
sees the old content or the new, never a part; a writer killed mid-way leaves the old file and, at worst,
a `.NAME.*.tmp` beside it."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def replace_file(path: str | Path, data: bytes | str) -> None:
    """Replace `path` with `data` (text is written as UTF-8) atomically."""
    path = Path(path)
    raw = data.encode("utf-8") if isinstance(data, str) else data
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(raw)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
