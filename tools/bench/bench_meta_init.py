"""Peak host memory (RSS) per rank of the model set-up: the ordinary build (every rank builds the whole model,
then shards it) against `dist.meta_init` (meta build, shard, this rank's shards filled: pretrained tensors
read by each rank from the safetensors files, its rows only; the rest from process 0's one CPU build:
latbot.train.distributed.initial_model / meta_model / load_initial). FSDP2 over gloo on CPU.

    .venv/bin/python tools/bench/bench_meta_init.py --out bench_meta_init.json     # every size, 1 and 2 processes
    .venv/bin/python tools/bench/bench_meta_init.py --sizes internvl_pretrained --processes 1 2

Sizes: the `pi05` student, randomly initialised (`mini`, the CPU quickstart size, and `medium`, a custom size
of a few hundred MB so the weights outweigh the interpreter and torch); `internvl_pretrained`: the
`internvl` student loading a ≈ 190M-parameter InternVL (Qwen3 1024 × 8 layers, 32k vocabulary) saved in
bf16 by `save_pretrained` — real pretrained weights. Modes: `ordinary`; `meta_p0` (dist.meta_init with
every file read by process 0 and sent: what it did before the per-rank reads); `meta` (dist.meta_init as
it is). Each (size, processes, mode) is a fresh torchrun launch; each rank reports its peak RSS
(`ru_maxrss`) before the set-up (imports done) and after it.
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
    "internvl_pretrained": {},  # see save_internvl
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


def save_internvl(root: Path) -> str:
    """A ≈ 190M-parameter InternVL (the tiny vision tower, a Qwen3 1024 × 8 layers language model with a 32k
    vocabulary), random values, saved in bf16 in the published layout."""
    import torch
    from transformers import InternVLModel

    from latbot.models.encoders.internvl import presets

    config, tokenizer = presets("tiny")
    text = config.text_config
    text.hidden_size, text.intermediate_size, text.num_hidden_layers = 1024, 4096, 8
    text.num_attention_heads, text.num_key_value_heads, text.head_dim, text.vocab_size = 8, 8, 128, 32000
    text.layer_types = ["full_attention"] * text.num_hidden_layers
    torch.manual_seed(0)
    InternVLModel(config).to(torch.bfloat16).save_pretrained(root)
    tokenizer.save_pretrained(root)
    return str(root)


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def worker(size: str, mode: str, out: Path) -> None:
    import torch

    from latbot import registry
    from latbot.train import distributed

    world = distributed.init("gloo")
    before = peak_mib()

    def build():
        torch.manual_seed(0)
        if size == "internvl_pretrained":
            cfg = registry.get("students", "internvl").Config(
                preset="tiny", pretrained=os.environ["BENCH_PRETRAINED"], num_scene_tokens=8, num_motion_tokens=8
            )
            return registry.build("students", cfg, latent_width=64)
        cfg = registry.get("students", "pi05").Config(
            tokenizer=None, num_scene_tokens=8, num_motion_tokens=8, **SIZES[size]
        )
        return registry.build("students", cfg, latent_width=64)

    def architecture():
        if size != "internvl_pretrained":
            return build()
        from latbot.models import deferred

        with deferred.deferring():  # the same architecture (the saved config), no weights read
            return build()

    if mode == "ordinary":  # as latbot.train.loop without dist.meta_init
        model = distributed.fp32_master_weights(build().to(world.device))
        distributed.shard(model, world)
    else:
        if mode == "meta_p0":  # every file read by process 0, every tensor sent from it
            initial = (distributed.fp32_master_weights(build()), {}) if world.main else None
        else:
            initial = distributed.initial_model(build, world)
        model = distributed.fp32_master_weights(distributed.meta_model(architecture))
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


def launch(size: str, processes: int, mode: str, pretrained: str) -> list[dict]:
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(processes)]
        cmd += [__file__, "--worker", size, mode, tmp]
        env = {**os.environ, "OMP_NUM_THREADS": "1", "BENCH_PRETRAINED": pretrained, "HF_HUB_OFFLINE": "1"}
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
    with tempfile.TemporaryDirectory() as saved:
        pretrained = save_internvl(Path(saved) / "internvl") if "internvl_pretrained" in args.sizes else ""
        for size in args.sizes:
            for processes in args.processes:
                for mode in ("ordinary", "meta_p0", "meta") if size == "internvl_pretrained" else ("ordinary", "meta"):
                    ranks = launch(size, processes, mode, pretrained)
                    results.append({"size": size, "processes": processes, "mode": mode, "ranks": ranks})
                    peaks = ", ".join(f"rank {r['rank']}: {r['peak_rss_mib']:.0f}" for r in ranks)
                    params = ranks[0]["parameters"]
                    print(f"{size:19s} {params / 1e6:7.1f}M params  {processes} proc  {mode:8s}  peak RSS MiB  {peaks}")
    args.out.write_text(json.dumps(results, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
