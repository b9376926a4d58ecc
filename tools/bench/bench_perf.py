"""Before/after benchmark of the finetune data path and `predict`, side by side in one run.

    python tools/bench/bench_perf.py --before-commit 9dfe6d3 --out tools/bench/results/bench_perf.json
    python tools/bench/bench_perf.py --quick --out /tmp/perf.json      # seconds; the code against itself

"Before" is the library at `--before-commit` (exported with `git archive` into the work directory),
"after" the working tree. Every measurement runs in a fresh subprocess with PYTHONPATH set to one tree,
in interleaved rounds (A B A B …), and the report gives medians: the development machine has 2 cores
that other people's tests share, so single runs are noisy.

Cases (tiny recipes, CPU, torch with 1 thread per process):
  finetune_data     ChunkDataset samples/s through a DataLoader as recipes/tiny/finetune.yaml builds it
                    (its micro batch and `data.num_workers`), on a MetaWorld store written by that tree
  finetune_train    the tiny finetune run itself: samples/s, the share of the step spent waiting for the
                    next batch, and every step's loss (must be bit-identical before and after)
  predict           LatBotPolicy.predict p50/p95 of one finetuned tiny policy (paligemma + flow expert),
                    the same weights in both trees; the largest difference of the actions
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
RECIPE = "recipes/tiny/finetune.yaml"


# -- workers (run inside one tree) ------------------------------------------------------------------------
def work_store(out: Path, episodes: int) -> dict:
    from latbot import registry
    from latbot.sim.generate import generate

    generate(registry.get("simulators", "metaworld").Config(), ["reach", "push"], episodes, out, image_size=64,
             seed=0, progress=False)  # fmt: skip
    return {}


def _recipe(tree: Path, store: Path, out_dir: Path, name: str, steps: int, extra: list[str] = ()):
    from latbot.recipes import load_recipe

    sets = [f"data.sources=[{{store: {store}}}]", f"log.out_dir={out_dir}", f"log.run_name={name}",
            "log.progress=false", f"train.steps={steps}", f"train.checkpoint_every={steps}", "log.every_steps=1",
            *extra]  # fmt: skip
    return load_recipe(tree / RECIPE, sets)


def work_data(tree: Path, store: Path, batches: int) -> dict:
    import torch
    from torch.utils.data import DataLoader

    from latbot.data.clips import ChunkDataset

    recipe = _recipe(tree, store, Path(tempfile.mkdtemp()), "x", 1)
    ds = ChunkDataset(store, recipe.model.action_horizon, cameras=recipe.data.cameras)
    g = torch.Generator().manual_seed(0)
    idx = torch.randint(len(ds), (batches * recipe.train.micro_batch_size,), generator=g).tolist()
    loader = DataLoader(ds, batch_size=recipe.train.micro_batch_size, sampler=idx, num_workers=recipe.data.num_workers)
    t0 = time.perf_counter()
    n = sum(len(b["step"]) for b in loader)  # worker start-up included, as in a training run
    dt = time.perf_counter() - t0
    # per sample in this process, no workers: the cost the issue broke down
    t1 = time.perf_counter()
    for i in idx[:200]:
        ds[i]
    per_sample = (time.perf_counter() - t1) / len(idx[:200])
    return {
        "samples_per_s": n / dt,
        "num_workers": recipe.data.num_workers,
        "ms_per_sample_in_process": per_sample * 1e3,
    }


def work_train(tree: Path, store: Path, steps: int) -> dict:
    from torch.utils.data import DataLoader

    import latbot.train.loop as loop
    from latbot import stages

    waited, span = [0.0], [None, None]  # seconds waiting for batches; first and last batch handed out

    class TimedLoader(DataLoader):  # time spent waiting for the next batch
        def __iter__(self):
            it = super().__iter__()

            class Timed:
                def __next__(self):
                    t0 = time.perf_counter()
                    try:
                        return next(it)
                    finally:
                        span[1] = time.perf_counter()
                        span[0] = span[0] or t0
                        waited[0] += span[1] - t0

            return Timed()

    loop.DataLoader = TimedLoader
    out = Path(tempfile.mkdtemp())
    t0 = time.perf_counter()
    run = stages.run(_recipe(tree, store, out, "ft", steps), recipe_path=tree / RECIPE)
    total = time.perf_counter() - t0
    rows = [json.loads(line) for line in (Path(run) / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in rows if "loss" in r]
    rates = [r["samples_per_s"] for r in rows if "samples_per_s" in r][1:]  # the first step holds start-up
    shutil.rmtree(out, ignore_errors=True)
    loop_s = span[1] - span[0]  # the training loop, from the first batch requested to the last one received
    return {"samples_per_s": statistics.median(rates), "data_wait_s": waited[0], "loop_s": loop_s, "run_s": total,
            "losses": losses}  # fmt: skip


def work_run(tree: Path, store: Path, out: Path) -> dict:
    from latbot import stages

    return {"run": str(stages.run(_recipe(tree, store, out, "policy", 2), recipe_path=tree / RECIPE))}


def work_predict(run: Path, calls: int, actions_out: Path) -> dict:
    from latbot.policy import LatBotPolicy

    policy = LatBotPolicy.from_checkpoint(run)
    rng = np.random.default_rng(0)
    obs = {
        "images": {c: rng.integers(0, 255, (*policy.image_size, 3), dtype=np.uint8) for c in policy.cameras},
        "state": np.array([0.0, 0.6, 0.2, 1.0], np.float32),
        "instruction": "reach the goal",
    }
    for _ in range(5):
        policy.predict(obs)
    times = []
    for _ in range(calls):
        t0 = time.perf_counter()
        policy.predict(obs)
        times.append((time.perf_counter() - t0) * 1e3)
    np.save(actions_out, np.stack([policy.predict(obs, space="unified", seed=s) for s in range(3)]))
    return {"p50_ms": float(np.percentile(times, 50)), "p95_ms": float(np.percentile(times, 95))}


def worker(argv: list[str]) -> None:
    import torch

    torch.set_num_threads(1)
    p = argparse.ArgumentParser()
    p.add_argument("case")
    p.add_argument("--tree", type=Path)
    p.add_argument("--store", type=Path)
    p.add_argument("--run", type=Path)
    p.add_argument("--out", type=Path)
    p.add_argument("--n", type=int)
    a = p.parse_args(argv)
    result = {
        "store": lambda: work_store(a.store, a.n),
        "data": lambda: work_data(a.tree, a.store, a.n),
        "train": lambda: work_train(a.tree, a.store, a.n),
        "run": lambda: work_run(a.tree, a.store, a.out),
        "predict": lambda: work_predict(a.run, a.n, a.out),
    }[a.case]()
    print("RESULT " + json.dumps(result))


# -- the driver ------------------------------------------------------------------------------------------
def call(tree: Path, *args) -> dict:
    env = {**os.environ, "PYTHONPATH": str(tree), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, __file__, "--worker", *map(str, args)], env=env, capture_output=True,
                          text=True, cwd=tree)  # fmt: skip
    if proc.returncode:
        raise SystemExit(f"worker {args[:1]} in {tree} failed:\n{proc.stderr[-3000:]}")
    line = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")][-1]
    return json.loads(line[len("RESULT ") :])


def med(rows: list[dict], key: str) -> float:
    return float(statistics.median(r[key] for r in rows))


def main() -> None:
    if "--worker" in sys.argv:
        return worker(sys.argv[sys.argv.index("--worker") + 1 :])
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--before-commit", default="HEAD", help="the 'before' code (default: HEAD, without your edits)")
    ap.add_argument("--out", type=Path, default=ROOT / "tools/bench/results/bench_perf.json")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--episodes", type=int, default=6, help="episodes per task of the MetaWorld store")
    ap.add_argument("--batches", type=int, default=30)
    ap.add_argument("--train-steps", type=int, default=30)
    ap.add_argument("--calls", type=int, default=60)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--workdir", type=Path, default=None)
    args = ap.parse_args()
    if args.quick:
        args.rounds, args.episodes, args.batches, args.train_steps, args.calls = 1, 1, 3, 3, 5
    work = Path(tempfile.mkdtemp(prefix="bench_perf_", dir=args.workdir))
    try:
        commit = subprocess.run(["git", "rev-parse", args.before_commit], cwd=ROOT, capture_output=True, text=True,
                                check=True).stdout.strip()  # fmt: skip
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
        trees = {"before": work / "before", "after": ROOT}
        trees["before"].mkdir()
        archive = subprocess.run(["git", "archive", commit], cwd=ROOT, capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(trees["before"])], input=archive, check=True)
        stores = {k: work / f"store_{k}" for k in trees}
        for k, tree in trees.items():
            call(tree, "store", "--store", stores[k], "--n", args.episodes)
        run = Path(
            call(
                trees["before"], "run", "--tree", trees["before"], "--store", stores["before"], "--out", work / "runs"
            )["run"]
        )
        rows: dict[str, dict[str, list]] = {c: {k: [] for k in trees} for c in ("data", "train", "predict")}
        for r in range(args.rounds):
            order = list(trees) if r % 2 == 0 else list(trees)[::-1]
            for k in order:
                tree = trees[k]
                rows["data"][k].append(call(tree, "data", "--tree", tree, "--store", stores[k], "--n", args.batches))
                rows["train"][k].append(
                    call(tree, "train", "--tree", tree, "--store", stores[k], "--n", args.train_steps)
                )
                rows["predict"][k].append(
                    call(tree, "predict", "--run", run, "--n", args.calls, "--out", work / f"actions_{k}.npy")
                )
            print(f"round {r + 1}/{args.rounds} done", flush=True)
        a_before, a_after = (np.load(work / f"actions_{k}.npy") for k in trees)
        report = {"benchmark": "bench_perf", "before_commit": commit, "after": f"working tree at {head}"}
        res: dict[str, dict] = {}
        for k in trees:
            d, t, p = rows["data"][k], rows["train"][k], rows["predict"][k]
            res[k] = {
                "finetune_data": {
                    "samples_per_s": med(d, "samples_per_s"),
                    "num_workers": d[0]["num_workers"],
                    "ms_per_sample_in_process": med(d, "ms_per_sample_in_process"),
                },
                "finetune_train": {
                    "samples_per_s": med(t, "samples_per_s"),
                    "data_wait_share": float(statistics.median(x["data_wait_s"] / x["loop_s"] for x in t)),
                    "losses": t[0]["losses"],
                },
                "predict": {"p50_ms": med(p, "p50_ms"), "p95_ms": med(p, "p95_ms")},
            }
        b, a = res["before"], res["after"]
        report["results"] = res
        report["comparison"] = {
            "finetune_data_speedup": a["finetune_data"]["samples_per_s"] / b["finetune_data"]["samples_per_s"],
            "finetune_train_speedup": a["finetune_train"]["samples_per_s"] / b["finetune_train"]["samples_per_s"],
            "losses_bit_identical": b["finetune_train"]["losses"] == a["finetune_train"]["losses"]
            and all(x["losses"] == b["finetune_train"]["losses"] for k in trees for x in rows["train"][k]),
            "predict_p50_speedup": b["predict"]["p50_ms"] / a["predict"]["p50_ms"],
            "predict_max_abs_diff": float(np.abs(a_before - a_after).max()),
        }
        report["setup"] = {
            "rounds": args.rounds,
            "order": "interleaved: before, after, then after, before, …; medians over rounds",
            "machine_shared": "yes: a 2-core machine on which other engineers ran tests at the same time",
            "recipe": RECIPE,
            "episodes_per_task": args.episodes,
            "batches": args.batches,
            "train_steps": args.train_steps,
            "predict_calls": args.calls,
            "torch_threads": 1,
            "cpu_count": os.cpu_count(),
            "python": platform.python_version(),
            "quick": args.quick,
        }
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n")
        print(json.dumps(report["comparison"], indent=2))
        for k in trees:
            print(k, json.dumps({c: {m: v for m, v in x.items() if m != "losses"} for c, x in res[k].items()}))
        print(f"wrote {args.out}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
