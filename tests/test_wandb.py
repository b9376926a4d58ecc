"""`log.wandb`: a training run tracked by Weights & Biases in offline mode (no network). The W&B run files
under the run directory are read back (their record log, through W&B's own protobuf schema) and hold the
same metrics as metrics.jsonl, step by step, and the resolved recipe as the run's config."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
from typer.testing import CliRunner
from wandb.proto import wandb_internal_pb2 as wandb_pb2  # the dev extra installs wandb

from latbot.cli import app

BLOCK, HEADER = 32768, 7  # the record log: 32 KiB blocks of records with a 7-byte header (crc, length, type)


def records(path: Path) -> list:
    """The protobuf records of a `.wandb` file (a LevelDB-style log after a 7-byte W&B file header)."""
    data = path.read_bytes()
    assert data[:4] == b":W&B", "not a W&B run file"
    out, pos, pending = [], 7, b""
    while pos + HEADER <= len(data):
        left = BLOCK - pos % BLOCK
        if left < HEADER:  # the block's tail is padding
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + HEADER])
        chunk = data[pos + HEADER : pos + HEADER + length]
        pos += HEADER + length
        if kind == 0 and length == 0:
            continue
        pending = chunk if kind in (1, 2) else pending + chunk  # FULL / FIRST start a record
        if kind in (1, 4):  # FULL / LAST end it
            record = wandb_pb2.Record()
            record.ParseFromString(pending)
            out.append(record)
    return out


def test_an_offline_wandb_run_holds_the_metrics_and_the_recipe(tmp_path):
    recipe = tmp_path / "curve.yaml"
    recipe.write_text(
        "stage: curve_fit\nmodel: {width: 3, samples: 64}\n"
        "train: {steps: 20, global_batch_size: 8, micro_batch_size: 8, lr: 0.05, warmup_steps: 0, min_lr: 0.05, "
        "precision: fp32, checkpoint_every: 20}\n"
        f"data: {{num_workers: 0}}\nlog: {{out_dir: {tmp_path / 'runs'}, run_name: fit, progress: false, "
        "tensorboard: false, every_steps: 5, wandb: {project: latbot-test, mode: offline, tags: [ci]}}\n"
    )
    result = CliRunner().invoke(app, ["train", str(recipe)])
    assert result.exit_code == 0, result.output
    run = tmp_path / "runs" / "fit"
    (files,) = list((run / "wandb").glob("offline-run-*/run-*.wandb"))
    print(
        "W&B offline run directory:", *sorted(str(p.relative_to(run)) for p in (run / "wandb").rglob("*")), sep="\n  "
    )

    history, config, meta = {}, {}, None
    for r in records(files):
        kind = r.WhichOneof("record_type")
        if kind == "history":
            history[r.history.step.num] = {
                i.key or ".".join(i.nested_key): json.loads(i.value_json) for i in r.history.item
            }
        elif kind == "config":
            config |= {i.key or ".".join(i.nested_key): json.loads(i.value_json) for i in r.config.update}
        elif kind == "run":  # the run record carries the config given to wandb.init
            meta = r.run
            config |= {i.key or ".".join(i.nested_key): json.loads(i.value_json) for i in r.run.config.update}
    logged = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [row["step"] for row in logged] == [1, 5, 10, 15, 20]
    assert sorted(history) == [1, 5, 10, 15, 20]
    for row in logged:
        for key, value in row.items():
            if key != "step":
                assert history[row["step"]][key] == pytest.approx(value, rel=1e-6), (row["step"], key)
    assert config["stage"] == "curve_fit" and config["train"]["steps"] == 20 and config["model"]["width"] == 3
    assert (
        meta is not None and meta.project == "latbot-test" and list(meta.tags) == ["ci"] and meta.display_name == "fit"
    )
