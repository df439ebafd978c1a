"""``python -m dcgan_utils train | sample | evaluate``: the course's training loop for scripts, CI and headless machines."""
from __future__ import annotations

import argparse
import sys
from dataclasses import fields
from pathlib import Path

from .data import DATASETS, SOURCES, DatasetError
from .models import ARCHS

EXIT_BAD_INPUT, EXIT_DIVERGED, EXIT_INTERRUPTED = 2, 3, 130


class _Parser(argparse.ArgumentParser):
    """argparse with a one-line error instead of the usage block."""

    def error(self, message: str):
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m dcgan_utils", description="Train DCGANs and sample from them.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    t = sub.add_parser("train", help="train a GAN (resumes if OUT/checkpoint.pt exists)",
                       description="Train a DCGAN. Writes OUT/checkpoint.pt, OUT/history.json, losses.png, "
                                   "d_outputs.png, samples.png, frames/ and training.gif. Re-running the same "
                                   "command resumes; budgets count the whole run, not the part after a resume.")
    data = t.add_argument_group("data")
    data.add_argument("--dataset", choices=DATASETS, default="mnist", help="dataset (default: mnist)")
    data.add_argument("--data-dir", help="folder with the IDX files, or the image folder for --dataset folder")
    data.add_argument("--source", choices=SOURCES, default="auto",
                      help="auto: full data on disk or downloaded, else the shipped subset; full: full data or "
                           "an error; subset: the real 9,000-image subset in data/ (default: auto)")
    data.add_argument("--image-size", type=int, choices=(32, 64), default=32, help="image side (default: 32)")
    data.add_argument("--limit", type=_positive_int, help="use only the first N images")
    net = t.add_argument_group("networks")
    net.add_argument("--arch", choices=ARCHS, default="dcgan",
                     help="dcgan: seed 000; transposed, upsample, upsample_conv: seed 004 (default: dcgan)")
    net.add_argument("--width", type=_positive_int,
                     help="widest layer of G and D (seed: 1024 for dcgan); unset on a CPU = the CPU profile")
    net.add_argument("--g-width", type=_positive_int, help="generator width only")
    net.add_argument("--d-width", type=_positive_int, help="discriminator width only")
    net.add_argument("--bn-eps", type=_positive_float, help="BatchNorm eps (seed 004: 0.8 vs 1e-5)")
    net.add_argument("--no-first-batchnorm", dest="first_batchnorm", action="store_false",
                     help="upsample G without its first BatchNorm (seed 004 ablation)")
    net.add_argument("--dropout", type=float, default=0.25, help="upsample D's Dropout2d (0 = off; default 0.25)")
    net.add_argument("--spectral-norm", action="store_true", help="spectral normalisation on D's weights")
    net.add_argument("--init", choices=("dcgan", "pytorch"),
                     help="dcgan: N(0, 0.02) as in the paper; pytorch: PyTorch's defaults (default: dcgan, "
                          "or pytorch with --seed-settings)")
    net.add_argument("--seed-settings", dest="recipe", action="store_const", const="seed", default="course",
                     help="seed 000's code exactly as it ran (PyTorch's default init), which fails on 64x64 "
                          "MNIST (notebook 09); explicit options still win")
    opt = t.add_argument_group("optimisation")
    opt.add_argument("--batch-size", type=_positive_int, help="batch size (default 128; 64 in the CPU profile)")
    opt.add_argument("--lr", type=_positive_float, default=2e-4, help="learning rate (default: 2e-4)")
    opt.add_argument("--lr-d", type=_positive_float, help="discriminator learning rate (default: --lr)")
    opt.add_argument("--beta1", type=float, default=0.5, help="Adam beta1 (default: 0.5)")
    opt.add_argument("--label-smoothing", type=float, default=0.0, help="one-sided: real target 1-s (e.g. 0.1)")
    opt.add_argument("--instance-noise", type=float, default=0.0, help="std of noise on D's inputs, annealed to 0")
    opt.add_argument("--ema", type=float, default=0.0, help="EMA decay of G's weights for samples (e.g. 0.999)")
    budget = t.add_argument_group("budget (whole run; the first reached stops it; default: 5 epochs)")
    budget.add_argument("--epochs", type=_positive_int, help="epochs")
    budget.add_argument("--max-steps", type=_positive_int, help="training steps")
    budget.add_argument("--max-minutes", type=_positive_float, help="minutes of training, checkpoint included")
    run = t.add_argument_group("run")
    run.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    run.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda", "mps"), help="default: auto")
    run.add_argument("--precision", choices=("fp32", "bf16", "fp16"), default="fp32",
                     help="bf16 autocast (CPU/CUDA) or fp16 with a GradScaler (CUDA); default fp32")
    run.add_argument("--channels-last", action="store_true", help="channels_last memory format")
    run.add_argument("--compile", action="store_true", help="torch.compile G and D")
    run.add_argument("--sample-every", type=int, default=0, help="also save the fixed-latent grid every N steps")
    run.add_argument("--eval-every", type=int, default=0,
                     help="measure FD/KID/class coverage every N epochs into history.json (mnist, fashion-mnist)")
    run.add_argument("--eval-num", type=_positive_int, default=1000, help="samples per measurement (default: 1000)")
    run.add_argument("--out", required=True, help="run folder (created; resumed if it has checkpoint.pt)")
    run.add_argument("--no-resume", dest="resume", action="store_false", help="start over even if OUT has a checkpoint")
    run.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")

    s = sub.add_parser("sample", help="generate images from a checkpoint",
                       description="Generate N images: FILE.npz gets an array 'images' (float32, N x C x H x W, "
                                   "in [-1, 1]); FILE.png gets a grid.")
    s.add_argument("--checkpoint", required=True, help="RUN_DIR/checkpoint.pt (or the run folder)")
    s.add_argument("--num", type=_positive_int, default=64, help="number of images (default: 64)")
    s.add_argument("--seed", type=int, default=0, help="latent seed (default: 0)")
    s.add_argument("--device", default="cpu", choices=("auto", "cpu", "cuda", "mps"), help="default: cpu")
    s.add_argument("--no-ema", dest="ema", action="store_false", help="use G's raw weights even if an EMA was kept")
    s.add_argument("--out", required=True, help="FILE.npz or FILE.png")

    e = sub.add_parser("evaluate", help="measure a checkpoint's samples (FD, KID, class coverage)",
                       description="FD and KID in a small classifier's feature space (not comparable with "
                                   "Inception FID in papers), class coverage and confident share of N samples "
                                   "vs N real test images, with real-vs-real and noise reference rows. Prints "
                                   "JSON (or a table with --table).")
    e.add_argument("--checkpoint", required=True, help="RUN_DIR/checkpoint.pt (or the run folder)")
    e.add_argument("--num", type=_positive_int, default=1000, help="samples and real test images (default: 1000)")
    e.add_argument("--data-dir", help="folder with the IDX files of the real test images")
    e.add_argument("--source", choices=SOURCES, default="auto", help="where the real test images come from")
    e.add_argument("--seed", type=int, default=0, help="latent seed (default: 0)")
    e.add_argument("--device", default="cpu", choices=("auto", "cpu", "cuda", "mps"), help="default: cpu")
    e.add_argument("--no-ema", dest="ema", action="store_false", help="use G's raw weights even if an EMA was kept")
    e.add_argument("--no-references", dest="references", action="store_false",
                   help="skip the real-vs-real and noise rows")
    e.add_argument("--table", action="store_true", help="a readable table instead of JSON")
    return parser


def _train(args: argparse.Namespace) -> int:
    from .train import TrainConfig, Trainer

    names = {f.name for f in fields(TrainConfig)}
    config = TrainConfig(**{k: v for k, v in vars(args).items() if k in names and v is not None})
    trainer = Trainer(config, out_dir=args.out, resume=args.resume)
    trainer.fit()
    h = trainer.history
    print(f"{trainer.status}: step {trainer.step} (epoch {trainer.step / trainer.steps_per_epoch:.2f}), "
          f"{trainer.elapsed / 60:.2f} min; last loss_G {h['loss_g'][-1] if h['loss_g'] else float('nan'):.3f}, "
          f"loss_D {h['loss_d'][-1] if h['loss_d'] else float('nan'):.3f}; outputs in {trainer.out_dir}")
    return {"diverged": EXIT_DIVERGED, "interrupted": EXIT_INTERRUPTED}.get(trainer.status, 0)


def _sample(args: argparse.Namespace) -> int:
    import numpy as np

    from .plots import save_grid
    from .train import generate, load_generator, pick_device

    out = Path(args.out)
    if out.suffix not in (".npz", ".png"):
        raise ValueError(f"--out {out}: use a .npz (array) or .png (grid) file name")
    generator, _ = load_generator(args.checkpoint, device=pick_device(args.device), ema=args.ema)
    images = generate(generator, args.num, seed=args.seed)
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix == ".npz":
        np.savez_compressed(out, images=images.numpy().astype(np.float32))
    else:
        save_grid(images, out, nrow=int(np.ceil(np.sqrt(args.num))))
    print(f"wrote {args.num} images ({tuple(images.shape[1:])}) to {out}")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    import contextlib
    import json

    from .evaluate import evaluate_checkpoint, format_result
    from .train import pick_device

    if args.num < 2:
        raise ValueError("--num must be at least 2 (100 or more for meaningful numbers)")
    with contextlib.redirect_stdout(sys.stderr):  # keep stdout pure JSON: data/classifier messages go to stderr
        result = evaluate_checkpoint(args.checkpoint, num=args.num, seed=args.seed, references=args.references,
                                     source=args.source, data_dir=args.data_dir, ema=args.ema,
                                     device=pick_device(args.device))
    print(format_result(result) if args.table else json.dumps(result, indent=2))
    return 0


COMMANDS = {"train": _train, "sample": _sample, "evaluate": _evaluate}


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except (ValueError, FileNotFoundError, DatasetError) as err:
        print(f"{parser.prog} {args.command}: error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
