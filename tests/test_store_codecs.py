"""Per-frame image codecs in the episode store (latbot/data/imagecodec.py): each round-trips through the fast
reader and zarr-python (lossless exactly, JPEG above a PSNR bound), needs one frame per chunk, reads through
ClipDataset, and a damaged image chunk is a StoreError (crc32c) and a `verify` finding like any other chunk;
and the codec benchmark runs."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest

from latbot.data import imagecodec
from latbot.data.spaces import UnifiedTrajectory
from latbot.data.store import IMAGE_CODECS, Episode, EpisodeStore, StoreError
from tests.conftest import REPO

LENGTHS = (7, 13, 20)


def _frames(n: int, seed: int, size: int = 16) -> np.ndarray:
    """Smooth moving gradients with mild noise: camera-like, so that JPEG's PSNR bound is meaningful."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    out = []
    for t in range(n):
        img = np.stack([np.sin(5 * xx + c + 0.2 * t) * np.cos(3 * yy - 0.1 * t) for c in range(3)], -1)
        out.append((120 + 80 * img + rng.normal(0, 2, img.shape)).clip(0, 255))
    return np.stack(out).astype(np.uint8)


def _store(path, codec: str, shard_frames: int = 8) -> list[np.ndarray]:
    frames = []
    with EpisodeStore.create(
        path, cameras=["cam"], image_size=(16, 16), codec=codec, chunk_frames=1, shard_frames=shard_frames
    ) as s:
        for i, n in enumerate(LENGTHS):
            f = _frames(n, seed=i)
            s.append(Episode(f"e{i}", {"cam": f}, UnifiedTrajectory.empty(n), "pick up the cube"))
            frames.append(f)
    return frames


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(255**2 / mse)


def _needs(codec: str) -> None:
    if not imagecodec.available(codec):
        pytest.skip(f"this imagecodecs build has no {codec}")


@pytest.mark.parametrize("codec", IMAGE_CODECS)
def test_image_codecs_round_trip_through_the_fast_reader_and_zarr_python(tmp_path, codec):
    import zarr

    _needs(codec)
    frames = _store(tmp_path / "s", codec)
    with EpisodeStore.open(tmp_path / "s") as s:
        assert s.attrs["codec"] == codec and s.summary()["codec"] == codec
        assert s._reader("frames/cam") is not None, "image chunks must take the fast reader"
        group = zarr.open_group(str(tmp_path / "s"), mode="r")  # zarr-python decodes the same chunks
        np.testing.assert_array_equal(s.read_rows("frames/cam", 0, s.num_frames), group["frames/cam"][:])
        for e, f in enumerate(frames):
            got = s.read(e, slice(None))["frames/cam"]
            steps = np.array([0, 2, len(f) - 1])
            np.testing.assert_array_equal(s.read_steps("frames/cam", e, steps), got[steps])
            if imagecodec.is_lossless(codec):
                np.testing.assert_array_equal(got, f)
            else:
                assert _psnr(got, f) > 36, f"{codec}: PSNR {_psnr(got, f):.1f} dB"
    from latbot.data.verify import verify_store

    problems = verify_store(tmp_path / "s")
    assert all("latbot.json" in p.what for p in problems), problems  # only the manifest (no conversion ran)


def test_any_jpeg_quality_and_nothing_else(tmp_path):
    _store(tmp_path / "q80", "jpeg80")
    with EpisodeStore.open(tmp_path / "q80") as s:
        assert s.read(0, slice(None))["frames/cam"].shape == (LENGTHS[0], 16, 16, 3)
    for bad in ("jpeg0", "jpeg101", "gif", "PNG"):
        with pytest.raises(StoreError, match="codec must be one of"):
            EpisodeStore.create(tmp_path / bad, cameras=["cam"], image_size=(16, 16), codec=bad, chunk_frames=1)


@pytest.mark.parametrize("codec", ["png", "jpeg95"])
def test_an_image_codec_refuses_chunks_of_several_frames(tmp_path, codec):
    with pytest.raises(StoreError) as e:
        EpisodeStore.create(tmp_path / "s", cameras=["cam"], image_size=(16, 16), codec=codec, chunk_frames=8)
    assert "\n" not in str(e.value) and "chunk_frames=1" in str(e.value)
    assert not (tmp_path / "s" / "zarr.json").exists()


def test_clip_dataset_reads_an_image_codec_store(tmp_path):
    from latbot.data.clips import ChunkDataset, ClipDataset

    frames = _store(tmp_path / "s", "png")
    clips = ClipDataset(tmp_path / "s", num_frames=4, frame_stride=2)
    i = clips.starts.index((2, 3))
    sample = clips[i]
    np.testing.assert_array_equal(sample["frames"].numpy(), frames[2][3:10:2].transpose(0, 3, 1, 2))
    chunk = ChunkDataset(tmp_path / "s", 4, normalize=False)
    np.testing.assert_array_equal(chunk[LENGTHS[0] + 5]["frames"].numpy(), frames[1][5:6].transpose(0, 3, 1, 2))


@pytest.mark.parametrize("codec", ["png", "qoi", "jpeg95"])
def test_a_flipped_byte_in_an_image_chunk_is_a_store_error_and_a_verify_finding(tmp_path, codec):
    from latbot.data.verify import verify_store

    _store(tmp_path / "s", codec)
    shard = tmp_path / "s/frames/cam/c/0/0/0/0"
    data = bytearray(shard.read_bytes())
    data[100] ^= 0x40  # inside the first frame's image
    shard.write_bytes(bytes(data))
    with EpisodeStore.open(tmp_path / "s") as s, pytest.raises(StoreError, match="cannot be read"):
        s.read(0, slice(None))
    with EpisodeStore.open(tmp_path / "s") as s:  # the other shards are intact
        s.read(2, slice(None))
    problems = verify_store(tmp_path / "s")
    assert any("frames/cam" in p.where and "cannot be read" in p.what for p in problems), problems


def test_convert_takes_an_image_codec(tmp_path):
    from latbot import registry
    from latbot.data.convert import convert
    from latbot.data.verify import verify_store
    from latbot.testing.samples import make_lerobot_v30

    src = make_lerobot_v30(tmp_path / "src", episodes=2, steps=6, codec="libx264")
    result = convert(registry.get("datasets", "lerobot").Config(), src, tmp_path / "out", image_size=16, codec="qoi",
                     progress=False)  # fmt: skip
    assert result.added == 2
    with EpisodeStore.open(tmp_path / "out") as s:
        assert s.attrs["codec"] == "qoi" and s.attrs["chunk_frames"] == 1
        assert s.read(1, slice(None))[f"frames/{s.cameras[0]}"].shape[0] == 6
    assert verify_store(tmp_path / "out") == []
    with pytest.raises(StoreError, match="chunk_frames=1"):  # refused before anything is written
        convert(registry.get("datasets", "lerobot").Config(), src, tmp_path / "out8", codec="png", chunk_frames=8)
    assert not (tmp_path / "out8").exists()


def test_codec_benchmark_quick_mode_writes_every_codec(tmp_path):
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, str(REPO / "tools/bench/bench_codecs.py"), "--quick", "--out", str(out), "--workdir",
         str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(out.read_text())
    results = report["results"]
    names = [f"store_{c}_c{k}" for c in ("none", "lz4", "zstd") for k in (1, 8)]
    names += [f"store_{c}" for c in IMAGE_CODECS if imagecodec.available(c)] + ["raw_npy", "pyav_h264"]
    for name in names:
        r = results[name]
        assert r["bytes_per_frame"] > 0, name
        for p in ("clip", "strided", "single"):
            assert r[f"{p}_warm_frames_per_s"] > 0 and r[f"{p}_cold_frames_per_s"] > 0, (name, p)
        assert (r["psnr_db"] is None) == r["lossless"], name
    assert results["store_jpeg95"]["psnr_db"] > results["store_jpeg90"]["psnr_db"]
    assert report["targets"]["lossless_bytes_vs_h264_bytes"]["value"] > 0
    assert {
        "store_vs_pyav_h264_clip_warm",
        "store_vs_pyav_h264_clip_cold",
        "uncompressed_store_vs_raw_clip_warm",
    } <= set(report["targets"])
    assert "| store_png |" in proc.stdout


def test_samples_carry_frames_as_a_chw_view_and_batches_hold_the_exact_frames(tmp_path):
    import torch
    from torch.utils.data import DataLoader

    from latbot.data.clips import ClipDataset

    frames = _store(tmp_path / "s", "lz4")
    ds = ClipDataset(tmp_path / "s", num_frames=4)
    sample = ds[0]["frames"]
    assert sample.shape == (4, 3, 16, 16) and not sample.is_contiguous()  # a permuted view: no per-sample copy
    want = torch.from_numpy(frames[0][:4].transpose(0, 3, 1, 2).copy())
    assert torch.equal(sample, want)
    for workers in (0, 2):  # in workers, default_collate stacks into a contiguous shared-memory batch
        loader = DataLoader(ds, batch_size=3, num_workers=workers, multiprocessing_context="fork" if workers else None)
        batch = next(iter(loader))["frames"]
        assert batch.shape == (3, 4, 3, 16, 16) and torch.equal(batch[0], want)
        assert batch.is_contiguous() == bool(workers)
        assert torch.equal(batch.float().flatten(0, 1)[:4], want.float())  # what the encoders do with it


def test_the_cli_default_codec_is_the_stores():
    import inspect

    from latbot.cli.data import convert
    from latbot.data.store import DEFAULT_CODEC

    assert inspect.signature(convert).parameters["codec"].default.default == DEFAULT_CODEC


@pytest.mark.parametrize("codec", ["none", "lz4"])
def test_one_frame_chunks_read_in_runs_still_detect_damage(tmp_path, codec):
    """Uncompressed one-frame chunks are read a run per `preadv`, and lz4 frames blosc stored as is straight
    into the output: a flipped byte is still a crc32c error, a chunk pointing past its shard still damage."""
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 255, (20, 16, 16, 3), np.uint8)  # noise: blosc stores it as is
    path = tmp_path / "s"
    with EpisodeStore.create(path, cameras=["cam"], image_size=(16, 16), codec=codec, shard_frames=8) as s:
        s.append(Episode("e0", {"cam": frames}, UnifiedTrajectory.empty(20), "x"))
        assert s.attrs["chunk_frames"] == 1  # the default
    with EpisodeStore.open(path) as s:
        np.testing.assert_array_equal(s.read(0, slice(None))["frames/cam"], frames)
        np.testing.assert_array_equal(s.read_steps("frames/cam", 0, np.array([1, 2, 9, 17])), frames[[1, 2, 9, 17]])
    shard = path / "frames/cam/c/1/0/0/0"  # frames 8..15
    good = shard.read_bytes()
    index = np.frombuffer(good[-(16 * 8 + 4) : -4], "<u8").reshape(8, 2).copy()  # (offset, nbytes) per frame
    data = bytearray(good)
    data[int(index[3, 0]) + 40] ^= 0x01  # inside frame 11
    shard.write_bytes(bytes(data))
    with EpisodeStore.open(path) as s:
        np.testing.assert_array_equal(s.read_steps("frames/cam", 0, slice(0, 8)), frames[:8])  # other shard
        with pytest.raises(StoreError, match=r"cannot be read.*crc32c"):
            s.read_steps("frames/cam", 0, slice(8, 16))
        with pytest.raises(StoreError, match="cannot be read"):
            s.read_steps("frames/cam", 0, np.array([11]))
    index[5, 0] = len(good)  # frame 13's chunk "starts" past the end of its shard
    import google_crc32c

    raw = index.tobytes()
    shard.write_bytes(good[: -(16 * 8 + 4)] + raw + google_crc32c.value(raw).to_bytes(4, "little"))
    with EpisodeStore.open(path) as s, pytest.raises(StoreError, match="outside its shard"):
        s.read_steps("frames/cam", 0, slice(8, 16))


def test_png_survives_a_library_that_exports_an_older_zlib():
    """decord exports an old zlib; imagecodecs' PNG extension loaded after it bound to that zlib and every PNG
    failed ("bad parameters to zlib"). The codec loads it with RTLD_DEEPBIND (its own zlib first)."""
    import subprocess
    import sys

    code = (
        "import numpy as np, decord\n"
        "from latbot.data import imagecodec\n"
        "a = np.random.default_rng(0).integers(0, 255, (16, 16, 3), dtype=np.uint8)\n"
        "out = np.empty_like(a)\n"
        "imagecodec.decode_into(imagecodec.encode(a, 'png'), 'png', out)\n"
        "assert (out == a).all()\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
