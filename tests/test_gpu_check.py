"""tools/gpu_check.py: it refuses without CUDA, and its --quick mode runs every part on a CPU and writes the docs
section between its markers (the real run is for a CUDA machine: see the README's "More than one GPU" and
docs/performance.md)."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
TOOL = [sys.executable, str(REPO / "tools" / "gpu_check.py")]


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_refuses_in_one_line_without_cuda():
    done = subprocess.run(TOOL, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.count("\n") == 1 and "no CUDA GPU" in done.stderr
    full_on_cpu = subprocess.run([*TOOL, "--device", "cpu"], capture_output=True, text=True, timeout=120, check=False)
    assert full_on_cpu.returncode == 2 and "only with --quick" in full_on_cpu.stderr


@pytest.mark.slow
def test_quick_runs_every_part_and_replaces_only_its_section(tmp_path):
    doc = tmp_path / "performance.md"
    doc.write_text("# Performance\n\nbefore\n\n<!-- gpu_check:begin -->\nstale numbers\n<!-- gpu_check:end -->\n\n"
                   "## After\n\nafter\n")
    cmd = [*TOOL, "--quick", "--device", "cpu", "--out-doc", str(doc), "--img-dir", str(tmp_path / "img"),
           "--json", str(tmp_path / "numbers.json"), "--minutes", "3"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=400, check=False)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert "[gpu_check" in done.stdout  # progress lines
    text = doc.read_text()
    assert text.startswith("# Performance\n\nbefore\n\n<!-- gpu_check:begin") and text.endswith("## After\n\nafter\n")
    assert "stale numbers" not in text and text.count("<!-- gpu_check:begin") == text.count("<!-- gpu_check:end") == 1
    for heading in ("A training step against the reference loop", "Whole processes", "MNIST 32x32"):
        assert heading in text
    assert "--quick" in text and "skipped: fp16 with a GradScaler needs CUDA" in text
    numbers = json.loads((tmp_path / "numbers.json").read_text())
    measured = [r for r in numbers["steps"] if "ours_ips" in r]
    assert len(measured) == 2 and all(r["ours_ips"] > 0 and r["ref_ips"] > 0 for r in measured)
    assert numbers["processes"][0]["ours_seconds"] > 0 and numbers["processes"][0]["ref_seconds"] > 0
    mnist = numbers["mnist"]
    assert mnist["steps"] == 10 and mnist["eval"]["num"] == 100 and mnist["eval"]["fd"] >= 0
    assert mnist["eval"]["reference"]["real"]["fd"] < mnist["eval"]["reference"]["noise"]["fd"]
    for png in ("gpu_check_quick_mnist32_samples.png", "gpu_check_quick_mnist32_losses.png"):
        assert (tmp_path / "img" / png).stat().st_size > 0 and f"](img/{png})" in text
    assert not numbers["failures"]
