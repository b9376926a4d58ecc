"""`LatBotPolicy.predict` latency of a tiny pi0.5 policy on the CPU, with and without the prefix KV cache.

    OMP_NUM_THREADS=1 python tools/bench/pi05_predict_latency.py [--calls 50] [--horizon 8]

Builds a one-task MetaWorld store, finetunes recipes/tiny/finetune_pi05.yaml for one step (the weights do
not matter for latency), then times `predict` on one observation: "cached" runs the prefix (images,
prompt, latent queries) once and the 10 Euler steps over its K, V (the inference path); "uncached"
recomputes the prefix at every step (VisionLanguageAction.sample(cache=False)), which is what a model
without the cache pays. Writes tools/bench/results/pi05_predict_latency.json.
"""

from __future__ import annotations

import argparse
import functools
import json
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[2]


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--calls", type=int, default=50)
    p.add_argument("--horizon", type=int, default=8)
    args = p.parse_args()
    from latbot import registry, stages
    from latbot.policy import LatBotPolicy
    from latbot.recipes import load_recipe
    from latbot.sim.generate import generate

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        store = Path(tmp) / "store"
        generate(registry.get("simulators", "metaworld").Config(), ["reach"], 1, store, image_size=64, progress=False)
        recipe = ROOT / "recipes/tiny/finetune_pi05.yaml"
        sets = [f"data.sources=[{{store: {store}}}]", f"log.out_dir={tmp}", "log.run_name=ft", "log.progress=false",
                "train.steps=1", "train.checkpoint_every=1", f"model.action_horizon={args.horizon}"]  # fmt: skip
        run = stages.run(load_recipe(recipe, sets), recipe_path=recipe)
        policy = LatBotPolicy.from_checkpoint(run)
        meta = policy.metadata
        obs = {
            "images": {
                c: np.random.default_rng(0).integers(0, 255, (*meta["image_size"], 3), np.uint8)
                for c in meta["cameras"]
            },
            "state": np.zeros(meta["state_dim"], np.float32),
            "instruction": "reach the goal",
        }
        sample = policy.model.sample
        results = {}
        for name, cache in (("cached", True), ("uncached", False)):
            policy.model.sample = functools.partial(sample, cache=cache)
            for _ in range(3):
                policy.predict(obs)  # warm-up
            times = []
            for _ in range(args.calls):
                t0 = time.perf_counter()
                policy.predict(obs)
                times.append((time.perf_counter() - t0) * 1e3)
            results[name] = {"p50_ms": float(np.percentile(times, 50)), "p95_ms": float(np.percentile(times, 95))}
        policy.model.sample = functools.partial(sample, cache=True)
        a = policy.predict(obs)
        policy.model.sample = functools.partial(sample, cache=False)
        same = float(np.abs(a - policy.predict(obs)).max())
    out = {
        "what": "LatBotPolicy.predict, tiny pi05 student + expert (recipes/tiny/finetune_pi05.yaml), CPU, 1 thread",
        "calls": args.calls,
        "horizon": args.horizon,
        "num_steps": 10,
        **results,
        "speedup_p50": results["uncached"]["p50_ms"] / results["cached"]["p50_ms"],
        "max_abs_diff_cached_vs_uncached": same,
        "torch": torch.__version__,
        "machine": platform.processor() or platform.machine(),
    }
    dest = ROOT / "tools/bench/results/pi05_predict_latency.json"
    dest.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
