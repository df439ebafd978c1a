"""More than one process: ``torchrun --nproc_per_node 2 -m dcgan_utils train`` on the CPU (gloo), then a resume.

What it checks: the run trains and resumes under torchrun, one process writes one checkpoint, the step counts
follow from 2 x batch_size images per step, every process ends with the same weights (the run compares them
itself, by a broadcast from rank 0, and says so), and a multi-process checkpoint is not resumed by one process.
"""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from dcgan_utils import ImageData, Trainer, load_checkpoint

REPO = Path(__file__).resolve().parents[1]
TORCHRUN = [shutil.which("torchrun")] if shutil.which("torchrun") else [sys.executable, "-m", "torch.distributed.run"]
# 256 digits, batch 32 per process, 2 processes: 64 images per step, 4 steps per epoch
TRAIN = ["-m", "dcgan_utils", "train", "--dataset", "mnist", "--source", "subset", "--limit", "256", "--width", "16",
         "--batch-size", "32", "--device", "cpu", "--no-progress", "--seed", "3"]


def _run(cmd: list[str], timeout: int = 240) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(
        [str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])}
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout, check=False)


def _torchrun(out: Path, steps: int) -> subprocess.CompletedProcess:
    result = _run([*TORCHRUN, "--standalone", "--nproc_per_node", "2", *TRAIN, "--max-steps", str(steps),
                   "--out", str(out)])
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


@pytest.mark.slow
def test_torchrun_two_processes_train_resume_and_agree(tmp_path):
    out = tmp_path / "run"
    first = _torchrun(out, 3)
    said = first.stdout
    assert said.count("torchrun: 2 processes (gloo") == 1  # rank 0 speaks, rank 1 is silent
    assert "batch size 32 on each, 64 images per step, 4 steps per epoch" in said
    assert said.count("G and D weights identical on every process") == 1
    state = load_checkpoint(out)
    assert state["step"] == 3 and state["world_size"] == 2
    assert state["history"]["step"] == [1, 2, 3]

    second = _torchrun(out, 6)  # resumes across the end of epoch 1 (step 4)
    assert second.stdout.count("Resuming") == 1 and "at step 3" in second.stdout
    assert "G and D weights identical on every process" in second.stdout
    state = load_checkpoint(out)
    h = json.loads((out / "history.json").read_text())
    assert state["step"] == 6 and h["step"] == [1, 2, 3, 4, 5, 6] and h["epoch"]["epoch"] == [1]
    assert all(torch.isfinite(torch.tensor(h[k])).all() for k in ("loss_g", "loss_d"))
    # one writer: one checkpoint, one frame per drawing step, no leftovers of two processes writing at once
    assert sorted(p.name for p in out.iterdir() if p.is_file() and p.suffix == ".pt") == ["checkpoint.pt"]
    frames = sorted(p.name for p in (out / "frames").iterdir())
    assert frames == sorted(Path(s["file"]).name for s in h["samples"])  # each drawn once, by one process
    assert frames[0] == "step_0000000.png" and frames[-1] == "step_0000006.png"
    assert not list(out.rglob("*.tmp"))

    # a 2-process checkpoint continues only under torchrun with 2 processes
    single = _run([sys.executable, *TRAIN, "--max-steps", "8", "--out", str(out)])
    assert single.returncode == 2 and "trained by 2 processes" in single.stderr
    assert load_checkpoint(out)["step"] == 6


def test_each_process_takes_its_own_slice_of_the_shared_epoch_order(tmp_path):
    """No process group needed: epoch_batch with world_size 2 gives the two ranks disjoint halves of each step."""
    images = torch.arange(256, dtype=torch.uint8).view(256, 1, 1, 1).expand(256, 1, 32, 32).contiguous()
    data = ImageData(images, None, "mnist", "image i is filled with the value i")
    trainer = Trainer(out_dir=tmp_path, data=data, resume=False, progress=False, width=16, batch_size=32,
                      device="cpu", seed=5)
    order = trainer._epoch_order(0)

    def ids(batch):
        return ((batch[:, 0, 0, 0] + 1) * 255 / 2).round().long()

    single = torch.cat([ids(trainer.epoch_batch(order, i)) for i in range(trainer.steps_per_epoch)])
    assert torch.equal(single, order[:len(single)])  # one process: the order, batch after batch
    trainer.world_size = 2
    seen = []
    for step in range(4):  # 256 / (2 x 32) steps per epoch under 2 processes
        halves = []
        for trainer.rank in (0, 1):
            halves.append(ids(trainer.epoch_batch(order, step)))
        assert len(halves[0]) == len(halves[1]) == 32
        seen += halves
    assert torch.equal(torch.cat(seen), order)  # together: every image of the epoch once, in the shared order
