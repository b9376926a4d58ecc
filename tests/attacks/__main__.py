"""`python -m tests.attacks [--only CLASS] [--fast] [--json F] [--tree DIR]`: run the attack suite, print the
table by class (and each case that did not end clean or handled)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.attacks", description=__doc__)
    p.add_argument("--only", action="append", default=[], help="a class (repeatable)")
    p.add_argument("--fast", action="store_true", help="only the cases of the default test run")
    p.add_argument("--json", type=Path, help="write one row per case here")
    p.add_argument("--tree", type=Path, help="run against the `latbot/` of another checkout (e.g. a git worktree)")
    args = p.parse_args(argv)
    if args.tree is not None:
        from tests.attacks import use_tree

        sys.path.insert(0, str(args.tree.resolve()))
        use_tree()
    from tests.attacks import GOOD, load_all, run_attack, table

    cases = [a for a in load_all() if (not args.only or a.cls in args.only) and (a.fast or not args.fast)]
    rows, records = [], []
    for i, a in enumerate(cases, 1):
        t0 = time.perf_counter()
        outcome, why = run_attack(a, args.tree.resolve() if args.tree else None)
        dt = time.perf_counter() - t0
        rows.append((a, outcome))
        records.append({"class": a.cls, "case": a.name, "outcome": outcome, "why": why, "seconds": round(dt, 2)})
        mark = "" if outcome in GOOD else f"  ← {why.strip().splitlines()[-1][:160] if why.strip() else ''}"
        print(f"[{i}/{len(cases)}] {outcome:9s} {dt:5.1f}s  {a.id}{mark}", flush=True)
    print()
    print(table(rows))
    if args.json:
        args.json.write_text(json.dumps(records, indent=2) + "\n")
    return 0 if all(o in GOOD for _, o in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
