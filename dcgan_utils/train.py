"""The DCGAN training loop: one :class:`Trainer`, its :class:`TrainConfig`, and safe checkpoints.

A step is the DCGAN paper's: D learns real vs fake, then G learns to fool D, both with Adam(2e-4, (0.5, 0.999))
and a numerically stable BCE on D's logits. Around it: a fixed (16, 100, 1, 1) latent batch drawn every epoch
(and every ``sample_every`` steps) into ``frames/``, loss/D(x)/D(G(z))/gradient-norm history, a progress bar,
checkpoints that resume exactly, and warnings when training diverges or D overpowers G.
"""
from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
import time
from dataclasses import asdict, fields
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from . import distributed
from .checkpoint import (CHECKPOINT_FORMAT, CHECKPOINT_NAME, DiskFullError, RunFolderError, RunLock, atomic_write,
                         check_network_size, load_checkpoint, load_weights, move_aside, prepare_run_folder,
                         save_checkpoint)
from .config import FASTER_G_LRS, MODEL_FIELDS, BUDGET_FIELDS, TrainConfig, model_kwargs, pick_device, resolve_config
from .data import ImageData, load_dataset
from .diagnostics import LOSS_COLUMNS, STAT_KEYS, d_has_won, describe_d_won, new_history, tail_mean
from .evaluate import evaluate_generator
from .models import build_models
from .plots import make_gif, plot_d_outputs, plot_losses, save_grid
from .progress import ProgressLines, progress_mode
from .sampling import generate, generate_from

LOG_EVERY = 25  # steps between host syncs of the loss history (one sync, not one per step, on a GPU)
# Tiny epochs (a few dozen images: one step each) must not write a checkpoint and a frame every step (issue 12):
CHECKPOINT_MIN_STEPS, CHECKPOINT_MIN_SECONDS = 100, 60.0  # epoch-end checkpoints at least this far apart
FRAMES_PER_RUN = 100  # epoch-end frames: about this many per run at most (every total_steps // 100 steps)
STOP_SIGNALS = {"SIGINT": "Ctrl-C", "SIGTERM": "SIGTERM"}  # both: finish the step, save, stop
def _file_stamp(path: Path) -> tuple[int, int, int] | None:
    """What identifies one version of a file (inode, mtime, size), or None if there is none."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_ino, st.st_mtime_ns, st.st_size


def _grad_norm(params: list[nn.Parameter]) -> torch.Tensor:
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return torch.zeros(())
    return torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))


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


class Trainer:
    """Trains one (G, D) pair and keeps everything needed to look at, stop and resume the run.

    >>> trainer = Trainer(TrainConfig(dataset="mnist", image_size=32, epochs=1), out_dir="runs/mnist32")
    >>> trainer.fit()            # Ctrl-C saves a checkpoint; calling fit() again (or a new Trainer) resumes
    >>> trainer.history["loss_g"][-1]
    """

    def __init__(self, config: TrainConfig | None = None, out_dir: str | Path = "runs/default",
                 data: ImageData | None = None, resume: bool = True, **overrides):
        """``overrides`` are settings the caller chose (the CLI passes exactly the flags typed): on resume, a
        chosen value that would change the networks is refused, and any other chosen value is applied."""
        base = config or TrainConfig()
        config = TrainConfig(**{**asdict(base), **overrides})
        config.validate()
        defaults = TrainConfig()
        # None means "unset" (a notebook's WIDTH = None): only values actually given count as chosen
        chosen = ({k for k, v in overrides.items() if v is not None}
                  | {f.name for f in fields(TrainConfig) if getattr(base, f.name) != getattr(defaults, f.name)})
        self.device = pick_device(config.device)
        # under torchrun (see dcgan_utils.distributed): this process's rank, and its own GPU
        self.rank, self.world_size = distributed.rank(), distributed.world_size()
        self.is_main = self.rank == 0
        if self.world_size > 1 and self.device.type == "cuda":
            self.device = torch.device("cuda", distributed.local_rank())
        self.out_dir = Path(out_dir).expanduser()
        self.checkpoint_path = self.out_dir / CHECKPOINT_NAME
        # One trainer per run folder, from now to the end of fit() (checkpoint.RunLock); a folder that cannot be
        # written is refused now, not after the first epoch; starting over moves the old run aside, never deletes it.
        self._lock = RunLock(self.out_dir)
        if getattr(self, "is_main", True):
            prepare_run_folder(self.out_dir)
            self._lock.acquire()
            if not resume and (old := move_aside(self.out_dir)) is not None:
                print(f"Starting over: the previous run in {self.out_dir} was moved to {old}")
        previous = load_checkpoint(self.checkpoint_path) if resume and self.checkpoint_path.is_file() else None
        if previous is not None and previous.get("world_size", 1) != self.world_size:
            n = previous.get("world_size", 1)
            raise ValueError(f"{self.checkpoint_path} was trained by {n} process{'es' * (n > 1)} (each step took "
                             f"{n} batches) and this run has {self.world_size}: resume it with "
                             + (f"torchrun --nproc_per_node {n}" if n > 1 else "a single process (no torchrun)")
                             + ", or use another output folder")
        self.resumed_changes: dict[str, tuple] = {}
        if previous is not None:
            config = self._merge_resumed_config(config, previous["config"], chosen)
        self.config, self.profile_note = resolve_config(config, self.device)
        check_network_size(asdict(self.config), channels=3)  # too large a width: refused before any allocation
        if self.profile_note and previous is None:
            print(self.profile_note)
        c = self.config
        if config.precision == "auto" and c.precision != "fp32" and previous is None and self.is_main:
            print(f"Precision auto: {c.precision} autocast{' + channels_last' if c.channels_last else ''} on "
                  f"{self.device.type} (fast here; --precision fp32 to turn it off)")
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # every training batch has the same shape: autotune once

        torch.manual_seed(c.seed)
        self.data = (data if data is not None else load_dataset(
            c.dataset, c.image_size, c.data_dir, source=c.source, limit=c.limit)).to(self.device)
        if self.data.image_size != c.image_size:
            raise ValueError(f"The data has {self.data.image_size}x{self.data.image_size} images but image_size="
                             f"{c.image_size}: load it with image_size={c.image_size}")
        if len(self.data) < c.batch_size * self.world_size:
            raise ValueError(f"Only {len(self.data)} images for batch_size={c.batch_size}"
                             + (f" on each of {self.world_size} processes" if self.world_size > 1 else "")
                             + ": lower the batch size")
        # the last partial batch is dropped; under torchrun a step takes batch_size images on every process
        self.steps_per_epoch = len(self.data) // (c.batch_size * self.world_size)
        if self.world_size > 1 and self.is_main:
            print(f"{self.world_size} processes on {self.device.type}: batch size {c.batch_size} on each, "
                  f"{c.batch_size * self.world_size} images per step, {self.steps_per_epoch} steps per epoch")

        self.generator, self.discriminator = build_models(**model_kwargs(asdict(c), self.data.channels))
        memory_format = torch.channels_last if c.channels_last else torch.contiguous_format
        self.generator.to(self.device, memory_format=memory_format)
        self.discriminator.to(self.device, memory_format=memory_format)
        self.memory_format = memory_format
        betas = (c.beta1, c.beta2)
        self.opt_g = torch.optim.Adam(self.generator.parameters(), lr=c.lr, betas=betas)
        self.opt_d = torch.optim.Adam(self.discriminator.parameters(), lr=c.lr_d or c.lr, betas=betas)
        self.scaler = torch.amp.GradScaler("cuda", enabled=c.precision == "fp16")
        self.ema_generator = (torch.optim.swa_utils.AveragedModel(
            self.generator, multi_avg_fn=_ema_with_warmup(c.ema), use_buffers=True) if c.ema else None)
        self._d_logits = torch.compile(self.discriminator.logits) if c.compile else self.discriminator.logits
        self._g_forward = torch.compile(self.generator) if c.compile else self.generator
        self._d_real_fake = None  # D's update in one DDP forward (torchrun only)
        if self.world_size > 1:
            g_ddp, d_ddp = distributed.wrap(self.generator, self.discriminator, self.device)
            self._g_forward = torch.compile(g_ddp) if c.compile else g_ddp
            self._d_real_fake = torch.compile(d_ddp) if c.compile else d_ddp

        self.fixed_noise = torch.randn(16, c.latent_dim, 1, 1, generator=torch.Generator().manual_seed(c.seed))
        self.step = 0
        self.elapsed = 0.0  # seconds of training, summed over resumes
        self.history = new_history()
        self.status = "new"
        self.stop_requested = False
        self._started: float | None = None
        self._pending: list[torch.Tensor] = []
        self._collapse_warned_at = -10 ** 9
        self._collapse_printed_at: int | None = None  # index in history["events"] of this fit's printed warning
        self.epochs_done = 0  # counted, not derived from the step: a resume may use another limit (epoch size)
        self.epoch_start_step = 0  # the step at which the current epoch began
        self.stop_signal: int | None = None  # the signal that stopped the last fit() (SIGINT or SIGTERM)
        self._signals: list[int] = []
        self._saved_step, self._saved_at, self._last_frame_seconds = 0, time.perf_counter(), 0.0
        if previous is not None:
            self._restore(previous)
        self._checkpoint_stamp = _file_stamp(self.checkpoint_path)  # fit() refuses if another trainer wrote it
        if self.world_size > 1:  # the same weights, a different random stream on each process
            torch.manual_seed(distributed.rank_seed(c.seed, self.rank, self.step))

    # ----------------------------------------------------------------------------------------------- state
    def _merge_resumed_config(self, config: TrainConfig, saved: dict, chosen: set[str]) -> TrainConfig:
        """Resume with the saved networks; settings that do not define them (budgets, device, lr) may change."""
        clashes = [k for k in MODEL_FIELDS if k in chosen and saved.get(k) != getattr(config, k)]
        if clashes:
            diffs = ", ".join(f"{k}={saved.get(k)!r} (asked {getattr(config, k)!r})" for k in clashes)
            raise ValueError(f"{self.checkpoint_path} was trained with {diffs}. Use another output folder, or "
                             "resume=False (CLI: --no-resume) to start over")
        names = {f.name for f in fields(TrainConfig)}
        keep = {k: saved[k] for k in saved if k in names}
        # Budgets always come from the new call (a larger budget finishes the same run); any other setting
        # that does not define the networks (device, precision, learning rates, logging) may be changed.
        for k in chosen.union(BUDGET_FIELDS).difference(MODEL_FIELDS):
            if k not in BUDGET_FIELDS and keep.get(k) != getattr(config, k):
                self.resumed_changes[k] = (keep.get(k), getattr(config, k))
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
            "epoch_start_step": self.epoch_start_step,
            "elapsed": self.elapsed_seconds,
            "history": self.history,
            "fixed_noise": self.fixed_noise,
            "rng": rng,
            **({"world_size": self.world_size} if self.world_size > 1 else {}),
        }

    def _restore(self, state: dict) -> None:
        load_weights(self.generator, state["generator"], self.checkpoint_path, "generator")
        load_weights(self.discriminator, state["discriminator"], self.checkpoint_path, "discriminator")
        if self.ema_generator is not None and state.get("generator_ema") is not None:
            self.ema_generator.module.load_state_dict(state["generator_ema"])
            self.ema_generator.n_averaged.copy_(state["ema_n_averaged"])
        self.opt_g.load_state_dict(state["opt_g"])
        self.opt_d.load_state_dict(state["opt_d"])
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.step, self.elapsed, self.history = state["step"], state["elapsed"], state["history"]
        self.epochs_done = int(state.get("epoch", self.step // self.steps_per_epoch))
        self.epoch_start_step = min(self.step, int(state.get("epoch_start_step",
                                                             self.epochs_done * self.steps_per_epoch)))
        self._saved_step = self.step
        self.fixed_noise = state["fixed_noise"].cpu()
        torch.set_rng_state(state["rng"]["torch"].cpu())
        if "cuda" in state["rng"] and self.device.type == "cuda":
            torch.cuda.set_rng_state(state["rng"]["cuda"].cpu(), self.device)
        for group in self.opt_g.param_groups:  # the optimisers' saved state holds the old learning rates
            group["lr"] = self.config.lr
        for group in self.opt_d.param_groups:
            group["lr"] = self.config.lr_d or self.config.lr
        self.status = "resumed"
        changes = "".join(f"; {k} {old!r} -> {new!r}" for k, (old, new) in self.resumed_changes.items())
        print(f"Resuming {self.checkpoint_path} at step {self.step} (epoch {self.epoch}, "
              f"{self.elapsed / 60:.1f} min trained so far){changes}")

    def save(self) -> Path:
        """Write checkpoint.pt and history.json atomically into the run folder (under torchrun: rank 0 only)."""
        if not self.is_main:
            return self.checkpoint_path
        self.out_dir.mkdir(parents=True, exist_ok=True)
        save_checkpoint(self.state_dict(), self.checkpoint_path)
        atomic_write(self.out_dir / "history.json", lambda f: f.write(json.dumps(self.history).encode()))
        self._saved_step, self._saved_at = self.step, time.perf_counter()
        self._checkpoint_stamp = _file_stamp(self.checkpoint_path)
        return self.checkpoint_path

    def close(self) -> None:
        """Let another trainer use the run folder now (fit() releases it when it ends, and takes it again)."""
        self._lock.release()

    def __enter__(self) -> "Trainer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

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
        c = self.config
        by_epochs = (self.epoch_start_step + (c.epochs - self.epochs_done) * self.steps_per_epoch
                     if c.epochs else None)
        limits = [n for n in (c.max_steps, by_epochs) if n is not None]
        return min(limits) if limits else None

    @property
    def elapsed_seconds(self) -> float:
        """Seconds of training in this run, including the part before any resume."""
        return self.elapsed + (time.perf_counter() - self._started if self._started is not None else 0.0)

    def _out_of_budget(self) -> bool:
        c = self.config
        if self.world_size > 1:  # every process must stop at the same step: one decision for all
            if self.total_steps is not None and self.step >= self.total_steps:
                return True
            time_up = c.max_minutes is not None and self.elapsed_seconds >= c.max_minutes * 60
            self.stop_requested, time_up = distributed.any_rank(self.stop_requested, time_up, device=self.device)
            return self.stop_requested or time_up
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
            if self._d_real_fake is None:
                logit_real = self._d_logits(self._noisy(real)).float()
                logit_fake = self._d_logits(self._noisy(fake.detach())).float()
            else:  # torchrun: one DDP forward for D's one backward, which averages D's gradients over processes
                logit_real, logit_fake = (t.float() for t in
                                          self._d_real_fake(self._noisy(real), self._noisy(fake.detach())))
            loss_d = (F.binary_cross_entropy_with_logits(logit_real, real_target)
                      + F.binary_cross_entropy_with_logits(logit_fake, zeros))
        self.opt_d.zero_grad(set_to_none=True)
        self.scaler.scale(loss_d).backward()
        self.scaler.unscale_(self.opt_d)
        grad_norm_d = _grad_norm(list(D.parameters()))
        self.scaler.step(self.opt_d)

        # G's backward needs D's input gradients, not its weight gradients (so, under torchrun, D itself and
        # not its DDP copy: there is nothing of D's to average)
        D.requires_grad_(False)
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

        Saves a checkpoint every ``checkpoint_every`` epochs (at least 100 steps or 60 s apart) and at the end.
        Ctrl-C (SIGINT) or SIGTERM finishes the current step, saves, and returns with ``status ==
        "interrupted"`` (``stop_signal`` says which); more signals change nothing, so the checkpoint always
        holds whole steps. Non-finite losses stop the run and keep the last good checkpoint
        (``self.status == "diverged"``). Calling ``fit()`` again with a larger budget continues the run. The run
        folder is locked against other trainers until ``fit()`` returns.
        """
        if getattr(self, "is_main", True):
            self._lock.acquire()  # again after an earlier fit(), close(), or another Trainer of this process
            stamp = _file_stamp(self.checkpoint_path)
            if stamp is not None and stamp != self._checkpoint_stamp:
                self._lock.release()
                raise RunFolderError(f"{self.checkpoint_path} was written by another trainer after this one loaded "
                                     "it: create a new Trainer to continue from it (this one would overwrite it)")
        self._lock.busy, self.stop_requested, self._signals = True, False, []
        try:
            with self._stop_on_signals():
                return self._fit()
        except DiskFullError as err:
            kept = (f"the last checkpoint ({self.checkpoint_path}, step {self._saved_step}) is intact"
                    if self.checkpoint_path.is_file() else "no checkpoint had been written yet")
            raise DiskFullError(err.errno, f"{err.strerror}; {kept}") from err
        finally:
            self._lock.busy = False
            self._lock.release()
            if self._started is not None:  # an error stopped the run: keep its time
                self.elapsed, self._started = self.elapsed_seconds, None

    def _progress_bar(self):
        c = self.config
        desc = f"{c.dataset} {c.image_size}px {c.arch}"
        mode = progress_mode(c.progress and getattr(self, "is_main", True))
        if mode == "lines":
            seconds_left = c.max_minutes * 60 - self.elapsed_seconds if c.max_minutes else None
            return ProgressLines(total=self.total_steps, initial=self.step, desc=desc, seconds_left=seconds_left)
        from tqdm.auto import tqdm

        return tqdm(total=self.total_steps, initial=self.step, desc=desc, unit="step", disable=mode == "off",
                    dynamic_ncols=True)

    def _fit(self) -> "Trainer":
        self._started = time.perf_counter()
        self._collapse_printed_at = None  # each fit() prints its first collapse warning in full
        if self.step == 0:
            self.save_samples()
        bar = self._progress_bar()
        self.status = "training"
        self.generator.train()
        self.discriminator.train()
        try:
            diverged = not self._run_epochs(bar)
        finally:
            bar.close()
        self._announce_collapse()
        if diverged:
            return self._stop_diverged()
        self._announce_stop()
        self.status = "interrupted" if self.stop_requested else "finished"
        if self.world_size > 1:
            same = distributed.ranks_agree(self.generator, self.discriminator)
            print(f"{self.world_size} processes: G and D weights " + (
                "identical on every process" if same else "DIFFER between processes (a bug: please report it)"))
        self.save_samples()
        self.save()
        if self.stop_requested:
            how = f" ({STOP_SIGNALS.get(signal.Signals(self.stop_signal).name)})" if self.stop_signal else ""
            print(f"Stopped at step {self.step}{how}: checkpoint saved in {self.checkpoint_path}; run the same "
                  "command again to resume.")
        self.elapsed, self._started = self.elapsed_seconds, None
        self.write_outputs()
        return self

    def _run_epochs(self, bar) -> bool:
        """The loop itself; False if a loss became non-finite."""
        while not self._out_of_budget():
            position = self.step - self.epoch_start_step  # >= steps_per_epoch if a resume shrank the data
            order = self._epoch_order(self.epochs_done)
            for index in range(position, self.steps_per_epoch):
                if not self.fit_step(order, index, bar):
                    return False
                if self._out_of_budget():
                    break
            if not self._flush(bar):
                return False
            if self.step - self.epoch_start_step >= self.steps_per_epoch:
                self._end_epoch()
        return True

    def epoch_batch(self, order: torch.Tensor, index: int) -> torch.Tensor:
        """This process's real images for step ``index`` of an epoch whose order is ``order``, ready for
        :meth:`train_step`. Under torchrun, step ``index`` takes ``world_size`` consecutive batches of the order,
        one per process."""
        b = self.config.batch_size
        start = (index * self.world_size + self.rank) * b
        return self.data.batch(order[start:start + b]).contiguous(memory_format=self.memory_format)

    def fit_step(self, order: torch.Tensor, index: int, bar=None) -> bool:
        """One step of :meth:`fit`'s loop: :meth:`epoch_batch`, :meth:`train_step`, the history every
        ``LOG_EVERY`` steps (one host sync) and the fixed-latent grid every ``sample_every`` steps. False if a
        loss became non-finite. ``benchmarks/throughput.py`` times exactly this."""
        self._pending.append(self.train_step(self.epoch_batch(order, index)))
        self.step += 1
        if bar is not None:
            bar.update()
        if len(self._pending) >= LOG_EVERY and not self._flush(bar):
            return False
        if self.config.sample_every and self.step % self.config.sample_every == 0:
            self.save_samples()
        return True

    @contextlib.contextmanager
    def _stop_on_signals(self):
        """Ctrl-C (SIGINT) and SIGTERM (kill, timeout, Docker, SLURM) ask the run to stop after the current step.

        The handlers only record the signal: none, however many and whenever they come (inside a step, a save,
        the final plots), raises inside the training code, so a checkpoint never holds half a step. They print
        nothing either (a print interrupted by a signal handler that prints fails); :meth:`_announce_stop` speaks
        at the next safe point. Python runs signal handlers in the main thread only: elsewhere none is installed.
        """
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def request_stop(signum, frame):
            self._signals.append(signum)
            self.stop_requested = True

        previous = {}
        try:
            for name in STOP_SIGNALS:
                if hasattr(signal, name):
                    signum = getattr(signal, name)
                    previous[signum] = signal.signal(signum, request_stop)
            yield
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler if handler is not None else signal.SIG_DFL)

    def _announce_stop(self) -> None:
        """Say which signal stopped the run and what happens now (once; called outside signal handlers)."""
        if not self._signals or self.stop_signal is not None:
            return
        self.stop_signal = self._signals[0]
        name = STOP_SIGNALS.get(signal.Signals(self.stop_signal).name, "a signal")
        again = (f" (asked {len(self._signals)} times: the step still finishes and the checkpoint is saved whole)"
                 if len(self._signals) > 1 else "")
        print(f"\n{name}: finishing this step and saving a checkpoint{again}", flush=True)

    def _flush(self, bar) -> bool:
        """Move pending step statistics to the history; False if any is not finite (divergence)."""
        if not self._pending:
            return True
        stats = torch.stack(self._pending)
        if self.world_size > 1:  # the mean over processes, so that every process takes the same decisions
            stats = distributed.mean_over_ranks(stats)
        stats = stats.cpu()
        first_step = self.step - len(self._pending) + 1
        self._pending = []
        # losses only: a step fp16's GradScaler skips has inf gradient norms but is not a divergence
        finite = bool(torch.isfinite(stats[:, LOSS_COLUMNS]).all())
        if not finite:
            bad = int((~torch.isfinite(stats[:, LOSS_COLUMNS])).any(1).nonzero()[0])
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
        """Record an event once per window while D has won (diagnostics.d_has_won over ``collapse_window`` steps).

        Only the first is printed in full: the same advice every 100 steps buries the log. Later ones are kept in
        ``history["events"]`` and summed up in one line when the run stops (:meth:`_announce_collapse`).
        """
        w, h = self.config.collapse_window, self.history
        if self.step - self._collapse_warned_at < w or not d_has_won(h["d_fake"], window=w):
            return
        self._collapse_warned_at = self.step
        if self._collapse_printed_at is not None:
            h["events"].append({"step": self.step, "kind": "collapse-warning", "message": "D still winning"})
            return
        self._collapse_printed_at = len(h["events"])
        lr, lr_d = (f"{FASTER_G_LRS[k]:.0e}".replace("e-0", "e-") for k in ("lr", "lr_d"))  # "8e-4"
        c = self.config
        if c.lr > (c.lr_d or c.lr):  # the usual fix is already in place: say what is left to do
            advice = (f"This run already gives G the faster learning rate ({c.lr:g} vs D's {c.lr_d:g}): its "
                      "samples from before D won are in frames/ and checkpoints"
                      + (", and the EMA of G's weights it samples from changes slowly" if c.ema else "")
                      + "; a shorter run, or a D learning rate lower still, avoids the late part.")
        else:
            advice = (f"What fixed this in notebook 09 (64x64 MNIST): a faster G than D (lr={lr}, lr_d={lr_d}; "
                      f"CLI --lr {lr} --lr-d {lr_d}) with the DCGAN init (init='dcgan'); label smoothing, "
                      "instance noise and spectral norm on D did not.")
        message = (f"step {self.step}: D is winning (mean D(G(z)) over the last {w} steps "
                   f"{tail_mean(h['d_fake'], w):.3f}, D loss {tail_mean(h['loss_d'], w):.3f}, G loss "
                   f"{tail_mean(h['loss_g'], w):.1f}); G's samples have stopped improving and may collapse. "
                   + advice)
        h["events"].append({"step": self.step, "kind": "collapse-warning", "message": message})
        print("\nWARNING " + message)

    def _announce_collapse(self) -> None:
        """One line after the run if the collapse warning fired more than once in it (:meth:`_check_collapse`)."""
        if self._collapse_printed_at is None:
            return
        this_fit = self.history["events"][self._collapse_printed_at:]  # a resumed run's history has older ones
        warnings = [e["step"] for e in this_fit if e["kind"] == "collapse-warning"]
        if len(warnings) > 1 and self.is_main:
            print(f"D was still winning at {len(warnings) - 1} later check(s) (steps {warnings[1]}-{warnings[-1]}); "
                  f"D had won over {describe_d_won(self.history, self.config.collapse_window)}.")

    def _stop_diverged(self) -> "Trainer":
        self.elapsed, self._started = self.elapsed_seconds, None
        self.status = "diverged"
        if not self.is_main:
            return self
        step = self.history["events"][-1]["step"]
        kept = (f"the last good checkpoint ({self.checkpoint_path}) is kept" if self.checkpoint_path.is_file()
                else "no checkpoint had been written yet")
        print(f"\nTraining diverged at step {step}: a loss became NaN/inf, so the run stopped; {kept}. Try a "
              "lower learning rate, BatchNorm eps 0.8 (bn_eps=0.8), label smoothing, or precision='fp32'.")
        self.out_dir.mkdir(parents=True, exist_ok=True)
        atomic_write(self.out_dir / "history.json", lambda f: f.write(json.dumps(self.history).encode()))
        self.write_outputs()
        return self

    def _end_epoch(self) -> None:
        """Per-epoch means (from the per-batch history, so a resumed epoch counts all its steps), frame, checkpoint."""
        h, start = self.history, self.epoch_start_step
        self.epochs_done, self.epoch_start_step = self.epochs_done + 1, self.step
        epoch = self.epochs_done  # 1-based number of the epoch just finished
        h["epoch"]["epoch"].append(epoch)
        h["epoch"]["step"].append(self.step)
        h["epoch"]["minutes"].append(round(self.elapsed_seconds / 60, 4))
        for key in STAT_KEYS:
            values = h[key][start:self.step]  # history[i] is step i + 1
            h["epoch"][key].append(sum(values) / max(1, len(values)))
        if self._frame_due():
            self.save_samples()
        if self.config.eval_every and epoch % self.config.eval_every == 0 and self.is_main:
            self.evaluate()
        if epoch % self.config.checkpoint_every == 0 and self._checkpoint_due():
            self.save()

    def _frame_due(self) -> bool:
        """An epoch-end frame, unless epochs are so short that frames would pile up: about FRAMES_PER_RUN a run."""
        last = self.history["samples"][-1]["step"] if self.history["samples"] else 0
        if self.total_steps:
            return self.step - last >= max(1, self.total_steps // FRAMES_PER_RUN)
        return self.elapsed_seconds - self._last_frame_seconds >= self.config.max_minutes * 60 / FRAMES_PER_RUN

    def _checkpoint_due(self) -> bool:
        """Epoch-end checkpoints at least CHECKPOINT_MIN_STEPS steps or CHECKPOINT_MIN_SECONDS apart."""
        return (self.step - self._saved_step >= CHECKPOINT_MIN_STEPS
                or time.perf_counter() - self._saved_at >= CHECKPOINT_MIN_SECONDS)

    # ----------------------------------------------------------------------------------------------- outputs
    def evaluate(self, num: int | None = None) -> dict:
        """FD, KID and class coverage of G's samples now (see dcgan_utils.evaluate), added to history["eval"]."""
        c = self.config
        result = evaluate_generator(self.sampling_generator(), c.dataset, num=num or c.eval_num, seed=c.seed,
                                    source=c.source, data_dir=c.data_dir, device=self.device)
        row = {"epoch": round(self.epochs_trained, 3), "step": self.step,
               "minutes": round(self.elapsed_seconds / 60, 3),
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
        path = self.out_dir / "frames" / f"step_{self.step:07d}.png"
        if self.history["samples"] and self.history["samples"][-1]["step"] == self.step:
            return path  # already drawn at this step (sample_every and the epoch end coincide)
        if not self.is_main:  # under torchrun, rank 0 draws
            return path
        save_grid(self.fixed_samples(), path, nrow=4)
        self._last_frame_seconds = self.elapsed_seconds
        self.history["samples"].append({"step": self.step, "epoch": round(self.epochs_trained, 3),
                                        "file": str(path.relative_to(self.out_dir))})
        return path

    def sample(self, num: int = 64, seed: int | None = None) -> torch.Tensor:
        """``num`` fresh images in [-1, 1] on the CPU."""
        return generate(self.sampling_generator(), num, seed=seed, device=self.device)

    def write_outputs(self) -> None:
        """Loss plots, D outputs, a sample grid and the training GIF into the run folder (rank 0 under torchrun)."""
        if not self.is_main:
            return
        self.out_dir.mkdir(parents=True, exist_ok=True)
        plot_losses(self.history, save_to=self.out_dir / "losses.png", show=False)
        plot_d_outputs(self.history, save_to=self.out_dir / "d_outputs.png", show=False)
        save_grid(self.sample(64, seed=self.config.seed), self.out_dir / "samples.png", nrow=8)
        make_gif(self.out_dir, self.out_dir / "training.gif")



def train(config: TrainConfig | None = None, out_dir: str | Path = "runs/default", data: ImageData | None = None,
          resume: bool = True, **overrides) -> Trainer:
    """Build a :class:`Trainer` and run it: ``train(dataset="mnist", image_size=32, epochs=5, out_dir="runs/x")``."""
    return Trainer(config, out_dir=out_dir, data=data, resume=resume, **overrides).fit()
