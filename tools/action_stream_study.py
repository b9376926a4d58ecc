"""Run a pre-registered action-stream study (`latbot.study.action_stream`): train one LAM per seed with the
study file's recipe and overrides, score each one's action stream on its held-out store, and report the
file's primary and secondary comparisons over seeds (t-interval, exact sign-flip p, Holm).

    python tools/action_stream_study.py recipes/studies/prereg3_action_stream.yaml --out studies/prereg3 \\
        --pretrain S/stores/pretrain --heldout S/stores/heldout_s0 ... S/stores/heldout_s4

The same as `latbot study STUDY.yaml --out DIR --pretrain STORE --heldout STORE --heldout STORE ...` (this is
the command recipes/studies/prereg3_action_stream.yaml and prereg4_gripper_holds.yaml were registered with).
Run it again to resume: finished LAMs and cached scores are kept; `latbot study STUDY.yaml --out DIR --status`
shows how far each seed is. Set OMP_NUM_THREADS for the training and scoring threads. Bad input (a wrong
field in the study file, a missing store, a run directory of other settings under --out) stops it with one
line and exit code 2.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main(argv: list[str] | None = None) -> int:
    import torch

    from latbot.errors import LatBotError
    from latbot.study.action_stream import run_study

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("study", type=Path, help="The action-stream study file.")
    parser.add_argument("--out", type=Path, required=True, help="Output folder (runs, scores, report).")
    parser.add_argument("--pretrain", type=Path, required=True, help="The episode store the LAMs train on.")
    parser.add_argument("--heldout", type=Path, nargs="+", required=True, help="One held-out store per seed.")
    args = parser.parse_args(argv)
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    try:
        report = run_study(args.study, args.out, args.pretrain, args.heldout)
    except LatBotError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(report.read_text())
    print(f"report: {report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
