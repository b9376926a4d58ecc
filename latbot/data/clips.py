"""Training samples from episode stores: LAM clips, first-frame + action-chunk samples, and a weighted,
deterministic, resumable mixture over stores.

Batch keys are constants (`K_*`), defined here once. Shapes per sample (a DataLoader adds B in front):

    LAM clip (ClipDataset)                      chunk sample (ChunkDataset)
    frames        (T, 3, H, W) uint8            frames        (C, 3, H, W) uint8, C cameras at step t
    actions       (T−1, 44) float32             actions       (H, 44) float32, steps t..t+H−1
    states        (T, 46) float32               state         (46,) float32
    action_mask   (44,) bool                    action_mask / state_mask, action_pad (H,) bool
                                                gripper (H, 2) unnormalised (left, right)
    state_mask    (46,) bool                    native_actions (H, A) when the store has them
    instruction, subtask: str ("" where the episode has no subtask annotation); episode, step: int

Clip frames are V_t, V_{t+s}, …, V_{t+(T−1)s} for the source's stride s; the clip's actions are the
T−1 actions between consecutive clip frames: position and fingertip deltas summed over the s steps,
rotation deltas composed (R_{t+s} R_tᵀ as Euler), gripper the value at the end of the interval.
Stores are opened lazily in each process (a forked worker reopens the store its parent used), so
DataLoader workers are safe with fork and spawn. A sample reads only what it returns: the frames at its
steps (one per camera for a chunk sample), and an episode's actions/states/native actions once, kept for
the episode's later samples (`EPISODE_CACHE` episodes per process).
"""

from __future__ import annotations

import math
import os
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from latbot.data import rotations as rot
from latbot.data.normalize import QuantileNormalizer
from latbot.data.spaces import ACTION_GRIPPER, ACTION_POS, ACTION_ROT, ACTION_TIPS, ARMS

K_FRAMES = "frames"
K_ACTIONS = "actions"
K_STATES = "states"
K_STATE = "state"
K_ACTION_MASK = "action_mask"
K_STATE_MASK = "state_mask"
K_ACTION_PAD = "action_pad"
K_NATIVE_ACTIONS = "native_actions"
K_INSTRUCTION = "instruction"
K_SUBTASK = "subtask"
K_EPISODE = "episode"
K_STEP = "step"
K_SOURCE = "source"
K_GRIPPER = "gripper"  # (H, 2) the unified gripper values (left, right) of the chunk, unnormalised
K_LATENTS = "teacher_latents"  # (Ns + Nm, D) precomputed teacher latents (latbot.data.latent_cache)
EPISODE_CACHE = 64  # episodes whose low-dimensional arrays a dataset keeps in memory, per process


def frames_chw(frames: np.ndarray) -> torch.Tensor:
    """(T, H, W, 3) uint8 frames as the (T, 3, H, W) tensor the models take: a permuted view, no per-sample copy.
    The one copy is the batch's: default_collate's `torch.stack`, into a contiguous batch in DataLoader workers
    (shared memory), a channels-last-strided one in the main process. A single sample's frames are not
    contiguous (`.contiguous()` where a caller needs `.view`)."""
    return torch.from_numpy(frames).permute(0, 3, 1, 2)


class _StoreDataset(Dataset):
    """Holds only the store path and an index; the store is opened on first use in each process."""

    def __init__(
        self,
        store: str | Path,
        episodes: Sequence[int] | None,
        normalize: bool,
        cameras: list[str] | None,
        stats: dict[str, Any] | None = None,
    ):
        from latbot.data.location import store_location
        from latbot.data.store import EpisodeStore

        self.path = store_location(store)  # a Path, or a URL string (a store on object storage)
        with EpisodeStore.open(self.path) as s:
            self.records = [s.records[i] for i in episodes] if episodes is not None else list(s.records)
            self.cameras = cameras or s.cameras[:1]
            missing = [c for c in self.cameras if c not in s.cameras]
            if missing:
                raise ValueError(f"{self.path}: camera(s) {missing} not in the store (it has {s.cameras})")
            stats = stats or s.stats
            self.has_native = s.has_array("native_actions")
            self.has_frame_motion = s.has_array("frame_motion")
        self.action_norm = self.state_norm = None
        if normalize:
            if stats is None:
                raise ValueError(f"{self.path}: the store has no statistics; run `latbot data stats {self.path}`")
            self.action_norm = QuantileNormalizer.from_stats(stats, "actions")
            self.state_norm = QuantileNormalizer.from_stats(stats, "states")
        self._store = None
        self._pid = os.getpid()
        self._vectors: OrderedDict[int, dict[str, np.ndarray]] = OrderedDict()

    @property
    def store(self):
        if self._store is None or self._pid != os.getpid():  # first use, or a forked worker
            from latbot.data.store import EpisodeStore

            self._store, self._pid, self._vectors = EpisodeStore.open(self.path), os.getpid(), OrderedDict()
        return self._store

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_store": None, "_vectors": OrderedDict()}  # workers reopen the store themselves

    def _frames(self, episode: int, steps: np.ndarray) -> dict[str, np.ndarray]:
        """camera → (n, H, W, 3) uint8 at `steps` (increasing) of an episode."""
        return {c: self.store.read_steps(f"frames/{c}", episode, steps) for c in self.cameras}

    def _episode(self, episode: int) -> dict[str, np.ndarray]:
        """The episode's actions (L, 44), states (L, 46) and, when the store has them, native actions (L, A):
        read once and kept (the last `EPISODE_CACHE` episodes)."""
        store = self.store
        hit = self._vectors.get(episode)
        if hit is not None:
            self._vectors.move_to_end(episode)
            return hit
        names = ["actions", "states"] + (["native_actions"] if self.has_native else [])
        names += ["frame_motion"] if getattr(self, "has_frame_motion", False) else []
        out = self._vectors[episode] = {n: store.read_steps(n, episode, slice(None)) for n in names}
        if len(self._vectors) > EPISODE_CACHE:
            self._vectors.popitem(last=False)
        return out


class ClipDataset(_StoreDataset):
    """LAM clips of `num_frames` frames, `frame_stride` steps apart, from one store."""

    def __init__(
        self,
        store: str | Path,
        num_frames: int = 16,
        frame_stride: int = 1,
        *,
        episodes: Sequence[int] | None = None,
        cameras: list[str] | None = None,
        normalize: bool = False,
        action_stats: dict[str, Any] | None = None,
        reverse: float = 0.0,
        reverse_seed: int = 0,
    ):
        """`normalize`: actions and states by the store's per-step statistics. `action_stats`: the clip's
        per-interval actions by statistics of the aggregated deltas at this stride (`interval_action_stats`,
        what the LAM trains on); states stay raw. `reverse`: the fraction of clips played backwards
        (`reverse_steps`); which ones is a pure function of (`reverse_seed`, index), so a resumed run sees
        the same clips."""
        super().__init__(store, episodes, normalize, cameras)
        if not 0.0 <= reverse <= 1.0:
            raise ValueError(f"reverse is {reverse}; give a fraction of clips in [0, 1]")
        if reverse and self.has_frame_motion:
            raise ValueError(
                f"{self.path}: its actions are in a moving camera frame (frame_motion), which a reversed clip "
                "cannot re-express; set reverse to 0 for this store"
            )
        self.reverse, self.reverse_seed = reverse, reverse_seed
        if action_stats is not None:
            if normalize:
                raise ValueError("give either normalize=True or action_stats, not both")
            self.action_norm = QuantileNormalizer(
                action_stats["q01"], action_stats["q99"], name=f"{self.path}: actions"
            )
        self.num_frames, self.stride = num_frames, frame_stride
        span = (num_frames - 1) * frame_stride
        self.starts = [(r.index, t) for r in self.records for t in range(max(0, r.length - span))]
        if not self.starts:
            raise ValueError(f"{self.path}: no episode is long enough for {num_frames} frames at stride {frame_stride}")

    def __len__(self) -> int:
        return len(self.starts)

    def __getitem__(self, i: int) -> dict[str, Any]:
        episode, t = self.starts[i]
        rec = self.store.records[episode]
        span = (self.num_frames - 1) * self.stride + 1
        keep = t + np.arange(0, span, self.stride)  # the clip's frames
        frames = self._frames(episode, keep)[self.cameras[0]]  # (T, H, W, 3)
        vectors = self._episode(episode)
        motion = vectors.get("frame_motion")
        motion = motion[t : t + span - 1] if motion is not None else None
        if self.reverse and np.random.default_rng([self.reverse_seed, i]).random() < self.reverse:
            frames, keep = frames[::-1].copy(), keep[::-1]
            actions = aggregate_actions(reverse_steps(vectors["actions"], t, span - 1), self.stride)
        else:
            actions = aggregate_actions(vectors["actions"][t : t + span - 1], self.stride, motion)  # (T−1, 44)
        states = vectors["states"][keep]
        if self.action_norm is not None:
            actions = self.action_norm.normalize(actions)
        if self.state_norm is not None:
            states = self.state_norm.normalize(states)
        action_mask, state_mask = rec.masks()
        subtask = rec.subtask_at(t)
        return {
            K_FRAMES: frames_chw(frames),
            K_ACTIONS: torch.from_numpy(actions.astype(np.float32)),
            K_STATES: torch.from_numpy(states.astype(np.float32)),
            K_ACTION_MASK: torch.from_numpy(action_mask),
            K_STATE_MASK: torch.from_numpy(state_mask),
            K_INSTRUCTION: rec.instruction,
            K_SUBTASK: subtask or "",  # "": the episode has no subtask here (distillation decides what to do)
            K_EPISODE: episode,
            K_STEP: t,
        }


class ChunkDataset(_StoreDataset):
    """First-frame + action-chunk samples (distillation, finetuning): every step t of every episode."""

    def __init__(
        self,
        store: str | Path,
        horizon: int = 10,
        *,
        episodes: Sequence[int] | None = None,
        cameras: list[str] | None = None,
        normalize: bool = True,
        stats: dict[str, Any] | None = None,
    ):
        """`stats` normalises with other statistics than the store's (one policy trained on several stores)."""
        super().__init__(store, episodes, normalize, cameras, stats)
        self.horizon = horizon
        self.steps = [(r.index, t) for r in self.records for t in range(r.length)]

    def __len__(self) -> int:
        return len(self.steps)

    def __getitem__(self, i: int) -> dict[str, Any]:
        episode, t = self.steps[i]
        rec = self.store.records[episode]
        chunk = np.minimum(t + np.arange(self.horizon), rec.length - 1)  # past the end: repeat the last step
        pad = t + np.arange(self.horizon) >= rec.length
        vectors = self._episode(episode)
        actions = vectors["actions"][chunk]
        gripper = actions[:, [ACTION_GRIPPER[arm] for arm in ARMS]].astype(np.float32)
        state = vectors["states"][t]
        if self.action_norm is not None:
            actions, state = self.action_norm.normalize(actions), self.state_norm.normalize(state)
        frames = np.concatenate(list(self._frames(episode, np.array([t])).values()))  # (C, H, W, 3): step t only
        action_mask, state_mask = rec.masks()
        subtask = rec.subtask_at(t)
        sample = {
            K_FRAMES: frames_chw(frames),
            K_ACTIONS: torch.from_numpy(actions.astype(np.float32)),
            K_STATE: torch.from_numpy(state.astype(np.float32)),
            K_ACTION_MASK: torch.from_numpy(action_mask),
            K_STATE_MASK: torch.from_numpy(state_mask),
            K_ACTION_PAD: torch.from_numpy(pad),
            K_GRIPPER: torch.from_numpy(gripper),
            K_INSTRUCTION: rec.instruction,
            K_SUBTASK: subtask or "",  # "": the episode has no subtask here (distillation decides what to do)
            K_EPISODE: episode,
            K_STEP: t,
        }
        if self.has_native:
            sample[K_NATIVE_ACTIONS] = torch.from_numpy(vectors["native_actions"][chunk].astype(np.float32))
        return sample


def interval_action_stats(
    store: str | Path | Sequence[tuple[str | Path, Sequence[int] | None]],
    stride: int,
    episodes: Sequence[int] | None = None,
    max_episodes: int = 2000,
    seed: int = 0,
) -> dict[str, Any]:
    """Statistics (mean, std, min, max, q01, q99 per dimension; None where no episode fills it) of the
    per-interval actions a LAM sees at `stride`: every window of `stride` consecutive steps, aggregated as
    in `aggregate_actions`. `store` is one store (with optional `episodes`) or a set of (store, episodes)
    pairs taken together; at most `max_episodes` episodes in all (a deterministic random subset) are read."""
    from latbot.data.normalize import STAT_KEYS

    parts = [(store, episodes)] if isinstance(store, str | Path) else list(store)
    rows, masks, read = [], [], 0
    for path, chosen in parts:
        r, m, n = _interval_windows(path, stride, chosen, max(1, max_episodes // len(parts)), seed)
        rows += r
        masks += m
        read += n
    values = np.concatenate(rows) if rows else np.zeros((0, 44))
    valid = np.concatenate(masks) if masks else np.zeros((0, 44), bool)
    out: dict[str, Any] = {k: [] for k in STAT_KEYS}
    for d in range(values.shape[1]):
        column = values[valid[:, d], d]
        numbers = (
            (None,) * len(STAT_KEYS)
            if column.size == 0
            else (column.mean(), column.std(), column.min(), column.max(), *np.quantile(column, [0.01, 0.99]))
        )
        for k, v in zip(STAT_KEYS, numbers, strict=True):
            out[k].append(None if v is None else float(v))
    return out | {"stride": stride, "intervals": len(values), "episodes": read}


def _interval_windows(store, stride: int, episodes, max_episodes: int, seed: int):
    """([aggregated windows (n, 44)], [their validity masks], episodes read) of one store."""
    from latbot.data.store import EpisodeStore

    with EpisodeStore.open(store) as s:
        records = [s.records[i] for i in episodes] if episodes is not None else list(s.records)
        if len(records) > max_episodes:
            pick = np.sort(np.random.default_rng(seed).choice(len(records), max_episodes, replace=False))
            records = [records[i] for i in pick]
        actions = s.array("actions")
        motion = s.array("frame_motion") if s.has_array("frame_motion") else None
        rows, masks = [], []
        for rec in records:
            steps = np.asarray(actions[rec.offset : rec.stop], np.float64)
            frames = np.asarray(motion[rec.offset : rec.stop], np.float64) if motion is not None else None
            for offset in range(min(stride, len(steps))):  # every window start, in `stride` interleaved passes
                windows = aggregate_actions(steps[offset:], stride, None if frames is None else frames[offset:])
                rows.append(windows)
                masks.append(np.broadcast_to(rec.masks()[0], windows.shape))
    return rows, masks, len(records)


def reverse_steps(actions: np.ndarray, t: int, n: int) -> np.ndarray:
    """The per-step actions (n, 44) that play an episode's steps t..t+n backwards, from state t+n to state t:
    the steps in reverse order, each undone — position and fingertip deltas negated, rotation deltas
    inverted (R_{k+1} R_kᵀ → R_k R_{k+1}ᵀ) — and the gripper of each step the value that held at the state
    it ends in (the original step k−1's, the first step's at the episode's start). `actions` is the
    episode's (L, 44) array; t + n ≤ L."""
    steps = np.array(actions[t : t + n][::-1], dtype=np.float64)
    for sl in (*ACTION_POS.values(), *ACTION_TIPS.values()):
        steps[:, sl] = -steps[:, sl]
    ends = np.arange(t + n - 1, t - 1, -1)  # the original step each reversed step undoes, k
    before = np.maximum(ends - 1, 0)  # the step that led to state k
    for arm in ARMS:
        steps[:, ACTION_ROT[arm]] = rot.matrix_to_euler(
            np.swapaxes(rot.euler_to_matrix(steps[:, ACTION_ROT[arm]]), -1, -2)
        )
        steps[:, ACTION_GRIPPER[arm]] = actions[before, ACTION_GRIPPER[arm]]
    return steps.astype(actions.dtype, copy=False)


def aggregate_actions(steps: np.ndarray, stride: int, frame_motion: np.ndarray | None = None) -> np.ndarray:
    """(n·s, 44) per-step actions → (n, 44) per-interval actions (see the module docstring).

    `frame_motion` (n·s, 3, 3) or (n·s, 9), for actions expressed in a moving frame (EgoDex: the camera of
    each step): the rotation from step k+1's frame to step k's. Each step's deltas are then re-expressed in
    the frame of the interval's first step before they are summed (positions, fingertips) or composed
    (rotations, conjugated), so an interval's action is the motion over it as its first camera saw it."""
    if stride == 1:
        return steps
    n = len(steps) // stride
    groups = steps[: n * stride].reshape(n, stride, -1)
    if frame_motion is not None:
        groups = groups.astype(np.float64)
        m = np.asarray(frame_motion, np.float64)[: n * stride].reshape(n, stride, 3, 3)
        q = np.empty_like(m)  # q[:, k]: step k's frame → the interval's first frame
        q[:, 0] = np.eye(3)
        for k in range(1, stride):
            q[:, k] = q[:, k - 1] @ m[:, k - 1]
        for sl in (*ACTION_POS.values(), *ACTION_TIPS.values()):
            xyz = groups[:, :, sl].reshape(n, stride, -1, 3)  # (n, s, points, 3)
            groups[:, :, sl] = np.einsum("nkij,nkpj->nkpi", q, xyz).reshape(n, stride, -1)
    out = groups.sum(axis=1)
    for arm in ARMS:
        mats = rot.euler_to_matrix(groups[:, :, ACTION_ROT[arm]])  # (n, s, 3, 3)
        if frame_motion is not None:
            mats = q @ mats @ np.swapaxes(q, -1, -2)  # each step's relative rotation in the first frame
        total = mats[:, 0]
        for k in range(1, stride):
            total = mats[:, k] @ total  # world-frame deltas compose on the left
        out[:, ACTION_ROT[arm]] = rot.matrix_to_euler(total)
        out[:, ACTION_GRIPPER[arm]] = groups[:, -1, ACTION_GRIPPER[arm]]
    return out.astype(steps.dtype, copy=False)


class MixtureSampler(Sampler[int]):
    """Indices into a `ConcatDataset` of per-source datasets: a source is drawn with probability
    weight / Σ weights, then a sample uniformly within it.

    The stream is indexed by the global sample: sample k of the run is `global_index(k)`, a pure function
    of (seed, k) whatever the number of processes. Rank r of W takes the interleaved global positions
    r, r + W, r + 2W, …, so data is sharded without overlap, and the G/W samples each rank takes for
    optimizer step s (micro-batch × accumulation) are, over all ranks, exactly the global samples
    [s·G, (s+1)·G): the same examples for any W that divides G. With W = 1 the stream is the global
    stream in order. `position` counts the samples this rank has handed out; `global_position`
    (= position × W) is the run's sample count, which is what a resume at another world size restores."""

    BLOCK = 4096

    def __init__(
        self,
        sizes: Sequence[int],
        weights: Sequence[float],
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        num_samples: int | None = None,
    ):
        if len(sizes) != len(weights) or len(sizes) == 0:
            raise ValueError("sizes and weights must be non-empty and of equal length")
        if any(w <= 0 for w in weights) or any(s <= 0 for s in sizes):
            raise ValueError(f"weights and sizes must be positive, got {list(weights)} and {list(sizes)}")
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} of world_size {world_size}: need 0 <= rank < world_size")
        self.sizes = np.asarray(sizes, np.int64)
        self.offsets = np.concatenate([[0], np.cumsum(self.sizes)[:-1]])
        self.probs = np.asarray(weights, np.float64) / np.sum(weights)
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.num_samples = num_samples  # None: an endless stream
        self.position = 0  # samples of this rank already handed out

    def _draws(self, block: int) -> np.ndarray:
        rng = np.random.default_rng([self.seed, block])
        source = rng.choice(len(self.sizes), size=self.BLOCK, p=self.probs)
        within = (rng.random(self.BLOCK) * self.sizes[source]).astype(np.int64)
        return self.offsets[source] + within

    def global_index(self, position: int) -> int:
        """The dataset index at global stream position `position`."""
        block, k = divmod(position, self.BLOCK)
        return int(self._draws(block)[k])

    def __iter__(self) -> Iterator[int]:
        cached_block, draws = -1, None
        while self.num_samples is None or self.position < self.num_samples:
            g = self.position * self.world_size + self.rank
            block, k = divmod(g, self.BLOCK)
            if block != cached_block:
                cached_block, draws = block, self._draws(block)
            self.position += 1
            yield int(draws[k])

    def __len__(self) -> int:
        return self.num_samples if self.num_samples is not None else math.inf  # type: ignore[return-value]

    @property
    def global_position(self) -> int:
        """Samples of the run handed out by all ranks together (every rank at the same `position`)."""
        return self.position * self.world_size

    @global_position.setter
    def global_position(self, samples: int) -> None:
        if samples < 0 or samples % self.world_size:
            raise ValueError(f"global position {samples} is not a multiple of the world size {self.world_size}")
        self.position = samples // self.world_size

    def state_dict(self) -> dict[str, int]:
        return {"position": self.position, "seed": self.seed, "world_size": self.world_size}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Resume the stream; a state saved at another world size continues from its global position."""
        if state["seed"] != self.seed:
            raise ValueError(f"sampler state is for seed {state['seed']}, this sampler uses {self.seed}")
        self.global_position = int(state["position"]) * int(state.get("world_size", self.world_size))
