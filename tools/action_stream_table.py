"""Does a LAM's action stream read the motion? The table of docs/models.md ("Does the action stream read the
motion?"): for each LAM, `latbot.analysis.diagnostics.diagnose_checkpoint`'s action-stream R² (mean of 8 draws)
on its pretraining clips and on held-out tasks, normal and with the encoder's input altered (frames frozen at
V_t; another task's instruction), and what a linear model reads from the pixels: a ridge regression from raw
frame differences fit on the LAM's pretraining clips, scored on the held-out tasks
(`latbot.analysis.diagnostics.pixel_motion_reference`; with V_t's pixels added as well). A second table splits the
held-out R² by unified slice (position, gripper, …).

    python tools/action_stream_table.py --heldout QS/stores/heldout --samples 128 \\
        "before=OLD_QS/runs/lam:OLD_QS/stores/pretrain" "now=QS/runs/lam:QS/stores/pretrain" [--json out.json]

Each LAM is LABEL=RUN:PRETRAIN_STORE (the store it was trained on). Prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> None:
    import torch

    from latbot.analysis.diagnostics import diagnose_checkpoint, pixel_motion_reference

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("lams", nargs="+", help="LABEL=RUN:PRETRAIN_STORE")
    parser.add_argument("--heldout", required=True, help="Store of held-out tasks (clean demonstrations).")
    parser.add_argument("--samples", type=int, default=128)
    parser.add_argument("--json", default=None, help="Also write the numbers here.")
    args = parser.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    rows = {}
    for spec in args.lams:
        label, _, rest = spec.partition("=")
        run, _, pretrain = rest.partition(":")
        rows[label] = {
            name: diagnose_checkpoint(run, store, samples=args.samples)["action_stream_r2"]
            for name, store in (("pretrain", pretrain), ("heldout", args.heldout))
        }
        rows[label]["pixels"] = pixel_motion_reference(run, pretrain, args.heldout, test_clips=args.samples)
    keys = ("mean_of_samples", "frames_frozen", "instruction_swapped")
    print("| LAM | pretraining clips: normal / frames frozen / instruction swapped | held-out: normal / frames frozen "
          "/ instruction swapped | held-out: constant / copy first action | held-out: pixel ridge on motion / on "
          "motion + scene |")  # fmt: skip
    print("|---|---|---|---|---|")
    for label, r in rows.items():
        p, h, px = r["pretrain"], r["heldout"], r["pixels"]
        pixels = f"{px['motion']['r2']:+.2f} / {px['scene_and_motion']['r2']:+.2f}"
        if p is None or h is None:
            print(f"| {label} | no action stream (unified_decoder: false) | | | {pixels} |")
            continue
        print(
            f"| {label} | " + " / ".join(f"{p[k]:+.2f}" for k in keys) + " | "
            + " / ".join(f"{h[k]:+.2f}" for k in keys)
            + f" | {h['constant']:+.2f} / {h['copy_first']:+.2f} | {pixels} |"
        )  # fmt: skip
    print("\nHeld-out R² within each unified slice (the pooled value weighs each slice by its variance):\n")
    print("| LAM | slice | stream: mean of draws | frames frozen | constant | pixel ridge on motion |")
    print("|---|---|---|---|---|---|")
    for label, r in rows.items():
        h, px = r["heldout"], r["pixels"]["motion"].get("per_group", {})
        for name, sl in (h or {}).get("per_slice", {}).items():
            ridge = f"{px[name]:+.2f}" if name in px else "—"
            print(
                f"| {label} | {name} | {sl['mean_of_samples']:+.2f} | {sl.get('frames_frozen', float('nan')):+.2f} "
                f"| {sl['constant']:+.2f} | {ridge} |"
            )
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"samples": args.samples, "heldout": args.heldout, "lams": rows}, f, indent=1)


if __name__ == "__main__":
    main()
