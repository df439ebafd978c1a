"""Checkpoints that never lose a user's work: written atomically (``runfolder.atomic_write``), loaded safely.

A checkpoint holds everything a run needs to continue bit for bit; :func:`load_checkpoint` checks it before
anything is built from it, so a damaged or crafted file gives one line, not a traceback or a huge allocation.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import torch
from torch import nn

from .config import LATER_FIELDS, TrainConfig, model_kwargs
from .history import check_history
from .models import build_models, count_parameters
from .runfolder import DiskFullError, RunFolderError, RunLock, atomic_write, move_aside, prepare_run_folder  # noqa: F401

CHECKPOINT_NAME = "checkpoint.pt"
CHECKPOINT_FORMAT = 1
MAX_PARAMETERS = 500_000_000  # far above any course network (seed 000 at 64x64: 12.7M); a crafted file can't OOM
_REQUIRED_KEYS = ("config", "channels", "generator", "discriminator", "step", "history")


def save_checkpoint(state: dict, path: str | Path) -> Path:
    """``torch.save`` atomically (see :func:`atomic_write`)."""
    return atomic_write(path, lambda f: torch.save(state, f))


def first_line(err: BaseException, limit: int = 200) -> str:
    """An exception's message as one short line, or its type's name when it has none (an empty message)."""
    lines = str(err).strip().splitlines()
    return lines[0][:limit] if lines else type(err).__name__


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
    if path.stat().st_size == 0:
        raise ValueError(f"{path} is empty (0 bytes), not a checkpoint. Use another run folder, or retrain with "
                         "--no-resume")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:
        raise ValueError(f"{path} is not a readable dcgan_utils checkpoint ({type(err).__name__}: "
                         f"{first_line(err)}). Use another run folder, or retrain with --no-resume") from err
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path} is not a dcgan_utils checkpoint (format {CHECKPOINT_FORMAT}). Use another run "
                         "folder, or retrain with --no-resume")
    _check_state(state, path)
    return state


def _check_state(state: dict, path: Path) -> None:
    missing = [k for k in _REQUIRED_KEYS if k not in state]
    if missing:
        raise ValueError(f"{path} is damaged: it lacks {', '.join(missing)}. Retrain with --no-resume")
    config = state["config"]
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    needed = [k for k in model_kwargs(dict.fromkeys(names), 1) if k not in ("channels", "num_classes")]
    if not isinstance(config, dict) or any(k not in config for k in needed if k not in LATER_FIELDS):
        raise ValueError(f"{path} is damaged: its config is incomplete. Retrain with --no-resume")
    try:
        TrainConfig(**{**LATER_FIELDS, **{k: v for k, v in config.items() if k in names}}).validate()
    except (TypeError, ValueError) as err:
        raise ValueError(f"{path} has an invalid config ({err}). Retrain with --no-resume") from err
    if state["channels"] not in (1, 3):
        raise ValueError(f"{path} has channels={state['channels']!r}: a checkpoint holds 1 or 3 channels. Retrain "
                         "with --no-resume")
    classes = state.get("num_classes", 0)
    if not isinstance(classes, int) or not 0 <= classes <= 1000 or bool(config.get("conditional")) != (classes > 0):
        raise ValueError(f"{path} has num_classes={classes!r} for conditional={config.get('conditional')!r}. "
                         "Retrain with --no-resume")
    if not isinstance(state["step"], int) or state["step"] < 0:
        raise ValueError(f"{path} has step={state['step']!r}. Retrain with --no-resume")
    problem = check_history(state["history"])
    if problem:
        raise ValueError(f"{path} is damaged: {problem}. Retrain with --no-resume")
    try:
        g_size, d_size = network_sizes(config, state["channels"], classes)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{path} has an invalid config ({err}). Retrain with --no-resume") from err
    size = g_size + d_size
    if size > MAX_PARAMETERS:
        raise ValueError(f"{path} describes networks with {size:,} parameters (more than {MAX_PARAMETERS:,}): "
                         "it is not a course checkpoint. Use another run folder, or retrain with --no-resume")


def network_sizes(config: dict, channels: int, num_classes: int = 0) -> tuple[int, int]:
    """Parameters of G and D for a config, counted on the meta device (nothing is allocated). Built with
    PyTorch's init and no spectral norm, which change no count: their random draws on the meta device cost
    seconds the first time in a process."""
    with torch.device("meta"):
        generator, discriminator = build_models(**{**model_kwargs(config, channels, num_classes), "init": "pytorch",
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
    except (RuntimeError, TypeError, AttributeError, KeyError, ValueError) as err:
        raise ValueError(f"{path}: the {what} weights do not fit the network its config describes "
                         f"({first_line(err)}). Retrain with --no-resume") from err


def load_generator(path: str | Path, device: str | torch.device = "cpu", ema: bool = True,
                   state: dict | None = None) -> tuple[nn.Module, dict]:
    """The generator of a checkpoint in eval mode (its EMA weights when the run kept them), and its config."""
    state = state if state is not None else load_checkpoint(path)
    config = state["config"]
    generator, _ = build_models(**model_kwargs(config, state["channels"], state.get("num_classes", 0)))
    weights = state["generator_ema"] if ema and state.get("generator_ema") is not None else state["generator"]
    load_weights(generator, weights, path, "generator")
    return generator.to(device).eval(), config


def load_models(path: str | Path, device: str | torch.device = "cpu", ema: bool = True
                ) -> tuple[nn.Module, nn.Module, dict]:
    """Generator (EMA weights if kept) and discriminator of a checkpoint, both in eval mode, and its config."""
    state = load_checkpoint(path)
    generator, config = load_generator(path, device=device, ema=ema, state=state)
    _, discriminator = build_models(**model_kwargs(config, state["channels"], state.get("num_classes", 0)))
    load_weights(discriminator, state["discriminator"], path, "discriminator")
    return generator, discriminator.to(device).eval(), config


def run_state(trainer) -> dict:
    """What a checkpoint holds: a :class:`~dcgan_utils.train.Trainer`'s networks, optimisers, counters, history,
    fixed latents and random state, so that a resumed run continues bit for bit."""
    rng = {"torch": torch.get_rng_state()}
    if trainer.device.type == "cuda":
        rng["cuda"] = torch.cuda.get_rng_state(trainer.device)
    gan, ema = trainer.gan, trainer.gan.ema
    return {"format": CHECKPOINT_FORMAT, "config": dataclasses.asdict(trainer.config),
            "channels": trainer.data.channels,
            "num_classes": len(gan.generator.labels.frequencies) if trainer.config.conditional else 0,
            "generator": gan.generator.state_dict(), "discriminator": gan.discriminator.state_dict(),
            "generator_ema": ema.module.state_dict() if ema else None, "ema_n_averaged": ema.n_averaged if ema else None,
            "opt_g": gan.opt_g.state_dict(), "opt_d": gan.opt_d.state_dict(), "scaler": gan.scaler.state_dict(),
            "step": trainer.step, "epoch": trainer.epochs_done, "epoch_start_step": trainer.epoch_start_step,
            "elapsed": trainer.elapsed_seconds, "history": trainer.history, "fixed_noise": trainer.fixed_noise,
            "rng": rng, **({"world_size": trainer.world_size} if trainer.world_size > 1 else {})}


def restore_run(trainer, state: dict) -> None:
    """Put a checkpoint's state (see :func:`run_state`) back into a freshly built trainer; the learning rates
    are the trainer's config's (a resume may change them). A part missing or of the wrong kind (a crafted or
    damaged file that passed :func:`load_checkpoint`'s checks) gives one line naming the file."""
    try:
        _restore_run(trainer, state)
    except (KeyError, TypeError, AttributeError, IndexError, RuntimeError) as err:
        what = f"it lacks {err}" if isinstance(err, KeyError) else f"{type(err).__name__}: {first_line(err)}"
        raise ValueError(f"{trainer.checkpoint_path} is damaged ({what}). Retrain with --no-resume") from err


def _restore_run(trainer, state: dict) -> None:
    path, gan = trainer.checkpoint_path, trainer.gan
    for key in ("elapsed", "epoch", "epoch_start_step"):  # counters a crafted file could make text or None
        value = state.get(key, 0)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError(f"its {key} is {value!r}, not a number")
    noise = state["fixed_noise"]
    if not isinstance(noise, torch.Tensor) or noise.shape != trainer.fixed_noise.shape:
        raise TypeError(f"its fixed_noise is not a {tuple(trainer.fixed_noise.shape)} tensor")
    load_weights(gan.generator, state["generator"], path, "generator")
    load_weights(gan.discriminator, state["discriminator"], path, "discriminator")
    if gan.ema is not None and state.get("generator_ema") is not None:
        load_weights(gan.ema.module, state["generator_ema"], path, "generator EMA")
        gan.ema.n_averaged.copy_(state["ema_n_averaged"])
    try:
        gan.opt_g.load_state_dict(state["opt_g"])
        gan.opt_d.load_state_dict(state["opt_d"])
        if state.get("scaler"):
            gan.scaler.load_state_dict(state["scaler"])
    except (ValueError, KeyError, TypeError, RuntimeError) as err:
        raise ValueError(f"{path}: its optimiser state does not fit the networks ({str(err)[:200]}). Retrain with "
                         "--no-resume") from err
    trainer.step, trainer.budget.elapsed, trainer.history = state["step"], float(state["elapsed"]), state["history"]
    trainer.epochs_done = int(state.get("epoch", trainer.step // trainer.steps_per_epoch))
    trainer.epoch_start_step = min(trainer.step, int(state.get("epoch_start_step",
                                                               trainer.epochs_done * trainer.steps_per_epoch)))
    trainer.fixed_noise = state["fixed_noise"].cpu()
    torch.set_rng_state(state["rng"]["torch"].cpu())
    if "cuda" in state["rng"] and trainer.device.type == "cuda":
        torch.cuda.set_rng_state(state["rng"]["cuda"].cpu(), trainer.device)
    c = trainer.config
    for opt, lr in ((gan.opt_g, c.lr), (gan.opt_d, c.lr_d or c.lr)):
        for group in opt.param_groups:  # the optimisers' saved state holds the old learning rates
            group["lr"] = lr
