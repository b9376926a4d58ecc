"""Build LeRobot's own pi0.5 at a tiny random configuration and record a numerical fixture for LatBot.

    python tools/pi05_crosscheck/make_fixture.py            # writes tests/fixtures/pi05_tiny/

Run with any Python: the script creates /tmp/lerobot-venv (Python 3.12, `lerobot==0.6.1`,
`transformers==5.5.4`, from PyPI; kept out of the project venv and out of CI) if it is missing and
re-executes itself there. LeRobot offers only the real Gemma variants (gemma_2b / gemma_300m, vocabulary
257152, SigLIP So400m), so the script patches tiny dimensions into its builders before constructing
`PI05Policy` (dimensions: TINY below, the same as LatBot's `pi05` student / expert `tiny` presets), moves
every parameter off its initialisation (adaRMS projections are zero-initialised) and then writes:

    tests/fixtures/pi05_tiny/config.json          LeRobot's PI05Config, as `save_pretrained` writes it
    tests/fixtures/pi05_tiny/model.safetensors    LeRobot's checkpoint layout (keys `model.…`)
    tests/fixtures/pi05_crosscheck.safetensors    inputs and LeRobot's outputs (fp32):
        images (C, B, 3, S, S) in [-1, 1], img_masks (C, B), tokens (B, L), token_mask (B, L),
        actions (B, H, 32), noise (B, H, 32), time (B,)    → velocity (B, H, 32) of the training forward
                                                               (prefix and actions in one pass) at
                                                               x_t = t·noise + (1 − t)·actions,
                                                             velocity_cached (B, H, 32) (prefix KV cache),
        sample_noise (B, H, 32)                            → sampled (B, H, 32) (10 Euler steps, KV cache),
        state (B, 8) normalised                            → the prompts of LeRobot's state tokenizer step
    tests/fixtures/pi05_crosscheck.json           prompts and versions

tests/test_pi05.py loads the checkpoint through LatBot's loader and compares (fp32, within 1e-4).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

VENV = Path(os.environ.get("LEROBOT_VENV", "/tmp/lerobot-venv"))
PYTHON312 = "/root/.pyenv/versions/3.12.1/bin/python3"
PINS = ["lerobot==0.6.1", "transformers==5.5.4"]
FIXTURES = Path(__file__).resolve().parents[2] / "tests" / "fixtures"
OUT = FIXTURES / "pi05_tiny"  # the checkpoint directory, exactly as LeRobot writes it

# LatBot's tiny pi0.5 (latbot/models/pi05/student.py and expert.py `tiny` presets). LeRobot's shared
# attention hard-codes 8 query heads (`1 * 8 * head_dim`), so the tiny models keep 8 heads.
TINY = {
    "vlm": {"width": 32, "depth": 2, "mlp_dim": 64, "num_heads": 8, "num_kv_heads": 1, "head_dim": 8},
    "expert": {"width": 16, "depth": 2, "mlp_dim": 32, "num_heads": 8, "num_kv_heads": 1, "head_dim": 8},
    "vision": {
        "hidden_size": 16,
        "intermediate_size": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "patch_size": 8,
    },
    "image_size": 32,
    "vocab_size": 448,  # LatBot's tiny tokenizer with pi0.5's prompt words and the 256 state bins
    "chunk_size": 4,
    "batch": 2,
    "text_len": 7,
}


def ensure_venv() -> None:
    """Re-execute inside the LeRobot venv (created on first use)."""
    if Path(sys.prefix).resolve() == VENV.resolve():
        return
    python = VENV / "bin" / "python"
    if not python.exists():
        subprocess.run([PYTHON312, "-m", "venv", str(VENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", *PINS], check=True)
    os.execv(str(python), [str(python), __file__, *sys.argv[1:]])


def patch_tiny() -> None:
    """Swap LeRobot's real-size builders for the tiny dimensions (its own classes, smaller configs)."""
    from lerobot.policies.pi05 import modeling_pi05 as m

    class Dims:
        def __init__(self, d):
            self.__dict__.update(d)

    m.get_gemma_config = lambda variant: Dims(TINY["vlm"] if variant == "gemma_2b" else TINY["expert"])
    paligemma_cls, expert_cls = m.PaliGemmaForConditionalGenerationWithPiGemma, m.PiGemmaForCausalLM

    def paligemma(config):
        for k, v in TINY["vision"].items():
            setattr(config.vision_config, k, v)
        config.vision_config.projection_dim = config.projection_dim = TINY["vlm"]["width"]
        config.text_config.vocab_size = config._vocab_size = TINY["vocab_size"]
        return paligemma_cls(config)

    def expert(config):
        config.vocab_size = TINY["vocab_size"]
        return expert_cls(config)

    m.PaliGemmaForConditionalGenerationWithPiGemma, m.PiGemmaForCausalLM = paligemma, expert


def main() -> None:
    ensure_venv()
    import json

    import numpy as np
    import torch
    from safetensors.torch import save_file

    patch_tiny()
    import lerobot
    import transformers
    from lerobot.configs.types import FeatureType, PolicyFeature
    from lerobot.policies.pi05.configuration_pi05 import PI05Config
    from lerobot.policies.pi05.modeling_pi05 import PI05Policy
    from lerobot.policies.pi05.processor_pi05 import Pi05PrepareStateTokenizerProcessorStep

    torch.manual_seed(0)
    s, b, h = TINY["image_size"], TINY["batch"], TINY["chunk_size"]
    cameras = ["base_0_rgb", "left_wrist_0_rgb"]
    config = PI05Config(
        input_features={f"observation.images.{c}": PolicyFeature(FeatureType.VISUAL, (3, s, s)) for c in cameras},
        output_features={"action": PolicyFeature(FeatureType.ACTION, (7,))},
        chunk_size=h,
        n_action_steps=h,
        image_resolution=(s, s),
        dtype="float32",
        device="cpu",
    )
    policy = PI05Policy(config).eval()
    with torch.no_grad():  # off the initialisation: adaRMS projections start at zero, norms at one
        for p in policy.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    OUT.mkdir(parents=True, exist_ok=True)
    policy.save_pretrained(OUT)
    model = policy.model

    g = torch.Generator().manual_seed(1)
    n = TINY["text_len"]
    images = torch.rand(len(cameras), b, 3, s, s, generator=g) * 2 - 1
    img_masks = torch.ones(len(cameras), b, dtype=torch.bool)
    tokens = torch.randint(1, TINY["vocab_size"], (b, n), generator=g)
    token_mask = torch.ones(b, n, dtype=torch.bool)
    token_mask[1, n - 3 :] = False  # the second prompt is shorter (right padding, as LeRobot's tokenizer)
    tokens[1, n - 3 :] = 0
    actions = torch.randn(b, h, config.max_action_dim, generator=g)
    noise = torch.randn(b, h, config.max_action_dim, generator=g)
    time = torch.tensor([0.3, 0.85])
    sample_noise = torch.randn(b, h, config.max_action_dim, generator=g)
    state = torch.rand(b, 8, generator=g) * 2 - 1

    captured = {}
    hook = model.action_out_proj.register_forward_hook(lambda mod, inp, out: captured.__setitem__("v", out.detach()))
    args = (list(images), list(img_masks), tokens, token_mask)
    with torch.no_grad():
        model.forward(*args, actions, noise, time)  # prefix and suffix in one pass (training path)
        velocity = captured["v"].clone()
        hook.remove()
        x_t = time[:, None, None] * noise + (1 - time[:, None, None]) * actions
        velocity_cached = _cached_velocity(model, args, x_t, time)
        sampled = model.sample_actions(*args, noise=sample_noise.clone())

    prompts = _prompts(Pi05PrepareStateTokenizerProcessorStep, state, ["pick_up the\nblack bowl ", "open drawer"])
    save_file(
        {
            "images": images, "img_masks": img_masks, "tokens": tokens, "token_mask": token_mask,
            "actions": actions, "noise": noise, "time": time, "velocity": velocity,
            "velocity_cached": velocity_cached, "sample_noise": sample_noise, "sampled": sampled.float(),
            "state": state,
        },
        str(FIXTURES / "pi05_crosscheck.safetensors"),
    )  # fmt: skip
    meta = {
        "lerobot": lerobot.__version__,
        "transformers": transformers.__version__,
        "torch": torch.__version__,
        "tiny": TINY,
        "tasks": ["pick_up the\nblack bowl ", "open drawer"],
        "prompts": prompts,
        "joint_vs_cached_max_abs": float((velocity - velocity_cached).abs().max()),
    }
    (FIXTURES / "pi05_crosscheck.json").write_text(json.dumps(meta, indent=2) + "\n")
    sizes = {p.name: p.stat().st_size for p in [*OUT.iterdir(), *FIXTURES.glob("pi05_crosscheck.*")]}
    print(json.dumps({"out": str(OUT), "bytes": sizes, **meta}, indent=2))
    np.testing.assert_allclose(velocity.numpy(), velocity_cached.numpy(), atol=1e-5)


def _cached_velocity(model, args, x_t, time):
    """LeRobot's inference path for one step: the prefix once into a KV cache, then `denoise_step`."""
    import torch
    from lerobot.policies.common.vla_utils import make_att_2d_masks, prepare_attention_masks_4d

    embs, pad, att = model.embed_prefix(*args)
    mask4d = prepare_attention_masks_4d(make_att_2d_masks(pad, att))
    _, cache = model.paligemma_with_expert.forward(
        attention_mask=mask4d,
        position_ids=torch.cumsum(pad, dim=1) - 1,
        past_key_values=None,
        inputs_embeds=[embs, None],
        use_cache=True,
    )
    return model.denoise_step(prefix_pad_masks=pad, past_key_values=cache, x_t=x_t, timestep=time)


def _prompts(step_cls, state, tasks):
    from lerobot.lerobot_types import TransitionKey

    step = step_cls(max_state_dim=32)
    out = step(
        {TransitionKey.OBSERVATION: {"observation.state": state}, TransitionKey.COMPLEMENTARY_DATA: {"task": tasks}}
    )
    return out[TransitionKey.COMPLEMENTARY_DATA]["task"]


if __name__ == "__main__":
    main()
