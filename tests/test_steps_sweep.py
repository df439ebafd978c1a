"""benchmarks/steps_sweep.py: a variant trains exactly to each snapshot (one resume per snapshot), its samples are
saved per snapshot, and `score` measures them with the course's classifier. Tiny settings on the CPU."""
import importlib.util
import json
from pathlib import Path

import numpy as np

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "steps_sweep.py"


def _load_sweep():
    spec = importlib.util.spec_from_file_location("steps_sweep", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_sweep_saves_samples_at_each_snapshot_and_scores_them(tmp_path, monkeypatch):
    sweep = _load_sweep()
    monkeypatch.setitem(sweep.GROUPS, "tiny", {
        "base": {"dataset": "mnist", "source": "subset", "image_size": 32, "limit": 256},
        "snapshots": [3, 7], "variants": {"narrow": {"width": 16, "batch_size": 16}}})
    sweep.train_one("tiny", "narrow", 0, "cpu", tmp_path)
    saved = np.load(tmp_path / "tiny" / "narrow_s0.npz")
    assert saved["steps"].tolist() == [3, 7]  # each snapshot resumed the run to exactly its step count
    assert saved["samples32"].shape == (2, 1000, 1, 32, 32) and saved["samples32"].dtype == np.uint8
    assert saved["grids"].shape == (2, 64, 1, 32, 32)
    assert not np.array_equal(saved["grids"][0], saved["grids"][1])  # 4 more steps changed G
    assert json.loads(str(saved["settings"]))["width"] == 16
    assert sweep.main(["score", "--out", str(tmp_path)]) == 0
    curve = json.loads((tmp_path / "scores.json").read_text())["tiny/narrow_s0"]["curve"]
    assert [row["step"] for row in curve] == [3, 7] and all(row["fd"] > 0 for row in curve)
