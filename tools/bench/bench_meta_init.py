"""Peak host memory (RSS) per rank of the model set-up: the ordinary build (every rank builds the whole model,
then shards it) against `dist.meta_init` (meta build, shard, this rank's shards filled from process 0's one
CPU build: latbot.train.distributed.initial_model / meta_model / load_initial). FSDP2 over gloo on CPU.

    .venv/bin/python tools/bench/bench_meta_init.py --out bench_meta_init.json            # mini + medium
    .venv/bin/python tools/bench/bench_meta_init.py --sizes mini --processes 1 2

The model is the `pi05` student (`preset: mini`, the CPU quickstart size, and `medium`, a custom size of a few
hundred MB so the weights outweigh the interpreter and torch). Each (size, processes, mode) is a fresh
torchrun launch; each rank reports its peak RSS (`ru_maxrss`) before the set-up (imports done) and after
it. The JSON holds every rank's numbers and the model's parameter count and fp32 size.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

SIZES = {
    "mini": {"preset": "mini"},
    # SigLIP 256 × 4 layers, Gemma 1024 × 8 layers, 32k vocab: ≈ 190M parameters (≈ 0.75 GB fp32)
    "medium": {
        "preset": "custom",
        "dims": {
            "vision_width": 256,
            "vision_mlp_dim": 1024,
            "vision_depth": 4,
            "vision_heads": 4,
            "image_size": 64,
            "patch_size": 8,
            "width": 1024,
            "mlp_dim": 8192,
            "depth": 8,
            "heads": 8,
            "kv_heads": 1,
            "head_dim": 128,
            "vocab": 32000,
        },
    },
}


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def worker(size: str, mode: str, out: Path) -> None:
    import torch

    from latbot import registry
    from latbot.train import distributed

    world = distributed.init("gloo")
    before = peak_mib()

    def build():
        cfg = registry.get("students", "pi05").Config(
            tokenizer=None, num_scene_tokens=8, num_motion_tokens=8, **SIZES[size]
        )
        torch.manual_seed(0)
        return registry.build("students", cfg, latent_width=64)

    if mode == "ordinary":  # as latbot.train.loop without dist.meta_init
        model = distributed.fp32_master_weights(build().to(world.device))
        distributed.shard(model, world)
    else:
        initial = distributed.initial_model(build, world)
        model = distributed.fp32_master_weights(distributed.meta_model(build))
        distributed.shard(model, world)
        distributed.load_initial(model, initial, world)
        del initial
    after = peak_mib()
    params = sum(p.numel() for p in model.parameters())  # global numel (DTensor)
    local = sum(p.to_local().numel() if hasattr(p, "to_local") else p.numel() for p in model.parameters())
    row = {
        "rank": world.rank,
        "peak_rss_before_setup_mib": round(before, 1),
        "peak_rss_mib": round(after, 1),
        "parameters": params,
        "local_parameters": local,
    }
    (out / f"rank{world.rank}.json").write_text(json.dumps(row))
    distributed.barrier(world)
    distributed.shutdown(world)


def launch(size: str, processes: int, mode: str) -> list[dict]:
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(processes)]
        cmd += [__file__, "--worker", size, mode, tmp]
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        subprocess.run(cmd, check=True, env=env, capture_output=True, text=True)
        return [json.loads(p.read_text()) for p in sorted(Path(tmp).glob("rank*.json"))]


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        worker(sys.argv[2], sys.argv[3], Path(sys.argv[4]))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=list(SIZES), choices=list(SIZES))
    parser.add_argument("--processes", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--out", type=Path, default=Path("bench_meta_init.json"))
    args = parser.parse_args()
    results = []
    for size in args.sizes:
        for processes in args.processes:
            for mode in ("ordinary", "meta"):
                ranks = launch(size, processes, mode)
                results.append({"size": size, "processes": processes, "mode": mode, "ranks": ranks})
                peaks = ", ".join(f"rank {r['rank']}: {r['peak_rss_mib']:.0f}" for r in ranks)
                params = ranks[0]["parameters"]
                print(f"{size:7s} {params / 1e6:7.1f}M params  {processes} proc  {mode:8s}  peak RSS MiB  {peaks}")
    args.out.write_text(json.dumps(results, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
