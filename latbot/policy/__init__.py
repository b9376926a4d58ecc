"""The inference API: `LatBotPolicy.from_checkpoint(run_dir).predict(observation) -> (H, A) actions`.

An observation is what a robot or a simulator sees at one step::

    {"images": {camera: (H, W, 3) uint8},      # every camera the policy was trained on
     "state": (S,) float,                      # the robot's native proprioceptive state
     "instruction": str}                       # ("prompt" is accepted too, as openpi clients send it)

`predict` returns the next H actions in the robot's native units (unnormalised; the gripper in the
robot's own convention: a ±1 command, or an open amount for `widowx` / `google_robot`), or in the
unified 44-D space with `space="unified"`. Bad input raises `ObservationError`
naming the key and what was expected. Used by `latbot eval sim` and `latbot serve`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from latbot.errors import LatBotError


class ObservationError(LatBotError):
    """An observation does not match what the policy was trained on."""


OBSERVATION_KEYS = ("images", "state", "instruction", "prompt")
MAX_INSTRUCTION_CHARS = 2000  # far above any task instruction; the tokenizer would truncate anyway
MAX_STATE_ABS = 1e5  # native units (metres, radians, gripper widths): larger is a unit or sensor bug
MAX_IMAGE_SIDE = 8192  # pixels


class LatBotPolicy:
    def __init__(self, model, target: dict[str, Any], run_dir: str | Path | None = None):
        from latbot.data.normalize import QuantileNormalizer

        self.model = model.eval()
        self.target = target
        self.run_dir = run_dir
        self.cameras: list[str] = list(target["cameras"])
        self.image_size = tuple(target["image_size"])
        self.horizon = model.horizon
        self.action_norm = QuantileNormalizer.from_stats(target["stats"], "actions")
        self.state_norm = QuantileNormalizer.from_stats(target["stats"], "states")
        self.action_mask = np.asarray(target["action_mask"], bool)
        self.state_mask = np.asarray(target["state_mask"], bool)
        self.embodiment = target["embodiment"]

    @classmethod
    def from_checkpoint(cls, run_dir: str | Path, device: str = "cpu") -> LatBotPolicy:
        """A finetuned policy from a `latbot train` run directory (manifest kind "finetune")."""
        return load_policy(run_dir, device)

    def reset(self, task: str | None = None, instruction: str | None = None) -> None:
        """Nothing to reset: the policy is stateless between calls."""

    @property
    def metadata(self) -> dict[str, Any]:
        """What a client needs to know to build observations (sent by `latbot serve` on connect)."""
        from latbot import __version__

        emb = self._embodiment(required=False)
        return {
            "latbot_version": __version__,
            "checkpoint": str(self.run_dir) if self.run_dir else None,
            "cameras": self.cameras,
            "image_size": list(self.image_size),
            "state_dim": emb.native_state_dim if emb else self.target.get("native_state_dim"),
            "action_dim": emb.native_action_dim if emb else self.target.get("native_action_dim"),
            "action_horizon": self.horizon,
            "embodiment": self.embodiment,
            "tasks": self.target.get("tasks", []),
        }

    def _embodiment(self, required: bool = True):
        from latbot.policy import embodiments

        if not required and not embodiments.is_registered(self.embodiment):
            return None
        return embodiments.get(self.embodiment)

    # -- input checks ---------------------------------------------------------------------------------------
    def check(
        self, observation: Any, *, strict: bool = False, resize: bool = True
    ) -> tuple[np.ndarray, np.ndarray, str]:
        """→ images (C, H, W, 3) uint8 at the training size, native state (S,) float32, instruction.

        Always: the instruction is a string of at most MAX_INSTRUCTION_CHARS; every camera is a uint8
        (H, W, 3) array; the state is a (S,) float32/float64 array (or, unless `strict`, a list of
        numbers), finite and within ±MAX_STATE_ABS. `strict` (the server): unknown keys, extra cameras and
        state lists are refused too. `resize=False`: images must already be at the training size."""
        if not isinstance(observation, dict):
            raise ObservationError(f"observation must be a dict, got {type(observation).__name__}")
        unknown = [k for k in observation if k not in OBSERVATION_KEYS]
        if strict and unknown:
            raise ObservationError(
                f"observation has unknown key(s) {unknown!r:.200}; expected {list(OBSERVATION_KEYS)}"
            )
        instruction = observation.get("instruction", observation.get("prompt"))
        if not isinstance(instruction, str) or not instruction.strip():
            raise ObservationError("observation['instruction'] (or 'prompt') must be a non-empty string")
        if len(instruction) > MAX_INSTRUCTION_CHARS:
            raise ObservationError(
                f"observation['instruction'] has {len(instruction)} characters, more than {MAX_INSTRUCTION_CHARS}"
            )
        images = observation.get("images")
        if not isinstance(images, dict):
            raise ObservationError(
                f"observation['images'] must be a dict camera → (H, W, 3) uint8; cameras: {self.cameras}"
            )
        missing = [c for c in self.cameras if c not in images]
        if missing:
            raise ObservationError(f"observation['images'] lacks camera(s) {missing}; the policy needs {self.cameras}")
        extra = [c for c in images if c not in self.cameras]
        if strict and extra:
            raise ObservationError(
                f"observation['images'] has camera(s) {extra!r:.200} the policy does not use; it needs {self.cameras}"
            )
        frames = [self._image(images[c], c, resize) for c in self.cameras]
        return np.stack(frames), self._state(observation.get("state"), strict), instruction

    def _image(self, img: Any, camera: str, resize: bool) -> np.ndarray:
        where = f"observation['images']['{camera}']"
        if not isinstance(img, np.ndarray) or img.dtype != np.uint8 or img.ndim != 3 or img.shape[-1] != 3:
            got = f"{img.dtype}{img.shape}" if isinstance(img, np.ndarray) else type(img).__name__
            raise ObservationError(f"{where} must be a (H, W, 3) uint8 array, got {got}")
        if img.shape[0] < 8 or img.shape[1] < 8 or max(img.shape[:2]) > MAX_IMAGE_SIDE:
            raise ObservationError(f"{where} is {img.shape[:2]}; sides must be in [8, {MAX_IMAGE_SIDE}]")
        if img.shape[:2] != self.image_size and not resize:
            raise ObservationError(
                f"{where} is {img.shape[0]}×{img.shape[1]}, the policy takes {self.image_size[0]}×{self.image_size[1]} "
                "(metadata 'image_size'); resize on the client, or start the server with --resize"
            )
        return self._resize(img)

    def _state(self, state: Any, strict: bool) -> np.ndarray:
        dim = self._embodiment().native_state_dim
        want = f"a finite ({dim},) float array"
        if isinstance(state, list | tuple) and not strict:
            if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in state):
                raise ObservationError(f"observation['state'] must be {want}; the list holds non-numbers")
            state = np.asarray(state, np.float64)
        if not isinstance(state, np.ndarray):
            raise ObservationError(f"observation['state'] must be {want}, got {type(state).__name__}")
        if state.dtype not in (np.dtype("<f4"), np.dtype("<f8")) or not state.dtype.isnative:
            raise ObservationError(
                f"observation['state'] must be {want} (float32 or float64, little-endian), got dtype {state.dtype.str}"
            )
        if state.shape != (dim,) or not np.isfinite(state).all():
            raise ObservationError(f"observation['state'] must be {want}, got shape {state.shape}")
        if np.abs(state).max(initial=0.0) > MAX_STATE_ABS:
            raise ObservationError(
                f"observation['state'] holds {np.abs(state).max():.3g}, beyond ±{MAX_STATE_ABS:g} (native units); "
                "check the robot's units"
            )
        return state.astype(np.float32)

    def _resize(self, img: np.ndarray) -> np.ndarray:
        if img.shape[:2] == self.image_size:
            return img
        from latbot.data.video import resize_frame

        return resize_frame(np.ascontiguousarray(img), self.image_size, "stretch")

    # -- inference ------------------------------------------------------------------------------------------
    def predict(
        self,
        observation: dict[str, Any],
        *,
        space: str = "native",
        seed: int = 0,
        strict: bool = False,
        resize: bool = True,
    ) -> np.ndarray:
        """The next H actions, (H, A) float32 — native units, or the unified 44-D space. `strict` and
        `resize`: see `check` (`latbot serve` passes strict=True, resize=False unless --resize)."""
        if space not in ("native", "unified"):
            raise ValueError(f"space must be 'native' or 'unified', got {space!r}")
        frames, native_state, instruction = self.check(observation, strict=strict, resize=resize)
        emb = self._embodiment()
        actions = self.predict_unified(frames, emb.state_to_unified(native_state), instruction, seed=seed)
        return actions if space == "unified" else np.asarray(emb.actions_to_native(actions), np.float32)

    def predict_unified(self, frames: np.ndarray, state: np.ndarray, instruction: str, *, seed: int = 0) -> np.ndarray:
        """Below `predict`: images (C, H, W, 3) uint8 of `self.cameras` at the training size and the unified
        state (46,) → the unified chunk (H, 44), invalid dimensions zero (used on stored episodes)."""
        import torch

        from latbot.data.spaces import GRIPPER_DIMS

        state = self.state_norm.normalize(np.asarray(state, np.float32)).astype(np.float32)
        device = next(self.model.parameters()).device
        x = torch.from_numpy(np.ascontiguousarray(frames.transpose(0, 3, 1, 2)))[None].to(device)
        s = torch.from_numpy(state)[None].to(device)
        smask = torch.from_numpy(self.state_mask.astype(np.float32))[None].to(device)
        amask = torch.from_numpy(self.action_mask)[None].to(device)
        with torch.inference_mode():
            actions, grip = self.model.sample(x, [instruction], s, smask, amask, torch.Generator().manual_seed(seed))
        actions = self.action_norm.unnormalize(actions[0].float().cpu().numpy().astype(np.float64))
        actions[:, GRIPPER_DIMS] = (grip[0].cpu().numpy() > 0.5).astype(np.float64)
        actions[:, ~self.action_mask] = 0.0
        return actions.astype(np.float32)


def load_policy(path: str | Path, device: str = "cpu") -> LatBotPolicy:
    """The `LatBotPolicy` of a finetuning run (what eval and serve use): `latbot.runs.load_finetuned`, wrapped."""
    import warnings

    from latbot import runs

    model, target = runs.load_finetuned(path, device)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # degenerate dimensions were reported when the policy was trained
        return LatBotPolicy(model, target, path)
