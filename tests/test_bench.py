"""The benchmarks run and write their JSON (their figures are measured by running them, not here)."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import REPO


def quick(script: str, tmp_path) -> dict:
    """Run a benchmark in --quick mode and return its JSON report."""
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, str(REPO / "tools/bench" / script), "--quick", "--out", str(out), "--workdir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(out.read_text())


def test_loader_benchmark_quick_mode_writes_every_case(tmp_path):
    report = quick("bench_loader.py", tmp_path)
    for case in (
        "zarr_zstd",
        "zarr_lz4",
        "zarr_none",
        "raw_npy",
        "pyav_av1",
        "pyav_h264",
        "1080p_pyav_decode_resize",
        "1080p_zarr_zstd",
    ):
        assert report["results"][case]["frames_per_s"] > 0 and report["results"][case]["bytes"] > 0
    assert {"zarr_zstd_vs_pyav_av1", "zarr_zstd_vs_raw", "zarr_zstd_vs_zarr_uncompressed"} <= set(report["ratios"])


def test_distill_benchmark_quick_mode_writes_both_cases_and_latency(tmp_path):
    report = quick("bench_distill.py", tmp_path)
    case = report["results"]["distillation"]["T4"]
    assert case["online_samples_per_s"] > 0 and case["cached_samples_per_s"] > 0 and case["cache_bytes"] > 0
    latency = report["results"]["policy_latency"]
    assert 0 < latency["predict"]["p50_ms"] <= latency["predict"]["p95_ms"]
    assert latency["served_openpi_client"]["p50_ms"] > 0
