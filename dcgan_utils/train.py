"""The DCGAN training loop: one :class:`Trainer`, its :class:`TrainConfig`, and safe checkpoints.

A step is the DCGAN paper's: D learns real vs fake, then G learns to fool D, both with Adam(2e-4, (0.5, 0.999))
and a numerically stable BCE on D's logits. Around it: a fixed (16, 100, 1, 1) latent batch drawn every epoch
(and every ``sample_every`` steps) into ``frames/``, loss/D(x)/D(G(z))/gradient-norm history, a progress bar,
checkpoints that resume exactly, and warnings when training diverges or D overpowers G.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import threading
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .data import ImageData, load_dataset
from .models import LATENT_DIM, build_models

CHECKPOINT_NAME = "checkpoint.pt"
CHECKPOINT_FORMAT = 1
LOG_EVERY = 25  # steps between host syncs of the loss history (one sync, not one per step, on a GPU)

# Chosen by measurement on a 2-core CPU (docs/performance.md): what a student without a GPU gets when they
# leave `width` unset. Keys: (arch, image_size).
CPU_PROFILES: dict[tuple[str, int], dict] = {
    # 32x32 (MNIST, FashionMNIST): 1,800 steps (5.9 CPU-minutes of one core) give all ten digits, FD 3.1 vs the
    # seed code's 210 in the same budget (docs/performance.md, "The CPU profile")
    ("dcgan", 32): {"width": 128, "batch_size": 64},
    # 64x64: notebook 09. A narrow G needs a faster learning rate than D's, or D wins and G stays stuck on MNIST;
    # 3,000 steps took 4.4 minutes on a quiet 2-core CPU (two threads): FD 2.4, all ten digits (measured).
    ("dcgan", 64): {"width": 64, "batch_size": 64, "lr": 8e-4, "lr_d": 2e-4, "max_steps": 3000},
    ("transposed", 32): {"width": 128, "batch_size": 64},
    ("transposed", 64): {"width": 128, "batch_size": 64},
    ("upsample", 32): {"width": 64, "batch_size": 64},
    ("upsample", 64): {"width": 64, "batch_size": 64},
    ("upsample_conv", 32): {"width": 128, "batch_size": 64},
    ("upsample_conv", 64): {"width": 128, "batch_size": 64},
}

# What ``TrainConfig.recipe`` fills in for the settings left at None. "course": the DCGAN paper's init (and, on a
# CPU, the profile's learning rates); "seed": seed 000's code exactly as it ran (PyTorch's default init, Adam 2e-4
# for both networks), kept one flag away (CLI: --seed-settings) to reproduce its 64x64 MNIST failure (notebook 09).
RECIPES: dict[str, dict] = {
    "course": {"init": "dcgan"},
    "seed": {"init": "pytorch"},
}

# Fields that define the networks and the data: a checkpoint can only be resumed with the same values.
_MODEL_FIELDS = ("dataset", "image_size", "arch", "width", "g_width", "d_width", "bn_eps", "first_batchnorm",
                 "dropout", "spectral_norm", "init", "batch_size", "seed", "channels_last", "ema", "latent_dim")


@dataclass
class TrainConfig:
    """Everything that defines a run. ``None`` means "the seed's value" (or the CPU profile on a CPU)."""

    # data
    dataset: str = "mnist"
    data_dir: str | None = None
    source: str = "auto"
    image_size: int = 32
    limit: int | None = None
    # networks (see models.build_models)
    arch: str = "dcgan"
    width: int | None = None
    g_width: int | None = None
    d_width: int | None = None
    bn_eps: float | None = None
    first_batchnorm: bool = True
    dropout: float = 0.25
    spectral_norm: bool = False
    init: str | None = None  # None: the recipe's ("dcgan" in the course, "pytorch" in the seed)
    recipe: str = "course"  # "course" or "seed": see RECIPES
    latent_dim: int = LATENT_DIM
    # optimisation
    batch_size: int | None = None
    lr: float = 2e-4
    lr_d: float | None = None
    beta1: float = 0.5
    beta2: float = 0.999
    label_smoothing: float = 0.0
    instance_noise: float = 0.0
    ema: float = 0.0
    # budget: the whole run, including the part before a resume
    epochs: int | None = None
    max_steps: int | None = None
    max_minutes: float | None = None
    # how
    seed: int = 0
    device: str = "auto"
    precision: str = "fp32"
    channels_last: bool = False
    compile: bool = False
    sample_every: int = 0
    checkpoint_every: int = 1
    collapse_window: int = 300
    eval_every: int = 0  # epochs between FD/KID/coverage measurements (dcgan_utils.evaluate); 0 = off
    eval_num: int = 1000  # samples per measurement
    progress: bool = True

    def validate(self) -> None:
        """Raise ValueError naming the bad field and what would be accepted."""
        if self.recipe not in RECIPES:
            raise ValueError(f"recipe={self.recipe!r}: use one of {', '.join(map(repr, RECIPES))}")
        if self.init not in (None, "dcgan", "pytorch"):
            raise ValueError(f"init={self.init!r}: use 'dcgan', 'pytorch' or None (the recipe's)")
        if self.precision not in ("fp32", "bf16", "fp16"):
            raise ValueError(f"precision={self.precision!r}: use 'fp32', 'bf16' or 'fp16'")
        if self.batch_size is not None and self.batch_size < 2:
            raise ValueError(f"batch_size={self.batch_size} must be at least 2 (BatchNorm needs a batch)")
        for name in ("epochs", "max_steps"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name}={value} must be at least 1")
        if self.max_minutes is not None and self.max_minutes <= 0:
            raise ValueError(f"max_minutes={self.max_minutes} must be positive")
        if not 0 <= self.label_smoothing < 0.5:
            raise ValueError(f"label_smoothing={self.label_smoothing} must be in [0, 0.5); 0.1 is usual")
        if self.instance_noise < 0:
            raise ValueError(f"instance_noise={self.instance_noise} must be >= 0; 0.1 is usual")
        if not 0 <= self.ema < 1:
            raise ValueError(f"ema={self.ema} must be in [0, 1); 0.999 is usual, 0 turns it off")
        for name in ("lr", "lr_d"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ValueError(f"{name}={value} must be positive")
        if self.eval_every < 0 or self.eval_num < 2:
            raise ValueError(f"eval_every={self.eval_every} must be >= 0 and eval_num={self.eval_num} >= 2")
        if self.eval_every and self.dataset not in ("mnist", "fashion-mnist"):
            raise ValueError(f"eval_every needs a labelled dataset (mnist, fashion-mnist) for its classifier; "
                             f"dataset={self.dataset!r} has none: use eval_every=0")
        if self.sample_every < 0 or self.checkpoint_every < 1:
            raise ValueError("sample_every must be >= 0 and checkpoint_every >= 1")


def pick_device(device: str = "auto") -> torch.device:
    """CUDA if present, then Apple MPS, then CPU; or exactly what is asked for, with a clear error if absent."""
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if device not in ("cpu", "cuda", "mps") and not device.startswith("cuda:"):
        raise ValueError(f"device={device!r}: use 'auto', 'cpu', 'cuda' or 'mps'")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("device='cuda' but PyTorch sees no CUDA GPU: use device='auto' or 'cpu' "
                         "(on Colab: Runtime > Change runtime type > GPU)")
    if device == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ValueError("device='mps' but Apple MPS is not available: use device='auto' or 'cpu'")
    return torch.device(device)


def resolve_config(config: TrainConfig, device: torch.device) -> tuple[TrainConfig, str | None]:
    """Fill the ``None`` fields: the CPU profile on a CPU when no width was set, the seeds' values otherwise.

    Returns the filled config and a sentence announcing the CPU profile (or None).
    """
    config = dataclasses.replace(config)
    for name, value in RECIPES[config.recipe].items():  # the recipe only fills what was left unset
        if getattr(config, name) is None:
            setattr(config, name, value)
    note = None
    profile = CPU_PROFILES.get((config.arch, config.image_size))
    if device.type == "cpu" and profile and config.width is None and config.g_width is None and config.d_width is None:
        config.width = profile["width"]
        if config.batch_size is None:
            config.batch_size = profile["batch_size"]
        extra = ""
        # A profile may also set the learning rates its narrow networks need (the course recipe only, and only
        # if none was chosen) and how long a CPU run should be (if no budget was chosen).
        if "lr" in profile and config.recipe == "course" and config.lr == TrainConfig.lr and config.lr_d is None:
            config.lr, config.lr_d = profile["lr"], profile.get("lr_d")
            extra += f", G learning rate {config.lr:g}" + (f" and D's {config.lr_d:g}" if config.lr_d else "")
        if "max_steps" in profile and config.epochs is None and config.max_steps is None and config.max_minutes is None:
            config.max_steps = profile["max_steps"]
            extra += f", {config.max_steps} steps"
        note = (f"CPU profile: no GPU and no width set, so this run uses width={config.width}, batch size "
                f"{config.batch_size}{extra} (the seed's {config.arch} network is too slow for a CPU). "
                "Set width to override.")
    if config.batch_size is None:
        config.batch_size = 128
    if config.epochs is None and config.max_steps is None and config.max_minutes is None:
        config.epochs = 5
    return config, note


def _grad_norm(params: list[nn.Parameter]) -> torch.Tensor:
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return torch.zeros(())
    return torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))


def _atomic_write(path: Path, write) -> None:
    """Write through a temporary file in the same folder and rename, so a crash never leaves half a file."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def save_checkpoint(state: dict, path: str | Path) -> None:
    """``torch.save`` atomically (temporary file + rename)."""
    _atomic_write(Path(path), lambda f: torch.save(state, f))


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """Load a checkpoint safely (``weights_only=True``: tensors and plain Python data only, no code)."""
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT_NAME
    if not path.is_file():
        raise FileNotFoundError(f"No checkpoint at {path}: train first (python -m dcgan_utils train --out "
                                f"{path.parent}) or pass the run folder's checkpoint.pt")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:
        raise ValueError(f"{path} is not a readable dcgan_utils checkpoint ({type(err).__name__}: {err}). If a "
                         "run was cut off while saving, the previous checkpoint was kept only if this file is "
                         "the one written last; otherwise retrain with --no-resume") from err
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path} is not a dcgan_utils checkpoint (format {CHECKPOINT_FORMAT})")
    return state


def load_generator(path: str | Path, device: str | torch.device = "cpu", ema: bool = True) -> tuple[nn.Module, dict]:
    """The generator of a checkpoint in eval mode (its EMA weights when the run kept them), and its config."""
    state = load_checkpoint(path, map_location=device)
    config = state["config"]
    generator, _ = build_models(**_model_kwargs(config, state["channels"]))
    weights = state["generator_ema"] if ema and state.get("generator_ema") is not None else state["generator"]
    generator.load_state_dict(weights)
    return generator.to(device).eval(), config


def _model_kwargs(config: dict, channels: int) -> dict:
    keys = ("arch", "image_size", "width", "g_width", "d_width", "bn_eps", "first_batchnorm", "dropout",
            "spectral_norm", "init", "latent_dim")
    return {**{k: config[k] for k in keys}, "channels": channels}


@torch.no_grad()
def generate_from(generator: nn.Module, z: torch.Tensor, device: str | torch.device | None = None,
                  batch_size: int = 256) -> torch.Tensor:
    """G's images for latents ``z`` ((N, D) or (N, D, 1, 1)) as float32 (N, C, H, W) in [-1, 1] on the CPU.

    G runs in eval mode, so BatchNorm uses its running statistics and an image does not depend on the rest of
    the batch.
    """
    device = device or next(generator.parameters()).device
    z = z.reshape(z.shape[0], -1, 1, 1)
    was_training = generator.training
    generator.eval()
    try:
        return torch.cat([generator(z[i:i + batch_size].to(device)).float().cpu()
                          for i in range(0, z.shape[0], batch_size)])
    finally:
        generator.train(was_training)


def generate(generator: nn.Module, num: int, seed: int | None = None, device: str | torch.device | None = None,
             batch_size: int = 256) -> torch.Tensor:
    """``num`` images in [-1, 1] as float32 (N, C, H, W) on the CPU, from fresh latents (seeded if ``seed``)."""
    rng = torch.Generator().manual_seed(seed) if seed is not None else None
    z = torch.randn(num, generator.latent_dim, 1, 1, generator=rng)
    return generate_from(generator, z, device=device, batch_size=batch_size)


class Trainer:
    """Trains one (G, D) pair and keeps everything needed to look at, stop and resume the run.

    >>> trainer = Trainer(TrainConfig(dataset="mnist", image_size=32, epochs=1), out_dir="runs/mnist32")
    >>> trainer.fit()            # Ctrl-C saves a checkpoint; calling fit() again (or a new Trainer) resumes
    >>> trainer.history["loss_g"][-1]
    """

    def __init__(self, config: TrainConfig | None = None, out_dir: str | Path = "runs/default",
                 data: ImageData | None = None, resume: bool = True, **overrides):
        config = TrainConfig(**{**asdict(config or TrainConfig()), **overrides})
        config.validate()
        self.device = pick_device(config.device)
        self.out_dir = Path(out_dir)
        self.checkpoint_path = self.out_dir / CHECKPOINT_NAME
        previous = load_checkpoint(self.checkpoint_path) if resume and self.checkpoint_path.is_file() else None
        if previous is not None:
            config = self._merge_resumed_config(config, previous["config"])
        self.config, self.profile_note = resolve_config(config, self.device)
        if self.profile_note and previous is None:
            print(self.profile_note)
        if config.precision == "fp16" and self.device.type != "cuda":
            raise ValueError("precision='fp16' needs a CUDA GPU (it uses a GradScaler); use 'bf16' or 'fp32'")
        c = self.config
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # every training batch has the same shape: autotune once

        torch.manual_seed(c.seed)
        self.data = (data if data is not None else load_dataset(
            c.dataset, c.image_size, c.data_dir, source=c.source, limit=c.limit)).to(self.device)
        if self.data.image_size != c.image_size:
            raise ValueError(f"The data has {self.data.image_size}x{self.data.image_size} images but image_size="
                             f"{c.image_size}: load it with image_size={c.image_size}")
        if len(self.data) < c.batch_size:
            raise ValueError(f"Only {len(self.data)} images for batch_size={c.batch_size}: lower the batch size")
        self.steps_per_epoch = len(self.data) // c.batch_size  # the last partial batch is dropped

        self.generator, self.discriminator = build_models(**_model_kwargs(asdict(c), self.data.channels))
        memory_format = torch.channels_last if c.channels_last else torch.contiguous_format
        self.generator.to(self.device, memory_format=memory_format)
        self.discriminator.to(self.device, memory_format=memory_format)
        self.memory_format = memory_format
        betas = (c.beta1, c.beta2)
        self.opt_g = torch.optim.Adam(self.generator.parameters(), lr=c.lr, betas=betas)
        self.opt_d = torch.optim.Adam(self.discriminator.parameters(), lr=c.lr_d or c.lr, betas=betas)
        self.scaler = torch.amp.GradScaler("cuda", enabled=c.precision == "fp16")
        self.ema_generator = (torch.optim.swa_utils.AveragedModel(
            self.generator, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(c.ema), use_buffers=True)
            if c.ema else None)
        self._d_logits = torch.compile(self.discriminator.logits) if c.compile else self.discriminator.logits
        self._g_forward = torch.compile(self.generator) if c.compile else self.generator

        self.fixed_noise = torch.randn(16, c.latent_dim, 1, 1, generator=torch.Generator().manual_seed(c.seed))
        self.step = 0
        self.elapsed = 0.0  # seconds of training, summed over resumes
        self.history = _new_history()
        self.status = "new"
        self.stop_requested = False
        self._started: float | None = None
        self._pending: list[torch.Tensor] = []
        self._collapse_warned_at = -10 ** 9
        if previous is not None:
            self._restore(previous)

    # ----------------------------------------------------------------------------------------------- state
    def _merge_resumed_config(self, config: TrainConfig, saved: dict) -> TrainConfig:
        """Resume with the saved networks; settings that do not define them (budgets, device, lr) may change."""
        explicit = {f.name for f in fields(TrainConfig) if getattr(config, f.name) != getattr(TrainConfig(), f.name)}
        clashes = [k for k in _MODEL_FIELDS if k in explicit and saved.get(k) != getattr(config, k)]
        if clashes:
            diffs = ", ".join(f"{k}={saved.get(k)!r} (asked {getattr(config, k)!r})" for k in clashes)
            raise ValueError(f"{self.checkpoint_path} was trained with {diffs}. Use another output folder, or "
                             "resume=False (CLI: --no-resume) to start over")
        keep = {k: saved[k] for k in saved if k in {f.name for f in fields(TrainConfig)}}
        # Budgets always come from the new call (a larger budget finishes the same run); any other setting
        # that does not define the networks (device, precision, learning rates, logging) may be changed.
        for k in explicit.union(("epochs", "max_steps", "max_minutes")).difference(_MODEL_FIELDS):
            keep[k] = getattr(config, k)
        return TrainConfig(**keep)

    def state_dict(self) -> dict:
        rng = {"torch": torch.get_rng_state()}
        if self.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(self.device)
        return {
            "format": CHECKPOINT_FORMAT,
            "config": asdict(self.config),
            "channels": self.data.channels,
            "generator": self.generator.state_dict(),
            "discriminator": self.discriminator.state_dict(),
            "generator_ema": self.ema_generator.module.state_dict() if self.ema_generator else None,
            "ema_n_averaged": self.ema_generator.n_averaged if self.ema_generator else None,
            "opt_g": self.opt_g.state_dict(),
            "opt_d": self.opt_d.state_dict(),
            "scaler": self.scaler.state_dict(),
            "step": self.step,
            "epoch": self.epoch,
            "elapsed": self.elapsed_seconds,
            "history": self.history,
            "fixed_noise": self.fixed_noise,
            "rng": rng,
        }

    def _restore(self, state: dict) -> None:
        self.generator.load_state_dict(state["generator"])
        self.discriminator.load_state_dict(state["discriminator"])
        if self.ema_generator is not None and state.get("generator_ema") is not None:
            self.ema_generator.module.load_state_dict(state["generator_ema"])
            self.ema_generator.n_averaged.copy_(state["ema_n_averaged"])
        self.opt_g.load_state_dict(state["opt_g"])
        self.opt_d.load_state_dict(state["opt_d"])
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.step, self.elapsed, self.history = state["step"], state["elapsed"], state["history"]
        self.fixed_noise = state["fixed_noise"].cpu()
        torch.set_rng_state(state["rng"]["torch"].cpu())
        if "cuda" in state["rng"] and self.device.type == "cuda":
            torch.cuda.set_rng_state(state["rng"]["cuda"].cpu(), self.device)
        self.status = "resumed"
        print(f"Resuming {self.checkpoint_path} at step {self.step} (epoch {self.epoch}, "
              f"{self.elapsed / 60:.1f} min trained so far)")

    def save(self) -> Path:
        """Write checkpoint.pt and history.json atomically into the run folder."""
        self.out_dir.mkdir(parents=True, exist_ok=True)
        save_checkpoint(self.state_dict(), self.checkpoint_path)
        _atomic_write(self.out_dir / "history.json", lambda f: f.write(json.dumps(self.history).encode()))
        return self.checkpoint_path

    # ----------------------------------------------------------------------------------------------- budget
    @property
    def epoch(self) -> int:
        return self.step // self.steps_per_epoch

    @property
    def total_steps(self) -> int | None:
        """Steps the run will take if the budget is epochs or steps (None if only minutes are set)."""
        limits = [n for n in (self.config.max_steps,
                              self.config.epochs * self.steps_per_epoch if self.config.epochs else None) if n]
        return min(limits) if limits else None

    @property
    def elapsed_seconds(self) -> float:
        """Seconds of training in this run, including the part before any resume."""
        return self.elapsed + (time.perf_counter() - self._started if self._started is not None else 0.0)

    def _out_of_budget(self) -> bool:
        c = self.config
        if self.stop_requested or (self.total_steps is not None and self.step >= self.total_steps):
            return True
        return c.max_minutes is not None and self.elapsed_seconds >= c.max_minutes * 60

    # ----------------------------------------------------------------------------------------------- training
    def _epoch_order(self, epoch: int) -> torch.Tensor:
        """The batch order of an epoch depends only on (seed, epoch), so a resume continues it exactly."""
        rng = torch.Generator().manual_seed(self.config.seed * 1_000_003 + epoch)
        return torch.randperm(len(self.data), generator=rng).to(self.device)

    def _autocast(self):
        c = self.config
        if c.precision == "fp32":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if c.precision == "bf16" else torch.float16
        return torch.autocast(self.device.type, dtype=dtype)

    def _noisy(self, images: torch.Tensor) -> torch.Tensor:
        """Instance noise: Gaussian noise on D's inputs, annealed linearly to 0 over the planned run."""
        sigma = self.config.instance_noise
        if not sigma:
            return images
        if self.total_steps:
            sigma *= max(0.0, 1 - self.step / self.total_steps)
        elif self.config.max_minutes:  # a time budget: anneal over the planned minutes instead
            sigma *= max(0.0, 1 - self.elapsed_seconds / (self.config.max_minutes * 60))
        return images + sigma * torch.randn_like(images)

    def train_step(self, real: torch.Tensor) -> torch.Tensor:
        """One D update and one G update on a batch of real images; returns the step's statistics (on device)."""
        c, G, D = self.config, self.generator, self.discriminator
        n = real.shape[0]
        z = torch.randn(n, c.latent_dim, 1, 1, device=self.device)
        real_target = torch.full((n,), 1.0 - c.label_smoothing, device=self.device)
        zeros, ones = torch.zeros(n, device=self.device), torch.ones(n, device=self.device)

        with self._autocast():
            fake = self._g_forward(z)  # the only G forward of the step: D's update uses it detached
            logit_real = self._d_logits(self._noisy(real)).float()
            logit_fake = self._d_logits(self._noisy(fake.detach())).float()
            loss_d = (F.binary_cross_entropy_with_logits(logit_real, real_target)
                      + F.binary_cross_entropy_with_logits(logit_fake, zeros))
        self.opt_d.zero_grad(set_to_none=True)
        self.scaler.scale(loss_d).backward()
        self.scaler.unscale_(self.opt_d)
        grad_norm_d = _grad_norm(list(D.parameters()))
        self.scaler.step(self.opt_d)

        D.requires_grad_(False)  # G's backward needs D's input gradients, not its weight gradients
        with self._autocast():
            loss_g = F.binary_cross_entropy_with_logits(self._d_logits(self._noisy(fake)).float(), ones)
        self.opt_g.zero_grad(set_to_none=True)
        self.scaler.scale(loss_g).backward()
        D.requires_grad_(True)
        self.scaler.unscale_(self.opt_g)
        grad_norm_g = _grad_norm(list(G.parameters()))
        self.scaler.step(self.opt_g)
        self.scaler.update()
        if self.ema_generator is not None:
            self.ema_generator.update_parameters(G)
        with torch.no_grad():
            return torch.stack([loss_g.detach(), loss_d.detach(), torch.sigmoid(logit_real).mean(),
                                torch.sigmoid(logit_fake).mean(), grad_norm_g.to(loss_g.device),
                                grad_norm_d.to(loss_g.device)]).float()

    def fit(self) -> "Trainer":
        """Train until the budget (epochs, max_steps or max_minutes, counted over the whole run) is spent.

        Saves a checkpoint every ``checkpoint_every`` epochs, at the end and on Ctrl-C (which finishes the
        current step first). Non-finite losses stop the run and keep the last good checkpoint
        (``self.status == "diverged"``). Calling ``fit()`` again with a larger budget continues the run.
        """
        from tqdm.auto import tqdm

        c = self.config
        self._started, self.stop_requested = time.perf_counter(), False
        if self.step == 0:
            self.save_samples()
        bar = tqdm(total=self.total_steps, initial=self.step, desc=f"{c.dataset} {c.image_size}px {c.arch}",
                   unit="step", disable=not c.progress, dynamic_ncols=True)
        self.status = "training"
        self.generator.train()
        self.discriminator.train()
        try:
            with self._stop_on_ctrl_c():
                diverged = not self._run_epochs(bar)
        except KeyboardInterrupt:  # a second Ctrl-C, or one outside a step
            self.stop_requested, diverged = True, not self._flush(bar)
        finally:
            bar.close()
        if diverged:
            return self._stop_diverged()
        self.status = "interrupted" if self.stop_requested else "finished"
        if self.stop_requested:
            print(f"Stopped at step {self.step}: checkpoint saved in {self.checkpoint_path}; run again to resume.")
        self.save_samples()
        self.save()
        self.elapsed, self._started = self.elapsed_seconds, None
        self.write_outputs()
        return self

    def _run_epochs(self, bar) -> bool:
        """The loop itself; False if a loss became non-finite."""
        c = self.config
        while not self._out_of_budget():
            epoch, position = divmod(self.step, self.steps_per_epoch)
            order = self._epoch_order(epoch)
            for batch_start in range(position * c.batch_size, self.steps_per_epoch * c.batch_size, c.batch_size):
                real = self.data.batch(order[batch_start:batch_start + c.batch_size])
                self._pending.append(self.train_step(real.contiguous(memory_format=self.memory_format)))
                self.step += 1
                bar.update()
                if len(self._pending) >= LOG_EVERY and not self._flush(bar):
                    return False
                if c.sample_every and self.step % c.sample_every == 0:
                    self.save_samples()
                if self._out_of_budget():
                    break
            if not self._flush(bar):
                return False
            if self.step % self.steps_per_epoch == 0:
                self._end_epoch()
        return True

    @contextlib.contextmanager
    def _stop_on_ctrl_c(self):
        """First Ctrl-C: finish the current step, save, stop. A second one interrupts at once."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def request_stop(signum, frame):
            if self.stop_requested:
                raise KeyboardInterrupt
            self.stop_requested = True
            print("\nCtrl-C: finishing this step and saving a checkpoint (press again to stop at once)")

        previous = signal.signal(signal.SIGINT, request_stop)
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, previous)

    def _flush(self, bar) -> bool:
        """Move pending step statistics to the history; False if any is not finite (divergence)."""
        if not self._pending:
            return True
        stats = torch.stack(self._pending).cpu()
        first_step = self.step - len(self._pending) + 1
        self._pending = []
        # losses only: a step fp16's GradScaler skips has inf gradient norms but is not a divergence
        finite = bool(torch.isfinite(stats[:, :2]).all())
        if not finite:
            bad = int((~torch.isfinite(stats[:, :2])).any(1).nonzero()[0])
            self.history["events"].append({"step": first_step + bad, "kind": "diverged",
                                           "message": "non-finite loss"})
            stats = stats[:bad]
        h = self.history
        for row_i, row in enumerate(stats.tolist()):
            h["step"].append(first_step + row_i)
            for key, value in zip(STAT_KEYS, row):
                h[key].append(value)
        if bar is not None and h["loss_g"]:
            bar.set_postfix(loss_g=f"{h['loss_g'][-1]:.3f}", loss_d=f"{h['loss_d'][-1]:.3f}",
                            D_x=f"{h['d_real'][-1]:.2f}", D_G_z=f"{h['d_fake'][-1]:.2f}", refresh=False)
        self._check_collapse()
        return finite

    def _check_collapse(self) -> None:
        """Warn when D has won: its loss near 0 and G's loss climbing over the last ``collapse_window`` steps."""
        w, h = self.config.collapse_window, self.history
        if len(h["loss_d"]) < w or self.step - self._collapse_warned_at < w:
            return
        loss_d, loss_g = h["loss_d"][-w:], h["loss_g"][-w:]
        half = w // 2
        g_first, g_second = sum(loss_g[:half]) / half, sum(loss_g[half:]) / (w - half)
        if sum(loss_d) / w < 0.05 and g_second > g_first and g_second > 4:
            self._collapse_warned_at = self.step
            message = (f"step {self.step}: D is winning (mean D loss {sum(loss_d) / w:.3f}, G loss rising "
                       f"{g_first:.1f} -> {g_second:.1f}, D(G(z)) {h['d_fake'][-1]:.3f}); G's samples have stopped "
                       "improving and may collapse. What fixed this in notebook 09 (64x64 MNIST): a faster G "
                       "than D (lr=8e-4, lr_d=2e-4; CLI --lr 8e-4 --lr-d 2e-4) with the DCGAN init "
                       "(init='dcgan'); label smoothing, instance noise and spectral norm on D did not.")
            h["events"].append({"step": self.step, "kind": "collapse-warning", "message": message})
            print("\nWARNING " + message)

    def _stop_diverged(self) -> "Trainer":
        self.elapsed, self._started = self.elapsed_seconds, None
        self.status = "diverged"
        step = self.history["events"][-1]["step"]
        kept = (f"the last good checkpoint ({self.checkpoint_path}) is kept" if self.checkpoint_path.is_file()
                else "no checkpoint had been written yet")
        print(f"\nTraining diverged at step {step}: a loss became NaN/inf, so the run stopped; {kept}. Try a "
              "lower learning rate, BatchNorm eps 0.8 (bn_eps=0.8), label smoothing, or precision='fp32'.")
        self.out_dir.mkdir(parents=True, exist_ok=True)
        _atomic_write(self.out_dir / "history.json", lambda f: f.write(json.dumps(self.history).encode()))
        self.write_outputs()
        return self

    def _end_epoch(self) -> None:
        """Per-epoch means (from the per-batch history, so a resumed epoch counts all its steps), frame, checkpoint."""
        h, spe = self.history, self.steps_per_epoch
        epoch = self.step // spe  # 1-based number of the epoch just finished
        h["epoch"]["epoch"].append(epoch)
        h["epoch"]["step"].append(self.step)
        h["epoch"]["minutes"].append(round(self.elapsed_seconds / 60, 4))
        for key in STAT_KEYS:
            values = h[key][(epoch - 1) * spe: epoch * spe]
            h["epoch"][key].append(sum(values) / max(1, len(values)))
        self.save_samples()
        if self.config.eval_every and epoch % self.config.eval_every == 0:
            self.evaluate()
        if epoch % self.config.checkpoint_every == 0:
            self.save()

    # ----------------------------------------------------------------------------------------------- outputs
    def evaluate(self, num: int | None = None) -> dict:
        """FD, KID and class coverage of G's samples now (see dcgan_utils.evaluate), added to history["eval"]."""
        from .evaluate import evaluate_generator

        c = self.config
        result = evaluate_generator(self.sampling_generator(), c.dataset, num=num or c.eval_num, seed=c.seed,
                                    source=c.source, data_dir=c.data_dir, device=self.device)
        row = {"epoch": round(self.step / self.steps_per_epoch, 3), "step": self.step,
               **{k: result[k] for k in ("num", "fd", "kid", "classes_present", "class_kl", "confident",
                                         "class_histogram")}}
        self.history["eval"].append(row)
        return row

    def sampling_generator(self) -> nn.Module:
        """The generator used for pictures: the EMA copy when ``ema`` is on, else G itself."""
        return self.ema_generator.module if self.ema_generator is not None else self.generator

    def fixed_samples(self) -> torch.Tensor:
        """G's images for the fixed (16, 100, 1, 1) latent batch, in [-1, 1], on the CPU."""
        return generate_from(self.sampling_generator(), self.fixed_noise, device=self.device)

    def save_samples(self) -> Path:
        """Save the fixed-latent grid as ``frames/step_XXXXXX.png`` (the GIF's frames)."""
        from .plots import save_grid

        path = self.out_dir / "frames" / f"step_{self.step:07d}.png"
        if self.history["samples"] and self.history["samples"][-1]["step"] == self.step:
            return path  # already drawn at this step (sample_every and the epoch end coincide)
        save_grid(self.fixed_samples(), path, nrow=4)
        self.history["samples"].append({"step": self.step, "epoch": round(self.step / self.steps_per_epoch, 3),
                                        "file": str(path.relative_to(self.out_dir))})
        return path

    def sample(self, num: int = 64, seed: int | None = None) -> torch.Tensor:
        """``num`` fresh images in [-1, 1] on the CPU."""
        return generate(self.sampling_generator(), num, seed=seed, device=self.device)

    def write_outputs(self) -> None:
        """Loss plots, D outputs, a sample grid and the training GIF into the run folder."""
        from .plots import make_gif, plot_d_outputs, plot_losses, save_grid

        self.out_dir.mkdir(parents=True, exist_ok=True)
        plot_losses(self.history, save_to=self.out_dir / "losses.png", show=False)
        plot_d_outputs(self.history, save_to=self.out_dir / "d_outputs.png", show=False)
        save_grid(self.sample(64, seed=self.config.seed), self.out_dir / "samples.png", nrow=8)
        make_gif(self.out_dir, self.out_dir / "training.gif")


STAT_KEYS = ("loss_g", "loss_d", "d_real", "d_fake", "grad_norm_g", "grad_norm_d")


def d_won(history: dict, window: int = 50, threshold: float = 0.05) -> dict:
    """When D had won: the steps where D(G(z)), averaged over the last ``window`` steps, was below ``threshold``.

    Returns ``share`` (of the run's steps), ``first_step`` and ``last_step`` (None if D never won) and ``at_end``
    (D still winning at the run's last step): a run that escaped has ``last_step`` well before its end. It reads
    a finished history; the trainer's live collapse warning (``collapse_window``) also needs G's loss rising.
    """
    d_fake, steps = history["d_fake"], history["step"]
    if window < 1 or not 0 < threshold < 1:
        raise ValueError(f"window={window} must be >= 1 and threshold={threshold} in (0, 1)")
    won, total = [], 0.0
    for i, value in enumerate(d_fake):
        total += value - (d_fake[i - window] if i >= window else 0.0)
        if i + 1 >= window and total / window < threshold:
            won.append(steps[i])
    return {"share": len(won) / max(1, len(d_fake)), "first_step": won[0] if won else None,
            "last_step": won[-1] if won else None, "at_end": bool(won) and won[-1] == steps[-1]}


def _new_history() -> dict:
    return {"step": [], **{k: [] for k in STAT_KEYS},
            "epoch": {"epoch": [], "step": [], "minutes": [], **{k: [] for k in STAT_KEYS}},
            "samples": [], "events": [], "eval": []}


def train(config: TrainConfig | None = None, out_dir: str | Path = "runs/default", data: ImageData | None = None,
          resume: bool = True, **overrides) -> Trainer:
    """Build a :class:`Trainer` and run it: ``train(dataset="mnist", image_size=32, epochs=5, out_dir="runs/x")``."""
    return Trainer(config, out_dir=out_dir, data=data, resume=resume, **overrides).fit()
