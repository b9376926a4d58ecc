"""Distillation, the action expert, the policy API and the policy server, on a real MetaWorld store:
LAM → distill (online and from the teacher cache) → finetune → closed-loop eval → `latbot serve`."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from latbot import registry
from latbot.models.distill import DistillationModel, latent_kl, latent_mse
from latbot.recipes import load_recipe
from tests.conftest import REPO

TINY = REPO / "recipes" / "tiny"


def run_stage(recipe: str, out: Path, name: str, *sets: str) -> Path:
    from latbot import stages

    recipe_path = TINY / recipe
    r = load_recipe(recipe_path, [f"log.out_dir={out}", f"log.run_name={name}", "log.progress=false", *sets])
    return stages.run(r, recipe_path=recipe_path)


def metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    """A 3-task MetaWorld store and every stage trained on it for a few steps."""
    from latbot.sim.generate import generate

    root = tmp_path_factory.mktemp("pipeline")
    store = root / "store"
    sim = registry.get("simulators", "metaworld").Config()
    generate(sim, ["reach", "drawer-open", "button-press-topdown"], 3, store, image_size=64, seed=0, progress=False)
    src = f"data.sources=[{{store: {store}}}]"
    lam = run_stage("lam.yaml", root, "lam", src, "train.steps=20", "train.checkpoint_every=20")
    common = (src, f"model.teacher={lam}", "train.steps=20", "train.checkpoint_every=20", "log.every_steps=5")
    distill = run_stage("distill.yaml", root, "distill", *common)
    cached = run_stage("distill.yaml", root, "distill_cached", *common, f"model.teacher_cache={root / 'cache'}")
    ft = ("train.steps=20", "train.checkpoint_every=20")
    finetuned = run_stage("finetune.yaml", root, "ft", src, f"model.student_checkpoint={distill}", *ft)
    return {"root": root, "store": store, "lam": lam, "distill": distill, "cached": cached, "ft": finetuned}


# -- the losses, by hand ---------------------------------------------------------------------------------
def test_latent_mse_and_kl_match_a_hand_computation():
    rng = np.random.default_rng(0)
    z_hat, z = rng.normal(size=(2, 3, 5)), rng.normal(size=(2, 3, 5)) * 3
    tau = 0.7
    mse = np.mean((z_hat - z) ** 2)
    kls = []
    for b in range(2):
        for n in range(3):
            p = np.exp(z_hat[b, n] / np.linalg.norm(z_hat[b, n]) / tau)
            q = np.exp(z[b, n] / np.linalg.norm(z[b, n]) / tau)
            p, q = p / p.sum(), q / q.sum()
            kls.append(sum(pi * math.log(pi / qi) for pi, qi in zip(p, q, strict=True)))
    t_hat, t = torch.tensor(z_hat, dtype=torch.float32), torch.tensor(z, dtype=torch.float32)
    assert float(latent_mse(t_hat, t)) == pytest.approx(mse, rel=1e-5)
    assert float(latent_kl(t_hat, t, tau)) == pytest.approx(np.mean(kls), rel=1e-4)
    assert float(latent_kl(t, t, tau)) == pytest.approx(0.0, abs=1e-6)
    assert float(latent_kl(t_hat, t, tau)) != pytest.approx(float(latent_kl(t, t_hat, tau)), rel=1e-3)  # direction


def tiny_student(kind: str = "paligemma", width: int | None = 48, tokens: int = 4):
    cls = registry.get("students", kind)
    config = cls.tiny_config().model_copy(update={"num_scene_tokens": tokens, "num_motion_tokens": tokens})
    return registry.build("students", config, latent_width=width)


@pytest.mark.parametrize("kind", ["paligemma", "internvl"])
def test_reasoning_loss_is_the_mean_nll_of_the_subtask_tokens_only(kind):
    torch.manual_seed(0)
    student = tiny_student(kind)
    frames = torch.randint(0, 255, (1, 1, 3, 64, 64), dtype=torch.uint8)
    instruction, subtask = "open the drawer", "grasp the handle"
    with torch.no_grad():
        lm = float(student(frames, [instruction], subtasks=[subtask])["lm_loss"])
    # by hand: run the language model on the same sequence and score the last len(subtask)+1 tokens
    words = [*student._text(subtask), student.tokenizer.eos_token_id]
    tail, labels = student.subtask_tokens(subtask)
    assert [t for t in labels if t != -100] == words  # the prompt "Current subtask:" carries no label
    seq = student.sequence(instruction, 1) + tail
    with torch.no_grad():
        inputs = student.embed(frames, [instruction], [seq])
        hidden = student.vlm.language_model(
            inputs_embeds=inputs["inputs_embeds"], attention_mask=inputs["attention_mask"]
        ).last_hidden_state[0]
        logp = torch.log_softmax(hidden @ student.vlm.get_input_embeddings().weight.T, -1)
    n = len(seq)
    nll = [-float(logp[n - len(words) - 1 + k, tok]) for k, tok in enumerate(words)]
    assert lm == pytest.approx(np.mean(nll), rel=1e-5)
    # a different instruction changes the loss (the subtask is conditioned on it) but never its support
    assert float(student(frames, ["push the button"], subtasks=[subtask])["lm_loss"].detach()) != pytest.approx(lm)


def test_teacher_gets_no_gradient_stays_bit_identical_and_in_eval_mode(pipeline):
    from latbot import runs
    from latbot.data.mixture import build_mixture
    from latbot.recipes.schema import DataSource

    lam = runs.load_lam(pipeline["lam"])
    before = {k: v.clone() for k, v in lam.state_dict().items()}
    model = DistillationModel(tiny_student(width=lam.encoder.width, tokens=8), lam, None, 0.5)
    assert not any(k.startswith("teacher") for k in model.state_dict())  # not checkpointed with the student
    data, _ = build_mixture([DataSource(store=pipeline["store"])], 4)
    batch = torch.utils.data.default_collate([data[i] for i in range(0, 40, 5)])
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model.train()
    first = None
    for _ in range(25):
        out = model(batch)
        out["loss"].backward()
        opt.step()
        opt.zero_grad()
        first = first if first is not None else {k: float(v) for k, v in out.items()}
    assert not lam.training and all(p.grad is None for p in lam.parameters())
    assert all(torch.equal(before[k], v) for k, v in lam.state_dict().items())
    # the student learns: on a fixed batch of the store, the loss falls well below where it started
    assert float(out["loss"]) < 0.5 * first["loss"], (first, float(out["loss"]))
    assert float(out["lm"]) < first["lm"] and float(out["mse"]) + float(out["kl"]) < first["mse"] + first["kl"]


# -- the stages on the store -----------------------------------------------------------------------------
def test_distillation_from_the_cache_equals_distillation_with_the_teacher(pipeline):
    from latbot.artifacts import read_manifest

    online, cached = metrics(pipeline["distill"]), metrics(pipeline["cached"])
    assert [m["loss"] for m in online] == [m["loss"] for m in cached]  # bit-identical latents, same stream
    assert all(math.isfinite(m["loss"]) for m in online)
    cache = read_manifest(pipeline["root"] / "cache", kind="teacher_cache")
    assert cache.extra["teacher"] == read_manifest(pipeline["lam"]).content_hash
    manifest = read_manifest(pipeline["distill"], kind="distill")
    assert [p.kind for p in manifest.parents] == ["lam", "episode_store"]
    assert manifest.extra["temperature"] == pytest.approx(1 / math.sqrt(manifest.extra["latent_width"]))


def test_a_cache_of_other_data_is_refused(pipeline, tmp_path):
    from latbot.data.latent_cache import CacheError

    with pytest.raises(CacheError, match="built for another sources"):
        run_stage(
            "distill.yaml",
            tmp_path,
            "other",
            f"data.sources=[{{store: {pipeline['store']}, tasks: [reach]}}]",
            f"model.teacher={pipeline['lam']}",
            f"model.teacher_cache={pipeline['root'] / 'cache'}",
            "train.steps=1",
        )


def test_an_edited_cache_is_refused_unless_no_verify(pipeline, tmp_path, monkeypatch):
    import shutil

    from latbot.artifacts import read_manifest
    from latbot.data.latent_cache import CacheError, open_cache

    cache = tmp_path / "cache"
    shutil.copytree(pipeline["root"] / "cache", cache)
    extra = read_manifest(cache, kind="teacher_cache").extra
    identity = {k: extra[k] for k in ("teacher", "sources", "num_frames", "cameras")}
    block = max((p for p in (cache / "latents").rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
    data = bytearray(block.read_bytes())
    data[len(data) // 2] ^= 0x01
    block.write_bytes(bytes(data))
    with pytest.raises(CacheError, match="latents differ from the cache's manifest"):
        open_cache(cache, identity, extra["count"])
    monkeypatch.setenv("LATBOT_NO_VERIFY", "1")
    assert open_cache(cache, identity, extra["count"]).shape[0] == extra["count"]


def test_stage_errors_are_one_line_and_create_nothing(pipeline, tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    src = f"data.sources=[{{store: {pipeline['store']}}}]"
    out = ["--set", f"log.out_dir={tmp_path}"]

    def train(recipe, *sets):
        args = [sys.executable, "-m", "latbot", "train", str(TINY / recipe), *out]
        for s in sets:
            args += ["--set", s]
        return subprocess.run(args, capture_output=True, text=True, env=env, timeout=120)

    no_teacher = train("distill.yaml", src)
    assert no_teacher.returncode == 2 and "model.teacher is not set" in no_teacher.stderr
    wrong_kind = train("distill.yaml", src, f"model.teacher={pipeline['store']}")
    assert wrong_kind.returncode == 2 and "'episode_store' artifact, but a 'lam' artifact" in wrong_kind.stderr
    tokens = train("distill.yaml", src, f"model.teacher={pipeline['lam']}", "model.student.num_scene_tokens=3")
    assert tokens.returncode == 2 and "num_scene_tokens is 3, the teacher has 8" in tokens.stderr
    other = train("finetune.yaml", src, f"model.student_checkpoint={pipeline['distill']}", "model.student.lora_rank=2")
    assert other.returncode == 2 and "model.student differs" in other.stderr and "lora_rank" in other.stderr
    frames = train("distill.yaml", src, f"model.teacher={pipeline['lam']}", "data.num_frames=3")
    assert frames.returncode == 2 and "data.num_frames is 3, the teacher" in frames.stderr
    horizon = train("lam.yaml", src, "model.decoder.horizon=5")  # a model-side check, before the run directory
    assert horizon.returncode == 2 and "model.decoder.horizon is 5" in horizon.stderr
    for p in (no_teacher, wrong_kind, tokens, other, frames, horizon):
        assert "Traceback" not in p.stderr
    assert not any(tmp_path.iterdir())  # nothing half-written

    # `recipe validate` runs the same model-side checks (the teacher's manifest, no weights)
    validate = [sys.executable, "-m", "latbot", "recipe", "validate", str(TINY / "distill.yaml"), "--set", src]
    mismatch = subprocess.run([*validate, "--set", f"model.teacher={pipeline['lam']}", "--set", "data.num_frames=3"],
                              capture_output=True, text=True, env=env, timeout=120)  # fmt: skip
    assert mismatch.returncode == 2 and "data.num_frames is 3, the teacher" in mismatch.stderr


def test_expert_loss_is_supported_on_valid_dims_and_unpadded_steps_only():
    from latbot.models.experts.flow import FlowActionExpert

    torch.manual_seed(0)
    expert = FlowActionExpert(FlowActionExpert.tiny_config(), vlm_width=16, vlm_layers=2, horizon=3)
    for p in expert.parameters():  # away from the zero-init gates, so every output depends on the input
        torch.nn.init.normal_(p, std=0.2)
    b = 2
    layers = [torch.randn(b, 5, 16) for _ in range(3)]
    action_mask = torch.zeros(b, 44, dtype=torch.bool)
    action_mask[:, 7:14] = True  # a single right arm: pos, rot, gripper
    pad = torch.tensor([[False, False, True], [False, False, False]])
    outputs = {}
    hooks = [
        getattr(expert, name).register_forward_hook(lambda m, i, o, name=name: outputs.__setitem__(name, o))
        for name in ("velocity", "gripper")
    ]
    out = expert.loss(
        torch.randn(b, 3, 44),
        torch.rand(b, 3, 2),
        action_mask,
        pad,
        torch.randn(b, 46),
        layers,
        torch.ones(b, 5, dtype=torch.bool),
    )
    for h in hooks:
        h.remove()
    v, logits = outputs["velocity"], outputs["gripper"]
    gv, gl = torch.autograd.grad(out["loss"], [v, logits])
    touched = gv.abs() > 0  # (B, H, 44): where L_ee reaches
    expected = torch.zeros_like(touched)
    expected[:, :, 7:13] = True  # right translation + rotation; not the gripper, not the absent left arm
    expected[0, 2] = False  # the padded step
    assert torch.equal(touched, expected)
    touched = gl.abs() > 0  # (B, H, 2): where L_gripper reaches
    expected = torch.zeros_like(touched)
    expected[:, :, 1] = True
    expected[0, 2] = False
    assert torch.equal(touched, expected)
    # the invalid dimensions do not reach the expert's input either
    x = torch.randn(b, 3, 44)
    t = torch.full((b,), 0.5)
    args = (torch.randn(b, 46), layers, torch.ones(b, 5, dtype=torch.bool), action_mask)
    y = x.clone()
    y[:, :, :7] += 3.0
    assert torch.equal(expert(x, t, *args)[0], expert(y, t, *args)[0])


# -- the policy API -------------------------------------------------------------------------------------
def observation(seed=0, size=64):
    rng = np.random.default_rng(seed)
    return {
        "images": {"corner": rng.integers(0, 255, (size, size, 3), dtype=np.uint8)},
        "state": np.array([0.0, 0.6, 0.2, 1.0], np.float32),
        "instruction": "reach the goal",
    }


@pytest.fixture(scope="module")
def policy(pipeline):
    from latbot.policy import LatBotPolicy

    return LatBotPolicy.from_checkpoint(pipeline["ft"])


def test_predict_returns_native_actions_and_validates_its_input(policy):
    from latbot.policy import ObservationError

    actions = policy.predict(observation())
    assert actions.shape == (4, 4) and actions.dtype == np.float32 and np.isfinite(actions).all()
    assert set(np.unique(actions[:, 3])) <= {-1.0, 1.0}  # the gripper as the Sawyer's ±1 command
    assert np.array_equal(policy.predict(observation()), actions)  # deterministic for a seed
    unified = policy.predict(observation(), space="unified")
    assert unified.shape == (4, 44) and np.array_equal(unified[:, 7:10], actions[:, :3])
    assert not unified[:, policy.action_mask == 0].any()
    big = observation(size=128)  # another camera resolution is resized to the training size
    assert policy.predict(big).shape == (4, 4)
    bad = {
        "lacks camera(s) ['corner']": {**observation(), "images": {}},
        "must be a (H, W, 3) uint8 array, got float32": {
            **observation(),
            "images": {"corner": np.zeros((64, 64, 3), np.float32)},
        },
        "must be a finite (4,) float array, got shape (3,)": {**observation(), "state": np.zeros(3)},
        "must be a finite (4,) float array": {**observation(), "state": np.array([0, 0, np.nan, 0])},
        "['instruction'] (or 'prompt') must be a non-empty string": {**observation(), "instruction": " "},
        "must be a dict": [1, 2],
    }
    for message, obs in bad.items():
        with pytest.raises(ObservationError, match=re.escape(message)):
            policy.predict(obs)
    prompt = {**observation(), "prompt": "reach the goal"}
    del prompt["instruction"]
    assert np.array_equal(policy.predict(prompt), actions)  # openpi clients send "prompt"


def test_embodiment_conversions_invert_the_store_writers():
    from latbot.data import rotations as rot
    from latbot.data.spaces import UnifiedTrajectory, fill_arm
    from latbot.policy.embodiments import get

    rng = np.random.default_rng(0)
    native = np.concatenate(
        [rng.uniform(-0.05, 0.05, (6, 3)), rng.uniform(-0.3, 0.3, (6, 3)), np.sign(rng.normal(size=(6, 1)))], 1
    )
    traj = UnifiedTrajectory.empty(6)  # as latbot.data.adapters.libero_hdf5 writes LIBERO actions
    fill_arm(
        traj,
        "right",
        action_position=native[:, :3],
        action_rotation=rot.matrix_to_euler(rot.axis_angle_to_matrix(native[:, 3:6])),
        action_gripper=(native[:, 6] + 1) / 2,
    )
    np.testing.assert_allclose(get("franka_panda").actions_to_native(traj.actions), native, atol=1e-9)
    sawyer = np.concatenate([rng.uniform(-1, 1, (6, 3)), np.sign(rng.normal(size=(6, 1)))], 1)
    traj = UnifiedTrajectory.empty(6)  # as latbot.sim.generate writes MetaWorld actions
    fill_arm(traj, "right", action_position=sawyer[:, :3], action_gripper=(sawyer[:, 3] + 1) / 2)
    np.testing.assert_allclose(get("sawyer").actions_to_native(traj.actions), sawyer, atol=1e-7)
    state = get("sawyer").state_to_unified(np.array([0.1, 0.6, 0.2, 0.25], np.float32))
    assert state[8:11].tolist() == pytest.approx([0.1, 0.6, 0.2]) and state[15] == pytest.approx(0.75)


def test_closed_loop_eval_of_the_finetuned_policy(pipeline, tmp_path):
    from latbot.sim.evaluate import evaluate

    sim = registry.get("simulators", "metaworld").Config()
    report = evaluate(sim, str(pipeline["ft"]), ["reach"], 1, image_size=64, progress=False)
    assert report["overall"]["errors"] == 0, report["episodes"]
    assert report["overall"]["episodes"] == 1 and 0.0 <= report["overall"]["success_rate"] <= 1.0
    assert report["episodes"][0]["steps"] > 0


# -- the server -----------------------------------------------------------------------------------------
def test_server_answers_openpi_clients_like_predict_and_survives_bad_requests(policy):
    import msgpack
    from openpi_client.websocket_client_policy import WebsocketClientPolicy

    from latbot.serve.client import PolicyClient, ServerError
    from latbot.serve.server import PolicyServer

    with PolicyServer(policy, port=0) as server:
        assert server.host == "127.0.0.1"  # loopback by default
        client = WebsocketClientPolicy(host="127.0.0.1", port=server.port)
        assert client.get_server_metadata()["cameras"] == ["corner"]
        reply = client.infer(observation(3))
        assert np.array_equal(reply["actions"], policy.predict(observation(3)))
        assert reply["server_timing"]["infer_ms"] > 0
        malformed = [
            ({**observation(), "state": np.zeros((2, 2), np.float32)}, "400 Bad Request: observation['state']"),
            ({"images": observation()["images"], "instruction": "x"}, "400 Bad Request: observation['state']"),
            ({**observation(), "images": {"corner": np.zeros((64, 64), np.uint8)}}, "(H, W, 3) uint8"),
        ]
        for obs, message in malformed:
            with pytest.raises(RuntimeError, match=re.escape(message)):
                client.infer(obs)
        ws = client._ws
        ws.send(b"\xc1\xff garbage")
        assert ws.recv().startswith("400 Bad Request: not a msgpack message")
        ws.send("a text frame")
        assert ws.recv().startswith("400 Bad Request: expected a binary msgpack message")
        forged = msgpack.packb({"state": {b"__ndarray__": True, b"data": b"\0" * 8, b"dtype": "|O", b"shape": [1]}})
        ws.send(forged)
        assert "not accepted" in ws.recv()  # object arrays are never rebuilt (no pickle)
        lying = msgpack.packb({"state": {b"__ndarray__": True, b"data": b"\0" * 3, b"dtype": "<f4", b"shape": [4]}})
        ws.send(lying)
        assert "cannot hold 3 bytes" in ws.recv()
        # still serving, on the same connection and on a new one
        assert np.array_equal(client.infer(observation(4))["actions"], policy.predict(observation(4)))
        with PolicyClient(port=server.port) as ours:
            assert np.array_equal(ours.predict(observation(5)), policy.predict(observation(5)))
            with pytest.raises(ServerError, match="lacks camera"):
                ours.predict({**observation(), "images": {}})
            health = ours.health()
            assert health["status"] == "ok" and health["errors"] >= 7 and health["action_dim"] == 4


def test_latbot_serve_command(pipeline):
    from latbot.serve.client import PolicyClient

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "latbot", "serve", "--checkpoint", str(pipeline["ft"]), "--port", "0"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        line = proc.stdout.readline()
        assert line.startswith("serving "), line + proc.stderr.read() if proc.poll() is not None else line
        port = int(line.split("ws://127.0.0.1:")[1].split()[0])
        with PolicyClient(port=port) as client:
            assert client.predict(observation()).shape == (4, 4)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    bad = subprocess.run(
        [sys.executable, "-m", "latbot", "serve", "--checkpoint", str(pipeline["store"])],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert bad.returncode == 2 and "a 'finetune' artifact is expected" in bad.stderr


def test_viz_overlays_policy_chunks_and_grounding_reads_students(pipeline, tmp_path):
    from latbot.analysis.grounding import run as grounding
    from latbot.viz.episode import record
    from tests.test_grounding_viz import entities

    rrd = record(pipeline["store"], [0], tmp_path / "ep.rrd", checkpoint=pipeline["ft"], max_steps=12)
    found = entities(rrd)
    assert {"episode_0/policy/actions_predicted/right_pos", "episode_0/world/right_policy_chunk"} <= found
    summary = grounding([pipeline["distill"], pipeline["ft"]], pipeline["store"], tmp_path / "g", samples=2)
    assert set(summary) == {"A", "B", "comparison", "comparison_attention"}  # two models: their A/Bs
    assert all(np.isfinite(low["entropy"]) for k in "AB" for low in summary[k]["lowest"])
