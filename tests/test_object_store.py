"""Episode stores on object storage: fsspec URLs through the same store, loader, CLI and recipes.

`memory://` and `file://` exercise the fsspec path without a server; the S3 tests run against a real
S3-compatible HTTP server (moto, in a thread on 127.0.0.1 at a random port) through s3fs, the way a user's
cluster reads a bucket: convert → verify → stats → train the LAM stage a few steps reading from the bucket."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import uuid

import numpy as np
import pytest
from typer.testing import CliRunner

from latbot.cli import app
from latbot.data.convert import finalize
from latbot.data.store import LOG_NAME, EpisodeStore, StoreError
from latbot.data.verify import verify_store
from latbot.testing.samples import make_libero_hdf5
from tests.conftest import REPO
from tests.test_store import episode

runner = CliRunner()


def _fs(url):
    import fsspec

    return fsspec.core.url_to_fs(url)


@pytest.fixture(params=["memory", "file"])
def url(request, tmp_path):
    if request.param == "memory":
        yield f"memory://latbot-test-{uuid.uuid4().hex[:8]}/stores/a"
        _fs("memory://x")[0].store.clear()
    else:
        yield f"file://{tmp_path}/stores/a"


def _write(url, n=5, close=True):
    s = EpisodeStore.create(url, cameras=["cam"], image_size=(16, 16), chunk_frames=4, shard_frames=16)
    for i in range(n):
        s.append(episode(f"ep{i}", steps=10 + i, seed=i))
    if close:
        finalize(s)
        s.close()
    return s


def test_a_store_at_a_url_reads_what_was_written_and_verifies(url):
    _write(url)
    with EpisodeStore.open(url) as s:
        assert s.path == url and s.num_episodes == 5 and s.stats is not None
        assert s._reader("frames/cam") is None  # a URL store reads through zarr, not the local pread reader
        for i in range(5):
            ref = episode(f"ep{i}", steps=10 + i, seed=i)
            got = s.read(i, np.array([0, 3, 9]))
            np.testing.assert_array_equal(got["frames/cam"], ref.frames["cam"][[0, 3, 9]])
            np.testing.assert_array_equal(got["actions"], ref.trajectory.actions[[0, 3, 9]])
    assert verify_store(url) == []
    from latbot.artifacts import parent_ref, read_manifest

    assert read_manifest(url, "episode_store").extra["episodes"] == 5
    assert parent_ref(url, "episode_store").path == url  # a URL stays a URL (not resolved as a local path)


def test_commits_are_grouped_and_an_interrupted_writer_loses_only_uncommitted_episodes(url):
    s = EpisodeStore.create(url, cameras=["cam"], image_size=(16, 16), chunk_frames=4, shard_frames=16)
    fs, root = _fs(url)
    for i in range(41):
        s.append(episode(f"ep{i}", steps=4, seed=i))
    logged = fs.cat_file(f"{root}/{LOG_NAME}").count(b"\n")
    assert logged == 40  # one PUT per episode up to 32 committed, then one per committed/16 (= 2) episodes
    del s  # "killed": no close, so the last episodes were never committed
    with EpisodeStore.open(url, mode="a") as again:  # resumes after the last commit, arrays truncated to it
        assert again.num_episodes == logged and again.array("actions").shape[0] == 4 * logged
        again.append(episode("late", steps=4, seed=99))
        finalize(again)  # what a rerun of `latbot data convert` does when it is done
    with EpisodeStore.open(url) as s:  # close() committed the appended episode
        assert s.num_episodes == logged + 1 and s.records[-1].key == "late"
    assert verify_store(url) == []


def test_damage_on_object_storage_is_reported_not_read_as_fill_values(url):
    _write(url)
    fs, root = _fs(url)
    shard = f"{root}/frames/cam/c/1/0/0/0"  # frames 16:32
    fs.rm(shard)
    with EpisodeStore.open(url) as s, pytest.raises(StoreError, match=r"frames 16:32 is missing"):
        s.read(1, slice(None))
    problems = [str(p) for p in verify_store(url)]
    assert any("frames/cam" in p and "16:32 is missing" in p for p in problems)
    actions = f"{root}/actions/c/0/0"
    raw = bytearray(fs.cat_file(actions))
    raw[len(raw) // 2] ^= 0xFF
    fs.pipe_file(actions, bytes(raw))
    with EpisodeStore.open(url) as s, pytest.raises(StoreError, match="cannot be read"):
        s.read_rows("actions", 0, 4)


def test_recipe_store_urls_stay_urls_and_local_paths_stay_relative_to_the_recipe(tmp_path):
    from latbot.recipes import load_recipe
    from latbot.recipes.schema import DataSource

    assert DataSource(store="s3://bucket/stores/x/").store == "s3://bucket/stores/x"
    assert DataSource(store="gs://b/x").model_dump(mode="json")["store"] == "gs://b/x"
    recipe = tmp_path / "recipes/r.yaml"
    recipe.parent.mkdir()
    recipe.write_text(
        f"base: {REPO / 'recipes/tiny/lam.yaml'}\n"
        "data:\n  sources:\n    - {store: s3://bucket/stores/a}\n    - {store: local/b}\n"
    )
    r = load_recipe(recipe)
    assert r.data.sources[0].store == "s3://bucket/stores/a"
    assert r.data.sources[1].store == tmp_path / "recipes/local/b"
    mixture = tmp_path / "recipes/mix.yaml"
    mixture.write_text("name: m\nroot: s3://bucket/stores\nsources:\n  - {name: a, store: fractal/shard-*}\n")
    from latbot.recipes.mixture import load_mixture

    assert load_mixture(mixture).sources[0].store == "s3://bucket/stores/fractal/shard-*"


def test_validate_says_when_a_url_store_cannot_be_checked():
    from latbot.data.mixture import check_stores

    assert check_stores("memory://nobody/nothing") == "does not exist"
    problem = check_stores("gs://bucket/store")  # gcsfs is not installed here
    assert problem.startswith("cannot be checked") and "gcsfs" in problem


# -- a real S3-compatible server ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def s3():
    """A moto S3 server on 127.0.0.1 (random port) for this module; AWS_ENDPOINT_URL points boto at it, as a
    user points LatBot at MinIO/Ceph/R2. Returns a fresh bucket's URL."""
    pytest.importorskip("s3fs")
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    env = {
        "AWS_ENDPOINT_URL": f"http://{host}:{port}",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    saved = {k: os.environ.get(k) for k in [*env, "AWS_PROFILE"]}
    os.environ.update(env)
    os.environ.pop("AWS_PROFILE", None)
    import s3fs

    s3fs.S3FileSystem.clear_instance_cache()
    try:
        fs = s3fs.S3FileSystem()
        fs.mkdir("latbot-test")
        yield "s3://latbot-test"
    finally:
        s3fs.S3FileSystem.clear_instance_cache()
        server.stop()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def test_round_trip_on_s3_convert_verify_stats_train(s3, tmp_path):
    src = make_libero_hdf5(tmp_path / "src/KITCHEN_SCENE1_put_the_bowl_demo.hdf5", demos=4, steps=14, size=32)
    store = f"{s3}/stores/libero"
    done = runner.invoke(app, ["data", "convert", str(src), "--format", "libero_hdf5", "--out", store,
                               "--image-size", "32", "--camera", "agentview"])  # fmt: skip
    assert done.exit_code == 0, done.output
    assert "4 episode(s) added" in done.stdout
    again = runner.invoke(app, ["data", "convert", str(src), "--format", "libero_hdf5", "--out", store,
                                "--image-size", "32", "--camera", "agentview"])  # fmt: skip
    assert again.exit_code == 0 and "0 episode(s) added, 4 already present" in again.stdout  # resumes
    checked = runner.invoke(app, ["data", "verify", store])
    assert checked.exit_code == 0 and checked.stdout.strip().endswith(f"ok: {store}")
    stats = runner.invoke(app, ["data", "stats", store])
    assert stats.exit_code == 0 and "statistics recomputed over 56 frames" in stats.stdout
    info = runner.invoke(app, ["data", "info", store, "--json"])
    assert info.exit_code == 0 and json.loads(info.stdout)["path"] == store
    ok = runner.invoke(app, ["recipe", "validate", str(REPO / "recipes/tiny/lam.yaml"), "--check-paths",
                             "--set", f"data.sources=[{{store: {store}}}]"])  # fmt: skip
    assert ok.exit_code == 0, ok.output
    missing = runner.invoke(app, ["recipe", "validate", str(REPO / "recipes/tiny/lam.yaml"), "--check-paths",
                                  "--set", f"data.sources=[{{store: {s3}/stores/nope}}]"])  # fmt: skip
    assert missing.exit_code == 2 and f"'{s3}/stores/nope' does not exist" in missing.stderr

    sets = [
        f"data.sources=[{{store: {store}}}]", "train.steps=2", "train.checkpoint_every=2", f"log.out_dir={tmp_path}",
        "log.run_name=lam", "data.num_workers=1", "log.progress=false", "log.tensorboard=false",
        "train.micro_batch_size=4", "train.global_batch_size=4",
    ]  # fmt: skip
    cmd = [sys.executable, "-m", "latbot", "train", str(REPO / "recipes/tiny/lam.yaml")]
    for s in sets:
        cmd += ["--set", s]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # AWS_ENDPOINT_URL and the keys reach the trainer's workers
    trained = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=180)
    assert trained.returncode == 0, trained.stderr[-3000:]
    manifest = json.loads((tmp_path / "lam/latbot.json").read_text())
    assert manifest["parents"][0] == {**manifest["parents"][0], "kind": "episode_store", "path": store}
    assert manifest["recipe"]["data"]["sources"][0]["store"] == store
    assert len((tmp_path / "lam/metrics.jsonl").read_text().splitlines()) >= 1
