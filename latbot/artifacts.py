"""Artifact manifests: the `latbot.json` in every output directory.

Every artifact LatBot writes (an episode store, a LAM / distilled / finetuned checkpoint, a teacher
cache, an evaluation, a report) is a directory with a manifest naming its kind and format version, the
fully resolved recipe that made it, its parent artifacts and a content hash. Stages read their inputs
through `read_manifest(dir, kind=...)`, which refuses the wrong kind or an unsupported format version
with a message that says what was expected.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from latbot import __version__
from latbot.atomic import replace_file
from latbot.errors import ArtifactError

MANIFEST_NAME = "latbot.json"
MANIFEST_LIMIT = 64 << 20  # bytes: a manifest holds a recipe and statistics, never this much

# The format version each kind of artifact other than a training run is written with. Bump when the
# on-disk layout changes incompatibly. Training runs are one kind per stage; each stage declares its
# version (a stage plugin's `format_version`), see `format_version`.
FORMAT_VERSIONS: dict[str, int] = {
    "episode_store": 1,
    "teacher_cache": 1,
    "eval": 1,
    "report": 1,
    "workspace": 1,  # the --out of a quickstart or a study: every artifact below it is LatBot's
}


def format_version(kind: str) -> int | None:
    """The format version `kind` is written with: an artifact kind, or a registered stage's runs."""
    if kind in FORMAT_VERSIONS:
        return FORMAT_VERSIONS[kind]
    from latbot import registry

    return registry.get("stages", kind).format_version if kind in registry.stage_names() else None


def known_kinds() -> list[str]:
    from latbot import registry

    return [*FORMAT_VERSIONS, *registry.stage_names()]


class ParentRef(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: str
    path: str
    content_hash: str


class Manifest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: str
    format_version: int
    latbot_version: str = __version__
    created: str = Field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    status: Literal["running", "complete", "failed"] = "complete"
    recipe: dict[str, Any] | None = None
    parents: list[ParentRef] = Field(default_factory=list)
    content_hash: str
    extra: dict[str, Any] = Field(default_factory=dict)


def hash_directory(directory: str | Path, exclude: Iterable[str] = (MANIFEST_NAME,)) -> str:
    """sha256 over every file's relative path and bytes, in sorted order (the manifest and the writer's lock
    file excluded)."""
    from latbot.ownership import LOCK_NAME

    root = Path(directory)
    skip = {*exclude, LOCK_NAME}
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = path.relative_to(root).as_posix()
        if rel in skip:
            continue
        digest.update(rel.encode() + b"\0")
        with path.open("rb") as f:
            while block := f.read(1 << 20):
                digest.update(block)
        digest.update(b"\0")
    return "sha256:" + digest.hexdigest()


def write_manifest(
    directory: str | Path,
    kind: str,
    *,
    recipe: dict[str, Any] | None = None,
    parents: Iterable[ParentRef] = (),
    extra: dict[str, Any] | None = None,
    content_hash: str | None = None,
    status: str = "complete",
) -> Manifest:
    """Write `latbot.json` into `directory` atomically. The hash is computed unless one is given
    (huge artifacts such as episode stores supply their own, cheaper, hash). `directory` may be an fsspec
    URL (an episode store on object storage; the hash must then be given): one PUT, atomic there."""
    version = format_version(kind)
    if version is None:
        raise ValueError(f"unknown artifact kind {kind!r}; known: {known_kinds()}")
    if _is_url(directory):
        if content_hash is None:
            raise ValueError(f"{directory}: give the content hash of an artifact at a URL")
        from latbot.data.location import StoreDir

        manifest = Manifest(
            kind=kind, format_version=version, status=status, recipe=recipe, parents=list(parents),
            content_hash=content_hash, extra=extra or {},
        )  # fmt: skip
        StoreDir(directory).write_atomic(MANIFEST_NAME, (manifest.model_dump_json(indent=2) + "\n").encode())
        return manifest
    root = Path(directory)
    root.mkdir(parents=True, exist_ok=True)
    manifest = Manifest(
        kind=kind,
        format_version=version,
        status=status,
        recipe=recipe,
        parents=list(parents),
        content_hash=content_hash if content_hash is not None else hash_directory(root),
        extra=extra or {},
    )
    replace_file(root / MANIFEST_NAME, manifest.model_dump_json(indent=2) + "\n")
    return manifest


def read_manifest(directory: str | Path, kind: str | Iterable[str] | None = None) -> Manifest:
    """Read and check `directory/latbot.json`; `kind` restricts which artifact kinds are accepted. `directory`
    may be an fsspec URL (an episode store on object storage)."""
    raw, root, path = _manifest_bytes(directory)
    try:
        manifest = Manifest.model_validate(json.loads(raw.decode("utf-8")))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ArtifactError(f"{path}: not valid JSON ({e}); the artifact is damaged, re-create it") from e
    except ValidationError as e:
        first = e.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or "<manifest>"
        raise ArtifactError(f"{path}: {field}: {first['msg']}; the manifest is damaged, re-create it") from e
    wanted = {kind} if isinstance(kind, str) else set(kind) if kind is not None else None
    if wanted is not None and manifest.kind not in wanted:
        expected = " or ".join(sorted(wanted))
        raise ArtifactError(f"{root}: is a '{manifest.kind}' artifact, but a '{expected}' artifact is expected here")
    supported = format_version(manifest.kind)
    if supported is None:
        raise ArtifactError(f"{path}: unknown artifact kind '{manifest.kind}' (known: {', '.join(known_kinds())})")
    if manifest.format_version != supported:
        newer = manifest.format_version > supported
        fix = "upgrade LatBot to read it" if newer else "re-create it with this version of LatBot"
        raise ArtifactError(
            f"{root}: '{manifest.kind}' format version {manifest.format_version}, but this LatBot "
            f"({__version__}) reads version {supported}; {fix}"
        )
    return manifest


def _is_url(directory: str | Path) -> bool:
    from latbot.data.location import is_url

    return is_url(directory)


def _manifest_bytes(directory: str | Path) -> tuple[bytes, Any, Any]:
    """(the manifest's bytes, the directory, the manifest's location), or an `ArtifactError` saying why not."""
    if _is_url(directory):
        from latbot.data.location import StoreDir

        d = StoreDir(directory)
        try:
            raw = d.read_bytes(MANIFEST_NAME)
        except FileNotFoundError:
            raise ArtifactError(f"{d}: no {MANIFEST_NAME} here, so this is not a LatBot artifact directory") from None
        except OSError as e:
            raise ArtifactError(f"{d}: cannot read {MANIFEST_NAME} ({type(e).__name__}: {e})") from e
        return raw, d.location, d.child(MANIFEST_NAME)
    root = Path(directory)
    path = root / MANIFEST_NAME
    if not root.is_dir():
        raise ArtifactError(f"{root}: not a directory (expected a LatBot artifact directory)")
    if not path.is_file():  # a FIFO or a device is not a file: never opened (a read could block forever)
        raise ArtifactError(f"{root}: no {MANIFEST_NAME} here, so this is not a LatBot artifact directory")
    with path.open("rb") as f:
        raw = f.read(MANIFEST_LIMIT + 1)
    if len(raw) > MANIFEST_LIMIT:
        raise ArtifactError(f"{path}: larger than {MANIFEST_LIMIT >> 20} MiB, not a manifest LatBot wrote")
    return raw, root, path


def verify_manifest(directory: str | Path, kind: str | Iterable[str] | None = None) -> Manifest:
    """`read_manifest` plus a check that the directory's content still matches the recorded hash."""
    manifest = read_manifest(directory, kind)
    actual = hash_directory(directory)
    if actual != manifest.content_hash:
        raise ArtifactError(
            f"{directory}: content changed since it was written (hash {actual[:19]}…, manifest says "
            f"{manifest.content_hash[:19]}…); re-create the artifact"
        )
    return manifest


def claim_workspace(out: str | Path, made_by: str, known: Iterable[str]) -> None:
    """Claim `out` for a quickstart or a study (which lay many artifacts out below it and rewrite them): new,
    empty, one it made before (its `latbot.json` says "workspace"), or, from before workspaces had a manifest,
    one holding nothing but the names it writes (`known`). Then mark it as a workspace."""
    from latbot.ownership import LOCK_NAME, OwnershipError, claim, manifest_kind

    out = Path(out)
    try:
        claim(out, {"workspace"}, fix=f"choose another --out for the {made_by}")
    except OwnershipError:
        names = {p.name for p in out.iterdir() if p.name != LOCK_NAME}
        if manifest_kind(out) is not None or not names <= set(known):
            raise
    if manifest_kind(out) != "workspace":
        out.mkdir(parents=True, exist_ok=True)
        write_manifest(out, "workspace", content_hash="", extra={"made_by": made_by})


def parent_ref(directory: str | Path, kind: str | Iterable[str] | None = None) -> ParentRef:
    """A reference to an existing artifact, for the `parents` of a new one."""
    manifest = read_manifest(directory, kind)
    where = str(directory) if _is_url(directory) else str(Path(directory).resolve())
    return ParentRef(kind=manifest.kind, path=where, content_hash=manifest.content_hash)
