"""Issue 11, "Nothing is lost": fault injection against the run folder, signals, disks and inputs.

Each test injects one fault the way a user meets it (a second trainer, planted symlinks, Ctrl-C twice, SIGTERM,
a full disk, a read-only folder, crafted files) and checks that the run survives it or fails in one line.
Real processes and real signals where that is what the user does; everything tiny (width 16, 256 images).
"""
import builtins
import errno
import gzip
import io
import json
import os
import random
import re
import shutil
import signal
import struct
import subprocess
import sys
import time
import zlib
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from dcgan_utils import DatasetError, TrainConfig, Trainer, load_checkpoint, load_dataset, load_generator
from dcgan_utils import runfolder as runfolder_module
from dcgan_utils.checkpoint import RunFolderError
from dcgan_utils.cli import main
from dcgan_utils.sampling import generate
from dcgan_utils.progress import ProgressLines, progress_mode

TINY = ["--dataset", "mnist", "--source", "subset", "--limit", "256", "--width", "16", "--batch-size", "32",
        "--device", "cpu"]
TINY_KW = dict(dataset="mnist", source="subset", limit=256, width=16, batch_size=32, device="cpu")


# ------------------------------------------------------------------------------------------------ helpers
@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """One PyTorch thread here and in the processes started (cheapest on a shared CPU, and the same thread count
    on both sides, so a run continued here matches the process's bit for bit)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "DCGAN_PROGRESS"}
    return {**env, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", **extra}


def _start(run: Path, *args: str, log: Path, **env) -> subprocess.Popen:
    with open(log, "wb") as out:
        return subprocess.Popen([sys.executable, "-m", "dcgan_utils", "train", *TINY, *args, "--out", str(run)],
                                stdout=out, stderr=subprocess.STDOUT, env=_env(**env))


def _signal_while_training(run: Path, log: Path, signals: list[int], *args: str) -> tuple[int, str]:
    """Start ``train --out run *args > log 2>&1``, send ``signals`` (0-5 ms apart) once it trains; (exit code, log)."""
    proc = _start(run, *args, log=log)
    try:
        _wait_until_training(proc, run, log)
        for i, sig in enumerate(signals):
            if i:
                time.sleep(random.uniform(0, 0.005))
            proc.send_signal(sig)
        code = proc.wait(120)
    finally:
        proc.kill()
    return code, log.read_text()


def _wait_until_training(proc: subprocess.Popen, run: Path, log: Path, after: int = 0, timeout: float = 120) -> None:
    """Until a frame of a step after ``after`` exists (these runs draw one every 4 steps): steps are running."""
    deadline = time.monotonic() + timeout
    while not any(int(p.stem[5:]) > after for p in run.glob("frames/step_*.png")):
        if proc.poll() is not None:
            pytest.fail(f"training exited early ({proc.returncode}): {log.read_text()}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail("training did not start")
        time.sleep(0.02)
    time.sleep(random.uniform(0, 0.1))


def _weights(trainer) -> dict:
    return {**{f"G.{k}": v for k, v in trainer.generator.state_dict().items()},
            **{f"D.{k}": v for k, v in trainer.discriminator.state_dict().items()}}


def _one_line_error(capsys, *needles: str) -> str:
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in captured.err, captured.err
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def small_run(tmp_path_factory, mnist_small) -> Path:
    """A finished 2-step run (width 16) to sample from and to craft checkpoints out of."""
    run = tmp_path_factory.mktemp("small_run")
    Trainer(out_dir=run, data=mnist_small, max_steps=2, progress=False, **{**TINY_KW, "limit": None}).fit()
    return run


# ------------------------------------------------------------------------------------------------ 1. lock
def test_a_second_trainer_on_a_run_folder_is_refused(tmp_path, mnist_small):
    kw = dict(data=mnist_small, progress=False, **{**TINY_KW, "limit": None})
    run = tmp_path / "run"
    first = Trainer(out_dir=run, max_steps=2, **kw)  # holds the folder from now to the end of fit()
    second = subprocess.run([sys.executable, "-m", "dcgan_utils", "train", *TINY, "--max-steps", "5",
                             "--out", str(run)], capture_output=True, text=True, env=_env(), timeout=300)
    assert second.returncode == 2, second.stderr
    lines = second.stderr.strip().splitlines()
    assert len(lines) == 1 and "in use by another trainer" in lines[0] and str(run) in lines[0], second.stderr
    assert f"process {os.getpid()}" in lines[0] and not (run / "checkpoint.pt").exists()
    assert first.fit().step == 2

    # in one process: a finished trainer lets the next one in; an idle one (a notebook cell run twice) is
    # taken over, and can no longer overwrite the newer run it did not see
    stale = Trainer(out_dir=run, max_steps=4, **kw)
    newer = Trainer(out_dir=run, max_steps=4, **kw).fit()
    assert newer.step == 4
    with pytest.raises(RunFolderError, match="written by another trainer"):
        stale.fit()
    assert load_checkpoint(run)["step"] == 4


def test_without_fcntl_folders_are_simply_not_locked(tmp_path, mnist_small, monkeypatch):
    monkeypatch.setattr(runfolder_module, "fcntl", None)  # as on Windows
    trainer = Trainer(out_dir=tmp_path, data=mnist_small, max_steps=1, progress=False, **{**TINY_KW, "limit": None})
    assert trainer.fit().status == "finished" and not (tmp_path / ".lock").exists()


# ------------------------------------------------------------------------------------------------ 2. symlinks
def test_writes_replace_planted_symlinks_instead_of_writing_through_them(tmp_path, mnist_small):
    run, outside = tmp_path / "run", tmp_path / "outside"
    (run / "frames").mkdir(parents=True)
    outside.mkdir()
    names = ["samples.png", "losses.png", "d_outputs.png", "history.json", "training.gif", ".lock",
             "frames/step_0000000.png", "frames/step_0000008.png"]
    for name in names:
        target = outside / name.replace("/", "_")
        target.write_bytes(f"someone else's {name}".encode())
        (run / name).symlink_to(target)
    Trainer(out_dir=run, data=mnist_small, max_steps=8, progress=False, **{**TINY_KW, "limit": None}).fit()
    for name in names:
        assert (outside / name.replace("/", "_")).read_bytes() == f"someone else's {name}".encode(), name
        assert not (run / name).is_symlink() and (run / name).stat().st_size > 0, name
    assert json.loads((run / "history.json").read_text())["step"][-1] == 8


# ------------------------------------------------------------------------------------------------ 3. Ctrl-C twice
def test_two_quick_ctrl_c_save_a_whole_step_that_resumes_exactly(tmp_path):
    run, log = tmp_path / "run", tmp_path / "run.log"
    small = ["--batch-size", "8", "--sample-every", "4", "--no-progress"]  # short steps: the 2nd signal lands inside
    code, out = _signal_while_training(run, log, [signal.SIGINT, signal.SIGINT], "--max-steps", "100000", *small)
    assert code == 130 and "Traceback" not in out, out
    state = load_checkpoint(run)
    k = state["step"]
    # the checkpoint is the step it stopped at, and holds all of it (a whole step, its history row included)
    assert "Ctrl-C: finishing this step" in out and f"interrupted: step {k} " in out, (k, out)
    assert len(state["history"]["loss_g"]) == k and state["history"]["step"][-1] == k
    kw = {**TINY_KW, "batch_size": 8, "sample_every": 4}
    resumed = Trainer(out_dir=run, max_steps=k + 6, progress=False, **kw).fit()
    straight = Trainer(out_dir=tmp_path / "straight", max_steps=k + 6, progress=False, **kw).fit()
    a, b = _weights(straight), _weights(resumed)
    assert all(torch.equal(a[key], b[key]) for key in a)
    assert straight.history["loss_d"] == resumed.history["loss_d"]


def test_a_second_ctrl_c_in_the_middle_of_a_step_changes_nothing(tmp_path, mnist_small):
    """The same, deterministic: both signals arrive inside step 5, after D's update and before G's (two signals a
    few ms apart can reach a busy process as one, the OS merges a pending SIGINT with the next)."""
    kw = dict(data=mnist_small, progress=False, **{**TINY_KW, "limit": None})
    trainer = Trainer(out_dir=tmp_path / "run", max_steps=20, **kw)
    g_step = trainer.opt_g.step

    def ctrl_c_twice_then_g_step(*args, **kwargs):
        if trainer.step == 4:
            os.kill(os.getpid(), signal.SIGINT)
            os.kill(os.getpid(), signal.SIGINT)
        return g_step(*args, **kwargs)

    trainer.opt_g.step = ctrl_c_twice_then_g_step
    assert trainer.fit().status == "interrupted" and trainer.step == 5 and trainer.stop_signal == signal.SIGINT
    assert load_checkpoint(tmp_path / "run")["step"] == 5
    resumed = Trainer(out_dir=tmp_path / "run", max_steps=8, **kw).fit()
    straight = Trainer(out_dir=tmp_path / "straight", max_steps=8, **kw).fit()
    a, b = _weights(straight), _weights(resumed)
    assert all(torch.equal(a[key], b[key]) for key in a)


# ------------------------------------------------------------------------------------------------ 4. SIGTERM, 10. logs
def test_sigterm_finishes_the_step_saves_and_exits_143_with_a_plain_log(tmp_path):
    run, log = tmp_path / "run", tmp_path / "log"
    code, out = _signal_while_training(run, log, [signal.SIGTERM], "--max-steps", "100000", "--sample-every", "4")
    assert code == 143 and "Traceback" not in out, out
    assert "SIGTERM: finishing this step" in out and "Stopped at step" in out and "interrupted: step" in out
    state = load_checkpoint(run)
    assert state["step"] >= 1 and len(state["history"]["loss_g"]) == state["step"]
    assert not list(run.rglob("*.tmp"))
    # no terminal: plain progress lines, no carriage-return redraws, and a summary of the steps done
    assert "\r" not in out and len(out) < 3000, out
    assert re.search(r"mnist 32px dcgan: [\d,]+ steps in [\d.]+ min \([\d.]+ steps/s\), now at step", out), out


# ------------------------------------------------------------------------------------------------ 5. typed flags
def test_resume_honours_typed_flags(tmp_path, capsys):
    up = str(tmp_path / "up64")
    base = ["--dataset", "mnist", "--source", "subset", "--limit", "64", "--device", "cpu", "--no-progress",
            "--max-steps", "1"]
    assert main(["train", *base, "--image-size", "64", "--arch", "upsample", "--width", "8", "--batch-size", "32",
                 "--seed", "1", "--out", up]) == 0
    capsys.readouterr()
    assert main(["train", "--arch", "dcgan", "--image-size", "32", "--no-progress", "--out", up]) == 2
    _one_line_error(capsys, "image_size=64 (asked 32)", "arch='upsample' (asked 'dcgan')", "--no-resume")
    assert main(["train", "--seed", "0", "--no-progress", "--out", up]) == 2  # 0 is the default, but typed
    _one_line_error(capsys, "seed=1 (asked 0)")

    cpu64 = str(tmp_path / "cpu64")  # the 64x64 CPU profile: width 64, G's lr 8e-4, D's 2e-4
    assert main(["train", *base, "--image-size", "64", "--out", cpu64]) == 0
    assert load_checkpoint(cpu64)["config"]["lr"] == 8e-4
    capsys.readouterr()
    assert main(["train", "--lr", "2e-4", "--max-steps", "2", "--no-progress", "--out", cpu64]) == 0
    assert "lr 0.0008 -> 0.0002" in capsys.readouterr().out
    state = load_checkpoint(cpu64)
    assert state["step"] == 2 and state["config"]["lr"] == 2e-4 and state["config"]["width"] == 64
    assert [g["lr"] for g in state["opt_g"]["param_groups"]] == [2e-4]
    assert [g["lr"] for g in state["opt_d"]["param_groups"]] == [2e-4]


def test_a_notebook_rerun_with_unset_parameters_resumes_its_profiled_run(tmp_path, capsys):
    # notebook 02 passes width=None, batch_size=None (its WIDTH/BATCH_SIZE parameters) and the CPU profile fills
    # them; running it a second time refused its own finished run ("width=128 (asked None)")
    kwargs = dict(dataset="mnist", source="subset", limit=256, device="cpu", progress=False, image_size=32)
    first = Trainer(out_dir=tmp_path, width=None, batch_size=None, max_steps=2, **kwargs).fit()
    again = Trainer(out_dir=tmp_path, width=None, batch_size=None, max_steps=2, **kwargs)
    assert again.step == first.step == 2 and again.config.width == first.config.width == 128
    with pytest.raises(ValueError, match=r"width=128 \(asked 64\)"):  # a width really chosen is still refused
        Trainer(out_dir=tmp_path, width=64, batch_size=None, max_steps=2, **kwargs)


# ------------------------------------------------------------------------------------------------ 6. --no-resume
def test_no_resume_moves_the_old_run_aside(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", *TINY, "--no-progress", "--max-steps", "24", "--out", str(run)]) == 0
    assert len(list((run / "frames").iterdir())) == 4  # steps 0, 8, 16, 24
    capsys.readouterr()
    assert main(["train", *TINY, "--no-progress", "--max-steps", "8", "--no-resume", "--out", str(run)]) == 0
    out = capsys.readouterr().out
    old = [p for p in tmp_path.iterdir() if p.name.startswith("run.old-")]
    assert len(old) == 1 and f"moved to {old[0]}" in out and "Resuming" not in out
    assert load_checkpoint(old[0])["step"] == 24 and len(list((old[0] / "frames").iterdir())) == 4
    assert sorted(p.name for p in (run / "frames").iterdir()) == ["step_0000000.png", "step_0000008.png"]
    with Image.open(run / "training.gif") as gif:
        assert gif.n_frames == 2


# ------------------------------------------------------------------------------------------------ 7. full disk
def _fill_the_disk(monkeypatch, root: Path) -> None:
    """From now on, as on a full disk: fsync fails, and a file opened for writing under ``root`` is created
    empty and its write fails, both with ENOSPC."""
    real_open = builtins.open

    def full_open(file, mode="r", *args, **kwargs):
        if isinstance(file, (str, os.PathLike)) and str(file).startswith(str(root)) and set(mode) & set("wax+"):
            real_open(file, "wb").close()
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(file))
        return real_open(file, mode, *args, **kwargs)

    def full_fsync(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(builtins, "open", full_open)
    monkeypatch.setattr(io, "open", full_open)
    monkeypatch.setattr(os, "fsync", full_fsync)


def test_a_full_disk_gives_one_line_and_keeps_the_last_checkpoint(tmp_path, monkeypatch, capsys):
    run = tmp_path / "run"
    assert main(["train", *TINY, "--no-progress", "--max-steps", "8", "--out", str(run)]) == 0
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    capsys.readouterr()
    with monkeypatch.context() as patch:
        _fill_the_disk(patch, tmp_path)
        assert main(["train", *TINY, "--no-progress", "--max-steps", "16", "--out", str(run)]) == 2
        _one_line_error(capsys, "No space left", "free some disk space", f"({run / 'checkpoint.pt'}, step 8) is intact")
        for out in ("s.npz", "s.png"):
            assert main(["sample", "--checkpoint", str(run), "--num", "4", "--out", str(tmp_path / out)]) == 2
            _one_line_error(capsys, "No space left")
    assert (run / "checkpoint.pt").read_bytes() == before[run / "checkpoint.pt"]
    assert load_checkpoint(run)["step"] == 8
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert not [p for p in files if p.name.endswith(".tmp")]
    assert not [p for p in files if p.stat().st_size == 0]
    assert not (tmp_path / "s.npz").exists() and not (tmp_path / "s.png").exists()
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file() and p.name != ".lock"} == \
        {p: b for p, b in before.items() if p.name != ".lock"}


# ------------------------------------------------------------------------------------------------ 8. epochs
def test_resuming_with_another_limit_keeps_counting_epochs(tmp_path, capsys):
    run = str(tmp_path / "run")
    assert main(["train", *TINY, "--no-progress", "--epochs", "2", "--out", run]) == 0  # 8 steps an epoch
    assert main(["train", *TINY, "--no-progress", "--epochs", "3", "--limit", "512", "--out", run]) == 0
    assert "limit 256 -> 512" in capsys.readouterr().out
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    assert history["epoch"]["epoch"] == [1, 2, 3]
    assert history["epoch"]["step"] == [8, 16, 32]  # the third epoch has 512 / 32 = 16 steps
    assert history["epoch"]["loss_g"][2] == pytest.approx(sum(history["loss_g"][16:32]) / 16)
    state = load_checkpoint(run)
    assert state["epoch"] == 3 and state["step"] == 32


# ------------------------------------------------------------------------------------------------ 9. one line
def test_read_only_output_folders_are_refused_before_training(tmp_path, monkeypatch, capsys, deny_writes):
    run = tmp_path / "run"
    assert main(["train", *TINY, "--no-progress", "--max-steps", "2", "--out", str(run)]) == 0
    capsys.readouterr()
    checkpoint = (run / "checkpoint.pt").read_bytes()
    try:
        deny_writes(run)
        assert main(["train", *TINY, "--no-progress", "--max-steps", "4", "--out", str(run)]) == 2  # resuming
        _one_line_error(capsys, "Cannot write in the output folder", str(run))
        assert main(["train", *TINY, "--no-progress", "--max-steps", "4", "--out", str(run / "new")]) == 2
        _one_line_error(capsys, "output folder", str(run / "new"))
    finally:
        run.chmod(0o755)
    assert (run / "checkpoint.pt").read_bytes() == checkpoint


def test_files_where_folders_belong_give_one_line(tmp_path, small_run, capsys):
    afile = tmp_path / "afile"
    afile.write_text("not a folder")
    assert main(["train", *TINY, "--max-steps", "1", "--out", str(afile)]) == 2
    _one_line_error(capsys, f"{afile} is a file, not a folder")
    assert main(["sample", "--checkpoint", str(small_run), "--out", str(afile / "s.png")]) == 2
    _one_line_error(capsys, f"{afile} is a file, not a folder")
    assert afile.read_text() == "not a folder"


def _png_header(path: Path, width: int, height: int) -> None:
    """A PNG that declares width x height pixels (PIL checks the size when it opens the file)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b""))


def test_a_decompression_bomb_in_an_image_folder_is_named(tmp_path, capsys):
    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(2):
        Image.new("RGB", (40, 40), (i * 100, 50, 50)).save(folder / f"ok{i}.png")
    _png_header(folder / "huge.png", 14000, 14000)
    assert main(["train", "--dataset", "folder", "--data-dir", str(folder), "--width", "16", "--batch-size", "2",
                 "--max-steps", "1", "--device", "cpu", "--out", str(tmp_path / "run")]) == 2
    _one_line_error(capsys, str(folder / "huge.png"), "too large")


def _idx(path: Path, shape: tuple, data: bytes | None = None, gz: bool = False) -> None:
    header = bytes([0, 0, 8, len(shape)]) + b"".join(int(n).to_bytes(4, "big") for n in shape)
    data = bytes(int(np.prod(shape))) if data is None else data
    path.write_bytes(gzip.compress(header + data) if gz else header + data)


@pytest.mark.parametrize("shape, data, message", [
    ((5, 0, 0), b"", "declares an empty array"),
    ((60000, 28, 28), bytes(100), "is truncated"),
    ((5, 28, 28), bytes(5 * 28 * 28 + 7), "holds more"),
    ((1_913_000, 28, 28), bytes(100), "more than the"),
])
def test_crafted_idx_headers_give_one_line(tmp_path, capsys, shape, data, message):
    _idx(tmp_path / "train-images-idx3-ubyte", shape, data)
    _idx(tmp_path / "train-labels-idx1-ubyte", (5,))
    assert main(["train", "--dataset", "mnist", "--data-dir", str(tmp_path), "--width", "16", "--batch-size", "2",
                 "--max-steps", "1", "--device", "cpu", "--out", str(tmp_path / "run")]) == 2
    _one_line_error(capsys, "train-images-idx3-ubyte", message)


def test_a_small_gzip_that_expands_to_gigabytes_is_refused_quickly(tmp_path):
    header = bytes([0, 0, 8, 3]) + b"".join(n.to_bytes(4, "big") for n in (100, 28, 28))
    zeros = gzip.compress(bytes(1 << 20), 9)  # one member: 1 MiB of zeros in about 1 KB
    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(header) + zeros * 1500)  # ~1.5 GB inside
    _idx(tmp_path / "train-labels-idx1-ubyte", (100,))
    assert (tmp_path / "train-images-idx3-ubyte.gz").stat().st_size < 2_000_000
    cpu = time.process_time()
    with pytest.raises(DatasetError, match="holds more"):
        load_dataset("mnist", 32, data_dir=tmp_path)
    assert time.process_time() - cpu < 1.0  # 78 KB decompressed, not 1.5 GB


def test_non_square_idx_images_are_centre_cropped_with_a_message(tmp_path, capsys):
    images = np.zeros((4, 28, 20), np.uint8)
    images[:, 4:24, :] = 255  # the centre 20x20 square is white, the 4 rows above and below black
    _idx(tmp_path / "train-images-idx3-ubyte", images.shape, images.tobytes())
    _idx(tmp_path / "train-labels-idx1-ubyte", (4,))
    data = load_dataset("mnist", 32, data_dir=tmp_path)
    assert "28x20, not square" in capsys.readouterr().out
    assert data.images.shape == (4, 1, 32, 32) and bool((data.images == 255).all())  # cropped, not stretched


@pytest.mark.parametrize("craft, message", [
    (lambda s: s.pop("generator"), "lacks generator"),
    (lambda s: s["generator"].update({k: torch.zeros(3) for k in list(s["generator"])[:1]}), "do not fit"),
    (lambda s: s["config"].update(width=2 ** 20), "parameters (more than"),
])
def test_crafted_checkpoints_give_one_line(tmp_path, small_run, capsys, craft, message):
    state = torch.load(small_run / "checkpoint.pt", weights_only=True)
    craft(state)
    (tmp_path / "run").mkdir()
    torch.save(state, tmp_path / "run" / "checkpoint.pt")
    assert main(["sample", "--checkpoint", str(tmp_path / "run"), "--out", str(tmp_path / "s.png")]) == 2
    _one_line_error(capsys, message)
    assert main(["train", "--max-steps", "3", "--out", str(tmp_path / "run")]) == 2
    _one_line_error(capsys, message)


def test_a_huge_width_is_refused_before_allocating(tmp_path, capsys):
    assert main(["train", *TINY, "--width", "100000", "--max-steps", "1", "--out", str(tmp_path / "run")]) == 2
    _one_line_error(capsys, "width=100000", "parameters", "smaller width")
    with pytest.raises(ValueError, match="g_width=100000"):
        Trainer(out_dir=tmp_path / "api", g_width=100000, **TINY_KW)


def test_sampling_many_images_is_batched_or_refused(tmp_path, small_run, capsys, monkeypatch):
    assert main(["sample", "--checkpoint", str(small_run), "--num", "100000000", "--out",
                 str(tmp_path / "big.png")]) == 2
    _one_line_error(capsys, "too large to draw", ".npz")
    with monkeypatch.context() as patch:  # as if the disk had 1 GB free: 100M images need 410 GB
        patch.setattr(shutil, "disk_usage", lambda path: SimpleNamespace(total=10 ** 12, used=10 ** 12, free=10 ** 9))
        assert main(["sample", "--checkpoint", str(small_run), "--num", "100000000", "--out",
                     str(tmp_path / "big.npz")]) == 2
        _one_line_error(capsys, "409.6 GB", "1.0 GB free")
    assert not list(tmp_path.iterdir())
    # written in batches, the array is exactly what one generate() call gives
    assert main(["sample", "--checkpoint", str(small_run), "--num", "1100", "--seed", "3", "--out",
                 str(tmp_path / "s.npz")]) == 0
    generator, _ = load_generator(small_run)
    assert np.array_equal(np.load(tmp_path / "s.npz")["images"], generate(generator, 1100, seed=3).numpy())


def test_tilde_is_expanded_once_for_every_path(tmp_path, small_run, monkeypatch, capsys):
    home, cwd = tmp_path / "home", tmp_path / "cwd"
    home.mkdir()
    cwd.mkdir()
    shutil.copytree(small_run, home / "run")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(cwd)
    assert main(["sample", "--checkpoint", "~/run", "--num", "4", "--out", "~/s.png"]) == 0
    assert main(["train", *TINY, "--no-progress", "--max-steps", "1", "--out", "~/run2"]) == 0
    assert f"outputs in {home / 'run2'}" in capsys.readouterr().out
    assert (home / "s.png").is_file() and (home / "run2" / "checkpoint.pt").is_file()
    assert not list(cwd.iterdir())  # no folder literally named "~"


def test_evaluate_says_why_it_measured_fewer_samples(small_run, capsys):
    assert main(["evaluate", "--checkpoint", str(small_run), "--num", "1500", "--source", "subset",
                 "--no-references"]) == 0
    captured = capsys.readouterr()
    result = json.loads(captured.out)
    assert result["num"] == 1000 and result["num_requested"] == 1500
    assert "only 1000 real test images" in result["note"] and "--source full" in result["note"]
    assert result["note"] in captured.err


def test_non_finite_settings_are_refused(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["train", "--instance-noise", "nan", "--out", str(tmp_path)])
    assert exit_.value.code == 2
    _one_line_error(capsys, "--instance-noise", "must be a finite number, got nan")
    with pytest.raises(ValueError, match="instance_noise=nan must be a finite number"):
        TrainConfig(instance_noise=float("nan")).validate()
    with pytest.raises(ValueError, match="lr=inf must be a finite number"):
        Trainer(out_dir=tmp_path, lr=float("inf"), **TINY_KW)


# ------------------------------------------------------------------------------------------------ 10. progress
def test_progress_mode_is_chosen_in_one_place(monkeypatch, capsys):
    monkeypatch.delenv("DCGAN_PROGRESS", raising=False)
    assert progress_mode() == "lines"  # pytest's stderr is not a terminal
    assert progress_mode(enabled=False) == "off"
    for mode in ("bar", "lines", "off"):
        monkeypatch.setenv("DCGAN_PROGRESS", mode)
        assert progress_mode() == mode and progress_mode(enabled=False) == "off"
    monkeypatch.setenv("DCGAN_PROGRESS", "fancy")
    with pytest.raises(ValueError, match="DCGAN_PROGRESS='fancy': use one of bar, lines, off"):
        progress_mode()
    lines = ProgressLines(total=10, desc="run", every=0)
    lines.set_postfix(loss_g="0.7", refresh=False)
    lines.update()
    lines.close()
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("run: step 1/10 (10%), ") and out[0].endswith("; loss_g 0.7")
    assert out[1].startswith("run: 1 steps in ") and out[1].endswith("now at step 1/10 (10%)")


def test_progress_lines_estimate_the_time_budget_when_it_ends_the_run_first(monkeypatch, capsys):
    clock = iter([0.0, 10.0, 20.0, 20.0])  # start; one step after 10 s (10 s a step); close
    monkeypatch.setattr("dcgan_utils.progress.time.perf_counter", lambda: next(clock))
    capped = ProgressLines(total=100, desc="run", every=0, seconds_left=60.0)
    capped.update(10)  # 1 step/s: 90 steps (1.5 min) to go by steps, but only 50 s of budget left
    assert "0.8 min left" in capsys.readouterr().out
    clock = iter([0.0, 10.0, 20.0])
    uncapped = ProgressLines(total=100, desc="run", every=0, seconds_left=600.0)
    uncapped.update(10)
    assert "1.5 min left" in capsys.readouterr().out


# ------------------------------------------------------------------------------------------------ 11. tiny epochs
def test_tiny_epochs_do_not_write_a_frame_and_checkpoint_every_step(tmp_path, mnist_small):
    data = replace(mnist_small, images=mnist_small.images[:64], labels=mnist_small.labels[:64])
    trainer = Trainer(out_dir=tmp_path, data=data, max_steps=200, progress=False,
                      **{**TINY_KW, "limit": None, "batch_size": 64, "width": 8})  # one step an epoch
    saves = []
    save = trainer.save
    trainer.save = lambda: saves.append(trainer.step) or save()
    trainer.fit()
    assert trainer.step == 200 and trainer.epoch == 200
    frames = list((tmp_path / "frames").iterdir())
    assert len(frames) <= 101 and len(saves) <= 3, (len(frames), saves)  # were 201 and 200
    assert saves[-1] == 200 and load_checkpoint(tmp_path)["step"] == 200
