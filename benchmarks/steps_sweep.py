"""Recipe variants trained to the same step counts, many at once on a GPU, samples saved for scoring on a CPU.

On a 2-core CPU a five-minute run makes a few thousand steps, and comparing ten recipes against the clock
(``quality_over_time.py``) costs an hour of a quiet machine. But what a step does is the same on any device in
fp32: a GPU can train every variant to the step counts the CPU would reach, several processes side by side, and
the CPU only has to measure its own steps/s per variant (seconds each) to turn steps into minutes.

    python benchmarks/steps_sweep.py train --group faces64 --device cuda --parallel 8 --out sweep   # on the GPU
    python benchmarks/steps_sweep.py score --out sweep                                          # on any machine

``train`` writes ``OUT/<group>/<variant>_s<seed>.npz``: for every snapshot step, 1,000 samples at 32x32 (the
evaluation classifier's input size, uint8) and a grid of 64 samples at full size (the same latents every time).
``score`` scores the snapshots with the course's classifiers (FD, confident share, classes present; MNIST and
FashionMNIST on 1,000 samples, the colour faces on 500), and writes ``OUT/scores.json`` and a table. Each run
is the course's own ``Trainer`` (checkpoints kept rare: GPU epochs of the small face set last under a second).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

FAST_G = {"lr": 8e-4, "lr_d": 2e-4}
GROUPS: dict[str, dict] = {
    "mnist32": {
        "base": {"dataset": "mnist", "source": "subset", "image_size": 32},
        "snapshots": [1000, 2000, 3000, 4000, 5000],
        "variants": {
            "profile": {"width": 128, "batch_size": 64, **FAST_G, "ema": 0.999},
            "beta2_0.99": {"width": 128, "batch_size": 64, **FAST_G, "ema": 0.999, "beta2": 0.99},
            "d_lr_1e-4": {"width": 128, "batch_size": 64, "lr": 8e-4, "lr_d": 1e-4, "ema": 0.999},
            "ema_0.995": {"width": 128, "batch_size": 64, **FAST_G, "ema": 0.995},
            "batch32": {"width": 128, "batch_size": 32, **FAST_G, "ema": 0.999},
            "batch128": {"width": 128, "batch_size": 128, **FAST_G, "ema": 0.999},
            "width96": {"width": 96, "batch_size": 64, **FAST_G, "ema": 0.999},
            "smooth0.1": {"width": 128, "batch_size": 64, **FAST_G, "ema": 0.999, "label_smoothing": 0.1},
        },
    },
    "mnist64": {  # notebook 09's fix, the 64x64 CPU profile: does an EMA of G help digits too?
        "base": {"dataset": "mnist", "source": "subset", "image_size": 64},
        "snapshots": [1000, 2000, 3000, 4000],
        "variants": {
            "profile_no_ema": {"width": 64, "batch_size": 64, **FAST_G},
            "profile_ema": {"width": 64, "batch_size": 64, **FAST_G, "ema": 0.999},
        },
    },
    "fashion64": {  # notebook 03's 64x64 run (its 3,200 images)
        "base": {"dataset": "fashion-mnist", "source": "subset", "image_size": 64, "limit": 3200},
        "snapshots": [1000, 2000, 3000],
        "variants": {
            "profile_no_ema": {"width": 64, "batch_size": 64, **FAST_G},
            "profile_ema": {"width": 64, "batch_size": 64, **FAST_G, "ema": 0.999},
        },
    },
    "faces64": {
        "base": {"dataset": "emoji-faces", "image_size": 64},
        "snapshots": [2000, 4000, 6000, 8000],
        "variants": {
            "no_ema": {"width": 64, "batch_size": 64, **FAST_G},  # the 64x64 CPU profile before the sweep
            "profile": {"width": 64, "batch_size": 64, **FAST_G, "ema": 0.999},
            "lr4e-4_ema": {"width": 64, "batch_size": 64, "lr": 4e-4, "lr_d": 2e-4, "ema": 0.999},
            "equal_lr_ema": {"width": 64, "batch_size": 64, "ema": 0.999},
            "g128_d64_ema": {"g_width": 128, "d_width": 64, "batch_size": 64, **FAST_G, "ema": 0.999},
            "batch32_ema": {"width": 64, "batch_size": 32, **FAST_G, "ema": 0.999},
            "width96_ema": {"width": 96, "batch_size": 64, **FAST_G, "ema": 0.999},
            "eps0.8_ema": {"width": 64, "batch_size": 64, **FAST_G, "ema": 0.999, "bn_eps": 0.8},
        },
    },
}


def train_one(group: str, variant: str, seed: int, device: str, out: Path, snapshots: list[int] | None = None) -> None:
    """Train one variant through its snapshots (a resume per snapshot) and save the samples of each."""
    import numpy as np
    import torch

    from dcgan_utils import Trainer
    from dcgan_utils.evaluate import to_classifier_input

    spec = GROUPS[group]
    settings = {**spec["base"], **spec["variants"][variant]}
    run_dir = out / group / f"{variant}_s{seed}"
    small, grids, steps, seconds = [], [], [], []
    started = time.perf_counter()
    for snapshot in snapshots or spec["snapshots"]:
        trainer = Trainer(out_dir=run_dir, seed=seed, device=device, precision="fp32", channels_last=False,
                          max_steps=snapshot, checkpoint_every=10**6, progress=False, **settings)
        trainer.fit()
        images = trainer.sample(1000, seed=0).float()
        resized = to_classifier_input(images, channels=images.shape[1])  # what the classifier will see
        to_uint8 = lambda x: ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).cpu().numpy()  # noqa: E731
        small.append(to_uint8(resized))
        grids.append(to_uint8(images[:64]))
        steps.append(trainer.step)
        seconds.append(time.perf_counter() - started)
        # rewritten after every snapshot: a sweep stopped at its time limit keeps what it measured
        partial = out / group / f"{variant}_s{seed}.partial.npz"
        np.savez_compressed(partial, samples32=np.stack(small), grids=np.stack(grids), steps=np.array(steps),
                            seconds=np.array(seconds), settings=json.dumps({**settings, "seed": seed}))
        os.replace(partial, out / group / f"{variant}_s{seed}.npz")


def train(args: argparse.Namespace) -> int:
    jobs = [(g, v, s) for g in args.group for v in (args.variants or GROUPS[g]["variants"]) if v in GROUPS[g]["variants"]
            for s in args.seeds]
    running: list[tuple[subprocess.Popen, tuple]] = []
    started = time.time()
    failed = 0
    for g in args.group:
        (args.out / g).mkdir(parents=True, exist_ok=True)
    while jobs or running:
        while jobs and len(running) < args.parallel:
            job = jobs.pop(0)
            log = open(args.out / job[0] / f"{job[1]}_s{job[2]}.log", "w")
            command = [sys.executable, __file__, "_one", *map(str, job), "--device", args.device, "--out", str(args.out),
                       *(["--snapshots", *map(str, args.snapshots)] if args.snapshots else [])]
            running.append((subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                             env={**os.environ, "DCGAN_PROGRESS": "off",
                                                  "OMP_NUM_THREADS": "1"}), job))
        time.sleep(1)
        for proc, job in list(running):
            if proc.poll() is not None:
                running.remove((proc, job))
                failed += proc.returncode != 0
                print(f"{time.time() - started:6.0f} s  {'/'.join(map(str, job))}: exit {proc.returncode}", flush=True)
    return 1 if failed else 0


def score(args: argparse.Namespace) -> int:
    import numpy as np
    import torch

    from dcgan_utils.evaluate import EVAL_DATASETS, evaluate_images

    results = {}
    for path in sorted(p for p in args.out.glob("*/*.npz") if not p.name.endswith(".partial.npz")):
        data = np.load(path)
        settings = json.loads(str(data["settings"]))
        dataset = settings["dataset"]
        if dataset not in EVAL_DATASETS:
            continue
        rows = []
        for step, samples in zip(data["steps"], data["samples32"]):
            # faces: 500 samples against 500 training faces (their reference set is half of the 1,606)
            images = torch.from_numpy(samples[:500] if dataset == "emoji-faces" else samples).float() / 127.5 - 1
            r = evaluate_images(images, dataset)
            rows.append({"step": int(step), "fd": round(r["fd"], 3), "confident": round(r["confident"], 3),
                         "classes_present": r["classes_present"]})
            print(f"{path.parent.name}/{path.stem:22s} step {int(step):6d}  FD {r['fd']:7.2f}  confident "
                  f"{r['confident']:6.1%}  classes {r['classes_present']}", flush=True)
        results[f"{path.parent.name}/{path.stem}"] = {"settings": settings, "curve": rows}
    (args.out / "scores.json").write_text(json.dumps(results, indent=1))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train")
    t.add_argument("--group", nargs="+", choices=list(GROUPS), default=list(GROUPS))
    t.add_argument("--variants", nargs="+", help="only these variant names (default: all of each group)")
    t.add_argument("--seeds", nargs="+", type=int, default=[0])
    t.add_argument("--device", default="cuda")
    t.add_argument("--parallel", type=int, default=4, help="training processes at once")
    t.add_argument("--out", type=Path, default=Path("runs/steps_sweep"))
    t.add_argument("--snapshots", nargs="+", type=int, help="step counts (default: the group's)")
    s = sub.add_parser("score")
    s.add_argument("--out", type=Path, default=Path("runs/steps_sweep"))
    one = sub.add_parser("_one")
    one.add_argument("group")
    one.add_argument("variant")
    one.add_argument("seed", type=int)
    one.add_argument("--device", default="cuda")
    one.add_argument("--out", type=Path, required=True)
    one.add_argument("--snapshots", nargs="+", type=int)
    args = parser.parse_args(argv)
    if args.command == "_one":
        train_one(args.group, args.variant, args.seed, args.device, args.out, args.snapshots)
        return 0
    return train(args) if args.command == "train" else score(args)


if __name__ == "__main__":
    sys.exit(main())
