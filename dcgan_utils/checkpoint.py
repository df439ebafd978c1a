"""Run-folder files that never lose a user's work: atomic writes, and checkpoints loaded safely.

A write goes to a fresh, exclusively created temporary file in the same folder and is renamed over the target,
so a crash, a full disk or a signal leaves either the old file or the new one, never half of one, and no write
follows a symlink someone planted in the run folder.
"""
from __future__ import annotations

import contextlib
import dataclasses
import errno
import os
import tempfile
import time
import weakref
from pathlib import Path
from typing import Callable, IO

try:
    import fcntl
except ImportError:  # Windows: run folders are not locked there
    fcntl = None

import torch
from torch import nn

from .config import TrainConfig, model_kwargs
from .models import build_models, count_parameters

CHECKPOINT_NAME = "checkpoint.pt"
CHECKPOINT_FORMAT = 1
MAX_PARAMETERS = 500_000_000  # far above any course network (seed 000 at 64x64: 12.7M); a crafted file can't OOM
_REQUIRED_KEYS = ("config", "channels", "generator", "discriminator", "step", "history")


LOCK_NAME = ".lock"


class DiskFullError(OSError):
    """A write ran out of disk space; the previous file (if any) is intact."""


class RunFolderError(ValueError):
    """A run folder cannot be used (a file, not writable, or in use by another trainer); the message says why."""


def atomic_write(path: str | Path, write: Callable[[IO[bytes]], object]) -> Path:
    """Call ``write(file)`` on a new temporary file next to ``path``, fsync it and rename it over ``path``.

    The temporary file has a unique name and is created exclusively (``O_EXCL``), so two writers never share
    one and a symlink in its place is never followed; the rename replaces a symlink at ``path`` instead of
    writing through it. On any error the temporary file is removed and ``path`` is left as it was.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
            kept = f"the previous {path.name} is intact" if path.exists() else "nothing was written"
            raise DiskFullError(err.errno, f"No space left to write {path}: {kept}; free some disk space (or use "
                                           "another --out) and run again") from err
        raise
    return path


def prepare_run_folder(folder: str | Path) -> Path:
    """Create ``folder`` if needed and check that files can be written in it (before any training), with a
    one-line :class:`RunFolderError` if it is a file or is not writable."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise RunFolderError(f"{folder} is a file, not a folder: choose another output folder (--out)")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".write-test.", suffix=".tmp")
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise RunFolderError(f"Cannot write in the output folder {folder} ({err.strerror or err}): make it writable "
                             "or choose another output folder (--out)") from err
    return folder


def move_aside(folder: str | Path, keep: tuple[str, ...] = (LOCK_NAME,)) -> Path | None:
    """Move everything in ``folder`` (but ``keep``) into a new sibling ``FOLDER.old-YYYYmmdd-HHMMSS``; return
    it, or None if there was nothing to move. Starting a run over never deletes the old one."""
    folder = Path(folder)
    entries = [p for p in folder.iterdir() if p.name not in keep] if folder.is_dir() else []
    if not entries:
        return None
    stamp = time.strftime("%Y%m%d-%H%M%S")
    old = folder.with_name(f"{folder.name}.old-{stamp}")
    for n in range(2, 1000):
        try:
            old.mkdir()
            break
        except FileExistsError:
            old = folder.with_name(f"{folder.name}.old-{stamp}-{n}")
    try:
        for entry in entries:
            os.rename(entry, old / entry.name)
    except OSError as err:
        raise RunFolderError(f"Could not move the previous run in {folder} aside to {old} ({err.strerror or err}); "
                             "move or delete it yourself, or choose another output folder (--out)") from err
    return old


class RunLock:
    """One trainer per run folder: an exclusive ``fcntl.flock`` on ``FOLDER/.lock``.

    The OS releases the lock when the process ends however it ends, so a crash never leaves a stale lock. A
    second process asking for a held folder gets a one-line :class:`RunFolderError`. In one process (a notebook
    re-running a cell, a test), a new lock takes the folder over from a lock whose owner is idle (``busy``
    False, i.e. not inside ``fit()``); the owner that lost it re-acquires it when it needs it again. Without
    ``fcntl`` (Windows) nothing is locked.
    """

    _in_process: dict[tuple[int, int], "weakref.ref[RunLock]"] = {}  # (st_dev, st_ino) of .lock -> its holder

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self.busy = False
        self._fd: int | None = None
        self._key: tuple[int, int] | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> "RunLock":
        if fcntl is None or self._fd is not None:
            return self
        path = self.folder / LOCK_NAME
        try:
            if path.is_symlink():  # never open a planted link: replace it with our own file
                path.unlink()
            fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0),
                         0o644)
        except OSError as err:
            raise RunFolderError(f"Cannot lock the output folder {self.folder} ({err.strerror or err}): make it "
                                 "writable or choose another output folder (--out)") from err
        stat = os.fstat(fd)
        key = (stat.st_dev, stat.st_ino)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = self._in_process.get(key)
            holder = holder() if holder is not None else None
            if holder is None or holder.busy or not holder.held:
                os.close(fd)
                raise RunFolderError(self._in_use_message(path)) from None
            holder.release()  # an idle trainer of this process: take the folder over
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                raise RunFolderError(self._in_use_message(path)) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd, self._key = fd, key
        self._in_process[key] = weakref.ref(self)
        return self

    def _in_use_message(self, path: Path) -> str:
        with contextlib.suppress(OSError, ValueError):
            pid = int(path.read_text().strip() or 0)
            if pid and pid != os.getpid():
                return (f"{self.folder} is in use by another trainer (process {pid}): wait for it to finish, stop "
                        "it, or choose another output folder (--out)")
        return (f"{self.folder} is in use by another trainer: wait for it to finish, stop it, or choose another "
                "output folder (--out)")

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is None:
            return
        if self._key is not None and (ref := self._in_process.get(self._key)) is not None and ref() is self:
            del self._in_process[self._key]
        with contextlib.suppress(OSError):
            os.close(fd)  # closing the descriptor releases the flock

    def __del__(self):
        self.release()


def save_checkpoint(state: dict, path: str | Path) -> Path:
    """``torch.save`` atomically (see :func:`atomic_write`)."""
    return atomic_write(path, lambda f: torch.save(state, f))


def _checkpoint_path(path: str | Path) -> Path:
    path = Path(path).expanduser()
    return path / CHECKPOINT_NAME if path.is_dir() else path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """Load and check a checkpoint safely (``weights_only=True``: tensors and plain Python data only, no code).

    The saved config is validated before anything is built from it, so a damaged or crafted file gives a
    one-line ``ValueError`` rather than a traceback or a huge allocation.
    """
    path = _checkpoint_path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No checkpoint at {path}: train first (python -m dcgan_utils train --out "
                                f"{path.parent}) or pass the run folder's checkpoint.pt")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:
        raise ValueError(f"{path} is not a readable dcgan_utils checkpoint ({type(err).__name__}: "
                         f"{str(err).splitlines()[0][:200]}). Use another run folder, or retrain with "
                         "--no-resume") from err
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path} is not a dcgan_utils checkpoint (format {CHECKPOINT_FORMAT})")
    _check_state(state, path)
    return state


def _check_state(state: dict, path: Path) -> None:
    missing = [k for k in _REQUIRED_KEYS if k not in state]
    if missing:
        raise ValueError(f"{path} is damaged: it lacks {', '.join(missing)}. Retrain with --no-resume")
    config = state["config"]
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    if not isinstance(config, dict) or any(k not in config for k in model_kwargs(dict.fromkeys(names), 1)
                                           if k != "channels"):
        raise ValueError(f"{path} is damaged: its config is incomplete. Retrain with --no-resume")
    try:
        TrainConfig(**{k: v for k, v in config.items() if k in names}).validate()
    except (TypeError, ValueError) as err:
        raise ValueError(f"{path} has an invalid config ({err}). Retrain with --no-resume") from err
    if state["channels"] not in (1, 3):
        raise ValueError(f"{path} has channels={state['channels']!r}: a checkpoint holds 1 or 3 channels")
    try:
        g_size, d_size = network_sizes(config, state["channels"])
    except (TypeError, ValueError) as err:
        raise ValueError(f"{path} has an invalid config ({err}). Retrain with --no-resume") from err
    size = g_size + d_size
    if size > MAX_PARAMETERS:
        raise ValueError(f"{path} describes networks with {size:,} parameters (more than {MAX_PARAMETERS:,}): "
                         "it is not a course checkpoint")


def network_sizes(config: dict, channels: int) -> tuple[int, int]:
    """Parameters of G and D for a config, counted on the meta device (nothing is allocated). Built with
    PyTorch's init and no spectral norm, which change no count: their random draws on the meta device cost
    seconds the first time in a process."""
    with torch.device("meta"):
        generator, discriminator = build_models(**{**model_kwargs(config, channels), "init": "pytorch",
                                                   "spectral_norm": False})
    return count_parameters(generator), count_parameters(discriminator)


def check_network_size(config: dict, channels: int) -> None:
    """Refuse, before anything is allocated, networks larger than :data:`MAX_PARAMETERS`, saying which setting
    makes them so."""
    g_size, d_size = network_sizes(config, channels)
    if g_size + d_size > MAX_PARAMETERS:
        widths = ", ".join(f"{k}={config[k]}" for k in ("width", "g_width", "d_width") if config.get(k) is not None)
        raise ValueError(f"{widths or 'these settings'} (latent_dim={config.get('latent_dim')}) would build G with "
                         f"{g_size:,} and D with {d_size:,} parameters ({(g_size + d_size) * 4 / 1e9:,.0f} GB of "
                         f"float32 weights, more than this course's limit of {MAX_PARAMETERS:,} parameters): use a "
                         "smaller width (the seed's dcgan networks use 1024)")


def load_weights(module: nn.Module, weights: dict, path: str | Path, what: str) -> None:
    """``module.load_state_dict(weights)`` with a one-line error for missing keys or wrong shapes."""
    try:
        module.load_state_dict(weights)
    except (RuntimeError, TypeError, AttributeError) as err:
        first = str(err).splitlines()[0][:200]
        raise ValueError(f"{path}: the {what} weights do not fit the network its config describes ({first}). "
                         "Retrain with --no-resume") from err


def load_generator(path: str | Path, device: str | torch.device = "cpu", ema: bool = True,
                   state: dict | None = None) -> tuple[nn.Module, dict]:
    """The generator of a checkpoint in eval mode (its EMA weights when the run kept them), and its config."""
    state = state if state is not None else load_checkpoint(path)
    config = state["config"]
    generator, _ = build_models(**model_kwargs(config, state["channels"]))
    weights = state["generator_ema"] if ema and state.get("generator_ema") is not None else state["generator"]
    load_weights(generator, weights, path, "generator")
    return generator.to(device).eval(), config


def load_models(path: str | Path, device: str | torch.device = "cpu", ema: bool = True
                ) -> tuple[nn.Module, nn.Module, dict]:
    """Generator (EMA weights if kept) and discriminator of a checkpoint, both in eval mode, and its config."""
    state = load_checkpoint(path)
    generator, config = load_generator(path, device=device, ema=ema, state=state)
    _, discriminator = build_models(**model_kwargs(config, state["channels"]))
    load_weights(discriminator, state["discriminator"], path, "discriminator")
    return generator, discriminator.to(device).eval(), config
