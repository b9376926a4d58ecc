"""Where could the gripper command of held-out tasks be read from? Two references for the gripper slice of an
action stream (docs/models.md, "Where the held-out gripper could come from"):

1. the robot's own finger opening (the gripper entry of the proprioceptive state): a polynomial from it to the
   gripper command, fit on every step of the pretraining store, scored by R² on every step of each held-out
   store (degrees 1 and 3), next to the constant (the pretraining mean);
2. with --lam, V_t's pixels: a ridge regression (`latbot.analysis.diagnostics.transfer_ridge`, λ chosen on
   held-out pretraining tasks) from the first frame of each clip, averaged to each --pools size, to the clip's
   first gripper command, fit on --clips pretraining clips and scored on 128 clips of each held-out store, in
   the LAM's clip layout and normalised units.

    python tools/gripper_readout.py --pretrain S/stores/pretrain --heldout S/stores/heldout_s0 ... \\
        [--lam RUN] [--pools 16 32 64] [--arm right] [--json out.json]

R² is in units of the pretraining gripper command's spread; both references use the pretraining store only
to fit. A store without the arm's gripper (action or state) is refused with exit code 2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def finger_to_command(store_path, arm: str):
    """(finger opening, gripper command) of every step of a store, or a ValueError naming what is missing."""
    import numpy as np

    from latbot.data.spaces import ACTION_GRIPPER, STATE_GRIPPER
    from latbot.data.store import EpisodeStore

    a, s = ACTION_GRIPPER[arm], STATE_GRIPPER[arm]
    with EpisodeStore.open(store_path) as store:
        fingers, commands = [], []
        for record in store.iter_records():
            action_mask, state_mask = record.masks()
            if not (action_mask[a] and state_mask[s]):
                raise ValueError(f"{store_path}: episode {record.key} has no {arm} gripper action and state")
            fingers.append(store.read_rows("states", record.offset, record.stop)[:, s])
            commands.append(store.read_rows("actions", record.offset, record.stop)[:, a])
    return np.concatenate(fingers), np.concatenate(commands)


def main(argv: list[str] | None = None) -> int:
    import numpy as np

    from latbot.analysis.diagnostics import r2
    from latbot.errors import LatBotError

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pretrain", required=True, help="The pretraining store (fit).")
    parser.add_argument("--heldout", nargs="+", required=True, help="Held-out stores (scored).")
    parser.add_argument("--lam", default=None, help="A LAM run: adds the V_t pixel reference in its clip layout.")
    parser.add_argument("--pools", type=int, nargs="+", default=[16, 32, 64], help="Pixel sides V_t is averaged to.")
    parser.add_argument("--clips", type=int, default=1024, help="Pretraining clips the pixel ridge is fit on.")
    parser.add_argument("--arm", default="right", choices=["left", "right"])
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    try:
        x, y = finger_to_command(args.pretrain, args.arm)
        held = {path: finger_to_command(path, args.arm) for path in args.heldout}
    except (ValueError, OSError, LatBotError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    mean, spread = float(y.mean()), float(y.std()) or 1.0
    result: dict = {"finger_opening": {}, "pixels": {}}
    print("| held-out store | finger opening, degree 1 | degree 3 | constant |")
    print("|---|---|---|---|")
    fits = {deg: np.polyfit(x, y, deg) for deg in (1, 3)}
    for path, (xt, yt) in held.items():
        truth = (yt - mean) / spread
        row = {f"degree_{d}": r2((np.polyval(c, xt) - mean) / spread, truth) for d, c in fits.items()}
        row["constant"] = r2(np.zeros_like(truth), truth)
        result["finger_opening"][path] = row
        print(f"| {path} | {row['degree_1']:+.2f} | {row['degree_3']:+.2f} | {row['constant']:+.2f} |")
    if args.lam is not None:
        result["pixels"] = pixel_reference(args)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    return 0


def pixel_reference(args) -> dict:
    """V_t pixels → the first gripper command of each clip, per pool size and held-out store."""
    import numpy as np
    import torch
    from torch.utils.data import DataLoader, Subset

    from latbot.analysis.diagnostics import lam_clip_dataset, pixel_features, r2, slice_dims, transfer_ridge
    from latbot.data.clips import K_ACTION_MASK, K_ACTIONS, K_FRAMES, K_INSTRUCTION

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))

    def gather(store, n: int, seed: int):
        dataset = lam_clip_dataset(args.lam, store)
        picks = np.random.default_rng(seed).permutation(len(dataset))[:n]
        scenes = {p: [] for p in args.pools}
        actions, masks, tasks = [], [], []
        for batch in DataLoader(Subset(dataset, picks.tolist()), batch_size=64):
            for p in args.pools:
                scenes[p].append(pixel_features(batch[K_FRAMES], pool=p)[1])
            actions.append(batch[K_ACTIONS][:, 0].numpy()), masks.append(batch[K_ACTION_MASK].numpy())
            tasks.extend(batch[K_INSTRUCTION])
        return {p: np.concatenate(v) for p, v in scenes.items()}, np.concatenate(actions), np.concatenate(masks), tasks

    out: dict = {}
    train_x, train_a, train_m, tasks = gather(args.pretrain, args.clips, 0)
    print("\n| held-out store | " + " | ".join(f"V_t pixels at {p}²" for p in args.pools) + " | constant |")
    print("|---|" + "---|" * (len(args.pools) + 1))
    for path in args.heldout:
        test_x, test_a, test_m, _ = gather(path, 128, 1)
        dims = slice_dims(train_m.all(0) & test_m.all(0)).get(f"{args.arm}_gripper")
        if dims is None:
            print(f"error: {path}: no {args.arm} gripper in both stores' clips", file=sys.stderr)
            raise SystemExit(2)
        y_tr, y_te = train_a[:, dims], test_a[:, dims]
        row = {f"pool_{p}": transfer_ridge(train_x[p], y_tr, tasks, test_x[p], y_te)["r2"] for p in args.pools}
        row["constant"] = r2(np.zeros_like(y_te), y_te)
        out[path] = row
        cells = [f"{row[f'pool_{p}']:+.2f}" for p in args.pools] + [f"{row['constant']:+.2f}"]
        print(f"| {path} | " + " | ".join(cells) + " |")
    return out


if __name__ == "__main__":
    sys.exit(main())
