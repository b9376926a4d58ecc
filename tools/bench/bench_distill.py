"""Distillation throughput with and without the teacher cache, and policy latency, in one run.

    python tools/bench/bench_distill.py --out tools/bench/results/bench_distill.json
    python tools/bench/bench_distill.py --quick --out /tmp/quick.json        # seconds; used by the tests

Set-up: a MetaWorld store (scripted demonstrations, 64²); for each teacher clip length T, a tiny LAM
(recipes/tiny/lam.yaml with T frames, one training step: throughput does not depend on the weights);
then the tiny distillation recipe for `--steps` steps twice — the teacher online, and from the teacher
cache (its one-off build timed separately). Samples/s: the median of the training loop's own figures
over the logged intervals after the first (which holds the warm-up). Then `LatBotPolicy.predict`
latency (p50/p95 over `--calls` calls) of a tiny finetuned policy, directly and through `latbot serve`
(its own process) with openpi's client when it is installed. Last, a FLOP estimate of the cache's
speed-up at the paper's size (models built on the meta device, no weights). Everything runs one case
after the other, at the same thread count.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
TINY = REPO / "recipes" / "tiny"


def run_stage(recipe: str, out: Path, name: str, *sets: str) -> Path:
    from latbot import stages
    from latbot.recipes import load_recipe

    path = TINY / recipe
    r = load_recipe(path, [f"log.out_dir={out}", f"log.run_name={name}", "log.progress=false", *sets])
    return stages.run(r, recipe_path=path)


def throughput(run: Path) -> float:
    """Median samples/s over the logged intervals after the first (which includes warm-up)."""
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    rates = [r["samples_per_s"] for r in rows[1:]] or [rows[0]["samples_per_s"]]
    return float(np.median(rates))


def real_size_estimate() -> dict:
    """Forward FLOPs ≈ 2 · parameters · tokens (attention's quadratic term left out) per distillation sample
    at the paper's size: the online teacher (InternVL3.5-2B on 16 frames) against the student's training
    step (PaliGemma-3B on one frame, forward + backward ≈ 3 forwards). Text lengths are approximate
    (template words × 1.3) since the real tokenizers are not available offline."""
    import torch

    from latbot import registry
    from latbot.models.template import QUESTION, STUDENT_QUESTION
    from latbot.recipes import load_recipe

    def parts(vlm) -> tuple[int, int]:
        vision = sum(p.numel() for p in vlm.vision_tower.parameters())
        lm = vlm.language_model
        embeddings = lm.get_input_embeddings() if hasattr(lm, "get_input_embeddings") else lm.embed_tokens  # pi05
        body = sum(p.numel() for p in lm.parameters()) - embeddings.weight.numel()
        return vision, body

    lam = load_recipe(REPO / "recipes/lam_internvl.yaml")
    distill = load_recipe(REPO / "recipes/distill_pi05.yaml")
    with torch.device("meta"):
        teacher = registry.build("encoders", lam.model.encoder.model_copy(update={"pretrained": None}))
        student = registry.build("students", distill.model.student.model_copy(update={"pretrained": None}))
    t = lam.data.num_frames
    vc = teacher.vlm.config.vision_config
    t_patches = t * (vc.image_size[0] // vc.patch_size[0]) ** 2
    latent = lam.model.encoder.num_scene_tokens + lam.model.encoder.num_motion_tokens
    t_text = int(len(QUESTION.split()) * 1.3) + 20
    t_tokens = t * (teacher.tokens_per_frame + 8) + t_text + latent
    s_text = int(len(STUDENT_QUESTION.split()) * 1.3) + 30  # + the subtask tail
    s_tokens = student.tokens_per_frame + s_text + latent
    (tv, tl), (sv, sl) = parts(teacher.vlm), parts(student.vlm)
    teacher_fwd = 2 * (tv * t_patches + tl * t_tokens)
    student_train = 3 * 2 * (sv * student.tokens_per_frame + sl * s_tokens)
    return {
        "teacher_tokens": {"vision_patches": t_patches, "language": t_tokens},
        "student_tokens": {"vision_patches": student.tokens_per_frame, "language": s_tokens},
        "teacher_forward_tflop": teacher_fwd / 1e12,
        "student_train_tflop": student_train / 1e12,
        "estimated_speedup": (teacher_fwd + student_train) / student_train,
    }


def serve_latency(run: Path, obs: dict, calls: int) -> dict | None:
    """Round trips through `latbot serve` in its own process, with openpi's client."""
    import subprocess
    import sys

    try:
        from openpi_client.websocket_client_policy import WebsocketClientPolicy
    except ImportError:
        return None
    cmd = [sys.executable, "-m", "latbot", "serve", "--checkpoint", str(run), "--port", "0"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        line = proc.stdout.readline()
        port = int(line.split("ws://127.0.0.1:")[1].split()[0])
        client = WebsocketClientPolicy(host="127.0.0.1", port=port)
        return latency(lambda: client.infer(obs), calls)
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def latency(fn, calls: int) -> dict[str, float]:
    fn()  # warm-up
    times = []
    for _ in range(calls):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return {"p50_ms": float(np.percentile(times, 50)), "p95_ms": float(np.percentile(times, 95)), "calls": calls}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("bench_distill.json"))
    ap.add_argument("--frames", type=int, nargs="+", default=[4, 16], help="teacher clip lengths T")
    ap.add_argument("--steps", type=int, default=60, help="distillation steps per case")
    ap.add_argument("--calls", type=int, default=200, help="predict calls for the latency figures")
    ap.add_argument("--episodes", type=int, default=3, help="demonstrations per task in the store")
    ap.add_argument("--quick", action="store_true", help="tiny sizes: checks the benchmark runs")
    ap.add_argument("--workdir", type=Path, default=None)
    args = ap.parse_args()
    if args.quick:
        args.frames, args.steps, args.calls, args.episodes = [4], 4, 5, 1
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    from latbot import registry, runs
    from latbot.data.latent_cache import build_cache, cache_identity, finish_cache
    from latbot.data.mixture import build_mixture
    from latbot.policy import LatBotPolicy
    from latbot.recipes.schema import DataSource
    from latbot.sim.generate import generate

    work = Path(tempfile.mkdtemp(dir=args.workdir))
    try:
        store = work / "store"
        sim = registry.get("simulators", "metaworld").Config()
        generate(sim, ["reach", "drawer-open"], args.episodes, store, image_size=64, seed=0, progress=False)
        src = f"data.sources=[{{store: {store}}}]"
        every = max(1, args.steps // 6)
        cases = {}
        for t in args.frames:
            lam = run_stage(
                "lam.yaml", work, f"lam{t}", src, "train.steps=1", f"data.num_frames={t}",
                f"model.encoder.num_frames={t}", f"model.decoder.horizon={t - 1}",
            )  # fmt: skip
            common = (src, f"model.teacher={lam}", f"data.num_frames={t}", f"train.steps={args.steps}",
                      f"train.checkpoint_every={args.steps}", f"log.every_steps={every}")  # fmt: skip
            online = run_stage("distill.yaml", work, f"online{t}", *common)
            sources = [DataSource(store=store)]
            clips = build_mixture(sources, t)[0]
            teacher = runs.load_lam(lam)
            t0 = time.perf_counter()
            identity = cache_identity(runs.open_run(lam, "lam").manifest.content_hash, sources, t, None)
            with torch.no_grad():  # (tokens, width) of one clip's latents: Z_sce and Z_mot side by side
                z_sce, z_mot = teacher.encode(clips[0]["frames"][None], [clips[0]["instruction"]])
            shape = (z_sce.shape[1] + z_mot.shape[1], z_sce.shape[2])
            build_cache(work / f"c{t}", teacher, clips, identity, shape=shape, batch_size=8, progress=False)
            finish_cache(work / f"c{t}", identity, len(clips), shape, "float32")
            build = time.perf_counter() - t0
            cached = run_stage("distill.yaml", work, f"cached{t}", *common, f"model.teacher_cache={work / f'c{t}'}")
            on, ca = throughput(online), throughput(cached)
            cases[f"T{t}"] = {
                "teacher_frames": t,
                "clips": len(clips),
                "online_samples_per_s": on,
                "cached_samples_per_s": ca,
                "speedup": ca / on,
                "cache_build_s": build,
                "cache_build_clips_per_s": len(clips) / build,
                "cache_bytes": sum(f.stat().st_size for f in (work / f"c{t}").rglob("*") if f.is_file()),
            }
            print(f"T={t}: online {on:.1f} samples/s, cached {ca:.1f} samples/s ({ca / on:.2f}×)", flush=True)

        ft = run_stage("finetune.yaml", work, "ft", src, "train.steps=2", "train.checkpoint_every=2")
        policy = LatBotPolicy.from_checkpoint(ft)
        rng = np.random.default_rng(0)
        obs = {
            "images": {c: rng.integers(0, 255, (64, 64, 3), dtype=np.uint8) for c in policy.cameras},
            "state": np.array([0.0, 0.6, 0.2, 1.0], np.float32),
            "instruction": "reach the goal",
        }
        lat = {"predict": latency(lambda: policy.predict(obs), args.calls)}
        print(f"predict: p50 {lat['predict']['p50_ms']:.1f} ms, p95 {lat['predict']['p95_ms']:.1f} ms", flush=True)
        lat["served_openpi_client"] = serve_latency(ft, obs, args.calls)
        report = {
            "benchmark": "distill_and_policy",
            "results": {"distillation": cases, "policy_latency": lat, "real_size_estimate": real_size_estimate()},
            "settings": {
                "steps": args.steps,
                "micro_batch": 8,
                "image_size": 64,
                "policy_horizon": policy.horizon,
                "torch_threads": torch.get_num_threads(),
            },
            "machine": {
                "python": platform.python_version(),
                "machine": platform.machine(),
                "cpus": os.cpu_count(),
                "torch": torch.__version__,
            },
        }
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.out}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
