"""``python -m dcgan_utils train | sample | evaluate``: the course's training loop for scripts, CI and headless machines."""
from __future__ import annotations

import argparse
import contextlib
import errno
import math
import os
import signal
import sys
import threading
from dataclasses import fields
from pathlib import Path

from .checkpoint import CHECKPOINT_NAME, DiskFullError, RunFolderError, first_line
from .config import DEVICES, TrainConfig, pick_device
from .data import SOURCES, DatasetError
from .progress import progress_mode
from .runfolder import WriteError

# Exit status of `train`: 0 finished; 2 bad input or an error (one line on stderr, no traceback); 3 diverged;
# 128 + the signal's number when stopped by a signal, after finishing the step and saving: 130 Ctrl-C (SIGINT),
# 143 SIGTERM (kill, timeout, Docker, SLURM). Re-running the same command resumes.
EXIT_BAD_INPUT, EXIT_DIVERGED, EXIT_INTERRUPTED, EXIT_TERMINATED = 2, 3, 130, 143
EXIT_STATUS_HELP = ("exit status: 0 finished; 2 bad input or an error (one line); 3 diverged; 130 stopped by Ctrl-C "
                    "(SIGINT), 143 by SIGTERM (kill, timeout, Docker, SLURM): both finish the current step and save "
                    "a checkpoint first, and running the same command again resumes")
DEBUG_HELP = "on an error, print Python's traceback too (for a bug report); or set DCGAN_DEBUG=1"
# A .png grid is drawn whole in memory (3 bytes a pixel, and the PNG encoder's copy): at most this many pixels
MAX_GRID_PIXELS = 8192 * 8192


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


def _user_path(text: str) -> str:
    """A path argument with ``~`` expanded here, once (the library then sees a plain path)."""
    return os.path.expanduser(text)


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text}")
    return value


# TrainConfig fields that must be positive (checked by argparse for a one-line error naming the flag)
_POSITIVE = {"epochs", "max_steps", "limit", "width", "g_width", "d_width", "batch_size", "eval_num", "latent_dim",
             "checkpoint_every", "collapse_window", "lr", "lr_d", "bn_eps", "max_minutes"}
_GROUPS = {"dataset": "data", "arch": "networks", "batch_size": "optimisation",
           "epochs": "budget (whole run; the first reached stops it; none given: 5 epochs)", "seed": "run"}


def _add_config_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per TrainConfig field, with its help, choices and default from the dataclass (defaults live
    there only). A flag not given parses as None, so 'not typed' never means 'typed the default'."""
    group = parser
    defaults = TrainConfig()
    for f in fields(TrainConfig):
        if f.name in _GROUPS:
            group = parser.add_argument_group(_GROUPS[f.name])
        default = getattr(defaults, f.name)
        flag, text = "--" + f.name.replace("_", "-"), f.metadata.get("help", "")
        if f.type in ("bool", "bool | None") or isinstance(default, bool):
            if default is None:  # unset means "decided for this machine": both ways can be typed
                group.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=None, help=text)
            elif default is True:
                group.add_argument("--no-" + f.name.replace("_", "-"), dest=f.name, action="store_const",
                                   const=False, help=f"turn off: {text}")
            else:
                group.add_argument(flag, dest=f.name, action="store_const", const=True, help=text)
            continue
        kind = {"int": int, "float": float}.get(f.type.split(" |")[0], str)
        if f.name in _POSITIVE:
            kind = _positive_int if kind is int else _positive_float if kind is float else kind
        elif kind is float:
            kind = _finite_float
        shown = "" if default is None else f" (default: {default})"
        group.add_argument(flag, dest=f.name, type=kind, choices=f.metadata.get("choices"), help=text + shown)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m dcgan_utils", description="Train DCGANs and sample from them.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    t = sub.add_parser("train", help="train a GAN (resumes if OUT/checkpoint.pt exists)",
                       description="Train a DCGAN. Writes OUT/checkpoint.pt, OUT/history.json, losses.png, "
                                   "d_outputs.png, samples.png, frames/ and training.gif. Re-running the same "
                                   "command resumes; budgets count the whole run, not the part after a resume. "
                                   "A flag not given keeps the run's (or the default) value.",
                       epilog=EXIT_STATUS_HELP)
    _add_config_flags(t)
    t.add_argument("--seed-settings", dest="recipe", action="store_const", const="seed",
                   help="seed 000's code exactly as it ran (--recipe seed): PyTorch's default init, which fails "
                        "on 64x64 MNIST (notebook 09); explicit options still win")
    t.add_argument("--out", required=True, type=_user_path,
                   help="run folder (created; resumed if it has checkpoint.pt; one trainer at a time)")
    t.add_argument("--no-resume", dest="resume", action="store_false",
                   help="start over even if OUT has a checkpoint: the old run's files are moved aside to "
                        "OUT.old-YYYYmmdd-HHMMSS/, never deleted (only a run folder: never one holding other files, "
                        "the data folder or the current folder)")
    t.add_argument("--debug", action="store_true", help=DEBUG_HELP)

    s = sub.add_parser("sample", help="generate images from a checkpoint",
                       description="Generate N images: FILE.npz gets an array 'images' (float32, N x C x H x W, "
                                   "in [-1, 1]); FILE.png gets a grid.")
    s.add_argument("--checkpoint", required=True, type=_user_path, help="RUN_DIR/checkpoint.pt (or the run folder)")
    s.add_argument("--num", type=_positive_int, default=64,
                   help="number of images (default: 64); a .npz is written in batches, so any number that fits on "
                        "the disk works")
    s.add_argument("--seed", type=int, default=0, help="latent seed (default: 0)")
    s.add_argument("--label", type=int, default=None,
                   help="a class-conditional run (--conditional, --recipe modern) draws this class only, e.g. the "
                        "digit 3 (default: classes as often as the training data has them)")
    s.add_argument("--device", default="cpu", choices=DEVICES, help="default: cpu")
    s.add_argument("--no-ema", dest="ema", action="store_false", help="use G's raw weights even if an EMA was kept")
    s.add_argument("--out", required=True, type=_user_path,
                   help="FILE.npz or FILE.png (replaced if it exists; a link there is replaced, its target kept)")
    s.add_argument("--debug", action="store_true", help=DEBUG_HELP)

    e = sub.add_parser("evaluate", help="measure a checkpoint's samples (FD, KID, class coverage)",
                       description="FD and KID in a small classifier's feature space (not comparable with "
                                   "Inception FID in papers), class coverage and confident share of N samples "
                                   "vs N real test images, with real-vs-real and noise reference rows. Prints "
                                   "JSON (or a table with --table).")
    e.add_argument("--checkpoint", required=True, type=_user_path, help="RUN_DIR/checkpoint.pt (or the run folder)")
    e.add_argument("--num", type=_positive_int, default=1000,
                   help="samples and real test images (default: 1000; capped, with a note, at the real test "
                        "images available: 1,000 in the shipped subset, 10,000 in the full test set)")
    e.add_argument("--data-dir", type=_user_path, help="folder with the IDX files of the real test images")
    e.add_argument("--source", choices=SOURCES, default="auto", help="where the real test images come from")
    e.add_argument("--seed", type=int, default=0, help="latent seed (default: 0)")
    e.add_argument("--device", default="cpu", choices=DEVICES, help="default: cpu")
    e.add_argument("--no-ema", dest="ema", action="store_false", help="use G's raw weights even if an EMA was kept")
    e.add_argument("--no-references", dest="references", action="store_false",
                   help="skip the real-vs-real and noise rows")
    e.add_argument("--table", action="store_true", help="a readable table instead of JSON")
    e.add_argument("--debug", action="store_true", help=DEBUG_HELP)
    return parser


def _train(args: argparse.Namespace) -> int:
    from .train import Trainer

    names = {f.name for f in fields(TrainConfig)}
    typed = {k: v for k, v in vars(args).items() if k in names and v is not None}
    if "data_dir" in typed:  # saved as typed: absolute, so that the run resumes from any folder
        typed["data_dir"] = os.path.abspath(os.path.expanduser(typed["data_dir"]))
    trainer = Trainer(out_dir=args.out, resume=args.resume, **typed)
    trainer.fit()
    h = trainer.history
    print(f"{trainer.status}: step {trainer.step} (epoch {trainer.epochs_trained:.2f}), "
          f"{trainer.elapsed / 60:.2f} min; last loss_G {h['loss_g'][-1] if h['loss_g'] else float('nan'):.3f}, "
          f"loss_D {h['loss_d'][-1] if h['loss_d'] else float('nan'):.3f}; outputs in {trainer.out_dir}")
    if trainer.status == "interrupted":
        return EXIT_TERMINATED if trainer.stop_signal == signal.SIGTERM else EXIT_INTERRUPTED
    return EXIT_DIVERGED if trainer.status == "diverged" else 0


def _file_folder(out: Path) -> None:
    """Create the folder of an output file, with a one-line error if a file stands where a folder must be, the
    name is too long for the file system, or the path is a folder."""
    try:
        for parent in (out.parent, *out.parent.parents):
            if parent.is_symlink() and not parent.exists():
                raise ValueError(f"--out {out}: {parent} is a link to {os.readlink(parent)}, which does not exist")
            if parent.exists():
                if not parent.is_dir():
                    raise ValueError(f"--out {out}: {parent} is a file, not a folder")
                break
        out.parent.mkdir(parents=True, exist_ok=True)
        longest = os.pathconf(out.parent, "PC_NAME_MAX") if hasattr(os, "pathconf") else 255
        if len(os.fsencode(out.name)) > longest:
            raise ValueError(f"--out {out.name[:40]}...: the file name is too long ({len(os.fsencode(out.name))} "
                             f"bytes; the file system allows {longest}): choose a shorter name")
        if out.is_dir():
            raise ValueError(f"--out {out} is a folder: name a .npz or .png file")
    except OSError as err:
        raise ValueError(f"--out {out}: cannot use this path ({err.strerror or err}); choose another") from err


def _sample(args: argparse.Namespace) -> int:
    import shutil

    import numpy as np
    import torch

    from .checkpoint import atomic_write, load_generator
    from .plots import grid_size, save_grid_batches
    from .sampling import generate_batches, generate_from, num_classes

    out = Path(args.out)
    if out.suffix not in (".npz", ".png"):
        raise ValueError(f"--out {out}: use a .npz (array) or .png (grid) file name")
    _file_folder(out)
    generator, _ = load_generator(args.checkpoint, device=pick_device(args.device), ema=args.ema)
    classes = num_classes(generator)
    if args.label is not None and not 0 <= args.label < max(classes, 1):
        raise ValueError(f"--label {args.label}: " + (f"this run draws classes 0..{classes - 1}" if classes else
                         "this run is not class-conditional (train with --conditional or --recipe modern)"))
    probe = torch.zeros(1, generator.latent_dim)
    shape = tuple(generate_from(generator, probe, 0 if classes else None).shape[1:])  # (C, H, W)
    num = args.num
    if out.suffix == ".png":  # one grid image, drawn batch by batch into 3 bytes a pixel
        nrow = math.ceil(math.sqrt(num))
        height, width = grid_size(num, shape[1], shape[2], nrow)
        if width * height > MAX_GRID_PIXELS:
            fits = int((math.isqrt(MAX_GRID_PIXELS) - 2) // (shape[2] + 2)) ** 2
            raise ValueError(f"--num {num:,}: a grid of that many {shape[1]}x{shape[2]} images would be {width:,}x"
                             f"{height:,} pixels, too large to draw (a .png grid holds at most {MAX_GRID_PIXELS:,} "
                             f"pixels, drawn in about {MAX_GRID_PIXELS * 6 / 1e9:.1f} GB of memory); use at most "
                             f"{fits:,} images for a .png, or a .npz file (written in batches) for more")
        save_grid_batches(generate_batches(generator, num, seed=args.seed, labels=args.label), num, out, nrow=nrow)
    else:  # streamed into the .npz batch by batch: any number of images in bounded memory
        size = num * math.prod(shape) * 4
        free = shutil.disk_usage(out.parent).free
        if size > free:
            raise ValueError(f"--num {num:,}: the .npz would hold {size / 1e9:,.1f} GB of float32 images "
                             f"(compression saves little on them) and {out.parent} has {free / 1e9:,.1f} GB free; "
                             "ask for fewer images or free some space")

        def write(f):
            import zipfile

            with zipfile.ZipFile(f, "w", compression=zipfile.ZIP_DEFLATED, allowZip64=True) as archive, \
                    archive.open("images.npy", "w", force_zip64=True) as member:
                np.lib.format.write_array_header_2_0(
                    member, {"descr": np.lib.format.dtype_to_descr(np.dtype(np.float32)), "fortran_order": False,
                             "shape": (num, *shape)})
                for batch in generate_batches(generator, num, seed=args.seed, labels=args.label):
                    member.write(batch.numpy().astype(np.float32, copy=False).tobytes())

        atomic_write(out, write)
    print(f"wrote {num} images ({shape}) to {out}")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    import contextlib
    import json

    from .evaluate import evaluate_checkpoint, format_result

    if args.num < 2:
        raise ValueError("--num must be at least 2 (100 or more for meaningful numbers)")
    with contextlib.redirect_stdout(sys.stderr):  # keep stdout pure JSON: data/classifier messages go to stderr
        result = evaluate_checkpoint(args.checkpoint, num=args.num, seed=args.seed, references=args.references,
                                     source=args.source, data_dir=args.data_dir, ema=args.ema,
                                     device=pick_device(args.device))
    print(format_result(result) if args.table else json.dumps(result, indent=2))
    return 0


def _train_or_torchrun(args: argparse.Namespace) -> int:
    """``train``; under ``torchrun --nproc_per_node N`` one of N processes training together (DistributedDataParallel:
    see dcgan_utils/distributed.py and the README's "More than one GPU")."""
    from .distributed import torchrun_session

    with torchrun_session(args.device or "auto"):
        return _train(args)


COMMANDS = {"train": _train_or_torchrun, "sample": _sample, "evaluate": _evaluate}
# Errors whose message was written for the user (what went wrong and what to do): shown as they are
_EXPLAINED = (ValueError, FileNotFoundError, DatasetError, RunFolderError, WriteError)


class Stopped(BaseException):
    """SIGTERM (or Ctrl-C) outside training: raised where the program is, so that every ``finally`` and
    ``atomic_write`` cleans up (a temporary file is removed) before the process exits."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


@contextlib.contextmanager
def _stop_cleanly():
    """Turn SIGINT and SIGTERM into :class:`Stopped` for the command's duration (``fit()`` installs its own
    handlers while it trains, which finish the step and save); a second signal while stopping is ignored."""
    def stop(signum, frame):
        for name in ("SIGINT", "SIGTERM"):
            signal.signal(getattr(signal, name), signal.SIG_IGN)
        raise Stopped(signum)

    previous = {}
    if threading.current_thread() is threading.main_thread():  # Python runs handlers in the main thread only
        for name in ("SIGINT", "SIGTERM"):
            if hasattr(signal, name):
                previous[name] = signal.signal(getattr(signal, name), stop)
    try:
        yield
    finally:
        for name, handler in previous.items():
            signal.signal(getattr(signal, name), handler if handler is not None else signal.SIG_DFL)


def _saved(args: argparse.Namespace) -> str:
    """What the command leaves behind, for the end of an error line ("; ..."): the run's last checkpoint for
    ``train`` (whatever failed, it is whole), the output file for ``sample``; "" if that cannot be told."""
    try:
        if args.command == "sample":
            out = Path(args.out)
            return f"; {out} was not changed" if out.exists() else f"; {out} was not written"
        if args.command != "train":
            return "; nothing was written"
        checkpoint = Path(args.out) / CHECKPOINT_NAME
        if not checkpoint.is_file():
            return f"; no checkpoint is saved in {args.out}"
    except OSError:  # a path the file system refuses (too long, ...): the error line already says so
        return ""
    try:
        import torch

        step = torch.load(checkpoint, map_location="cpu", weights_only=True, mmap=True)["step"]
    except Exception:  # noqa: BLE001 a damaged checkpoint: the error is about something else
        return f"; {checkpoint} is as it was (it may be damaged)"
    return f"; {checkpoint} holds step {step}: the same command resumes from it"


_OS_HINTS = {"EISDIR": "a folder stands where a file must go: move or rename it",
             "ENOTDIR": "a file stands where a folder must go: move or rename it",
             "EEXIST": "something of that name is in the way: move or rename it",
             "EACCES": "make it readable and writable, or use another path",
             "EPERM": "make it readable and writable, or use another path",
             "ENOENT": "check the path",
             "ENAMETOOLONG": "choose a shorter name",
             "EROFS": "use a folder on a writable disk"}


def _raw_os_error(err: BaseException) -> bool:
    """An error straight from the operating system ("[Errno 21] Is a directory"), not one worded for the user."""
    return isinstance(err, OSError) and err.errno is not None and not isinstance(err, WriteError)


def describe_error(err: BaseException) -> str:
    """One plain line for any error: the message itself when it was written for the user, an OS error in plain
    words with the file it concerns and what to do, anything else as what it is and how to report it."""
    if _raw_os_error(err):
        names = " -> ".join(str(f) for f in (err.filename, err.filename2) if f is not None)
        hint = _OS_HINTS.get(errno.errorcode.get(err.errno, ""), "check the path and the disk")
        return f"{err.strerror or first_line(err)}{': ' + names if names else ''} ({hint})"
    if isinstance(err, _EXPLAINED):
        return " ".join(str(err).split()) or type(err).__name__
    detail = " ".join(str(err).split())[:200]
    return (f"unexpected {type(err).__name__}{f' ({detail})' if detail else ''}: this is a bug in dcgan_utils; please "
            "report it with the output of the same command run with --debug")


def main(argv: list[str] | None = None) -> int:
    """Run one command. Any error becomes one line on stderr (``python -m dcgan_utils CMD: error: ...; what was
    saved``) and exit status 2; ``--debug`` or ``DCGAN_DEBUG=1`` adds Python's traceback, for bug reports."""
    parser = build_parser()
    args = parser.parse_args(argv)
    debug = args.debug or os.environ.get("DCGAN_DEBUG", "").strip().lower() not in ("", "0", "false", "no")
    prefix = f"{parser.prog} {args.command}"
    try:
        progress_mode()  # a wrong DCGAN_PROGRESS is refused now, not after the data is loaded
        with _stop_cleanly():
            return COMMANDS[args.command](args)
    except (KeyboardInterrupt, Stopped) as stop:  # outside training's own handling: stopped cleanly
        signum = getattr(stop, "signum", signal.SIGINT)
        name = "Ctrl-C (SIGINT)" if signum == signal.SIGINT else "SIGTERM"
        print(f"{prefix}: stopped by {name}{_saved(args)}", file=sys.stderr)
        return EXIT_INTERRUPTED if signum == signal.SIGINT else EXIT_TERMINATED
    except Exception as err:  # everything else: one line, the traceback only when asked for
        if debug:
            import traceback

            traceback.print_exc()
        line = describe_error(err)
        worded_for_the_user = isinstance(err, _EXPLAINED) and not _raw_os_error(err)
        failed_write = args.command == "train" and isinstance(err, WriteError) and not isinstance(err, DiskFullError)
        if not worded_for_the_user or failed_write:  # (a full disk's message already says what is kept)
            line += _saved(args)  # the user's work: say what is saved
        print(f"{prefix}: error: {line}", file=sys.stderr)
        return EXIT_BAD_INPUT


if __name__ == "__main__":
    sys.exit(main())
