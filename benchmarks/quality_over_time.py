"""Quality against the clock: train recipe variants for the same wall-clock budget and score them as they go.

Each variant is ``python -m dcgan_utils train ... --max-minutes M --eval-every 1`` in its own process, pinned to
its own pair of cores (``--cores-per-run``, Linux ``taskset``), so several variants run side by side on a big
machine and each sees what a 2-core laptop would. Every epoch the course's evaluation (FD in the shipped
classifier's features, class coverage, confident share, 500 samples) is written to the run's history; this
script collects the curves into one JSON and prints a table.

    python benchmarks/quality_over_time.py --minutes 5 --out runs/quality            # every variant
    python benchmarks/quality_over_time.py --minutes 5 --variants default seed_w256   # some of them

The seed's recipe at width 256 (PyTorch init, Adam 2e-4 for both, batch 128, fp32) stands for "a careful
student's fix of the seed's code" (issue 15): the course's default should be clearly ahead of it.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

COMMON = ["--dataset", "mnist", "--image-size", "32", "--source", "subset", "--eval-every", "1",
          "--eval-num", "500", "--no-progress", "--no-resume"]
VARIANTS: dict[str, list[str]] = {
    "default": [],  # the CPU profile: width 128, batch 64, G lr 8e-4 / D 2e-4, EMA 0.999 (since issue 15)
    "default_fp32": ["--precision", "fp32"],
    "w128_equal_lr": ["--width", "128", "--batch-size", "64"],  # the CPU profile before issue 15
    "w64_fast_g": ["--width", "64", "--batch-size", "64", "--lr", "8e-4", "--lr-d", "2e-4"],
    "w128_ema": ["--width", "128", "--batch-size", "64", "--ema", "0.999"],
    "w64_fast_g_ema": ["--width", "64", "--batch-size", "64", "--lr", "8e-4", "--lr-d", "2e-4", "--ema", "0.999"],
    "w128_fast_g": ["--width", "128", "--batch-size", "64", "--lr", "4e-4", "--lr-d", "2e-4"],
    "w128_fast_g_ema": ["--width", "128", "--batch-size", "64", "--lr", "8e-4", "--lr-d", "2e-4", "--ema", "0.999"],
    "g128_d64_fast_g_ema": ["--g-width", "128", "--d-width", "64", "--batch-size", "64", "--lr", "8e-4",
                            "--lr-d", "2e-4", "--ema", "0.999"],
    "seed_w256": ["--seed-settings", "--width", "256", "--batch-size", "128", "--precision", "fp32"],
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=5.0, help="wall-clock training budget per variant")
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    parser.add_argument("--cores-per-run", type=int, default=2)
    parser.add_argument("--first-core", type=int, default=0, help="pin the first variant from this core on")
    parser.add_argument("--parallel", action="store_true", help="run the variants side by side on separate cores")
    parser.add_argument("--out", default="runs/quality_over_time")
    args = parser.parse_args(argv)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    procs = {}
    for i, name in enumerate(args.variants):
        first = args.first_core + (i * args.cores_per_run if args.parallel else 0)
        cores = ",".join(str(c) for c in range(first, first + args.cores_per_run))
        pin = ["taskset", "-c", cores] if shutil.which("taskset") else []
        env = {**os.environ, "OMP_NUM_THREADS": str(args.cores_per_run), "DCGAN_PROGRESS": "off"}
        command = [*pin, sys.executable, "-m", "dcgan_utils", "train", *COMMON, *VARIANTS[name],
                   "--max-minutes", str(args.minutes), "--device", "cpu", "--out", str(out / name)]
        log = open(out / f"{name}.log", "w")
        procs[name] = (subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env), log, time.time())
        print(f"started {name} on cores {cores}: {' '.join(command[len(pin):])}", flush=True)
        if not args.parallel:
            procs[name][0].wait()
    results = {}
    for name, (proc, log, started) in procs.items():
        proc.wait()
        log.close()
        history_file = out / name / "history.json"
        if not history_file.is_file():
            print(f"{name}: no history (exit {proc.returncode}); see {out / name}.log")
            continue
        history = json.loads(history_file.read_text())
        final = subprocess.run([sys.executable, "-m", "dcgan_utils", "evaluate", "--checkpoint", str(out / name),
                                "--num", "1000", "--source", "subset", "--no-references"],
                               capture_output=True, text=True)
        final = json.loads(final.stdout) if final.returncode == 0 else {}
        results[name] = {"steps": history["step"][-1] if history["step"] else 0,
                         "final": {k: final.get(k) for k in ("fd", "classes_present", "confident")},
                         "wall_minutes": round((time.time() - started) / 60, 2), "args": VARIANTS[name],
                         "curve": [{k: row[k] for k in ("minutes", "step", "fd", "classes_present", "confident")
                                    if k in row} for row in history["eval"]]}
    (out / "quality_over_time.json").write_text(json.dumps(results, indent=1))
    print(f"\n{'variant':16s} {'steps':>6s} {'final FD':>9s} {'confident':>10s} {'classes':>8s} {'best FD/epoch':>14s}"
          "   (final: 1,000 samples; curve: 500 per epoch)")
    nan = float("nan")
    for name, r in results.items():
        final = r["final"]
        best = min((row["fd"] for row in r["curve"]), default=nan)
        print(f"{name:16s} {r['steps']:6d} {final.get('fd') or nan:9.2f} {final.get('confident') or nan:10.1%} "
              f"{final.get('classes_present') or 0:8d} {best:14.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
