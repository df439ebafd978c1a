"""A training run's state: its settings, data, networks, counters and history, saved and restored whole.

:class:`Run` is what :class:`~dcgan_utils.train.Trainer` trains: it builds everything a run needs from a config
(resuming a checkpoint in the run folder when there is one) and draws its pictures; ``train.py`` adds the loop.
"""
from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import torch
from torch import nn

from . import distributed
from .budget import Budget
from .checkpoint import CHECKPOINT_NAME, check_network_size, load_checkpoint, restore_run, run_state
from .config import TrainConfig, model_kwargs, pick_device, precision_note, settle_config, with_overrides
from .data import CLASS_NAMES, ImageData, class_labels, load_dataset
from .diagnostics import CollapseWatch
from .history import StepStats, new_history
from .models import build_models
from .outputs import evaluate_run, save_frame, write_outputs
from .runfolder import RunFolder
from .sampling import generate, generate_from
from .step import GAN
from .stopping import StopSignals


def _ema_with_warmup(decay: float):
    """EMA update whose decay ramps up as min(decay, (1 + n) / (10 + n)) over the first updates.

    A fixed 0.999 keeps ~37% of the untrained weights after 1,000 steps, so a short CPU run's EMA samples were
    noise for the first minutes (docs/performance.md); the ramp tracks G closely early and averages later.
    """
    def update(averaged: list[torch.Tensor], current: list[torch.Tensor], n_averaged: torch.Tensor) -> None:
        if not torch.is_floating_point(averaged[0]):  # BatchNorm's step counters: nothing to average
            torch._foreach_copy_(averaged, current)
            return
        n = float(n_averaged)
        torch._foreach_lerp_(averaged, current, 1.0 - min(decay, (1.0 + n) / (10.0 + n)))
    return update


def build_gan(c: TrainConfig, channels: int, labels: torch.Tensor | None, device: torch.device,
              world_size: int = 1) -> GAN:
    """The networks, optimisers and step settings of config ``c`` (after ``torch.manual_seed``: init draws);
    ``labels``: the training images' classes, for a conditional GAN."""
    from .augment import diff_augment, parse_policy

    num_classes = len(CLASS_NAMES[c.dataset]) if c.conditional else 0
    generator, discriminator = build_models(**model_kwargs(asdict(c), channels, num_classes))
    if num_classes:  # G draws classes as often as the data has them when sampling
        generator.labels.frequencies.copy_(torch.bincount(labels.cpu(), minlength=num_classes) / len(labels))
    memory_format = torch.channels_last if c.channels_last else torch.contiguous_format
    generator.to(device, memory_format=memory_format)
    discriminator.to(device, memory_format=memory_format)
    betas = (c.beta1, c.beta2)
    policy = parse_policy(c.augment)
    gan = GAN(generator, discriminator,
              opt_g=torch.optim.Adam(generator.parameters(), lr=c.lr, betas=betas),
              opt_d=torch.optim.Adam(discriminator.parameters(), lr=c.lr_d or c.lr, betas=betas),
              ema=(torch.optim.swa_utils.AveragedModel(generator, multi_avg_fn=_ema_with_warmup(c.ema),
                                                       use_buffers=True) if c.ema else None),
              loss=c.loss, label_smoothing=c.label_smoothing, r1=c.r1,
              augment=(lambda x: diff_augment(x, policy)) if policy else None,
              scaler=torch.amp.GradScaler("cuda", enabled=c.precision == "fp16"))
    if c.precision != "fp32":
        dtype = torch.bfloat16 if c.precision == "bf16" else torch.float16
        gan.autocast = lambda: torch.autocast(device.type, dtype=dtype)
    if c.compile:
        gan.run_g, gan.run_d = torch.compile(generator), torch.compile(discriminator.logits)
    if world_size > 1:
        if c.r1:
            raise ValueError("r1 needs D's gradient of a gradient, which DistributedDataParallel does not take: "
                             "train with r1=0 under torchrun, or in one process")
        g_ddp, pair_ddp = distributed.wrap(generator, discriminator, device)
        gan.run_g = torch.compile(g_ddp) if c.compile else g_ddp
        gan.run_d_pair = torch.compile(pair_ddp) if c.compile else pair_ddp
    return gan


def _steps_per_epoch(data: ImageData, c: TrainConfig, world_size: int, is_main: bool) -> int:
    """Steps per epoch (the last partial batch is dropped); a clear error if the data does not fit the config."""
    if data.image_size != c.image_size:
        raise ValueError(f"The data has {data.image_size}x{data.image_size} images but image_size={c.image_size}: "
                         f"load it with image_size={c.image_size}")
    per_step = c.batch_size * world_size  # under torchrun a step takes batch_size images on every process
    if len(data) < per_step:
        raise ValueError(f"Only {len(data)} images for batch_size={c.batch_size}"
                         + (f" on each of {world_size} processes" if world_size > 1 else "") + ": lower the batch size")
    if world_size > 1 and is_main:
        print(f"{world_size} processes: batch size {c.batch_size} on each, {per_step} images per step, "
              f"{len(data) // per_step} steps per epoch")
    return len(data) // per_step


class Run:
    """One (G, D) pair and everything needed to look at, save and resume its training (see :class:`Trainer`)."""

    def __init__(self, config: TrainConfig | None = None, out_dir: str | Path = "runs/default",
                 data: ImageData | None = None, resume: bool = True, **overrides):
        """``overrides`` are settings the caller chose (the CLI passes exactly the flags typed): on resume, a
        chosen value that would change the networks is refused, and any other chosen value is applied."""
        asked, chosen = with_overrides(config, overrides)
        self.device = pick_device(asked.device)
        self.rank, self.world_size, self.device = distributed.place(self.device)  # under torchrun: this process's
        self.is_main = self.rank == 0
        self.out_dir = Path(out_dir).expanduser()
        self.checkpoint_path = self.out_dir / CHECKPOINT_NAME
        # One trainer per run folder, from now to the end of fit(); a folder that cannot be written is refused
        # now, not after the first epoch; starting over moves the previous run aside, never deletes it.
        self.folder = RunFolder(self.out_dir, is_main=self.is_main, data_dir=asked.data_dir, dataset=asked.dataset)
        self.folder.open(start_over=not resume)
        previous = load_checkpoint(self.checkpoint_path) if resume and self.checkpoint_path.is_file() else None
        self.config, self.resumed_changes, self.profile_note = settle_config(
            asked, previous, chosen, self.device, self.checkpoint_path, self.world_size)
        c = self.config
        self.folder.check_data_dir(c.dataset, c.data_dir)  # a resumed run's image folder, known only now
        check_network_size(asdict(c), channels=3)  # too large a width: refused before any allocation
        if self.is_main and previous is None:
            for note in (self.profile_note, precision_note(c, asked.precision, self.device)):
                if note:
                    print(note)
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # every training batch has the same shape: autotune once

        torch.manual_seed(c.seed)
        self.data = (data if data is not None else load_dataset(
            c.dataset, c.image_size, c.data_dir, source=c.source, limit=c.limit)).to(self.device)
        self.steps_per_epoch = _steps_per_epoch(self.data, c, self.world_size, self.is_main)
        self.labels = class_labels(self.data) if c.conditional else None  # a conditional GAN's classes
        self.gan = build_gan(c, self.data.channels, self.labels, self.device, self.world_size)
        self.memory_format = torch.channels_last if c.channels_last else torch.contiguous_format
        self.fixed_noise = torch.randn(16, c.latent_dim, 1, 1, generator=torch.Generator().manual_seed(c.seed))
        self.fixed_labels = torch.arange(16) % len(CLASS_NAMES[c.dataset]) if c.conditional else None
        self.budget = Budget(c, self.steps_per_epoch)
        self.history = new_history()
        self.step, self.epochs_done, self.epoch_start_step = 0, 0, 0
        self.status, self.stop_signal, self.stop_requested = "new", None, False
        self._fits, self._stop = 0, StopSignals()
        if previous is not None:
            restore_run(self, previous)
            self.budget.saved(self.step)
            self.status = "resumed"
            print(f"Resuming {self.checkpoint_path} at step {self.step} (epoch {self.epochs_done}, {self.elapsed / 60:.1f}"
                  " min trained so far)" + "".join(f"; {k} {a!r} -> {b!r}" for k, (a, b) in self.resumed_changes.items()))
        self.stats = StepStats(self.history, self.world_size)
        self.collapse = CollapseWatch(self.history, c.collapse_window)
        self.folder.remember_checkpoint()  # fit() refuses if another trainer wrote it since
        if self.world_size > 1:  # the same weights, a different random stream on each process
            torch.manual_seed(distributed.rank_seed(c.seed, self.rank, self.step))

    # the networks, for notebooks and tests (the step's GAN holds them)

    generator = property(lambda self: self.gan.generator)
    discriminator = property(lambda self: self.gan.discriminator)
    opt_g = property(lambda self: self.gan.opt_g)
    opt_d = property(lambda self: self.gan.opt_d)
    scaler = property(lambda self: self.gan.scaler)
    ema_generator = property(lambda self: self.gan.ema)

    # ----------------------------------------------------------------------------------------------- checkpoints
    def state_dict(self) -> dict:
        """Everything :meth:`fit` needs to continue this run bit for bit (see ``checkpoint.run_state``)."""
        return run_state(self)

    def save(self) -> Path:
        """Write checkpoint.pt and history.json atomically into the run folder (under torchrun: rank 0 only)."""
        if self.is_main:
            self.folder.save_checkpoint(self.state_dict(), self.history)
            self.budget.saved(self.step)
        return self.checkpoint_path

    def close(self) -> None:
        """Let another trainer use the run folder now (fit() releases it when it ends, and takes it again)."""
        self.folder.release()

    # ----------------------------------------------------------------------------------------------- budget
    @property
    def epoch(self) -> int:
        """Epochs finished, over the whole run (each part of a resumed run may have used another ``limit``)."""
        return self.epochs_done

    @property
    def epochs_trained(self) -> float:
        """Epochs trained, with the finished fraction of the current one."""
        return self.epochs_done + (self.step - self.epoch_start_step) / self.steps_per_epoch

    @property
    def total_steps(self) -> int | None:
        """Steps the run will take if the budget is epochs or steps (None if only minutes are set)."""
        return self.budget.total_steps(self.epochs_done, self.epoch_start_step)

    elapsed_seconds = property(lambda self: self.budget.seconds, doc="Seconds trained, over the whole run.")
    elapsed = property(lambda self: self.budget.elapsed, lambda self, v: setattr(self.budget, "elapsed", v),
                       doc="Seconds trained before the current fit() (all of them once it returns).")

    # ----------------------------------------------------------------------------------------------- outputs
    def evaluate(self, num: int | None = None) -> dict:
        """FD, KID and class coverage of G's samples now (see ``outputs.evaluate_run``), in history["eval"]."""
        return evaluate_run(self, num)

    def sampling_generator(self) -> nn.Module:
        """The generator used for pictures: the EMA copy when ``ema`` is on, else G itself."""
        return self.gan.ema.module if self.gan.ema is not None else self.generator

    def fixed_samples(self) -> torch.Tensor:
        """G's images for the fixed (16, 100, 1, 1) latent batch (and classes), in [-1, 1], on the CPU."""
        return generate_from(self.sampling_generator(), self.fixed_noise, labels=self.fixed_labels,
                             device=self.device)

    def sample(self, num: int = 64, seed: int | None = None) -> torch.Tensor:
        """``num`` fresh images in [-1, 1] on the CPU (a conditional G's classes drawn as the data has them)."""
        return generate(self.sampling_generator(), num, seed=seed, device=self.device)

    def save_samples(self) -> Path:
        """Save the fixed-latent grid as ``frames/step_XXXXXXX.png`` (the GIF's frames; see ``outputs.py``)."""
        return save_frame(self)

    def write_outputs(self) -> None:
        """Loss plots, D outputs, a sample grid and the training GIF into the run folder (see ``outputs.py``)."""
        write_outputs(self)
