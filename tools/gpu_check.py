#!/usr/bin/env python
"""One command for a CUDA machine: how fast the course trains there, and what the seed's network draws.

    python tools/gpu_check.py                          # on a CUDA GPU: everything, under --minutes (default 9.5)
    python tools/gpu_check.py --quick --device cpu --out-doc /tmp/perf.md --img-dir /tmp/img   # a smoke test

Three parts, each timed against its share of ``--minutes`` and each allowed to fail without stopping the others:

1. **Training step vs the reference loop** (``benchmarks/throughput.py``, alternating rounds in one process): the
   seed's networks at their widths (32x32 width 1024, the DCGAN paper's 64x64 width 1024), batch 128, ours in
   fp32, fp32 + channels_last, AMP bf16, AMP bf16 + channels_last (the GPU default), AMP fp16 + channels_last
   (GradScaler) and bf16 + channels_last + torch.compile; the reference loop is always fp32 (as pytorch/examples
   runs it), with ``--ref-workers`` DataLoader workers (2, its default).
2. **Whole processes**: ``python -m dcgan_utils train`` for N steps at the GPU default, start to exit, against the
   reference loop as a script of its own.
3. **MNIST 32x32 at the seed's width** (1024, batch 128, precision auto) on the shipped 9,000-digit subset for
   ``--mnist-epochs`` epochs (or what time is left), scored with ``dcgan_utils.evaluate.evaluate_generator``
   (FD, KID, classes present, confident share, with real and noise anchors), with a grid of samples.

The results replace the section between the ``gpu_check`` marker comments of ``--out-doc``
(docs/performance.md; appended if the markers are missing), rewritten after every part, so a failure or an
interruption keeps what was measured so far; the sample grid and loss plot go to ``--img-dir`` (docs/img).
No input, no downloads (the data is the repository's data/ folder). Without a CUDA GPU it refuses in one line
(exit 2), unless ``--quick --device cpu``: tiny networks and a few steps of everything, to test the tool itself.
Exit status: 0, or 1 if a part failed (its error is in the section and on stderr), 130 on Ctrl-C.
"""
from __future__ import annotations

import argparse
import contextlib
import datetime
import io
import json
import os
import platform
import sys
import time
import traceback
from pathlib import Path
from types import SimpleNamespace

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "benchmarks")]

BEGIN = "<!-- gpu_check:begin"
END = "<!-- gpu_check:end -->"
BEGIN_LINE = BEGIN + " (written by tools/gpu_check.py: everything up to the end marker is replaced) -->"

# name: (label, precision, channels_last, compile) of ours; the reference loop is fp32 in every row
VARIANTS = {
    "fp32": ("fp32", "fp32", False, False),
    "fp32-cl": ("fp32 + channels_last", "fp32", True, False),
    "bf16": ("AMP bf16", "bf16", False, False),
    "bf16-cl": ("AMP bf16 + channels_last (GPU default)", "bf16", True, False),
    "fp16-cl": ("AMP fp16 + channels_last (GradScaler)", "fp16", True, False),
    "compile": ("AMP bf16 + torch.compile (the default with --compile: no channels_last)", "bf16", False, True),
    "compile-cl": ("AMP bf16 + channels_last + torch.compile", "bf16", True, True),
}
QUICK_VARIANTS = ("fp32", "bf16-cl", "fp16-cl")  # fp16's refusal on a CPU; no torch.compile (minutes of C++ there)
NETWORKS = {"seed32": "32x32, width 1024 (seed 000)", "paper64": "64x64, width 1024 (DCGAN paper)",
            "tiny32": "32x32, width 16 (--quick)", "tiny64": "64x64, width 16 (--quick)"}


def log(message: str) -> None:
    print(f"[gpu_check {time.strftime('%H:%M:%S')}] {message}", flush=True)


class Report:
    """What was measured so far, and the docs section made from it (rewritten after every part)."""

    def __init__(self, args, device):
        self.args, self.device = args, device
        self.started = time.monotonic()
        self.steps: list[dict] = []  # throughput rows (measured or skipped)
        self.processes: list[dict] = []
        self.mnist: dict | None = None
        self.failures: list[str] = []
        self.info = machine_info(device)

    def minutes(self) -> float:
        return (time.monotonic() - self.started) / 60

    def markdown(self, final: bool) -> str:
        a, i = self.args, self.info
        lines = [BEGIN_LINE, "", "## On a GPU: `tools/gpu_check.py`", ""]
        if a.quick:
            lines += [f"**`--quick` on {self.device}: tiny networks and a few steps, a test of the tool, not a "
                      "measurement.**", ""]
        state = f"in {self.minutes():.1f} minutes" if final else f"**unfinished** ({self.minutes():.1f} minutes so far)"
        lines += [f"Measured by `python tools/gpu_check.py{' ' + ' '.join(a.argv) if a.argv else ''}` on "
                  f"**{i['device_name']}** ({i['versions']}) on {i['date']}, {state}, under a budget of "
                  f"{a.minutes:g} minutes. Host: {i['host']}.", ""]
        lines += self._steps_md() + self._processes_md() + self._mnist_md()
        if self.failures:
            lines += ["### What failed", ""] + [f"- {f}" for f in self.failures] + [""]
        return "\n".join(lines + [END]) + "\n"

    def _steps_md(self) -> list[str]:
        if not self.steps:
            return []
        a = self.args
        out = ["### A training step against the reference loop", "",
               f"Batch {a.batch_size}; images per second of training steps, both loops alternated in one process "
               f"after a warm-up ({a.rounds} rounds each). \"ours\" is `Trainer.fit_step`, the step `Trainer.fit` "
               "runs (resident uint8 data, one G forward, no D weight gradients in G's step, a host sync every 25 "
               "steps); the reference is pytorch/examples' DCGAN loop (PIL images, transforms, a DataLoader with "
               f"{a.ref_workers} workers, `.item()` every step), always in fp32. Memory: peak "
               "`torch.cuda.max_memory_allocated` of each loop.", "",
               "| network | ours | ref img/s | ours img/s | **ours / ref** | ref MiB | ours MiB |",
               "|---|---|---|---|---|---|---|"]
        for r in self.steps:
            if "ours_ips" in r:
                mib = lambda v: f"{v:,.0f}" if v is not None else "-"  # noqa: E731
                out.append(f"| {NETWORKS[r['config']]} | {r['label']} | {r['ref_ips']:,.0f} | {r['ours_ips']:,.0f} | "
                           f"**{r['ratio']:.2f}x** | {mib(r['ref_mem_mb'])} | {mib(r['ours_mem_mb'])} |")
            else:
                out.append(f"| {NETWORKS[r['config']]} | {r['label']} | {r['note']} | | | | |")
        return out + [""]

    def _processes_md(self) -> list[str]:
        if not self.processes:
            return []
        out = ["### Whole processes", "",
               f"Seconds from start to exit of a fresh Python for {self.args.process_steps} training steps: "
               "`python -m dcgan_utils train` at the GPU default (AMP bf16, channels_last) against the reference "
               "loop as a script (fp32), one run each. Both include importing torch, preparing the data, CUDA "
               "start-up and saving G and D; ours also writes its frames, checkpoint, loss plots, sample grid and "
               "GIF.", "",
               "| network | ref s | ours s | **ref / ours** | note |", "|---|---|---|---|---|"]
        for r in self.processes:
            sec = lambda v: f"{v:.1f}" if v is not None else "-"  # noqa: E731
            ratio = f"**{r['ratio']:.2f}x**" if r.get("ratio") else "-"
            out.append(f"| {NETWORKS[r['config']]} | {sec(r.get('ref_seconds'))} | {sec(r.get('ours_seconds'))} | "
                       f"{ratio} | {r.get('note', '')} |")
        return out + [""]

    def _mnist_md(self) -> list[str]:
        m = self.mnist
        if not m:
            return []
        out = ["### MNIST 32x32 at the seed's width", "",
               f"`Trainer(dataset=\"mnist\", source=\"subset\", image_size=32, {m['call']})` with "
               f"everything else at its GPU default: width {m['width']}, batch {m['batch_size']}, precision "
               f"{m['precision']}, channels_last {m['channels_last']}, on the shipped 9,000-digit subset "
               f"({m['steps_per_epoch']} steps per epoch). It trained **{m['steps']:,} steps ({m['epochs']:.1f} epochs) "
               f"in {m['train_seconds']:.0f} s** ({m['status']}; {m['images_per_second']:,.0f} images/s over the "
               "whole run, frames and checkpoints included).", ""]
        e = m.get("eval")
        if e:
            ref = e.get("reference", {})
            out += [f"Scored with `dcgan_utils.evaluate.evaluate_generator` on {e['num']:,} samples against "
                    f"{e['real_set']} (classifier features: lower FD is better, not comparable with Inception FID):",
                    "", "| | FD | KID | classes present | confident |", "|---|---|---|---|---|"]
            for name, r in (("this run's generator", e), ("real training digits (anchor)", ref.get("real")),
                            ("uniform noise (anchor)", ref.get("noise"))):
                if r:
                    out.append(f"| {name} | {r['fd']:.2f} | {r['kid']:.4f} | {r['classes_present']} | "
                               f"{r['confident']:.0%} |")
            out.append("")
        for key, alt in (("samples_png", "64 samples of the seed-width generator"), ("losses_png", "losses")):
            if m.get(key):
                out += [f"![{alt}]({m[key]})", ""]
        return out


def machine_info(device) -> dict:
    import torch

    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        props = torch.cuda.get_device_properties(device)
        name += f", {props.total_memory / 2 ** 30:.0f} GiB"
        versions = (f"torch {torch.__version__}, CUDA {torch.version.cuda}, cuDNN "
                    f"{torch.backends.cudnn.version()}, {torch.cuda.device_count()} GPU(s) visible")
    else:
        name = "CPU"
        versions = f"torch {torch.__version__}, no CUDA"
    return {"device_name": name, "versions": versions, "date": datetime.date.today().isoformat(),
            "host": f"{platform.machine()}, {os.cpu_count()} CPU cores, Python {platform.python_version()}"}


def write_doc(report: Report, final: bool = False) -> None:
    path = report.args.out_doc
    text = path.read_text() if path.is_file() else ""
    section = report.markdown(final)
    start, end = text.find(BEGIN), text.find(END)
    if start >= 0 and end > start:
        rest = text[end + len(END):].lstrip("\n")
        text = text[:start] + section + ("\n" + rest if rest else "")
    else:
        text = text.rstrip("\n") + ("\n\n" if text else "") + section
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.gpu_check.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
    if report.args.json:
        report.args.json.write_text(json.dumps({"info": report.info, "steps": report.steps,
                                                "processes": report.processes, "mnist": report.mnist,
                                                "failures": report.failures}, indent=1, default=str))


def _fail(report: Report, what: str, err: BaseException) -> None:
    message = f"{what}: {type(err).__name__}: {str(err).strip().splitlines()[0][:300] if str(err).strip() else ''}"
    report.failures.append(message)
    log("FAILED " + message)
    traceback.print_exc(file=sys.stderr)
    with contextlib.suppress(Exception):
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()


# ----------------------------------------------------------------------------------------------- the parts
def part_steps(report: Report, deadline: float) -> None:
    import throughput

    a, dev = report.args, report.device
    variants = [VARIANTS[name] for name in a.variants]
    plan = [(cfg, v) for v in variants if not v[3] for cfg in a.configs] + \
           [(cfg, v) for v in variants if v[3] for cfg in a.configs]  # the compiled runs last: the slowest
    for cfg, (label, precision, channels_last, compiled) in plan:
        row = {"config": cfg, "label": label}
        if precision == "fp16" and dev.type != "cuda":
            report.steps.append({**row, "note": "skipped: fp16 with a GradScaler needs CUDA"})
            continue
        left, needs = deadline - time.monotonic(), (100 if compiled else 15) * (0.1 if a.quick else 1)
        if left < needs:
            report.steps.append({**row, "note": f"skipped: out of time ({left:.0f} s left of this part's share of "
                                               "--minutes)"})
            log(f"steps: {cfg} {label}: skipped, out of time")
            continue
        argv = ["--device", dev.type, "--configs", cfg, "--batch-size", str(a.batch_size), "--precision", precision,
                "--warmup", str(a.warmup), "--rounds", str(a.rounds), "--round-seconds", str(a.round_seconds),
                "--ref-workers", str(a.ref_workers), "--no-memory"] + (["--channels-last"] if channels_last else []) + (
                   ["--compile"] if compiled else []) + (["--steps", "2"] if a.quick else [])
        log(f"steps: {NETWORKS[cfg]}, ours {label} vs the fp32 reference ...")
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                result = throughput.main(argv)[0]
        except Exception as err:  # noqa: BLE001 (a part may fail; the others still run)
            _fail(report, f"steps {cfg} {label}", err)
            report.steps.append({**row, "note": f"failed: {type(err).__name__}"})
            continue
        report.steps.append({**row, **result.__dict__, "ratio": result.ratio})
        log(f"steps: {cfg} {label}: ref {result.ref_ips:,.0f} img/s, ours {result.ours_ips:,.0f} img/s, "
            f"{result.ratio:.2f}x")
        write_doc(report)


def part_processes(report: Report, deadline: float) -> None:
    import throughput

    from dcgan_utils.config import resolve_precision

    a, dev = report.args, report.device
    precision = resolve_precision("auto", dev)  # the GPU default: bf16 (fp16 on GPUs without bf16)
    for cfg in a.configs:
        left = deadline - time.monotonic()
        if left < (1 if a.quick else 30):
            report.processes.append({"config": cfg, "note": f"skipped: out of time ({left:.0f} s left)"})
            continue
        args = SimpleNamespace(process_steps=a.process_steps, threads=0, batch_size=a.batch_size,
                               ref_workers=a.ref_workers, precision=precision, channels_last=precision != "fp32",
                               compile=False, process_timeout=60.0 if a.quick else max(10.0, left / 2))
        log(f"processes: {NETWORKS[cfg]}, {a.process_steps} steps, our CLI and the reference script ...")
        try:
            r = throughput.measure_processes(cfg, dev, args)
        except Exception as err:  # noqa: BLE001
            _fail(report, f"processes {cfg}", err)
            continue
        report.processes.append({**r.__dict__, "ratio": r.ratio})
        sec = lambda v: f"{v:.1f} s" if v is not None else "-"  # noqa: E731
        log(f"processes: {cfg}: ref {sec(r.ref_seconds)}, ours {sec(r.ours_seconds)} {r.note}")
        write_doc(report)


def part_mnist(report: Report, deadline: float) -> None:
    import tempfile

    from dcgan_utils import Trainer, evaluate_generator, plot_losses, save_grid

    a, dev = report.args, report.device
    minutes = (deadline - time.monotonic() - (10 if a.quick else 60)) / 60  # keep a minute to score and draw
    if minutes <= 0.05:
        report.failures.append("mnist: skipped, no time left under --minutes")
        return
    size = dict(width=16, batch_size=32, max_steps=10) if a.quick else dict(epochs=a.mnist_epochs)
    run_dir = Path(tempfile.mkdtemp(prefix="gpu_check_mnist_"))
    log(f"mnist: 32x32 at the seed's width for {a.mnist_epochs} epochs or {minutes:.1f} minutes, in {run_dir} ...")
    trainer = Trainer(out_dir=run_dir, dataset="mnist", source="subset", image_size=32, device=dev.type, seed=0,
                      max_minutes=minutes, resume=False, **size)
    c = trainer.config
    from dcgan_utils.models import SEED_WIDTHS

    width = c.width if c.width else f"{SEED_WIDTHS[c.arch][0]} (the seed's)"
    report.mnist = {"call": ", ".join(f"{k}={v}" for k, v in size.items() if k != "sample_every"), "width": width,
                    "batch_size": c.batch_size, "precision": c.precision, "channels_last": c.channels_last,
                    "steps_per_epoch": trainer.steps_per_epoch}
    trainer.fit()
    report.mnist.update(steps=trainer.step, epochs=trainer.step / trainer.steps_per_epoch, status=trainer.status,
                        train_seconds=trainer.elapsed,
                        images_per_second=trainer.step * c.batch_size / max(trainer.elapsed, 1e-9),
                        run_dir=str(run_dir))
    log(f"mnist: {trainer.status} after {trainer.step} steps in {trainer.elapsed:.0f} s; drawing and scoring ...")
    a.img_dir.mkdir(parents=True, exist_ok=True)
    stem = "gpu_check_quick_mnist32" if a.quick else "gpu_mnist32"
    samples, losses = a.img_dir / f"{stem}_samples.png", a.img_dir / f"{stem}_losses.png"
    save_grid(trainer.sample(64, seed=0), samples, nrow=8)
    plot_losses(trainer.history, title=f"MNIST 32x32, width {c.width}, {trainer.step} steps", save_to=losses,
                show=False)
    rel = lambda p: os.path.relpath(p, a.out_doc.parent)  # noqa: E731
    report.mnist.update(samples_png=rel(samples), losses_png=rel(losses))
    write_doc(report)
    result = evaluate_generator(trainer.sampling_generator(), "mnist", num=a.eval_num, seed=0, references=True,
                                source="subset", device=dev)
    report.mnist["eval"] = result
    log(f"mnist: FD {result['fd']:.2f}, {result['classes_present']} classes, {result['confident']:.0%} confident "
        f"(real digits: FD {result['reference']['real']['fd']:.2f})")


# ----------------------------------------------------------------------------------------------- main
def parse(argv: list[str] | None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--device", choices=("cuda", "cpu"), default="cuda", help="cuda (default); cpu only with --quick")
    p.add_argument("--quick", action="store_true", help="tiny networks, a few steps of everything (a test)")
    p.add_argument("--minutes", type=float, default=9.5, help="total budget in minutes (default 9.5)")
    p.add_argument("--out-doc", type=Path, default=REPO / "docs" / "performance.md",
                   help="markdown file whose gpu_check section is replaced (default docs/performance.md)")
    p.add_argument("--img-dir", type=Path, default=REPO / "docs" / "img", help="where the PNGs go (default docs/img)")
    p.add_argument("--json", type=Path, help="also write every number to this JSON file")
    p.add_argument("--skip", nargs="+", default=[], choices=("steps", "processes", "mnist"), help="parts to leave out")
    p.add_argument("--variants", nargs="+", choices=tuple(VARIANTS), default=None,
                   help=f"our step's variants in part 1 (default: all; --quick: {' '.join(QUICK_VARIANTS)})")
    p.add_argument("--batch-size", type=int, default=None, help="both loops (default 128; --quick: 16)")
    p.add_argument("--rounds", type=int, default=None, help="alternating timed rounds per side (default 2)")
    p.add_argument("--round-seconds", type=float, default=1.5, help="length of one round (default 1.5)")
    p.add_argument("--warmup", type=int, default=None, help="untimed steps per side first (default 10)")
    p.add_argument("--ref-workers", type=int, default=None, help="reference DataLoader workers (default 2)")
    p.add_argument("--process-steps", type=int, default=None, help="steps of each timed process (default 300)")
    p.add_argument("--mnist-epochs", type=int, default=30, help="epochs of the MNIST run (default 30; 70 steps each)")
    p.add_argument("--eval-num", type=int, default=None, help="samples scored (default 1000)")
    args = p.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    q = args.quick
    defaults = dict(batch_size=(16, 128), rounds=(1, 2), warmup=(1, 10), ref_workers=(0, 2),
                    process_steps=(1, 300), eval_num=(100, 1000))
    for name, (quick, full) in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, quick if q else full)
    args.configs = ["tiny32"] if q else ["seed32", "paper64"]
    if args.variants is None:
        args.variants = list(QUICK_VARIANTS if q else VARIANTS)
    return p, args


def main(argv: list[str] | None = None) -> int:
    parser, args = parse(argv)
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        print(f"gpu_check: no CUDA GPU visible to PyTorch {torch.__version__} (CUDA build "
              f"{torch.version.cuda or 'none'}): run it on a CUDA machine, or --quick --device cpu to test the tool",
              file=sys.stderr)
        return 2
    if args.device == "cpu" and not args.quick:
        print("gpu_check: --device cpu only with --quick (the seed's networks take minutes per step on a CPU)",
              file=sys.stderr)
        return 2
    device = torch.device(args.device)
    report = Report(args, device)
    budget = args.minutes * 60
    log(f"{report.info['device_name']} ({report.info['versions']}); budget {args.minutes:g} min; writing "
        f"{args.out_doc} and {args.img_dir}")
    try:
        write_doc(report)
        # each part's share of the time left when it starts (what one leaves unused goes to the next)
        parts = [("steps", part_steps, 0.6), ("processes", part_processes, 0.35), ("mnist", part_mnist, 1.0)]
        for name, part, share in parts:
            if name in args.skip:
                continue
            deadline = time.monotonic() + (report.started + budget - time.monotonic()) * share
            try:
                part(report, deadline)
            except Exception as err:  # noqa: BLE001
                _fail(report, name, err)
            write_doc(report)
    except KeyboardInterrupt:
        report.failures.append("interrupted (Ctrl-C)")
        write_doc(report)
        log("interrupted: what was measured so far is in " + str(args.out_doc))
        return 130
    write_doc(report, final=True)
    log(f"done in {report.minutes():.1f} min: {args.out_doc}" + (f" ({len(report.failures)} failures)"
                                                                  if report.failures else ""))
    return 1 if report.failures else 0


if __name__ == "__main__":
    sys.exit(main())
