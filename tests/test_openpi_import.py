"""openpi's own PyTorch pi0.5 checkpoint loads into LatBot's `pi05` student and expert and computes what
openpi computes: tests/fixtures/openpi_tiny is `PI0Pytorch` (pi05=True) at the tiny size, saved by openpi's
code as openpi saves it, with openpi's outputs in tests/fixtures/openpi_crosscheck.safetensors (both made by
tools/openpi_crosscheck/make_fixture.py in openpi's pinned environment: torch 2.7.1, transformers 4.53.2
with openpi's transformers_replace)."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from latbot import registry
from latbot.models.pi05 import checkpoint, openpi_keys
from latbot.models.pi05.student import Pi05Student
from tests.conftest import REPO
from tests.test_pi05 import flow_diffs

FIXTURE = REPO / "tests" / "fixtures" / "openpi_tiny"  # openpi's checkpoint layout
CROSSCHECK = REPO / "tests" / "fixtures" / "openpi_crosscheck.safetensors"  # inputs and openpi's outputs
LEROBOT = REPO / "tests" / "fixtures" / "pi05_tiny" / "model.safetensors"


@pytest.fixture(scope="module")
def loaded():
    """As a recipe builds it: the tiny `pi05` student and expert with `pretrained: tests/fixtures/openpi_tiny`,
    weights applied by `checkpoint.apply` (what the distill / finetune stages call after building)."""
    student = Pi05Student(Pi05Student.tiny_config().model_copy(update={"pretrained": str(FIXTURE)}))
    cls = registry.get("action_experts", "pi05")
    cfg = cls.tiny_config().model_copy(update={"action_dim": 32, "state": "none", "pretrained": str(FIXTURE)})
    expert = cls(cfg, vlm_width=student.width, vlm_layers=student.num_layers, horizon=4)
    parts = checkpoint.apply(student=student, expert=expert)
    return student.eval(), expert.eval(), parts, load_file(str(CROSSCHECK))


def openpi_prefix(student, x):
    """openpi's prefix: each camera's image tokens (masked cameras padded out), then the right-padded
    prompt; one bidirectional block (ar = 0)."""
    feats = [student.vlm.image_features(img) for img in x["images"]]  # C × (B, P², D)
    text = student.vlm.language_model.embed(x["tokens"])
    emb = torch.cat([*feats, text], 1)
    valid = torch.cat([*(m[:, None].expand(-1, f.shape[1]) for m, f in zip(x["img_masks"], feats, strict=True)),
                       x["token_mask"]], 1)  # fmt: skip
    return student.run(emb, valid, torch.zeros_like(valid, dtype=torch.long))["cache"], valid


def test_openpi_pi05_velocity_and_sampled_actions_match(loaded):
    student, expert, parts, x = loaded
    with torch.no_grad():  # "loss": PI0Pytorch.forward's return, the per-element flow-matching MSE
        diffs = flow_diffs(expert, *openpi_prefix(student, x), x)
    assert set(diffs) == {"velocity", "velocity_vs_cached", "sampled", "loss"}
    print("pi05 vs openpi PI0Pytorch, max abs diff:", json.dumps(diffs))
    assert all(d < 1e-4 for d in diffs.values()), diffs
    assert float(x["velocity"].abs().max()) > 0.1  # a real signal, not zeros
    assert not bool(x["img_masks"].all())  # and a camera openpi masks out
    assert set(parts["student"]["components"]) == {"siglip", "projector", "gemma_2b"}
    assert set(parts["expert"]["components"]) >= {"expert_layers", "action_in_proj", "action_out_proj", "time_mlp"}
    assert parts["student"]["dtypes"] == ["float32"] and parts["expert"]["checkpoint"] == str(FIXTURE)


def test_openpi_layout_is_lerobots_without_model_and_with_the_embedding_tied(loaded):
    """The only differences from LeRobot's layout: no `model.` prefix, and the tied PaliGemma embedding
    stored once, as `lm_head.weight` (safetensors' save_model keeps the first name in sorted order)."""
    student = loaded[0]
    with safe_open(str(FIXTURE / "model.safetensors"), "pt") as f:
        openpi, metadata = set(f.keys()), f.metadata()
    with safe_open(str(LEROBOT), "pt") as f:
        lerobot = {k.removeprefix("model.") for k in f.keys()}
    assert lerobot - openpi == {openpi_keys.EMBED} and openpi <= lerobot
    assert metadata == {openpi_keys.EMBED: openpi_keys.LM_HEAD}
    weights = load_file(str(FIXTURE / "model.safetensors"))
    assert torch.equal(student.vlm.language_model.embed_tokens.weight, weights[openpi_keys.LM_HEAD])
    lerobot_tensors = load_file(str(LEROBOT))  # LeRobot keeps both names (and here different values)
    assert openpi_keys.to_lerobot_keys(lerobot_tensors).keys() == lerobot_tensors.keys()
    prefixed = openpi_keys.to_lerobot_keys({"model." + k: v for k, v in weights.items()})
    assert torch.equal(prefixed["model." + openpi_keys.EMBED], weights[openpi_keys.LM_HEAD])
