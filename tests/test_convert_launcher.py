"""`latbot data convert --shards N --launcher local`: a conversion as N shard jobs (real submitit local executor,
real subprocesses) equals the local conversion, episode for episode, read back through the shard set; a rerun
resubmits only the shard whose store is missing; a mixture file converts each source into its own store set."""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict

import numpy as np
import pytest
from typer.testing import CliRunner

from latbot.artifacts import read_manifest
from latbot.cli import app
from latbot.cluster.convert import LIST_NAME, set_folder
from latbot.data.clips import K_EPISODE
from latbot.data.convert import natural_key, shard_of
from latbot.data.mixture import build_mixture, resolve_stores
from latbot.data.store import EpisodeStore
from latbot.recipes.schema import DataSource
from latbot.testing.samples import make_egodex, make_libero_hdf5

runner = CliRunner()


def cli(*args):
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result.output


def episodes(stores) -> list[tuple]:
    """Every episode of `stores` (one store, or a set) in the natural order of its source key: the record's
    fields but its position, and every array."""
    found = []
    for path in stores:
        with EpisodeStore.open(path) as store:
            names = [n for n in ("native_actions", "native_states", "frame_motion") if store.has_array(n)]
            for r in store.records:
                data = store.read(r.index, slice(None))
                data |= {n: store.read_steps(n, r.index, slice(None)) for n in names}
                fields = {k: v for k, v in asdict(r).items() if k not in ("index", "offset")}
                found.append((r.key, fields, [m.tobytes() for m in r.masks()], data))
    return sorted(found, key=lambda e: natural_key(e[0]))


def assert_same(got: list[tuple], want: list[tuple]) -> None:
    assert [e[0] for e in got] == [e[0] for e in want]
    for (key, fields, masks, data), (_, want_fields, want_masks, want_data) in zip(got, want, strict=True):
        assert fields == want_fields and masks == want_masks, key
        assert sorted(data) == sorted(want_data), key
        for name in data:
            np.testing.assert_array_equal(data[name], want_data[name], err_msg=f"{key}: {name}")


def assert_same_clips(sharded, single, stride: int) -> None:
    many, _ = build_mixture([DataSource(store=sharded, frame_stride=stride)], num_frames=3)
    one, _ = build_mixture([DataSource(store=single, frame_stride=stride)], num_frames=3)
    assert len(many) == len(one) > 0
    for i in range(len(one)):
        a, b = many[i], one[i]
        assert set(a) == set(b)
        for k in set(a) - {K_EPISODE}:  # the episode's index inside its own store: the shard's, not the single's
            if hasattr(a[k], "shape"):
                np.testing.assert_array_equal(np.asarray(a[k]), np.asarray(b[k]))
            else:
                assert a[k] == b[k]


def test_three_shard_jobs_equal_the_local_conversion_and_a_rerun_resubmits_only_the_missing_shard(tmp_path):
    src = make_libero_hdf5(tmp_path / "src/KITCHEN_SCENE1_put_the_bowl_demo.hdf5", demos=12, steps=6, size=16)
    options = ("--format", "libero_hdf5", "--image-size", 8)
    cli("data", "convert", src, *options, "-o", tmp_path / "single")
    out = tmp_path / "sharded"
    sharded = ("data", "convert", src, *options, "-o", out, "--shards", 3, "--launcher", "local", "--parallelism", 3)

    text = cli(*sharded)
    assert "convert: 3 job(s) to local" in text and "12 episode(s), 12 added now" in text, text
    assert f"jobs and logs: {out / 'jobs'}" in text
    stores = [out / f"shard-{i:03d}" for i in range(3)]
    assert resolve_stores(out / LIST_NAME) == stores == resolve_stores(str(out / "shard-*"))
    single = episodes([tmp_path / "single"])
    assert len(single) == 12 and single[10][0].endswith("demo_10")  # natural order: demo_2 < demo_10
    assert_same(episodes(resolve_stores(out / LIST_NAME)), single)
    for i, store in enumerate(stores):  # each job wrote its own shard, and every shard holds some episodes
        keys = [e[0] for e in episodes([store])]
        assert keys and all(shard_of(k, 3) == i for k in keys)
    assert_same_clips(out / LIST_NAME, tmp_path / "single", stride=2)
    record = json.loads((out / "jobs/jobs.json").read_text())
    assert sorted(record) == ["shard-000", "shard-001", "shard-002"]
    assert {e["state"] for e in record.values()} == {"COMPLETED"} and all(e["kind"] == "local" for e in record.values())
    assert all(str(out / "jobs/logs") in e["stderr"] for e in record.values())

    text = cli(*sharded)  # everything complete: nothing is submitted
    assert "job(s) to local" not in text and "3 job(s) were complete already" in text, text
    assert json.loads((out / "jobs/jobs.json").read_text()) == record

    shutil.rmtree(stores[1])  # one shard lost: only it is submitted again
    text = cli(*sharded)
    assert "convert: 1 job(s) to local, 2 already done" in text, text
    again = json.loads((out / "jobs/jobs.json").read_text())
    changed = [k for k in again if again[k]["job_id"] != record[k]["job_id"]]
    assert changed == ["shard-001"] and again["shard-001"]["state"] == "COMPLETED"
    assert_same(episodes(resolve_stores(str(out / "shard-*"))), single)

    (stores[2] / "latbot.json").unlink()  # a shard cut short before its manifest: resubmitted, it resumes
    text = cli(*sharded)
    assert "convert: 1 job(s) to local, 2 already done" in text and "12 episode(s), 0 added now" in text, text
    assert_same(episodes(resolve_stores(out / LIST_NAME)), single)


def test_a_mixture_converts_each_source_into_its_shard_set(tmp_path):
    raw = tmp_path / "raw"
    make_egodex(raw / "egodex", episodes=3, steps=6, width=32, height=18)
    mixture = tmp_path / "mix.yaml"
    mixture.write_text(
        "name: tiny\nroot: stores\nsources:\n  - {name: egodex, store: egodex/shard-*, weight: 1, frame_stride: 3}\n"
    )
    cli("data", "convert", raw / "egodex", "--preset", "egodex", "--image-size", 8, "-o", tmp_path / "single")
    text = cli("data", "convert", "--mixture", mixture, "--raw-root", raw, "--shards", 2, "--image-size", 8)
    assert "convert: 2 job(s) to local" in text and "egodex: 2 store(s), 3 episode(s)" in text, text
    assert f"jobs and logs: {tmp_path / 'stores/jobs/convert-tiny'}" in text
    sharded = resolve_stores(str(tmp_path / "stores/egodex/shard-*"))
    assert sharded == resolve_stores(tmp_path / "stores/egodex" / LIST_NAME) and len(sharded) == 2
    assert_same(episodes(sharded), episodes([tmp_path / "single"]))
    extra = read_manifest(sharded[1], "episode_store").extra
    assert extra["preset"] == "egodex" and extra["shard"]["index"] == 1 and extra["shard"]["count"] == 2


def test_plans_that_cannot_run_are_refused_before_anything_is_written(tmp_path):
    src = make_libero_hdf5(tmp_path / "src/KITCHEN_SCENE1_x_demo.hdf5", demos=2, steps=4, size=8)
    base = ("data", "convert", str(src), "--format", "libero_hdf5", "--image-size", "8")

    def refused(*args, match):
        result = runner.invoke(app, [*base, *map(str, args)])
        assert result.exit_code == 2 and match in result.output, result.output

    refused("-o", tmp_path / "a", "--shards", 2, "--shard", "0/2", match="give one of them")
    refused("-o", tmp_path / "a", "--shards", 2, "--limit", 1, match="--limit")
    refused("-o", tmp_path / "a", "--launcher", "local", match="only with --shards")
    refused("-o", tmp_path / "a", "--shards", 2, "--launcher", "pbs", match="--launcher")
    if shutil.which("sbatch") is None:
        refused("-o", tmp_path / "a", "--shards", 2, "--launcher", "slurm", match="no `sbatch` on PATH")
    assert not (tmp_path / "a").exists() or not any((tmp_path / "a").glob("shard-*/zarr.json"))
    cli(*base, "-o", tmp_path / "one")  # a store is not a folder of shard stores
    refused("-o", tmp_path / "one", "--shards", 2, match="not a folder for shard stores")
    (tmp_path / "b/shard-000").mkdir(parents=True)  # another split's stores would join the set
    cli(*base, "-o", tmp_path / "b/shard-003")
    refused("-o", tmp_path / "b", "--shards", 2, match="shard-003, not one of the 2 shard(s)")
    cli(*base, "-o", tmp_path / "c/shard-000", "--shard", "0/4")  # another split of the same name
    refused("-o", tmp_path / "c", "--shards", 2, match="holds shard 0/4")
    mixture = tmp_path / "mix.yaml"
    mixture.write_text(
        "name: m\nsources:\n  - {name: fractal, store: fractal, weight: 1}\n  - {name: mine, store: x}\n"
    )
    result = runner.invoke(app, ["data", "convert", "--mixture", str(mixture)])
    assert result.exit_code == 2, result.output
    assert "fractal: where is its raw copy" in result.output and "mine: not a dataset preset" in result.output
    only = ("--raw", f"fractal={src}", "--shards", "2", "--only", "fractal")
    result = runner.invoke(app, ["data", "convert", "--mixture", str(mixture), *only])
    assert result.exit_code == 2 and "fractal" in result.output and "is one store" in result.output, result.output
    result = runner.invoke(app, ["data", "convert", "--mixture", str(mixture), *only[:2], "--only", "fractal"])
    assert result.exit_code == 2 and "no meta/info.json" in result.output, result.output  # not what fractal reads
    mixture.write_text("name: m\nsources:\n  - {name: ucsd_kitchen, store: u, weight: 1}\n")
    result = runner.invoke(app, ["data", "convert", "--mixture", str(mixture)])
    assert result.exit_code == 2 and "preset 'ucsd_kitchen' refuses" in result.output, result.output
    assert set_folder("a/shard-*") == (set_folder("a/shard-*")[0], "shard-") and set_folder("a/b") == (None, "")
    with pytest.raises(Exception, match="PREFIX"):
        set_folder("a/*/shard-*")
