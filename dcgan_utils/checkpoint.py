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
from pathlib import Path
from typing import Callable, IO

import torch
from torch import nn

from .config import TrainConfig, model_kwargs
from .models import build_models, count_parameters

CHECKPOINT_NAME = "checkpoint.pt"
CHECKPOINT_FORMAT = 1
MAX_PARAMETERS = 500_000_000  # far above any course network (seed 000 at 64x64: 12.7M); a crafted file can't OOM
_REQUIRED_KEYS = ("config", "channels", "generator", "discriminator", "step", "history")


class DiskFullError(OSError):
    """A write ran out of disk space; the previous file (if any) is intact."""


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
            raise DiskFullError(err.errno, f"No space left to write {path}: the previous {path.name} is intact; "
                                           "free some disk space (or use another --out) and run again") from err
        raise
    return path


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
    with torch.device("meta"):  # count parameters without allocating any
        try:
            generator, discriminator = build_models(**model_kwargs(config, state["channels"]))
        except (TypeError, ValueError) as err:
            raise ValueError(f"{path} has an invalid config ({err}). Retrain with --no-resume") from err
    size = count_parameters(generator) + count_parameters(discriminator)
    if size > MAX_PARAMETERS:
        raise ValueError(f"{path} describes networks with {size:,} parameters (more than {MAX_PARAMETERS:,}): "
                         "it is not a course checkpoint")


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
