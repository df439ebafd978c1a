"""Issue 21, "The user's own files": a hostile but fair user, whatever folder or file they point the course at.

Every case runs what a user types (``dcgan_utils.cli.main`` in this process; a real process and a real signal
where that is what the user meets) and checks three things: no traceback, one line on stderr that names the
fix, and nothing of the user's moved, overwritten or lost (checksums of the folders around it, before and
after). One tiny trained run (width 16, 2 steps) is shared by the module; every case works on its own copy.
"""
import errno
import hashlib
import os
import shutil
import signal
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dcgan_utils import Trainer, load_checkpoint
from dcgan_utils.cli import MAX_GRID_PIXELS, main
from dcgan_utils.plots import grid_size

REPO = Path(__file__).resolve().parent.parent
TINY = ["--dataset", "mnist", "--source", "subset", "--limit", "256", "--width", "16", "--batch-size", "32",
        "--device", "cpu", "--no-progress"]
TINY_KW = dict(dataset="mnist", source="subset", limit=256, width=16, batch_size=32, device="cpu", progress=False)


# ------------------------------------------------------------------------------------------------ helpers
def _tree(root: Path) -> dict[str, str]:
    """Everything under ``root`` (links not followed): relative path -> checksum, link target or 'folder'. A
    lock file counts by its name only (it holds the pid of the last process that locked the folder)."""
    found = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(folder, name)
            key = str(path.relative_to(root))
            if path.is_symlink():
                found[key] = "-> " + os.readlink(path)
            elif path.is_dir():
                found[key] = "folder"
            else:
                found[key] = "lock" if name == ".lock" else hashlib.sha256(path.read_bytes()).hexdigest()
    return found


def _fails(capsys, argv: list[str], *needles: str, code: int = 2) -> str:
    """Run ``argv``; it must exit with ``code`` and one line on stderr holding ``needles``, no traceback."""
    assert main(argv) == code
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in captured.err + captured.out, captured.err
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def _env(**extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DCGAN_")}
    path = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return {**env, "PYTHONPATH": path, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", **extra}


def _python(code: str, *args: str, cwd: Path, **env: str) -> subprocess.Popen:
    """A real process running ``code`` (which may patch a function to slow it down, then calls the CLI)."""
    return subprocess.Popen([sys.executable, "-c", code, *args], cwd=cwd, env=_env(**env), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _signal_when_ready(proc: subprocess.Popen, signum: int, timeout: float = 120) -> tuple[int, str]:
    """Wait for the process's "READY" line on stderr, send ``signum``; (exit code, the rest of its stderr)."""
    try:
        for line in proc.stderr:
            if line.strip() == "READY":
                break
        else:
            pytest.fail(f"the process ended before it was ready: {proc.wait()} {proc.stdout.read()}")
        proc.send_signal(signum)
        _, err = proc.communicate(timeout=timeout)
    finally:
        proc.kill()
    return proc.wait(), err


def _photos(folder: Path, count: int = 16) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        Image.new("RGB", (40, 48), (i * 15, 80, 160)).save(folder / f"photo_{i:02d}.png")
    return folder


def _png(path: Path, width: int, height: int, mode: str = "RGBA") -> None:
    """A real PNG of width x height pixels, written row by row (never held whole in memory)."""
    channels = {"RGBA": 4, "RGB": 3}[mode]
    row = b"\x00" + (np.arange(width * channels) % 251).astype(np.uint8).tobytes()
    compressor = zlib.compressobj(1)
    data = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    header = struct.pack(">IIBBBBB", width, height, 8, {"RGBA": 6, "RGB": 2}[mode], 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b""))


@pytest.fixture(scope="module")
def trained(tmp_path_factory, mnist_small) -> Path:
    """A finished 2-step run (width 16) that each case copies."""
    run = tmp_path_factory.mktemp("trained") / "run"
    Trainer(out_dir=run, data=mnist_small, max_steps=2, **{**TINY_KW, "limit": 256}).fit()
    return run


@pytest.fixture
def run(trained, tmp_path, monkeypatch) -> Path:
    """A copy of the trained run in a fresh current folder (relative paths, as a user types them)."""
    monkeypatch.chdir(tmp_path)
    shutil.copytree(trained, tmp_path / "run", symlinks=True)
    return tmp_path / "run"


def _craft(run: Path, change) -> None:
    state = torch.load(run / "checkpoint.pt", weights_only=True)
    change(state)
    torch.save(state, run / "checkpoint.pt")


# ================================================================================ 1. run folders
def test_no_resume_never_moves_the_parent_of_the_current_folder(tmp_path, monkeypatch, capsys):
    parent = tmp_path / "p"
    (parent / "c").mkdir(parents=True)
    for name in ("a.txt", "b.jpg", "notes.md", ".hidden"):
        (parent / name).write_text(f"the user's {name}")
    before = _tree(tmp_path)
    monkeypatch.chdir(parent / "c")
    _fails(capsys, ["train", *TINY, "--max-steps", "1", "--out", "..", "--no-resume"],
           "holds the current folder", "(--out)")
    assert _tree(tmp_path) == before  # nothing moved, no hidden "...old-*" folder, no .lock left


def test_no_resume_never_moves_the_current_folder(run, monkeypatch, capsys):
    before = _tree(run)
    monkeypatch.chdir(run)
    line = _fails(capsys, ["train", *TINY, "--max-steps", "1", "--out", ".", "--no-resume"],
                  "the current folder", "cd ..", "--out run")
    assert "PosixPath" not in line and _tree(run) == before


@pytest.mark.parametrize("resume", [[], ["--no-resume"]], ids=["resume", "no-resume"])
def test_a_folder_of_someone_elses_files_is_refused(tmp_path, monkeypatch, capsys, resume):
    monkeypatch.chdir(tmp_path)
    home = tmp_path / "home"
    (home / "photos").mkdir(parents=True)
    (home / "thesis.tex").write_text("years of work")
    (home / "samples.png").write_bytes(b"the user's own samples.png")
    before = _tree(tmp_path)
    _fails(capsys, ["train", *TINY, "--max-steps", "1", "--out", "home", *resume],
           "not a run of this course", "thesis.tex", "nothing was changed", "new or empty output folder (--out)")
    assert _tree(tmp_path) == before


@pytest.mark.parametrize("resume", [[], ["--no-resume"]], ids=["resume", "no-resume"])
def test_the_image_folder_is_never_the_run_folder(tmp_path, monkeypatch, capsys, resume):
    monkeypatch.chdir(tmp_path)
    photos = _photos(tmp_path / "photos")
    before = _tree(tmp_path)
    _fails(capsys, ["train", "--dataset", "folder", "--data-dir", "photos", "--width", "16", "--batch-size", "8",
                    "--max-steps", "1", "--device", "cpu", "--out", "photos", *resume],
           "is the image folder", "choose an output folder outside it (--out)")
    assert _tree(tmp_path) == before and len(list(photos.iterdir())) == 16


def test_a_run_folder_inside_the_image_folder_is_refused(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    _photos(tmp_path / "photos")
    before = _tree(tmp_path)
    _fails(capsys, ["train", "--dataset", "folder", "--data-dir", "photos", "--width", "16", "--batch-size", "8",
                    "--max-steps", "1", "--device", "cpu", "--out", "photos/run"],
           "is inside the image folder", "would become training images", "(--out)")
    assert _tree(tmp_path) == before  # not even an empty photos/run


def test_a_resumed_run_inside_its_image_folder_is_refused(run, tmp_path, capsys):
    """A run whose image folder is known only from its checkpoint (a resume without --data-dir)."""
    photos = _photos(tmp_path / "photos")
    shutil.move(run, photos / "run")
    _craft(photos / "run", lambda s: s["config"].update(dataset="folder", data_dir=str(photos)))
    before = _tree(tmp_path)
    _fails(capsys, ["train", "--max-steps", "3", "--out", "photos/run"], "is inside the image folder", "(--out)")
    assert _tree(tmp_path) == before


def test_no_resume_never_moves_a_run_that_holds_the_data_folder(run, tmp_path, capsys):
    (run / "idx").mkdir()
    (run / "idx" / "train-images-idx3-ubyte").write_bytes(b"the user's data")
    before = _tree(tmp_path)
    _fails(capsys, ["train", *TINY, "--data-dir", "run/idx", "--max-steps", "1", "--out", "run", "--no-resume"],
           "the data folder", "(--out)")
    assert _tree(tmp_path) == before


def test_no_resume_sets_the_whole_run_aside_and_says_where(run, tmp_path, capsys):
    (run / "notes.txt").write_text("what I tried")
    before = {k: v for k, v in _tree(run).items() if k != ".lock"}
    assert main(["train", *TINY, "--max-steps", "1", "--out", "run", "--no-resume"]) == 0
    old = [p for p in tmp_path.iterdir() if p.name.startswith("run.old-")]
    assert len(old) == 1 and f"moved to {old[0]}" in capsys.readouterr().out
    assert _tree(old[0]) == before  # everything, the user's notes too, together in one place
    assert load_checkpoint(run)["step"] == 1


def test_a_frames_link_is_replaced_not_followed(run, tmp_path, capsys):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "step_0000004.png").write_bytes(b"the user's picture")
    shutil.rmtree(run / "frames")
    (run / "frames").symlink_to(mine)
    before = _tree(mine)
    assert main(["train", "--max-steps", "4", "--sample-every", "2", "--no-progress", "--out", "run"]) == 0
    assert _tree(mine) == before
    assert not (run / "frames").is_symlink() and (run / "frames" / "step_0000004.png").stat().st_size > 100


@pytest.mark.parametrize("where, kind", [("frames", "file"), ("checkpoint.pt", "folder"), ("samples.png", "folder"),
                                         ("history.json", "folder"), ("frames/step_0000008.png", "folder")])
def test_something_in_the_way_of_a_run_file_is_refused_before_training(run, capsys, where, kind):
    path = run / where
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()
    if kind == "file":
        path.write_text("the user's file")
    else:
        path.mkdir()
        (path / "keep.txt").write_text("the user's folder")
    before = _tree(run)
    _fails(capsys, ["train", "--max-steps", "8", "--out", "run"], where, f"is a {kind}", "move or rename", "(--out)")
    assert _tree(run) == before  # refused before training: nothing trained, nothing thrown away


def _frame_in_the_way(monkeypatch, name: str) -> None:
    """A folder appears where the run's frame ``name`` goes, while the run trains: its atomic rename fails."""
    replace = os.replace

    def in_the_way(source, target, *args, **kwargs):
        if str(target).endswith(name):
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), source, target)
        return replace(source, target, *args, **kwargs)

    monkeypatch.setattr(os, "replace", in_the_way)


def test_a_write_that_fails_after_training_keeps_the_steps_and_says_so(run, monkeypatch, capsys):
    """Something appears in the way of the last frame while the run trains: the checkpoint is saved first."""
    _frame_in_the_way(monkeypatch, "step_0000004.png")
    _fails(capsys, ["train", "--max-steps", "4", "--no-progress", "--out", "run"],
           "Cannot write run/frames/step_0000004.png", "move or rename it",
           "run/checkpoint.pt holds step 4: the same command resumes from it")
    assert load_checkpoint(run)["step"] == 4 and not list(run.rglob("*.tmp"))


def test_a_frame_that_fails_in_the_middle_of_a_run_keeps_the_steps(run, monkeypatch, capsys):
    """The same for a frame drawn mid-run (every 2 steps here): the steps trained so far are saved first."""
    _frame_in_the_way(monkeypatch, "step_0000004.png")
    _fails(capsys, ["train", "--max-steps", "8", "--sample-every", "2", "--no-progress", "--out", "run"],
           "Cannot write run/frames/step_0000004.png", "run/checkpoint.pt holds step 4")
    assert load_checkpoint(run)["step"] == 4 and not list(run.rglob("*.tmp"))


def test_a_linked_run_folder_starts_over_beside_its_target(run, tmp_path, capsys):
    (tmp_path / "disk").mkdir()
    shutil.move(run, tmp_path / "disk" / "run")
    (tmp_path / "run").symlink_to(tmp_path / "disk" / "run")
    assert main(["train", *TINY, "--max-steps", "1", "--out", "run", "--no-resume"]) == 0
    old = list((tmp_path / "disk").glob("run.old-*"))
    assert len(old) == 1 and load_checkpoint(old[0])["step"] == 2
    assert (tmp_path / "run").is_symlink() and load_checkpoint(tmp_path / "run")["step"] == 1


def test_a_link_to_nowhere_as_the_run_folder_is_refused(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "run").symlink_to(tmp_path / "gone")
    _fails(capsys, ["train", *TINY, "--max-steps", "1", "--out", "run"], "link to", "does not exist", "(--out)")
    assert _tree(tmp_path) == {"run": f"-> {tmp_path / 'gone'}"}


def test_a_read_only_run_folder_is_refused_before_training(run, monkeypatch, capsys, deny_writes):
    before = _tree(run)
    try:
        deny_writes(run)
        _fails(capsys, ["train", "--max-steps", "4", "--out", "run"], "Cannot write in the output folder",
               "make it writable or choose another output folder (--out)")
    finally:
        run.chmod(0o755)
    assert _tree(run) == before


def test_a_read_only_frames_folder_is_refused_before_training(run, monkeypatch, capsys, deny_writes):
    before = _tree(run)
    try:
        deny_writes(run / "frames")
        _fails(capsys, ["train", "--max-steps", "4", "--out", "run"], "Cannot write in", "frames", "(--out)")
    finally:
        (run / "frames").chmod(0o755)
    assert _tree(run) == before


def test_a_full_disk_keeps_the_checkpoint_and_leaves_no_temporary_file(run, monkeypatch, capsys):
    before = (run / "checkpoint.pt").read_bytes()

    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full)
    _fails(capsys, ["train", "--max-steps", "4", "--out", "run"], "No space left", "free some disk space",
           "step 2) is intact")
    assert (run / "checkpoint.pt").read_bytes() == before and not list(run.rglob("*.tmp"))


def test_a_killed_runs_temporary_files_are_removed_and_the_users_kept(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    run = tmp_path / "run"
    (run / "frames").mkdir(parents=True)  # a run killed before its first checkpoint
    (run / ".lock").write_text("12345\n")
    (run / ".dcgan-run").write_text("a run folder")
    (run / "frames" / "step_0000000.png").write_bytes(b"frame")
    stale = [run / ".checkpoint.pt.k2j_x8zq.tmp", run / ".history.json.abcdefgh.tmp",
             run / "frames" / ".step_0000004.png.zz99yy88.tmp"]
    for path in stale:
        path.write_bytes(b"")
    users = [run / ".notes.tmp", run / ".checkpoint.pt.mine.tmp"]  # not of the course's naming: kept
    for path in users:
        path.write_text("the user's")
    assert main(["train", *TINY, "--max-steps", "1", "--out", "run"]) == 0
    assert not any(p.exists() for p in stale) and all(p.read_text() == "the user's" for p in users)


def test_a_run_folder_name_too_long_is_named(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    _fails(capsys, ["train", *TINY, "--max-steps", "1", "--out", "r" * 300], "too long", "shorter name (--out)")
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600)])
def test_files_are_written_as_the_umask_says(tmp_path, monkeypatch, capsys, umask, mode):
    monkeypatch.chdir(tmp_path)
    previous = os.umask(umask)
    try:
        assert main(["train", *TINY, "--max-steps", "1", "--out", "run"]) == 0
        assert main(["sample", "--checkpoint", "run", "--num", "4", "--out", "s.npz"]) == 0
    finally:
        os.umask(previous)
    files = [p for p in tmp_path.rglob("*") if p.is_file() and p.name != ".lock"]
    assert len(files) >= 9 and {p.name: p.stat().st_mode & 0o777 for p in files} == {p.name: mode for p in files}


# ================================================================================ 2. checkpoints
@pytest.mark.parametrize("command", ["train", "sample", "evaluate"])
def test_an_empty_checkpoint_gives_one_line(run, capsys, command):
    (run / "checkpoint.pt").write_bytes(b"")
    before = _tree(run.parent)
    argv = {"train": ["train", "--max-steps", "3", "--out", "run"],
            "sample": ["sample", "--checkpoint", "run", "--out", "s.png"],
            "evaluate": ["evaluate", "--checkpoint", "run", "--num", "100"]}[command]
    _fails(capsys, argv, "run/checkpoint.pt is empty (0 bytes)", "--no-resume")
    assert _tree(run.parent) == before


def test_a_truncated_checkpoint_gives_one_line(run, capsys):
    data = (run / "checkpoint.pt").read_bytes()
    (run / "checkpoint.pt").write_bytes(data[:len(data) // 2])
    _fails(capsys, ["train", "--max-steps", "3", "--out", "run"], "not a readable dcgan_utils checkpoint",
           "--no-resume")


def test_a_text_file_as_a_checkpoint_gives_one_line(run, capsys):
    (run / "checkpoint.pt").write_text("not a checkpoint\n")
    _fails(capsys, ["sample", "--checkpoint", "run/checkpoint.pt", "--out", "s.png"],
           "not a readable dcgan_utils checkpoint")


def test_a_checkpoint_that_would_run_code_is_refused(run, capsys):
    torch.save({"format": 1, "hook": os.getcwd}, run / "checkpoint.pt")  # a pickled function: never loaded
    _fails(capsys, ["sample", "--checkpoint", "run", "--out", "s.png"], "not a readable dcgan_utils checkpoint")


CRAFTED = {
    "history is a list": (lambda s: s.update(history=[1, 2]), "history is a list"),
    "history columns": (lambda s: s["history"]["loss_g"].append(0.5), "do not line up"),
    "history text": (lambda s: s["history"]["loss_d"].__setitem__(0, "x"), "not numbers"),
    "history frames": (lambda s: s["history"]["samples"].append("x"), "frames, events or evaluations"),
    "no rng": (lambda s: s.pop("rng"), "lacks 'rng'"),
    "fixed noise": (lambda s: s.update(fixed_noise=torch.zeros(3)), "fixed_noise"),
    "elapsed text": (lambda s: s.update(elapsed="soon"), "elapsed"),
    "negative step": (lambda s: s.update(step=-1), "step=-1"),
    "two channels": (lambda s: s.update(channels=2), "channels=2"),
    "unknown dataset": (lambda s: s["config"].update(dataset="cifar"), "invalid config"),
}


@pytest.mark.parametrize("name", CRAFTED)
def test_a_crafted_checkpoint_gives_one_line(run, capsys, name):
    change, needle = CRAFTED[name]
    _craft(run, change)
    before = _tree(run)
    _fails(capsys, ["train", "--max-steps", "3", "--out", "run"], needle, "--no-resume")
    assert _tree(run) == before


def test_no_resume_sets_a_damaged_run_aside_as_the_message_says(run, tmp_path, capsys):
    (run / "checkpoint.pt").write_bytes(b"")
    assert main(["train", *TINY, "--max-steps", "1", "--out", "run", "--no-resume"]) == 0
    old = next(tmp_path.glob("run.old-*"))
    assert (old / "checkpoint.pt").read_bytes() == b"" and load_checkpoint(run)["step"] == 1


def test_a_missing_checkpoint_says_how_to_make_one(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    _fails(capsys, ["sample", "--checkpoint", "nothing/here", "--out", "s.png"], "No checkpoint at", "train first")


# ================================================================================ 3. image folders
def _train_folder(data_dir, out: str = "out") -> list[str]:
    return ["train", "--dataset", "folder", "--data-dir", str(data_dir), "--width", "16", "--batch-size", "4",
            "--max-steps", "1", "--device", "cpu", "--no-progress", "--out", out]


def test_a_huge_transparent_png_loads_in_proportionate_memory(tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    _png(photos / "huge.png", 6000, 6000)  # 144 MB decoded; the float compositing once took 10x that
    code = ("import resource, sys\nfrom dcgan_utils import load_dataset\n"
            "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
            "data = load_dataset('folder', 32, data_dir=sys.argv[1])\n"
            "grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before\n"
            "print(grown // 1024, tuple(data.images.shape))")
    result = subprocess.run([sys.executable, "-c", code, str(photos)], env=_env(), capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    megabytes, shape = result.stdout.split(maxsplit=1)
    assert shape.strip() == "(1, 3, 32, 32)" and int(megabytes) < 400, result.stdout


@pytest.mark.parametrize("name, content", [("broken.png", b"\x89PNG\r\n\x1a\nnot really"),
                                           ("notes.jpg", b"just text"),
                                           ("cut.jpg", None)])
def test_an_unreadable_image_is_named(tmp_path, monkeypatch, capsys, name, content):
    monkeypatch.chdir(tmp_path)
    photos = _photos(tmp_path / "photos", 4)
    if content is None:  # a JPEG cut off half way
        Image.new("RGB", (64, 64), (200, 10, 10)).save(photos / "whole.jpg")
        content = (photos / "whole.jpg").read_bytes()[:200]
        (photos / "whole.jpg").unlink()
    (photos / name).write_bytes(content)
    before = _tree(photos)
    _fails(capsys, _train_folder("photos"), str(photos / name), f"remove it from {photos}")
    assert _tree(photos) == before


def test_odd_file_names_load(tmp_path):
    from dcgan_utils import load_dataset

    photos = tmp_path / "photos"
    photos.mkdir()
    names = ["with space.png", "ünïcødé.PNG", "-leading-dash.jpg", "new\nline.png", ".hidden.png", "dots...png"]
    for i, name in enumerate(names):
        Image.new("RGB", (20, 20), (i * 40, 0, 0)).save(photos / name, format="PNG" if "png" in name.lower()
                                                        else "JPEG")
    before = _tree(photos)
    assert len(load_dataset("folder", 32, data_dir=photos)) == len(names)
    assert _tree(photos) == before


def test_links_in_an_image_folder_neither_hang_nor_escape(tmp_path):
    from dcgan_utils import load_dataset

    photos = _photos(tmp_path / "photos", 3)
    (photos / "loop").symlink_to(photos)  # a folder link back to itself: not walked into
    (photos / "gone.png").symlink_to(tmp_path / "nowhere.png")  # a link to nothing: skipped
    Image.new("RGB", (20, 20)).save(tmp_path / "elsewhere.png")
    (photos / "linked.png").symlink_to(tmp_path / "elsewhere.png")  # a link to an image: read, not changed
    before = _tree(tmp_path)
    assert len(load_dataset("folder", 32, data_dir=photos)) == 4
    assert _tree(tmp_path) == before


def test_odd_formats_and_sizes_load(tmp_path):
    from dcgan_utils import load_dataset

    photos = tmp_path / "photos"
    photos.mkdir()
    Image.new("RGB", (1, 1), (9, 9, 9)).save(photos / "dot.png")
    Image.new("L", (3000, 1), 128).save(photos / "panorama.png")
    Image.new("I;16", (40, 40), 40000).save(photos / "sixteen.png")
    Image.new("P", (40, 40), 3).save(photos / "palette.png", transparency=3)
    Image.new("CMYK", (40, 40), (0, 255, 255, 0)).save(photos / "cmyk.jpg")
    Image.new("LA", (40, 40), (10, 0)).save(photos / "grey_alpha.png")
    Image.new("RGB", (40, 40), (0, 0, 200)).save(photos / "old.bmp")
    data = load_dataset("folder", 32, data_dir=photos)
    assert tuple(data.images.shape) == (7, 3, 32, 32)


def test_a_folder_without_images_says_so(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "readme.txt").write_text("no images here")
    _fails(capsys, _train_folder("docs"), "No images", f"found under {tmp_path / 'docs'}")


@pytest.mark.parametrize("make, needle", [(lambda p: p.write_text("a file"), "is a file, not a folder"),
                                          (lambda p: None, "does not exist")])
def test_an_image_folder_that_is_not_one_says_what_to_pass(tmp_path, monkeypatch, capsys, make, needle):
    monkeypatch.chdir(tmp_path)
    make(tmp_path / "photos")
    _fails(capsys, _train_folder("photos"), needle, "--data-dir")


def test_a_damaged_celeba_attribute_table_is_named(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    _photos(tmp_path / "celeba" / "img_align_celeba", 8)
    table = "8\nSmiling Male\n" + "".join(f"photo_{i:02d}.png x 1\n" for i in range(8))
    (tmp_path / "celeba" / "list_attr_celeba.txt").write_text(table)
    argv = ["train", "--dataset", "celeba", "--data-dir", "celeba", "--width", "16", "--batch-size", "4",
            "--max-steps", "1", "--device", "cpu", "--out", "out"]
    _fails(capsys, argv, str(Path("celeba") / "list_attr_celeba.txt"), "restore the original file, or remove it")


def test_a_relative_image_folder_resumes_from_another_folder(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    _photos(tmp_path / "photos", 8)
    assert main(_train_folder("photos", "run")) == 0
    monkeypatch.chdir(tmp_path / "photos")  # "got img_loop": the saved folder was relative to where it started
    assert main(["train", "--max-steps", "2", "--no-progress", "--out", str(tmp_path / "run")]) == 0
    assert load_checkpoint(tmp_path / "run")["step"] == 2


# ================================================================================ 4. sample and evaluate
def test_sample_to_an_unknown_kind_of_file(run, capsys):
    _fails(capsys, ["sample", "--checkpoint", "run", "--out", "s.txt"], "use a .npz (array) or .png (grid)")


def test_sample_to_an_existing_folder(run, capsys):
    (run.parent / "pics.png").mkdir()
    _fails(capsys, ["sample", "--checkpoint", "run", "--out", "pics.png"], "is a folder", "name a .npz or .png")


@pytest.mark.parametrize("length", [250, 300])
def test_sample_to_a_name_near_or_over_the_limit(run, capsys, length):
    name = "s" * (length - 4) + ".npz"
    if length <= 255:  # fits: written, although its temporary file's name would not have
        assert main(["sample", "--checkpoint", "run", "--num", "4", "--out", name]) == 0
        assert (run.parent / name).is_file()
    else:
        line = _fails(capsys, ["sample", "--checkpoint", "run", "--out", name], "too long", "shorter name")
        assert ".tmp" not in line


def test_sample_replaces_a_link_and_keeps_its_target(run, tmp_path, capsys):
    (tmp_path / "mine.png").write_bytes(b"the user's picture")
    (tmp_path / "s.png").symlink_to(tmp_path / "mine.png")
    assert main(["sample", "--checkpoint", "run", "--num", "4", "--out", "s.png"]) == 0
    assert (tmp_path / "mine.png").read_bytes() == b"the user's picture"
    assert not (tmp_path / "s.png").is_symlink() and (tmp_path / "s.png").stat().st_size > 100


def test_sample_into_a_read_only_folder(run, tmp_path, monkeypatch, capsys, deny_writes):
    (tmp_path / "ro").mkdir()
    (tmp_path / "ro" / "keep.txt").write_text("the user's")
    before = _tree(tmp_path / "ro")
    try:
        deny_writes(tmp_path / "ro")
        _fails(capsys, ["sample", "--checkpoint", "run", "--num", "4", "--out", "ro/s.npz"], "Cannot write ro/s.npz",
               "not writable", "nothing was written")
    finally:
        (tmp_path / "ro").chmod(0o755)
    assert _tree(tmp_path / "ro") == before


def test_a_png_grid_beyond_what_can_be_drawn_is_refused_with_the_largest_that_can(run, capsys):
    line = _fails(capsys, ["sample", "--checkpoint", "run", "--num", "1000000", "--out", "s.png"],
                  "too large to draw", ".npz")
    largest = int(line.split("use at most ")[1].split(" images")[0].replace(",", ""))
    assert grid_size(largest, 32, 32, int(np.ceil(np.sqrt(largest))))[0] ** 2 <= MAX_GRID_PIXELS
    assert grid_size(largest + 2000, 32, 32, int(np.ceil(np.sqrt(largest + 2000))))[0] ** 2 > MAX_GRID_PIXELS


def test_a_large_png_grid_is_drawn_in_proportionate_memory(run):
    code = ("import resource, sys\nfrom dcgan_utils.cli import main\n"
            "assert main(['sample', '--checkpoint', 'run', '--num', '16', '--out', 'warm.png']) == 0\n"
            "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
            "assert main(['sample', '--checkpoint', 'run', '--num', '12000', '--out', 'grid.png']) == 0\n"
            "print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) // 1024)")
    result = subprocess.run([sys.executable, "-c", code], cwd=run.parent, env=_env(), capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    # the 3,742 x 3,742 grid is 42 MB as bytes; drawing it as float tensors once took about 0.6 GB
    assert int(result.stdout.split()[-1]) < 200, result.stdout


def test_evaluate_draws_no_more_samples_than_it_measures(run, capsys, monkeypatch):
    import dcgan_utils.evaluate as evaluate

    drawn = []
    generate = evaluate.generate
    monkeypatch.setattr(evaluate, "generate", lambda g, num, **kw: drawn.append(num) or generate(g, num, **kw))
    assert main(["evaluate", "--checkpoint", "run", "--num", "100000", "--source", "subset", "--no-references"]) == 0
    assert drawn == [1000] and '"num_requested": 100000' in capsys.readouterr().out


def test_evaluate_too_few_samples(run, capsys):
    _fails(capsys, ["evaluate", "--checkpoint", "run", "--num", "1"], "--num must be at least 2")


def test_evaluate_a_run_without_a_classifier_draws_nothing(run, capsys, monkeypatch):
    import dcgan_utils.evaluate as evaluate

    monkeypatch.setattr(evaluate, "generate", lambda *a, **k: pytest.fail("samples drawn"))
    _craft(run, lambda s: s["config"].update(dataset="folder", data_dir=str(run.parent)))
    _fails(capsys, ["evaluate", "--checkpoint", "run", "--num", "100"], "No classifier for dataset 'folder'")


def test_evaluate_with_a_missing_data_folder(run, capsys):
    _fails(capsys, ["evaluate", "--checkpoint", "run", "--num", "100", "--data-dir", "nowhere"],
           "nowhere does not exist", "--data-dir")


# ================================================================================ 5. signals, every command
SLOW_SAMPLE = """
import sys, time
import dcgan_utils.sampling as sampling
batches = sampling.generate_batches
def slow(*args, **kwargs):
    for i, batch in enumerate(batches(*args, **kwargs)):
        yield batch
        if i == 0:
            print("READY", file=sys.stderr, flush=True)
        time.sleep(0.05)
sampling.generate_batches = slow
from dcgan_utils.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.parametrize("signum, code, name", [(signal.SIGTERM, 143, "SIGTERM"), (signal.SIGINT, 130, "Ctrl-C")])
def test_a_signal_during_sample_leaves_no_file_behind(run, signum, code, name):
    (run.parent / "s.npz").write_bytes(b"the previous sample")
    before = _tree(run.parent)
    proc = _python(SLOW_SAMPLE, "sample", "--checkpoint", "run", "--num", "100000", "--out", "s.npz", cwd=run.parent)
    status, err = _signal_when_ready(proc, signum)
    assert status == code and err.strip() == f"python -m dcgan_utils sample: stopped by {name}" \
        f"{' (SIGINT)' if signum == signal.SIGINT else ''}; s.npz was not changed", err
    assert _tree(run.parent) == before  # no hidden temporary file, the previous s.npz as it was


def _hanging(module: str, attr: str, stream: str = "sys.stderr") -> str:
    """A CLI run in which ``module.attr`` says READY and then hangs, so that a signal arrives mid-command."""
    return f"""
import sys, time
import {module} as patched
def slow(*args, **kwargs):
    print("READY", file={stream}, flush=True)
    time.sleep(60)
patched.{attr} = slow
from dcgan_utils.cli import main
sys.exit(main(sys.argv[1:]))
"""


SLOW_EVALUATE = _hanging("dcgan_utils.evaluate", "measure", "sys.__stderr__")


def test_sigterm_during_evaluate_says_it_stopped(run):
    proc = _python(SLOW_EVALUATE, "evaluate", "--checkpoint", "run", "--num", "100", "--source", "subset",
                   cwd=run.parent)
    status, err = _signal_when_ready(proc, signal.SIGTERM)
    assert status == 143 and err.strip().splitlines() == [
        "python -m dcgan_utils evaluate: stopped by SIGTERM; nothing was written"], err


SLOW_DATA = _hanging("dcgan_utils.run", "load_dataset")


def test_ctrl_c_while_train_loads_its_data(run):
    """Before training (loading a large image folder can take minutes): one line, and the checkpoint's state."""
    before = {k: v for k, v in _tree(run).items()}
    proc = _python(SLOW_DATA, "train", "--max-steps", "4", "--out", "run", cwd=run.parent)
    status, err = _signal_when_ready(proc, signal.SIGINT)
    assert status == 130 and err.strip().splitlines() == [
        "python -m dcgan_utils train: stopped by Ctrl-C (SIGINT); run/checkpoint.pt holds step 2: the same command "
        "resumes from it"], err
    assert _tree(run) == before


def test_sigterm_while_training_saves_a_whole_step(tmp_path):
    proc = _python("import sys\nfrom dcgan_utils.cli import main\nsys.exit(main(sys.argv[1:]))", "train", *TINY,
                   "--batch-size", "8", "--max-steps", "100000", "--sample-every", "4", "--out", "run", cwd=tmp_path)
    try:
        while not list((tmp_path / "run" / "frames").glob("step_000000[1-9].png")):
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.02)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 143 and "Traceback" not in out + err and not err.strip(), err
    state = load_checkpoint(tmp_path / "run")
    assert len(state["history"]["loss_g"]) == state["step"] >= 4 and not list(tmp_path.rglob("*.tmp"))


KILLED_IN_CHECKPOINT = """
import sys, time, torch
save = torch.save
def stuck(*args, **kwargs):
    print("READY", file=sys.stderr, flush=True)
    time.sleep(60)
torch.save = stuck
from dcgan_utils.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_sigkill_during_the_first_checkpoint_leaves_nothing_once_resumed(tmp_path, monkeypatch, capsys):
    proc = _python(KILLED_IN_CHECKPOINT, "train", *TINY, "--max-steps", "2", "--out", "run", cwd=tmp_path)
    _signal_when_ready(proc, signal.SIGKILL)
    assert [p.name[:15] for p in (tmp_path / "run").glob("*.tmp")] == [".checkpoint.pt."]  # what SIGKILL leaves
    monkeypatch.chdir(tmp_path)
    assert main(["train", *TINY, "--max-steps", "2", "--out", "run"]) == 0
    assert not list(tmp_path.rglob("*.tmp")) and load_checkpoint(tmp_path / "run")["step"] == 2


# ================================================================================ 6. environment variables
def test_dcgan_data_dir_pointing_at_a_file_gives_one_line(tmp_path):
    (tmp_path / "data").write_text("not a folder")
    result = subprocess.run([sys.executable, "-m", "dcgan_utils", "train", "--dataset", "mnist", "--width", "16",
                             "--max-steps", "1", "--device", "cpu", "--out", "run"], cwd=tmp_path,
                            env=_env(DCGAN_DATA_DIR=str(tmp_path / "data")), capture_output=True, text=True)
    assert result.returncode == 2 and "subset" not in result.stdout, result.stdout  # no contradicting first line
    assert result.stderr.strip().splitlines() == [
        f"python -m dcgan_utils train: error: DCGAN_DATA_DIR={tmp_path / 'data'} is a file, not a folder: point it "
        "at the course's data folder (the one holding mnist_subset.npz), or unset it"], result.stderr
    assert (tmp_path / "data").read_text() == "not a folder"


def test_dcgan_data_dir_pointing_nowhere_gives_one_line(tmp_path, monkeypatch, capsys):
    import dcgan_utils.data as data

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DCGAN_DATA_DIR", str(tmp_path / "gone"))
    monkeypatch.setattr(data, "REPO_DATA_DIR", tmp_path / "gone")
    _fails(capsys, ["train", "--dataset", "mnist", "--width", "16", "--max-steps", "1", "--device", "cpu",
                    "--out", "run"], "DCGAN_DATA_DIR=", "does not exist", "or unset it")
    assert not (tmp_path / "gone").exists()


def test_a_wrong_dcgan_progress_is_refused_before_anything_is_written(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DCGAN_PROGRESS", "fancy")
    _fails(capsys, ["train", *TINY, "--max-steps", "1", "--out", "run"], "DCGAN_PROGRESS='fancy'",
           "use one of bar, lines, off")
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("debug", ["none", "DCGAN_DEBUG=1", "--debug"])
def test_an_unexpected_error_is_one_line_with_what_is_saved_and_a_traceback_on_request(run, capsys, monkeypatch,
                                                                                       debug):
    from dcgan_utils.train import Trainer as CliTrainer

    def broken(self):
        raise IndexError()  # an error nobody wrote a message for: no text at all

    monkeypatch.setattr(CliTrainer, "fit", broken)
    if debug.startswith("DCGAN_DEBUG"):
        monkeypatch.setenv("DCGAN_DEBUG", "1")
    assert main(["train", "--max-steps", "4", "--out", "run", *(["--debug"] if debug == "--debug" else [])]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == ("python -m dcgan_utils train: error: unexpected IndexError: this is a bug in "
                       "dcgan_utils; please report it with the output of the same command run with --debug; "
                       "run/checkpoint.pt holds step 2: the same command resumes from it")
    if debug == "none":
        assert len(err) == 1
    else:
        assert err[0] == "Traceback (most recent call last):" and "raise IndexError()" in "\n".join(err)
