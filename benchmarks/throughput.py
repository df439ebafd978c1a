"""Training throughput: dcgan_utils' Trainer against a plain PyTorch DCGAN loop, alternated in one process.

The reference loop is written the way the popular examples write it (pytorch/examples' dcgan/main.py): a
torchvision-style Dataset of PIL images with Resize/ToTensor/Normalize transforms, a DataLoader, the same G and D
(D ends in a Sigmoid, so nn.BCELoss), Adam(2e-4, (0.5, 0.999)), D's real and fake halves backpropagated
separately, one G forward per step, D's weight gradients accumulated (and thrown away) during G's step. Its
dataset is built offline from the shipped subset (data/mnist_subset.npz), one PIL image per item, so the
per-image decode/resize/normalise cost is real.

"Ours" is the Trainer's own step, not a copy of it: ``Trainer.fit_step``, the very method ``Trainer.fit`` calls once
per step (this process's resident uint8 batch of the epoch order, scaled to [-1, 1]; ``Trainer.train_step``; the
history synced to the host every ``LOG_EVERY`` steps), on the real shipped digits.

``--process-steps N`` also times whole processes, start to exit, each in a fresh Python: ``python -m dcgan_utils
train ... --max-steps N`` against the reference loop as a script of its own (this file with a hidden flag) running N
steps and saving G and D at the end. Those seconds include what a run costs besides its steps: importing torch,
loading and preparing the data, building the networks, CUDA start-up and cuDNN autotuning (or torch.compile), and
for ours also the fixed-latent frames, per-epoch checkpoints, loss plots, sample grid and GIF it writes.

Both sides are warmed up, then timed in alternating rounds (reference, ours, reference, ours, ...), so that load
from other processes on a shared machine hits both alike: the ratio is fair even when the absolute images/s are
not. The img/CPU-s columns divide by this process's CPU time instead of wall time (with --threads 1 they
approximate a quiet single core). Peak memory: on CUDA ``torch.cuda.max_memory_allocated`` per side; on a CPU the peak RSS of a separate short
process per side (VmHWM; DataLoader workers not counted), since a process's peak cannot be split between two loops sharing it.

    python benchmarks/throughput.py                        # CPU (and CUDA when present), the default configs
    python benchmarks/throughput.py --configs seed32-w128 --precision bf16 --channels-last
    python benchmarks/throughput.py --configs seed32-w128 --profile   # torch.profiler tables of both loops
    python benchmarks/throughput.py --device cuda --configs seed32 --batch-size 128 --precision bf16 \
        --channels-last --process-steps 300                            # + whole-process seconds for 300 steps
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from dcgan_utils import ImageData, Trainer, build_models  # noqa: E402

# name -> (image_size, width): the seed 000 networks ("dcgan" arch) at the seed's and at reduced widths.
CONFIGS = {
    "seed32": (32, 1024),        # seed 000's 32x32 net, filters 1024/512/256
    "seed32-w256": (32, 256),    # reduced width
    "seed32-w128": (32, 128),    # the CPU profile's width
    "paper64": (64, 1024),       # the DCGAN paper's 64x64 net, filters 1024/512/256/128
    "paper64-w128": (64, 128),
    "tiny32": (32, 16),          # for tests (tools/gpu_check.py --quick)
    "tiny64": (64, 16),
}
DEFAULT_CONFIGS = ("seed32", "seed32-w256", "seed32-w128", "paper64")


# ----------------------------------------------------------------------------------------------- reference
class SubsetMNIST(torch.utils.data.Dataset):
    """torchvision.datasets.MNIST's behaviour on the shipped subset: PIL images through a transform."""

    def __init__(self, transform=None):
        with np.load(REPO / "data" / "mnist_subset.npz") as arrays:
            self.images, self.labels = arrays["train_images"], arrays["train_labels"]
        self.transform = transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        from PIL import Image

        img = Image.fromarray(self.images[i], mode="L")  # as torchvision.datasets.MNIST.__getitem__ does
        return (self.transform(img) if self.transform else img), int(self.labels[i])


class ReferenceLoop:
    """pytorch/examples' dcgan training step, with the same G and D and batch size."""

    def __init__(self, G: nn.Module, D: nn.Module, image_size: int, batch_size: int, device: torch.device,
                 workers: int):
        from torchvision import transforms

        transform = transforms.Compose([transforms.Resize(image_size), transforms.ToTensor(),
                                        transforms.Normalize((0.5,), (0.5,))])
        self.loader = torch.utils.data.DataLoader(SubsetMNIST(transform), batch_size=batch_size, shuffle=True,
                                                  drop_last=True, num_workers=workers,
                                                  pin_memory=device.type == "cuda", persistent_workers=workers > 0)
        self.G, self.D, self.device = G, D, device
        self.criterion = nn.BCELoss()
        self.opt_g = torch.optim.Adam(G.parameters(), lr=2e-4, betas=(0.5, 0.999))
        self.opt_d = torch.optim.Adam(D.parameters(), lr=2e-4, betas=(0.5, 0.999))
        self._batches = iter(self.loader)
        self.losses: list[torch.Tensor] = []

    def next_batch(self) -> torch.Tensor:
        try:
            return next(self._batches)[0]
        except StopIteration:
            self._batches = iter(self.loader)
            return next(self._batches)[0]

    def step(self) -> None:
        G, D, device = self.G, self.D, self.device
        real = self.next_batch().to(device)
        n = real.size(0)
        label = torch.full((n,), 1.0, device=device)
        D.zero_grad()
        err_d_real = self.criterion(D(real).view(-1), label)
        err_d_real.backward()
        noise = torch.randn(n, 100, 1, 1, device=device)
        fake = G(noise)
        label.fill_(0.0)
        err_d_fake = self.criterion(D(fake.detach()).view(-1), label)
        err_d_fake.backward()
        self.opt_d.step()
        G.zero_grad()
        label.fill_(1.0)
        err_g = self.criterion(D(fake).view(-1), label)
        err_g.backward()
        self.opt_g.step()
        self.losses.append(err_g.item())  # the examples print losses every few steps; .item() syncs each step


class PlainLoop(ReferenceLoop):
    """The reference step alone ("a plain loop"): the same step, its batches indexed from the resident uint8
    tensor ours uses instead of a DataLoader of PIL images, so that the difference is the step itself."""

    def __init__(self, G: nn.Module, D: nn.Module, image_size: int, batch_size: int, device: torch.device):
        self.G, self.D, self.device, self.batch_size = G, D, device, batch_size
        self.criterion = nn.BCELoss()
        self.opt_g = torch.optim.Adam(G.parameters(), lr=2e-4, betas=(0.5, 0.999))
        self.opt_d = torch.optim.Adam(D.parameters(), lr=2e-4, betas=(0.5, 0.999))
        self.images = _subset_uint8(image_size).to(device)
        self.order, self.position = torch.randperm(len(self.images)), 0
        self.losses = []

    def next_batch(self) -> torch.Tensor:
        if self.position + self.batch_size > len(self.order):
            self.order, self.position = torch.randperm(len(self.images)), 0
        index = self.order[self.position:self.position + self.batch_size]
        self.position += self.batch_size
        return self.images[index].float().mul_(2 / 255).sub_(1)


# ----------------------------------------------------------------------------------------------- ours
class OurLoop:
    """``Trainer.fit``'s own step, ``Trainer.fit_step``, walking the epochs' orders as ``fit`` does."""

    def __init__(self, trainer: Trainer):
        self.trainer, self.epoch, self.index = trainer, 0, 0
        self.order = trainer._epoch_order(0)

    def step(self) -> None:
        t = self.trainer
        if self.index == t.steps_per_epoch:
            self.epoch, self.index = self.epoch + 1, 0
            self.order = t._epoch_order(self.epoch)
        t.fit_step(self.order, self.index)  # train_step, and the history synced every LOG_EVERY steps
        self.index += 1

    def flush(self) -> None:
        """What ``fit`` does at the end of an epoch: the pending statistics to the host (one sync)."""
        self.trainer._flush(None)


# ----------------------------------------------------------------------------------------------- harness
@dataclass
class Result:
    config: str
    device: str
    batch_size: int
    options: str
    ref_ips: float
    ours_ips: float
    ref_mem_mb: float | None
    ours_mem_mb: float | None
    ref_ips_cpu: float  # images per CPU-second of this process: less sensitive to other processes' load
    ours_ips_cpu: float
    plain_ips: float | None = None  # the reference step alone, on resident batches (PlainLoop)

    @property
    def ratio(self) -> float:
        return self.ours_ips / self.ref_ips

    @property
    def plain_ratio(self) -> float | None:
        return self.ours_ips / self.plain_ips if self.plain_ips else None


def build(config: str, device: torch.device, args, sides=("ref", "plain", "ours")) -> dict:
    """The two loops (or only ``sides``) on the same networks with the same initial weights."""
    image_size, width = CONFIGS[config]
    torch.manual_seed(0)
    G, D = build_models("dcgan", image_size, 1, width=width)  # the Trainer's default init ("dcgan") too
    loops = {}
    if "ours" in sides:
        data = ImageData(_subset_uint8(image_size), None, "mnist", "shipped subset")
        trainer = Trainer(out_dir=tempfile.mkdtemp(prefix="bench_"), data=data, resume=False, progress=False,
                          dataset="mnist", image_size=image_size, width=width, batch_size=args.batch_size,
                          device=device.type, precision=args.precision, channels_last=args.channels_last,
                          compile=args.compile, seed=0, collapse_window=10 ** 9)  # no collapse warnings mid-benchmark
        G.load_state_dict(trainer.generator.state_dict())
        D.load_state_dict(trainer.discriminator.state_dict())
        loops["ours"] = OurLoop(trainer)
    if "ref" in sides:
        loops["ref"] = ReferenceLoop(G.to(device), D.to(device), image_size, args.batch_size, device,
                                     args.ref_workers)
    if "plain" in sides:
        import copy

        loops["plain"] = PlainLoop(copy.deepcopy(G).to(device), copy.deepcopy(D).to(device), image_size,
                                   args.batch_size, device)
    return loops


def _subset_uint8(image_size: int) -> torch.Tensor:
    from dcgan_utils.data import resize_uint8

    with np.load(REPO / "data" / "mnist_subset.npz") as arrays:
        return resize_uint8(torch.from_numpy(arrays["train_images"]).unsqueeze(1), image_size)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(loop, steps: int, device: torch.device) -> tuple[float, float]:
    """(wall seconds, this process's CPU seconds) for ``steps`` steps of ``loop``."""
    _sync(device)
    start, cpu_start = time.perf_counter(), time.process_time()
    for _ in range(steps):
        loop.step()
    if isinstance(loop, OurLoop):
        loop.flush()
    _sync(device)
    return time.perf_counter() - start, time.process_time() - cpu_start


def measure(config: str, device: torch.device, args) -> Result:
    loops = build(config, device, args)
    sides = ("ref", "plain", "ours")
    for name in sides:  # warm-up: allocator, oneDNN/cuDNN kernel choice, compile, DataLoader workers
        _timed(loops[name], args.warmup, device)
    # choose steps per round so that one round of the slowest side lasts about --round-seconds
    probe = max(_timed(loops[name], 1, device)[0] for name in sides)
    steps = args.steps or max(2, min(200, round(args.round_seconds / probe)))
    totals = dict.fromkeys(sides, 0.0)
    cpu_totals = dict.fromkeys(sides, 0.0)
    peaks = dict.fromkeys(sides, 0)
    for _ in range(args.rounds):
        for name in sides:
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            wall, cpu = _timed(loops[name], steps, device)
            totals[name] += wall
            cpu_totals[name] += cpu
            if device.type == "cuda":
                peaks[name] = max(peaks[name], torch.cuda.max_memory_allocated(device))
    images = args.rounds * steps * args.batch_size
    if device.type == "cuda":
        mem = {k: v / 2 ** 20 for k, v in peaks.items()}
    elif args.no_memory:
        mem = {"ref": None, "ours": None}
    else:
        mem = {side: _cpu_peak_rss(config, side, args) for side in ("ref", "ours")}
    if args.profile:
        _profile(config, loops["ref"], loops["ours"], device)
    return Result(config, device.type, args.batch_size, _options(args, device), images / totals["ref"],
                  images / totals["ours"], mem["ref"], mem["ours"], images / cpu_totals["ref"],
                  images / cpu_totals["ours"], images / totals["plain"])


def _options(args, device: torch.device | None = None) -> str:
    """Ours' precision and memory format as `train` resolves them here (``--precision auto`` included)."""
    from dcgan_utils.config import TrainConfig, resolve_config

    c, _ = resolve_config(TrainConfig(width=128, precision=args.precision, channels_last=args.channels_last,
                                      compile=args.compile), device or torch.device("cpu"))
    return "+".join([c.precision] + (["channels_last"] if c.channels_last else []) + (["compile"] if c.compile else []))


def _cpu_peak_rss(config: str, side: str, args) -> float:
    """Peak RSS (MiB) of a fresh process running a few steps of one side only."""
    cmd = [sys.executable, __file__, "--device", "cpu", "--configs", config, "--batch-size", str(args.batch_size),
           "--precision", args.precision, "--ref-workers", str(args.ref_workers), "--threads", str(args.threads),
           "--memory-steps", str(args.memory_steps), "--_memory-side", side] + (["--channels-last"] if args.channels_last else []) + (
              ["--compile"] if args.compile else [])
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])["peak_rss_mb"]


def _memory_side(args) -> None:
    loop = build(args.configs[0], torch.device("cpu"), args, sides=(args._memory_side,))[args._memory_side]
    _timed(loop, args.memory_steps, torch.device("cpu"))
    print(json.dumps({"peak_rss_mb": round(_peak_rss_mb(), 1)}))


def _peak_rss_mb() -> float:
    """This process's peak RSS. VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the parent across exec."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (2 ** 20 if sys.platform == "darwin" else 1024)


def _profile(config: str, ref: ReferenceLoop, ours: OurLoop, device: torch.device) -> None:
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    sort = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    for name, loop in (("reference loop", ref), ("dcgan_utils", ours)):
        with profile(activities=activities) as prof:
            _timed(loop, 5, device)
        print(f"\n### torch.profiler, {config} on {device.type}, {name}, 5 steps (sorted by self time)\n")
        print(prof.key_averages().table(sort_by=sort, row_limit=18, max_name_column_width=40))


# ----------------------------------------------------------------------------------------------- whole processes
@dataclass
class ProcessResult:
    config: str
    device: str
    batch_size: int
    options: str
    steps: int
    ref_seconds: float | None  # start to exit of a fresh Python; None if it failed or timed out
    ours_seconds: float | None
    note: str = ""
    plain_seconds: float | None = None  # the plain loop (PlainLoop) as a script

    @property
    def ratio(self) -> float | None:
        return self.ref_seconds / self.ours_seconds if self.ref_seconds and self.ours_seconds else None

    @property
    def plain_ratio(self) -> float | None:
        return self.plain_seconds / self.ours_seconds if self.plain_seconds and self.ours_seconds else None


def _wall(cmd: list[str], timeout: float, env: dict) -> tuple[float | None, str]:
    start = time.perf_counter()
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=REPO, check=False)
    except subprocess.TimeoutExpired:
        return None, f"timed out after {timeout:.0f} s"
    if done.returncode != 0:
        return None, f"exit {done.returncode}: {(done.stderr or done.stdout).strip().splitlines()[-1:]}"
    return time.perf_counter() - start, ""


def measure_processes(config: str, device: torch.device, args) -> ProcessResult:
    """Seconds from start to exit for ``--process-steps`` steps: the reference as a script, then our CLI."""
    image_size, width = CONFIGS[config]
    n = args.process_steps
    env = {**os.environ, **({"OMP_NUM_THREADS": str(args.threads)} if args.threads else {})}
    ref = [sys.executable, str(Path(__file__).resolve()), "--_reference-process", config, "--device", device.type,
           "--batch-size", str(args.batch_size), "--process-steps", str(n), "--ref-workers", str(args.ref_workers)]
    with tempfile.TemporaryDirectory(prefix="bench_proc_") as out:
        ours = [sys.executable, "-m", "dcgan_utils", "train", "--dataset", "mnist", "--source", "subset",
                "--image-size", str(image_size), "--width", str(width), "--batch-size", str(args.batch_size),
                "--max-steps", str(n), "--device", device.type, "--precision", args.precision, "--no-progress",
                "--no-resume", "--seed", "0", "--out", out] + (["--channels-last"] if args.channels_last else []) + (
                   ["--compile"] if args.compile else [])
        ref_s, ref_note = _wall(ref, args.process_timeout, env)
        plain_s, plain_note = _wall([*ref, "--_plain"], args.process_timeout, env)
        ours_s, ours_note = _wall(ours, args.process_timeout, env)
    note = "; ".join(f"{side}: {text}" for side, text in (("ref", ref_note), ("plain", plain_note),
                                                          ("ours", ours_note)) if text)
    return ProcessResult(config, device.type, args.batch_size, _options(args, device), n, ref_s, ours_s, note, plain_s)


def _reference_process(args) -> None:
    """The reference loop as a whole program: build, N steps, save G and D (as pytorch/examples does per epoch)."""
    device = torch.device(args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    image_size, width = CONFIGS[args._reference_process]
    torch.manual_seed(0)
    G, D = build_models("dcgan", image_size, 1, width=width)
    if args._plain:
        loop = PlainLoop(G.to(device), D.to(device), image_size, args.batch_size, device)
    else:
        loop = ReferenceLoop(G.to(device), D.to(device), image_size, args.batch_size, device, args.ref_workers)
    for _ in range(args.process_steps):
        loop.step()
    with tempfile.TemporaryDirectory(prefix="bench_ref_") as out:
        torch.save({"G": G.state_dict(), "D": D.state_dict()}, Path(out) / "checkpoint.pt")


def hardware(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    model = platform.processor() or "CPU"
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines():
            if line.startswith("Model name:"):
                model = line.split(":", 1)[1].strip()
    except OSError:
        pass
    return f"{model}, {torch.get_num_threads()} threads"


def main(argv: list[str] | None = None) -> list[Result | ProcessResult]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="Configurations: " + ", ".join(f"{k} ({s}x{s}, width {w})"
                                                                      for k, (s, w) in CONFIGS.items()))
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                   help="auto = the CPU, then CUDA too when present (default)")
    p.add_argument("--configs", nargs="+", choices=tuple(CONFIGS), default=list(DEFAULT_CONFIGS))
    p.add_argument("--batch-size", type=int, default=64, help="both loops (default: 64)")
    p.add_argument("--precision", choices=("auto", "fp32", "bf16", "fp16"), default="fp32",
                   help="our loop's precision (auto: what `train` picks on this machine)")
    p.add_argument("--channels-last", action="store_true", default=None,
                   help="our loop: channels_last memory format (default: what `train` picks)")
    p.add_argument("--compile", action="store_true", help="our loop: torch.compile G and D")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps per side first (default: 3)")
    p.add_argument("--rounds", type=int, default=3, help="alternating timed rounds per side (default: 3)")
    p.add_argument("--steps", type=int, default=0, help="steps per round (default: about --round-seconds)")
    p.add_argument("--round-seconds", type=float, default=8.0, help="target length of one round (default: 8)")
    p.add_argument("--ref-workers", type=int, default=0,
                   help="reference DataLoader workers (default 0: on 2 cores, workers compete with training)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (default: all cores)")
    p.add_argument("--no-memory", action="store_true", help="skip the CPU peak-RSS subprocesses")
    p.add_argument("--memory-steps", type=int, default=3, help="steps of each CPU peak-RSS process (default: 3)")
    p.add_argument("--profile", action="store_true", help="print torch.profiler tables of both loops")
    p.add_argument("--process-steps", type=int, default=0,
                   help="also time whole processes (start to exit) of N steps each: our CLI vs the reference as a "
                        "script (default 0: off)")
    p.add_argument("--process-timeout", type=float, default=1800, help="seconds before a timed process is stopped")
    p.add_argument("--json", help="also write the results to this JSON file")
    p.add_argument("--_reference-process", dest="_reference_process", choices=tuple(CONFIGS), help=argparse.SUPPRESS)
    p.add_argument("--_plain", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--_memory-side", dest="_memory_side", choices=("ref", "ours"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args._reference_process:
        _reference_process(args)
        return []
    if args._memory_side:
        _memory_side(args)
        return []
    devices = [torch.device("cpu")] if args.device in ("auto", "cpu") else []
    if args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available()):
        devices.append(torch.device("cuda"))
        torch.backends.cudnn.benchmark = True  # the reference loop gets it too: fixed shapes on both sides
    results = []
    print(f"torch {torch.__version__}; " + "; ".join(f"{d.type}: {hardware(d)}" for d in devices))
    print("Alternating rounds in one process: the ratio is fair under outside load; absolute images/s are not.\n")
    header = f"{'config':<13} {'device':<6} {'batch':>5} {'ours options':<22} {'ref img/s':>9} {'plain img/s':>11} " \
             f"{'ours img/s':>10} {'vs ref':>6} {'vs plain':>8} {'ref MiB':>8} {'ours MiB':>8} {'ref img/CPU-s':>13} " \
             f"{'ours img/CPU-s':>14}"
    print(header)
    for device in devices:
        for config in args.configs:
            r = measure(config, device, args)
            results.append(r)
            mem = lambda v: f"{v:8.0f}" if v is not None else f"{'-':>8}"  # noqa: E731
            print(f"{r.config:<13} {r.device:<6} {r.batch_size:>5} {r.options:<22} {r.ref_ips:9.1f} {r.plain_ips:11.1f} "
                  f"{r.ours_ips:10.1f} {r.ratio:5.2f}x {r.plain_ratio:7.2f}x {mem(r.ref_mem_mb)} {mem(r.ours_mem_mb)} "
                  f"{r.ref_ips_cpu:13.1f} {r.ours_ips_cpu:14.1f}", flush=True)
    if args.process_steps:
        print(f"\nWhole processes, {args.process_steps} steps each, start to exit (imports, data, start-up and, for "
              "ours, frames/checkpoints/plots/GIF included; one run per side, so outside load is not evened out):")
        print(f"{'config':<13} {'device':<6} {'batch':>5} {'ours options':<22} {'ref s':>8} {'plain s':>8} {'ours s':>8} "
              f"{'vs ref':>6} {'vs plain':>8}")
        for device in devices:
            for config in args.configs:
                r = measure_processes(config, device, args)
                results.append(r)
                sec = lambda v: f"{v:8.1f}" if v is not None else f"{'-':>8}"  # noqa: E731
                ratio = f"{r.ratio:5.2f}x" if r.ratio else f"{'-':>6}"
                plain_ratio = f"{r.plain_ratio:7.2f}x" if r.plain_ratio else f"{'-':>8}"
                print(f"{r.config:<13} {r.device:<6} {r.batch_size:>5} {r.options:<22} {sec(r.ref_seconds)} "
                      f"{sec(r.plain_seconds)} {sec(r.ours_seconds)} {ratio} {plain_ratio} {r.note}", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps([{**r.__dict__, "kind": "process" if isinstance(r, ProcessResult)
                                                else "step", "ratio": r.ratio, "plain_ratio": r.plain_ratio}
                                               for r in results], indent=1))
    return results


if __name__ == "__main__":
    main()
