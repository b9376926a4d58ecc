"""Build openpi's own PyTorch pi0.5 (`PI0Pytorch`, pi05=True) at a tiny random configuration and record a
numerical fixture for LatBot.

    python tools/openpi_crosscheck/make_fixture.py          # writes tests/fixtures/openpi_tiny/

Run with any Python: the script creates /tmp/openpi-venv (Python 3.12) if it is missing and re-executes
itself there. The venv holds what openpi's PyTorch model imports, at the versions openpi's pyproject.toml
pins (PINS below: `torch==2.7.1`, `transformers==4.53.2`; `openpi.models.gemma`, which `pi0_pytorch`
imports for its `Config`, and `openpi.models.model`, which `pi0_config` imports, need jax / flax —
installed as `jax[cpu]`), then openpi's `transformers_replace/` copied over the installed transformers as
openpi's README instructs (adaRMS `GemmaRMSNorm`, gated residuals, its PaliGemma / SigLIP). openpi itself
is not installed: its `src/` comes from a git checkout (OPENPI_REPO, default the local snapshot of
github.com/Physical-Intelligence/openpi; cloned when absent) and goes on PYTHONPATH. Kept out of the
project venv and out of CI.

openpi offers only the real Gemma variants (gemma_2b / gemma_300m, vocabulary 257152, SigLIP So400m), so
the script patches tiny dimensions into its builders before constructing `PI0Pytorch` (dimensions: TINY of
tools/pi05_crosscheck/make_fixture.py, the same as LatBot's `pi05` student / expert `tiny` presets), moves
every parameter off its initialisation (adaRMS projections are zero-initialised) and then writes:

    tests/fixtures/openpi_tiny/model.safetensors  openpi's checkpoint, written as openpi writes it
                                                  (`safetensors.torch.save_model(model, "model.safetensors")`
                                                  in scripts/train_pytorch.py and
                                                  examples/convert_jax_model_to_pytorch.py: `PI0Pytorch`'s own
                                                  tensor names, no `model.` prefix, tied tensors once)
    tests/fixtures/openpi_tiny/config.json        the reference config.json the conversion script writes
                                                  (action_dim, action_horizon, variants, precision)
    tests/fixtures/openpi_crosscheck.safetensors  inputs and openpi's outputs (fp32):
        images (C, B, 3, S, S) in [-1, 1] (openpi's three cameras), img_masks (C, B), tokens (B, L),
        token_mask (B, L), state (B, 32), actions (B, H, 32), noise (B, H, 32), time (B,)
                               → velocity (B, H, 32): `PI0Pytorch.forward` (prefix and actions in one
                                 pass) at x_t = t·noise + (1 − t)·actions, read at `action_out_proj`,
                                 loss (B, H, 32): what `forward` returns, (noise − actions − velocity)²,
                                 velocity_cached (B, H, 32): the prefix KV cache, then `denoise_step`,
        sample_noise (B, H, 32) → sampled (B, H, 32): `sample_actions` (10 Euler steps, KV cache)
    tests/fixtures/openpi_crosscheck.json         versions, openpi's commit, the key layout

`forward` preprocesses with `train=True`, which adds the data pipeline's random image augmentation (crop,
rotation, colour); the script runs openpi's preprocessing with `train=False` so the recorded velocity is
the model's, deterministic. Everything else is openpi's code as is.

tests/test_openpi_import.py loads the checkpoint through LatBot's loader and compares (fp32, within 1e-4).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

VENV = Path(os.environ.get("OPENPI_VENV", "/tmp/openpi-venv"))
PYTHON312 = "/root/.pyenv/versions/3.12.1/bin/python3"
# openpi's pyproject.toml pins (torch, transformers, jax, flax, jaxtyping, beartype, numpy) and uv overrides
# (ml-dtypes, tensorstore); jax is the CPU build; augmax for openpi.models.model (imported by pi0_config)
PINS = [
    "torch==2.7.1", "transformers==4.53.2", "jax[cpu]==0.5.3", "flax==0.10.2", "jaxtyping==0.2.36",
    "beartype==0.19.0", "einops>=0.8.0", "numpy>=1.22.4,<2.0.0", "ml-dtypes==0.4.1", "tensorstore==0.1.74",
    "orbax-checkpoint==0.11.13", "augmax>=0.3.4", "safetensors",
]  # fmt: skip
OPENPI_REPO = Path(os.environ.get("OPENPI_REPO", "/work/.mirror/Physical-Intelligence+openpi/repo"))
OPENPI_SRC = VENV / "openpi-src"  # `git archive` of OPENPI_REPO's HEAD: src/openpi
FIXTURES = Path(__file__).resolve().parents[2] / "tests" / "fixtures"
OUT = FIXTURES / "openpi_tiny"  # the checkpoint directory, as openpi writes it

TINY = {
    "vlm": {"width": 32, "depth": 2, "mlp_dim": 64, "num_heads": 8, "num_kv_heads": 1, "head_dim": 8},
    "expert": {"width": 16, "depth": 2, "mlp_dim": 32, "num_heads": 8, "num_kv_heads": 1, "head_dim": 8},
    "vision": {
        "hidden_size": 16,
        "intermediate_size": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "patch_size": 8,
        "image_size": 32,
    },
    "image_size": 32,
    "vocab_size": 448,
    "chunk_size": 4,
    "batch": 2,
    "text_len": 7,
}


def _git(*args: str) -> str:
    return subprocess.run(["git", *args], check=True, capture_output=True, text=True).stdout.strip()


def ensure_venv() -> None:
    """Re-execute inside the openpi venv (created on first use) with openpi's src/ on PYTHONPATH."""
    if Path(sys.prefix).resolve() == VENV.resolve() and str(OPENPI_SRC / "src") in sys.path:
        return
    python = VENV / "bin" / "python"
    if not python.exists():
        subprocess.run([PYTHON312, "-m", "venv", str(VENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", *PINS], check=True)
    if not (OPENPI_SRC / "src" / "openpi").is_dir():
        repo = OPENPI_REPO
        if not repo.exists():
            repo = VENV / "openpi-git"
            subprocess.run(["git", "clone", "https://github.com/Physical-Intelligence/openpi", str(repo)], check=True)
        OPENPI_SRC.mkdir(parents=True, exist_ok=True)
        archive = subprocess.run(
            ["git", "-C", str(repo), "archive", "HEAD", "src/openpi"], check=True, capture_output=True
        )
        subprocess.run(["tar", "-x", "-C", str(OPENPI_SRC)], input=archive.stdout, check=True)
        (OPENPI_SRC / "COMMIT").write_text(_git("-C", str(repo), "rev-parse", "HEAD") + "\n")
    site = subprocess.run(
        [str(python), "-c", "import transformers, os; print(os.path.dirname(transformers.__file__))"],
        check=True, capture_output=True, text=True,
    ).stdout.strip()  # fmt: skip
    if not (Path(site) / "models" / "siglip" / "check.py").exists():  # openpi's README: cp -r transformers_replace/*
        replace = OPENPI_SRC / "src" / "openpi" / "models_pytorch" / "transformers_replace"
        subprocess.run(["cp", "-r", *map(str, replace.iterdir()), site + "/"], check=True)
    env = dict(os.environ, PYTHONPATH=str(OPENPI_SRC / "src"), JAX_PLATFORMS="cpu")
    os.execve(str(python), [str(python), __file__, *sys.argv[1:]], env)


def patch_tiny() -> None:
    """Swap openpi's real-size builders for the tiny dimensions (its own classes, smaller configs)."""
    import openpi.models.gemma as _gemma
    from openpi.models_pytorch import gemma_pytorch as g
    from openpi.models_pytorch import preprocessing_pytorch as pre

    real_get_config = _gemma.get_config
    _gemma.get_config = lambda variant: (
        _gemma.Config(**TINY["vlm" if variant == "gemma_2b" else "expert"])
        if variant in ("gemma_2b", "gemma_300m")
        else real_get_config(variant)
    )
    paligemma_cls, gemma_cls = g.PaliGemmaForConditionalGeneration, g.GemmaForCausalLM

    def paligemma(config):  # PaliGemmaWithExpertModel sets the real SigLIP / vocabulary just before
        for k, v in TINY["vision"].items():
            setattr(config.vision_config, k, v)
        config.vision_config.projection_dim = config.projection_dim = TINY["vlm"]["width"]
        config.text_config.vocab_size = config._vocab_size = TINY["vocab_size"]
        return paligemma_cls(config=config)

    def gemma(config):
        config.vocab_size = TINY["vocab_size"]
        return gemma_cls(config=config)

    g.PaliGemmaForConditionalGeneration, g.GemmaForCausalLM = paligemma, gemma
    # openpi resizes every camera to 224×224 (with padding) unless it already has the model's resolution
    pre.preprocess_observation_pytorch.__kwdefaults__["image_resolution"] = (TINY["image_size"],) * 2


def main() -> None:
    ensure_venv()
    import json

    import numpy as np
    import safetensors.torch
    import torch
    import transformers

    patch_tiny()
    from openpi.models import model as _model
    from openpi.models.pi0_config import Pi0Config
    from openpi.models_pytorch.pi0_pytorch import PI0Pytorch, make_att_2d_masks
    from openpi.models_pytorch.preprocessing_pytorch import IMAGE_KEYS

    torch.manual_seed(0)
    s, b, h = TINY["image_size"], TINY["batch"], TINY["chunk_size"]
    config = Pi0Config(pi05=True, action_horizon=h, dtype="float32", pytorch_compile_mode=None)
    model = PI0Pytorch(config).eval()
    with torch.no_grad():  # off the initialisation: adaRMS projections start at zero, norms at zero (1 + w)
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    OUT.mkdir(parents=True, exist_ok=True)
    for f in OUT.iterdir():
        f.unlink()
    # as scripts/train_pytorch.py `save_checkpoint` and examples/convert_jax_model_to_pytorch.py save it
    safetensors.torch.save_model(model, str(OUT / "model.safetensors"))
    reference = {  # the config.json examples/convert_jax_model_to_pytorch.py writes next to the weights
        "action_dim": config.action_dim,
        "action_horizon": config.action_horizon,
        "paligemma_variant": config.paligemma_variant,
        "action_expert_variant": config.action_expert_variant,
        "precision": "float32",
    }
    (OUT / "config.json").write_text(json.dumps(reference, indent=2))
    reloaded = PI0Pytorch(config).eval()  # openpi's own loader (`BaseModelConfig.load_pytorch`) reads it back
    safetensors.torch.load_model(reloaded, str(OUT / "model.safetensors"))
    for (name, p), q in zip(model.state_dict().items(), reloaded.state_dict().values(), strict=True):
        assert torch.equal(p, q), name

    g = torch.Generator().manual_seed(1)
    n, a = TINY["text_len"], config.action_dim
    images = torch.rand(len(IMAGE_KEYS), b, 3, s, s, generator=g) * 2 - 1
    img_masks = torch.ones(len(IMAGE_KEYS), b, dtype=torch.bool)
    img_masks[2, 0] = False  # the first sample has no right-wrist camera (openpi masks its image tokens)
    tokens = torch.randint(1, TINY["vocab_size"], (b, n), generator=g)
    token_mask = torch.ones(b, n, dtype=torch.bool)
    token_mask[1, n - 3 :] = False  # the second prompt is shorter (right padding, as openpi's tokenizer)
    tokens[1, n - 3 :] = 0
    state = torch.rand(b, a, generator=g) * 2 - 1  # pi0.5 reads the state from the prompt; shape only
    actions = torch.randn(b, h, a, generator=g)
    noise = torch.randn(b, h, a, generator=g)
    time = torch.tensor([0.3, 0.85])
    sample_noise = torch.randn(b, h, a, generator=g)
    observation = _model.Observation(
        images=dict(zip(IMAGE_KEYS, images, strict=True)),
        image_masks=dict(zip(IMAGE_KEYS, img_masks, strict=True)),
        state=state,
        tokenized_prompt=tokens,
        tokenized_prompt_mask=token_mask,
    )

    preprocess = model._preprocess_observation  # no random augmentation: see the module docstring
    model._preprocess_observation = lambda obs, *, train=True: preprocess(obs, train=False)
    captured = {}
    hook = model.action_out_proj.register_forward_hook(lambda mod, inp, out: captured.__setitem__("v", out.detach()))
    with torch.no_grad():
        loss = model.forward(observation, actions, noise.clone(), time.clone())
        velocity = captured["v"].clone()
        hook.remove()
        x_t = time[:, None, None] * noise + (1 - time[:, None, None]) * actions
        velocity_cached = _cached_velocity(model, observation, x_t, time, make_att_2d_masks)
        sampled = model.sample_actions("cpu", observation, noise=sample_noise.clone(), num_steps=10)
    np.testing.assert_allclose(loss.numpy(), ((noise - actions - velocity) ** 2).numpy(), atol=1e-6)

    safetensors.torch.save_file(
        {
            "images": images, "img_masks": img_masks, "tokens": tokens, "token_mask": token_mask, "state": state,
            "actions": actions, "noise": noise, "time": time, "velocity": velocity, "loss": loss,
            "velocity_cached": velocity_cached, "sample_noise": sample_noise, "sampled": sampled.float(),
        },
        str(FIXTURES / "openpi_crosscheck.safetensors"),
    )  # fmt: skip
    with safetensors.safe_open(str(OUT / "model.safetensors"), "pt") as f:
        saved = {k: list(f.get_slice(k).get_shape()) for k in f.keys()}
    meta = {
        "openpi_commit": (OPENPI_SRC / "COMMIT").read_text().strip(),
        "transformers": transformers.__version__,
        "torch": torch.__version__,
        "tiny": TINY,
        "cameras": list(IMAGE_KEYS),
        "tied_not_saved": sorted(set(model.state_dict()) - set(saved)),
        "keys": saved,
        "joint_vs_cached_max_abs": float((velocity - velocity_cached).abs().max()),
    }
    (FIXTURES / "openpi_crosscheck.json").write_text(json.dumps(meta, indent=1) + "\n")
    written = [*OUT.iterdir(), *FIXTURES.glob("openpi_crosscheck.*")]
    for p in written:
        p.chmod(0o644)  # safetensors writes 0600
    sizes = {p.name: p.stat().st_size for p in written}
    print(json.dumps({"out": str(OUT), "bytes": sizes, **{k: v for k, v in meta.items() if k != "keys"}}, indent=2))
    np.testing.assert_allclose(velocity.numpy(), velocity_cached.numpy(), atol=1e-5)


def _cached_velocity(model, observation, x_t, time, make_att_2d_masks):
    """openpi's inference path for one step (as `sample_actions`): the prefix once into a KV cache, then
    `denoise_step`."""
    import torch

    images, img_masks, tokens, token_mask, state = model._preprocess_observation(observation, train=False)
    embs, pad, att = model.embed_prefix(images, img_masks, tokens, token_mask)
    mask4d = model._prepare_attention_masks_4d(make_att_2d_masks(pad, att))
    model.paligemma_with_expert.paligemma.language_model.config._attn_implementation = "eager"
    _, cache = model.paligemma_with_expert.forward(
        attention_mask=mask4d,
        position_ids=torch.cumsum(pad, dim=1) - 1,
        past_key_values=None,
        inputs_embeds=[embs, None],
        use_cache=True,
    )
    return model.denoise_step(state, pad, cache, x_t, time)


if __name__ == "__main__":
    main()
