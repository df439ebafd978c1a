"""The training loop around the textbook step: :class:`Trainer` and :func:`train`.

The GAN update itself is ``step.train_step`` (one screen, nothing else in it); what a run holds (settings, data,
networks, history) is ``run.Run``, which :class:`Trainer` extends with the loop: batches, budgets, stopping on
request, host syncs of the statistics, the "D has won" check, checkpoints and frames at the epochs' ends. Each
piece of the machinery lives in its own module: ``budget.py``, ``runfolder.py``, ``checkpoint.py``,
``stopping.py``, ``history.py``, ``diagnostics.py``, ``progress.py``, ``outputs.py``, ``distributed.py``.

    trainer = Trainer(TrainConfig(dataset="mnist", image_size=32, epochs=1), out_dir="runs/mnist32")
    trainer.fit()            # Ctrl-C saves a checkpoint; calling fit() again (or a new Trainer) resumes
"""
from __future__ import annotations

import contextlib
import json
from pathlib import Path

import torch

from . import distributed
from .config import TrainConfig
from .data import ImageData
from .diagnostics import collapse_advice
from .history import add_epoch
from .progress import training_bar
from .run import Run, build_gan  # noqa: F401  (build_gan: a GAN from a config, for notebooks)
from .runfolder import DiskFullError, atomic_write
from .step import train_step
from .stopping import StopSignals, TrainingInterrupted, diverged_message, in_jupyter, stop_message


class Trainer(Run):
    """Trains a :class:`~dcgan_utils.run.Run` until its budget is spent.

    >>> trainer = Trainer(TrainConfig(dataset="mnist", image_size=32, epochs=1), out_dir="runs/mnist32")
    >>> trainer.fit()            # Ctrl-C saves a checkpoint; calling fit() again (or a new Trainer) resumes
    >>> trainer.history["loss_g"][-1]
    """

    def _out_of_budget(self) -> bool:
        steps_spent = self.budget.steps_spent(self.step, self.total_steps)
        time_spent = self.budget.time_spent(self.elapsed_seconds)
        self.stop_requested = self.stop_requested or self._stop.requested
        if self.world_size > 1 and not steps_spent:  # every process must stop at the same step: one decision
            self.stop_requested, time_spent = distributed.any_rank(self.stop_requested, time_spent,
                                                                   device=self.device)
        return self.stop_requested or steps_spent or time_spent

    # ----------------------------------------------------------------------------------------------- training
    def _epoch_order(self, epoch: int) -> torch.Tensor:
        """The batch order of an epoch depends only on (seed, epoch), so a resume continues it exactly."""
        rng = torch.Generator().manual_seed(self.config.seed * 1_000_003 + epoch)
        return torch.randperm(len(self.data), generator=rng).to(self.device)

    def _batch_index(self, order: torch.Tensor, index: int) -> torch.Tensor:
        """This process's images of step ``index``: under torchrun, step ``index`` takes ``world_size``
        consecutive batches of the epoch's order, one per process."""
        b = self.config.batch_size
        start = (index * self.world_size + self.rank) * b
        return order[start:start + b]

    def epoch_batch(self, order: torch.Tensor, index: int) -> torch.Tensor:
        """This process's real images for step ``index`` of an epoch whose order is ``order``."""
        return self.data.batch(self._batch_index(order, index)).contiguous(memory_format=self.memory_format)

    def train_step(self, real: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """One step of ``step.train_step`` with fresh latents (and classes drawn as the data has them)."""
        n = real.shape[0]
        z = torch.randn(n, self.config.latent_dim, 1, 1, device=self.device)
        fake_labels = None
        if labels is not None:
            fake_labels = torch.multinomial(self.generator.labels.frequencies, n, replacement=True)
        noise = self.budget.instance_noise(self.step, self.elapsed_seconds, self.total_steps)
        return train_step(self.gan, real, z, labels, fake_labels, noise=noise)

    def fit_step(self, order: torch.Tensor, index: int, bar=None) -> bool:
        """One step of :meth:`fit`'s loop: :meth:`epoch_batch`, :meth:`train_step`, the history every
        ``LOG_EVERY`` steps (one host sync) and the fixed-latent grid every ``sample_every`` steps. False if a
        loss became non-finite. ``benchmarks/throughput.py`` times exactly this."""
        real = self.epoch_batch(order, index)
        if self.labels is None:
            stats = self.train_step(real)
        else:  # a conditional GAN: the real images' classes too
            stats = self.train_step(real, self.labels[self._batch_index(order, index)])
        self.step += 1
        if bar is not None:
            bar.update()
        if self.stats.add(stats) and not self._flush(bar):
            return False
        if self.config.sample_every and self.step % self.config.sample_every == 0:
            self.save_samples()
        return True

    def _flush(self, bar) -> bool:
        """Move pending step statistics to the history; False if any loss is not finite (divergence)."""
        diverged_at = self.stats.flush(self.step)
        if bar is not None:
            bar.set_postfix(**self.stats.latest(), refresh=False)
        warning = self.collapse.check(self.step, collapse_advice(self.config))
        if warning and self.is_main:
            print("\nWARNING " + warning)
        return diverged_at is None

    def fit(self) -> "Trainer":
        """Train until the budget (epochs, max_steps or max_minutes, counted over the whole run) is spent.

        Saves a checkpoint every ``checkpoint_every`` epochs (at least 100 steps or 60 s apart) and at the end.
        Ctrl-C (SIGINT), SIGTERM or Jupyter's stop button finishes the current step and saves; then, in a
        notebook, raises :class:`~dcgan_utils.stopping.TrainingInterrupted` (the next cells do not run), and
        elsewhere returns with ``status == "interrupted"`` (``stop_signal`` says which). Non-finite losses stop
        the run and keep the last good checkpoint (``status == "diverged"``). Calling ``fit()`` again, or a new
        Trainer on the folder, resumes. The run folder is locked against other trainers until ``fit()`` returns.
        """
        self.folder.take(self.checkpoint_path)
        self.stop_requested = False
        try:
            with StopSignals() as self._stop:
                self._fit()
        except DiskFullError as err:
            kept = (f"the last checkpoint ({self.checkpoint_path}, step {self.budget.saved_step}) is intact"
                    if self.checkpoint_path.is_file() else "no checkpoint had been written yet")
            raise DiskFullError(err.errno, f"{err.strerror}; {kept}") from err
        except OSError:  # a frame or plot could not be written mid-run: the steps trained so far are saved first
            if self.is_main and self.step > self.budget.saved_step:
                with contextlib.suppress(OSError):
                    self.save()
            raise
        finally:
            self.folder.release()
            self.budget.stop()  # also when an error stopped the run: its time counts
        if self.status == "interrupted" and self.is_main and in_jupyter():
            raise TrainingInterrupted(stop_message(self.step, self.checkpoint_path, self.stop_signal, notebook=True))
        return self

    def _fit(self) -> None:
        self._fits += 1
        if self._fits > 1 and self.step and self.is_main:  # a notebook re-running its training cell
            print(f"Resuming at step {self.step} ({self.elapsed / 60:.1f} min trained so far)")
        self.budget.start()
        self.collapse.start()
        if self.step == 0:
            self.save_samples()
        self.status = "training"
        self.generator.train()
        self.discriminator.train()
        if self._out_of_budget() and not self.stop_requested:
            print(f"{self.out_dir} has already trained its budget (step {self.step}): nothing to train; raise the "
                  "budget to train more")
        else:
            c = self.config
            bar = training_bar(f"{c.dataset} {c.image_size}px {c.arch}", self.total_steps, self.step,
                               self.budget.seconds_left(self.elapsed_seconds), c.progress and self.is_main)
            try:
                diverged = not self._run_epochs(bar)
            finally:
                bar.close()
            if (line := self.collapse.summary()) and self.is_main:
                print(line)
            if diverged:
                return self._stop_diverged()
        self._stop.announce()
        self.stop_signal = self._stop.first
        self.status = "interrupted" if self.stop_requested else "finished"
        if self.world_size > 1:
            distributed.report_agreement(self.generator, self.discriminator)
        try:
            self.save_samples()
        finally:  # the user's work first: the checkpoint is saved even if the frame cannot be written
            self.save()
        if self.stop_requested and self.is_main:
            print(stop_message(self.step, self.checkpoint_path, self.stop_signal, notebook=in_jupyter()))
        self.budget.stop()
        self.write_outputs()

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

    def _stop_diverged(self) -> None:
        self.budget.stop()
        self.status = "diverged"
        if self.is_main:
            print(diverged_message(self.history["events"][-1]["step"], self.checkpoint_path))
            atomic_write(self.out_dir / "history.json", lambda f: f.write(json.dumps(self.history).encode()))
            self.write_outputs()

    def _end_epoch(self) -> None:
        """Per-epoch means (from the per-batch history, so a resumed epoch counts all its steps), frame, checkpoint."""
        start = self.epoch_start_step
        self.epochs_done, self.epoch_start_step = self.epochs_done + 1, self.step
        add_epoch(self.history, self.epochs_done, self.step, start, self.elapsed_seconds / 60)
        last_frame = self.history["samples"][-1]["step"] if self.history["samples"] else 0
        if self.budget.frame_due(self.step, last_frame, self.elapsed_seconds, self.total_steps):
            self.save_samples()
        if self.config.eval_every and self.epochs_done % self.config.eval_every == 0 and self.is_main:
            self.evaluate()
        if self.budget.checkpoint_due(self.step, self.epochs_done):
            self.save()


def train(config: TrainConfig | None = None, out_dir: str | Path = "runs/default", data: ImageData | None = None,
          resume: bool = True, **overrides) -> Trainer:
    """Build a :class:`Trainer` and run it: ``train(dataset="mnist", image_size=32, epochs=5, out_dir="runs/x")``."""
    return Trainer(config, out_dir=out_dir, data=data, resume=resume, **overrides).fit()
