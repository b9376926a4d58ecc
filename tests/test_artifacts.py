"""Artifact manifests: written atomically, read back with kind / format-version checks."""

from __future__ import annotations

import json

import pytest

from latbot.artifacts import (
    MANIFEST_NAME,
    format_version,
    hash_directory,
    parent_ref,
    read_manifest,
    verify_manifest,
    write_manifest,
)
from latbot.errors import ArtifactError


@pytest.fixture
def artifact(tmp_path):
    d = tmp_path / "lam_run"
    (d / "weights").mkdir(parents=True)
    (d / "weights/model.safetensors").write_bytes(b"\x00" * 100)
    (d / "stats.json").write_text("{}")
    return d


def test_round_trip_with_recipe_and_parents(artifact, tmp_path):
    store = tmp_path / "store"
    write_manifest(store, "episode_store", content_hash="sha256:given")
    m = write_manifest(
        artifact, "lam", recipe={"stage": "lam"}, parents=[parent_ref(store, "episode_store")], extra={"steps": 10}
    )
    back = read_manifest(artifact, kind="lam")
    assert back == m
    assert back.format_version == format_version("lam") and back.recipe == {"stage": "lam"}
    assert back.parents[0].kind == "episode_store" and back.parents[0].content_hash == "sha256:given"
    assert not list(artifact.glob(".latbot.json.*"))  # no temp file left behind


def test_hash_covers_content_and_names_but_not_the_manifest(artifact):
    h = hash_directory(artifact)
    write_manifest(artifact, "lam")
    assert hash_directory(artifact) == h
    verify_manifest(artifact)
    (artifact / "stats.json").write_text('{"changed": 1}')
    assert hash_directory(artifact) != h
    with pytest.raises(ArtifactError, match="content changed"):
        verify_manifest(artifact)
    (artifact / "stats.json").write_text("{}")
    (artifact / "stats.json").rename(artifact / "stats2.json")
    assert hash_directory(artifact) != h


def test_wrong_kind_is_refused_clearly(artifact):
    write_manifest(artifact, "lam")
    with pytest.raises(ArtifactError, match=r"is a 'lam' artifact, but a 'distill or finetune' artifact is expected"):
        read_manifest(artifact, kind=["finetune", "distill"])


@pytest.mark.parametrize(("version", "hint"), [(99, "upgrade LatBot"), (0, "re-create it")])
def test_other_format_versions_are_refused_with_the_fix(artifact, version, hint):
    write_manifest(artifact, "lam")
    data = json.loads((artifact / MANIFEST_NAME).read_text())
    data["format_version"] = version
    (artifact / MANIFEST_NAME).write_text(json.dumps(data))
    with pytest.raises(ArtifactError, match=f"format version {version}.*{hint}"):
        read_manifest(artifact)


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("{not json", "not valid JSON"),
        ('{"kind": "lam"}', "format_version: Field required"),
        ('{"kind": "lam", "format_version": 1, "content_hash": "x", "bogus": 1}', "bogus"),
    ],
)
def test_damaged_manifests(artifact, content, expected):
    (artifact / MANIFEST_NAME).write_text(content)
    with pytest.raises(ArtifactError, match=expected):
        read_manifest(artifact)


def test_missing_manifest_or_directory(tmp_path):
    with pytest.raises(ArtifactError, match="not a LatBot artifact directory"):
        read_manifest(tmp_path)
    with pytest.raises(ArtifactError, match="not a directory"):
        read_manifest(tmp_path / "nope")
