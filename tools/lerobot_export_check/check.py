"""Check `latbot export --format lerobot` with LeRobot's own code, and record the fixture of the default suite.

    python tools/lerobot_export_check/check.py            # writes tests/fixtures/lerobot_export/

1. In the project venv (`LATBOT_PYTHON`, default .venv/bin/python): tiny_run.py makes the tiny LatBot pi0.5
   finetuning run (deterministic, no data), exports it with `latbot export RUN --format lerobot` into
   tests/fixtures/lerobot_export/checkpoint/, and writes the fixed inputs (images, native states, tasks,
   and the noise LatBotPolicy draws for each seed, in LeRobot's slot order).
2. In /tmp/lerobot-venv (Python 3.12, lerobot==0.6.1; the script re-executes itself there, creating the
   venv as tools/pi05_crosscheck/make_fixture.py does): LeRobot's builders are patched to the tiny sizes
   (make_fixture's `patch_tiny`: stock LeRobot builds only gemma_2b / gemma_300m), then
   `PI05Policy.from_pretrained(checkpoint)` (every tensor compared with the file afterwards: LeRobot's
   loader reports a failed load only by printing), `make_pre_post_processors(config, pretrained_path=…)`
   (the exported policy_preprocessor.json / policy_postprocessor.json and their statistics; the exported
   tokenizer passed as the tokenizer step's override), and for each observation
   preprocessor → `predict_action_chunk(batch, noise=…)` → postprocessor. It writes:

    tests/fixtures/lerobot_export/crosscheck.safetensors   tokens, token_mask (N, L): LeRobot's tokenised prompts;
        normalized (N, H, A): the policy's output before the postprocessor; actions (N, H, A): native actions
    tests/fixtures/lerobot_export/crosscheck.json          LeRobot's prompts, versions, what was checked

tests/test_export_lerobot.py (default suite, no LeRobot) rebuilds the run, re-exports it (the files must equal
the committed ones) and compares LatBotPolicy's actions for the same inputs and noise with LeRobot's.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
FIXTURE = REPO / "tests" / "fixtures" / "lerobot_export"
VENV = Path(os.environ.get("LEROBOT_VENV", "/tmp/lerobot-venv"))
PYTHON312 = "/root/.pyenv/versions/3.12.1/bin/python3"  # as tools/pi05_crosscheck/make_fixture.py
PINS = ["lerobot==0.6.1", "transformers==5.5.4"]
LATBOT_PYTHON = Path(os.environ.get("LATBOT_PYTHON", REPO / ".venv" / "bin" / "python"))


def in_lerobot_venv() -> bool:
    return Path(sys.prefix).resolve() == VENV.resolve()


def main() -> None:
    if "--lerobot" not in sys.argv:  # step 1, then this script again in the LeRobot venv
        subprocess.run([str(LATBOT_PYTHON), str(HERE / "tiny_run.py"), str(FIXTURE)], check=True)
        if not in_lerobot_venv():
            python = VENV / "bin" / "python"
            if not python.exists():
                subprocess.run([PYTHON312, "-m", "venv", str(VENV)], check=True)
                subprocess.run([str(python), "-m", "pip", "install", "-q", *PINS], check=True)
            os.execv(str(python), [str(python), __file__, "--lerobot"])
    lerobot_side()


def lerobot_side() -> None:
    import numpy as np
    import torch
    from safetensors.torch import load_file, save_file

    sys.path.insert(0, str(REPO / "tools" / "pi05_crosscheck"))
    from make_fixture import patch_tiny

    patch_tiny()  # the tiny run's sizes are make_fixture's TINY (LatBot's `tiny` presets)
    import lerobot
    import transformers
    from lerobot.policies.factory import make_pre_post_processors
    from lerobot.policies.pi05.modeling_pi05 import PI05Policy

    ckpt = FIXTURE / "checkpoint"
    policy = PI05Policy.from_pretrained(str(ckpt)).eval()
    stored = load_file(str(ckpt / "model.safetensors"))
    own = policy.state_dict()
    assert set(own) == set(stored), sorted(set(own) ^ set(stored))[:8]
    unequal = [k for k, v in stored.items() if not torch.equal(own[k], v.to(own[k].dtype))]
    assert not unequal, f"LeRobot did not load {unequal[:8]}"

    tokenizer = transformers.AutoTokenizer.from_pretrained(str(ckpt / "tokenizer"))
    pre, post = make_pre_post_processors(
        policy.config,
        pretrained_path=str(ckpt),
        preprocessor_overrides={"tokenizer_processor": {"tokenizer": tokenizer}},
    )
    inputs = load_file(str(FIXTURE / "inputs.safetensors"))
    meta = json.loads((FIXTURE / "inputs.json").read_text())
    rows = {"tokens": [], "token_mask": [], "normalized": [], "actions": []}
    prompts = []
    for i, task in enumerate(meta["tasks"]):
        obs = {
            f"observation.images.{c}": inputs[f"images.{c}"][i].permute(2, 0, 1).float() / 255.0
            for c in meta["cameras"]
        }
        obs["observation.state"] = inputs["state"][i]
        obs["task"] = task
        batch = pre(obs)
        prompts.append(_prompt(pre, obs))
        with torch.no_grad():
            normalized = policy.predict_action_chunk(batch, noise=inputs["noise"][i][None].clone())
        actions = post(normalized)
        rows["tokens"].append(batch["observation.language.tokens"][0])
        rows["token_mask"].append(batch["observation.language.attention_mask"][0])
        rows["normalized"].append(normalized[0].float())
        rows["actions"].append(actions[0].float())
    save_file({k: torch.stack(v).contiguous() for k, v in rows.items()}, str(FIXTURE / "crosscheck.safetensors"))
    record = {
        "lerobot": lerobot.__version__,
        "transformers": transformers.__version__,
        "torch": torch.__version__,
        "checked": "PI05Policy.from_pretrained (every tensor equal to the file), make_pre_post_processors from the "
        "exported processor files, preprocessor → predict_action_chunk(noise) → postprocessor",
        "prompts": prompts,
        "actions_range": [float(torch.stack(rows["actions"]).min()), float(torch.stack(rows["actions"]).max())],
    }
    (FIXTURE / "crosscheck.json").write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record, indent=2))
    print(np.round(torch.stack(rows["actions"]).numpy(), 4))


def _prompt(pre, obs) -> str:
    """The prompt LeRobot's state-tokenizer step writes (the pipeline run up to that step)."""
    from lerobot.lerobot_types import TransitionKey

    for step, transition in zip(pre.steps, pre.step_through(obs), strict=False):
        if type(step).__name__ == "TokenizerProcessorStep":
            return transition[TransitionKey.COMPLEMENTARY_DATA]["task"][0]
    raise AssertionError("no tokenizer step in the preprocessor")


if __name__ == "__main__":
    main()
