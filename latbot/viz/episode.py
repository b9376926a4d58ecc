"""`latbot viz episode`: an episode store's episodes as a rerun recording (.rrd), one timeline `step`.

Logged per episode under `episode_<id>/` (several episodes → several subtrees; the viewer shows one at a
time): camera frames, the instruction and the active subtask (text), 3-D end-effector / wrist / fingertip
trajectories from the unified state (valid dims only), and actions as time series per unified slice.
With a LAM checkpoint: at every step where a clip fits, the generated future frame next to the true one,
and the generated action sequence against the truth. With a policy checkpoint (a finetuning run): every
H steps, the predicted action chunk as time series against the true actions, and its end-effector
positions (the predicted deltas accumulated from the true state) as a 3-D path next to the true one.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from latbot.data.spaces import ACTION_SLICES, ARMS, STATE_POS, STATE_TIPS


def record(
    store_path: str | Path,
    episodes: list[int],
    out: str | Path | None = None,
    checkpoint: str | Path | None = None,
    spawn: bool = False,
    max_steps: int | None = None,
) -> Path | None:
    import rerun as rr

    from latbot.ownership import check_output_file

    tmp = None
    if not spawn:  # checked before anything is written: a .rrd file outside every artifact
        out = check_output_file(out or "episode.rrd", ".rrd")
        tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    rec = rr.RecordingStream("latbot_episode")
    if spawn:
        rec.spawn()
    else:
        rec.save(str(tmp))
    try:
        _record_into(rec, store_path, episodes, checkpoint, max_steps)
        rec.flush()
    except BaseException:
        if tmp is not None:
            tmp.unlink(missing_ok=True)
        raise
    if tmp is None:
        return None
    os.replace(tmp, out)
    return out


def _record_into(rec, store_path, episodes: list[int], checkpoint, max_steps: int | None) -> None:
    from latbot.data.store import EpisodeStore
    from latbot.errors import LatBotError

    lam = policy = lam_norm = None
    lam_stride = 1
    if checkpoint is not None:
        from latbot import runs

        if runs.open_run(checkpoint, ("lam", "finetune")).kind == "lam":
            from latbot.analysis.diagnostics import lam_action_normalization
            from latbot.data.normalize import QuantileNormalizer

            lam = runs.load_lam(checkpoint)
            stats, lam_stride = lam_action_normalization(checkpoint, store_path)
            lam_norm = QuantileNormalizer(stats["q01"], stats["q99"]) if stats else None
        else:
            from latbot.policy import load_policy

            policy = load_policy(checkpoint)
    with EpisodeStore.open(store_path) as store:
        for ep in episodes:
            if not 0 <= ep < store.num_episodes:
                raise LatBotError(f"--episode {ep}: the store has episodes 0..{store.num_episodes - 1}")
            _log_episode(rec, store, ep, lam, policy, max_steps, lam_norm, lam_stride)


def _log_episode(rec, store, ep: int, lam, policy, max_steps: int | None, lam_norm=None, lam_stride: int = 1) -> None:
    import rerun as rr

    r = store.records[ep]
    n = r.length if max_steps is None else min(r.length, max_steps)
    data = store.read(ep, slice(0, n))
    amask, smask = r.masks()
    root = f"episode_{ep}"
    rec.set_time("step", sequence=0)
    rec.log(f"{root}/instruction", rr.TextDocument(f"{r.instruction}\n\n{r.embodiment} · {r.source}"), static=True)
    for arm in ARMS:
        if smask[STATE_POS[arm]].all():
            rec.log(f"{root}/world/{arm}_trajectory", rr.LineStrips3D([data["states"][:, STATE_POS[arm]]]), static=True)
    for t in range(n):
        rec.set_time("step", sequence=t)
        for cam in store.cameras:
            rec.log(f"{root}/camera/{cam}", rr.Image(data[f"frames/{cam}"][t]))
        sub = r.subtask_at(t)
        rec.log(f"{root}/subtask", rr.TextLog(sub or r.instruction))
        for arm in ARMS:
            if smask[STATE_POS[arm]].all():
                rec.log(f"{root}/world/{arm}_ee", rr.Points3D(data["states"][t, STATE_POS[arm]][None], radii=0.01))
            if smask[STATE_TIPS[arm]].all():
                rec.log(
                    f"{root}/world/{arm}_fingertips",
                    rr.Points3D(data["states"][t, STATE_TIPS[arm]].reshape(5, 3), radii=0.005),
                )
        for name, sl in ACTION_SLICES.items():
            if amask[sl].any():
                rec.log(f"{root}/actions/{name}", rr.Scalars(data["actions"][t, sl][amask[sl]].astype(np.float64)))
    if lam is not None:
        _log_predictions(rec, store, ep, lam, root, n, lam_norm, lam_stride)
    if policy is not None:
        _log_policy(rec, store, ep, policy, root, n)


def _log_policy(rec, store, ep: int, policy, root: str, n: int) -> None:
    """Predicted chunks every H steps: per-slice time series and the accumulated 3-D end-effector path."""
    import rerun as rr

    from latbot.errors import LatBotError

    r = store.records[ep]
    missing = [c for c in policy.cameras if c not in store.cameras]
    if missing:
        raise LatBotError(f"the policy needs camera(s) {missing}; the store has {store.cameras}")
    if tuple(store.image_size) != policy.image_size:
        raise LatBotError(f"the policy was trained on {policy.image_size} frames, the store has {store.image_size}")
    amask, _ = r.masks()
    data = store.read(ep, slice(0, n), policy.cameras)
    for t in range(0, n, policy.horizon):
        frames = np.stack([data[f"frames/{c}"][t] for c in policy.cameras])
        chunk = policy.predict_unified(frames, data["states"][t], r.instruction)
        for k, step in enumerate(chunk):
            if t + k >= n:
                break
            rec.set_time("step", sequence=t + k)
            for name, sl in ACTION_SLICES.items():
                if amask[sl].any():
                    rec.log(
                        f"{root}/policy/actions_predicted/{name}", rr.Scalars(step[sl][amask[sl]].astype(np.float64))
                    )
        rec.set_time("step", sequence=t)
        for arm in ARMS:
            pos = ACTION_SLICES[f"{arm}_pos"]
            if amask[pos].all():
                start = data["states"][t, STATE_POS[arm]]
                path = np.concatenate([start[None], start + np.cumsum(chunk[:, pos], axis=0)])
                rec.log(f"{root}/world/{arm}_policy_chunk", rr.LineStrips3D([path]))


def _log_predictions(rec, store, ep: int, lam, root: str, n: int, lam_norm=None, stride: int = 1) -> None:
    """Generated future frames and actions; generated actions back in unified units (`lam_norm`: the LAM's
    action normalisation), next to the true ones. Clips are read at the LAM's `stride` (its training
    sources'), so it sees the motion it was trained on."""
    import rerun as rr
    import torch

    span = (lam.num_frames - 1) * stride + 1  # the clip's frames are `stride` steps apart, as in training
    cam = store.cameras[0]
    r = store.records[ep]
    gen = torch.Generator().manual_seed(0)
    for t in range(0, max(0, n - span + 1)):
        clip = store.read(ep, np.arange(t, t + span, stride))
        frames = torch.from_numpy(clip[f"frames/{cam}"]).permute(0, 3, 1, 2)[None]
        with torch.no_grad():
            z_sce, z_mot = lam.latents(frames, [r.instruction])
            pred_frame, pred_actions = lam.decoder.sample(
                z_sce, z_mot, frames[:, 0], with_actions=lam.config.unified_decoder, generator=gen
            )
        rec.set_time("step", sequence=t + span - 1)
        rec.log(f"{root}/lam/future_true", rr.Image(clip[f"frames/{cam}"][-1]))
        rec.log(
            f"{root}/lam/future_predicted", rr.Image((pred_frame[0].permute(1, 2, 0).numpy() * 255).astype(np.uint8))
        )
        if pred_actions is not None:
            if lam_norm is not None:
                pred_actions = torch.from_numpy(lam_norm.unnormalize(pred_actions.double().numpy()))
            amask = r.masks()[0]
            for name, sl in ACTION_SLICES.items():
                if amask[sl].any():
                    rec.log(
                        f"{root}/lam/actions_predicted/{name}",
                        rr.Scalars(pred_actions[0, -1, sl][torch.from_numpy(amask[sl])].double().numpy()),
                    )
