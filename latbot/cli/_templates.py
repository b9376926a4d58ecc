"""Source templates of `latbot plugins new KIND NAME`: one working plugin skeleton per kind
(`string.Template`: $name is the registered name, $cls the class name). Each passes `latbot plugins check`."""

PLUGIN = {
    "action_experts": r'''
"""`$name`: an action expert (kind `action_experts`). Contract: docs/plugins.md, "Action experts".

Reads the student's hidden states and predicts a chunk of H unified actions (normalised) and the gripper
(left, right) of each step. This skeleton: a masked mean of the last layer + the state through an MLP,
a regression (no flow matching). Replace it with your model.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch import nn
from torch.nn import functional as F

from latbot.config import PluginConfig
from latbot.data.spaces import ACTION_DIM, ACTION_GRIPPER, ACTION_POS, ACTION_ROT, ARMS, STATE_DIM

GRIPPER_DIMS = [ACTION_GRIPPER[arm] for arm in ARMS]  # (6, 13)


class $cls(nn.Module):
    class Config(PluginConfig):
        type: Literal["$name"] = "$name"
        hidden: int = Field(64, ge=8, description="MLP width.")

    def __init__(self, config: Config, *, vlm_width: int, vlm_layers: int, horizon: int):
        super().__init__()
        self.config, self.horizon = config, horizon
        self.mlp = nn.Sequential(
            nn.Linear(vlm_width + STATE_DIM, config.hidden),
            nn.GELU(),
            nn.Linear(config.hidden, horizon * (ACTION_DIM + 2)),  # H actions and H gripper logits (left, right)
        )
        ee = torch.zeros(ACTION_DIM, dtype=torch.bool)
        for arm in ARMS:
            ee[ACTION_POS[arm]] = ee[ACTION_ROT[arm]] = True
        self.register_buffer("ee", ee, persistent=False)

    def repeated_blocks(self) -> list[nn.Module]:
        return []

    def predict(self, state, layers, ctx_mask):
        keep = ctx_mask.to(layers[-1].dtype)[..., None]  # (B, N, 1)
        pooled = (layers[-1] * keep).sum(1) / keep.sum(1).clamp(min=1)  # (B, D)
        out = self.mlp(torch.cat([pooled, state.to(pooled.dtype)], -1)).view(state.shape[0], self.horizon, -1)
        return out[..., :ACTION_DIM], out[..., ACTION_DIM:]  # (B, H, 44), (B, H, 2)

    def loss(self, actions, gripper, action_mask, pad, state, layers, ctx_mask) -> dict[str, torch.Tensor]:
        pred, logits = self.predict(state, layers, ctx_mask)
        steps = (~pad).float()[..., None]  # (B, H, 1)
        ee = (action_mask.bool() & self.ee).float()[:, None] * steps
        l_ee = ((pred - actions) ** 2 * ee).sum() / ee.sum().clamp(min=1)
        grip = action_mask[:, GRIPPER_DIMS].float()[:, None] * steps
        bce = F.binary_cross_entropy_with_logits(logits, (gripper > 0.5).float(), reduction="none")
        l_grip = (bce * grip).sum() / grip.sum().clamp(min=1)
        return {"loss": l_ee + l_grip, "ee": l_ee, "gripper": l_grip}

    @torch.no_grad()
    def sample(self, state, layers, ctx_mask, action_mask=None, generator=None):
        pred, logits = self.predict(state, layers, ctx_mask)
        return pred, torch.sigmoid(logits)
''',
    "datasets": r'''
"""`$name`: a dataset adapter (kind `datasets`) for `latbot data convert SRC --format $name`.
Contract: docs/plugins.md, "Datasets".

Layout this skeleton reads (change it to your format)::

    <src>/<episode>.npz   frames_<camera> (T, H, W, 3) uint8, actions (T, A), states (T, S) (optional),
                          instruction () str

Native vectors are mapped into the unified spaces by a registered embodiment (option `embodiment`;
default `franka_panda`: S = 8, A = 7), the object a policy answers with.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field

from latbot.config import PluginConfig
from latbot.data import embodiments
from latbot.data.adapters.base import DatasetAdapter, SourceEpisode, SourceError, resized
from latbot.data.store import Episode


class $cls(DatasetAdapter):
    class Config(PluginConfig):
        type: Literal["$name"] = "$name"
        embodiment: str = Field("franka_panda", description="Registered embodiment of the native vectors.")
        fps: float = Field(10.0, gt=0, description="Control frequency of the recordings.")

    config: Config

    def _files(self, src: Path) -> list[Path]:
        files = sorted(src.glob("*.npz")) if src.is_dir() else [src]
        if not files:
            raise SourceError(f"{src}: no .npz files found")
        return files

    def cameras(self, src: Path) -> list[str]:
        with np.load(self._files(src)[0]) as f:
            return sorted(k.removeprefix("frames_") for k in f.files if k.startswith("frames_"))

    def episodes(self, src: Path) -> Iterator[SourceEpisode]:
        for path in self._files(src):
            yield SourceEpisode(key=path.name, source=str(path), load=lambda path=path, **kw: self._load(path, **kw))

    def _load(self, path: Path, image_size: tuple[int, int], resize_mode: str, cameras: list[str]) -> Episode:
        with np.load(path) as f:
            if "actions" not in f.files or "instruction" not in f.files:
                raise SourceError(f"{path}: needs the arrays 'actions' and 'instruction' (has {f.files})")
            actions = f["actions"].astype(np.float32)
            states = f["states"].astype(np.float32) if "states" in f.files else None
            frames = {cam: resized(iter(f[f"frames_{cam}"]), image_size, resize_mode) for cam in cameras}
            instruction = str(f["instruction"])
        traj = embodiments.get(self.config.embodiment).trajectory(states, actions, str(path))
        return Episode(key=path.name, frames=frames, trajectory=traj, instruction=instruction, task=instruction,
                       embodiment=self.config.embodiment, fps=self.config.fps, source=str(path),
                       native_actions=actions, native_states=states)  # fmt: skip

    @classmethod
    def sample_source(cls, directory: Path, episodes: int = 3, steps: int = 12) -> Path:
        """A tiny source in this layout (what `latbot plugins check` converts)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng(0)
        for i in range(episodes):
            actions = rng.uniform(-0.05, 0.05, (steps, 7)).astype(np.float32)
            actions[:, 6] = np.sign(rng.normal(size=steps))  # gripper command ±1
            states = rng.uniform(-0.5, 0.5, (steps, 8)).astype(np.float32)
            frames = rng.integers(0, 255, (steps, 48, 48, 3), dtype=np.uint8)
            np.savez(directory / f"ep{i:03d}.npz", frames_main=frames, actions=actions, states=states,
                     instruction=np.array("pick up the block"))  # fmt: skip
        return directory
''',
    "decoders": r'''
"""`$name`: a unified decoder (kind `decoders`). Contract: docs/plugins.md, "Decoders".

Built with the encoder's width D; returns the image loss (predict V_{t+k} from V_t and Z_sce) and the
action loss (predict A_{t..t+k-1} from Z_mot, masked by the embodiment's valid dimensions); `sample` is what
`latbot viz` and the diagnostics call (the signature is `latbot.models.decoders.base.Decoder.sample`). This
skeleton regresses a colour shift and the action sequence from pooled latents: replace it with your model.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch import nn
from torch.nn import functional as F

from latbot.config import PluginConfig
from latbot.data.spaces import ACTION_DIM


class $cls(nn.Module):
    class Config(PluginConfig):
        type: Literal["$name"] = "$name"
        horizon: int = Field(3, ge=1, description="K = data.num_frames − 1 actions per clip.")

    def __init__(self, config: Config, latent_width: int):
        super().__init__()
        self.config = config
        self.image_head = nn.Linear(latent_width, 3)
        self.action_head = nn.Linear(latent_width, config.horizon * ACTION_DIM)

    def repeated_blocks(self) -> list[nn.Module]:
        return []

    def predict(self, z_sce, z_mot, frame_t) -> tuple[torch.Tensor, torch.Tensor]:
        """z (B, N, D); frame_t (B, 3, H, W) uint8 or in [0, 1] → future frame (B, 3, H, W), actions (B, K, 44)."""
        frame = unit(frame_t) + self.image_head(z_sce.mean(1))[:, :, None, None]  # (B, 3, H, W)
        actions = self.action_head(z_mot.mean(1)).view(-1, self.config.horizon, ACTION_DIM)  # (B, K, 44)
        return frame, actions

    def forward(self, z_sce, z_mot, frame_t, frame_future, actions=None, action_mask=None) -> dict[str, torch.Tensor]:
        """z (B, N, D); frames (B, 3, H, W) uint8 or in [0, 1]; actions (B, K, 44); action_mask (B, 44)."""
        frame, pred = self.predict(z_sce, z_mot, frame_t)
        losses = {"image": F.mse_loss(frame, unit(frame_future))}
        if actions is not None:
            mask = action_mask[:, None, :].to(pred.dtype)  # (B, 1, 44)
            losses["action"] = ((pred - actions) ** 2 * mask).sum() / (mask.sum() * pred.shape[1]).clamp_min(1)
        return losses

    @torch.no_grad()
    def sample(self, z_sce, z_mot, frame_t, with_actions: bool = True, generator: torch.Generator | None = None):
        """→ (future frame (B, 3, h, w) in [0, 1], actions (B, K, 44) or None without `with_actions`). A generative
        decoder draws all its noise from `generator` (one seed, one result); this regression ignores it."""
        frame, actions = self.predict(z_sce, z_mot, frame_t)
        return frame.clamp(0, 1), actions if with_actions else None


def unit(frame: torch.Tensor) -> torch.Tensor:
    """uint8 or [0, 1] frames → float in [0, 1]."""
    return frame.float() / 255 if frame.dtype == torch.uint8 else frame.float()
''',
    "embodiments": r'''
"""`$name`: a robot (kind `embodiments`): native ↔ unified conversions, both directions.
Contract: docs/plugins.md, "Embodiments".

This skeleton is a single arm in the RIGHT slot commanded in end-effector deltas (like LIBERO's Panda):
native state (8) = position (3), axis-angle orientation (3), two finger positions; native action (7) =
dx, dy, dz, axis-angle delta (3), gripper command (−1 open, +1 close). It can write stores from LIBERO
layout files: `latbot data convert SRC --format libero_hdf5 --set embodiment=$name`.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from latbot.config import PluginConfig
from latbot.data import rotations as rot
from latbot.data.embodiments import Embodiment, command_to_unified, unified_mask, unified_to_command
from latbot.data.spaces import (
    ACTION_DIM,
    ACTION_GRIPPER,
    ACTION_POS,
    ACTION_ROT,
    STATE_DIM,
    STATE_GRIPPER,
    STATE_POS,
    STATE_QUAT,
)

R = "right"
OPEN_WIDTH = 0.08  # metres between the fingers fully open


class $cls(Embodiment):
    class Config(PluginConfig):
        type: Literal["$name"] = "$name"

    native_state_dim = 8
    native_action_dim = 7
    action_mask = unified_mask(ACTION_DIM, ACTION_POS[R], ACTION_ROT[R], ACTION_GRIPPER[R])
    state_mask = unified_mask(STATE_DIM, STATE_POS[R], STATE_QUAT[R], STATE_GRIPPER[R])
    gripper = "action[6] -1 open / +1 close; state[6:8] the finger positions"

    def states_to_unified(self, states: np.ndarray) -> np.ndarray:
        out = np.zeros((len(states), STATE_DIM), np.float32)
        out[:, STATE_POS[R]] = states[:, :3]
        out[:, STATE_QUAT[R]] = rot.matrix_to_quat(rot.axis_angle_to_matrix(np.asarray(states[:, 3:6], np.float64)))
        out[:, STATE_GRIPPER[R]] = 1.0 - np.clip((states[:, 6] - states[:, 7]) / OPEN_WIDTH, 0.0, 1.0)
        return out

    def actions_to_unified(self, actions: np.ndarray) -> np.ndarray:
        out = np.zeros((len(actions), ACTION_DIM), np.float32)
        out[:, ACTION_POS[R]] = actions[:, :3]
        out[:, ACTION_ROT[R]] = rot.matrix_to_euler(rot.axis_angle_to_matrix(np.asarray(actions[:, 3:6], np.float64)))
        out[:, ACTION_GRIPPER[R]] = command_to_unified(actions[:, 6])
        return out

    def actions_to_native(self, actions: np.ndarray) -> np.ndarray:
        axis_angle = rot.matrix_to_axis_angle(rot.euler_to_matrix(np.asarray(actions[:, ACTION_ROT[R]], np.float64)))
        grip = unified_to_command(actions[:, ACTION_GRIPPER[R]])[:, None]
        return np.concatenate([actions[:, ACTION_POS[R]], axis_angle, grip], 1)
''',
    "encoders": r'''
"""`$name`: a LAM encoder (kind `encoders`). Contract: docs/plugins.md, "Encoders".

frames (B, T, 3, H, W) uint8 or in [0, 1] and B instructions → Z_sce (B, Ns, D), Z_mot (B, Nm, D).
This skeleton pools a conv stem over each frame and ignores the instruction: replace it with your model.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch import nn

from latbot.config import PluginConfig


class $cls(nn.Module):
    class Config(PluginConfig):
        type: Literal["$name"] = "$name"
        width: int = Field(32, ge=8, description="D, the width of the latent tokens.")
        num_scene_tokens: int = Field(4, ge=1, description="Ns (a distillation student must have the same).")
        num_motion_tokens: int = Field(4, ge=1, description="Nm (a distillation student must have the same).")

    def __init__(self, config: Config):
        super().__init__()
        self.config = config
        d = config.width
        self.stem = nn.Conv2d(3, d, kernel_size=8, stride=8)
        self.queries = nn.Parameter(torch.randn(config.num_scene_tokens + config.num_motion_tokens, d) * 0.02)
        self.mix = nn.Linear(2 * d, d)

    @property
    def width(self) -> int:
        """D: the decoder is built with it, the distillation student's latents are projected to it."""
        return self.config.width

    def repeated_blocks(self) -> list[nn.Module]:
        """The blocks FSDP wraps and activation checkpointing recomputes (none here)."""
        return []

    def forward(self, frames: torch.Tensor, instructions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        x = frames.float() / 255 if frames.dtype == torch.uint8 else frames.float()
        feats = self.stem(x.flatten(0, 1) * 2 - 1).mean((2, 3)).unflatten(0, frames.shape[:2])  # (B, T, D)
        pooled = torch.cat([feats.mean(1), feats[:, -1] - feats[:, 0]], -1)  # (B, 2D): scene and motion
        z = self.queries[None] + self.mix(pooled)[:, None]  # (B, Ns + Nm, D)
        ns = self.config.num_scene_tokens
        return z[:, :ns], z[:, ns:]
''',
    "simulators": r'''
"""`$name`: a simulator (kind `simulators`) for `latbot data gen-sim --sim $name` and
`latbot eval sim --sim $name`. Contract: docs/plugins.md, "Simulators"; docs/sim.md.

This skeleton: a point gripper in the unit cube must reach a goal; the robot is the built-in `sawyer`
embodiment (state x, y, z, gripper opening; action dx, dy, dz, gripper command). Replace the episode
with your simulator.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from pydantic import Field

from latbot.config import PluginConfig
from latbot.sim.base import Simulator, SimulatorError, split_names

TASKS = {"reach": "reach the red goal"}
STEP = 0.05  # metres per step at full command


class $cls(Simulator):
    class Config(PluginConfig):
        type: Literal["$name"] = "$name"
        max_steps: int = Field(40, ge=1, description="Step limit of an episode.")

    embodiment = "sawyer"
    cameras = ("top",)
    default_camera = "top"
    tiny_task = "reach"  # what `latbot plugins check` runs

    def task_names(self, spec: list[str]) -> list[str]:
        names = split_names(spec)
        unknown = [n for n in names if n not in TASKS]
        if unknown:
            raise SimulatorError(f"unknown $name task(s) {unknown} (valid: {', '.join(TASKS)})")
        return list(dict.fromkeys(names))

    def instruction(self, task: str) -> str:
        return TASKS[task]

    def episode(self, task: str, seed: int, cameras: list[str], image_size: int) -> Episode:
        if set(cameras) - set(self.cameras):
            raise SimulatorError(f"unknown $name camera(s) {cameras} (valid: {', '.join(self.cameras)})")
        return Episode(self, task, seed, image_size)

    def scripted_policy(self, task: str) -> Expert:
        return Expert()


class Episode:
    def __init__(self, sim: $cls, task: str, seed: int, image_size: int):
        rng = np.random.default_rng(seed)
        self.instruction, self.size = sim.instruction(task), image_size
        self.max_steps, self.fps = sim.config.max_steps, 10.0
        self.pos, self.goal = rng.uniform(0.1, 0.9, 3), rng.uniform(0.2, 0.8, 3)

    def observe(self, cameras: list[str]) -> dict[str, Any]:
        s = self.size
        img = np.full((s, s, 3), 60, np.uint8)
        yy, xx = np.mgrid[0:s, 0:s] / s
        img[(np.abs(xx - self.goal[0]) < 0.06) & (np.abs(yy - self.goal[1]) < 0.06)] = (220, 40, 40)
        img[(xx - self.pos[0]) ** 2 + (yy - self.pos[1]) ** 2 < 0.04**2] = int(100 + 155 * self.pos[2])
        return {"images": {c: img for c in cameras}, "state": np.append(self.pos, 1.0).astype(np.float32),
                "instruction": self.instruction, "privileged": np.concatenate([self.pos, self.goal])}  # fmt: skip

    def step(self, action: np.ndarray) -> bool:
        self.pos = np.clip(self.pos + STEP * np.clip(np.asarray(action, np.float64)[:3], -1, 1), 0, 1)
        return bool(np.linalg.norm(self.pos - self.goal) < 0.08)

    def close(self) -> None:
        pass


class Expert:
    """The scripted expert gen-sim records: straight at the goal, gripper open."""

    cameras = ()

    def reset(self, task: str, instruction: str) -> None:
        pass

    def predict(self, observation: dict[str, Any]) -> np.ndarray:
        priv = observation["privileged"]
        move = np.clip((priv[3:] - priv[:3]) / STEP, -1, 1)
        return np.append(move, -1.0).astype(np.float32)[None]  # (H, A) = (1, 4)
''',
    "stages": r'''
"""`$name`: a training stage (kind `stages`). Contract: docs/training.md, "Adding a stage";
docs/plugins.md, "Stages".

This skeleton fits y = 3·x with a linear layer on fixed samples: replace the model and the data. The run
directory, `latbot train`, `--resume` and the manifest work unchanged.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from latbot.config import Section
from latbot.recipes.schema import RecipeBase
from latbot.stages import Stage


class ${cls}Model(Section):
    width: int = Field(4, ge=1, description="Input features.")
    samples: int = Field(64, ge=2, description="Training samples.")


class ${cls}Recipe(RecipeBase):
    stage: Literal["$name"]
    model: ${cls}Model = Field(default_factory=${cls}Model)


class Regressor(torch.nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.lin = torch.nn.Linear(width, 1)

    def forward(self, batch: dict) -> dict[str, torch.Tensor]:
        return {"loss": torch.nn.functional.mse_loss(self.lin(batch["x"]), batch["y"])}


class $cls(Stage):
    Config = ${cls}Recipe

    @classmethod
    def tiny_recipe(cls) -> dict:
        return {"stage": "$name", "train": {"steps": 5, "global_batch_size": 8, "micro_batch_size": 8}}

    def build_model(self) -> Regressor:
        return Regressor(self.recipe.model.width)

    def build_data(self, world):
        from latbot.data.clips import MixtureSampler

        m = self.recipe.model
        x = torch.randn(m.samples, m.width, generator=torch.Generator().manual_seed(0))
        data = [{"x": x[i], "y": 3 * x[i, :1]} for i in range(m.samples)]
        r = self.recipe
        sampler = MixtureSampler([m.samples], [1.0], seed=r.train.seed, rank=world.rank, world_size=world.size)
        return data, sampler

    def extra(self, model) -> dict:
        return {"weight": float(model.lin.weight[0, 0].detach())}
''',
    "students": r'''
"""`$name`: a distillation student (kind `students`). Contract: docs/plugins.md, "Students".

frames (B, C, 3, H, W) (C = 1 in distillation, the cameras in finetuning) and B instructions →
{"latents" (B, Ns + Nm, latent_width), "lm_loss" (with subtasks), "layers" and "attention_mask" (with
hidden_states)}. This skeleton: conv patches + a bag-of-words token + learnable queries through a few
transformer layers; the reasoning loss predicts the subtask's words. Replace it with your VLM.
"""

from __future__ import annotations

import zlib
from typing import Literal

import torch
from pydantic import Field
from torch import nn
from torch.nn import functional as F

from latbot.config import PluginConfig


class $cls(nn.Module):
    class Config(PluginConfig):
        type: Literal["$name"] = "$name"
        width: int = Field(32, ge=8, description="The width of every token (what the action expert reads).")
        depth: int = Field(2, ge=1, description="Transformer layers.")
        num_scene_tokens: int = Field(4, ge=1, description="Ns: must equal the teacher's (checked by distill).")
        num_motion_tokens: int = Field(4, ge=1, description="Nm: must equal the teacher's (checked by distill).")
        vocab_buckets: int = Field(512, ge=16, description="Hashed word buckets.")

    def __init__(self, config: Config, latent_width: int | None = None):
        super().__init__()
        self.config, d = config, config.width
        self.stem = nn.Conv2d(3, d, kernel_size=8, stride=8)
        self.words = nn.EmbeddingBag(config.vocab_buckets, d, mode="mean")
        self.queries = nn.Parameter(torch.randn(config.num_scene_tokens + config.num_motion_tokens, d) * 0.02)
        self.layers = nn.ModuleList(
            nn.TransformerEncoderLayer(d, 2, 2 * d, dropout=0.0, batch_first=True) for _ in range(config.depth)
        )
        self.word_head = nn.Linear(d, config.vocab_buckets)
        self.latent_width = latent_width or d  # the teacher's width D (None: no teacher)
        self.latent_proj = nn.Linear(d, self.latent_width)

    @property
    def width(self) -> int:
        return self.config.width

    @property
    def num_layers(self) -> int:
        return self.config.depth

    def repeated_blocks(self) -> list[nn.Module]:
        return list(self.layers)

    def _hash(self, texts: list[str], device) -> tuple[torch.Tensor, torch.Tensor]:
        ids, offsets = [], []
        for text in texts:
            offsets.append(len(ids))
            ids.extend(zlib.crc32(w.encode()) % self.config.vocab_buckets for w in text.lower().split() or [""])
        return torch.tensor(ids, device=device), torch.tensor(offsets, device=device)

    def forward(self, frames, instructions, subtasks=None, hidden_states=False) -> dict[str, torch.Tensor]:
        b = frames.shape[0]
        x = frames.float() / 255 if frames.dtype == torch.uint8 else frames.float()
        patches = self.stem(x.flatten(0, 1)).flatten(2).transpose(1, 2).reshape(b, -1, self.width)  # (B, C·h·w, D)
        words = self.words(*self._hash(instructions, frames.device))[:, None]  # (B, 1, D)
        h = torch.cat([patches, words, self.queries.expand(b, -1, -1)], 1)  # (B, N, D)
        layers = [h]
        for layer in self.layers:
            h = layer(h)
            layers.append(h)
        out = {"latents": self.latent_proj(h[:, -self.queries.shape[0] :])}
        if subtasks is not None:
            ids, offsets = self._hash(subtasks, frames.device)
            rows = torch.bucketize(torch.arange(len(ids), device=ids.device), offsets, right=True) - 1
            out["lm_loss"] = F.cross_entropy(self.word_head(h.mean(1))[rows], ids)
        if hidden_states:
            out["layers"] = tuple(layers)
            out["attention_mask"] = torch.ones(b, h.shape[1], dtype=torch.bool, device=h.device)
        return out
''',
}
