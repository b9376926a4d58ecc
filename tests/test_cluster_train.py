"""`latbot train --launcher slurm`: the sbatch script for a multi-node torchrun launch (`--dry-run` prints it),
checked for what it must say, refused for recipes that cannot run on that many ranks, and executed: with
the allocation's two commands stood in for by tiny scripts (`scontrol` names this host, `srun` runs its
command once, as on a one-node allocation), the script's own torchrun starts two ranks that train a run."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from latbot.cli import app

runner = CliRunner()


def recipe(tmp_path: Path, strategy: str = "fsdp", batch: int = 8) -> Path:
    path = tmp_path / "curve.yaml"
    path.write_text(
        "stage: curve_fit\nmodel: {width: 3, samples: 64}\n"
        f"train: {{steps: 12, global_batch_size: {batch}, micro_batch_size: 4, lr: 0.05, warmup_steps: 0, "
        "min_lr: 0.05, precision: fp32, checkpoint_every: 6}\n"
        f"dist: {{strategy: {strategy}, backend: gloo}}\n"
        f"data: {{num_workers: 0}}\nlog: {{out_dir: {tmp_path / 'runs'}, progress: false, tensorboard: false}}\n"
    )
    return path


def dry_run(path: Path, *args: str):
    return runner.invoke(app, ["train", str(path), "--launcher", "slurm", "--dry-run", *args])


def test_the_dry_run_prints_a_two_node_torchrun_script(tmp_path):
    out = dry_run(recipe(tmp_path), "--nodes", "2", "--gpus-per-node", "1", "--partition", "gpu", "--time-min", "90")
    assert out.exit_code == 0, out.output
    script = out.output
    for line in ("#SBATCH --nodes=2", "#SBATCH --ntasks-per-node=1", "#SBATCH --gpus-per-node=1",
                 "#SBATCH --partition=gpu", "#SBATCH --time=01:30:00", "#SBATCH --requeue",
                 "--nnodes 2 --nproc-per-node 1", "--rdzv-backend c10d", '--rdzv-id "$SLURM_JOB_ID"',
                 "-m latbot", "--set log.run_name=curve_fit-"):  # fmt: skip
        assert line in script, line
    assert subprocess.run(["bash", "-n"], input=script, text=True).returncode == 0  # valid bash
    assert not (tmp_path / "runs").exists()  # a dry run writes nothing


def test_recipes_that_cannot_run_on_that_many_ranks_are_refused(tmp_path):
    single = dry_run(recipe(tmp_path, strategy="none"), "--nodes", "2", "--gpus-per-node", "8")
    assert single.exit_code == 2 and "need dist.strategy: fsdp" in single.output
    hsdp = dry_run(recipe(tmp_path), "--nodes", "2", "--gpus-per-node", "2", "--set", "dist.strategy=hsdp",
                   "--set", "dist.shard_size=3")  # fmt: skip
    assert hsdp.exit_code == 2 and "dist.shard_size (3) must divide" in hsdp.output
    ok = dry_run(recipe(tmp_path, batch=16), "--nodes", "2", "--gpus-per-node", "2", "--set", "dist.strategy=hsdp",
                 "--set", "dist.shard_size=2")  # fmt: skip
    assert ok.exit_code == 0 and "--set dist.strategy=hsdp --set dist.shard_size=2" in ok.output
    odd = dry_run(recipe(tmp_path, batch=12), "--nodes", "2", "--gpus-per-node", "4")
    assert odd.exit_code == 2 and "is not a multiple of train.micro_batch_size × GPUs" in odd.output
    env = {**os.environ, "PATH": "/usr/bin:/bin"}  # no sbatch here
    submit = subprocess.run([sys.executable, "-m", "latbot", "train", str(recipe(tmp_path)), "--launcher", "slurm",
                             "--gpus-per-node", "2"],
                            capture_output=True, text=True, env=env)  # fmt: skip
    assert submit.returncode == 2 and "no `sbatch` on PATH" in submit.stderr and "Traceback" not in submit.stderr


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_script_launches_torchrun_ranks_that_train_the_run(tmp_path):
    out = dry_run(recipe(tmp_path), "--nodes", "1", "--gpus-per-node", "2")
    assert out.exit_code == 0, out.output
    script = tmp_path / "job.sbatch"
    script.write_text(out.output)
    bin_dir = tmp_path / "bin"  # the allocation's commands, for one node: this host, the command run once
    bin_dir.mkdir()
    (bin_dir / "scontrol").write_text("#!/bin/sh\necho 127.0.0.1\n")
    (bin_dir / "srun").write_text('#!/bin/sh\nwhile [ "${1#--}" != "$1" ]; do shift; done\nexec "$@"\n')
    for f in bin_dir.iterdir():
        f.chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "SLURM_JOB_NODELIST": "node1",
           "SLURM_JOB_ID": "4242", "MASTER_PORT": str(_free_port()), "OMP_NUM_THREADS": "1"}  # fmt: skip
    done = subprocess.run(["bash", str(script)], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    (run,) = (tmp_path / "runs").glob("curve_fit-*")
    assert json.loads((run / "latbot.json").read_text())["status"] == "complete"
    assert json.loads((run / "env.json").read_text())["world_size"] == 2  # two torchrun ranks trained it
    # requeued (the run exists): the script resumes it; a finished run has no step left and stays complete
    again = subprocess.run(["bash", str(script)], capture_output=True, text=True, env=env, timeout=300)
    assert again.returncode == 0 and "steps 12→12" in again.stdout, again.stdout + again.stderr[-2000:]
    assert json.loads((run / "latbot.json").read_text())["status"] == "complete"
