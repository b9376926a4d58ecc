"""Can the LAM's encoder read the motion on its own? Train the encoder a LAM recipe builds, with a linear head
on its Z_mot tokens, to regress the clip's actions directly (an inverse-dynamics model: masked MSE in the LAM's
normalised units, no flow decoder, no image loss), then score it like `tools/action_stream_table.py` scores a
LAM's action stream: R² on the pretraining clips and on held-out tasks, normal, with every frame frozen at V_t,
and with the empty instruction. Next to a LAM trained by the same recipe, this separates the encoder from the
unified decoder as the place where the motion is lost (docs/models.md, "Does the action stream read the
motion?").

    python tools/encoder_idm.py recipes/quickstart/lam.yaml --heldout STORE \\
        --set 'data.sources=[{store: PRETRAIN_STORE, frame_stride: 4}]' [--set ...] [--seed 0] [--json out.json]

The encoder, the optimiser's settings (AdamW with the recipe's betas, weight decay and clipping; the learning
rate schedule `latbot train` uses), the steps, the batch size, the instruction dropout, the augmentations
(`model.shift_augment`; `model.reverse_clips` of the clips played backwards) and the training clips (the first
data source, at its stride) are the recipe's, with `--set` as for `latbot train`. Scores are on clips played
forwards, per unified slice too (position, gripper, …).
"""

from __future__ import annotations

import argparse
import json
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> None:
    import numpy as np
    import torch
    from torch.utils.data import DataLoader, Subset
    from tqdm import tqdm

    from latbot.analysis.diagnostics import r2, r2_per_slice
    from latbot.data.clips import K_ACTION_MASK, K_ACTIONS, K_FRAMES, K_INSTRUCTION, ClipDataset, interval_action_stats
    from latbot.models.lam import LatentActionModel, shift_clips
    from latbot.recipes import load_recipe
    from latbot.train.schedule import lr_at

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("recipe", help="A LAM recipe (its encoder, optimiser settings and steps are used).")
    parser.add_argument("--heldout", required=True, help="Store of held-out tasks to score on.")
    parser.add_argument("--set", dest="sets", action="append", default=[], help="Recipe override, as `latbot train`.")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--samples", type=int, default=128, help="Clips scored per store.")
    parser.add_argument("--json", default=None, help="Also write the numbers here.")
    args = parser.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))

    recipe = load_recipe(args.recipe, args.sets)
    if not recipe.data.sources:
        parser.error("the recipe has no data.sources: give the pretraining store with --set 'data.sources=[...]'")
    pretrain, stride = recipe.data.sources[0].store, int(recipe.data.sources[0].frame_stride)
    torch.manual_seed(args.seed)
    lam = LatentActionModel(recipe.model, recipe.data.num_frames)
    stats = interval_action_stats(pretrain, stride)
    train = ClipDataset(pretrain, num_frames=recipe.data.num_frames, frame_stride=stride, action_stats=stats)
    reversing = getattr(recipe.model, "reverse_clips", 0.0)  # trained on, never scored on
    fit = ClipDataset(
        pretrain, num_frames=recipe.data.num_frames, frame_stride=stride, action_stats=stats,
        reverse=reversing, reverse_seed=args.seed,
    )  # fmt: skip
    test = ClipDataset(args.heldout, num_frames=recipe.data.num_frames, frame_stride=stride, action_stats=stats)
    horizon, dim = recipe.data.num_frames - 1, train[0][K_ACTIONS].shape[-1]
    nm = recipe.model.encoder.num_motion_tokens
    head = torch.nn.Linear(lam.encoder.width * nm, horizon * dim)
    params = [p for p in lam.encoder.parameters() if p.requires_grad] + list(head.parameters())
    t = recipe.train
    opt = torch.optim.AdamW(params, lr=t.lr, betas=tuple(t.betas), weight_decay=t.weight_decay)
    dropout = getattr(recipe.model, "instruction_dropout", 0.0)
    shift = getattr(recipe.model, "shift_augment", 0)

    def predict(frames, words):
        _, z_mot = lam.encode(frames, list(words))
        return head(z_mot.flatten(1)).unflatten(1, (horizon, dim))

    loader = DataLoader(
        fit, batch_size=t.global_batch_size, shuffle=True, drop_last=True,
        generator=torch.Generator().manual_seed(args.seed),
    )  # fmt: skip
    lam.encoder.train()
    step, bar = 0, tqdm(total=t.steps, desc="encoder IDM", unit="step")
    while step < t.steps:
        for batch in loader:
            words = ["" if torch.rand(()) < dropout else w for w in batch[K_INSTRUCTION]]
            if shift:
                batch[K_FRAMES] = shift_clips(batch[K_FRAMES], shift)
            mask = batch[K_ACTION_MASK].float()[:, None, :]
            loss = ((predict(batch[K_FRAMES], words) - batch[K_ACTIONS]) ** 2 * mask).sum() / (mask.sum() * horizon)
            for group in opt.param_groups:  # the LAM's own schedule (warmup, cosine to min_lr)
                group["lr"] = lr_at(step, t.lr, t.min_lr, t.warmup_steps, t.steps)
            opt.zero_grad()
            loss.backward()
            if t.grad_clip:
                torch.nn.utils.clip_grad_norm_(params, t.grad_clip)
            opt.step()
            step += 1
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.4f}")
            if step >= t.steps:
                break
    bar.close()
    lam.encoder.eval()

    def score(dataset) -> dict[str, float]:
        picks = np.random.default_rng(args.seed + 1).permutation(len(dataset))[: args.samples]
        made, truth, masks = {"normal": [], "frames_frozen": [], "instruction_dropped": []}, [], []
        with torch.no_grad():
            for batch in DataLoader(Subset(dataset, picks.tolist()), batch_size=32):
                frames, words = batch[K_FRAMES], batch[K_INSTRUCTION]
                made["normal"].append(predict(frames, words).numpy())
                made["frames_frozen"].append(predict(frames[:, :1].expand_as(frames).contiguous(), words).numpy())
                made["instruction_dropped"].append(predict(frames, [""] * len(words)).numpy())
                truth.append(batch[K_ACTIONS].numpy()), masks.append(batch[K_ACTION_MASK].numpy())
        y, valid = np.concatenate(truth), np.concatenate(masks).all(0)
        flat = y[..., valid].reshape(len(y), -1)
        made = {k: np.concatenate(v) for k, v in made.items()}
        out = {k: r2(v[..., valid].reshape(len(y), -1), flat) for k, v in made.items()}
        return out | {"constant": r2(np.zeros_like(flat), flat), "per_slice": r2_per_slice(made, y, valid)}

    result = {"recipe": args.recipe, "sets": args.sets, "seed": args.seed, "pretrain": str(pretrain), "stride": stride,
              "pretrain_clips": score(train), "heldout": score(test)}  # fmt: skip
    print(json.dumps(result, indent=1))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
