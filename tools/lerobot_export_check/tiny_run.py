"""A tiny LatBot pi0.5 finetuning run, made deterministically without data or training, and its LeRobot export.

    .venv/bin/python tools/lerobot_export_check/tiny_run.py [FIXTURE_DIR]

Runs in the project venv (check.py calls it first). `make_run` writes a finished `finetune` run of
recipes/tiny/baseline_pi05.yaml (the tiny pi05 student without latent queries + the tiny pi05 expert, 32
action slots, discrete state, horizon 4, two cameras at 32×32) for the `sawyer` embodiment, with every
parameter drawn from a seeded generator (nothing at its initialisation: adaRMS projections start at zero)
and synthetic store statistics (one state dim degenerate, so LatBot passes it through). The script then
exports it with `latbot export --format lerobot` into FIXTURE_DIR/checkpoint/ (default
tests/fixtures/lerobot_export/) and writes the fixed inputs of the cross-check into FIXTURE_DIR/inputs.safetensors:
images (N, S, S, 3) uint8 per camera, native states (N, 4), seeds (N,) and the noise LatBotPolicy draws for
each seed, in LeRobot's action-slot order (N, H, 32); the tasks go to FIXTURE_DIR/inputs.json.

tests/test_export_lerobot.py imports `make_run` to rebuild the same run (and the variants it refuses).
"""

from __future__ import annotations

import json
import math
import shutil
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
FIXTURE = REPO / "tests" / "fixtures" / "lerobot_export"
CAMERAS = ["corner", "wrist"]
IMAGE = 32
HORIZON = 4
TASKS = ["reach the goal", "open the drawer", "pick_up the\nblack bowl "]
SEEDS = [0, 1, 2]


def target(embodiment: str = "sawyer") -> dict:
    """What a store of MetaWorld Sawyer demonstrations would give the finetuning stage (synthetic numbers);
    another embodiment gets quantiles ±0.5 (grippers 0 … 1)."""
    from latbot.data.embodiments import get
    from latbot.data.spaces import ACTION_DIM, GRIPPER_DIMS, STATE_DIM, STATE_GRIPPER

    emb = get(embodiment)
    am, sm = emb.action_mask, emb.state_mask

    def stats(dim, mask, q01, q99):
        out = {k: [None] * dim for k in ("mean", "std", "min", "max", "q01", "q99")}
        for d, lo, hi in zip(mask.nonzero()[0], q01, q99, strict=True):
            out["q01"][d], out["q99"][d] = lo, hi
            out["min"][d], out["max"][d] = lo - 0.05, hi + 0.05
            out["mean"][d], out["std"][d] = (lo + hi) / 2, max((hi - lo) / 4, 1e-9)
        return out

    if embodiment == "sawyer":  # actions: dx, dy, dz, gripper; states: x, y, z (constant: passed through), closure
        actions = stats(ACTION_DIM, am, [-0.6, -0.5, -0.7, 0.0], [0.7, 0.4, 0.9, 1.0])
        states = stats(STATE_DIM, sm, [-0.3, 0.4, 0.15, 0.05], [0.3, 0.9, 0.15, 0.95])
    else:
        grip_a, grip_s = set(GRIPPER_DIMS), set(STATE_GRIPPER.values())
        a_dims, s_dims = am.nonzero()[0], sm.nonzero()[0]
        actions = stats(
            ACTION_DIM,
            am,
            [0.0 if d in grip_a else -0.5 for d in a_dims],
            [1.0 if d in grip_a else 0.5 for d in a_dims],
        )
        states = stats(
            STATE_DIM, sm, [0.0 if d in grip_s else -0.5 for d in s_dims], [1.0 if d in grip_s else 0.5 for d in s_dims]
        )
    return {
        "embodiment": embodiment,
        "action_mask": am.tolist(),
        "state_mask": sm.tolist(),
        "cameras": CAMERAS,
        "image_size": [IMAGE, IMAGE],
        "native_action_dim": emb.native_action_dim,
        "native_state_dim": emb.native_state_dim,
        "stats": {"actions": actions, "states": states, "num_frames": 1000},
        "tasks": sorted({t.strip() for t in TASKS}),
    }


def make_run(root: Path, name: str = "tiny_pi05", sets: tuple[str, ...] = (), recipe: str = "baseline_pi05.yaml",
             seed: int = 0, weights: bool = True, embodiment: str = "sawyer") -> Path:  # fmt: skip
    """A finished finetuning run in root/name. `sets`: recipe overrides (the refused variants); `weights`
    False writes a placeholder tensor instead of the model (for runs refused before their weights are read)."""
    import torch

    from latbot import registry, runs
    from latbot.recipes import load_recipe

    root = Path(root)
    overrides = [
        f"log.out_dir={root}", f"log.run_name={name}", "log.progress=false", f"data.image_size={IMAGE}",
        f"data.sources=[{{store: {root / 'no-store'}}}]", f"data.cameras={json.dumps(CAMERAS)}",
        f"model.action_horizon={HORIZON}", *sets,
    ]  # fmt: skip
    r = load_recipe(REPO / "recipes" / "tiny" / recipe, overrides)
    run_dir = root / name
    if weights:
        torch.manual_seed(seed)
        model = registry.get("stages", "finetune")(r).architecture()
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for pname, p in sorted(model.named_parameters()):
                if p.ndim >= 2:
                    p.copy_(torch.randn(p.shape, generator=g) / math.sqrt(math.prod(p.shape[1:])))
                else:  # norms around their identity, biases small
                    layer_norm = "vision_tower" in pname and "norm" in pname and pname.endswith("weight")
                    p.copy_(torch.randn(p.shape, generator=g) * 0.1 + (1.0 if layer_norm else 0.0))
        state = model.state_dict()
    else:
        state = {"placeholder": torch.zeros(1)}
    runs.create_run(run_dir, r, [], {})
    runs.finish_run(run_dir, state, {"target": target(embodiment), "latent_width": None, "steps": 0, "pretrained": {}})
    return run_dir


def observations() -> list[dict]:
    """The cross-check's observations: random images, native Sawyer states (position, gripper opening)."""
    import numpy as np

    rng = np.random.default_rng(7)
    out = []
    for task in TASKS:
        state = np.array([rng.uniform(-0.35, 0.35), rng.uniform(0.35, 0.95), rng.uniform(0.0, 0.3),
                          rng.uniform(0.0, 1.0)], np.float32)  # fmt: skip
        images = {c: rng.integers(0, 256, (IMAGE, IMAGE, 3), dtype=np.uint8) for c in CAMERAS}
        out.append({"images": images, "state": state, "instruction": task})
    return out


def latbot_noise(seed: int, action_dim: int):
    """The noise `Pi05ActionExpert.sample` draws for `LatBotPolicy.predict(..., seed=seed)` (batch 1)."""
    import torch

    return torch.randn((1, HORIZON, action_dim), generator=torch.Generator().manual_seed(seed), device="cpu")[0]


# machine paths the export writes, replaced in the committed fixture (check.py passes the tokenizer itself)
SOURCE_RUN = "<a temporary run made by tools/lerobot_export_check/tiny_run.py>"
TOKENIZER_NAME = "<the checkpoint's tokenizer/ folder>"


def _set_json(path: Path, where: tuple, value) -> None:
    data = json.loads(path.read_text())
    node = data
    for key in where[:-1]:
        node = node[key]
    node[where[-1]] = value
    path.write_text(json.dumps(data, indent=4) + "\n")


def main(fixture: Path = FIXTURE) -> None:
    import tempfile

    import numpy as np
    import torch
    from safetensors.torch import save_file
    from typer.testing import CliRunner

    from latbot.cli import app

    fixture.mkdir(parents=True, exist_ok=True)
    out = fixture / "checkpoint"
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = make_run(Path(tmp))
        shutil.rmtree(out, ignore_errors=True)
        result = CliRunner().invoke(app, ["export", str(run_dir), "--format", "lerobot", "--out", str(out)])
        print(result.output)
        if result.exit_code:
            raise SystemExit(f"export failed ({result.exit_code})")
    _set_json(out / "latbot_export.json", ("source_run",), SOURCE_RUN)
    _set_json(out / "policy_preprocessor.json", ("steps", 5, "config", "tokenizer_name"), TOKENIZER_NAME)
    record = json.loads((out / "latbot_export.json").read_text())
    config = json.loads((out / "config.json").read_text())
    slots = torch.tensor(record["action_slots"])
    obs = observations()
    tensors = {
        "state": torch.from_numpy(np.stack([o["state"] for o in obs])),
        "seeds": torch.tensor(SEEDS),
        # LeRobot's slot j is LatBot's packed slot slots[j]
        "noise": torch.stack([latbot_noise(s, config["max_action_dim"])[:, slots] for s in SEEDS]),
    }
    for c in CAMERAS:
        tensors[f"images.{c}"] = torch.from_numpy(np.stack([o["images"][c] for o in obs]))
    save_file(tensors, str(fixture / "inputs.safetensors"))
    (fixture / "inputs.json").write_text(json.dumps({"tasks": TASKS, "cameras": CAMERAS}, indent=2) + "\n")
    print(f"wrote {out} and {fixture / 'inputs.safetensors'}")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else FIXTURE)
