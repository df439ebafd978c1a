import subprocess
import sys

import numpy as np
import pytest

from dcgan_utils.cli import main

TINY = ["--dataset", "mnist", "--source", "subset", "--limit", "256", "--width", "32", "--batch-size", "32",
        "--no-progress"]


def test_train_then_resume_then_sample(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", *TINY, "--max-steps", "3", "--out", str(run)]) == 0
    assert "finished: step 3" in capsys.readouterr().out
    for name in ("checkpoint.pt", "history.json", "losses.png", "samples.png", "training.gif"):
        assert (run / name).is_file()
    # the same command with a larger budget finishes the same run
    assert main(["train", *TINY, "--max-steps", "5", "--out", str(run)]) == 0
    out = capsys.readouterr().out
    assert "Resuming" in out and "finished: step 5" in out
    assert main(["sample", "--checkpoint", str(run / "checkpoint.pt"), "--num", "10", "--out",
                 str(tmp_path / "s.npz")]) == 0
    images = np.load(tmp_path / "s.npz")["images"]
    assert images.shape == (10, 1, 32, 32) and images.dtype == np.float32
    assert images.min() >= -1 and images.max() <= 1 and images.std() > 0
    assert main(["sample", "--checkpoint", str(run), "--num", "9", "--out", str(tmp_path / "grid.png")]) == 0
    assert (tmp_path / "grid.png").stat().st_size > 100
    # seeded sampling is reproducible
    main(["sample", "--checkpoint", str(run), "--num", "10", "--out", str(tmp_path / "t.npz")])
    assert np.array_equal(np.load(tmp_path / "t.npz")["images"], images)


def test_no_resume_starts_over(tmp_path, capsys):
    main(["train", *TINY, "--max-steps", "2", "--out", str(tmp_path)])
    assert main(["train", *TINY, "--max-steps", "2", "--no-resume", "--out", str(tmp_path)]) == 0
    assert "Resuming" not in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    (["train", "--out", "x", "--image-size", "48"], "argument --image-size: invalid choice: 48"),
    (["train", "--out", "x", "--dataset", "cifar"], "argument --dataset: invalid choice: 'cifar'"),
    (["train", "--out", "x", "--max-steps", "-3"], "must be a positive integer, got -3"),
    (["train", "--out", "x", "--bogus"], "unrecognized arguments: --bogus"),
    (["train"], "the following arguments are required: --out"),
    (["fly"], "invalid choice: 'fly'"),
])
def test_bad_flags_give_one_line(argv, message):
    result = subprocess.run([sys.executable, "-m", "dcgan_utils", *argv], capture_output=True, text=True)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and "Traceback" not in result.stderr


def test_bad_values_give_one_line_not_a_traceback(tmp_path, capsys):
    assert main(["train", *TINY, "--label-smoothing", "0.9", "--out", str(tmp_path)]) == 2
    assert main(["sample", "--checkpoint", str(tmp_path / "none.pt"), "--out", str(tmp_path / "a.npz")]) == 2
    assert main(["sample", "--checkpoint", str(tmp_path), "--out", str(tmp_path / "a.jpg")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3
    assert "label_smoothing=0.9" in err[0] and "No checkpoint at" in err[1]


def test_help_explains_every_flag():
    result = subprocess.run([sys.executable, "-m", "dcgan_utils", "train", "--help"], capture_output=True, text=True)
    assert result.returncode == 0
    for flag in ("--dataset", "--data-dir", "--image-size", "--arch", "--width", "--epochs", "--max-steps",
                 "--max-minutes", "--batch-size", "--seed", "--device", "--out", "--no-resume"):
        assert flag in result.stdout
