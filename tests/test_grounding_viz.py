"""Grounding analysis (spatial entropy of attention maps) and rerun recordings, read back with rerun's
own command-line tool."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from latbot import registry
from latbot.analysis.grounding import spatial_entropy, to_maps
from latbot.models.encoders.vlm import IMAGE_SLOT, image_attention
from tests.conftest import REPO

RERUN = str(Path(sys.executable).with_name("rerun"))


def entities(rrd: Path) -> set[str]:
    out = subprocess.run(
        [RERUN, "rrd", "print", str(rrd)],
        capture_output=True,
        text=True,
        timeout=120,
        env={"RERUN_ANALYTICS": "false"} | dict(__import__("os").environ),
    )
    assert out.returncode == 0, out.stderr
    import re

    return set(re.findall(r"(?:episode_\d+|checkpoint_\d+)/[A-Za-z_/]+|frame|instruction", out.stdout))


def test_spatial_entropy_known_answers():
    one = np.zeros((6, 6))
    one[1:3, 1:4] = 1.0
    two = np.zeros((6, 6))
    two[0:2, 0:2] = two[4:6, 4:6] = 1.0
    diagonal = np.zeros((6, 6))
    diagonal[0, 0] = diagonal[1, 1] = diagonal[2, 2] = 1.0  # touching only at corners: one component
    four = np.zeros((6, 6))
    four[0, 0] = four[0, 5] = four[5, 0] = four[5, 5] = 1.0
    h = spatial_entropy(np.stack([one, two, diagonal, four]))
    np.testing.assert_allclose(h, [0.0, math.log(2), 0.0, math.log(4)], atol=1e-12)
    unequal = np.zeros((6, 6))
    unequal[0, 0:2] = 1.0  # a 2-pixel blob
    unequal[5, 5] = 1.0  # a 1-pixel blob
    p = np.array([2 / 3, 1 / 3])
    assert spatial_entropy(unequal) == pytest.approx(-(p * np.log(p)).sum())  # by pixel count (the paper)
    mass = unequal.copy()
    mass[5, 5] = 10.0
    above = mass - mass.mean()
    q = np.array([above[0, 0] * 2, above[5, 5]]) / (above[0, 0] * 2 + above[5, 5])
    assert spatial_entropy(mass, weighted=True) == pytest.approx(-(q * np.log(q)).sum())  # by attention mass
    degenerate = spatial_entropy(np.stack([np.full((4, 4), 0.3), np.zeros((4, 4))]))
    assert np.isinf(degenerate).all()  # nothing above the mean: no component, never the best head
    batch = np.random.default_rng(0).random((3, 5, 7, 4, 4))  # samples × layers × heads, one call
    assert spatial_entropy(batch).shape == (3, 5, 7)
    assert to_maps(np.arange(20.0)).shape == (4, 4)  # first P² = 16 entries


@pytest.mark.parametrize("name", ["internvl", "paligemma"])
def test_attention_extraction_finds_the_image_token_span(name):
    cls = registry.get("encoders", name)
    torch.manual_seed(0)
    enc = cls(cls.tiny_config())
    frames = torch.randint(0, 255, (2, 3, 24, 24), dtype=torch.uint8)
    texts = ["pick up the puck", "open the top drawer now"]
    att = image_attention(enc, frames, texts)
    layers = enc.vlm.config.text_config.num_hidden_layers
    heads = enc.vlm.config.text_config.num_attention_heads
    assert att.shape == (2, layers, heads, enc.tokens_per_frame)
    seq = enc.grounding_sequence(texts[0])
    span = [i for i, t in enumerate(seq) if t == IMAGE_SLOT]
    assert len(span) == enc.tokens_per_frame and span == list(range(span[0], span[0] + len(span)))  # contiguous
    assert seq[-1] != IMAGE_SLOT  # the query is the last *text* token
    assert torch.all(att >= 0) and torch.all(att.sum(-1) <= 1 + 1e-5)
    assert enc.vlm.config._attn_implementation != "eager" or cls.tiny_config().attn_implementation == "eager"


@pytest.mark.parametrize(
    "name", [n for n in registry.names("students") if hasattr(registry.get("students", n), "image_attention")]
)
def test_every_student_gives_grounding_maps(name):
    """Grounding compares finetuned policies' VLMs: every registered student that offers `image_attention`
    (all built-in ones do) gives probabilities over one frame's image tokens at every layer and head."""
    from latbot.analysis.grounding import analyze_encoder

    cls = registry.get("students", name)
    torch.manual_seed(0)
    student = registry.build("students", cls.tiny_config(), latent_width=None).eval()
    frames = torch.randint(0, 255, (2, 3, 32, 32), dtype=torch.uint8)
    texts = ["pick up the puck", "open the top drawer now"]
    att = student.image_attention(frames, texts)
    assert att.shape[:2] == (2, student.num_layers) and att.shape[-1] >= 4
    assert torch.all(att >= 0) and torch.all(att.sum(-1) <= 1 + 1e-5) and torch.all(att.sum(-1) > 0)
    result = analyze_encoder(student, frames, texts)
    assert result["entropy"].shape == att.shape[:3] and result["best_map"].shape[0] == 2


def test_grounding_names_a_model_without_attention_maps():
    from latbot.analysis.grounding import analyze_encoder
    from latbot.errors import LatBotError

    with pytest.raises(LatBotError, match="image_attention"):
        analyze_encoder(torch.nn.Linear(2, 2), torch.zeros(1, 3, 8, 8), ["x"])


@pytest.fixture(scope="module")
def lam_run(tmp_path_factory):
    from latbot.data.convert import finalize
    from latbot.data.store import EpisodeStore
    from tests.test_store import episode

    root = tmp_path_factory.mktemp("viz")
    store = root / "store"
    with EpisodeStore.create(store, cameras=["cam"], image_size=(32, 32)) as s:
        for i in range(3):
            s.append(episode(f"e{i}", steps=10, size=32, seed=i))
        finalize(s)
    cmd = [
        sys.executable,
        "-m",
        "latbot",
        "train",
        str(REPO / "recipes/tiny/lam.yaml"),
        "--set",
        f"data.sources=[{{store: {store}}}]",
        "--set",
        "train.steps=2",
        "--set",
        f"log.out_dir={root}",
        "--set",
        "log.run_name=lam",
        "--set",
        "data.num_workers=0",
        "--set",
        "log.progress=false",
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=REPO)
    assert done.returncode == 0, done.stderr[-2000:]
    return store, root / "lam"


def test_grounding_analysis_cli_writes_table_pngs_and_recording(lam_run, tmp_path):
    store, run = lam_run
    out = tmp_path / "grounding"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "latbot",
            "grounding-analysis",
            "--checkpoint",
            str(run),
            "--checkpoint",
            str(run),
            "--data",
            str(store),
            "--samples",
            "2",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = (out / "heads.csv").read_text().splitlines()
    assert rows[0] == "model,checkpoint,sample,layer,head,entropy" and len(rows) == 1 + 2 * 2 * 2 * 4  # A,B·2·L·H
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary) == {"A", "B", "comparison", "comparison_attention"} and len(summary["A"]["lowest"]) == 2
    assert summary["B"]["checkpoint"] == str(run) and summary["comparison"]["samples"] == 2
    assert "B − A" in proc.stdout and "sign-flip p" in proc.stdout  # the A/B over the 10% lowest-entropy heads
    from PIL import Image

    sheet = Image.open(out / "sample_0000.png")
    assert sheet.width >= 2 * 128  # A and B side by side
    assert {"frame", "instruction", "checkpoint_0/lowest_entropy_map", "checkpoint_1/entropy"} <= entities(
        out / "grounding.rrd"
    )


def test_viz_episode_recording_holds_the_expected_entities(lam_run, tmp_path):
    store, run = lam_run
    rrd = tmp_path / "ep.rrd"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "latbot",
            "viz",
            "episode",
            str(store),
            "--episode",
            "0-1",
            "--checkpoint",
            str(run),
            "--out",
            str(rrd),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    found = entities(rrd)
    for ep in (0, 1):
        assert {
            f"episode_{ep}/camera/cam",
            f"episode_{ep}/instruction",
            f"episode_{ep}/subtask",
            f"episode_{ep}/world/right_trajectory",
            f"episode_{ep}/actions/right_pos",
            f"episode_{ep}/lam/future_predicted",
            f"episode_{ep}/lam/future_true",
        } <= found
    bad = subprocess.run(
        [
            sys.executable,
            "-m",
            "latbot",
            "viz",
            "episode",
            str(store),
            "--episode",
            "7",
            "--out",
            str(tmp_path / "x.rrd"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )
    assert bad.returncode == 2 and "the store has episodes 0..2" in bad.stderr
